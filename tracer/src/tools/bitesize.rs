//! bitesize: block I/O size histograms per process name.

use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::bitesize::{CommFilter, SizeGroup};

use super::Tool;
use crate::core::{
    block::{self, ISSUE, Needs, SUBMIT},
    cli::{self, IntervalArgs, OutputArgs},
    disks::Disks,
    ebpf,
    hist::HistReader,
    kernel,
    output::{self, cstr},
    run,
};

pub const TOOL: Tool = Tool {
    name: "bitesize",
    aliases: &[],
    about: "Block I/O size histograms per process name",
    command: Args::command,
    run,
    hooks: &[SUBMIT, ISSUE],
    optional_hooks: &[],
};

/// Summarize block I/O sizes as histograms per process name.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Trace this process name only (as in /proc/PID/comm)
    #[arg(short = 'c', long = "comm", value_name = "COMM")]
    comm: Option<String>,
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    /// Trace this process only
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pid: Option<u32>,
    /// Trace tasks in this cgroup v2 (and below) only
    #[arg(long = "cgroup", value_name = "CGROUP_PATH")]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let task = cli::resolve_task_filter(a.pid, a.cgroup.as_deref())?;
    let disks = Disks::scan();
    let dev = a
        .disk
        .as_deref()
        .map(|d| disks.lookup(d))
        .transpose()?
        .unwrap_or(0);
    if let Some(c) = &a.comm
        && (c.is_empty() || c.len() >= tracer_common::COMM_LEN)
    {
        anyhow::bail!("--comm must be 1 to 15 characters, as in /proc/PID/comm: '{c}'");
    }
    kernel::require_privileges()?;

    let needs = Needs {
        submit: true,
        insert: false,
        issue: true,
        complete: false,
    };
    let mut plan = block::plan(needs, task, dev)?;
    plan.config.unit_div = 1024;
    let comm = CommFilter {
        comm: a
            .comm
            .as_deref()
            .map(output::comm_bytes)
            .unwrap_or_default(),
    };
    let mut loaded = ebpf::load(crate::ebpf_object!("bitesize"), |l| {
        l.override_global("CONFIG", &plan.config, true);
        l.override_global("COMM", &comm, true);
    })?;
    plan.attach(&mut loaded)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let mut reader = HistReader::<SizeGroup>::default();
    run::periodic(
        a.interval.schedule(),
        run::Start::new("block I/O"),
        |last| {
            let hists = reader.read(&loaded.ebpf)?;
            if a.out.timestamp && !a.out.json {
                println!("{}", output::local_time());
            }
            for (group, h) in &hists {
                let name = cstr(&group.comm);
                if a.out.json {
                    let v = json!({"tool": "bitesize", "ts": output::unix_time(), "comm": name});
                    let v = h.json_with(v, "kbytes");
                    output::json_line(&v);
                } else {
                    println!("\nProcess Name = {name}");
                    print!("{}", h.render("Kbytes"));
                }
            }
            if last {
                loaded.report_counters(TOOL.name, a.out.verbose, &[]);
            }
            Ok(())
        },
    )
}
