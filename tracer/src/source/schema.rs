//! What a tool's event records hold, said once by the tool: each field with its
//! type, unit and role, and how an event is shown (a line of text, a Perfetto
//! track, a plot's series). `tracer report`, its Perfetto traces and `tracer
//! plot` read records through the schema of the tool named in each (`Schemas`,
//! handed to them by the command line: views do not know the tools). A record
//! of a tool without one (a capture of a later tracer) is shown generically.

use std::fmt::Write as _;

use serde_json::Value;

/// A tool's event records.
#[derive(Debug)]
pub struct Schema {
    /// Every field an event may carry, in the order the tool writes them.
    pub fields: &'static [Field],
    /// One event as a line of text (`tracer report`).
    pub line: Template,
    /// The Perfetto track an event is drawn on, and its slice's (or instant's) name.
    pub track: Track,
    /// The report's table of where time went that events count in, besides
    /// the processes': its title ("disks") and key.
    pub top: Option<(&'static str, Template)>,
    /// The field naming what kind of operation an event was: a plot's series
    /// (None: the tool's name).
    pub series: Option<&'static str>,
    /// Whose an event was, in a plot's hover text.
    pub who: Template,
}

#[derive(Debug)]
pub struct Track {
    pub name: Template,
    pub slice: Template,
}

/// One field of a record.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Type,
    pub unit: Option<Unit>,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    U64,
    I64,
    F64,
    Str,
    /// A number written as a hexadecimal string ("0x7f00...").
    Hex,
    /// A short code standing for a name: (code, name) pairs.
    Code(&'static [(&'static str, &'static str)]),
    /// A list of strings.
    List,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Ns,
    Us,
    Ms,
    Bytes,
    /// 512-byte sectors.
    Sectors,
}

impl Unit {
    /// Nanoseconds in one of this unit (None: not a time).
    fn ns(self) -> Option<f64> {
        match self {
            Unit::Ns => Some(1.0),
            Unit::Us => Some(1e3),
            Unit::Ms => Some(1e6),
            Unit::Bytes | Unit::Sectors => None,
        }
    }
}

/// What a field is to the views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Shown as it is (the JSON report, Perfetto arguments).
    Detail,
    /// How long the operation took (a plot's y value).
    Latency,
    /// The disk an I/O went to.
    Disk,
    /// Where on its disk an I/O began, in sectors.
    Sector,
    /// How many bytes an operation moved.
    Size,
    /// The memory address an event was about.
    Address,
    /// The file and the offset in it of an instruction, which the report
    /// names by its symbol (the field `SYMBOL` it adds).
    CodeFile,
    CodeOffset,
}

/// The field `tracer report` adds to an event whose schema has a `CodeFile`
/// and a `CodeOffset`: the symbol there.
pub const SYMBOL: &str = "symbol";

impl Field {
    const fn of(name: &'static str, kind: Type) -> Field {
        Field {
            name,
            kind,
            unit: None,
            role: Role::Detail,
        }
    }

    pub const fn u64(name: &'static str) -> Field {
        Field::of(name, Type::U64)
    }

    pub const fn i64(name: &'static str) -> Field {
        Field::of(name, Type::I64)
    }

    pub const fn f64(name: &'static str) -> Field {
        Field::of(name, Type::F64)
    }

    pub const fn str(name: &'static str) -> Field {
        Field::of(name, Type::Str)
    }

    pub const fn hex(name: &'static str) -> Field {
        Field::of(name, Type::Hex)
    }

    pub const fn list(name: &'static str) -> Field {
        Field::of(name, Type::List)
    }

    pub const fn code(name: &'static str, names: &'static [(&'static str, &'static str)]) -> Field {
        Field::of(name, Type::Code(names))
    }

    pub const fn unit(self, unit: Unit) -> Field {
        Field {
            unit: Some(unit),
            ..self
        }
    }

    pub const fn role(self, role: Role) -> Field {
        Field { role, ..self }
    }

    /// Its value in `record` as a string: a code by its name, a hexadecimal
    /// string as it is (None: absent or not a string).
    pub fn text<'a>(&self, record: &'a Value) -> Option<&'a str> {
        let s = record[self.name].as_str()?;
        match self.kind {
            Type::Code(names) => Some(names.iter().find(|(c, _)| *c == s).map_or(s, |(_, n)| n)),
            _ => Some(s),
        }
    }

    /// Its value in `record` as a whole number (a hexadecimal string parsed).
    pub fn number(&self, record: &Value) -> Option<u64> {
        let v = &record[self.name];
        match self.kind {
            Type::Hex => u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok(),
            _ => v.as_u64(),
        }
    }

    /// Its value in `record` in nanoseconds (a time field only).
    pub fn ns(&self, record: &Value) -> Option<u64> {
        let unit = self.unit?;
        let per = unit.ns()?;
        let v = &record[self.name];
        match (unit, v.as_u64()) {
            // Exact, whatever its size.
            (Unit::Ns, Some(n)) => Some(n),
            _ => v.as_f64().map(|x| (x * per) as u64),
        }
    }
}

impl Schema {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Its field of `role` (the first, if several).
    pub fn with(&self, role: Role) -> Option<&Field> {
        self.fields.iter().find(|f| f.role == role)
    }
}

