//! biopattern: random vs sequential block I/O per disk.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::biopattern::{DiskSlot, PatternValue};

use super::Needs;
use crate::bpf::{
    Loaded, Object, mapdump,
    tally::{Deltas, Tally},
};
use crate::cli::{self, DiskArgs, IntervalArgs, OutputArgs};
use crate::kernel::disks::Disks;
use crate::output;
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Fields, Get as _, Kind, Layout, Sample, Source, Table,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "biopattern",
    aliases: &[],
    about: "Random vs sequential block I/O per disk",
    schema: None,
    command: Args::command,
    run,
    hooks: || super::hook_uses(NEEDS, &[]),
    exporter: Some(exporter),
    family: Subsystem::Block,
    record_context: false,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("biopattern"),
        maps: &["PATTERN"],
        #[cfg(test)]
        globals: &[],
    },
};

const NEEDS: Needs = Needs {
    complete: true,
    ..Needs::NONE
};

/// Show block I/O pattern: the share of random and sequential I/O per disk.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    #[command(flatten)]
    disk: DiskArgs,
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

struct BioPattern {
    loaded: Loaded,
    deltas: Deltas<u32, PatternValue>,
    disks: Disks,
}

impl BioPattern {
    fn new(a: &Args) -> Result<BioPattern> {
        let disks = Disks::scan();
        let dev = a.disk.resolve(&disks)?;
        let plan = super::plan(NEEDS, Default::default(), dev)?;
        Ok(BioPattern {
            loaded: super::load(&TOOL.object, &plan, |_| {})?,
            deltas: Deltas::default(),
            disks,
        })
    }
}

impl Source for BioPattern {
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
        let slots = mapdump::entries::<u32, DiskSlot<PatternValue>>(
            self.loaded
                .ebpf
                .map("PATTERN")
                .context("map PATTERN missing")?,
        )?;
        let mut totals: HashMap<u32, PatternValue> = HashMap::new();
        for s in slots.iter().flat_map(|(_, per_cpu)| per_cpu) {
            if s.dev != 0 {
                totals.entry(s.dev).or_default().add(&s.value);
            }
        }
        // A disk keeps its slots: idle ones are not forgotten.
        let (mut rows, _) = self
            .deltas
            .update_keeping(totals.into_iter().collect(), |_| true);
        rows.sort_by_key(|(dev, _)| *dev);
        let rows: Vec<Fields> = rows
            .into_iter()
            .filter(|(_, v)| v.sequential + v.random > 0)
            .map(|(dev, v)| {
                let total = v.sequential + v.random;
                vec![
                    ("disk", json!(self.disks.name(dev))),
                    ("random_pct", json!((v.random * 100) as f64 / total as f64)),
                    (
                        "sequential_pct",
                        json!((v.sequential * 100) as f64 / total as f64),
                    ),
                    ("random", json!(v.random)),
                    ("sequential", json!(v.sequential)),
                    ("count", json!(total)),
                    ("kbytes", json!(v.bytes / 1024)),
                ]
            })
            .collect();
        Ok(Sample {
            tables: vec![Table { name: None, rows }],
            ..Sample::default()
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static IOS: Family = Family::counter(
            "tracer_block_io_pattern",
            "Block I/Os that started where the disk's previous one ended (sequential) or elsewhere (random).",
        );
        for row in sample.tables.iter().flat_map(|t| &t.rows) {
            for pattern in ["random", "sequential"] {
                let labels = vec![
                    ("disk", row.str("disk").to_string()),
                    ("pattern", pattern.to_string()),
                ];
                out.count(&IOS, labels, row.u64(pattern));
            }
        }
    }
}

struct Text {
    timestamp: bool,
}

impl Layout for Text {
    fn header(&self) -> Option<String> {
        let time = if self.timestamp {
            format!("{:<9} ", "TIME")
        } else {
            String::new()
        };
        Some(format!(
            "{time}{:<9} {:>5} {:>5} {:>8} {:>10}",
            "DISK", "%RND", "%SEQ", "COUNT", "KBYTES"
        ))
    }

    fn sample(&mut self, s: &Sample, out: &mut String) {
        for row in s.tables.iter().flat_map(|t| &t.rows) {
            let time = if self.timestamp {
                format!("{:<9} ", output::local_time())
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{time}{:<9} {:>5.0} {:>5.0} {:>8} {:>10}\n",
                row.str("disk"),
                row.f64("random_pct"),
                row.f64("sequential_pct"),
                row.u64("count"),
                row.u64("kbytes")
            ));
        }
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = BioPattern::new(&a)?;
    run::tool(
        Box::new(source),
        Box::new(Text {
            timestamp: a.out.timestamp,
        }),
        a.out
            .options("block device I/O requests", a.interval.schedule()),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(BioPattern::new(&Args::default())?))
}
