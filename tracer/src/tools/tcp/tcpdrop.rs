//! tcpdrop: TCP packets the kernel drops, with the 4-tuple, the socket's state and
//! the kernel's drop reason by name; `--stack` prints where in the kernel.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    tcpdrop::{DropConfig, DropEvent, FLAG_COUNT, FLAG_STACK, MAX_FRAMES, StackedDrop},
};

use super::{endpoint, ip_version, tcp_state};
use crate::bpf::{self, Hook, HookChain, HookUse, Loaded, Object, tally::Deltas};
use crate::cli::{self, IntervalArgs, OutputArgs};
use crate::kernel::{
    btf::Btf,
    ksyms::Ksyms,
    tracefs::{Format, symbolic_tables},
};
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

const KFREE_SKB: HookChain = HookChain {
    role: "drop",
    program: "kfree_skb",
    candidates: &[
        Hook::raw_tp("skb", "kfree_skb", "kfree_skb_raw"),
        Hook::tp("skb", "kfree_skb"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "tcpdrop",
    aliases: &[],
    about: "TCP packet drops with 4-tuple, state and the kernel's drop reason",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || vec![HookUse::always(KFREE_SKB)],
    exporter: Some(exporter),
    family: Subsystem::Tcp,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Tcp,
        kind: EventKind::Drop,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("tcpdrop"),
        maps: &["EVENTS", "REASONS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// A drop's record, and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::u64("pid"),
        Field::u64("ip"),
        Field::str("saddr"),
        Field::u64("sport"),
        Field::str("daddr"),
        Field::u64("dport"),
        Field::str("state"),
        Field::u64("tcp_flags"),
        Field::str("reason"),
        Field::str("location"),
        Field::list("stack"),
    ],
    line: Template("drop {saddr}:{sport} > {daddr}:{dport} {state} {reason}"),
    track: Track {
        name: Template("tcp {saddr}:{sport} > {daddr}:{dport}"),
        slice: Template("drop {reason}"),
    },
    top: Some(("flows", Template("{saddr}:{sport} > {daddr}:{dport}"))),
    series: Some("reason"),
    who: Template("{tool} pid {pid} reason \"{reason}\""),
};

/// Trace TCP packets dropped by the kernel.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Print the kernel stack of each drop
    #[arg(long)]
    stack: bool,
    #[command(flatten)]
    out: OutputArgs,
    /// `interval count`: stop after interval * count seconds (a lone number is a duration)
    #[command(flatten)]
    interval: IntervalArgs,
}

/// Drop reason numbers → names: the tracepoint's own table, else the BTF enum.
fn reason_names(format: &Format, btf: Option<&Btf>) -> HashMap<u32, String> {
    let mut names: HashMap<u32, String> = HashMap::new();
    if let Some(variants) = btf.and_then(|b| b.enum_variants("skb_drop_reason").ok()) {
        for (name, v) in variants {
            names.insert(
                v as u32,
                name.trim_start_matches("SKB_DROP_REASON_").to_string(),
            );
        }
    }
    for table in symbolic_tables(&format.print_fmt) {
        names.extend(table.into_iter().map(|(v, n)| (v as u32, n)));
    }
    names
}

struct TcpDrop {
    loaded: Loaded,
    names: HashMap<u32, String>,
    ksyms: Ksyms,
    counting: bool,
    deltas: Deltas<u32, u64>,
}

impl TcpDrop {
    fn new(a: &Args, counting: bool) -> Result<TcpDrop> {
        let f = Format::read("skb", "kfree_skb")?
            .context("this kernel has no skb:kfree_skb tracepoint")?;
        let btf =
            Btf::load().context("tcpdrop reads packet headers at offsets from the kernel's BTF")?;
        let mut flags = 0;
        if a.stack {
            flags |= FLAG_STACK;
        }
        if counting {
            flags |= FLAG_COUNT;
        }
        let cfg = DropConfig {
            skbaddr: f.offset("skbaddr", 8)?,
            location: f.offset("location", 8)?,
            rx_sk: f.offset_or_absent("rx_sk", 8)?,
            protocol: f.offset("protocol", 2)?,
            reason: f.offset_or_absent("reason", 4)?,
            raw_args: btf.tracepoint_arity("kfree_skb").unwrap_or(0) as u16,
            sock: super::sock_offsets(&btf)?,
            flags,
        };
        // Before 5.17 kfree_skb has no reason: every drop's is "unknown".
        let names = if cfg.reason == NO_FIELD {
            HashMap::from([(0, "unknown".to_string())])
        } else {
            reason_names(&f, Some(&btf))
        };
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &cfg, true);
        })?;
        let usable = bpf::raw_if(
            cfg.raw_args >= 2,
            "no prototype for kfree_skb in the kernel's BTF",
        );
        loaded.attach_best(&KFREE_SKB, usable)?;
        if cfg.reason == NO_FIELD {
            loaded.notes.push(
                "skb:kfree_skb has no reason field on this kernel: reasons are \"unknown\"".into(),
            );
        }
        Ok(TcpDrop {
            loaded,
            names,
            ksyms: Ksyms::default(),
            counting,
            deltas: Deltas::default(),
        })
    }

    fn reason(&self, r: u32) -> String {
        self.names
            .get(&r)
            .cloned()
            .unwrap_or_else(|| format!("reason {r}"))
    }
}

