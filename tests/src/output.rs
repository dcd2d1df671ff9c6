//! Reading what a tool printed: its `-v` counters, its warnings, its
//! histograms.

use serde_json::Value;

/// Counter `name` of a tool's `-v` "counters:" line in `stderr`.
#[track_caller]
pub fn counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("counters: ").map(|(_, c)| c))
        .unwrap_or_else(|| panic!("no counters line (run with -v): {stderr}"));
    line.split(", ")
        .find_map(|c| c.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in: {line}"))
}

/// The sum of the tracer's "N events missed (...)" warnings (one per tool).
pub(crate) fn reported_missed(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("WARNING: ")?
                .1
                .split_once(" event")?
                .0
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The sum of a histogram record's bucket counts (which must equal its
/// `count`: every event lands in one bucket).
#[track_caller]
pub fn bucket_sum(hist: &Value) -> u64 {
    hist["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no buckets: {hist}"))
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum()
}
