//! biotop: top processes by block I/O, per interval, counted in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _, ValueEnum};
use serde_json::json;
use tracer_common::{
    biotop::{TopKey, TopValue},
    block::{dev_major, dev_minor},
};

use super::Tool;
use crate::core::{
    block::{self, COMPLETE, ISSUE, Needs, SUBMIT},
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    disks::Disks,
    ebpf, kernel,
    output::{self, cstr},
    run,
    tally::{Deltas, Tally},
};

pub const TOOL: Tool = Tool {
    name: "biotop",
    aliases: &[],
    about: "Top processes by block I/O, every interval",
    command: Args::command,
    run,
    hooks: &[SUBMIT, ISSUE, COMPLETE],
    optional_hooks: &[],
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SortBy {
    Io,
    Bytes,
    Time,
}

/// Block device I/O top, by process.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Don't clear the screen between intervals
    #[arg(short = 'C', long = "noclear")]
    no_clear: bool,
    /// Rows to print
    #[arg(short = 'r', long = "rows", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Sort by
    #[arg(short = 's', long = "sort", value_enum, default_value = "bytes")]
    sort: SortBy,
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

impl Tally for TopValue {
    fn add(&mut self, o: &Self) {
        self.io += o.io;
        self.bytes += o.bytes;
        self.ns += o.ns;
    }
    fn minus(&self, e: &Self) -> Self {
        TopValue {
            io: self.io - e.io,
            bytes: self.bytes - e.bytes,
            ns: self.ns - e.ns,
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let task = a.task.resolve()?;
    let mut disks = Disks::scan();
    let dev = a
        .disk
        .as_deref()
        .map(|d| disks.lookup(d))
        .transpose()?
        .unwrap_or(0);
    kernel::require_privileges()?;

    let needs = Needs {
        submit: true,
        insert: false,
        issue: true,
        complete: true,
    };
    let plan = block::plan(needs, task, dev)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("biotop"), |l| {
        l.override_global("CONFIG", &plan.config, true);
    })?;
    plan.attach(&mut loaded)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    // biotop reports every second unless told otherwise, like BCC's.
    let mut schedule = a.interval.schedule();
    schedule
        .interval
        .get_or_insert(std::time::Duration::from_secs(1));
    let mut deltas = Deltas::<TopKey, TopValue>::default();
    let clear = !a.no_clear && !a.out.json;
    run::periodic(schedule, run::Start::new("block device I/O"), |last| {
        let mut rows = deltas.read_percpu(&mut loaded.ebpf, "TOTALS")?;
        rows.sort_by_key(|(k, v)| {
            let key = match a.sort {
                SortBy::Io => v.io,
                SortBy::Bytes => v.bytes,
                SortBy::Time => v.ns,
            };
            (std::cmp::Reverse(key), k.tgid)
        });
        rows.truncate(a.rows as usize);
        if a.out.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|(k, v)| {
                    json!({
                        "pid": k.tgid, "comm": cstr(&k.comm), "d": if k.write != 0 { "W" } else { "R" },
                        "major": dev_major(k.dev), "minor": dev_minor(k.dev), "disk": disks.name(k.dev),
                        "io": v.io, "bytes": v.bytes, "kbytes": v.bytes as f64 / 1024.0,
                        "avg_ms": v.ns as f64 / 1e6 / v.io.max(1) as f64,
                    })
                })
                .collect();
            output::json_line(&json!({"tool": "biotop", "ts": output::unix_time(), "rows": rows}));
        } else {
            if clear {
                output::clear_screen();
            }
            println!("{} loadavg: {}\n", output::local_time(), loadavg());
            println!(
                "{:<7} {:<16} {:1} {:<3} {:<3} {:<8} {:>5} {:>7} {:>6}",
                "PID", "COMM", "D", "MAJ", "MIN", "DISK", "I/O", "Kbytes", "AVGms"
            );
            for (k, v) in &rows {
                println!(
                    "{:<7} {:<16} {:1} {:<3} {:<3} {:<8} {:>5} {:>7.1} {:>6.2}",
                    k.tgid,
                    cstr(&k.comm),
                    if k.write != 0 { "W" } else { "R" },
                    dev_major(k.dev),
                    dev_minor(k.dev),
                    disks.name(k.dev),
                    v.io,
                    v.bytes as f64 / 1024.0,
                    v.ns as f64 / 1e6 / v.io.max(1) as f64
                );
            }
            println!();
        }
        if last {
            loaded.report_counters(TOOL.name, a.out.verbose, &[]);
        }
        Ok(())
    })
}
