//! Names for instruction pointers: the symbol at a file offset of a mapped
//! ELF file, read from its symbol tables (Rust names demangled), for the
//! events whose schema has a code file and offset (`Role::CodeFile`,
//! `Role::CodeOffset`).

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use crate::source::schema::{Role, SYMBOL, Schema};

/// Symbolizes instruction pointers from the ELF symbols of their mappings
/// (cached per file); a stripped file gives module+offset.
#[derive(Default)]
pub struct Symbols {
    files: BTreeMap<String, Option<Elf>>,
}

struct Elf {
    /// (file offset, size, virtual address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// (address, size, name), sorted by address.
    symbols: Vec<(u64, u64, String)>,
}

impl Symbols {
    fn elf(path: &str) -> Option<Elf> {
        use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let mut symbols: Vec<(u64, u64, String)> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            // Rust symbols read as paths (`{:#}` leaves the hash out); other
            // names are kept as they are.
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.address(), s.size(), name))
            })
            .collect();
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        Some(Elf { segments, symbols })
    }

    /// Adds `SYMBOL` to an event that carries the file and offset of an
    /// instruction (by its tool's schema), where the file has a path.
    pub fn add_to(&mut self, e: &mut Value, schema: Option<&Schema>) {
        let Some((file, offset)) =
            schema.and_then(|s| Some((s.with(Role::CodeFile)?, s.with(Role::CodeOffset)?)))
        else {
            return;
        };
        if let (Some(path), Some(off)) = (file.text(e), offset.number(e))
            && path.starts_with('/')
        {
            let name = self.name(path, off);
            e[SYMBOL] = json!(name);
        }
    }

    /// "symbol+0xoff (module)" for a file offset in a mapping.
    fn name(&mut self, path: &str, file_offset: u64) -> String {
        let module = Path::new(path)
            .file_name()
            .map_or(path.to_string(), |n| n.to_string_lossy().into_owned());
        let elf = self
            .files
            .entry(path.to_string())
            .or_insert_with(|| Symbols::elf(path));
        let Some(elf) = elf else {
            return format!("{module}+{file_offset:#x}");
        };
        let Some(vaddr) = elf
            .segments
            .iter()
            .find(|(off, size, _)| (*off..off + size).contains(&file_offset))
            .map(|(off, _, addr)| file_offset - off + addr)
        else {
            return format!("{module}+{file_offset:#x}");
        };
        let i = elf.symbols.partition_point(|s| s.0 <= vaddr);
        match i.checked_sub(1).map(|i| &elf.symbols[i]) {
            Some((addr, size, name)) if *size == 0 || vaddr < addr + size => {
                format!("{name}+{:#x} ({module})", vaddr - addr)
            }
            _ => format!("{module}+{file_offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::source::schema::{Field, Template, Track};

    /// Events with the file and offset of an instruction.
    static CODE: Schema = Schema {
        fields: &[
            Field::str("file").role(Role::CodeFile),
            Field::u64("offset").role(Role::CodeOffset),
        ],
        line: Template(""),
        track: Track {
            name: Template(""),
            slice: Template(""),
        },
        top: None,
        series: None,
        who: Template(""),
    };

    #[test]
    fn an_offset_in_a_function_is_named_by_it() {
        // This test's own executable: 4 bytes into a function of it.
        let exe = std::env::current_exe().unwrap();
        let path = exe.to_str().unwrap();
        let module = exe.file_name().unwrap().to_str().unwrap();
        let elf = Symbols::elf(path).unwrap();
        let (addr, _, name) = elf.symbols.iter().find(|s| s.1 > 16).unwrap();
        let (off, _, vaddr) = elf
            .segments
            .iter()
            .find(|(_, size, a)| (*a..a + size).contains(addr))
            .unwrap();
        let mut e = json!({"file": path, "offset": addr - vaddr + off + 4});
        let mut symbols = Symbols::default();
        symbols.add_to(&mut e, Some(&CODE));
        assert_eq!(e[SYMBOL], format!("{name}+0x4 ({module})"));
        // A file that cannot be read: its name and the offset.
        let mut e = json!({"file": "/nonexistent/lib.so", "offset": 16});
        symbols.add_to(&mut e, Some(&CODE));
        assert_eq!(e[SYMBOL], "lib.so+0x10");
        // No path (an anonymous mapping), or no schema that says where: nothing.
        for (mut e, schema) in [
            (json!({"file": "[anon]", "offset": 16}), Some(&CODE)),
            (json!({"file": "/nonexistent/lib.so", "offset": 16}), None),
        ] {
            symbols.add_to(&mut e, schema);
            assert!(e.get(SYMBOL).is_none(), "{e}");
        }
    }
}
