//! Command-line conventions every tool shares: `-p`/`-c`, `-d DISK`, `--json`,
//! `-v`, `-T`, `[interval [count]]`, thresholds, and one-line errors.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use clap::ArgMatches;
use tracer_common::TaskFilter;

use crate::core::{
    disks::Disks,
    kernel,
    run::{Options, Schedule},
};

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

/// `[interval [count]]`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IntervalArgs {
    /// Seconds between reports (default: one report at Ctrl-C)
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

pub fn parse_interval(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "interval must be a positive whole number of seconds, not '{s}'"
        )),
    }
}

pub fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("count must be a positive whole number, not '{s}'")),
    }
}

/// A `--min-latency` threshold in milliseconds, as nanoseconds.
pub fn parse_threshold_ms(s: &str) -> Result<u64, String> {
    parse_threshold(s, 1e6, "milliseconds")
}

/// A `--min-latency` threshold in microseconds, as nanoseconds.
pub fn parse_threshold_us(s: &str) -> Result<u64, String> {
    parse_threshold(s, 1e3, "microseconds")
}

fn parse_threshold(s: &str, ns_per_unit: f64, unit: &str) -> Result<u64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * ns_per_unit).round() as u64),
        _ => Err(format!("must be a number of {unit} >= 0")),
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
mod tests {
    use super::*;

    #[test]
    fn interval_validation() {
        assert_eq!(parse_interval("5"), Ok(5));
        for bad in ["0", "-1", "abc", "", "1.5"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert!(parse_count("0").is_err());
        assert_eq!(parse_count("3"), Ok(3));
        assert_eq!(parse_threshold_ms("1.5"), Ok(1_500_000));
        assert_eq!(parse_threshold_us("0"), Ok(0));
        assert_eq!(parse_threshold_us("2.25"), Ok(2250));
        for bad in ["-1", "nan", "inf", "x", ""] {
            assert!(parse_threshold_ms(bad).is_err(), "{bad}");
        }
    }
}
