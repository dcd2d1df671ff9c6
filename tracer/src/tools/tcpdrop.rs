//! tcpdrop: TCP packets the kernel drops, with the 4-tuple, the socket's state and
//! the kernel's drop reason by name; `--stack` prints where in the kernel.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, StackTraceMap};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    tcpdrop::{DropConfig, DropEvent, FLAG_STACK},
};

use super::Tool;
use crate::core::{
    btf::Btf,
    cli::{self, IntervalArgs, OutputArgs},
    ebpf::{self, Hook, HookChain},
    kernel,
    ksyms::Ksyms,
    net::{self, fmt_endpoint, ip_version, tcp_state},
    output::{self, Clock},
    run,
    tracefs::{Format, symbolic_tables},
};

const KFREE_SKB: HookChain = HookChain {
    role: "drop",
    program: "kfree_skb",
    candidates: &[Hook::tp("skb", "kfree_skb")],
};

pub const TOOL: Tool = Tool {
    name: "tcpdrop",
    aliases: &[],
    about: "TCP packet drops with 4-tuple, state and the kernel's drop reason",
    command: Args::command,
    run,
    hooks: &[KFREE_SKB],
    optional_hooks: &[],
};

/// Trace TCP packets dropped by the kernel.
#[derive(clap::Parser, Debug)]
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

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    kernel::require_privileges()?;
    let f =
        Format::read("skb", "kfree_skb")?.context("this kernel has no skb:kfree_skb tracepoint")?;
    let btf =
        Btf::load().context("tcpdrop reads packet headers at offsets from the kernel's BTF")?;
    let cfg = DropConfig {
        skbaddr: f.offset("skbaddr", 8)?,
        location: f.offset("location", 8)?,
        rx_sk: f.offset_or_absent("rx_sk", 8)?,
        protocol: f.offset("protocol", 2)?,
        reason: f.offset_or_absent("reason", 4)?,
        _pad: 0,
        sock: net::sock_offsets(&btf)?,
        flags: if a.stack { FLAG_STACK } else { 0 },
    };
    let names = reason_names(&f, Some(&btf));
    let mut loaded = ebpf::load(crate::ebpf_object!("tcpdrop"), |l| {
        l.override_global("CONFIG", &cfg, true);
    })?;
    loaded.attach_chain(&KFREE_SKB)?;
    if cfg.reason == NO_FIELD {
        loaded
            .notes
            .push("skb:kfree_skb has no reason field on this kernel".into());
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);
    let ring = loaded.take_events()?;
    let stacks: StackTraceMap<MapData> = StackTraceMap::try_from(
        loaded
            .ebpf
            .take_map("STACKS")
            .context("STACKS map missing")?,
    )?;
    let mut ksyms = Ksyms::default();
    let clock = Clock::now();
    let header = (!a.out.json).then(|| {
        format!(
            "{:<8} {:<7} {:<2} {:<26}   {:<26} {:<12} REASON",
            "TIME", "PID", "IP", "SADDR:SPORT", "DADDR:DPORT", "STATE"
        )
    });
    let on_event = |e: DropEvent| -> Result<()> {
        let reason = names
            .get(&e.reason)
            .cloned()
            .unwrap_or_else(|| format!("reason {}", e.reason));
        let state = if e.state == 0 {
            "-"
        } else {
            tcp_state(e.state as i32)
        };
        let frames: Vec<String> = if e.stack_id >= 0 {
            stacks
                .get(&(e.stack_id as u32), 0)
                .map(|st| st.frames().iter().map(|fr| ksyms.name(fr.ip)).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let time = output::format_local(clock.unix_ns(e.ts), false);
        if a.out.json {
            let mut v = json!({
                "tool": "tcpdrop", "time": time, "pid": e.pid, "ip": ip_version(e.family).parse::<u8>().unwrap_or(0),
                "saddr": net::fmt_addr(e.family, &e.saddr), "sport": e.sport,
                "daddr": net::fmt_addr(e.family, &e.daddr), "dport": e.dport,
                "state": state, "tcp_flags": e.tcp_flags, "reason": reason, "location": ksyms.name(e.location),
            });
            if a.stack {
                v["stack"] = json!(frames);
            }
            output::json_line(&v);
        } else {
            println!(
                "{time:<8} {:<7} {:<2} {:<26} > {:<26} {state:<12} {reason}",
                e.pid,
                ip_version(e.family),
                fmt_endpoint(e.family, &e.saddr, e.sport),
                fmt_endpoint(e.family, &e.daddr, e.dport)
            );
            for fr in &frames {
                println!("\t{fr}");
            }
        }
        Ok(())
    };
    let verbose = a.out.verbose;
    run::stream(
        a.interval.duration_schedule(),
        run::Start::with_header("TCP drops", header),
        ring,
        on_event,
        || {
            loaded.report_counters(TOOL.name, verbose, &[]);
            Ok(())
        },
    )
}
