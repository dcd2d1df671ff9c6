//! biopattern: random vs sequential block I/O per disk.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::biopattern::PatternValue;

use super::Tool;
use crate::core::{
    block::{self, COMPLETE, Needs},
    cli::{self, IntervalArgs, OutputArgs},
    disks::Disks,
    ebpf, kernel, output, run,
    tally::{Deltas, Tally},
};

pub const TOOL: Tool = Tool {
    name: "biopattern",
    aliases: &[],
    about: "Random vs sequential block I/O per disk",
    command: Args::command,
    run,
    hooks: &[COMPLETE],
    optional_hooks: &[],
};

/// Show block I/O pattern: the share of random and sequential I/O per disk.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Trace this disk only (e.g. vda, loop3)
    #[arg(short = 'd', long = "disk", value_name = "DISK")]
    disk: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

impl Tally for PatternValue {
    fn add(&mut self, o: &Self) {
        self.sequential += o.sequential;
        self.random += o.random;
        self.bytes += o.bytes;
    }
    fn minus(&self, e: &Self) -> Self {
        PatternValue {
            sequential: self.sequential - e.sequential,
            random: self.random - e.random,
            bytes: self.bytes - e.bytes,
        }
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let mut disks = Disks::scan();
    let dev = a
        .disk
        .as_deref()
        .map(|d| disks.lookup(d))
        .transpose()?
        .unwrap_or(0);
    kernel::require_privileges()?;

    let needs = Needs {
        complete: true,
        ..Needs::default()
    };
    let plan = block::plan(needs, Default::default(), dev)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("biopattern"), |l| {
        l.override_global("CONFIG", &plan.config, true);
    })?;
    plan.attach(&mut loaded)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let mut deltas = Deltas::<u32, PatternValue>::default();
    let header = (!a.out.json).then(|| {
        let time = if a.out.timestamp {
            format!("{:<9} ", "TIME")
        } else {
            String::new()
        };
        format!(
            "{time}{:<9} {:>5} {:>5} {:>8} {:>10}",
            "DISK", "%RND", "%SEQ", "COUNT", "KBYTES"
        )
    });
    run::periodic(
        a.interval.schedule(),
        run::Start::with_header("block device I/O requests", header),
        |last| {
            let mut rows = deltas.read_percpu(&mut loaded.ebpf, "PATTERN")?;
            rows.sort_by_key(|(dev, _)| *dev);
            for (dev, v) in rows {
                let total = v.sequential + v.random;
                if total == 0 {
                    continue;
                }
                let rnd = (v.random * 100) as f64 / total as f64;
                let seq = (v.sequential * 100) as f64 / total as f64;
                let disk = disks.name(dev);
                if a.out.json {
                    output::json_line(&json!({
                        "tool": "biopattern", "ts": output::unix_time(), "disk": disk, "random_pct": rnd,
                        "sequential_pct": seq, "random": v.random, "sequential": v.sequential, "count": total,
                        "kbytes": v.bytes / 1024,
                    }));
                } else {
                    let time = if a.out.timestamp {
                        format!("{:<9} ", output::local_time())
                    } else {
                        String::new()
                    };
                    println!(
                        "{time}{disk:<9} {:>5.0} {:>5.0} {total:>8} {:>10}",
                        rnd,
                        seq,
                        v.bytes / 1024
                    );
                }
            }
            if last {
                loaded.report_counters(TOOL.name, a.out.verbose, &[]);
            }
            Ok(())
        },
    )
}
