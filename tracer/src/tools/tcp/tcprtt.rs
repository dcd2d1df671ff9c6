//! tcprtt: TCP smoothed round-trip time as log2 histograms, sampled on each
//! segment received by an established connection (tcp:tcp_probe).

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    tcp::SkcOffsets,
    tcprtt::{
        FLAG_LADDR, FLAG_LPORT, FLAG_PER_LADDR, FLAG_PER_RADDR, FLAG_RADDR, FLAG_RPORT, RttConfig,
        RttGroup,
    },
};

use super::fmt_addr;
use crate::bpf::{self, Hook, HookChain, HookUse, Loaded, Object};
use crate::cli::{self, HeatmapArgs, IntervalArgs, OutputArgs};
use crate::kernel::{btf::Btf, tracefs::Format};
use crate::output;
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Get as _, HistGroup, Kind, Layout, Sample, Source,
    hist::HistReader,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

const PROBE: HookChain = HookChain {
    role: "probe",
    program: "tcp_probe",
    candidates: &[
        Hook::raw_tp("tcp", "tcp_probe", "tcp_probe_raw"),
        Hook::tp("tcp", "tcp_probe"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "tcprtt",
    aliases: &[],
    about: "TCP smoothed RTT histograms, filtered by address and port",
    schema: None,
    command: Args::command,
    run,
    hooks: || vec![HookUse::always(PROBE)],
    exporter: Some(exporter),
    family: Subsystem::Tcp,
    record_context: true,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("tcprtt"),
        maps: &["HIST", "HIST_STATS", "HIST_SLOTS"],
        #[cfg(test)]
        globals: &[],
    },
};

/// Summarize TCP smoothed RTT as histograms (ports and addresses as in BCC's tcprtt).
#[derive(clap::Parser, Debug, Default)]
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
    pictures: HeatmapArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

struct TcpRtt {
    loaded: Loaded,
    reader: HistReader<RttGroup>,
    /// The label of -b/-B histograms ("laddr" or "raddr").
    by: Option<&'static str>,
    unit: &'static str,
}

impl TcpRtt {
    fn new(a: &Args) -> Result<TcpRtt> {
        let mut cfg = RttConfig::INITIAL;
        if let Some(s) = &a.laddr {
            (cfg.laddr_family, cfg.laddr) = super::parse_addr(s)?;
            cfg.flags |= FLAG_LADDR;
        }
        if let Some(s) = &a.raddr {
            (cfg.raddr_family, cfg.raddr) = super::parse_addr(s)?;
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
        let f = Format::read("tcp", "tcp_probe")?
            .context("this kernel has no tcp:tcp_probe tracepoint")?;
        cfg.saddr = f.offset_at_least("saddr", 28)?;
        cfg.daddr = f.offset_at_least("daddr", 28)?;
        cfg.sport = f.offset("sport", 2)?;
        cfg.dport = f.offset("dport", 2)?;
        // Kernels before 5.11 have no family field; the family is then the
        // first member of the sockaddr saddr holds (sin_family, sin6_family).
        cfg.family = match f.field("family") {
            Some(_) => f.offset("family", 2)?,
            None => cfg.saddr,
        };
        cfg.srtt = f.offset("srtt", 4)?;
        if let Ok(btf) = Btf::load()
            && let Ok(skc) = super::skc_offsets(&btf)
            && let Ok(srtt) = btf.member("tcp_sock", "srtt_us")
        {
            cfg.skc = skc;
            cfg.srtt_us = u16::try_from(srtt.offset).unwrap_or(NO_FIELD);
        }
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &cfg, true);
        })?;
        // The raw tracepoint's program needs the socket's layout from BTF.
        let ready = cfg.skc != SkcOffsets::ABSENT && cfg.srtt_us != NO_FIELD;
        let usable = bpf::raw_if(ready, "no socket layout in the kernel's BTF");
        loaded.attach_best(&PROBE, usable)?;
        Ok(TcpRtt {
            loaded,
            reader: HistReader::default(),
            by: if a.by_laddr {
                Some("laddr")
            } else if a.by_raddr {
                Some("raddr")
            } else {
                None
            },
            unit: if a.milliseconds { "msecs" } else { "usecs" },
        })
    }
}

impl Source for TcpRtt {
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
        let mut hists = Vec::new();
        for (g, hist) in self.reader.read(&self.loaded.ebpf)? {
            let labels = match self.by {
                Some(by) => vec![(by, json!(fmt_addr(g.family, &g.addr)))],
                None => Vec::new(),
            };
            hists.push(HistGroup { labels, hist });
        }
        if hists.is_empty() && self.by.is_none() {
            // Nothing happened: still one (empty) histogram for the interval.
            hists.push(HistGroup::default());
        }
        Ok(Sample {
            hists,
            unit: self.unit,
            ..Sample::default()
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static RTT: Family = Family::histogram(
            "tracer_tcp_rtt_seconds",
            "TCP smoothed round-trip time, sampled on each segment an established connection receives.",
            1e6,
            (3, 24),
        );
        for g in &sample.hists {
            out.hist(&RTT, Vec::new(), &g.hist);
        }
    }
}

struct Text {
    by: Option<&'static str>,
    extension: bool,
    timestamp: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        if self.timestamp {
            out.push_str(&output::local_time());
            out.push('\n');
        }
        for g in &s.hists {
            if let Some(by) = self.by {
                let label = if by == "laddr" {
                    "Local Address"
                } else {
                    "Remote Address"
                };
                out.push_str(&format!("\n{label} = {}\n", g.labels.str(by)));
            }
            out.push_str(&g.hist.render(s.unit));
            if self.extension {
                out.push_str(&format!("     avg = {} {}\n", g.hist.average(), s.unit));
            }
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = TcpRtt::new(&a)?;
    let text = Text {
        by: source.by,
        extension: a.extension,
        timestamp: a.out.timestamp,
    };
    run::tool(
        Box::new(source),
        Box::new(text),
        a.out
            .options("TCP RTT", a.interval.schedule())
            .with_heatmap(&a.pictures),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(TcpRtt::new(&Args::default())?))
}
