//! biosnoop (iosnoop): one line per block I/O, attributed to the task that
//! submitted it, with outliers filtered in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::biosnoop::BioEvent;

use super::Tool;
use crate::core::{
    block::{self, COMPLETE, INSERT, ISSUE, Needs, SUBMIT},
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    disks::Disks,
    ebpf, kernel,
    output::{self, Clock, cstr},
    run,
};

pub const TOOL: Tool = Tool {
    name: "biosnoop",
    aliases: &["iosnoop"],
    about: "One line per block I/O: task, disk, sector, size, latency",
    command: Args::command,
    run,
    hooks: &[SUBMIT, ISSUE, COMPLETE],
    optional_hooks: &[("-Q", INSERT)],
};

/// Trace block I/O, one line per completed request.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Show time queued in the OS (from block_rq_insert to issue)
    #[arg(short = 'Q', long)]
    queued: bool,
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    /// Only I/O slower than this, in milliseconds (filtered in the kernel)
    #[arg(long = "min-latency", value_name = "MS", value_parser = cli::parse_threshold_ms, allow_negative_numbers = true)]
    min_latency_ns: Option<u64>,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// `interval count`: stop after interval * count seconds (a lone number is a duration)
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
        submit: true,
        insert: a.queued,
        issue: true,
        complete: true,
    };
    let mut plan = block::plan(needs, task, dev)?;
    plan.config.min_latency_ns = a.min_latency_ns.unwrap_or(0);
    let mut loaded = ebpf::load(crate::ebpf_object!("biosnoop"), |l| {
        l.override_global("CONFIG", &plan.config, true);
    })?;
    plan.attach(&mut loaded)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);
    let ring = loaded.take_events()?;

    let clock = Clock::now();
    let header = (!a.out.json).then(|| {
        let time = Clock::header(a.out.timestamp);
        let queue = if a.queued {
            format!(" {:>7}", "QUE(ms)")
        } else {
            String::new()
        };
        format!(
            "{time} {:<14} {:<7} {:<9} {:<1} {:<10} {:<7}{queue} {:>7}",
            "COMM", "PID", "DISK", "T", "SECTOR", "BYTES", "LAT(ms)"
        )
    });
    let on_event = |e: BioEvent| -> Result<()> {
        let rwbs = cstr(&e.rwbs);
        let disk = disks.name(e.dev);
        let (lat_ms, que_ms) = (e.lat_ns as f64 / 1e6, e.queue_ns as f64 / 1e6);
        if a.out.json {
            let mut v = json!({
                "tool": "biosnoop", "comm": cstr(&e.comm), "pid": e.tgid,
                "disk": disk, "t": block::op_letter(&rwbs).to_string(), "rwbs": rwbs, "sector": e.sector,
                "bytes": e.bytes, "lat_ms": lat_ms, "lat_ns": e.lat_ns,
            });
            if a.queued {
                v["que_ms"] = json!(que_ms);
            }
            clock.json_fields(&mut v, e.ts, a.out.timestamp);
            output::json_line(&v);
        } else {
            let time = clock.column(e.ts, a.out.timestamp);
            let queue = if a.queued {
                format!(" {que_ms:>7.2}")
            } else {
                String::new()
            };
            println!(
                "{time} {:<14.14} {:<7} {:<9} {:<1} {:<10} {:<7}{queue} {lat_ms:>7.2}",
                cstr(&e.comm),
                e.tgid,
                disk,
                block::op_letter(&rwbs),
                e.sector,
                e.bytes
            );
        }
        Ok(())
    };
    let verbose = a.out.verbose;
    run::stream(
        a.interval.duration_schedule(),
        run::Start::with_header("block I/O", header),
        ring,
        on_event,
        || {
            let inflight = block::inflight_at_exit(&loaded) as u64;
            loaded.report_counters(TOOL.name, verbose, &[("in_flight_at_exit", inflight)]);
            Ok(())
        },
    )
}
