//! Histograms: reading the kernel's log-linear buckets, printing BCC-style log2
//! histograms, and percentiles through hdrhistogram.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    hash::Hash,
};

use anyhow::Result;
use aya::{
    Ebpf, Pod,
    maps::{MapData, PerCpuArray},
};
use serde_json::{Value, json};
use tracer_common::hist::{
    HistKey, HistStats, NUM_BUCKETS, SlotHist, bucket_high, bucket_low, log2_slot_of_bucket,
};

/// One histogram's counts (for an interval or since start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hist {
    /// Log-linear bucket index → count.
    pub buckets: BTreeMap<u32, u64>,
    /// Number of values (exact).
    pub count: u64,
    /// Sum of values (exact).
    pub sum: u64,
    /// Largest value (exact since start; per interval exact when it rose, else the
    /// top bucket's bound).
    pub max: u64,
}

/// Percentiles under a histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Hist {
    /// Counts per libbpf-tools log2 slot (slot 0 = 0..1, k = 2^k..2^(k+1)-1).
    pub fn log2_slots(&self) -> Vec<u64> {
        let mut slots = Vec::new();
        for (&b, &n) in &self.buckets {
            let s = log2_slot_of_bucket(b) as usize;
            if slots.len() <= s {
                slots.resize(s + 1, 0);
            }
            slots[s] += n;
        }
        slots
    }

    /// Percentiles from the fine buckets. Each bucket is represented by its lower
    /// bound: exact for values below 16 and for powers of two (I/O sizes), and
    /// never more than 6.25% under the true value.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).ok()?;
        for (&b, &n) in &self.buckets {
            h.record_n(bucket_low(b), n).ok()?;
        }
        if h.is_empty() {
            return None;
        }
        // hdrhistogram answers with the top of its own (0.1%) bucket: clamp to
        // the fine bucket's bound and the exact maximum.
        let q = |q: f64| {
            let v = h.value_at_quantile(q);
            bucket_low(tracer_common::hist::bucket_of(v)).min(self.max)
        };
        Some(Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: self.max,
        })
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Hist) {
        for (&b, &n) in &other.buckets {
            *self.buckets.entry(b).or_default() += n;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn average(&self) -> u64 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }

    /// BCC/libbpf-tools `print_log2_hist` layout, then a percentile line.
    pub fn render(&self, unit: &str) -> String {
        let mut out = String::new();
        render_log2(&mut out, &self.log2_slots(), unit);
        if let Some(p) = self.percentiles() {
            let _ = writeln!(
                out,
                "     p50 {}, p90 {}, p99 {}, p99.9 {}, max {} ({unit}, {} total)",
                p.p50, p.p90, p.p99, p.p999, p.max, self.count
            );
        }
        out
    }

    /// `fields` (an object: tool, labels) with this histogram's fields added.
    pub fn json_with(&self, mut fields: Value, unit: &str) -> Value {
        if let (Some(obj), Value::Object(h)) = (fields.as_object_mut(), self.to_json(unit)) {
            obj.extend(h);
        }
        fields
    }

    /// JSON object with explicit bucket bounds (in `unit`) and the percentiles.
    pub fn to_json(&self, unit: &str) -> Value {
        let buckets: Vec<Value> = self
            .log2_slots()
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let (lo, hi) = slot_bounds(i);
                json!({"low": lo, "high": hi, "count": n})
            })
            .collect();
        let p = self.percentiles();
        json!({
            "unit": unit,
            "count": self.count,
            "sum": self.sum,
            "avg": self.average(),
            "p50": p.map(|p| p.p50),
            "p90": p.map(|p| p.p90),
            "p99": p.map(|p| p.p99),
            "p99_9": p.map(|p| p.p999),
            "max": p.map(|p| p.max),
            "buckets": buckets,
        })
    }
}

/// Value range of a libbpf-tools log2 slot.
pub fn slot_bounds(slot: usize) -> (u64, u64) {
    let high = if slot >= 63 {
        u64::MAX
    } else {
        (1u64 << (slot + 1)) - 1
    };
    let low = if slot == 0 { 0 } else { 1u64 << slot };
    (low, high)
}

