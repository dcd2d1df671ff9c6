//! pagefaults: page faults per process every interval (top-like), counted in the
//! kernel: minor/major and user/kernel mode.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::pagefaults::ProcFaults;

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    ebpf,
    fault::{self, END_MAJOR, END_MINOR},
    kernel,
    output::{self, cstr},
    run,
    tally::{Deltas, Tally},
};

pub const TOOL: Tool = Tool {
    name: "pagefaults",
    aliases: &[],
    about: "Page faults per process every interval: minor/major, user/kernel mode",
    command: Args::command,
    run,
    hooks: &[END_MINOR, END_MAJOR],
    optional_hooks: &[],
};

/// Page faults per process, top-like.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Don't clear the screen between intervals
    #[arg(short = 'C', long = "noclear")]
    no_clear: bool,
    /// Rows to print
    #[arg(short = 'r', long = "rows", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

impl Tally for ProcFaults {
    fn add(&mut self, o: &Self) {
        self.minor += o.minor;
        self.major += o.major;
        self.user += o.user;
        self.kernel += o.kernel;
        if self.comm[0] == 0 {
            self.comm = o.comm;
        }
    }
    fn minus(&self, e: &Self) -> Self {
        ProcFaults {
            minor: self.minor - e.minor,
            major: self.major - e.major,
            user: self.user - e.user,
            kernel: self.kernel - e.kernel,
            comm: self.comm,
        }
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let task = a.task.resolve()?;
    kernel::require_privileges()?;
    let config = fault::config(task, false)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("pagefaults"), |l| {
        l.override_global("CONFIG", &config, true);
    })?;
    for chain in TOOL.hooks {
        loaded.attach_chain(chain)?;
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let mut schedule = a.interval.schedule();
    schedule
        .interval
        .get_or_insert(std::time::Duration::from_secs(1));
    let mut deltas = Deltas::<u32, ProcFaults>::default();
    let clear = !a.no_clear && !a.out.json;
    run::periodic(schedule, run::Start::new("page faults"), |last| {
        let mut rows = deltas.read_percpu(&mut loaded.ebpf, "PROCS")?;
        rows.sort_by_key(|(pid, v)| (std::cmp::Reverse(v.minor + v.major), *pid));
        rows.truncate(a.rows as usize);
        // The name now (after an exec) beats the one seen at the first fault.
        let name = |pid: u32, v: &ProcFaults| {
            let now = kernel::process_comm(pid);
            if now.is_empty() { cstr(&v.comm) } else { now }
        };
        if a.out.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|(pid, v)| {
                    json!({"pid": pid, "comm": name(*pid, v), "minor": v.minor, "major": v.major,
                           "user": v.user, "kernel": v.kernel, "total": v.minor + v.major})
                })
                .collect();
            output::json_line(
                &json!({"tool": "pagefaults", "ts": output::unix_time(), "rows": rows}),
            );
        } else {
            if clear {
                output::clear_screen();
            }
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            println!("{} loadavg: {}\n", output::local_time(), load.trim());
            println!(
                "{:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "PID", "COMM", "MINOR", "MAJOR", "USER", "KERNEL", "TOTAL"
            );
            for (pid, v) in &rows {
                println!(
                    "{pid:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name(*pid, v),
                    v.minor,
                    v.major,
                    v.user,
                    v.kernel,
                    v.minor + v.major
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
