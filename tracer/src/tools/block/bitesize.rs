//! bitesize: block I/O size histograms per process name.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    bitesize::{CommFilter, SizeGroup},
    block::FLAG_PER_DISK,
};

use super::Needs;
use crate::bpf::{Loaded, Object};
use crate::cli::{self, DiskArgs, HeatmapArgs, IntervalArgs, OutputArgs};
use crate::kernel::disks::Disks;
use crate::output::{self, cstr};
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Get as _, HistGroup, Kind, Layout, Sample, Source,
    hist::HistReader,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "bitesize",
    aliases: &[],
    about: "Block I/O size histograms per process name",
    schema: None,
    command: Args::command,
    run,
    hooks: || super::hook_uses(NEEDS, &[]),
    exporter: Some(exporter),
    family: Subsystem::Block,
    record_context: false,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("bitesize"),
        maps: &["HIST", "HIST_STATS", "INFLIGHT", "INFLIGHT_SLOTS"],
        #[cfg(test)]
        globals: &["COMM"],
    },
};

const NEEDS: Needs = Needs {
    submit: true,
    issue: true,
    insert: false,
    complete: false,
    sizes: false,
};

/// Summarize block I/O sizes as histograms per process name.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Trace this process name only (as in /proc/PID/comm)
    #[arg(short = 'c', long = "comm", value_name = "COMM")]
    comm: Option<String>,
    #[command(flatten)]
    disk: DiskArgs,
    /// Trace this process only
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pid: Option<u32>,
    /// Trace tasks in this cgroup v2 (and below) only
    #[arg(long = "cgroup", value_name = "CGROUP_PATH")]
    cgroup: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    pictures: HeatmapArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

struct BiteSize {
    loaded: Loaded,
    reader: HistReader<SizeGroup>,
    disks: Disks,
    per_disk: bool,
    unit: &'static str,
}

impl BiteSize {
    /// `unit_div` 1024 for the tool's KiB, 1 for the exporter's bytes; per_disk
    /// groups by disk and operation instead of process name.
    fn new(a: &Args, unit_div: u64, per_disk: bool) -> Result<BiteSize> {
        let task = cli::resolve_task_filter(a.pid, a.cgroup.as_deref())?;
        let disks = Disks::scan();
        let dev = a.disk.resolve(&disks)?;
        if let Some(c) = &a.comm
            && (c.is_empty() || c.len() >= tracer_common::COMM_LEN)
        {
            bail!("--comm must be 1 to 15 characters, as in /proc/PID/comm: '{c}'");
        }
        let mut plan = super::plan(NEEDS, task, dev)?;
        plan.config.unit_div = unit_div;
        if per_disk {
            plan.config.flags |= FLAG_PER_DISK;
        }
        let comm = CommFilter {
            comm: a
                .comm
                .as_deref()
                .map(output::comm_bytes)
                .unwrap_or_default(),
        };
        Ok(BiteSize {
            loaded: super::load(&TOOL.object, &plan, |l| {
                l.override_global("COMM", &comm, true);
            })?,
            reader: HistReader::default(),
            disks,
            per_disk,
            unit: if unit_div == 1 { "bytes" } else { "kbytes" },
        })
    }
}

impl Source for BiteSize {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        Kind::Aggregate
    }

    fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    fn sample(&mut self) -> Result<Sample> {
        let mut hists = Vec::new();
        for (g, hist) in self.reader.read(&self.loaded.ebpf)? {
            let labels = if self.per_disk {
                vec![
                    ("disk", json!(self.disks.name(g.dev))),
                    ("op", json!(super::op_name(&cstr(&g.rwbs)))),
                ]
            } else {
                vec![("comm", json!(cstr(&g.comm)))]
            };
            hists.push(HistGroup { labels, hist });
        }
        Ok(Sample {
            hists,
            unit: self.unit,
            ..Sample::default()
        })
    }

    fn in_flight(&self) -> Option<u64> {
        Some(super::in_flight(&self.loaded))
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        // A 4096-byte I/O is in the bucket le="8191": buckets are the kernel's,
        // [2^k, 2^(k+1) - 1] bytes.
        static SIZE: Family = Family::histogram(
            "tracer_block_io_size_bytes",
            "Block I/O request sizes at issue.",
            1.0,
            (9, 23),
        )
        .integer_values();
        for g in &sample.hists {
            let labels = vec![
                ("disk", g.labels.str("disk").to_string()),
                ("op", g.labels.str("op").to_string()),
            ];
            out.hist(&SIZE, labels, &g.hist);
        }
    }
}

struct Text {
    timestamp: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        if self.timestamp {
            out.push_str(&output::local_time());
            out.push('\n');
        }
        for g in &s.hists {
            out.push_str(&format!("\nProcess Name = {}\n", g.labels.str("comm")));
            out.push_str(&g.hist.render("Kbytes"));
        }
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = BiteSize::new(&a, 1024, false)?;
    run::tool(
        Box::new(source),
        Box::new(Text {
            timestamp: a.out.timestamp,
        }),
        a.out
            .options("block I/O", a.interval.schedule())
            .with_heatmap(&a.pictures),
    )
}

/// Sizes in bytes, per disk and operation (process names are unbounded).
fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(BiteSize::new(&Args::default(), 1, true)?))
}
