//! The heatmap sink (`--heatmap FILE.svg` on histogram tools): one column per
//! interval, one row per log2 bucket of the kernel's histogram (the text
//! histogram's rows), one panel per histogram group. The file is rewritten
//! atomically after every column, so a browser refresh shows the run so far.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::kernel;
use crate::output;
use crate::source::{Fields, Sample, hist::slot_bounds};
use crate::view::svg::{self, Column, Grid, Picture, Row, Values};

/// Columns kept; past this, older columns are merged in pairs (and the
/// picture says so), so memory and file size stay bounded on long runs.
pub const MAX_COLUMNS: usize = 1800;

struct Col {
    t0: f64,
    t1: f64,
    /// Panel title -> counts per log2 slot.
    groups: BTreeMap<String, Vec<u64>>,
}

pub struct Heatmap {
    path: PathBuf,
    tool: &'static str,
    unit: &'static str,
    last: f64,
    columns: Vec<Col>,
    /// How many times the columns were merged in pairs.
    folds: u32,
}

/// A histogram group's labels as a panel title: "disk loop0, op read".
pub fn panel_title(labels: &Fields) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k} {s}"),
            other => format!("{k} {other}"),
        })
        .collect();
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(", ")
    }
}

/// Log2 slot rows from the lowest to the highest slot any column used.
pub fn slot_rows(columns: &[Vec<u64>]) -> (usize, usize) {
    let lo = columns
        .iter()
        .filter_map(|c| c.iter().position(|&n| n > 0))
        .min()
        .unwrap_or(0);
    let hi = columns
        .iter()
        .filter_map(|c| c.iter().rposition(|&n| n > 0))
        .max()
        .unwrap_or(lo);
    (lo, hi.max(lo))
}

/// The log2 slot of a value: 0 and 1 in slot 0, 2..3 in slot 1, ...
pub fn slot_of(v: u64) -> usize {
    if v == 0 { 0 } else { v.ilog2() as usize }
}

/// Adds `n` to a log2 slot, growing the slots to hold it.
pub fn add_to_slot(slots: &mut Vec<u64>, slot: usize, n: u64) {
    if slots.len() <= slot {
        slots.resize(slot + 1, 0);
    }
    slots[slot] += n;
}

