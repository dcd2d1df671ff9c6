//! tracefs: finding or mounting it, and reading tracepoint `format` files, whose
//! field offsets the kernel programs are given at start-up (Rust eBPF cannot emit
//! CO-RE relocations; the format file is the kernel's own statement of the layout).

use std::{
    ffi::CString,
    fmt, fs,
    io::ErrorKind,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

const TRACEFS_MAGIC: i64 = 0x7472_6163;
const MOUNT_POINT: &str = "/sys/kernel/tracing";
const DEBUGFS_MOUNT_POINT: &str = "/sys/kernel/debug/tracing";

/// How tracefs was found, for `-v` and `doctor`.
#[derive(Clone, Debug)]
pub struct Tracefs {
    pub path: PathBuf,
    /// True when tracer mounted it itself.
    pub mounted_now: bool,
}

static TRACEFS: OnceLock<Tracefs> = OnceLock::new();

/// Why tracefs cannot be used (not mounted and not mountable, or not readable
/// by this process): then whether the kernel has a tracepoint is unknown, and
/// `doctor` and `list` say so rather than that the kernel lacks it.
#[derive(Debug)]
pub struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

fn is_tracefs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs with a valid C string and an out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == TRACEFS_MAGIC
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (as on
/// this project's reference machine), and checks that this process may read it.
/// Fails with a one-line explanation (an `Unavailable`).
pub fn ensure() -> Result<&'static Tracefs> {
    if let Some(t) = TRACEFS.get() {
        return Ok(t);
    }
    let found = if is_tracefs(Path::new(MOUNT_POINT)) {
        Tracefs {
            path: MOUNT_POINT.into(),
            mounted_now: false,
        }
    } else if is_tracefs(Path::new(DEBUGFS_MOUNT_POINT)) {
        Tracefs {
            path: DEBUGFS_MOUNT_POINT.into(),
            mounted_now: false,
        }
    } else {
        let mounted_now = match mount() {
            Ok(()) => true,
            // Another process (a second tracer starting at the same time) may
            // have mounted it first: then this mount fails, and tracefs is there.
            Err(_) if is_tracefs(Path::new(MOUNT_POINT)) => false,
            Err(e) => return Err(Unavailable(format!("{e:#}")).into()),
        };
        Tracefs {
            path: MOUNT_POINT.into(),
            mounted_now,
        }
    };
    check_readable(&found.path)?;
    Ok(TRACEFS.get_or_init(|| found))
}

/// Checks that this process may read tracepoint files. tracefs is owned by
/// root, its root directory mode 0700 unless mounted otherwise: CAP_BPF and
/// CAP_PERFMON do not open it. `events/header_page` is there on every kernel
/// with trace events, with the mode of their `format` files.
fn check_readable(root: &Path) -> Result<(), Unavailable> {
    let probe = root.join("events/header_page");
    match fs::File::open(&probe) {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(denied(root)),
        // Not there: every tracepoint is then found absent, one by one.
        _ => Ok(()),
    }
}

/// A permission error on tracefs: where (the root, or a file below it that
/// this process may look up but not read), and what would grant it.
fn denied(root: &Path) -> Unavailable {
    let file = root.join("events/header_page");
    let (path, meta) = match fs::metadata(&file) {
        Ok(meta) => (file.as_path(), Some(meta)),
        Err(_) => (root, fs::metadata(root).ok()),
    };
    let mode = meta
        .map(|m| format!(" (mode {:04o})", m.mode() & 0o7777))
        .unwrap_or_default();
    Unavailable(format!(
        "permission denied reading {}{mode}: run as root, or add CAP_DAC_READ_SEARCH to \
         CAP_BPF and CAP_PERFMON, or let a group of yours read it: \
         mount -o remount,mode=0750,gid=GROUP {}",
        path.display(),
        root.display()
    ))
}

fn mount() -> Result<()> {
    let target = CString::new(MOUNT_POINT)?;
    let fstype = CString::new("tracefs")?;
    let source = CString::new("nodev")?;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {MOUNT_POINT} failed ({err}); \
             mount it with: mount -t tracefs nodev {MOUNT_POINT}"
        );
    }
    Ok(())
}

