//! Metrics for Prometheus: sources report what changed in an interval
//! (`Observations`); the `Registry` keeps the running totals and writes them in
//! the Prometheus text format or OpenMetrics.
//!
//! Conventions: base units (seconds, bytes), counters end in `_total`, one family
//! per quantity, histogram buckets at the kernel's own log2 bucket edges (every
//! exported `le` is an edge of the kernel's buckets, so no count is re-binned)
//! with `_sum` and `_count` exact. A label from an unbounded set (a process name)
//! gets its own series for at most a fixed number of values; the rest are summed
//! into `other`, and how many values were folded is itself exported.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
};

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::source::hist::Hist;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric family: one quantity.
#[derive(Debug)]
pub struct Family {
    /// Without `_total` for counters (OpenMetrics' family name).
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    /// Histograms: how many recorded units make one base unit (1e9 for
    /// nanoseconds exported as seconds, 1 for bytes). A divisor, so that bounds
    /// and sums are correctly rounded decimals.
    pub units_per_base: f64,
    /// Histograms: the log2 slots exported as buckets, [first, last] (see
    /// `integer` for their bounds). Slots below `first` count in the first
    /// bucket, above `last` only in `+Inf`.
    pub slots: (u32, u32),
    /// Histograms of whole numbers (bytes): slot k holds [2^k, 2^(k+1) - 1], so
    /// its inclusive bound is `le` = 2^(k+1) - 1. Otherwise (times, truncated to
    /// whole units) everything in slot k is below 2^(k+1) units.
    pub integer: bool,
    /// A label whose values are unbounded, and how many values get a series.
    pub fold: Option<(&'static str, usize)>,
}

impl Family {
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: MetricKind::Counter,
            units_per_base: 1.0,
            slots: (0, 0),
            integer: false,
            fold: None,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            kind: MetricKind::Gauge,
            ..Family::counter(name, help)
        }
    }

    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        units_per_base: f64,
        slots: (u32, u32),
    ) -> Family {
        Family {
            kind: MetricKind::Histogram,
            units_per_base,
            slots,
            ..Family::counter(name, help)
        }
    }

    pub const fn integer_values(self) -> Family {
        Family {
            integer: true,
            ..self
        }
    }

    pub const fn folding(self, label: &'static str, max: usize) -> Family {
        Family {
            fold: Some((label, max)),
            ..self
        }
    }
}

pub type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Debug)]
enum Value {
    /// Counters: the increase since the last sample. Gauges: the value now.
    Number(f64),
    Hist(Hist),
}

/// What a sample added to each series.
#[derive(Debug, Default)]
pub struct Observations {
    items: Vec<(&'static Family, Labels, Value)>,
}

impl Observations {
    /// A counter's increase.
    pub fn count(&mut self, family: &'static Family, labels: Labels, increase: u64) {
        debug_assert_eq!(family.kind, MetricKind::Counter);
        self.items
            .push((family, labels, Value::Number(increase as f64)));
    }

    /// A counter's increase that is not a whole number (seconds).
    pub fn count_f64(&mut self, family: &'static Family, labels: Labels, increase: f64) {
        debug_assert_eq!(family.kind, MetricKind::Counter);
        self.items.push((family, labels, Value::Number(increase)));
    }

    pub fn gauge(&mut self, family: &'static Family, labels: Labels, value: f64) {
        debug_assert_eq!(family.kind, MetricKind::Gauge);
        self.items.push((family, labels, Value::Number(value)));
    }