/// Adds log2 slot counts to others.
pub fn add_slots(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Adds a histogram record's buckets (NDJSON, with explicit bounds) to log2
/// slots.
pub fn add_buckets(slots: &mut Vec<u64>, record: &Value) {
    for b in record["buckets"].as_array().into_iter().flatten() {
        let slot = slot_of(b["low"].as_u64().unwrap_or(0));
        add_to_slot(slots, slot, b["count"].as_u64().unwrap_or(0));
    }
}

/// A panel of log2 slot counts, a column per (start, end) span: a row per
/// slot, from the lowest to the highest any column used.
pub fn slot_grid(title: String, spans: &[(f64, f64)], slots: &[Vec<u64>], unit: &str) -> Grid {
    let (lo, hi) = slot_rows(slots);
    Grid {
        title,
        rows: (lo..=hi)
            .map(|s| {
                let (a, b) = slot_bounds(s);
                Row::range(a as f64, b as f64, unit)
            })
            .collect(),
        columns: spans
            .iter()
            .zip(slots)
            .map(|(&(t0, t1), c)| Column {
                t0,
                t1,
                values: (lo..=hi)
                    .map(|s| c.get(s).copied().unwrap_or(0) as f64)
                    .collect(),
            })
            .collect(),
    }
}

fn local(t: f64) -> String {
    output::format_local((t.max(0.0) * 1e9) as u64, false)
}

impl Heatmap {
    /// Checks that the file can be written before anything is traced.
    pub fn new(path: &Path, tool: &'static str) -> Result<Heatmap> {
        let tmp = tmp_path(path);
        std::fs::write(&tmp, b"").with_context(|| format!("cannot write {}", path.display()))?;
        let _ = std::fs::remove_file(&tmp);
        Ok(Heatmap {
            path: path.to_path_buf(),
            tool,
            unit: "",
            last: output::unix_time(),
            columns: Vec::new(),
            folds: 0,
        })
    }

    /// Adds the interval that ended at `now` (Unix seconds, taken just before
    /// the kernel's maps were read) and rewrites the file.
    pub fn add(&mut self, now: f64, sample: &Sample) -> Result<()> {
        if !sample.unit.is_empty() {
            self.unit = sample.unit;
        }
        let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for g in &sample.hists {
            let into = groups.entry(panel_title(&g.labels)).or_default();
            add_slots(into, &g.hist.log2_slots());
        }
        self.columns.push(Col {
            t0: self.last,
            t1: now,
            groups,
        });
        self.last = now;
        if self.columns.len() > MAX_COLUMNS {
            self.fold();
        }
        self.write()
    }

    /// Merges adjacent columns in pairs.
    fn fold(&mut self) {
        let old = std::mem::take(&mut self.columns);
        let mut it = old.into_iter();
        while let Some(mut a) = it.next() {
            if let Some(b) = it.next() {
                a.t1 = b.t1;
                for (k, v) in b.groups {
                    add_slots(a.groups.entry(k).or_default(), &v);
                }
            }
            self.columns.push(a);
        }
        self.folds += 1;
    }

    pub fn svg(&self) -> String {
        let titles: std::collections::BTreeSet<&String> =
            self.columns.iter().flat_map(|c| c.groups.keys()).collect();
        let spans: Vec<(f64, f64)> = self.columns.iter().map(|c| (c.t0, c.t1)).collect();
        let panels: Vec<Grid> = titles
            .into_iter()
            .map(|title| {
                let per_col: Vec<Vec<u64>> = self
                    .columns
                    .iter()
                    .map(|c| c.groups.get(title).cloned().unwrap_or_default())
                    .collect();
                slot_grid(title.clone(), &spans, &per_col, self.unit)
            })
            .collect();
        let (start, end) = (
            self.columns.first().map_or(self.last, |c| c.t0),
            self.columns.last().map_or(self.last, |c| c.t1),
        );
        let folded = if self.folds > 0 {
            format!(
                "; older columns merged {} times in pairs (at most {MAX_COLUMNS} columns)",
                self.folds
            )
        } else {
            String::new()
        };
        let pic = Picture {
            title: format!(
                "{} on {} (kernel {})",
                self.tool,
                kernel::hostname(),
                kernel::release()
            ),
            subtitle: format!(
                "{} .. {}, {} columns; rows: log2 buckets of {}; colour: count (log scale){folded}",
                local(start),
                local(end),
                self.columns.len(),
                self.unit
            ),
            x_label: "local time".into(),
            x_fmt: local,
            y_label: self.unit.to_string(),
            y_fmt: |v| format!("{v:.0}"),
        };
        if panels.is_empty() {
            // Nothing yet: one empty panel, so the file says what it is.
            return svg::heatmap(
                &pic,
                &[Grid {
                    title: "no operations yet".into(),
                    rows: vec![Row::range(0.0, 1.0, self.unit)],
                    columns: Vec::new(),
                }],
                Values::Counts { lines: true },
            );
        }
        svg::heatmap(&pic, &panels, Values::Counts { lines: true })
    }

    fn write(&self) -> Result<()> {
        write_atomically(&self.path, self.svg().as_bytes())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes through a temporary file and a rename: readers never see half a
/// file. What exists and is not a regular file (`/dev/null`, a FIFO) is
/// written in place: a rename would replace the device itself.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()));
    }
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{HistGroup, hist::Hist};
    use serde_json::json;

    fn sample(values: &[(u32, u64)]) -> Sample {
        let mut h = Hist::default();
        for &(bucket, n) in values {
            *h.buckets.entry(bucket).or_default() += n;
            h.count += n;
        }
        Sample {
            hists: vec![HistGroup {
                labels: vec![("disk", json!("loop0"))],
                hist: h,
            }],
            unit: "usecs",
            ..Sample::default()
        }
    }

    #[test]
    fn columns_rows_and_counts() {
        let dir = std::env::temp_dir().join(format!("tracer-heatmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.svg");
        let mut h = Heatmap::new(&path, "biolatency").unwrap();
        // Buckets below 16 are exact values: slot 2 (4..7) and slot 3 (8..15).
        h.add(1.0, &sample(&[(5, 3), (9, 1)])).unwrap();
        h.add(2.0, &sample(&[(6, 2)])).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert_eq!(svg.matches("class=\"cell\"").count(), 3);
        let rows: Vec<&str> = svg
            .split("data-row=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert_eq!(rows, ["0", "1", "0"]);
        assert!(svg.contains("data-low=\"4\" data-high=\"7\""));
        assert!(svg.contains("disk loop0"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_runs_fold_columns() {
        let dir = std::env::temp_dir().join(format!("tracer-heatmap-f-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut h = Heatmap::new(&dir.join("h.svg"), "t").unwrap();
        for _ in 0..=MAX_COLUMNS {
            h.columns.push(Col {
                t0: 0.0,
                t1: 1.0,
                groups: BTreeMap::from([("all".to_string(), vec![1])]),
            });
        }
        h.fold();
        assert_eq!(h.columns.len(), MAX_COLUMNS.div_ceil(2) + 1);
        let total: u64 = h.columns.iter().map(|c| c.groups["all"][0]).sum();
        assert_eq!(total, MAX_COLUMNS as u64 + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slot_range() {
        assert_eq!(slot_rows(&[vec![0, 0, 3], vec![0, 1]]), (1, 2));
        assert_eq!(slot_rows(&[vec![], vec![0]]), (0, 0));
    }
}
