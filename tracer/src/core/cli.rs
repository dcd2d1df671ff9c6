//! Command-line conventions every tool shares, and dispatch: `tracer <tool> ...`,
//! or a symlink named after the tool (argv[0]), plus `tracer list` and `tracer doctor`.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};
use tracer_common::TaskFilter;

use crate::{
    core::{kernel, run::Schedule},
    tools,
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
        f.cgroup_level = cg.level;
    }
    Ok(f)
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

fn root_command() -> Command {
    let mut cmd = Command::new("tracer")
        .about("eBPF tracing tools: block I/O, TCP, KVM exits, page faults")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("list")
                .about("List the tools and whether each can run on this kernel")
                .arg(
                    Arg::new("names")
                        .long("names")
                        .action(ArgAction::SetTrue)
                        .help("Print only tool names and aliases (for installing symlinks)"),
                ),
        )
        .subcommand(
            Command::new("doctor")
                .about("Check privileges, BTF and tracefs, and which hooks each tool would use")
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("Print JSON"),
                ),
        );
    for tool in tools::TOOLS {
        cmd = cmd.subcommand(
            (tool.command)()
                .name(tool.name)
                .about(tool.about)
                .visible_aliases(tool.aliases),
        );
    }
    cmd
}

/// A tool invoked through a symlink named after it runs as `tracer <tool>`.
fn argv_with_tool(args: Vec<OsString>) -> Vec<OsString> {
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if tools::find(&invoked).is_some() {
        let mut out = vec![OsString::from("tracer")];
        out.push(OsString::from(invoked));
        out.extend(args.into_iter().skip(1));
        out
    } else {
        args
    }
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Die quietly on a closed pipe (`tracer biosnoop | head`), like the C tools.
    // SAFETY: setting a signal disposition at start-up, before any threads.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tracer: internal error: {info}");
    }));

    let args = argv_with_tool(std::env::args_os().collect());
    let prefix = match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
        Some(name) if tools::find(&name).is_some() => name,
        _ => "tracer".to_string(),
    };
    let matches = match root_command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return usage_error(e, &prefix),
    };
    let (name, sub) = matches.subcommand().expect("subcommand is required");
    let result = match name {
        "list" => tools::list(sub.get_flag("names")),
        "doctor" => tools::doctor(sub.get_flag("json")),
        _ => match tools::find(name) {
            Some(tool) => (tool.run)(sub),
            None => unreachable!("clap only accepts known subcommands"),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {}", one_line(&e));
            1
        }
    }
}

/// An error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        let s = s.lines().next().unwrap_or("").trim().to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn usage_error(e: clap::Error, prefix: &str) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            }
        }
        _ => {
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("{prefix}: {line} (see --help)");
            2
        }
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

    #[test]
    fn symlink_name_selects_the_tool() {
        let args: Vec<OsString> = ["/usr/local/bin/biolatency", "-D", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        let got: Vec<String> = argv_with_tool(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["tracer", "biolatency", "-D", "1"]);
        let args: Vec<OsString> = ["tracer", "list"].iter().map(OsString::from).collect();
        assert_eq!(argv_with_tool(args.clone()), args);
    }

    #[test]
    fn every_tool_parses_its_help() {
        root_command().debug_assert();
    }

    #[test]
    fn bad_intervals_are_usage_errors() {
        for bad in ["0", "-1", "abc"] {
            let e = root_command()
                .try_get_matches_from(["tracer", "biolatency", bad])
                .unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }
}
