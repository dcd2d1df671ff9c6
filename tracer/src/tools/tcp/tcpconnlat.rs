//! tcpconnlat: active TCP connect latency, one line per connect (or a histogram),
//! attributed to the task that called connect().

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    hist::NoGroup,
    tcp::SkcOffsets,
    tcpconnlat::{ConnConfig, ConnEvent, FLAG_HIST},
};

use super::{fmt_addr, ip_version};
use crate::bpf::{self, Hook, HookChain, HookUse, Loaded, Object};
use crate::cli::{self, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel::{btf::Btf, tracefs::Format};
use crate::output::{self, Clock, cstr};
use crate::run;
use crate::sink::capture::{
    self, Recorder,
    trigger::{EventKind, Subsystem},
};
use crate::source::schema::{Field, Role, Schema, Template, Track, Unit};
use crate::source::{
    self, Event, Get as _, HistGroup, Kind, Layout, Sample, Source,
    hist::HistReader,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

const SET_STATE: HookChain = HookChain {
    role: "state",
    program: "inet_sock_set_state",
    candidates: &[
        Hook::raw_tp("sock", "inet_sock_set_state", "inet_sock_set_state_raw"),
        Hook::tp("sock", "inet_sock_set_state"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "tcpconnlat",
    aliases: &[],
    about: "Active TCP connect latency, per connect or as a histogram",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || vec![HookUse::always(SET_STATE)],
    exporter: Some(exporter),
    family: Subsystem::Tcp,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Tcp,
        kind: EventKind::Connect,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("tcpconnlat"),
        maps: &["EVENTS", "HIST_SLOTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// A connect's record, and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::u64("pid"),
        Field::str("comm"),
        Field::u64("ip"),
        Field::str("saddr"),
        Field::str("daddr"),
        Field::u64("dport"),
        Field::u64("lport"),
        Field::f64("lat_ms").unit(Unit::Ms),
        Field::u64("lat_ns").unit(Unit::Ns).role(Role::Latency),
    ],
    line: Template("connect {comm} {pid} {saddr} -> {daddr}:{dport} {lat_ns:ms} ms"),
    track: Track {
        name: Template("tcp {saddr} > {daddr}:{dport}"),
        slice: Template("connect"),
    },
    top: Some(("flows", Template("{saddr} > {daddr}:{dport}"))),
    series: None,
    who: Template("{comm} pid {pid}"),
};

/// Trace TCP active connects and their latency (SYN sent to connection established).
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Only connects slower than this, in milliseconds (filtered in the kernel)
    #[arg(long = "min-latency", value_name = "MS", value_parser = cli::parse_threshold_ms, allow_negative_numbers = true)]
    min_latency_ns: Option<u64>,
    /// A latency histogram instead of one line per connect
    #[arg(long)]
    hist: bool,
    /// Millisecond histogram
    #[arg(short = 'm', long, requires = "hist")]
    milliseconds: bool,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// `interval count`: stop after interval * count seconds (with --hist: report every interval)
    #[command(flatten)]
    interval: IntervalArgs,
}

struct TcpConnLat {
    loaded: Loaded,
    /// --hist: a histogram in the kernel instead of one event per connect.
    hist: Option<HistReader<NoGroup>>,
    unit: &'static str,
}

impl TcpConnLat {
    fn new(a: &Args, unit_div: u64) -> Result<TcpConnLat> {
        let mut cfg = ConnConfig {
            task: a.task.resolve()?,
            ..ConnConfig::INITIAL
        };
        cfg.min_latency_ns = a.min_latency_ns.unwrap_or(0);
        if a.hist {
            cfg.flags |= FLAG_HIST;
            cfg.unit_div = unit_div;
        }
        let f = Format::read("sock", "inet_sock_set_state")?
            .context("this kernel has no sock:inet_sock_set_state")?;
        cfg.skaddr = f.offset("skaddr", 8)?;
        cfg.oldstate = f.offset("oldstate", 4)?;
        cfg.newstate = f.offset("newstate", 4)?;
        cfg.protocol = f.offset("protocol", 2)?;
        cfg.addrs = super::addr_fields(&f)?;
        if let Ok(btf) = Btf::load()
            && let Ok(skc) = super::skc_offsets(&btf)
            && let Ok(protocol) = btf.member("sock", "sk_protocol")
        {
            cfg.skc = skc;
            cfg.sk_protocol = u16::try_from(protocol.offset).unwrap_or(NO_FIELD);
        }
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &cfg, true);
        })?;
        // The raw tracepoint's program needs the socket's layout from BTF.
        let ready = cfg.skc != SkcOffsets::ABSENT && cfg.sk_protocol != NO_FIELD;
        let usable = bpf::raw_if(ready, "no socket layout in the kernel's BTF");
        loaded.attach_best(&SET_STATE, usable)?;
        Ok(TcpConnLat {
            loaded,
            hist: a.hist.then(HistReader::default),
            unit: match unit_div {
                1 => "nsecs",
                1_000_000 => "msecs",
                _ => "usecs",
            },
        })
    }
}

