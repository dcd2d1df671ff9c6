//! Kernel addresses to symbols, from /proc/kallsyms (for drop locations and
//! stacks). Loaded on first use: reading kallsyms takes tens of milliseconds.

use std::io::{BufRead as _, BufReader};

#[derive(Default)]
pub struct Ksyms {
    /// (address, offset of the name in `names`), sorted by address.
    syms: Vec<(u64, u32)>,
    /// All names, NUL-separated: one allocation instead of one per symbol.
    names: String,
    loaded: bool,
}

impl Ksyms {
    pub fn parse(text: impl std::io::Read) -> Ksyms {
        let mut k = Ksyms {
            loaded: true,
            ..Ksyms::default()
        };
        for line in BufReader::new(text).lines().map_while(Result::ok) {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 || !matches!(kind, "t" | "T") {
                continue;
            }
            k.syms.push((addr, k.names.len() as u32));
            k.names.push_str(name);
            k.names.push('\0');
        }
        k.syms.sort_unstable();
        k
    }

    fn name_at(&self, off: u32) -> &str {
        let rest = &self.names[off as usize..];
        &rest[..rest.find('\0').unwrap_or(rest.len())]
    }

    /// "name+0xoff", or the address in hex.
    pub fn name(&mut self, addr: u64) -> String {
        if !self.loaded {
            *self = std::fs::File::open("/proc/kallsyms")
                .map(Ksyms::parse)
                .unwrap_or_default();
            self.loaded = true;
        }
        match self.syms.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, off) = self.syms[i - 1];
                format!("{}+{:#x}", self.name_at(off), addr - base)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_addresses() {
        let text = "ffffffff81000000 T _stext\nffffffff81000100 t foo\nffffffff81000200 d data\n0000000000000000 T zero\n";
        let mut k = Ksyms::parse(text.as_bytes());
        assert_eq!(k.name(0xffffffff81000104), "foo+0x4");
        assert_eq!(k.name(0xffffffff81000000), "_stext+0x0");
        assert_eq!(k.name(0x10), "0x10");
    }
}
