//! `tracer report`: read a capture of `tracer record`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Subcommand;
use crate::tools;
use crate::view::report;

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "report",
    command,
    run,
    names_usage_errors: true,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
        .about("Read a capture of tracer record: the trigger, what happened around it")
        .arg(
            Arg::new("file")
                .required(true)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf)),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print JSON"),
        )
        .arg(
            Arg::new("perfetto")
                .long("perfetto")
                .value_name("OUT")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Also write the capture as a Perfetto trace (opens in ui.perfetto.dev)"),
        )
}

fn run(m: &ArgMatches) -> Result<()> {
    report::run(
        m.get_one::<PathBuf>("file").expect("required"),
        m.get_flag("json"),
        m.get_one::<PathBuf>("perfetto").map(PathBuf::as_path),
        &tools::schemas(),
    )
}
