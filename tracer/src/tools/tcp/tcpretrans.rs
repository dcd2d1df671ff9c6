//! tcpretrans: TCP retransmits, one line each (or counted per flow), telling tail
//! loss probes (L) from RTO and fast retransmits (R).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    tcp::{AF_INET, AF_INET6, SkcOffsets, SockOffsets},
    tcpretrans::{
        FLAG_COUNT, FLAG_FAILED, FLAG_NETNS, KIND_FAILED, KIND_LOSS_PROBE, KIND_SYNACK,
        RetransConfig, RetransEvent, RetransKey,
    },
};

use super::{endpoint, ip_version, tcp_state};
use crate::bpf::{self, Hook, HookChain, HookUse, Loaded, Object, tally::Deltas};
use crate::cli::{self, IntervalArgs, OutputArgs};
use crate::kernel::{btf::Btf, tracefs::Format};
use crate::output::{self, Clock};
use crate::run;
use crate::sink::capture::{
    self, Recorder,
    trigger::{EventKind, Subsystem},
};
use crate::source::schema::{Field, Schema, Template, Track};
use crate::source::{
    self, Event, Fields, Get as _, Kind, Layout, Sample, Source, Table,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

const RETRANSMIT: HookChain = HookChain {
    role: "retrans",
    program: "tcp_retransmit_skb",
    candidates: &[
        Hook::raw_tp("tcp", "tcp_retransmit_skb", "tcp_retransmit_skb_raw"),
        Hook::tp("tcp", "tcp_retransmit_skb"),
    ],
};
const SYNACK: HookChain = HookChain {
    role: "synack",
    program: "tcp_retransmit_synack",
    candidates: &[
        Hook::raw_tp("tcp", "tcp_retransmit_synack", "tcp_retransmit_synack_raw"),
        Hook::tp("tcp", "tcp_retransmit_synack"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "tcpretrans",
    aliases: &[],
    about: "TCP retransmits with their flow and state; tail loss probes told apart",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || {
        vec![
            HookUse::always(RETRANSMIT),
            HookUse::with("SYN-ACK retransmits", SYNACK),
        ]
    },
    exporter: Some(exporter),
    family: Subsystem::Tcp,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Tcp,
        kind: EventKind::Retransmit,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("tcpretrans"),
        maps: &["EVENTS", "COUNTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// A retransmit's record, and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::u64("pid"),
        Field::u64("ip"),
        Field::str("laddr"),
        Field::u64("lport"),
        Field::str("raddr"),
        Field::u64("rport"),
        Field::str("type"),
        Field::str("state"),
        Field::u64("segs"),
        Field::u64("netns"),
        Field::i64("err"),
    ],
    line: Template("retransmit {type} {laddr}:{lport} > {raddr}:{rport} {state}"),
    track: Track {
        name: Template("tcp {laddr}:{lport} > {raddr}:{rport}"),
        slice: Template("retransmit {type}"),
    },
    top: Some(("flows", Template("{laddr}:{lport} > {raddr}:{rport}"))),
    series: Some("type"),
    who: Template("{tool} pid {pid}"),
};

/// Trace TCP retransmits.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Include tail loss probe attempts (T = L)
    #[arg(short = 'l', long = "lossprobe")]
    loss_probes: bool,
    /// Count retransmitted segments per flow every interval instead of printing each
    #[arg(short = 'c', long = "count")]
    per_flow: bool,
    /// IPv4 only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Show each socket's network namespace (inode number)
    #[arg(long)]
    netns: bool,
    /// Also show failed retransmit attempts (T = F; kernels 6.17 and later report them)
    #[arg(long)]
    failed: bool,
    #[command(flatten)]
    out: OutputArgs,
    /// `interval count`: stop after interval * count seconds (with -c: report every interval)
    #[command(flatten)]
    interval: IntervalArgs,
}

fn config(a: &Args, notes: &mut Vec<String>) -> Result<RetransConfig> {
    let mut cfg = RetransConfig::INITIAL;
    let f = Format::read("tcp", "tcp_retransmit_skb")?
        .context("this kernel has no tcp:tcp_retransmit_skb tracepoint")?;
    cfg.skaddr = f.offset("skaddr", 8)?;
    cfg.skbaddr = f.offset("skbaddr", 8)?;
    cfg.state = f.offset("state", 4)?;
    cfg.err = f.offset_or_absent("err", 4)?;
    if cfg.err == NO_FIELD {
        notes.push(
            "tcp_retransmit_skb has no err field: this kernel reports successful retransmits only"
                .into(),
        );
    }
    cfg.addrs = super::addr_fields(&f)?;
    if let Some(s) = Format::read("tcp", "tcp_retransmit_synack")? {
        cfg.synack = super::addr_fields(&s)?;
    }
    let btf = Btf::load();
    if let Ok(btf) = &btf
        && let Ok(skc) = super::skc_offsets(btf)
        && let Ok(n) = btf.tracepoint_arity("tcp_retransmit_skb")
    {
        cfg.skc = skc;
        cfg.raw_args = n as u16;
    }
    cfg.sock = match btf.and_then(|btf| super::sock_offsets(&btf)) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!(
                "no socket offsets ({e:#}): loss probes cannot be told apart, all shown as R"
            ));
            SockOffsets {
                icsk_pending: NO_FIELD,
                icsk_ca_state: NO_FIELD,
                skc_net: NO_FIELD,
                skb_gso_segs: NO_FIELD,
                ..cfg.sock
            }
        }
    };
    cfg.family = if a.ipv4 {
        AF_INET
    } else if a.ipv6 {
        AF_INET6
    } else {
        0
    };
    for (on, flag) in [
        (a.per_flow, FLAG_COUNT),
        (a.netns, FLAG_NETNS),
        (a.failed, FLAG_FAILED),
    ] {
        if on {
            cfg.flags |= flag;
        }
    }
    Ok(cfg)
}

