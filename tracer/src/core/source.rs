//! Sources: what a tool hands to the sinks. A source is a tool's loaded kernel
//! programs plus a typed read of what they aggregated (a `Sample` per interval)
//! or of their event stream (one `Event` per record). Sinks never see a tool's
//! kernel types; tools never print. Several sources run in one process (the
//! exporter, the recorder) because nothing here is tied to stdout.

use anyhow::Result;
use serde_json::Value;

use crate::core::{ebpf::Loaded, hist::Hist, metrics::Observations, output::Clock};

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