/// libbpf-tools' print_log2_hist, byte for byte.
pub fn render_log2(out: &mut String, slots: &[u64], unit: &str) {
    let Some(idx_max) = slots.iter().rposition(|&n| n > 0) else {
        return;
    };
    let val_max = slots.iter().copied().max().unwrap_or(0);
    let wide = idx_max > 32;
    let (pad, label_width, width, stars) = if wide {
        (15, 29, 20, 20)
    } else {
        (5, 19, 10, 40)
    };
    let _ = writeln!(
        out,
        "{:pad$}{unit:<label_width$} : count    distribution",
        ""
    );
    for (i, &n) in slots.iter().enumerate().take(idx_max + 1) {
        let (low, high) = slot_bounds(i);
        let _ = write!(out, "{low:>width$} -> {high:<width$} : {n:<8} |");
        let num_stars = (n.min(val_max) * stars).checked_div(val_max).unwrap_or(0) as usize;
        out.push_str(&"*".repeat(num_stars));
        out.push_str(&" ".repeat(stars as usize - num_stars));
        out.push_str("|\n");
    }
}

/// Reads a tool's `HIST`/`HIST_STATS` maps into one `Hist` per group. Keeps the
/// previous totals so each read can return just what happened since the last one,
/// without clearing maps the kernel is writing to (which would lose counts).
///
/// Ungrouped histograms live whole in the `HIST_SLOTS` per-CPU array (the
/// kernel's fast path); `slot_group` names the group each slot stands for.
pub struct HistReader<G> {
    prev_buckets: HashMap<(G, u32), u64>,
    prev_stats: HashMap<G, HistStats>,
    slot_group: fn(u32) -> G,
}

impl<G> Default for HistReader<G>
where
    G: Pod + Ord + Hash + Default,
    HistKey<G>: Pod,
{
    fn default() -> Self {
        HistReader::new(|_| G::default())
    }
}

