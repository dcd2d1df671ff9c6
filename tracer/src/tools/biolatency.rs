//! biolatency: block I/O latency as log2 histograms, aggregated in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    biolatency::LatGroup,
    block::{FLAG_PER_DISK, FLAG_PER_FLAGS, FLAG_QUEUED},
};

use super::Tool;
use crate::core::{
    block::{self, COMPLETE, INSERT, ISSUE, Needs, SUBMIT},
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    disks::Disks,
    ebpf,
    hist::{Hist, HistReader},
    kernel,
    output::{self, cstr},
    run,
};

pub const TOOL: Tool = Tool {
    name: "biolatency",
    aliases: &[],
    about: "Block I/O latency histograms (issue to completion, or from queueing with -Q)",
    command: Args::command,
    run,
    hooks: &[ISSUE, COMPLETE],
    optional_hooks: &[("-Q", INSERT), ("-p/-c", SUBMIT)],
};

/// Summarize block device I/O latency as a histogram.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Include OS queued time (from block_rq_insert) in the latency
    #[arg(short = 'Q', long)]
    queued: bool,
    /// Millisecond histogram
    #[arg(short = 'm', long)]
    milliseconds: bool,
    /// One histogram per disk
    #[arg(short = 'D', long = "disks")]
    per_disk: bool,
    /// One histogram per set of I/O flags (e.g. Read, Sync-Write, Flush)
    #[arg(short = 'F', long = "flags")]
    per_flags: bool,
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    /// Print count, average and total latency under each histogram
    #[arg(short = 'e', long = "extension")]
    extension: bool,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
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
        submit: task.tgid != 0 || task.cgroup_id != 0,
        insert: a.queued,
        issue: true,
        complete: true,
    };
    let mut plan = block::plan(needs, task, dev)?;
    plan.config.unit_div = if a.milliseconds { 1_000_000 } else { 1000 };
    for (on, flag) in [
        (a.queued, FLAG_QUEUED),
        (a.per_disk, FLAG_PER_DISK),
        (a.per_flags, FLAG_PER_FLAGS),
    ] {
        if on {
            plan.config.flags |= flag;
        }
    }
    let mut loaded = ebpf::load(crate::ebpf_object!("biolatency"), |l| {
        l.override_global("CONFIG", &plan.config, true);
    })?;
    plan.attach(&mut loaded)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let unit = if a.milliseconds { "msecs" } else { "usecs" };
    let mut reader = HistReader::<LatGroup>::default();
    run::periodic(
        a.interval.schedule(),
        run::Start::new("block device I/O"),
        |last| {
            let hists = reader.read(&loaded.ebpf)?;
            let time = a.out.timestamp.then(output::local_time);
            if a.out.json {
                let grouped = a.per_disk || a.per_flags;
                if hists.is_empty() && !grouped {
                    // Nothing happened: still one record for the interval.
                    output::json_line(&record(
                        &a,
                        &mut disks,
                        &LatGroup::default(),
                        &Hist::default(),
                        unit,
                    ));
                }
                for (group, h) in &hists {
                    output::json_line(&record(&a, &mut disks, group, h, unit));
                }
            } else {
                if let Some(t) = &time {
                    println!("{t}");
                }
                for (group, h) in &hists {
                    let mut labels = Vec::new();
                    if a.per_disk {
                        labels.push(format!("disk = {}", disks.name(group.dev)));
                    }
                    if a.per_flags {
                        labels.push(format!("flags = {}", block::flags_name(&cstr(&group.rwbs))));
                    }
                    if !labels.is_empty() {
                        println!("\n{}", labels.join(", "));
                    }
                    print!("{}", h.render(unit));
                    if a.extension {
                        println!(
                            "     avg = {} {unit}, total: {} {unit}, count: {}",
                            h.average(),
                            h.sum,
                            h.count
                        );
                    }
                }
                println!();
            }
            if last {
                let inflight = block::inflight_at_exit(&loaded) as u64;
                loaded.report_counters(
                    TOOL.name,
                    a.out.verbose,
                    &[("in_flight_at_exit", inflight)],
                );
            }
            Ok(())
        },
    )
}

fn record(
    a: &Args,
    disks: &mut Disks,
    group: &LatGroup,
    hist: &Hist,
    unit: &str,
) -> serde_json::Value {
    let mut v = json!({"tool": "biolatency", "ts": output::unix_time()});
    if a.out.timestamp {
        v["time"] = json!(output::local_time());
    }
    if a.per_disk {
        v["disk"] = json!(disks.name(group.dev));
    }
    if a.per_flags {
        v["flags"] = json!(block::flags_name(&cstr(&group.rwbs)));
    }
    hist.json_with(v, unit)
}