impl Source for TcpConnLat {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        if self.hist.is_some() {
            Kind::Aggregate
        } else {
            Kind::Stream
        }
    }

    fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    fn sample(&mut self) -> Result<Sample> {
        let Some(reader) = &mut self.hist else {
            return Ok(Sample::default());
        };
        let hist = reader
            .read(&self.loaded.ebpf)?
            .into_values()
            .next()
            .unwrap_or_default();
        Ok(Sample {
            hists: vec![HistGroup {
                labels: Vec::new(),
                hist,
            }],
            unit: self.unit,
            ..Sample::default()
        })
    }

    fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        let e: ConnEvent = source::record(raw)?;
        Some(Event {
            ts: e.ts,
            dur_ns: e.lat_ns,
            fields: vec![
                ("pid", json!(e.tgid)),
                ("comm", json!(cstr(&e.comm))),
                ("ip", json!(ip_version(e.family).parse::<u8>().unwrap_or(0))),
                ("saddr", json!(fmt_addr(e.family, &e.saddr))),
                ("daddr", json!(fmt_addr(e.family, &e.daddr))),
                ("dport", json!(e.dport)),
                ("lport", json!(e.lport)),
                ("lat_ms", json!(e.lat_ns as f64 / 1e6)),
                ("lat_ns", json!(e.lat_ns)),
            ],
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static LATENCY: Family = Family::histogram(
            "tracer_tcp_connect_latency_seconds",
            "Active TCP connect latency, SYN sent to established.",
            1e9,
            (10, 35),
        );
        for g in &sample.hists {
            out.hist(&LATENCY, Vec::new(), &g.hist);
        }
    }
}

struct Text {
    timestamp: bool,
    /// --hist: histograms, no column header.
    hist: bool,
}

impl Layout for Text {
    fn header(&self) -> Option<String> {
        if self.hist {
            return None;
        }
        let time = if self.timestamp {
            format!("{:<9}", "TIME")
        } else {
            String::new()
        };
        Some(format!(
            "{time}{:<7} {:<16} {:<2} {:<39} {:<39} {:>5} {:>9}",
            "PID", "COMM", "IP", "SADDR", "DADDR", "DPORT", "LAT(ms)"
        ))
    }

    fn sample(&mut self, s: &Sample, out: &mut String) {
        for g in &s.hists {
            out.push_str(&g.hist.render(s.unit));
        }
        out.push('\n');
    }

    fn event(&mut self, e: &Event, clock: &Clock, out: &mut String) {
        let time = if self.timestamp {
            format!("{:<9}", output::format_local(clock.unix_ns(e.ts), false))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{time}{:<7} {:<16} {:<2} {:<39} {:<39} {:>5} {:>9.3}\n",
            e.u64("pid"),
            e.str("comm"),
            e.u64("ip"),
            e.str("saddr"),
            e.str("daddr"),
            e.u64("dport"),
            e.f64("lat_ms")
        ));
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let unit_div = if a.milliseconds { 1_000_000 } else { 1000 };
    let source = TcpConnLat::new(&a, unit_div)?;
    let schedule = if a.hist {
        a.interval.schedule()
    } else {
        a.interval.duration_schedule()
    };
    let text = Text {
        timestamp: a.out.timestamp,
        hist: a.hist,
    };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out.options("TCP connects", schedule),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    let a = Args {
        hist: true,
        ..Args::default()
    };
    Ok(Box::new(TcpConnLat::new(&a, 1)?))
}

/// Every active connect, for `tracer record`.
fn recorder(f: &capture::Filter) -> Result<Box<dyn Source>> {
    let a = Args {
        task: f.task(),
        ..Args::default()
    };
    Ok(Box::new(TcpConnLat::new(&a, 1000)?))
}
