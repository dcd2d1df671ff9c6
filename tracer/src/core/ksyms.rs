//! Kernel addresses to symbols, from /proc/kallsyms (for drop locations and stacks).

use std::fs;

#[derive(Default)]
pub struct Ksyms {
    /// (address, name), sorted by address.
    syms: Vec<(u64, String)>,
}

impl Ksyms {
    pub fn load() -> Ksyms {
        let text = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        Ksyms::parse(&text)
    }

    pub fn parse(text: &str) -> Ksyms {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort();
        Ksyms { syms }
    }

    /// "name+0xoff", or the address in hex.
    pub fn name(&self, addr: u64) -> String {
        match self.syms.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, name) = &self.syms[i - 1];
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_addresses() {
        let k = Ksyms::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t foo\nffffffff81000200 d data\n0000000000000000 T zero\n",
        );
        assert_eq!(k.name(0xffffffff81000104), "foo+0x4");
        assert_eq!(k.name(0xffffffff81000000), "_stext+0x0");
        assert_eq!(k.name(0x10), "0x10");
    }
}
