//! `tracer record`: keep a window of events, write it around each trigger.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Command, parser::ValueSource};

use super::{Subcommand, one_line};
use crate::cli;
use crate::kernel::{self, btf, disks::Disks};
use crate::run;
use crate::sink::capture::{
    self, Filter, FlightRecorder, Stream,
    trigger::{Subsystem, Trigger},
};
use crate::source::Source;
use crate::tools::TOOLS;

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "record",
    command,
    run,
    names_usage_errors: true,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
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
        .args(window_args())
        .arg(
            Arg::new("dir")
                .short('o')
                .long("output")
                .value_name("DIR")
                .default_value(".")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where capture files go"),
        )
        .args(filter_args())
}

/// How much a capture keeps, and how often captures are made.
fn window_args() -> [Arg; 6] {
    [
        duration_arg("before", "10s", "How much of the past a capture keeps"),
        duration_arg("after", "2s", "How long a capture goes on after its (last) trigger"),
        duration_arg("holdoff", "10s", "After a capture, how long triggers are ignored"),
        duration_arg("fault-floor", "100us", "Faults faster than this are not kept (major faults always are)"),
        Arg::new("max-mem")
            .long("max-mem")
            .value_name("SIZE")
            .default_value("64M")
            .value_parser(cli::parse_size)
            .allow_hyphen_values(true)
            .help("Memory for the window (1K to 1024G, e.g. 64M); the oldest records are dropped first, counted"),
        Arg::new("max-captures")
            .long("max-captures")
            .value_name("N")
            .value_parser(|s: &str| cli::parse_positive(s, u64::MAX))
            .allow_negative_numbers(true)
            .help("Stop after N captures"),
    ]
}

/// Whose events are recorded.
fn filter_args() -> [Arg; 3] {
    [
        Arg::new("pid")
            .short('p')
            .long("pid")
            .value_name("PID")
            .value_parser(clap::value_parser!(u32))
            .help("Only this process's block I/O, faults, connects (and VM, if it is one)"),
        Arg::new("cgroup")
            .short('c')
            .long("cgroup")
            .value_name("CGROUP_PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Only tasks in this cgroup v2 (and below)"),
        Arg::new("disk")
            .short('d')
            .long("disk")
            .value_name("DISK")
            .help("Only this disk's I/O"),
    ]
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

fn run(m: &ArgMatches) -> Result<()> {
    let families = &m.get_one::<Sources>("sources").expect("has a default").0;
    let explicit = m.value_source("sources") == Some(ValueSource::CommandLine);
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
    let filter = filter(m)?;
    kernel::require_privileges()?;
    let Started { sources, streams } = start(families, explicit, &filter)?;
    let recorder = FlightRecorder::new(
        streams,
        capture::Options {
            triggers,
            before: *m.get_one::<Duration>("before").expect("has a default"),
            after: *m.get_one::<Duration>("after").expect("has a default"),
            max_mem: *m.get_one::<u64>("max-mem").expect("has a default"),
            holdoff: *m.get_one::<Duration>("holdoff").expect("has a default"),
            max_captures: m.get_one::<u64>("max-captures").copied(),
            dir,
        },
    );
    run::run(
        sources,
        vec![Box::new(recorder)],
        "events for captures",
        false,
    )
}

/// The filter the options ask for, once the process, cgroup and disk exist.
fn filter(m: &ArgMatches) -> Result<Filter> {
    let filter = Filter {
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
        Disks::scan().lookup(d)?;
    }
    Ok(filter)
}

/// What `tracer record` runs: the families' event sources and the sources of
/// their context histograms, and what each one's records are to the triggers
/// (None: a context source).
struct Started {
    sources: Vec<Box<dyn Source>>,
    streams: Vec<Option<Stream>>,
}

/// Starts the families' tools. A tool that cannot start is an error when
/// `--sources` was given (`explicit`), else said and left out.
fn start(families: &[Subsystem], explicit: bool, filter: &Filter) -> Result<Started> {
    let mut sources = Vec::new();
    let mut streams = Vec::new();
    btf::shared(|| -> Result<()> {
        for tool in TOOLS.iter().filter(|t| families.contains(&t.family)) {
            let started = match tool.recorder {
                Some(r) => (r.make)(filter).map(|source| {
                    sources.push(source);
                    streams.push(Some(Stream {
                        family: r.family,
                        kind: r.kind,
                    }));
                }),
                None if tool.record_context => match tool.exporter {
                    Some(make) => make().map(|source| {
                        sources.push(source);
                        streams.push(None);
                    }),
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
    if streams.iter().all(Option::is_none) {
        bail!("none of the sources could start (the lines above say why)");
    }
    Ok(Started { sources, streams })
}
