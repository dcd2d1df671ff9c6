//! `tracer list`: the tools and whether each can run on this kernel.

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Subcommand, doctor::runnable};
use crate::kernel::tracefs;
use crate::tools::TOOLS;

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "list",
    command,
    run,
    names_usage_errors: false,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
        .about("List the tools and whether each can run on this kernel")
        .arg(
            Arg::new("names")
                .long("names")
                .action(ArgAction::SetTrue)
                .help("Print only tool names and aliases (for installing symlinks)"),
        )
}

fn run(m: &ArgMatches) -> Result<()> {
    if m.get_flag("names") {
        for tool in TOOLS {
            println!("{}", tool.name);
            for alias in tool.aliases {
                println!("{alias}");
            }
        }
        return Ok(());
    }
    let names: Vec<String> = TOOLS
        .iter()
        .map(|t| {
            if t.aliases.is_empty() {
                t.name.to_string()
            } else {
                format!("{} ({})", t.name, t.aliases.join(", "))
            }
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(4).max(4);
    println!("{:<width$} {:<5} DESCRIPTION", "TOOL", "RUNS");
    for (tool, name) in TOOLS.iter().zip(&names) {
        let runs = match runnable(tool) {
            None => "?",
            Some(true) => "yes",
            Some(false) => "no",
        };
        println!("{name:<width$} {runs:<5} {}", tool.about);
    }
    if let Err(e) = tracefs::ensure() {
        eprintln!("list: cannot tell which tracepoints this kernel has (RUNS ?): {e:#}");
    }
    Ok(())
}
