//! source/: the model between tools and sinks: the Source trait with its samples
//! and events (here), histograms (hist.rs), metric families and observations
//! (metrics.rs), and what a tool's event records hold (schema.rs).
//!
//! Sources: what a tool hands to the sinks. A source is a tool's loaded kernel
//! programs plus a typed read of what they aggregated (a `Sample` per interval)
//! or of their event stream (one `Event` per record). Sinks never see a tool's
//! kernel types; tools never print. Several sources run in one process (the
//! exporter, the recorder) because nothing here is tied to stdout.

pub mod hist;
pub mod metrics;
pub mod schema;

use anyhow::Result;
use serde_json::Value;

use crate::bpf::Loaded;
use crate::output::Clock;
use crate::source::{hist::Hist, metrics::Observations};

/// Named values in order: an event's fields, a histogram's labels, a table row.
pub type Fields = Vec<(&'static str, Value)>;

/// Typed reads of named values (missing or mistyped ones read as empty or 0).
pub trait Get {
    fn get(&self, name: &str) -> Option<&Value>;

    fn str(&self, name: &str) -> &str {
        self.get(name).and_then(Value::as_str).unwrap_or("")
    }

    fn u64(&self, name: &str) -> u64 {
        self.get(name).and_then(Value::as_u64).unwrap_or(0)
    }

    fn f64(&self, name: &str) -> f64 {
        self.get(name).and_then(Value::as_f64).unwrap_or(0.0)
    }
}

impl Get for Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// One histogram of an interval and the labels that tell it from its siblings.
#[derive(Clone, Debug, Default)]
pub struct HistGroup {
    pub labels: Fields,
    pub hist: Hist,
}

/// Rows of a table (top-like tools), in display order. A named table becomes one
/// NDJSON record holding all rows under that name; an unnamed one, one record
/// per row.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub name: Option<&'static str>,
    pub rows: Vec<Fields>,
}

/// What an aggregating source read for one interval.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Fields of the interval's record (e.g. which backend counted it).
    pub fields: Fields,
    pub tables: Vec<Table>,
    pub hists: Vec<HistGroup>,
    /// The unit histogram values are in ("usecs", "nsecs", "kbytes", ...).
    pub unit: &'static str,
}

impl Sample {
    /// Adds a later interval to this one (a run reported once at its end, read
    /// every interval for a picture): histograms merge by labels; table rows
    /// merge by their text fields, summing their counts; the latest value of
    /// anything else stands.
    pub fn absorb(&mut self, next: Sample) {
        self.fields = next.fields;
        if !next.unit.is_empty() {
            self.unit = next.unit;
        }
        for g in next.hists {
            match self.hists.iter_mut().find(|h| h.labels == g.labels) {
                Some(h) => h.hist.merge(&g.hist),
                None => self.hists.push(g),
            }
        }
        for t in next.tables {
            let Some(into) = self.tables.iter_mut().find(|x| x.name == t.name) else {
                self.tables.push(t);
                continue;
            };
            let key = |r: &Fields| -> Vec<(&'static str, Value)> {
                r.iter().filter(|(_, v)| !v.is_number()).cloned().collect()
            };
            for row in t.rows {
                match into.rows.iter_mut().find(|r| key(r) == key(&row)) {
                    Some(r) => {
                        for (k, v) in row {
                            match (r.iter_mut().find(|(x, _)| *x == k), v.as_u64()) {
                                (Some((_, old)), Some(n)) if old.is_u64() => {
                                    *old = Value::from(old.as_u64().unwrap_or(0) + n);
                                }
                                (Some((_, old)), _) => *old = v,
                                (None, _) => r.push((k, v)),
                            }
                        }
                    }
                    None => into.rows.push(row),
                }
            }
        }
    }
}

/// One decoded kernel record.
#[derive(Clone, Debug, Default)]
pub struct Event {
    /// CLOCK_MONOTONIC ns when it happened (for an operation: when it ended).
    pub ts: u64,
    /// How long the operation took, ns (0 for an instant such as a retransmit).
    pub dur_ns: u64,
    pub fields: Fields,
}

impl Get for Event {
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }
}

/// How a source reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Read at each interval (or once at the end).
    Aggregate,
    /// Records arrive on the `EVENTS` ring buffer.
    Stream,
}

/// A tool's data, ready for any sink.
pub trait Source {
    /// The tool's name (the `tool` field of its records, the `tool` label).
    fn name(&self) -> &'static str;
    fn kind(&self) -> Kind;
    fn loaded(&self) -> &Loaded;
    fn loaded_mut(&mut self) -> &mut Loaded;

    /// Aggregating sources: what the kernel counted since the last call.
    fn sample(&mut self) -> Result<Sample> {
        Ok(Sample::default())
    }

    /// Event sources: one ring-buffer record, decoded; None skips it.
    fn decode(&mut self, _record: &[u8]) -> Option<Event> {
        None
    }

    /// Operations started and not finished, in the kernel's in-flight tables
    /// (reported at exit with -v, and by the exporter).
    fn in_flight(&self) -> Option<u64> {
        None
    }

    /// Adds a later interval's sample to `total` (see `Sample::absorb`); a
    /// source whose rows hold derived values (percentages) recomputes them.
    fn absorb(&self, total: &mut Sample, next: Sample) {
        total.absorb(next);
    }

    /// The metrics a sample stands for (exporter): families, labels and values.
    fn export(&self, _sample: &Sample, _out: &mut Observations) {}
}

/// A tool's own text layout for the terminal (what BCC users read).
pub trait Layout {
    /// The column header printed once, after the banner.
    fn header(&self) -> Option<String> {
        None
    }

    /// One interval's report.
    fn sample(&mut self, _sample: &Sample, _out: &mut String) {}

    /// One event's line(s).
    fn event(&mut self, _event: &Event, _clock: &Clock, _out: &mut String) {}
}

/// Reads a kernel record as `T` (None when it is too short).
pub fn record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    // SAFETY: T is plain data and the record holds at least size_of::<T>()
    // bytes; read_unaligned copes with the ring's 8-byte alignment.
    (bytes.len() >= size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absorb_merges_by_labels_and_sums_counts() {
        let hist = |n: u64| {
            let mut h = Hist::default();
            h.buckets.insert(3, n);
            h.count = n;
            h.sum = 3 * n;
            h.max = 3;
            h
        };
        let sample = |n: u64, backend: &str| Sample {
            fields: vec![("backend", json!(backend))],
            tables: vec![Table {
                name: Some("rows"),
                rows: vec![vec![
                    ("reason", json!("io")),
                    ("count", json!(n)),
                    ("pct", json!(50.0)),
                ]],
            }],
            hists: vec![HistGroup {
                labels: vec![("disk", json!("vda"))],
                hist: hist(n),
            }],
            unit: "usecs",
        };
        let mut total = sample(2, "a");
        total.absorb(sample(3, "b"));
        assert_eq!(total.fields, vec![("backend", json!("b"))]);
        assert_eq!(total.hists.len(), 1);
        assert_eq!(total.hists[0].hist, hist(5));
        let row = &total.tables[0].rows[0];
        assert_eq!(row.u64("count"), 5);
        assert_eq!(row.f64("pct"), 50.0);
        total.absorb(Sample {
            hists: vec![HistGroup {
                labels: vec![("disk", json!("vdb"))],
                hist: hist(1),
            }],
            ..Sample::default()
        });
        assert_eq!(total.hists.len(), 2);
        assert_eq!(total.unit, "usecs");
    }
}
