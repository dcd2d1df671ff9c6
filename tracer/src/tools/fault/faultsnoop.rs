//! faultsnoop: one line per page fault: address, instruction, type, handling time
//! and the mapping the address falls in; outliers filtered in the kernel.

use anyhow::Result;
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    fault::{FLAG_ALL_MAJOR, FLAG_IP},
    faultsnoop::FaultEvent,
};

use super::{END_MAJOR, END_MINOR, START_KERNEL, START_USER};
use crate::bpf::{self, HookUse, Loaded, Object};
use crate::cli::{self, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel::procmaps::ProcMaps;
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
    name: "faultsnoop",
    aliases: &[],
    about: "One line per page fault: address, type, handling time, mapping",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || {
        // Ends first, so no fault that starts after tracing begins misses its end.
        [END_MINOR, END_MAJOR, START_USER, START_KERNEL]
            .into_iter()
            .map(HookUse::always)
            .collect()
    },
    exporter: None,
    family: Subsystem::Fault,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Fault,
        kind: EventKind::Op,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("faultsnoop"),
        maps: &["EVENTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// A fault's record, and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::str("comm"),
        Field::u64("pid"),
        Field::u64("tid"),
        Field::hex("addr").role(Role::Address),
        Field::hex("ip"),
        Field::str("type"),
        Field::f64("lat_us").unit(Unit::Us),
        Field::u64("lat_ns").unit(Unit::Ns).role(Role::Latency),
        Field::str("mapping"),
        Field::str("ip_mapping").role(Role::CodeFile),
        Field::u64("ip_offset")
            .unit(Unit::Bytes)
            .role(Role::CodeOffset),
    ],
    line: Template("{comm} {pid} {type} at {addr} ip {symbol|ip} ({mapping}) {lat_ns:ms} ms"),
    track: Track {
        name: Template("faults {comm} ({pid})"),
        slice: Template("{type}"),
    },
    top: None,
    series: Some("type"),
    who: Template("{comm} pid {pid}"),
};

/// Trace page faults, one line each.
#[derive(clap::Parser, Debug, Default)]
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

struct FaultSnoop {
    loaded: Loaded,
    maps: ProcMaps,
}

impl Source for FaultSnoop {
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
        let e: FaultEvent = source::record(raw)?;
        let mapping = self
            .maps
            .lookup(e.tgid, e.address)
            .map_or_else(|| "?".into(), |r| r.name);
        // Where the faulting instruction is: its file and offset in it, for
        // symbol names (tracer report).
        let code = self.maps.lookup(e.tgid, e.ip);
        Some(Event {
            ts: e.ts,
            dur_ns: e.lat_ns,
            fields: vec![
                ("comm", json!(cstr(&e.comm))),
                ("pid", json!(e.tgid)),
                ("tid", json!(e.tid)),
                ("addr", json!(format!("{:#x}", e.address))),
                ("ip", json!(format!("{:#x}", e.ip))),
                (
                    "type",
                    json!(super::type_name(e.error_code, e.kernel != 0, e.major != 0)),
                ),
                ("lat_us", json!(e.lat_ns as f64 / 1e3)),
                ("lat_ns", json!(e.lat_ns)),
                ("mapping", json!(mapping)),
                (
                    "ip_mapping",
                    json!(code.as_ref().map_or("?", |r| r.name.as_str())),
                ),
                (
                    "ip_offset",
                    json!(code.as_ref().map_or(0, |r| e.ip - r.start + r.offset)),
                ),
            ],
        })
    }
}

struct Text {
    wall: bool,
}

impl Layout for Text {
    fn header(&self) -> Option<String> {
        Some(format!(
            "{} {:<16} {:<7} {:<7} {:<18} {:<18} {:<18} {:>9} MAPPING",
            Clock::header(self.wall),
            "COMM",
            "PID",
            "TID",
            "ADDR",
            "IP",
            "TYPE",
            "LAT(us)"
        ))
    }

    fn event(&mut self, e: &Event, clock: &Clock, out: &mut String) {
        out.push_str(&format!(
            "{} {:<16} {:<7} {:<7} {:<18} {:<18} {:<18} {:>9.2} {}\n",
            clock.column(e.ts, self.wall),
            e.str("comm"),
            e.u64("pid"),
            e.u64("tid"),
            e.str("addr"),
            e.str("ip"),
            e.str("type"),
            e.f64("lat_us"),
            e.str("mapping")
        ));
    }
}

impl FaultSnoop {
    /// `all_major`: every major fault too, whatever the threshold (record).
    fn new(a: &Args, all_major: bool) -> Result<FaultSnoop> {
        let task = a.task.resolve()?;
        let mut config = super::config(task, true)?;
        config.min_latency_ns = a.min_latency_ns.unwrap_or(0);
        config.flags |= FLAG_IP;
        if all_major {
            config.flags |= FLAG_ALL_MAJOR;
        }
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &config, true);
        })?;
        for u in (TOOL.hooks)() {
            loaded.attach_best(&u.chain, super::usable(&config))?;
        }
        Ok(FaultSnoop {
            loaded,
            maps: ProcMaps::default(),
        })
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = FaultSnoop::new(&a, false)?;
    run::tool(
        Box::new(source),
        Box::new(Text {
            wall: a.out.timestamp,
        }),
        a.out.options("page faults", a.interval.duration_schedule()),
    )
}

/// Faults above the floor, and every major fault, for `tracer record`.
fn recorder(f: &capture::Filter) -> Result<Box<dyn Source>> {
    let a = Args {
        min_latency_ns: Some(f.fault_floor.as_nanos() as u64),
        task: f.task(),
        ..Args::default()
    };
    Ok(Box::new(FaultSnoop::new(&a, true)?))
}
