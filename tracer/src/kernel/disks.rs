//! Block device names and numbers, from /sys/class/block.

use std::{collections::HashMap, fs};

use anyhow::{Result, bail};
use tracer_common::block::{dev_major, dev_minor, mkdev};

/// Kernel dev_t (as in tracepoints) → device name.
#[derive(Clone, Debug, Default)]
pub struct Disks {
    names: HashMap<u32, String>,
}

impl Disks {
    pub fn scan() -> Disks {
        let mut names = HashMap::new();
        if let Ok(dir) = fs::read_dir("/sys/class/block") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Ok(dev) = fs::read_to_string(entry.path().join("dev"))
                    && let Some(dev) = parse_major_minor(&dev)
                {
                    names.insert(dev, name);
                }
            }
        }
        Disks { names }
    }

    /// The device's name; `maj:min` when unknown (e.g. removed since).
    pub fn name(&mut self, dev: u32) -> String {
        if !self.names.contains_key(&dev) {
            *self = Disks::scan();
        }
        self.names
            .get(&dev)
            .cloned()
            .unwrap_or_else(|| format!("{}:{}", dev_major(dev), dev_minor(dev)))
    }

    /// Resolves `-d DISK` (a name such as `vda` or `loop3`, or `/dev/vda`).
    pub fn lookup(&self, disk: &str) -> Result<u32> {
        let name = disk.strip_prefix("/dev/").unwrap_or(disk);
        match self.names.iter().find(|(_, n)| n.as_str() == name) {
            Some((dev, _)) => Ok(*dev),
            None => bail!("unknown disk: {disk} (see /sys/class/block)"),
        }
    }
}

/// "7:3\n" → kernel dev_t.
pub fn parse_major_minor(s: &str) -> Option<u32> {
    let (major, minor) = s.trim().split_once(':')?;
    Some(mkdev(major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dev_files() {
        assert_eq!(parse_major_minor("7:3\n"), Some((7 << 20) | 3));
        assert_eq!(parse_major_minor("253:0"), Some(253 << 20));
        assert_eq!(parse_major_minor("x:1"), None);
        assert_eq!(parse_major_minor(""), None);
    }

    #[test]
    fn unknown_disk_is_an_error() {
        let disks = Disks::default();
        assert_eq!(
            disks.lookup("nosuchdisk").unwrap_err().to_string(),
            "unknown disk: nosuchdisk (see /sys/class/block)"
        );
    }
}
