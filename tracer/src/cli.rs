//! Command-line conventions every tool shares: `-p`/`-c`, `-d DISK`, `--json`,
//! `-v`, `-T`, `[interval [count]]`, thresholds, and one-line errors.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use clap::ArgMatches;
use tracer_common::TaskFilter;

use crate::kernel::{self, disks::Disks};
use crate::output::{Options, Schedule};

/// `-p PID` and `-c CGROUP_PATH`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TaskArgs {
    /// Trace this process only
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
    /// Trace tasks in this cgroup v2 (and below) only, e.g. system.slice/foo.service
    #[arg(short = 'c', long = "cgroup", value_name = "CGROUP_PATH")]
    pub cgroup: Option<PathBuf>,
}

impl TaskArgs {
    /// Validates the filter against the running system.
    pub fn resolve(&self) -> Result<TaskFilter> {
        resolve_task_filter(self.pid, self.cgroup.as_deref())
    }
}

pub fn resolve_task_filter(pid: Option<u32>, cgroup: Option<&Path>) -> Result<TaskFilter> {
    let mut f = TaskFilter::default();
    if let Some(pid) = pid {
        kernel::check_pid(pid)?;
        f.tgid = pid;
    }
    if let Some(path) = cgroup {
        let cg = kernel::cgroup(path)?;
        f.cgroup_id = cg.id;
        kernel::set_filter_cgroup(&cg)?;
    }
    Ok(f)
}

/// `-d DISK`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DiskArgs {
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    pub disk: Option<String>,
}

impl DiskArgs {
    /// The disk's kernel dev_t, 0 for all disks; fails on an unknown name.
    pub fn resolve(&self, disks: &Disks) -> Result<u32> {
        self.disk.as_deref().map_or(Ok(0), |d| disks.lookup(d))
    }
}

/// `--json`, `-v`, `-T`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// Print NDJSON: one object per event, or per histogram per interval
    #[arg(long)]
    pub json: bool,
    /// Say which kernel hooks were attached and why; print drop/lost counters at exit
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Include timestamps
    #[arg(short = 'T', long)]
    pub timestamp: bool,
}

impl OutputArgs {
    /// How a run with these options prints.
    pub fn options<'a>(&self, what: &'a str, schedule: Schedule) -> Options<'a> {
        Options {
            what,
            json: self.json,
            verbose: self.verbose,
            timestamp: self.timestamp,
            schedule,
            heatmap: None,
        }
    }
}

/// `--heatmap FILE.svg` (histogram tools).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HeatmapArgs {
    /// Also draw the histograms as an SVG heatmap: a column per interval (each
    /// second without one), rewritten after each
    #[arg(long, value_name = "FILE.svg")]
    pub heatmap: Option<PathBuf>,
}

// Here rather than in output.rs, which does not import the command line.
impl Options<'_> {
    pub fn with_heatmap(mut self, heatmap: &HeatmapArgs) -> Self {
        self.heatmap = heatmap.heatmap.clone();
        self
    }
}

/// `[interval [count]]`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IntervalArgs {
    /// Seconds between reports, at most 604800 (7 days); default: one report at Ctrl-C
    #[arg(value_parser = parse_interval, allow_hyphen_values = true)]
    pub interval: Option<u64>,
    /// Number of reports, then exit
    #[arg(value_parser = parse_count, allow_hyphen_values = true)]
    pub count: Option<u64>,
}

impl IntervalArgs {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            interval: self.interval.map(Duration::from_secs),
            count: self.count,
        }
    }

    /// Event tools: `interval count` bound the run (a lone interval is a duration).
    pub fn duration_schedule(&self) -> Schedule {
        Schedule {
            interval: self.interval.map(Duration::from_secs),
            count: self.interval.map(|_| self.count.unwrap_or(1)),
        }
    }
}

/// The longest duration any flag takes (intervals, capture windows, holdoffs,
/// thresholds): far beyond any useful one, and far below where nanoseconds in
/// a u64 (584 years) or a timer's deadline could overflow.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Units a duration may carry, in nanoseconds.
const UNITS: &[(&str, f64)] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("min", 60e9),
    ("h", 3600e9),
];

const UNIT_LIST: &str = "ns, us, ms, s, m or h, e.g. 50ms";
const DURATION_SYNTAX: &str = "a number and a unit (ns, us, ms, s, m or h), e.g. 50ms";
const DURATION_RANGE: &str = "out of range: a duration is from 0 to 168h (7 days)";