    /// A histogram's counts for the interval (merged into the series' totals).
    pub fn hist(&mut self, family: &'static Family, labels: Labels, hist: &Hist) {
        debug_assert_eq!(family.kind, MetricKind::Histogram);
        self.items.push((family, labels, Value::Hist(hist.clone())));
    }
}

/// How many distinct folded label values a family remembers (to count each
/// once); past that, memory stays bounded and each new value counts again.
const FOLDED_MEMORY: usize = 16384;

#[derive(Debug)]
struct FamilyState {
    family: &'static Family,
    series: BTreeMap<Labels, Value>,
    /// Values of the folding label that have a series of their own.
    kept: HashSet<String>,
    folded_seen: HashSet<String>,
    folded: u64,
}

/// The running totals of every series, by family.
#[derive(Debug, Default)]
pub struct Registry {
    families: BTreeMap<&'static str, FamilyState>,
    /// Overrides the families' own limit on values of a folding label.
    fold_limit: Option<usize>,
}

/// Exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// OpenMetrics when the scraper's Accept header asks for it.
    pub fn negotiate(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

impl Registry {
    pub fn with_fold_limit(limit: Option<usize>) -> Registry {
        Registry {
            families: BTreeMap::new(),
            fold_limit: limit,
        }
    }

    /// Adds a sample's observations to the totals.
    pub fn apply(&mut self, obs: Observations) {
        for (family, mut labels, value) in obs.items {
            let state = self
                .families
                .entry(family.name)
                .or_insert_with(|| FamilyState {
                    family,
                    series: BTreeMap::new(),
                    kept: HashSet::new(),
                    folded_seen: HashSet::new(),
                    folded: 0,
                });
            if let Some((label, max)) = family.fold
                && let Some(slot) = labels.iter_mut().find(|(k, _)| *k == label)
                && !state.kept.contains(&slot.1)
            {
                let max = self.fold_limit.unwrap_or(max);
                if state.kept.len() < max {
                    state.kept.insert(slot.1.clone());
                } else {
                    let v = std::mem::replace(&mut slot.1, "other".into());
                    if state.folded_seen.len() < FOLDED_MEMORY {
                        if state.folded_seen.insert(v) {
                            state.folded += 1;
                        }
                    } else if !state.folded_seen.contains(&v) {
                        state.folded += 1;
                    }
                }
            }
            labels.sort();
            match (state.series.get_mut(&labels), value) {
                (Some(Value::Number(total)), Value::Number(n)) => match family.kind {
                    MetricKind::Gauge => *total = n,
                    _ => *total += n,
                },
                (Some(Value::Hist(total)), Value::Hist(h)) => total.merge(&h),
                (None, value) => {
                    state.series.insert(labels, value);
                }
                (Some(_), _) => debug_assert!(false, "{} changed kind", family.name),
            }
        }
    }

    /// Series folded into `other`, per family (for the exporter's self-metrics).
    pub fn folded(&self) -> Vec<(&'static str, u64)> {
        self.families
            .values()
            .filter(|s| s.family.fold.is_some())
            .map(|s| (s.family.name, s.folded))
            .collect()
    }

    /// Number of series (a histogram counts once).
    pub fn series(&self) -> usize {
        self.families.values().map(|s| s.series.len()).sum()
    }

    /// The exposition of every series.
    pub fn encode(&self, format: Format) -> Bytes {
        let mut out = String::with_capacity(16 * 1024);
        for state in self.families.values() {
            encode_family(&mut out, state, format);
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        let mut buf = BytesMut::with_capacity(out.len());
        buf.put_slice(out.as_bytes());
        buf.freeze()
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A float as Prometheus reads it (integers without a fraction).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The upper bound of log2 slot `k` in base units.
pub fn slot_le(family: &Family, k: u32) -> f64 {
    let top = 2f64.powi(k as i32 + 1);
    if family.integer {
        (top - 1.0) / family.units_per_base
    } else {
        top / family.units_per_base
    }
}

fn encode_family(out: &mut String, s: &FamilyState, format: Format) {
    let f = s.family;
    let (type_name, kind) = match f.kind {
        MetricKind::Counter => (
            if format == Format::OpenMetrics {
                f.name.to_string()
            } else {
                format!("{}_total", f.name)
            },
            "counter",
        ),
        MetricKind::Gauge => (f.name.to_string(), "gauge"),
        MetricKind::Histogram => (f.name.to_string(), "histogram"),
    };
    let _ = writeln!(out, "# HELP {type_name} {}", escape_help(f.help));
    let _ = writeln!(out, "# TYPE {type_name} {kind}");
    for (labels, value) in &s.series {
        match value {
            Value::Number(n) => {
                let name = if f.kind == MetricKind::Counter {
                    format!("{}_total", f.name)
                } else {
                    f.name.to_string()
                };
                let _ = writeln!(out, "{name}{} {}", label_text(labels, None), number(*n));
            }
            Value::Hist(h) => {
                let slots = h.log2_slots();
                let (first, last) = f.slots;
                let mut cumulative: u64 = slots.iter().take(first as usize).sum();
                for k in first..=last {
                    cumulative += slots.get(k as usize).copied().unwrap_or(0);
                    let le = number(slot_le(f, k));
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {cumulative}",
                        f.name,
                        label_text(labels, Some(&le))
                    );
                }
                let _ = writeln!(
                    out,
                    "{}_bucket{} {}",
                    f.name,
                    label_text(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(
                    out,
                    "{}_sum{} {}",
                    f.name,
                    label_text(labels, None),
                    number(h.sum as f64 / f.units_per_base)
                );
                let _ = writeln!(
                    out,
                    "{}_count{} {}",
                    f.name,
                    label_text(labels, None),
                    h.count
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::bucket_of;

    use super::*;

    static LAT: Family = Family::histogram("t_latency_seconds", "Latency.", 1e9, (10, 12));
    static OPS: Family = Family::counter("t_ops", "Operations.");
    static PROC: Family = Family::counter("t_proc_ops", "Per process.").folding("comm", 2);

    fn hist_of(values: &[u64]) -> Hist {
        let mut h = Hist::default();
        for &v in values {
            *h.buckets.entry(bucket_of(v)).or_default() += 1;
            h.count += 1;
            h.sum += v;
            h.max = h.max.max(v);
        }
        h
    }

    #[test]
    fn histograms_are_cumulative_at_kernel_edges() {
        let mut r = Registry::default();
        let mut o = Observations::default();
        // 100 ns (below slot 10), 3000 ns (slot 11), 10 s (above slot 12).
        o.hist(&LAT, vec![("disk", "vda".into())], &hist_of(&[100, 3000]));
        r.apply(o);
        let mut o = Observations::default();
        o.hist(
            &LAT,
            vec![("disk", "vda".into())],
            &hist_of(&[10_000_000_000]),
        );
        r.apply(o);
        let text = String::from_utf8(r.encode(Format::Text).to_vec()).unwrap();
        let expected = "\
# HELP t_latency_seconds Latency.
# TYPE t_latency_seconds histogram
t_latency_seconds_bucket{disk=\"vda\",le=\"0.000002048\"} 1
t_latency_seconds_bucket{disk=\"vda\",le=\"0.000004096\"} 2
t_latency_seconds_bucket{disk=\"vda\",le=\"0.000008192\"} 2
t_latency_seconds_bucket{disk=\"vda\",le=\"+Inf\"} 3
t_latency_seconds_sum{disk=\"vda\"} 10.0000031
t_latency_seconds_count{disk=\"vda\"} 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn counters_and_openmetrics() {
        let mut r = Registry::default();
        for n in [3, 4] {
            let mut o = Observations::default();
            o.count(&OPS, vec![("op", "a\"b".into())], n);
            r.apply(o);
        }
        let text = String::from_utf8(r.encode(Format::Text).to_vec()).unwrap();
        assert_eq!(
            text,
            "# HELP t_ops_total Operations.\n# TYPE t_ops_total counter\nt_ops_total{op=\"a\\\"b\"} 7\n"
        );
        let om = String::from_utf8(r.encode(Format::OpenMetrics).to_vec()).unwrap();
        assert_eq!(
            om,
            "# HELP t_ops Operations.\n# TYPE t_ops counter\nt_ops_total{op=\"a\\\"b\"} 7\n# EOF\n"
        );
        assert_eq!(
            Format::negotiate("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate("*/*"), Format::Text);
    }

    #[test]
    fn unbounded_labels_fold_into_other() {
        let mut r = Registry::default();
        for comm in ["a", "b", "c", "d", "c", "a"] {
            let mut o = Observations::default();
            o.count(&PROC, vec![("comm", comm.into())], 1);
            r.apply(o);
        }
        let text = String::from_utf8(r.encode(Format::Text).to_vec()).unwrap();
        assert!(text.contains("t_proc_ops_total{comm=\"a\"} 2\n"), "{text}");
        assert!(text.contains("t_proc_ops_total{comm=\"b\"} 1\n"), "{text}");
        assert!(
            text.contains("t_proc_ops_total{comm=\"other\"} 3\n"),
            "{text}"
        );
        assert_eq!(r.folded(), vec![("t_proc_ops", 2)]);
        assert_eq!(r.series(), 3);
    }
}