impl Source for TcpDrop {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        if self.counting {
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
        let counts = self.deltas.read_percpu(&mut self.loaded.ebpf, "REASONS")?;
        let rows: Vec<Fields> = counts
            .into_iter()
            .map(|(r, n)| vec![("reason", json!(self.reason(r))), ("drops", json!(n))])
            .collect();
        Ok(Sample {
            tables: vec![Table {
                name: Some("reasons"),
                rows,
            }],
            ..Sample::default()
        })
    }

    fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        let e: DropEvent = source::record(raw)?;
        let state = if e.state == 0 {
            "-"
        } else {
            tcp_state(e.state as i32)
        };
        let mut fields = vec![
            ("pid", json!(e.pid)),
            ("ip", json!(ip_version(e.family).parse::<u8>().unwrap_or(0))),
            ("saddr", json!(super::fmt_addr(e.family, &e.saddr))),
            ("sport", json!(e.sport)),
            ("daddr", json!(super::fmt_addr(e.family, &e.daddr))),
            ("dport", json!(e.dport)),
            ("state", json!(state)),
            ("tcp_flags", json!(e.tcp_flags)),
            ("reason", json!(self.reason(e.reason))),
            ("location", json!(self.ksyms.name(e.location))),
        ];
        if let Some(s) = source::record::<StackedDrop>(raw) {
            let n = (s.drop.frames as usize).min(MAX_FRAMES);
            let frames: Vec<String> = s.frames[..n]
                .iter()
                .map(|&ip| self.ksyms.name(ip))
                .collect();
            fields.push(("stack", json!(frames)));
        }
        Some(Event {
            ts: e.ts,
            dur_ns: 0,
            fields,
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static DROPS: Family = Family::counter(
            "tracer_tcp_drops",
            "TCP packets the kernel dropped, by the kernel's drop reason.",
        );
        for row in sample.tables.iter().flat_map(|t| &t.rows) {
            let labels = vec![("reason", row.str("reason").to_string())];
            out.count(&DROPS, labels, row.u64("drops"));
        }
    }
}

struct Text;

impl Layout for Text {
    fn header(&self) -> Option<String> {
        Some(format!(
            "{:<8} {:<7} {:<2} {:<26}   {:<26} {:<12} REASON",
            "TIME", "PID", "IP", "SADDR:SPORT", "DADDR:DPORT", "STATE"
        ))
    }

    fn event(&mut self, e: &Event, clock: &Clock, out: &mut String) {
        out.push_str(&format!(
            "{:<8} {:<7} {:<2} {:<26} > {:<26} {:<12} {}\n",
            output::format_local(clock.unix_ns(e.ts), false),
            e.u64("pid"),
            e.u64("ip"),
            endpoint(e, "saddr", "sport"),
            endpoint(e, "daddr", "dport"),
            e.str("state"),
            e.str("reason")
        ));
        for fr in e
            .get("stack")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            out.push_str(&format!("\t{}\n", fr.as_str().unwrap_or("")));
        }
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = TcpDrop::new(&a, false)?;
    run::tool(
        Box::new(source),
        Box::new(Text),
        a.out.options("TCP drops", a.interval.duration_schedule()),
    )
}

/// Drops per reason, counted in the kernel.
fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(TcpDrop::new(&Args::default(), true)?))
}

/// Every TCP drop, for `tracer record`.
fn recorder(_: &capture::Filter) -> Result<Box<dyn Source>> {
    Ok(Box::new(TcpDrop::new(&Args::default(), false)?))
}
