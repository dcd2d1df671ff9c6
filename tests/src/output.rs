//! Reading what a tool printed: its `-v` counters and its warnings.

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