impl<G> HistReader<G>
where
    G: Pod + Ord + Hash,
    HistKey<G>: Pod,
{
    pub fn new(slot_group: fn(u32) -> G) -> Self {
        HistReader {
            prev_buckets: HashMap::new(),
            prev_stats: HashMap::new(),
            slot_group,
        }
    }

    /// Adds each `HIST_SLOTS` slot's totals and bucket counts to the lists.
    fn read_slots(
        &self,
        ebpf: &Ebpf,
        totals: &mut Vec<(G, HistStats)>,
        buckets: &mut Vec<(G, u32, u64)>,
    ) -> Result<()> {
        let Some(map) = ebpf.map("HIST_SLOTS") else {
            return Ok(());
        };
        let slots: PerCpuArray<&MapData, SlotHist> = PerCpuArray::try_from(map)?;
        for i in 0..slots.len() {
            let group = (self.slot_group)(i);
            let mut stats = HistStats::default();
            let mut counts = vec![0u64; NUM_BUCKETS as usize];
            for h in slots.get(&i, 0)?.iter() {
                stats.count += h.count;
                stats.sum += h.sum;
                stats.max = stats.max.max(h.max);
                for (total, n) in counts.iter_mut().zip(h.buckets.iter()) {
                    *total += n;
                }
            }
            totals.push((group, stats));
            buckets.extend(
                counts
                    .into_iter()
                    .enumerate()
                    .filter(|(_, n)| *n > 0)
                    .map(|(b, n)| (group, b as u32, n)),
            );
        }
        Ok(())
    }

    /// This interval's histograms from the tool's `HIST_SLOTS`, `HIST` and
    /// `HIST_STATS` maps (whichever it has).
    pub fn read(&mut self, ebpf: &Ebpf) -> Result<BTreeMap<G, Hist>> {
        let mut totals: Vec<(G, HistStats)> = Vec::new();
        let mut bucket_totals: Vec<(G, u32, u64)> = Vec::new();
        self.read_slots(ebpf, &mut totals, &mut bucket_totals)?;
        let stats = match ebpf.map("HIST_STATS") {
            Some(m) => crate::bpf::mapdump::entries::<G, HistStats>(m)?,
            None => Vec::new(),
        };
        let hist = match ebpf.map("HIST") {
            Some(m) => crate::bpf::mapdump::entries::<HistKey<G>, u64>(m)?,
            None => Vec::new(),
        };
        for (group, per_cpu) in stats {
            let mut total = HistStats::default();
            for s in per_cpu.iter() {
                total.count += s.count;
                total.sum += s.sum;
                total.max = total.max.max(s.max);
            }
            totals.push((group, total));
        }
        for (key, per_cpu) in hist {
            bucket_totals.push((key.group, key.bucket, per_cpu.iter().sum()));
        }

        let mut out: BTreeMap<G, Hist> = BTreeMap::new();
        for (group, total) in totals {
            let prev = self.prev_stats.insert(group, total).unwrap_or_default();
            if total.count > prev.count {
                let h = out.entry(group).or_default();
                h.count = total.count - prev.count;
                h.sum = total.sum - prev.sum;
                h.max = if total.max > prev.max { total.max } else { 0 };
            }
        }
        for (group, bucket, total) in bucket_totals {
            let prev = self
                .prev_buckets
                .insert((group, bucket), total)
                .unwrap_or(0);
            if total > prev
                && let Some(h) = out.get_mut(&group)
            {
                h.buckets.insert(bucket, total - prev);
            }
        }
        for (group, h) in out.iter_mut() {
            if h.max == 0
                && let Some((&top, _)) = h.buckets.iter().next_back()
            {
                // The maximum did not rise this interval: the top bucket bounds it.
                let since_start = self.prev_stats.get(group).map_or(u64::MAX, |s| s.max);
                h.max = bucket_high(top).min(since_start);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::bucket_of;

    use super::*;

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
    fn renders_like_libbpf_tools() {
        let h = hist_of(&[0, 1, 3, 3, 5, 100]);
        let expected = "     usecs               : count    distribution
         0 -> 1          : 2        |****************************************|
         2 -> 3          : 2        |****************************************|
         4 -> 7          : 1        |********************                    |
         8 -> 15         : 0        |                                        |
        16 -> 31         : 0        |                                        |
        32 -> 63         : 0        |                                        |
        64 -> 127        : 1        |********************                    |
";
        let mut out = String::new();
        render_log2(&mut out, &h.log2_slots(), "usecs");
        assert_eq!(out, expected);
    }

    #[test]
    fn empty_histogram_prints_nothing() {
        let mut out = String::new();
        render_log2(&mut out, &[0, 0], "usecs");
        assert_eq!(out, "");
        assert_eq!(Hist::default().percentiles(), None);
    }

    #[test]
    fn percentiles_are_within_bucket_precision() {
        let values: Vec<u64> = (1..=10_000).collect();
        let p = hist_of(&values).percentiles().unwrap();
        for (got, want) in [
            (p.p50, 5000.0),
            (p.p90, 9000.0),
            (p.p99, 9900.0),
            (p.p999, 9990.0),
        ] {
            let err = (got as f64 - want).abs() / want;
            assert!(err <= 0.0625, "got {got}, want {want}");
        }
        assert_eq!(p.max, 10_000);
    }

    #[test]
    fn powers_of_two_are_exact() {
        let p = hist_of(&[65536; 10]).percentiles().unwrap();
        assert_eq!((p.p50, p.p90, p.max), (65536, 65536, 65536));
    }

    #[test]
    fn small_values_are_exact() {
        let p = hist_of(&[3; 100]).percentiles().unwrap();
        assert_eq!((p.p50, p.p99, p.max), (3, 3, 3));
    }

    #[test]
    fn json_has_explicit_bounds() {
        let v = hist_of(&[4096, 4096, 70000]).to_json("bytes");
        let buckets = v["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 17);
        assert_eq!(buckets[12], json!({"low": 4096, "high": 8191, "count": 2}));
        assert_eq!(
            buckets[16],
            json!({"low": 65536, "high": 131071, "count": 1})
        );
        assert_eq!(buckets[0], json!({"low": 0, "high": 1, "count": 0}));
        assert_eq!(v["count"], 3);
        assert_eq!(v["max"], 70000);
    }

    #[test]
    fn slot_bounds_cover_u64() {
        assert_eq!(slot_bounds(0), (0, 1));
        assert_eq!(slot_bounds(1), (2, 3));
        assert_eq!(slot_bounds(63), (1 << 63, u64::MAX));
    }
}
