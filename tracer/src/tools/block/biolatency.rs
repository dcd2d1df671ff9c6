//! biolatency: block I/O latency as log2 histograms, aggregated in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    biolatency::LatGroup,
    block::{FLAG_PER_DISK, FLAG_PER_FLAGS, FLAG_QUEUED},
};

use super::Needs;
use crate::bpf::{Loaded, Object};
use crate::cli::{self, DiskArgs, HeatmapArgs, IntervalArgs, OutputArgs, TaskArgs};
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
    name: "biolatency",
    aliases: &[],
    about: "Block I/O latency histograms (issue to completion, or from queueing with -Q)",
    schema: None,
    command: Args::command,
    run,
    hooks: || super::hook_uses(NEEDS, &[("-Q", Needs::INSERT), ("-p/-c", Needs::SUBMIT)]),
    exporter: Some(exporter),
    family: Subsystem::Block,
    record_context: true,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("biolatency"),
        maps: &[
            "HIST",
            "HIST_STATS",
            "HIST_SLOTS",
            "INFLIGHT",
            "INFLIGHT_SLOTS",
        ],
        #[cfg(test)]
        globals: &[],
    },
};

const NEEDS: Needs = Needs {
    issue: true,
    complete: true,
    ..Needs::NONE
};

/// Summarize block device I/O latency as a histogram.
#[derive(clap::Parser, Debug, Default)]
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
    #[command(flatten)]
    disk: DiskArgs,
    /// Print count, average and total latency under each histogram
    #[arg(short = 'e', long = "extension")]
    extension: bool,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    pictures: HeatmapArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

struct BioLatency {
    loaded: Loaded,
    reader: HistReader<LatGroup>,
    disks: Disks,
    per_disk: bool,
    per_flags: bool,
    unit: &'static str,
}

/// (unit divisor, unit name) of the histograms.
const USECS: (u64, &str) = (1000, "usecs");
const MSECS: (u64, &str) = (1_000_000, "msecs");
const NSECS: (u64, &str) = (1, "nsecs");

impl BioLatency {
    fn new(a: &Args, (unit_div, unit): (u64, &'static str), disks: Disks) -> Result<BioLatency> {
        let task = a.task.resolve()?;
        let dev = a.disk.resolve(&disks)?;
        let needs = NEEDS
            .and_if(a.queued, Needs::INSERT)
            .and_if(task.tgid != 0 || task.cgroup_id != 0, Needs::SUBMIT);
        let mut plan = super::plan(needs, task, dev)?;
        plan.config.unit_div = unit_div;
        for (on, flag) in [
            (a.queued, FLAG_QUEUED),
            (a.per_disk, FLAG_PER_DISK),
            (a.per_flags, FLAG_PER_FLAGS),
        ] {
            if on {
                plan.config.flags |= flag;
            }
        }
        Ok(BioLatency {
            loaded: super::load(&TOOL.object, &plan, |_| {})?,
            reader: HistReader::default(),
            disks,
            per_disk: a.per_disk,
            per_flags: a.per_flags,
            unit,
        })
    }
}

impl Source for BioLatency {
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
        let hists = self.reader.read(&self.loaded.ebpf)?;
        let grouped = self.per_disk || self.per_flags;
        let mut groups = Vec::new();
        for (g, hist) in hists {
            let mut labels = Vec::new();
            if self.per_disk {
                labels.push(("disk", json!(self.disks.name(g.dev))));
            }
            if self.per_flags {
                let rwbs = cstr(&g.rwbs);
                labels.push(("flags", json!(super::flags_name(&rwbs))));
                labels.push(("op", json!(super::op_name(&rwbs))));
            }
            groups.push(HistGroup { labels, hist });
        }
        if groups.is_empty() && !grouped {
            // Nothing happened: still one (empty) histogram for the interval.
            groups.push(HistGroup::default());
        }
        Ok(Sample {
            hists: groups,
            unit: self.unit,
            ..Sample::default()
        })
    }

    fn in_flight(&self) -> Option<u64> {
        Some(super::in_flight(&self.loaded))
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static LATENCY: Family = Family::histogram(
            "tracer_block_io_latency_seconds",
            "Block I/O latency from issue to the device until completion.",
            1e9,
            (10, 34),
        );
        for g in &sample.hists {
            let label = |k: &str| g.labels.str(k).to_string();
            out.hist(
                &LATENCY,
                vec![("disk", label("disk")), ("op", label("op"))],
                &g.hist,
            );
        }
    }
}

struct Text {
    extension: bool,
    timestamp: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        if self.timestamp {
            out.push_str(&output::local_time());
            out.push('\n');
        }
        for g in &s.hists {
            let labels: Vec<String> = ["disk", "flags"]
                .iter()
                .filter_map(|k| {
                    g.labels
                        .get(k)
                        .map(|_| format!("{k} = {}", g.labels.str(k)))
                })
                .collect();
            if !labels.is_empty() {
                out.push('\n');
                out.push_str(&labels.join(", "));
                out.push('\n');
            }
            out.push_str(&g.hist.render(s.unit));
            if self.extension {
                let h = &g.hist;
                out.push_str(&format!(
                    "     avg = {} {unit}, total: {} {unit}, count: {}\n",
                    h.average(),
                    h.sum,
                    h.count,
                    unit = s.unit
                ));
            }
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let unit = if a.milliseconds { MSECS } else { USECS };
    let source = BioLatency::new(&a, unit, Disks::scan())?;
    let text = Text {
        extension: a.extension,
        timestamp: a.out.timestamp,
    };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out
            .options("block device I/O", a.interval.schedule())
            .with_heatmap(&a.pictures),
    )
}

/// Every disk and operation, in nanoseconds.
fn exporter() -> Result<Box<dyn Source>> {
    let a = Args {
        per_disk: true,
        per_flags: true,
        ..Args::default()
    };
    Ok(Box::new(BioLatency::new(&a, NSECS, Disks::scan())?))
}
