//! faultsnoop: one line per page fault: address, instruction, type, handling time
//! and the mapping the address falls in; outliers filtered in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::faultsnoop::FaultEvent;

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    ebpf,
    fault::{self, END_MAJOR, END_MINOR, START_KERNEL, START_USER},
    kernel,
    output::{self, Clock, cstr},
    procmaps::ProcMaps,
    run,
};

pub const TOOL: Tool = Tool {
    name: "faultsnoop",
    aliases: &[],
    about: "One line per page fault: address, type, handling time, mapping",
    command: Args::command,
    run,
    hooks: &[START_USER, START_KERNEL, END_MINOR, END_MAJOR],
    optional_hooks: &[],
};

/// Trace page faults, one line each.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Only faults slower than this, in microseconds (filtered in the kernel)
    #[arg(long = "min-latency", value_name = "US", value_parser = cli::parse_threshold_us, allow_negative_numbers = true)]
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
    kernel::require_privileges()?;
    let mut config = fault::config(task, true)?;
    config.min_latency_ns = a.min_latency_ns.unwrap_or(0);
    let mut loaded = ebpf::load(crate::ebpf_object!("faultsnoop"), |l| {
        l.override_global("CONFIG", &config, true);
    })?;
    for chain in [&END_MINOR, &END_MAJOR, &START_USER, &START_KERNEL] {
        loaded.attach_chain(chain)?;
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);
    let ring = loaded.take_events()?;

    let clock = Clock::now();
    let mut maps = ProcMaps::default();
    let header = (!a.out.json).then(|| {
        let time = Clock::header(a.out.timestamp);
        format!(
            "{time} {:<16} {:<7} {:<7} {:<18} {:<18} {:<18} {:>9} MAPPING",
            "COMM", "PID", "TID", "ADDR", "IP", "TYPE", "LAT(us)"
        )
    });
    let on_event = |e: FaultEvent| -> Result<()> {
        let kind = fault::type_name(e.error_code, e.kernel != 0, e.major != 0);
        let mapping = maps.lookup(e.tgid, e.address).unwrap_or_else(|| "?".into());
        let lat_us = e.lat_ns as f64 / 1e3;
        if a.out.json {
            let mut v = json!({
                "tool": "faultsnoop", "comm": cstr(&e.comm), "pid": e.tgid,
                "tid": e.tid, "addr": format!("{:#x}", e.address), "ip": format!("{:#x}", e.ip), "type": kind,
                "lat_us": lat_us, "lat_ns": e.lat_ns, "mapping": mapping,
            });
            clock.json_fields(&mut v, e.ts, a.out.timestamp);
            output::json_line(&v);
        } else {
            let time = clock.column(e.ts, a.out.timestamp);
            println!(
                "{time} {:<16} {:<7} {:<7} {:<#18x} {:<#18x} {kind:<18} {lat_us:>9.2} {mapping}",
                cstr(&e.comm),
                e.tgid,
                e.tid,
                e.address,
                e.ip
            );
        }
        Ok(())
    };
    let verbose = a.out.verbose;
    run::stream(
        a.interval.duration_schedule(),
        run::Start::with_header("page faults", header),
        ring,
        on_event,
        || {
            loaded.report_counters(TOOL.name, verbose, &[]);
            Ok(())
        },
    )
}