/// Text with fields of a record in it: `{name}` is the field's value (a
/// string as it is, a number as JSON writes it, nothing when absent);
/// `{a|b}` is a's value where the record has a, else b's; `{name:ms}` is a
/// time field in milliseconds, to the microsecond.
#[derive(Clone, Copy, Debug)]
pub struct Template(pub &'static str);

impl Template {
    /// The field names it uses (for tests that check them).
    #[cfg(test)]
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.0
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}'))
            .flat_map(|(inner, _)| inner.split(':').next().unwrap_or("").split('|'))
    }

    /// The text for `record`, of a tool of `schema`.
    pub fn render(&self, schema: &Schema, record: &Value) -> String {
        let mut out = String::new();
        let mut rest = self.0;
        while let Some((before, after)) = rest.split_once('{') {
            out.push_str(before);
            let Some((inner, next)) = after.split_once('}') else {
                rest = after;
                break;
            };
            let (names, format) = inner.split_once(':').unwrap_or((inner, ""));
            let name = names
                .split('|')
                .find(|n| !record[*n].is_null())
                .unwrap_or(names);
            let v = &record[name];
            match (format, v) {
                ("ms", _) if !v.is_null() => {
                    let ns = schema.field(name).and_then(|f| f.ns(record)).unwrap_or(0);
                    let _ = write!(out, "{:.3}", ns as f64 / 1e6);
                }
                (_, Value::String(s)) => out.push_str(s),
                (_, Value::Null) => {}
                (_, v) => {
                    let _ = write!(out, "{v}");
                }
            }
            rest = next;
        }
        out.push_str(rest);
        out
    }
}

/// The schemas of the tools there are, by tool name.
#[derive(Debug, Default)]
pub struct Schemas(pub Vec<(&'static str, &'static Schema)>);

impl Schemas {
    /// The schema of the tool a record names (None: a tool not known here).
    pub fn of(&self, record: &Value) -> Option<&'static Schema> {
        let tool = record["tool"].as_str()?;
        self.0.iter().find(|(t, _)| *t == tool).map(|(_, s)| *s)
    }

    /// The first tool whose events have fields of all of `roles`.
    pub fn tool_with(&self, roles: &[Role]) -> Option<&'static str> {
        self.0
            .iter()
            .find(|(_, s)| roles.iter().all(|r| s.with(*r).is_some()))
            .map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const OPS: &[(&str, &str)] = &[("R", "read")];

    static IO: Schema = Schema {
        fields: &[
            Field::str("comm"),
            Field::u64("pid"),
            Field::code("t", OPS),
            Field::hex("addr").role(Role::Address),
            Field::hex("ip"),
            Field::f64("lat_ms").unit(Unit::Ms),
            Field::u64("lat_ns").unit(Unit::Ns).role(Role::Latency),
        ],
        line: Template("{comm} {pid} {t} at {addr} in {symbol|ip} {lat_ns:ms} ms"),
        track: Track {
            name: Template("io {comm} ({pid})"),
            slice: Template("{t}"),
        },
        top: None,
        series: Some("t"),
        who: Template("{comm} pid {pid}"),
    };

    #[test]
    fn templates_fill_in_fields() {
        let e = json!({"tool": "io", "comm": "dd", "pid": 7, "t": "R", "addr": "0x10",
            "ip": "0xff", "lat_ms": 1.5, "lat_ns": 1_500_000});
        assert_eq!(IO.line.render(&IO, &e), "dd 7 R at 0x10 in 0xff 1.500 ms");
        let mut named = e.clone();
        named[SYMBOL] = json!("main+0x4");
        assert_eq!(
            IO.line.render(&IO, &named),
            "dd 7 R at 0x10 in main+0x4 1.500 ms"
        );
        // Absent fields leave nothing; so does an unclosed brace's rest.
        assert_eq!(IO.line.render(&IO, &json!({})), "   at  in   ms");
        assert_eq!(Template("a {b").render(&IO, &e), "a b");
        let names: Vec<&str> = IO.line.names().collect();
        assert_eq!(
            names,
            ["comm", "pid", "t", "addr", "symbol", "ip", "lat_ns"]
        );
    }

    #[test]
    fn fields_read_by_type_and_unit() {
        let e = json!({"t": "R", "addr": "0x10", "lat_ms": 1.5, "lat_ns": 1_500_000, "pid": 7});
        let f = |name| IO.field(name).unwrap();
        assert_eq!(f("t").text(&e), Some("read"));
        assert_eq!(f("t").text(&json!({"t": "X"})), Some("X"));
        assert_eq!(f("addr").number(&e), Some(16));
        assert_eq!(f("lat_ms").ns(&e), Some(1_500_000));
        assert_eq!(f("lat_ns").ns(&e), Some(1_500_000));
        assert_eq!(f("pid").ns(&e), None);
        assert_eq!(IO.with(Role::Latency).unwrap().name, "lat_ns");
        let schemas = Schemas(vec![("io", &IO)]);
        assert!(schemas.of(&json!({"tool": "io"})).is_some());
        assert!(schemas.of(&json!({"tool": "other"})).is_none());
        assert_eq!(schemas.tool_with(&[Role::Address]), Some("io"));
        assert_eq!(schemas.tool_with(&[Role::Address, Role::Disk]), None);
    }
}
