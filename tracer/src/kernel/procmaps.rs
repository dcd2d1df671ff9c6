//! Which mapping of a process an address falls in (for faultsnoop's MAPPING
//! column), from /proc/PID/maps, cached per process and re-read on a miss.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// Offset in the mapped file of `start`.
    pub offset: u64,
    pub name: String,
}

/// Splits off the first whitespace-separated field.
fn field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    (end > 0).then(|| (&s[..end], &s[end..]))
}

/// Parses /proc/PID/maps text; anonymous regions are named "[anon]".
fn parse(text: &str) -> Vec<Region> {
    text.lines()
        .filter_map(|line| {
            let (range, mut rest) = field(line)?;
            let (start, end) = range.split_once('-')?;
            // perms, offset, dev, inode, then the optional path, kept verbatim
            // (it may contain runs of spaces).
            rest = field(rest)?.1; // perms
            let (offset, after) = field(rest)?;
            rest = after;
            for _ in 0..2 {
                rest = field(rest)?.1;
            }
            let path = rest.trim_start();
            let name = if path.is_empty() {
                "[anon]".to_string()
            } else {
                path.to_string()
            };
            Some(Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                name,
            })
        })
        .collect()
}

#[derive(Default)]
pub struct ProcMaps {
    cache: HashMap<u32, Vec<Region>>,
}

impl ProcMaps {
    /// The mapping containing `addr` in process `pid`; None if the process is gone
    /// or the address is not mapped.
    pub fn lookup(&mut self, pid: u32, addr: u64) -> Option<Region> {
        let find = |regions: &Vec<Region>| {
            regions
                .iter()
                .find(|r| r.start <= addr && addr < r.end)
                .cloned()
        };
        if let Some(hit) = self.cache.get(&pid).and_then(find) {
            return Some(hit);
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let regions = parse(&text);
        let hit = find(&regions);
        self.cache.insert(pid, regions);
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a21000 r--p 00000000 fe:01 1234  /usr/bin/cat
55d0c9000000-55d0c9021000 rw-p 00000000 00:00 0     [heap]
7f1e2c000000-7f1e2c400000 rw-p 00000000 00:00 0
7f1e2d000000-7f1e2d001000 r--s 00000000 07:03 12    /mnt/with space/data.bin
7f1e2e000000-7f1e2e001000 r--s 00000000 07:03 13    /mnt/two  spaces/x
7ffc1a000000-7ffc1a021000 rw-p 00000000 00:00 0     [stack]
";

    #[test]
    fn parses_maps() {
        let r = parse(MAPS);
        assert_eq!(r.len(), 6);
        assert_eq!(r[0].name, "/usr/bin/cat");
        assert_eq!(r[0].offset, 0);
        assert_eq!(
            (r[1].start, r[1].end, r[1].name.as_str()),
            (0x55d0c9000000, 0x55d0c9021000, "[heap]")
        );
        assert_eq!(r[2].name, "[anon]");
        assert_eq!(r[3].name, "/mnt/with space/data.bin");
        assert_eq!(r[4].name, "/mnt/two  spaces/x");
        assert_eq!(r[5].name, "[stack]");
    }

    #[test]
    fn own_code_is_found() {
        let addr = own_code_is_found as fn() as usize as u64;
        let region = ProcMaps::default()
            .lookup(std::process::id(), addr)
            .unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(Some(region.name.as_str()), exe.to_str());
        assert_eq!(ProcMaps::default().lookup(std::process::id(), 8), None);
    }
}
