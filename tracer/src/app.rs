//! The command line above everything else: `tracer <tool> ...` (or a symlink
//! named after the tool), `tracer list`, `tracer doctor`, `tracer exporter`.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use clap::{Arg, ArgAction, Command};
use serde_json::json;

use crate::bpf::{Choice, HookUse};
use crate::cli;
use crate::kernel::{self, btf, tracefs};
use crate::sink::{
    capture::{
        self,
        trigger::{Subsystem, Trigger},
    },
    prometheus::{self, Absent},
};
use crate::tools::{self, TOOLS, Tool};
use crate::view::{plot, report};

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
                ),
        );
    cmd = cmd
        .subcommand(
            Command::new("record")
                .about("Keep a window of block, fault, TCP and KVM events; write it around each trigger")
                .arg(
                    Arg::new("sources")
                        .long("sources")
                        .value_name("LIST")
                        .default_value("block,faults,tcp,kvm")
                        .value_parser(parse_sources)
                        .help("Which to record: block, faults, tcp, kvm (all those this kernel can run when left as is)"),
                )
                .arg(
                    Arg::new("trigger")
                        .long("trigger")
                        .value_name("EXPR")
                        .action(ArgAction::Append)
                        .value_parser(|s: &str| Trigger::parse(s).map_err(|e| e.to_string()))
                        .help("block.lat>50ms, fault.lat>10ms, kvm.lat>5ms, tcp.connlat>1s, tcp.retrans, tcp.drop, block.p99>3x; SIGUSR2 always triggers"),
                )
                .arg(duration_arg("before", "10s", "How much of the past a capture keeps"))
                .arg(duration_arg("after", "2s", "How long a capture goes on after its (last) trigger"))
                .arg(duration_arg("holdoff", "10s", "After a capture, how long triggers are ignored"))
                .arg(duration_arg("fault-floor", "100us", "Faults faster than this are not kept (major faults always are)"))
                .arg(
                    Arg::new("max-mem")
                        .long("max-mem")
                        .value_name("SIZE")
                        .default_value("64M")
                        .value_parser(cli::parse_size)
                        .allow_hyphen_values(true)
                        .help("Memory for the window (1K to 1024G, e.g. 64M); the oldest records are dropped first, counted"),
                )
                .arg(
                    Arg::new("max-captures")
                        .long("max-captures")
                        .value_name("N")
                        .value_parser(|s: &str| cli::parse_positive(s, u64::MAX))
                        .allow_negative_numbers(true)
                        .help("Stop after N captures"),
                )
                .arg(
                    Arg::new("dir")
                        .short('o')
                        .long("output")
                        .value_name("DIR")
                        .default_value(".")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Where capture files go"),
                )
                .arg(
                    Arg::new("pid")
                        .short('p')
                        .long("pid")
                        .value_name("PID")
                        .value_parser(clap::value_parser!(u32))
                        .help("Only this process's block I/O, faults, connects (and VM, if it is one)"),
                )
                .arg(
                    Arg::new("cgroup")
                        .short('c')
                        .long("cgroup")
                        .value_name("CGROUP_PATH")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Only tasks in this cgroup v2 (and below)"),
                )
                .arg(
                    Arg::new("disk")
                        .short('d')
                        .long("disk")
                        .value_name("DISK")
                        .help("Only this disk's I/O"),
                ),
        )
        .subcommand(
            Command::new("report")
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
                ),
        )
        .subcommand(
            Command::new("plot")
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

fn duration_arg(name: &'static str, default: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("DURATION")
        .default_value(default)
        .value_parser(cli::parse_duration)
        .allow_hyphen_values(true)
        .help(help)
}

/// `tracer record --sources`: the families to record.
#[derive(Clone, Debug)]
struct Sources(Vec<Subsystem>);

fn parse_sources(s: &str) -> Result<Sources, String> {
    let mut families = Vec::new();
    for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match Subsystem::parse(w) {
            Some(f) if !families.contains(&f) => families.push(f),
            Some(_) => {}
            None => return Err(format!("unknown source '{w}' (block, faults, tcp, kvm)")),
        }
    }
    if families.is_empty() {
        return Err("no source named (block, faults, tcp, kvm)".into());
    }
    Ok(Sources(families))
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
    // Die quietly on a closed pipe (`tracer list | head`), like the C tools. A
    // tool's stdout has a thread of its own that blocks SIGPIPE: there a closed
    // pipe ends the run cleanly, with its counters (output::StdoutWriter).
    // SAFETY: setting a signal disposition at start-up, before any threads.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(|info| {
        eprintln!("tracer: internal error: {info}");
    }));

    let args = argv_with_tool(std::env::args_os().collect());
    let prefix = match args.get(1).map(|a| a.to_string_lossy().into_owned()) {
        Some(name)
            if tools::find(&name).is_some()
                || ["exporter", "record", "report", "plot"].contains(&name.as_str()) =>
        {
            name
        }
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
            sub.get_one::<u64>("top").map(|&n| n as usize),
        ),
        "record" => run_record(sub),
        "plot" => plot::plot(
            sub.get_one::<PathBuf>("input").expect("required"),
            sub.get_one::<PathBuf>("output").expect("required"),
            &plot::Options {
                kind: *sub.get_one::<plot::Kind>("kind").expect("required"),
                interval: sub.get_one::<f64>("interval").copied(),
                log: sub.get_flag("log"),
            },
        ),
        "report" => run_report(
            sub.get_one::<PathBuf>("file").expect("required"),
            sub.get_flag("json"),
            sub.get_one::<PathBuf>("perfetto"),
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
fn run_exporter(listen: SocketAddr, which: &str, top: Option<usize>) -> Result<()> {
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
    let listener = prometheus::bind(listen)?;
    let mut sources = Vec::new();
    let mut absent = Vec::new();
    btf::shared(|| -> Result<()> {
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
        Ok(())
    })?;
    if sources.is_empty() {
        bail!("none of the tools could start (the lines above say why)");
    }
    prometheus::serve(sources, absent, listener, top)
}

fn run_record(m: &clap::ArgMatches) -> Result<()> {
    let families = &m.get_one::<Sources>("sources").expect("has a default").0;
    let explicit = m.value_source("sources") == Some(clap::parser::ValueSource::CommandLine);
    let triggers: Vec<Trigger> = m
        .get_many::<Trigger>("trigger")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for t in &triggers {
        if !families.contains(&t.family()) {
            bail!(
                "trigger {t} needs --sources to include {}",
                t.family().name()
            );
        }
    }
    let dir = m.get_one::<PathBuf>("dir").expect("has a default").clone();
    capture::check_dir(&dir)?;
    let filter = capture::Filter {
        pid: m.get_one::<u32>("pid").copied(),
        cgroup: m.get_one::<PathBuf>("cgroup").cloned(),
        disk: m.get_one::<String>("disk").cloned(),
        fault_floor: *m.get_one::<Duration>("fault-floor").expect("has a default"),
    };
    if let Some(pid) = filter.pid {
        kernel::check_pid(pid)?;
    }
    if let Some(cg) = &filter.cgroup {
        kernel::cgroup(cg)?;
    }
    if let Some(d) = &filter.disk {
        crate::kernel::disks::Disks::scan().lookup(d)?;
    }
    kernel::require_privileges()?;
    let mut streams = Vec::new();
    let mut contexts = Vec::new();
    btf::shared(|| -> Result<()> {
        for tool in TOOLS.iter().filter(|t| families.contains(&t.family)) {
            let started = match tool.recorder {
                Some(r) => (r.make)(&filter).map(|source| {
                    streams.push(capture::Stream {
                        source,
                        family: r.family,
                        kind: r.kind,
                    })
                }),
                None if tool.record_context => match tool.exporter {
                    Some(make) => make().map(|s| contexts.push(s)),
                    None => Ok(()),
                },
                None => Ok(()),
            };
            if let Err(e) = started {
                if explicit {
                    return Err(e.context(format!("starting {}", tool.name)));
                }
                eprintln!("record: not recording {}: {}", tool.name, one_line(&e));
            }
        }
        Ok(())
    })?;
    if streams.is_empty() {
        bail!("none of the sources could start (the lines above say why)");
    }
    capture::run(
        streams,
        contexts,
        capture::Options {
            triggers,
            before: *m.get_one::<Duration>("before").expect("has a default"),
            after: *m.get_one::<Duration>("after").expect("has a default"),
            max_mem: *m.get_one::<u64>("max-mem").expect("has a default"),
            holdoff: *m.get_one::<Duration>("holdoff").expect("has a default"),
            max_captures: m.get_one::<u64>("max-captures").copied(),
            dir,
        },
    )
}

fn run_report(file: &Path, as_json: bool, perfetto: Option<&PathBuf>) -> Result<()> {
    report::run(file, as_json, perfetto.map(PathBuf::as_path))
}

/// What probing a chain of hooks found.
enum Probed {
    Hook(Choice),
    /// The kernel has none of them: why.
    Absent(String),
    /// No telling: tracefs cannot be used (which is said once, on its own).
    Unknown,
}

fn probe(u: &HookUse) -> Probed {
    match u.chain.choose_with(u.fits) {
        Ok(choice) => Probed::Hook(choice),
        Err(e) if e.is::<tracefs::Unavailable>() => Probed::Unknown,
        Err(e) => Probed::Absent(format!("{e:#}")),
    }
}

/// Whether the running kernel has a hook for every chain the tool always
/// needs; None when that cannot be told.
fn runnable(tool: &Tool) -> Option<bool> {
    let mut runs = Some(true);
    for u in (tool.hooks)().iter().filter(|u| u.when.is_empty()) {
        match probe(u) {
            Probed::Hook(_) => {}
            Probed::Absent(_) => return Some(false),
            Probed::Unknown => runs = None,
        }
    }
    runs
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

fn doctor(as_json: bool) -> Result<()> {
    let privileged = kernel::has_bpf_privileges();
    let tracefs = tracefs::ensure();
    let mut tools = Vec::new();
    for tool in TOOLS {
        let mut hooks = Vec::new();
        for u in (tool.hooks)() {
            let (hook, detail) = match probe(&u) {
                Probed::Hook(choice) => (Some(choice.hook.to_string()), choice.explain()),
                Probed::Absent(why) => (None, why),
                Probed::Unknown => (
                    None,
                    format!("{:<9} unknown: cannot read tracefs", u.chain.role),
                ),
            };
            hooks.push(
                json!({"role": u.chain.role, "when": u.when, "hook": hook, "detail": detail}),
            );
        }
        tools.push(json!({"tool": tool.name, "runs": runnable(tool), "hooks": hooks}));
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
        let runs = match tool["runs"].as_bool() {
            Some(true) => "runs",
            Some(false) => "cannot run",
            None => "unknown: cannot read tracefs",
        };
        println!("\n{} ({runs})", tool["tool"].as_str().unwrap_or(""));
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