/// A duration with its unit, `500us`, `50ms`, `1.5s`, `2m`, from 0 to
/// `MAX_DURATION`. The unit is required: a bare `50` would silently be seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.trim_end_matches(char::is_alphabetic).len());
    if num.trim().is_empty() {
        return Err(format!("not a duration: {DURATION_SYNTAX}"));
    }
    if unit.is_empty() {
        return Err(format!("a duration needs a unit: {UNIT_LIST}"));
    }
    let Some(&(_, ns_per_unit)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("not a duration: {DURATION_SYNTAX}"));
    };
    scaled_ns(num, ns_per_unit)
        .map(Duration::from_nanos)
        .ok_or_else(|| DURATION_RANGE.to_string())
}

/// A number of units (fractions allowed) as nanoseconds, if it is a number
/// from 0 to `MAX_DURATION`. NaN, infinities and negatives are not.
fn scaled_ns(num: &str, ns_per_unit: f64) -> Option<u64> {
    let ns = (num.trim().parse::<f64>().ok()? * ns_per_unit).round();
    (ns >= 0.0 && ns <= MAX_DURATION.as_nanos() as f64).then_some(ns as u64)
}

/// A whole number from 1 to `max`: a count (`--rows`, `--top`, ...).
pub fn parse_positive(s: &str, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 && n <= max => Ok(n),
        _ => Err(format!("must be a positive whole number, at most {max}")),
    }
}

pub fn parse_interval(s: &str) -> Result<u64, String> {
    let max = MAX_DURATION.as_secs();
    parse_positive(s, max).map_err(|_| {
        format!("interval must be a positive whole number of seconds, at most {max} (7 days)")
    })
}

pub fn parse_count(s: &str) -> Result<u64, String> {
    parse_positive(s, u64::MAX).map_err(|e| format!("count {e}"))
}

/// A `--min-latency` threshold in milliseconds, as nanoseconds.
pub fn parse_threshold_ms(s: &str) -> Result<u64, String> {
    scaled_ns(s, 1e6).ok_or_else(|| {
        format!(
            "must be a number of milliseconds from 0 to {} (7 days)",
            MAX_DURATION.as_millis()
        )
    })
}

/// A `--min-latency` threshold in microseconds, as nanoseconds.
pub fn parse_threshold_us(s: &str) -> Result<u64, String> {
    scaled_ns(s, 1e3).ok_or_else(|| {
        format!(
            "must be a number of microseconds from 0 to {} (7 days)",
            MAX_DURATION.as_micros()
        )
    })
}

/// A positive number of seconds (fractions allowed), from 1 ms to
/// `MAX_DURATION` (`tracer plot --interval`).
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match scaled_ns(s, 1e9) {
        Some(ns) if ns >= 1_000_000 => Ok(ns as f64 / 1e9),
        _ => Err(format!(
            "must be a number of seconds from 0.001 to {} (7 days)",
            MAX_DURATION.as_secs()
        )),
    }
}

/// The largest `--max-mem`.
const MAX_SIZE: u64 = 1 << 40;

const SIZE_SYNTAX: &str = "a whole number and K, M or G, e.g. 64M";

/// A size with its unit, `512K`, `64M`, `1G`, from 1K to 1024G. The unit is
/// required: a bare `64` would silently be bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('0'..='9') => return Err("a size needs a unit: K, M or G, e.g. 64M".into()),
        _ => return Err(format!("not a size: {SIZE_SYNTAX}")),
    };
    match num.trim().parse::<u64>().map(|n| n.checked_mul(mult)) {
        Ok(Some(n)) if n > 0 && n <= MAX_SIZE => Ok(n),
        _ => Err(format!("not a size from 1K to 1024G: {SIZE_SYNTAX}")),
    }
}

