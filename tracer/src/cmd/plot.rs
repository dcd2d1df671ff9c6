//! `tracer plot`: a tool's NDJSON or a capture drawn as an SVG picture.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Subcommand;
use crate::cli;
use crate::tools;
use crate::view::plot;

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "plot",
    command,
    run,
    names_usage_errors: true,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
        .about("Draw a tool's NDJSON (--json) or a capture as an SVG picture")
        .arg(
            Arg::new("input")
                .required(true)
                .value_name("INPUT")
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("output")
                .short('o')
                .long("output")
                .required(true)
                .value_name("OUT.svg")
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("kind")
                .long("kind")
                .required(true)
                .value_parser(clap::value_parser!(plot::Kind))
                .help("scatter: time x latency per operation; latency-heatmap; offset-heatmap: time x disk offset; utilization: busy fraction per disk"),
        )
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("SECONDS")
                .value_parser(cli::parse_seconds)
                .allow_negative_numbers(true)
                .help("Column width of heatmaps and utilization (default: about 100 columns)"),
        )
        .arg(
            Arg::new("log")
                .long("log")
                .action(ArgAction::SetTrue)
                .help("Scatter: latency on a log scale"),
        )
}

fn run(m: &ArgMatches) -> Result<()> {
    plot::plot(
        m.get_one::<PathBuf>("input").expect("required"),
        m.get_one::<PathBuf>("output").expect("required"),
        &plot::Options {
            kind: *m.get_one::<plot::Kind>("kind").expect("required"),
            interval: m.get_one::<f64>("interval").copied(),
            log: m.get_flag("log"),
        },
        &tools::schemas(),
    )
}
