//! faultlat: how long page faults take to handle, as log2 histograms for minor
//! and major faults, from the fault's start (exceptions:page_fault_user/kernel)
//! to its accounting (software perf events PAGE_FAULTS_MIN/MAJ).

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{fault::FLAG_PER_PROCESS, faultlat::FaultGroup};

use super::{END_MAJOR, END_MINOR, START_KERNEL, START_USER};
use crate::bpf::{self, HookUse, Loaded, Object};
use crate::cli::{self, HeatmapArgs, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel;
use crate::output;
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Get as _, HistGroup, Kind, Layout, Sample, Source,
    hist::HistReader,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "faultlat",
    aliases: &[],
    about: "Page-fault handling time histograms, minor and major",
    schema: None,
    command: Args::command,
    run,
    hooks: || {
        // Ends first, so no fault that starts after tracing begins misses its end.
        [END_MINOR, END_MAJOR, START_USER, START_KERNEL]
            .into_iter()
            .map(HookUse::always)
            .collect()
    },
    exporter: Some(exporter),
    family: Subsystem::Fault,
    record_context: true,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("faultlat"),
        maps: &["HIST", "HIST_STATS", "HIST_SLOTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// Summarize page-fault handling time as histograms.
#[derive(clap::Parser, Debug, Default)]
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
    pictures: HeatmapArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

struct FaultLat {
    loaded: Loaded,
    reader: HistReader<FaultGroup>,
    per_process: bool,
    unit: &'static str,
}

impl FaultLat {
    fn new(a: &Args) -> Result<FaultLat> {
        let task = a.task.resolve()?;
        let mut config = super::config(task, true)?;
        let (unit_div, unit) = match (a.milliseconds, a.nanoseconds) {
            (true, _) => (1_000_000, "msecs"),
            (_, true) => (1, "nsecs"),
            _ => (1000, "usecs"),
        };
        config.unit_div = unit_div;
        if a.per_process {
            config.flags |= FLAG_PER_PROCESS;
        }
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &config, true);
        })?;
        for u in (TOOL.hooks)() {
            loaded.attach_best(&u.chain, super::usable(&config))?;
        }
        Ok(FaultLat {
            loaded,
            // Without -P, slot 0 holds minor and slot 1 major faults.
            reader: HistReader::new(|slot| FaultGroup {
                tgid: 0,
                major: slot,
            }),
            per_process: a.per_process,
            unit,
        })
    }
}

impl Source for FaultLat {
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
            let kind = if g.major != 0 { "major" } else { "minor" };
            let mut labels = vec![("type", json!(kind))];
            if self.per_process {
                labels.push(("pid", json!(g.tgid)));
                labels.push(("comm", json!(kernel::process_comm(g.tgid))));
            }
            hists.push(HistGroup { labels, hist });
        }
        Ok(Sample {
            hists,
            unit: self.unit,
            ..Sample::default()
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static LATENCY: Family = Family::histogram(
            "tracer_page_fault_latency_seconds",
            "Page-fault handling time, from the exception to the fault's accounting.",
            1e9,
            (7, 31),
        );
        for g in &sample.hists {
            out.hist(
                &LATENCY,
                vec![("type", g.labels.str("type").to_string())],
                &g.hist,
            );
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
            let kind = g.labels.str("type");
            match g.labels.get("pid") {
                Some(_) => out.push_str(&format!(
                    "\npid = {} ({}), {kind} faults\n",
                    g.labels.u64("pid"),
                    g.labels.str("comm")
                )),
                None => out.push_str(&format!("\n{kind} faults\n")),
            }
            out.push_str(&g.hist.render(s.unit));
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = FaultLat::new(&a)?;
    run::tool(
        Box::new(source),
        Box::new(Text {
            timestamp: a.out.timestamp,
        }),
        a.out
            .options("page faults", a.interval.schedule())
            .with_heatmap(&a.pictures),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    let a = Args {
        nanoseconds: true,
        ..Args::default()
    };
    Ok(Box::new(FaultLat::new(&a)?))
}