/// Parses a tool's arguments from its subcommand matches.
pub fn parse<A: clap::FromArgMatches>(m: &ArgMatches) -> Result<A> {
    A::from_arg_matches(m).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string().lines().next().unwrap_or("bad arguments")
        )
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A tool's `Args::default()`, which builds its exporter and recorder
    /// sources, is its bare command line: clap's defaults and Default agree.
    pub fn assert_default_is_bare<A: clap::Parser + Default + std::fmt::Debug>() {
        let bare = A::try_parse_from(["tool"]).unwrap();
        assert_eq!(format!("{:?}", A::default()), format!("{bare:?}"));
    }

    /// Values that are out of range or not numbers for every parser here.
    const NOT_NUMBERS: &[&str] = &["-1", "NaN", "nan", "inf", "", "abc", "1.2.3"];

    #[test]
    fn intervals_and_counts() {
        assert_eq!(parse_interval("5"), Ok(5));
        assert_eq!(parse_interval("604800"), Ok(604_800));
        for bad in ["0", "604801", "18446744073709551615", "1.5", "1e308"]
            .iter()
            .chain(NOT_NUMBERS)
        {
            let e = parse_interval(bad).unwrap_err();
            assert!(e.contains("at most 604800 (7 days)"), "{bad}: {e}");
        }
        assert_eq!(parse_count("3"), Ok(3));
        assert_eq!(parse_count("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_positive("100000", 100_000), Ok(100_000));
        assert_eq!(
            parse_positive("100001", 100_000),
            Err("must be a positive whole number, at most 100000".into())
        );
        for bad in ["0", "18446744073709551616", "1e308"]
            .iter()
            .chain(NOT_NUMBERS)
        {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (text, ns) in [
            ("10s", 10_000_000_000),
            ("250ms", 250_000_000),
            ("1.5ms", 1_500_000),
            ("500us", 500_000),
            ("500µs", 500_000),
            ("7ns", 7),
            ("1m", 60_000_000_000),
            ("2min", 120_000_000_000),
            ("0s", 0),
            (" 3 s ", 3_000_000_000),
            ("168h", MAX_DURATION.as_nanos() as u64),
            ("1e3ms", 1_000_000_000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_nanos(ns)), "{text}");
        }
        for (bad, says) in [
            ("2", "a duration needs a unit"),
            ("0", "a duration needs a unit"),
            ("1e308", "a duration needs a unit"),
            ("18446744073709551616", "a duration needs a unit"),
            ("", "not a duration"),
            ("ten", "not a duration"),
            ("NaN", "not a duration"),
            ("5 parsecs", "not a duration"),
            ("5d", "not a duration"),
            ("-1s", "out of range"),
            ("168.1h", "out of range"),
            ("99999999999999999999s", "out of range"),
            ("18446744073709551616ns", "out of range"),
            ("1e308s", "out of range"),
            ("inf s", "out of range"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn thresholds_and_seconds() {
        assert_eq!(parse_threshold_ms("1.5"), Ok(1_500_000));
        assert_eq!(parse_threshold_ms("604800000"), Ok(604_800_000_000_000));
        assert_eq!(parse_threshold_us("0"), Ok(0));
        assert_eq!(parse_threshold_us("2.25"), Ok(2250));
        for bad in ["604800001", "1e308", "18446744073709551616"]
            .iter()
            .chain(NOT_NUMBERS)
        {
            let e = parse_threshold_ms(bad).unwrap_err();
            assert!(e.contains("from 0 to 604800000 (7 days)"), "{bad}: {e}");
        }
        assert_eq!(parse_threshold_us("604800000000"), Ok(604_800_000_000_000));
        for bad in ["604800000001", "1e308", "18446744073709551616"]
            .iter()
            .chain(NOT_NUMBERS)
        {
            let e = parse_threshold_us(bad).unwrap_err();
            assert!(e.contains("from 0 to 604800000000 (7 days)"), "{bad}: {e}");
        }
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert_eq!(parse_seconds("0.001"), Ok(0.001));
        for bad in ["0", "0.0009", "604801", "1e308"].iter().chain(NOT_NUMBERS) {
            let e = parse_seconds(bad).unwrap_err();
            assert!(e.contains("from 0.001 to 604800"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("64M", 64 << 20),
            ("512k", 512 << 10),
            ("1G", 1 << 30),
            ("1K", 1024),
            ("1024G", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for (bad, says) in [
            ("64", "a size needs a unit"),
            ("0", "a size needs a unit"),
            ("", "not a size"),
            ("lots", "not a size"),
            ("1.5G", "not a size from 1K to 1024G"),
            ("0M", "not a size from 1K to 1024G"),
            ("-1M", "not a size from 1K to 1024G"),
            ("1025G", "not a size from 1K to 1024G"),
            ("18446744073709551616M", "not a size from 1K to 1024G"),
            ("17179869184G", "not a size from 1K to 1024G"),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