/// The retransmit kind as a name: R (RTO or fast retransmit), L (tail loss
/// probe), S (SYN-ACK), F (a failed attempt).
fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_LOSS_PROBE => "loss_probe",
        KIND_SYNACK => "synack",
        KIND_FAILED => "failed",
        _ => "retransmit",
    }
}

struct TcpRetrans {
    loaded: Loaded,
    /// -c: counted per flow in the kernel, read every interval.
    per_flow: bool,
    loss_probes: bool,
    deltas: Deltas<RetransKey, u64>,
}

impl TcpRetrans {
    fn new(a: &Args) -> Result<TcpRetrans> {
        let mut notes = Vec::new();
        let cfg = config(a, &mut notes)?;
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &cfg, true);
        })?;
        // The raw tracepoints' programs need the socket's layout from BTF.
        let usable = bpf::raw_if(
            cfg.skc != SkcOffsets::ABSENT,
            "no socket layout in the kernel's BTF",
        );
        loaded.attach_best(&RETRANSMIT, usable)?;
        // Optional: kernels without the tracepoint still trace retransmits.
        if SYNACK.choose_with(usable).is_ok() {
            loaded.attach_best(&SYNACK, usable)?;
        }
        loaded.notes.extend(notes);
        Ok(TcpRetrans {
            loaded,
            per_flow: a.per_flow,
            loss_probes: a.loss_probes,
            deltas: Deltas::default(),
        })
    }
}

impl Source for TcpRetrans {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        if self.per_flow {
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
        let mut flows: BTreeMap<RetransKey, u64> = BTreeMap::new();
        for (k, n) in self.deltas.read_percpu(&mut self.loaded.ebpf, "COUNTS")? {
            if k.kind as u8 == KIND_LOSS_PROBE && !self.loss_probes {
                continue;
            }
            *flows.entry(k).or_default() += n;
        }
        let mut rows: Vec<(RetransKey, u64)> = flows.into_iter().collect();
        rows.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let rows: Vec<Fields> = rows
            .iter()
            .map(|(k, n)| {
                let f = &k.flow;
                vec![
                    ("laddr", json!(super::fmt_addr(f.family, &f.laddr))),
                    ("lport", json!(f.lport)),
                    ("raddr", json!(super::fmt_addr(f.family, &f.raddr))),
                    ("rport", json!(f.rport)),
                    ("ip", json!(ip_version(f.family).parse::<u8>().unwrap_or(0))),
                    ("type", json!((k.kind as u8 as char).to_string())),
                    ("netns", json!(k.netns)),
                    ("segs", json!(n)),
                ]
            })
            .collect();
        Ok(Sample {
            tables: vec![Table {
                name: Some("flows"),
                rows,
            }],
            ..Sample::default()
        })
    }

    fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        let e: RetransEvent = source::record(raw)?;
        if e.kind == KIND_LOSS_PROBE && !self.loss_probes {
            return None;
        }
        let f = &e.flow;
        Some(Event {
            ts: e.ts,
            dur_ns: 0,
            fields: vec![
                ("pid", json!(e.pid)),
                ("ip", json!(ip_version(f.family).parse::<u8>().unwrap_or(0))),
                ("laddr", json!(super::fmt_addr(f.family, &f.laddr))),
                ("lport", json!(f.lport)),
                ("raddr", json!(super::fmt_addr(f.family, &f.raddr))),
                ("rport", json!(f.rport)),
                ("type", json!((e.kind as char).to_string())),
                ("state", json!(tcp_state(e.state))),
                ("segs", json!(e.segs)),
                ("netns", json!(e.netns)),
                ("err", json!(e.err)),
            ],
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static RETRANSMITS: Family = Family::counter(
            "tracer_tcp_retransmitted_segments",
            "TCP segments retransmitted, by kind: retransmit (RTO or fast), loss_probe, synack.",
        );
        for row in sample.tables.iter().flat_map(|t| &t.rows) {
            let kind = row.str("type").bytes().next().unwrap_or(b'R');
            let labels = vec![("type", kind_name(kind).to_string())];
            out.count(&RETRANSMITS, labels, row.u64("segs"));
        }
    }
}

struct Text {
    netns: bool,
    timestamp: bool,
    per_flow: bool,
}

impl Text {
    fn netns_column(&self, v: impl std::fmt::Display) -> String {
        if self.netns {
            format!("{v:<11}")
        } else {
            String::new()
        }
    }
}

impl Layout for Text {
    fn header(&self) -> Option<String> {
        (!self.per_flow).then(|| {
            format!(
                "{:<8} {:<7} {:<2} {:<26} {:1}> {:<26} {}STATE",
                "TIME",
                "PID",
                "IP",
                "LADDR:LPORT",
                "T",
                "RADDR:RPORT",
                self.netns_column("NETNS")
            )
        })
    }

    fn event(&mut self, e: &Event, clock: &Clock, out: &mut String) {
        out.push_str(&format!(
            "{:<8} {:<7} {:<2} {:<26} {}> {:<26} {}{}\n",
            output::format_local(clock.unix_ns(e.ts), false),
            e.u64("pid"),
            e.u64("ip"),
            endpoint(e, "laddr", "lport"),
            e.str("type"),
            endpoint(e, "raddr", "rport"),
            self.netns_column(e.u64("netns")),
            e.str("state")
        ));
    }

    fn sample(&mut self, s: &Sample, out: &mut String) {
        if self.timestamp {
            out.push_str(&output::local_time());
            out.push('\n');
        }
        out.push_str(&format!(
            "{}{:<26} {:1}  {:<26} {:>11}\n",
            self.netns_column("NETNS"),
            "LADDR:LPORT",
            "T",
            "RADDR:RPORT",
            "RETRANSMITS"
        ));
        for r in s.tables.iter().flat_map(|t| &t.rows) {
            out.push_str(&format!(
                "{}{:<26} {} <-> {:<26} {:>9}\n",
                self.netns_column(r.u64("netns")),
                endpoint(r, "laddr", "lport"),
                r.str("type"),
                endpoint(r, "raddr", "rport"),
                r.u64("segs")
            ));
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = TcpRetrans::new(&a)?;
    let schedule = if a.per_flow {
        a.interval.schedule()
    } else {
        a.interval.duration_schedule()
    };
    let text = Text {
        netns: a.netns,
        timestamp: a.out.timestamp,
        per_flow: a.per_flow,
    };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out.options("TCP retransmits", schedule),
    )
}

/// Retransmitted segments by kind, counted in the kernel.
fn exporter() -> Result<Box<dyn Source>> {
    let a = Args {
        per_flow: true,
        loss_probes: true,
        ..Args::default()
    };
    Ok(Box::new(TcpRetrans::new(&a)?))
}

/// Every retransmit, loss probes included, for `tracer record`.
fn recorder(_: &capture::Filter) -> Result<Box<dyn Source>> {
    let a = Args {
        loss_probes: true,
        netns: true,
        ..Args::default()
    };
    Ok(Box::new(TcpRetrans::new(&a)?))
}