/// The directory of a tracepoint's files, if the running kernel has it.
pub fn event_dir(category: &str, name: &str) -> Result<Option<PathBuf>> {
    let dir = ensure()?.path.join("events").join(category).join(name);
    let format = dir.join("format");
    match fs::metadata(&format) {
        Ok(_) => Ok(Some(dir)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up {}", format.display())),
    }
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ctype: String,
    pub offset: u16,
    pub size: u16,
    pub signed: bool,
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format> {
        let mut format = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("name:") {
                format.name = name.trim().to_string();
            } else if let Some(id) = line.strip_prefix("ID:") {
                format.id = id.trim().parse().context("bad ID line")?;
            } else if let Some(fmt) = line.strip_prefix("print fmt:") {
                format.print_fmt = fmt.trim().to_string();
            } else if line.starts_with("field:") {
                format
                    .fields
                    .push(parse_field(line).with_context(|| format!("bad field line: {line}"))?);
            }
        }
        if format.fields.is_empty() {
            bail!("no fields in format file");
        }
        Ok(format)
    }

    /// Reads the format file of `category:name`; None if the kernel lacks the event.
    pub fn read(category: &str, name: &str) -> Result<Option<Format>> {
        let Some(dir) = event_dir(category, name)? else {
            return Ok(None);
        };
        let path = dir.join("format");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Format::parse(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .map(Some)
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a field that must have the given size; a layout we do not expect is
    /// an error rather than a silent misread.
    pub fn offset(&self, name: &str, size: u16) -> Result<u16> {
        let f = self
            .field(name)
            .with_context(|| format!("tracepoint {} has no field '{name}'", self.name))?;
        if f.size != size {
            bail!(
                "tracepoint {} field '{name}' is {} bytes, expected {size}",
                self.name,
                f.size
            );
        }
        Ok(f.offset)
    }

    /// Offset of a char array field at least `min` bytes long (rwbs grew from 8 to
    /// 10 bytes over kernel versions; the programs read the first `min`).
    pub fn offset_at_least(&self, name: &str, min: u16) -> Result<u16> {
        let f = self
            .field(name)
            .with_context(|| format!("tracepoint {} has no field '{name}'", self.name))?;
        if f.size < min {
            bail!(
                "tracepoint {} field '{name}' is {} bytes, expected at least {min}",
                self.name,
                f.size
            );
        }
        Ok(f.offset)
    }

    /// Like `offset`, but a missing field gives `NO_FIELD`.
    pub fn offset_or_absent(&self, name: &str, size: u16) -> Result<u16> {
        match self.field(name) {
            None => Ok(tracer_common::block::NO_FIELD),
            Some(_) => self.offset(name, size),
        }
    }
}

/// Parses every `__print_symbolic(..., { value, "name" }, ...)` table of a print
/// fmt, in order (values may be expressions like `0x040 + 13` or `-1`).
pub fn symbolic_tables(print_fmt: &str) -> Vec<Vec<(i64, String)>> {
    let mut tables = Vec::new();
    for part in print_fmt.split("__print_symbolic(").skip(1) {
        let mut table = Vec::new();
        let mut rest = part;
        // Entries continue while the next non-space text is "{ ".
        while let Some(open) = rest.find('{') {
            let before = &rest[..open];
            if before.contains(')') && !before.trim_start_matches([',', ' ']).is_empty() {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let entry = &rest[open + 1..open + close];
            if let Some((value, name)) = entry.split_once(',')
                && let Some(v) = eval(value.trim())
            {
                table.push((v, name.trim().trim_matches('"').to_string()));
            }
            rest = &rest[open + close + 1..];
        }
        tables.push(table);
    }
    tables
}

/// Evaluates `0x040 + 13`, `42`, `-1`.
fn eval(expr: &str) -> Option<i64> {
    expr.split('+').map(|t| parse_int(t.trim())).sum()
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(neg) = s.strip_prefix('-') {
        return parse_int(neg).map(|v| -v);
    }
    match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_field(line: &str) -> Result<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = Some(o.trim().parse::<u16>()?);
        } else if let Some(s) = part.strip_prefix("size:") {
            size = Some(s.trim().parse::<u16>()?);
        } else if let Some(s) = part.strip_prefix("signed:") {
            signed = s.trim() == "1";
        }
    }
    let decl = decl.context("no declaration")?;
    // "unsigned long foo", "char rwbs[8]", "__data_loc char[] cmd", "u8 saddr[4]",
    // and (5.10's tcp_probe) "__u8 saddr[sizeof(struct sockaddr_in6)]": an array
    // dimension may hold spaces, so the name is what precedes the last '['.
    let (head, array) = match decl.strip_suffix(']') {
        Some(_) => {
            let open = decl.rfind('[').context("unbalanced brackets")?;
            (&decl[..open], &decl[open..])
        }
        None => (decl, ""),
    };
    let (ctype, name) = head
        .trim_end()
        .rsplit_once(char::is_whitespace)
        .context("no field name")?;
    Ok(Field {
        name: name.to_string(),
        ctype: format!("{}{array}", ctype.trim()),
        offset: offset.context("no offset")?,
        size: size.context("no size")?,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_RQ_ISSUE_6_18: &str = include_str!("../../tests/fixtures/block_rq_issue.format");
    const BLOCK_RQ_COMPLETE_6_18: &str =
        include_str!("../../tests/fixtures/block_rq_complete.format");

    #[test]
    fn array_dimensions_may_hold_spaces() {
        // 5.10's tcp_probe.
        let f = parse_field(
            "field:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:8;\tsize:28;\tsigned:0;",
        )
        .unwrap();
        assert_eq!((f.name.as_str(), f.offset, f.size), ("saddr", 8, 28));
        assert_eq!(f.ctype, "__u8[sizeof(struct sockaddr_in6)]");
        let f =
            parse_field("field:__data_loc char[] cmd;\toffset:40;\tsize:4;\tsigned:1;").unwrap();
        assert_eq!(
            (f.name.as_str(), f.ctype.as_str()),
            ("cmd", "__data_loc char[]")
        );
    }

    #[test]
    fn parses_block_rq_issue() {
        let f = Format::parse(BLOCK_RQ_ISSUE_6_18).unwrap();
        assert_eq!(f.name, "block_rq_issue");
        assert!(f.id > 0);
        assert_eq!(f.offset("dev", 4).unwrap(), 8);
        assert_eq!(f.offset("sector", 8).unwrap(), 16);
        assert_eq!(f.offset("nr_sector", 4).unwrap(), 24);
        assert_eq!(f.offset("bytes", 4).unwrap(), 28);
        let rwbs = f.field("rwbs").unwrap();
        assert_eq!((rwbs.size, rwbs.ctype.as_str()), (10, "char[10]"));
        assert_eq!(f.offset_at_least("rwbs", 8).unwrap(), 34);
        assert_eq!(f.field("cmd").unwrap().ctype, "__data_loc char[]");
        assert!(f.print_fmt.starts_with('"'));
    }

    #[test]
    fn completion_has_error_and_no_bytes() {
        let f = Format::parse(BLOCK_RQ_COMPLETE_6_18).unwrap();
        assert!(f.field("bytes").is_none());
        assert_eq!(
            f.offset_or_absent("bytes", 4).unwrap(),
            tracer_common::block::NO_FIELD
        );
        assert!(f.field("error").is_some());
        assert!(
            f.offset("sector", 4).is_err(),
            "size mismatch must be an error"
        );
    }

    #[test]
    fn symbolic_table_expressions() {
        assert_eq!(eval("0x040 + 13"), Some(0x4d));
        assert_eq!(eval("-1"), Some(-1));
        assert_eq!(eval("abc"), None);
        let kfree = Format::parse(include_str!("../../tests/fixtures/kfree_skb.format")).unwrap();
        let tables = symbolic_tables(&kfree.print_fmt);
        assert_eq!(tables.len(), 1);
        assert!(tables[0].contains(&(12, "NETFILTER_DROP".to_string())));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Format::parse("name: x\nID: 1\n").is_err());
        assert!(Format::parse("field:int x;\toffset:abc;\tsize:4;").is_err());
    }
}
