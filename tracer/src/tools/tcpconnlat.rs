//! tcpconnlat: active TCP connect latency, one line per connect (or a histogram),
//! attributed to the task that called connect().

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::tcpconnlat::{ConnConfig, ConnEvent, FLAG_HIST};

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    ebpf::{self, Hook, HookChain},
    hist::HistReader,
    kernel,
    net::{self, fmt_addr, ip_version},
    output::{self, Clock, cstr},
    run,
    tracefs::Format,
};

const SET_STATE: HookChain = HookChain {
    role: "state",
    program: "inet_sock_set_state",
    candidates: &[Hook::tp("sock", "inet_sock_set_state")],
};

pub const TOOL: Tool = Tool {
    name: "tcpconnlat",
    aliases: &[],
    about: "Active TCP connect latency, per connect or as a histogram",
    command: Args::command,
    run,
    hooks: &[SET_STATE],
    optional_hooks: &[],
};

/// Trace TCP active connects and their latency (SYN sent to connection established).
#[derive(clap::Parser, Debug)]
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

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let mut cfg = ConnConfig {
        task: a.task.resolve()?,
        ..ConnConfig::INITIAL
    };
    cfg.min_latency_ns = a.min_latency_ns.unwrap_or(0);
    if a.hist {
        cfg.flags |= FLAG_HIST;
        cfg.unit_div = if a.milliseconds { 1_000_000 } else { 1000 };
    }
    kernel::require_privileges()?;
    let f = Format::read("sock", "inet_sock_set_state")?
        .context("this kernel has no sock:inet_sock_set_state")?;
    cfg.skaddr = f.offset("skaddr", 8)?;
    cfg.oldstate = f.offset("oldstate", 4)?;
    cfg.newstate = f.offset("newstate", 4)?;
    cfg.protocol = f.offset("protocol", 2)?;
    cfg.addrs = net::addr_fields(&f)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("tcpconnlat"), |l| {
        l.override_global("CONFIG", &cfg, true);
    })?;
    loaded.attach_chain(&SET_STATE)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    if a.hist {
        let unit = if a.milliseconds { "msecs" } else { "usecs" };
        let mut reader = HistReader::<tracer_common::hist::NoGroup>::default();
        return run::periodic(
            a.interval.schedule(),
            run::Start::new("TCP connects"),
            |last| {
                let hists = reader.read(&loaded.ebpf)?;
                let h = hists.into_values().next().unwrap_or_default();
                if a.out.json {
                    let v = json!({"tool": "tcpconnlat", "ts": output::unix_time()});
                    let v = h.json_with(v, unit);
                    output::json_line(&v);
                } else {
                    print!("{}", h.render(unit));
                    println!();
                }
                if last {
                    loaded.report_counters(TOOL.name, a.out.verbose, &[]);
                }
                Ok(())
            },
        );
    }
    let ring = loaded.take_events()?;
    let clock = Clock::now();
    let header = (!a.out.json).then(|| {
        let time = if a.out.timestamp {
            format!("{:<9}", "TIME")
        } else {
            String::new()
        };
        format!(
            "{time}{:<7} {:<16} {:<2} {:<39} {:<39} {:>5} {:>9}",
            "PID", "COMM", "IP", "SADDR", "DADDR", "DPORT", "LAT(ms)"
        )
    });
    let on_event = |e: ConnEvent| -> Result<()> {
        let lat_ms = e.lat_ns as f64 / 1e6;
        if a.out.json {
            output::json_line(&json!({
                "tool": "tcpconnlat", "time": output::format_local(clock.unix_ns(e.ts), true), "pid": e.tgid,
                "comm": cstr(&e.comm), "ip": ip_version(e.family).parse::<u8>().unwrap_or(0),
                "saddr": fmt_addr(e.family, &e.saddr), "daddr": fmt_addr(e.family, &e.daddr), "dport": e.dport, "lport": e.lport,
                "lat_ms": lat_ms, "lat_ns": e.lat_ns,
            }));
        } else {
            let time = if a.out.timestamp {
                format!("{:<9}", output::format_local(clock.unix_ns(e.ts), false))
            } else {
                String::new()
            };
            println!(
                "{time}{:<7} {:<16} {:<2} {:<39} {:<39} {:>5} {lat_ms:>9.3}",
                e.tgid,
                cstr(&e.comm),
                ip_version(e.family),
                fmt_addr(e.family, &e.saddr),
                fmt_addr(e.family, &e.daddr),
                e.dport
            );
        }
        Ok(())
    };
    let verbose = a.out.verbose;
    run::stream(
        a.interval.duration_schedule(),
        run::Start::with_header("TCP connects", header),
        ring,
        on_event,
        || {
            loaded.report_counters(TOOL.name, verbose, &[]);
            Ok(())
        },
    )
}
