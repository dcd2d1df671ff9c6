//! tcpretrans: TCP retransmits, one line each (or counted per flow), telling tail
//! loss probes (L) from RTO and fast retransmits (R).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::{Value, json};
use tracer_common::{
    block::NO_FIELD,
    tcp::{AF_INET, AF_INET6, SockOffsets},
    tcpretrans::{
        FLAG_COUNT, FLAG_FAILED, FLAG_NETNS, KIND_LOSS_PROBE, RetransConfig, RetransEvent,
        RetransKey,
    },
};

use super::Tool;
use crate::core::{
    btf::Btf,
    cli::{self, IntervalArgs, OutputArgs},
    ebpf::{self, Hook, HookChain},
    kernel,
    net::{self, fmt_endpoint, ip_version, tcp_state},
    output::{self, Clock},
    run,
    tally::Deltas,
    tracefs::Format,
};

const RETRANSMIT: HookChain = HookChain {
    role: "retrans",
    program: "tcp_retransmit_skb",
    candidates: &[Hook::tp("tcp", "tcp_retransmit_skb")],
};
const SYNACK: HookChain = HookChain {
    role: "synack",
    program: "tcp_retransmit_synack",
    candidates: &[Hook::tp("tcp", "tcp_retransmit_synack")],
};

pub const TOOL: Tool = Tool {
    name: "tcpretrans",
    aliases: &[],
    about: "TCP retransmits with their flow and state; tail loss probes told apart",
    command: Args::command,
    run,
    hooks: &[RETRANSMIT],
    optional_hooks: &[("SYN-ACK retransmits", SYNACK)],
};

/// Trace TCP retransmits.
#[derive(clap::Parser, Debug)]
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
    cfg.addrs = net::addr_fields(&f)?;
    if let Some(s) = Format::read("tcp", "tcp_retransmit_synack")? {
        cfg.synack = net::addr_fields(&s)?;
    }
    cfg.sock = match Btf::load().and_then(|btf| net::sock_offsets(&btf)) {
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

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    kernel::require_privileges()?;
    let mut notes = Vec::new();
    let cfg = config(&a, &mut notes)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("tcpretrans"), |l| {
        l.override_global("CONFIG", &cfg, true);
    })?;
    loaded.attach_chain(&RETRANSMIT)?;
    if let Ok(choice) = SYNACK.choose() {
        loaded.attach(&choice)?;
    }
    loaded.notes.extend(notes);
    loaded.report_hooks(TOOL.name, a.out.verbose);

    if a.per_flow {
        return run_counts(&a, loaded);
    }
    let ring = loaded.take_events()?;
    let clock = Clock::now();
    let header = (!a.out.json).then(|| {
        let netns = if a.netns {
            format!("{:<11}", "NETNS")
        } else {
            String::new()
        };
        format!(
            "{:<8} {:<7} {:<2} {:<26} {:1}> {:<26} {netns}STATE",
            "TIME", "PID", "IP", "LADDR:LPORT", "T", "RADDR:RPORT"
        )
    });
    let on_event = |e: RetransEvent| -> Result<()> {
        if e.kind == KIND_LOSS_PROBE && !a.loss_probes {
            return Ok(());
        }
        let f = &e.flow;
        let time = output::format_local(clock.unix_ns(e.ts), false);
        if a.out.json {
            output::json_line(&json!({
                "tool": "tcpretrans", "time": time, "pid": e.pid, "ip": ip_version(f.family).parse::<u8>().unwrap_or(0),
                "laddr": net::fmt_addr(f.family, &f.laddr), "lport": f.lport,
                "raddr": net::fmt_addr(f.family, &f.raddr), "rport": f.rport,
                "type": (e.kind as char).to_string(), "state": tcp_state(e.state), "segs": e.segs,
                "netns": e.netns, "err": e.err,
            }));
        } else {
            let netns = if a.netns {
                format!("{:<11}", e.netns)
            } else {
                String::new()
            };
            println!(
                "{time:<8} {:<7} {:<2} {:<26} {}> {:<26} {netns}{}",
                e.pid,
                ip_version(f.family),
                fmt_endpoint(f.family, &f.laddr, f.lport),
                e.kind as char,
                fmt_endpoint(f.family, &f.raddr, f.rport),
                tcp_state(e.state)
            );
        }
        Ok(())
    };
    let verbose = a.out.verbose;
    let start = run::Start::with_header("TCP retransmits", header);
    run::stream(
        a.interval.duration_schedule(),
        start,
        ring,
        on_event,
        || {
            loaded.report_counters(TOOL.name, verbose, &[]);
            Ok(())
        },
    )
}

/// -c: retransmitted segments per flow, every interval.
fn run_counts(a: &Args, mut loaded: ebpf::Loaded) -> Result<()> {
    let mut deltas = Deltas::<RetransKey, u64>::default();
    run::periodic(
        a.interval.schedule(),
        run::Start::new("TCP retransmits"),
        |last| {
            let mut flows: BTreeMap<RetransKey, u64> = BTreeMap::new();
            for (k, n) in deltas.read_percpu(&mut loaded.ebpf, "COUNTS")? {
                if k.kind as u8 == KIND_LOSS_PROBE && !a.loss_probes {
                    continue;
                }
                *flows.entry(k).or_default() += n;
            }
            let mut rows: Vec<(RetransKey, u64)> = flows.into_iter().collect();
            rows.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            if a.out.json {
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|(k, n)| {
                        let f = &k.flow;
                        json!({"laddr": net::fmt_addr(f.family, &f.laddr), "lport": f.lport,
                           "raddr": net::fmt_addr(f.family, &f.raddr), "rport": f.rport,
                           "type": (k.kind as u8 as char).to_string(), "netns": k.netns, "segs": n})
                    })
                    .collect();
                output::json_line(
                    &json!({"tool": "tcpretrans", "ts": output::unix_time(), "flows": rows}),
                );
            } else {
                if a.out.timestamp {
                    println!("{}", output::local_time());
                }
                let netns = if a.netns {
                    format!("{:<11}", "NETNS")
                } else {
                    String::new()
                };
                println!(
                    "{netns}{:<26} {:1}  {:<26} {:>11}",
                    "LADDR:LPORT", "T", "RADDR:RPORT", "RETRANSMITS"
                );
                for (k, n) in &rows {
                    let f = &k.flow;
                    let netns = if a.netns {
                        format!("{:<11}", k.netns)
                    } else {
                        String::new()
                    };
                    println!(
                        "{netns}{:<26} {} <-> {:<26} {n:>9}",
                        fmt_endpoint(f.family, &f.laddr, f.lport),
                        k.kind as u8 as char,
                        fmt_endpoint(f.family, &f.raddr, f.rport)
                    );
                }
                println!();
            }
            if last {
                loaded.report_counters(TOOL.name, a.out.verbose, &[]);
            }
            Ok(())
        },
    )
}
