//! faultlat: how long page faults take to handle, as log2 histograms for minor
//! and major faults, from the fault's start (exceptions:page_fault_user/kernel)
//! to its accounting (software perf events PAGE_FAULTS_MIN/MAJ).

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{fault::FLAG_PER_PROCESS, faultlat::FaultGroup};

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    ebpf,
    fault::{self, END_MAJOR, END_MINOR, START_KERNEL, START_USER},
    hist::HistReader,
    kernel, output, run,
};

pub const TOOL: Tool = Tool {
    name: "faultlat",
    aliases: &[],
    about: "Page-fault handling time histograms, minor and major",
    command: Args::command,
    run,
    hooks: &[START_USER, START_KERNEL, END_MINOR, END_MAJOR],
    optional_hooks: &[],
};

/// Summarize page-fault handling time as histograms.
#[derive(clap::Parser, Debug)]
struct Args {
    /// One histogram per process
    #[arg(short = 'P', long = "per-process")]
    per_process: bool,
    /// Millisecond histograms
    #[arg(short = 'm', long, conflicts_with = "nanoseconds")]
    milliseconds: bool,
    /// Nanosecond histograms (minor faults take microseconds)
    #[arg(short = 'n', long)]
    nanoseconds: bool,
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
    kernel::require_privileges()?;
    let mut config = fault::config(task, true)?;
    let (unit_div, unit) = match (a.milliseconds, a.nanoseconds) {
        (true, _) => (1_000_000, "msecs"),
        (_, true) => (1, "nsecs"),
        _ => (1000, "usecs"),
    };
    config.unit_div = unit_div;
    if a.per_process {
        config.flags |= FLAG_PER_PROCESS;
    }
    let mut loaded = ebpf::load(crate::ebpf_object!("faultlat"), |l| {
        l.override_global("CONFIG", &config, true);
    })?;
    // Ends first, so no fault that starts after tracing begins misses its end.
    for chain in [&END_MINOR, &END_MAJOR, &START_USER, &START_KERNEL] {
        loaded.attach_chain(chain)?;
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);

    // Without -P, slot 0 holds minor and slot 1 major faults.
    let mut reader = HistReader::new(|slot| FaultGroup {
        tgid: 0,
        major: slot,
    });
    run::periodic(
        a.interval.schedule(),
        run::Start::new("page faults"),
        |last| {
            let hists = reader.read(&loaded.ebpf)?;
            if a.out.timestamp && !a.out.json {
                println!("{}", output::local_time());
            }
            for (g, h) in &hists {
                let kind = if g.major != 0 { "major" } else { "minor" };
                if a.out.json {
                    let mut v =
                        json!({"tool": "faultlat", "ts": output::unix_time(), "type": kind});
                    if a.per_process {
                        v["pid"] = json!(g.tgid);
                        v["comm"] = json!(kernel::process_comm(g.tgid));
                    }
                    let v = h.json_with(v, unit);
                    output::json_line(&v);
                } else {
                    if a.per_process {
                        println!(
                            "\npid = {} ({}), {kind} faults",
                            g.tgid,
                            kernel::process_comm(g.tgid)
                        );
                    } else {
                        println!("\n{kind} faults");
                    }
                    print!("{}", h.render(unit));
                }
            }
            if !a.out.json {
                println!();
            }
            if last {
                loaded.report_counters(TOOL.name, a.out.verbose, &[]);
            }
            Ok(())
        },
    )
}
