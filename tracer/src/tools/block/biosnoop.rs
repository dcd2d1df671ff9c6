//! biosnoop (iosnoop): one line per block I/O, attributed to the task that
//! submitted it, with outliers filtered in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::biosnoop::BioEvent;

use super::Needs;
use crate::bpf::{Loaded, Object};
use crate::cli::{self, DiskArgs, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel::disks::Disks;
use crate::output::{Clock, cstr};
use crate::run;
use crate::sink::capture::{
    self, Recorder,
    trigger::{EventKind, Subsystem},
};
use crate::source::schema::{Field, Role, Schema, Template, Track, Unit};
use crate::source::{self, Event, Get as _, Kind, Layout, Source};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "biosnoop",
    aliases: &["iosnoop"],
    about: "One line per block I/O: task, disk, sector, size, latency",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || super::hook_uses(NEEDS, &[("-Q", Needs::INSERT)]),
    exporter: None,
    family: Subsystem::Block,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Block,
        kind: EventKind::Op,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("biosnoop"),
        maps: &["EVENTS", "INFLIGHT", "INFLIGHT_SLOTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// What an I/O's `t` stands for.
const OPS: &[(&str, &str)] = &[
    ("R", "read"),
    ("W", "write"),
    ("D", "discard"),
    ("F", "flush"),
    ("N", "none"),
];

/// An I/O's record, and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::str("comm"),
        Field::u64("pid"),
        Field::str("disk").role(Role::Disk),
        Field::code("t", OPS),
        Field::str("rwbs"),
        Field::u64("sector").unit(Unit::Sectors).role(Role::Sector),
        Field::u64("bytes").unit(Unit::Bytes).role(Role::Size),
        Field::f64("lat_ms").unit(Unit::Ms),
        Field::u64("lat_ns").unit(Unit::Ns).role(Role::Latency),
        Field::f64("que_ms").unit(Unit::Ms),
    ],
    line: Template("{comm} {pid} {disk} {t} sector {sector} {bytes} bytes {lat_ns:ms} ms"),
    track: Track {
        name: Template("disk {disk}"),
        slice: Template("{rwbs} {bytes}"),
    },
    top: Some(("disks", Template("{disk}"))),
    series: Some("t"),
    who: Template("{comm} pid {pid} disk \"{disk}\""),
};

const NEEDS: Needs = Needs {
    submit: true,
    issue: true,
    complete: true,
    insert: false,
    sizes: true,
};

/// Trace block I/O, one line per completed request.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Show time queued in the OS (from block_rq_insert to issue)
    #[arg(short = 'Q', long)]
    queued: bool,
    #[command(flatten)]
    disk: DiskArgs,
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

struct BioSnoop {
    loaded: Loaded,
    disks: Disks,
    queued: bool,
}

impl Source for BioSnoop {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        Kind::Stream
    }

    fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        let e: BioEvent = source::record(raw)?;
        let rwbs = cstr(&e.rwbs);
        let mut fields = vec![
            ("comm", json!(cstr(&e.comm))),
            ("pid", json!(e.tgid)),
            ("disk", json!(self.disks.name(e.dev))),
            ("t", json!(super::op_letter(&rwbs).to_string())),
            ("rwbs", json!(rwbs)),
            ("sector", json!(e.sector)),
            ("bytes", json!(e.bytes)),
            ("lat_ms", json!(e.lat_ns as f64 / 1e6)),
            ("lat_ns", json!(e.lat_ns)),
        ];
        if self.queued {
            fields.push(("que_ms", json!(e.queue_ns as f64 / 1e6)));
        }
        Some(Event {
            ts: e.ts,
            dur_ns: e.lat_ns,
            fields,
        })
    }

    fn in_flight(&self) -> Option<u64> {
        Some(super::in_flight(&self.loaded))
    }
}

struct Text {
    queued: bool,
    wall: bool,
}

impl Layout for Text {
    fn header(&self) -> Option<String> {
        let queue = if self.queued {
            format!(" {:>7}", "QUE(ms)")
        } else {
            String::new()
        };
        Some(format!(
            "{} {:<14} {:<7} {:<9} {:<1} {:<10} {:<7}{queue} {:>7}",
            Clock::header(self.wall),
            "COMM",
            "PID",
            "DISK",
            "T",
            "SECTOR",
            "BYTES",
            "LAT(ms)"
        ))
    }

    fn event(&mut self, e: &Event, clock: &Clock, out: &mut String) {
        let queue = if self.queued {
            format!(" {:>7.2}", e.f64("que_ms"))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{} {:<14.14} {:<7} {:<9} {:<1} {:<10} {:<7}{queue} {:>7.2}\n",
            clock.column(e.ts, self.wall),
            e.str("comm"),
            e.u64("pid"),
            e.str("disk"),
            e.str("t"),
            e.u64("sector"),
            e.u64("bytes"),
            e.dur_ns as f64 / 1e6
        ));
    }
}

impl BioSnoop {
    fn new(a: &Args) -> Result<BioSnoop> {
        let task = a.task.resolve()?;
        let disks = Disks::scan();
        let dev = a.disk.resolve(&disks)?;
        let mut plan = super::plan(NEEDS.and_if(a.queued, Needs::INSERT), task, dev)?;
        plan.config.min_latency_ns = a.min_latency_ns.unwrap_or(0);
        Ok(BioSnoop {
            loaded: super::load(&TOOL.object, &plan, |_| {})?,
            disks,
            queued: a.queued,
        })
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = BioSnoop::new(&a)?;
    let text = Text {
        queued: a.queued,
        wall: a.out.timestamp,
    };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out.options("block I/O", a.interval.duration_schedule()),
    )
}

/// Every I/O, with its OS queue time, for `tracer record`.
fn recorder(f: &capture::Filter) -> Result<Box<dyn Source>> {
    let a = Args {
        queued: true,
        task: f.task(),
        disk: f.disk(),
        ..Args::default()
    };
    Ok(Box::new(BioSnoop::new(&a)?))
}
