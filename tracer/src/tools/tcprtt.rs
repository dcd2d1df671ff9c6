//! tcprtt: TCP smoothed round-trip time as log2 histograms, sampled on each
//! segment received by an established connection (tcp:tcp_probe).

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::tcprtt::{
    FLAG_LADDR, FLAG_LPORT, FLAG_PER_LADDR, FLAG_PER_RADDR, FLAG_RADDR, FLAG_RPORT, RttConfig,
    RttGroup,
};

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs},
    ebpf::{self, Hook, HookChain},
    hist::HistReader,
    kernel,
    net::{self, fmt_addr},
    output, run,
    tracefs::Format,
};

const PROBE: HookChain = HookChain {
    role: "probe",
    program: "tcp_probe",
    candidates: &[Hook::tp("tcp", "tcp_probe")],
};

pub const TOOL: Tool = Tool {
    name: "tcprtt",
    aliases: &[],
    about: "TCP smoothed RTT histograms, filtered by address and port",
    command: Args::command,
    run,
    hooks: &[PROBE],
    optional_hooks: &[],
};

/// Summarize TCP smoothed RTT as histograms (ports and addresses as in BCC's tcprtt).
#[derive(clap::Parser, Debug)]
struct Args {
    /// Local address filter
    #[arg(short = 'a', long = "laddr", value_name = "ADDR")]
    laddr: Option<String>,
    /// Remote address filter
    #[arg(short = 'A', long = "raddr", value_name = "ADDR")]
    raddr: Option<String>,
    /// Local port filter
    #[arg(short = 'p', long = "lport", value_name = "PORT")]
    lport: Option<u16>,
    /// Remote port filter
    #[arg(short = 'P', long = "rport", value_name = "PORT")]
    rport: Option<u16>,
    /// One histogram per local address
    #[arg(short = 'b', long = "byladdr", conflicts_with = "by_raddr")]
    by_laddr: bool,
    /// One histogram per remote address
    #[arg(short = 'B', long = "byraddr")]
    by_raddr: bool,
    /// Print the average RTT under each histogram
    #[arg(short = 'e', long = "extension")]
    extension: bool,
    /// Millisecond histograms
    #[arg(short = 'm', long)]
    milliseconds: bool,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let mut cfg = RttConfig::INITIAL;
    if let Some(s) = &a.laddr {
        (cfg.laddr_family, cfg.laddr) = net::parse_addr(s)?;
        cfg.flags |= FLAG_LADDR;
    }
    if let Some(s) = &a.raddr {
        (cfg.raddr_family, cfg.raddr) = net::parse_addr(s)?;
        cfg.flags |= FLAG_RADDR;
    }
    if let Some(p) = a.lport {
        cfg.lport = p;
        cfg.flags |= FLAG_LPORT;
    }
    if let Some(p) = a.rport {
        cfg.rport = p;
        cfg.flags |= FLAG_RPORT;
    }
    if a.by_laddr {
        cfg.flags |= FLAG_PER_LADDR;
    }
    if a.by_raddr {
        cfg.flags |= FLAG_PER_RADDR;
    }
    cfg.unit_div = if a.milliseconds { 1000 } else { 1 };
    kernel::require_privileges()?;
    let f =
        Format::read("tcp", "tcp_probe")?.context("this kernel has no tcp:tcp_probe tracepoint")?;
    cfg.saddr = f.offset_at_least("saddr", 28)?;
    cfg.daddr = f.offset_at_least("daddr", 28)?;
    cfg.sport = f.offset("sport", 2)?;
    cfg.dport = f.offset("dport", 2)?;
    cfg.family = f.offset("family", 2)?;
    cfg.srtt = f.offset("srtt", 4)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("tcprtt"), |l| {
        l.override_global("CONFIG", &cfg, true);
    })?;
    loaded.attach_chain(&PROBE)?;
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let unit = if a.milliseconds { "msecs" } else { "usecs" };
    let mut reader = HistReader::<RttGroup>::default();
    run::periodic(a.interval.schedule(), run::Start::new("TCP RTT"), |last| {
        let hists = reader.read(&loaded.ebpf)?;
        if a.out.timestamp && !a.out.json {
            println!("{}", output::local_time());
        }
        let label = if a.by_laddr {
            "Local Address"
        } else {
            "Remote Address"
        };
        let grouped = a.by_laddr || a.by_raddr;
        if a.out.json && hists.is_empty() && !grouped {
            // Nothing happened: still one record for the interval.
            let v = json!({"tool": "tcprtt", "ts": output::unix_time()});
            output::json_line(&crate::core::hist::Hist::default().json_with(v, unit));
        }
        for (g, h) in &hists {
            if a.out.json {
                let mut v = json!({"tool": "tcprtt", "ts": output::unix_time()});
                if grouped {
                    v[if a.by_laddr { "laddr" } else { "raddr" }] =
                        json!(fmt_addr(g.family, &g.addr));
                }
                let v = h.json_with(v, unit);
                output::json_line(&v);
            } else {
                if grouped {
                    println!("\n{label} = {}", fmt_addr(g.family, &g.addr));
                }
                print!("{}", h.render(unit));
                if a.extension {
                    println!("     avg = {} {unit}", h.average());
                }
            }
        }
        if !a.out.json {
            println!();
        }
        if last {
            loaded.report_counters(TOOL.name, a.out.verbose, &[]);
        }
        Ok(())
    })
}
