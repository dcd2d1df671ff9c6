//! The command line above core and the tools: `tracer <tool> ...` (or a symlink
//! named after the tool), `tracer list`, `tracer doctor`, `tracer exporter`.

use std::{ffi::OsString, net::SocketAddr, path::Path};

use anyhow::{Result, bail};
use clap::{Arg, ArgAction, Command};
use serde_json::json;

use crate::{
    core::{
        exporter::{self, Absent},
        kernel, tracefs,
    },
    tools::{self, TOOLS, Tool},
};

fn root_command() -> Command {
    let mut cmd = Command::new("tracer")
        .about("eBPF tracing tools: block I/O, TCP, KVM exits, page faults")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("list")
                .about("List the tools and whether each can run on this kernel")
                .arg(
                    Arg::new("names")
                        .long("names")
                        .action(ArgAction::SetTrue)
                        .help("Print only tool names and aliases (for installing symlinks)"),
                ),
        )
        .subcommand(
            Command::new("doctor")
                .about("Check privileges, BTF and tracefs, and which hooks each tool would use")
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("Print JSON"),
                ),
        )
        .subcommand(
            Command::new("exporter")
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
                    Arg::new("tools")
                        .long("tools")
                        .value_name("TOOL,...|all")
                        .default_value("all")
                        .help(format!(
                            "Tools to run (all: those this kernel can run): {}",
                            exporter_tools().join(", ")
                        )),
                ),
        );
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

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    // Die quietly on a closed pipe (`tracer biosnoop | head`), like the C tools.
    // SAFETY: setting a signal disposition at start-up, before any threads.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tracer: internal error: {info}");
    }));

    let args = argv_with_tool(std::env::args_os().collect());
    let prefix = match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
        Some(name) if tools::find(&name).is_some() || name == "exporter" => name,
        _ => "tracer".to_string(),
    };
    let matches = match root_command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return usage_error(e, &prefix),
    };
    let (name, sub) = matches.subcommand().expect("subcommand is required");
    let result = match name {
        "list" => list(sub.get_flag("names")),
        "doctor" => doctor(sub.get_flag("json")),
        "exporter" => run_exporter(
            *sub.get_one::<SocketAddr>("listen").expect("has a default"),
            sub.get_one::<String>("tools").expect("has a default"),
        ),
        _ => match tools::find(name) {
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
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("{prefix}: {line} (see --help)");
            2
        }
    }
}

fn exporter_tools() -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|t| t.exporter.is_some())
        .map(|t| t.name)
        .collect()
}

/// `tracer exporter`: every chosen tool's exporter source, then serve.
fn run_exporter(listen: SocketAddr, which: &str) -> Result<()> {
    let all = which.trim() == "all";
    let chosen: Vec<&'static Tool> = if all {
        TOOLS
            .iter()
            .copied()
            .filter(|t| t.exporter.is_some())
            .collect()
    } else {
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
        chosen
    };
    kernel::require_privileges()?;
    let mut sources = Vec::new();
    let mut absent = Vec::new();
    for tool in chosen {
        let make = tool.exporter.expect("filtered above");
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
    if sources.is_empty() {
        bail!("none of the tools can run on this kernel");
    }
    exporter::serve(sources, absent, listen)
}

/// Whether the running kernel has a hook for every chain the tool always needs.
fn runnable(tool: &Tool) -> Result<(), String> {
    for u in (tool.hooks)().iter().filter(|u| u.when.is_empty()) {
        u.chain.choose().map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

fn list(names_only: bool) -> Result<()> {
    if names_only {
        for tool in TOOLS {
            println!("{}", tool.name);
            for alias in tool.aliases {
                println!("{alias}");
            }
        }
        return Ok(());
    }
    let probe = tracefs::ensure().map(|_| ()).map_err(|e| format!("{e:#}"));
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
        let runs = match &probe {
            Err(_) => "?",
            Ok(()) if runnable(tool).is_ok() => "yes",
            Ok(()) => "no",
        };
        println!("{name:<width$} {runs:<5} {}", tool.about);
    }
    if let Err(e) = probe {
        eprintln!("list: cannot probe this kernel's hooks: {e}");
    }
    Ok(())
}

fn doctor(as_json: bool) -> Result<()> {
    let privileged = kernel::has_bpf_privileges();
    let tracefs = tracefs::ensure();
    let mut tools = Vec::new();
    for tool in TOOLS {
        let mut hooks = Vec::new();
        for u in (tool.hooks)() {
            let (hook, detail) = match u.chain.choose() {
                Ok(choice) => (Some(choice.hook.to_string()), choice.explain()),
                Err(e) => (None, format!("{e:#}")),
            };
            hooks.push(
                json!({"role": u.chain.role, "when": u.when, "hook": hook, "detail": detail}),
            );
        }
        tools.push(json!({"tool": tool.name, "runs": runnable(tool).is_ok(), "hooks": hooks}));
    }
    let report = json!({
        "kernel": kernel::release(),
        "privileges": privileged,
        "btf": kernel::has_btf(),
        "kprobes": kernel::has_kprobes(),
        "tracefs": match &tracefs {
            Ok(t) => json!({"path": t.path, "mounted_now": t.mounted_now}),
            Err(e) => json!({"error": format!("{e:#}")}),
        },
        "tools": tools,
    });
    if as_json {
        println!("{report}");
        return Ok(());
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("kernel      {}", kernel::release());
    println!(
        "privileges  {}",
        if privileged {
            "yes (CAP_BPF + CAP_PERFMON)"
        } else {
            "NO: run as root (CAP_BPF and CAP_PERFMON)"
        }
    );
    println!(
        "BTF         {} ({})",
        yes_no(kernel::has_btf()),
        kernel::BTF_PATH
    );
    println!("kprobes     {}", yes_no(kernel::has_kprobes()));
    match &tracefs {
        Ok(t) if t.mounted_now => println!(
            "tracefs     {} (was not mounted: mounted it now)",
            t.path.display()
        ),
        Ok(t) => println!("tracefs     {}", t.path.display()),
        Err(e) => println!("tracefs     NO: {e:#}"),
    }
    for tool in report["tools"].as_array().into_iter().flatten() {
        println!(
            "\n{} ({})",
            tool["tool"].as_str().unwrap_or(""),
            if tool["runs"] == true {
                "runs"
            } else {
                "cannot run"
            }
        );
        for hook in tool["hooks"].as_array().into_iter().flatten() {
            let when = hook["when"].as_str().unwrap_or("");
            let when = if when.is_empty() {
                String::new()
            } else {
                format!(" [with {when}]")
            };
            println!("  {}{when}", hook["detail"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_name_selects_the_tool() {
        let args: Vec<OsString> = ["/usr/local/bin/biolatency", "-D", "1"]
            .iter()
            .map(OsString::from)
            .collect();
        let got: Vec<String> = argv_with_tool(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, ["tracer", "biolatency", "-D", "1"]);
        let args: Vec<OsString> = ["tracer", "list"].iter().map(OsString::from).collect();
        assert_eq!(argv_with_tool(args.clone()), args);
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
