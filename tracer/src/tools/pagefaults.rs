//! pagefaults: page faults per process every interval (top-like), counted in the
//! kernel: minor/major and user/kernel mode.

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::pagefaults::{ProcCache, ProcFaults};

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs, TaskArgs},
    ebpf,
    fault::{self, END_MAJOR, END_MINOR},
    kernel,
    output::{self, cstr},
    run,
    tally::{Deltas, Tally},
};

pub const TOOL: Tool = Tool {
    name: "pagefaults",
    aliases: &[],
    about: "Page faults per process every interval: minor/major, user/kernel mode",
    command: Args::command,
    run,
    hooks: &[END_MINOR, END_MAJOR],
    optional_hooks: &[],
};

/// Page faults per process, top-like.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Don't clear the screen between intervals
    #[arg(short = 'C', long = "noclear")]
    no_clear: bool,
    /// Rows to print
    #[arg(short = 'r', long = "rows", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

impl Tally for ProcFaults {
    fn add(&mut self, o: &Self) {
        self.minor += o.minor;
        self.major += o.major;
        self.user += o.user;
        self.kernel += o.kernel;
        if self.comm[0] == 0 {
            self.comm = o.comm;
        }
    }
    fn minus(&self, e: &Self) -> Self {
        ProcFaults {
            // Saturating: a read racing with a cache flush can see a total dip
            // once; the next read makes up for it.
            minor: self.minor.saturating_sub(e.minor),
            major: self.major.saturating_sub(e.major),
            user: self.user.saturating_sub(e.user),
            kernel: self.kernel.saturating_sub(e.kernel),
            comm: self.comm,
        }
    }
}

/// This interval's counts per process: PROCS plus what the per-CPU caches hold
/// (the map is read first, so a flush in between is missed once, never doubled).
fn read(
    ebpf: &mut aya::Ebpf,
    deltas: &mut Deltas<u32, ProcFaults>,
) -> Result<Vec<(u32, ProcFaults)>> {
    use std::collections::{HashMap, HashSet};

    use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
    let mut totals: HashMap<u32, ProcFaults> = HashMap::new();
    {
        let procs: PerCpuHashMap<&MapData, u32, ProcFaults> =
            PerCpuHashMap::try_from(ebpf.map("PROCS").context("PROCS map missing")?)?;
        for entry in procs.iter() {
            let (tgid, per_cpu) = entry?;
            let t = totals.entry(tgid).or_default();
            per_cpu.iter().for_each(|v| t.add(v));
        }
    }
    let mut cached = HashSet::new();
    {
        let cache: PerCpuArray<&MapData, ProcCache> =
            PerCpuArray::try_from(ebpf.map("CACHE").context("CACHE map missing")?)?;
        for c in cache.get(&0, 0)?.iter().filter(|c| c.tgid != 0) {
            totals.entry(c.tgid).or_default().add(&c.counts);
            cached.insert(c.tgid);
        }
    }
    let (changed, idle) =
        deltas.update_keeping(totals.into_iter().collect(), |tgid| cached.contains(tgid));
    let mut procs: PerCpuHashMap<&mut MapData, u32, ProcFaults> =
        PerCpuHashMap::try_from(ebpf.map_mut("PROCS").context("PROCS map missing")?)?;
    for tgid in idle {
        let _ = procs.remove(&tgid);
    }
    Ok(changed)
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let task = a.task.resolve()?;
    kernel::require_privileges()?;
    let config = fault::config(task, false)?;
    let mut loaded = ebpf::load(crate::ebpf_object!("pagefaults"), |l| {
        l.override_global("CONFIG", &config, true);
    })?;
    for chain in TOOL.hooks {
        loaded.attach_chain(chain)?;
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let mut schedule = a.interval.schedule();
    schedule
        .interval
        .get_or_insert(std::time::Duration::from_secs(1));
    let mut deltas = Deltas::<u32, ProcFaults>::default();
    let clear = !a.no_clear && !a.out.json;
    run::periodic(schedule, run::Start::new("page faults"), |last| {
        let mut rows = read(&mut loaded.ebpf, &mut deltas)?;
        rows.sort_by_key(|(pid, v)| (std::cmp::Reverse(v.minor + v.major), *pid));
        rows.truncate(a.rows as usize);
        // The name now (after an exec) beats the one seen at the first fault.
        let name = |pid: u32, v: &ProcFaults| {
            let now = kernel::process_comm(pid);
            if now.is_empty() { cstr(&v.comm) } else { now }
        };
        if a.out.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|(pid, v)| {
                    json!({"pid": pid, "comm": name(*pid, v), "minor": v.minor, "major": v.major,
                           "user": v.user, "kernel": v.kernel, "total": v.minor + v.major})
                })
                .collect();
            output::json_line(
                &json!({"tool": "pagefaults", "ts": output::unix_time(), "rows": rows}),
            );
        } else {
            if clear {
                output::clear_screen();
            }
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            println!("{} loadavg: {}\n", output::local_time(), load.trim());
            println!(
                "{:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "PID", "COMM", "MINOR", "MAJOR", "USER", "KERNEL", "TOTAL"
            );
            for (pid, v) in &rows {
                println!(
                    "{pid:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name(*pid, v),
                    v.minor,
                    v.major,
                    v.user,
                    v.kernel,
                    v.minor + v.major
                );
            }
            println!();
        }
        if last {
            loaded.report_counters(TOOL.name, a.out.verbose, &[]);
        }
        Ok(())
    })
}
