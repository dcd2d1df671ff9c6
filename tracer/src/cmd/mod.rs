//! The command line above everything else: `tracer <tool> ...` (or a symlink
//! named after the tool), and tracer's own subcommands, one file each. The root
//! command is theirs and the registry's tools, in that order.

use std::{ffi::OsString, path::Path};

use anyhow::Result;
use clap::{ArgMatches, Command};

use crate::kernel;
use crate::tools::{self, TOOLS};

mod doctor;
mod exporter;
mod list;
mod plot;
mod record;
mod report;

/// One of tracer's own subcommands (a tool's come from the registry).
struct Subcommand {
    name: &'static str,
    command: fn() -> Command,
    run: fn(&ArgMatches) -> Result<()>,
    /// Whether its usage errors start with its name, as a tool's do (else with
    /// `tracer`).
    names_usage_errors: bool,
}

/// In the order `tracer --help` shows them, before the tools.
const SUBCOMMANDS: &[&Subcommand] = &[
    &list::SUBCOMMAND,
    &doctor::SUBCOMMAND,
    &exporter::SUBCOMMAND,
    &record::SUBCOMMAND,
    &report::SUBCOMMAND,
    &plot::SUBCOMMAND,
];

fn root_command() -> Command {
    let mut cmd = Command::new("tracer")
        .about("eBPF tracing tools: block I/O, TCP, KVM exits, page faults")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true);
    for sub in SUBCOMMANDS {
        cmd = cmd.subcommand((sub.command)());
    }
    for tool in TOOLS {
        cmd = cmd.subcommand(
            (tool.command)()
                .name(tool.name)
                .about(tool.about)
                .visible_aliases(tool.aliases),
        );
    }
    cmd
}

/// A tool invoked through a symlink named after it runs as `tracer <tool>`.
fn argv_with_tool(args: Vec<OsString>) -> Vec<OsString> {
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if tools::find(&invoked).is_some() {
        let mut out = vec![OsString::from("tracer")];
        out.push(OsString::from(invoked));
        out.extend(args.into_iter().skip(1));
        out
    } else {
        args
    }
}

/// What a usage error starts with: the tool or subcommand named, or `tracer`.
fn usage_prefix(args: &[OsString]) -> String {
    match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
        Some(name)
            if tools::find(&name).is_some()
                || SUBCOMMANDS
                    .iter()
                    .any(|s| s.name == name && s.names_usage_errors) =>
        {
            name
        }
        _ => "tracer".to_string(),
    }
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Die quietly on a closed pipe (`tracer list | head`), like the C tools. A
    // tool's stdout has a thread of its own that blocks SIGPIPE: there a closed
    // pipe ends the run cleanly, with its counters (output::StdoutWriter).
    // SAFETY: setting a signal disposition at start-up, before any threads.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tracer: internal error: {info}");
    }));

    let args = argv_with_tool(std::env::args_os().collect());
    let prefix = usage_prefix(&args);
    let matches = match root_command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return usage_error(e, &prefix),
    };
    let (name, sub) = matches.subcommand().expect("subcommand is required");
    let result = match SUBCOMMANDS.iter().find(|s| s.name == name) {
        Some(s) => (s.run)(sub),
        None => match tools::find(name) {
            Some(tool) => kernel::require_privileges().and_then(|()| (tool.run)(sub)),
            None => unreachable!("clap only accepts known subcommands"),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {}", one_line(&e));
            1
        }
    }
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        let s = s.lines().next().unwrap_or("").trim().to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn usage_error(e: clap::Error, prefix: &str) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            }
        }
        _ => {
            eprintln!(
                "{prefix}: {} (see --help)",
                first_line(&e.render().to_string())
            );
            2
        }
    }
}

/// clap's message as one line: its first, with the list that follows a line
/// ending in ':' (the missing arguments) joined to it.
fn first_line(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if line.ends_with(':') {
        let list: Vec<&str> = lines
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect();
        line = format!("{line} {}", list.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn symlink_name_selects_the_tool() {
        let got: Vec<String> = argv_with_tool(argv(&["/usr/local/bin/biolatency", "-D", "1"]))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["tracer", "biolatency", "-D", "1"]);
        let args = argv(&["tracer", "list"]);
        assert_eq!(argv_with_tool(args.clone()), args);
    }

    #[test]
    fn usage_errors_are_one_line_that_names_what_is_missing() {
        let e = root_command()
            .try_get_matches_from(["tracer", "plot", "in.ndjson"])
            .unwrap_err();
        assert_eq!(
            first_line(&e.render().to_string()),
            "the following required arguments were not provided: --output <OUT.svg>, --kind <kind>"
        );
        assert_eq!(
            first_line("error: unexpected argument\n\nUsage: x"),
            "unexpected argument"
        );
        assert_eq!(first_line(""), "invalid arguments");
    }

    #[test]
    fn usage_errors_name_the_tool_or_subcommand() {
        for (args, prefix) in [
            (&["tracer", "biolatency", "0"][..], "biolatency"),
            (&["tracer", "iosnoop", "0"], "iosnoop"),
            (&["tracer", "exporter", "--no"], "exporter"),
            (&["tracer", "record", "--no"], "record"),
            (&["tracer", "report"], "report"),
            (&["tracer", "plot"], "plot"),
            (&["tracer", "list", "--no"], "tracer"),
            (&["tracer", "doctor", "--no"], "tracer"),
            (&["tracer", "nosuchtool"], "tracer"),
            (&["tracer"], "tracer"),
        ] {
            assert_eq!(usage_prefix(&argv(args)), prefix, "{args:?}");
        }
    }

    /// Dispatch and usage errors go by `Subcommand::name`: it must be the
    /// name its command parses as, and no tool's.
    #[test]
    fn subcommands_are_named_as_they_parse() {
        let root = root_command();
        for sub in SUBCOMMANDS {
            let parsed = root.find_subcommand(sub.name).map(Command::get_name);
            assert_eq!(parsed, Some(sub.name));
            assert!(tools::find(sub.name).is_none(), "{} is a tool", sub.name);
        }
    }

    #[test]
    fn every_tool_parses_its_help() {
        root_command().debug_assert();
    }

    #[test]
    fn bad_intervals_are_usage_errors() {
        for bad in ["0", "-1", "abc"] {
            let e = root_command()
                .try_get_matches_from(["tracer", "biolatency", bad])
                .unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn bad_listen_addresses_are_usage_errors() {
        for bad in ["nowhere", "127.0.0.1", "127.0.0.1:99999"] {
            let e = root_command()
                .try_get_matches_from(["tracer", "exporter", "--listen", bad])
                .unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }
}
