//! `tracer exporter`: every chosen tool's in-kernel aggregation, served to
//! Prometheus on /metrics.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::{Arg, ArgMatches, Command};

use super::{Subcommand, one_line};
use crate::cli;
use crate::kernel::{self, btf};
use crate::run;
use crate::sink::prometheus::{self, Absent, Exporter};
use crate::tools::{self, TOOLS, Tool};

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "exporter",
    command,
    run,
    names_usage_errors: true,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
        .about("Run tools' in-kernel aggregations and serve them to Prometheus on /metrics")
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR:PORT")
                .default_value("127.0.0.1:9435")
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Where to serve /metrics"),
        )
        .arg(
            Arg::new("top")
                .long("top-processes")
                .value_name("N")
                .value_parser(|s: &str| cli::parse_positive(s, 100_000))
                .allow_negative_numbers(true)
                .help("Process names that get series of their own in per-process metrics (default 20; the rest are summed as \"other\")"),
        )
        .arg(
            Arg::new("tools")
                .long("tools")
                .value_name("TOOL,...|all")
                .default_value("all")
                .help(format!(
                    "Tools to run (all: those this kernel can run): {}",
                    exporter_tools().join(", ")
                )),
        )
}

fn exporter_tools() -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|t| t.exporter.is_some())
        .map(|t| t.name)
        .collect()
}

/// The tools `--tools` names (`all`: every tool with an exporter source).
fn chosen(which: &str) -> Result<Vec<&'static Tool>> {
    if which.trim() == "all" {
        return Ok(TOOLS
            .iter()
            .copied()
            .filter(|t| t.exporter.is_some())
            .collect());
    }
    let mut chosen = Vec::new();
    for name in which.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match tools::find(name) {
            Some(t) if t.exporter.is_some() => chosen.push(t),
            Some(_) => bail!(
                "{name} has nothing to export (an event tool); exporter tools: {}",
                exporter_tools().join(", ")
            ),
            None => bail!(
                "unknown tool '{name}' in --tools; exporter tools: {}",
                exporter_tools().join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        bail!("--tools names no tool");
    }
    Ok(chosen)
}

/// Every chosen tool's exporter source, then serve.
fn run(m: &ArgMatches) -> Result<()> {
    let listen = *m.get_one::<SocketAddr>("listen").expect("has a default");
    let which = m.get_one::<String>("tools").expect("has a default");
    let top = m.get_one::<u64>("top").map(|&n| n as usize);
    let all = which.trim() == "all";
    let chosen = chosen(which)?;
    kernel::require_privileges()?;
    let listener = prometheus::bind(listen)?;
    let mut sources = Vec::new();
    let mut absent = Vec::new();
    btf::shared(|| -> Result<()> {
        for tool in chosen {
            let make = tool.exporter.expect("chosen have one");
            match make() {
                Ok(s) => sources.push(s),
                // With `all`, what this kernel cannot run is reported and left out.
                Err(e) if all => {
                    eprintln!("exporter: not running {}: {}", tool.name, one_line(&e));
                    absent.push(Absent { tool: tool.name });
                }
                Err(e) => return Err(e.context(format!("starting {}", tool.name))),
            }
        }
        Ok(())
    })?;
    if sources.is_empty() {
        bail!("none of the tools could start (the lines above say why)");
    }
    let what = format!("{} tools for Prometheus", sources.len());
    let exporter = Exporter::new(listener, absent, top);
    run::run(sources, vec![Box::new(exporter)], &what, false)
}
