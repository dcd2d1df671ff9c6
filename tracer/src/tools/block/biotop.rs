//! biotop: top processes by block I/O, per interval, counted in the kernel.

use std::time::Duration;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _, ValueEnum};
use serde_json::json;
use tracer_common::{
    biotop::{TopKey, TopValue},
    block::{dev_major, dev_minor},
};

use super::Needs;
use crate::bpf::{
    Loaded, Object,
    tally::{Deltas, Tally},
};
use crate::cli::{self, DiskArgs, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel::disks::Disks;
use crate::output::{self, cstr};
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Fields, Get as _, Kind, Layout, Sample, Source, Table,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "biotop",
    aliases: &[],
    about: "Top processes by block I/O, every interval",
    schema: None,
    command: Args::command,
    run,
    hooks: || super::hook_uses(NEEDS, &[]),
    exporter: Some(exporter),
    family: Subsystem::Block,
    record_context: false,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("biotop"),
        maps: &["TOTALS", "INFLIGHT", "INFLIGHT_SLOTS"],
        #[cfg(test)]
        globals: &[],
    },
};

const NEEDS: Needs = Needs {
    submit: true,
    insert: false,
    issue: true,
    complete: true,
    sizes: true,
};

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
enum SortBy {
    Io,
    #[default]
    Bytes,
    Time,
}

/// Rows shown unless -r says otherwise.
const ROWS: u64 = 20;

/// Block device I/O top, by process.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Don't clear the screen between intervals
    #[arg(short = 'C', long = "noclear")]
    no_clear: bool,
    /// Rows to print
    #[arg(short = 'r', long = "rows", default_value_t = ROWS, value_parser = |s: &str| cli::parse_positive(s, u64::MAX))]
    rows: u64,
    /// Sort by
    #[arg(short = 's', long = "sort", value_enum, default_value = "bytes")]
    sort: SortBy,
    #[command(flatten)]
    disk: DiskArgs,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

/// The bare command line (`Args::default()` builds the exporter's source).
impl Default for Args {
    fn default() -> Args {
        Args {
            no_clear: false,
            rows: ROWS,
            sort: SortBy::default(),
            disk: DiskArgs::default(),
            task: TaskArgs::default(),
            out: OutputArgs::default(),
            interval: IntervalArgs::default(),
        }
    }
}

impl Tally for TopValue {
    fn add(&mut self, o: &Self) {
        self.io += o.io;
        self.bytes += o.bytes;
        self.ns += o.ns;
    }
    fn minus(&self, e: &Self) -> Self {
        TopValue {
            io: self.io - e.io,
            bytes: self.bytes - e.bytes,
            ns: self.ns - e.ns,
        }
    }
}

struct BioTop {
    loaded: Loaded,
    deltas: Deltas<TopKey, TopValue>,
    disks: Disks,
    sort: SortBy,
    /// Rows kept per interval (None: all, for the exporter).
    rows: Option<usize>,
}

impl BioTop {
    fn new(a: &Args, rows: Option<usize>) -> Result<BioTop> {
        let task = a.task.resolve()?;
        let disks = Disks::scan();
        let dev = a.disk.resolve(&disks)?;
        let plan = super::plan(NEEDS, task, dev)?;
        Ok(BioTop {
            loaded: super::load(&TOOL.object, &plan, |_| {})?,
            deltas: Deltas::default(),
            disks,
            sort: a.sort,
            rows,
        })
    }
}

impl Source for BioTop {
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
        let mut rows = self.deltas.read_percpu(&mut self.loaded.ebpf, "TOTALS")?;
        rows.sort_by_key(|(k, v)| {
            let key = match self.sort {
                SortBy::Io => v.io,
                SortBy::Bytes => v.bytes,
                SortBy::Time => v.ns,
            };
            (std::cmp::Reverse(key), k.tgid)
        });
        if let Some(n) = self.rows {
            rows.truncate(n);
        }
        let rows: Vec<Fields> = rows
            .iter()
            .map(|(k, v)| {
                vec![
                    ("pid", json!(k.tgid)),
                    ("comm", json!(cstr(&k.comm))),
                    ("d", json!(if k.write != 0 { "W" } else { "R" })),
                    ("major", json!(dev_major(k.dev))),
                    ("minor", json!(dev_minor(k.dev))),
                    ("disk", json!(self.disks.name(k.dev))),
                    ("io", json!(v.io)),
                    ("bytes", json!(v.bytes)),
                    ("kbytes", json!(v.bytes as f64 / 1024.0)),
                    ("avg_ms", json!(v.ns as f64 / 1e6 / v.io.max(1) as f64)),
                ]
            })
            .collect();
        Ok(Sample {
            tables: vec![Table {
                name: Some("rows"),
                rows,
            }],
            ..Sample::default()
        })
    }

    fn in_flight(&self) -> Option<u64> {
        Some(super::in_flight(&self.loaded))
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static IOS: Family = Family::counter(
            "tracer_process_block_ios",
            "Block I/Os completed, by submitting process name (the busiest 20 by name, the rest as other).",
        )
        .folding("comm", 20);
        static BYTES: Family = Family::counter(
            "tracer_process_block_io_bytes",
            "Bytes of block I/O completed, by submitting process name (the busiest 20 by name, the rest as other).",
        )
        .folding("comm", 20);
        for row in sample.tables.iter().flat_map(|t| &t.rows) {
            let op = if row.str("d") == "W" { "write" } else { "read" };
            let labels = vec![("comm", row.str("comm").to_string()), ("op", op.into())];
            out.count(&IOS, labels.clone(), row.u64("io"));
            out.count(&BYTES, labels, row.u64("bytes"));
        }
    }
}

struct Text {
    clear: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        output::top_banner(self.clear, out);
        out.push_str(&format!(
            "{:<7} {:<16} {:1} {:<3} {:<3} {:<8} {:>5} {:>7} {:>6}\n",
            "PID", "COMM", "D", "MAJ", "MIN", "DISK", "I/O", "Kbytes", "AVGms"
        ));
        for row in s.tables.iter().flat_map(|t| &t.rows) {
            out.push_str(&format!(
                "{:<7} {:<16} {:1} {:<3} {:<3} {:<8} {:>5} {:>7.1} {:>6.2}\n",
                row.u64("pid"),
                row.str("comm"),
                row.str("d"),
                row.u64("major"),
                row.u64("minor"),
                row.str("disk"),
                row.u64("io"),
                row.f64("kbytes"),
                row.f64("avg_ms"),
            ));
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = BioTop::new(&a, Some(a.rows as usize))?;
    // biotop reports every second unless told otherwise, like BCC's.
    let mut schedule = a.interval.schedule();
    schedule.interval.get_or_insert(Duration::from_secs(1));
    let text = Text { clear: !a.no_clear };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out.options("block device I/O", schedule),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(BioTop::new(&Args::default(), None)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_args_are_the_bare_command_line() {
        crate::cli::tests::assert_default_is_bare::<super::Args>();
    }
}
