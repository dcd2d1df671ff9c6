//! pagefaults: page faults per process every interval (top-like), counted in the
//! kernel: minor/major and user/kernel mode.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{ArgMatches, CommandFactory as _};
use serde_json::json;
use tracer_common::pagefaults::{ProcCache, ProcFaults};

use super::{END_MAJOR, END_MINOR};
use crate::bpf::{
    self, HookUse, Loaded, Object,
    tally::{Deltas, Tally},
};
use crate::cli::{self, IntervalArgs, OutputArgs, TaskArgs};
use crate::kernel;
use crate::output::{self, cstr};
use crate::run;
use crate::sink::capture::trigger::Subsystem;
use crate::source::{
    Fields, Get as _, Kind, Layout, Sample, Source, Table,
    metrics::{Family, Observations},
};
use crate::tools::Tool;

pub const TOOL: Tool = Tool {
    name: "pagefaults",
    aliases: &[],
    about: "Page faults per process every interval: minor/major, user/kernel mode",
    schema: None,
    command: Args::command,
    run,
    hooks: || vec![HookUse::always(END_MINOR), HookUse::always(END_MAJOR)],
    exporter: Some(exporter),
    family: Subsystem::Fault,
    record_context: false,
    recorder: None,
    object: Object {
        elf: crate::ebpf_object!("pagefaults"),
        maps: &["PROCS", "CACHE"],
        #[cfg(test)]
        globals: &[],
    },
};

/// Rows shown unless -r says otherwise.
const ROWS: u64 = 20;

/// Page faults per process, top-like.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Don't clear the screen between intervals
    #[arg(short = 'C', long = "noclear")]
    no_clear: bool,
    /// Rows to print
    #[arg(short = 'r', long = "rows", default_value_t = ROWS, value_parser = |s: &str| cli::parse_positive(s, u64::MAX))]
    rows: u64,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

/// The bare command line (`Args::default()` builds the exporter's source).
impl Default for Args {
    fn default() -> Args {
        Args {
            no_clear: false,
            rows: ROWS,
            task: TaskArgs::default(),
            out: OutputArgs::default(),
            interval: IntervalArgs::default(),
        }
    }
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

struct PageFaults {
    loaded: Loaded,
    deltas: Deltas<u32, ProcFaults>,
    /// Rows kept per interval (None: all, for the exporter).
    rows: Option<usize>,
}

impl PageFaults {
    fn new(a: &Args, rows: Option<usize>) -> Result<PageFaults> {
        let task = a.task.resolve()?;
        let config = super::config(task, false)?;
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &config, true);
        })?;
        for u in (TOOL.hooks)() {
            loaded.attach_chain(&u.chain)?;
        }
        Ok(PageFaults {
            loaded,
            deltas: Deltas::default(),
            rows,
        })
    }

    /// This interval's counts per process: PROCS plus what the per-CPU caches
    /// hold (the map is read first, so a flush in between is missed once, never
    /// doubled).
    fn read(&mut self) -> Result<Vec<(u32, ProcFaults)>> {
        use std::collections::{HashMap, HashSet};

        use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
        let ebpf = &mut self.loaded.ebpf;
        let mut totals: HashMap<u32, ProcFaults> = HashMap::new();
        for (tgid, per_cpu) in crate::bpf::mapdump::entries::<u32, ProcFaults>(
            ebpf.map("PROCS").context("PROCS map missing")?,
        )? {
            let t = totals.entry(tgid).or_default();
            per_cpu.iter().for_each(|v| t.add(v));
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
        let (changed, idle) = self
            .deltas
            .update_keeping(totals.into_iter().collect(), |tgid| cached.contains(tgid));
        let mut procs: PerCpuHashMap<&mut MapData, u32, ProcFaults> =
            PerCpuHashMap::try_from(ebpf.map_mut("PROCS").context("PROCS map missing")?)?;
        for tgid in idle {
            let _ = procs.remove(&tgid);
        }
        Ok(changed)
    }
}

impl Source for PageFaults {
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
        let mut rows = self.read()?;
        rows.sort_by_key(|(pid, v)| (std::cmp::Reverse(v.minor + v.major), *pid));
        if let Some(n) = self.rows {
            rows.truncate(n);
        }
        let rows: Vec<Fields> = rows
            .iter()
            .map(|(pid, v)| {
                // The name now (after an exec) beats the one seen at the first fault.
                let now = kernel::process_comm(*pid);
                let comm = if now.is_empty() { cstr(&v.comm) } else { now };
                vec![
                    ("pid", json!(pid)),
                    ("comm", json!(comm)),
                    ("minor", json!(v.minor)),
                    ("major", json!(v.major)),
                    ("user", json!(v.user)),
                    ("kernel", json!(v.kernel)),
                    ("total", json!(v.minor + v.major)),
                ]
            })
            .collect();
        Ok(Sample {
            tables: vec![Table {
                name: Some("rows"),
                rows,
            }],
            ..Sample::default()
        })
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static FAULTS: Family = Family::counter(
            "tracer_page_faults",
            "Page faults handled, minor (no I/O) or major (read from storage).",
        );
        static PROCESS: Family = Family::counter(
            "tracer_process_page_faults",
            "Page faults by process name (the busiest 20 by name, the rest as other).",
        )
        .folding("comm", 20);
        for row in sample.tables.iter().flat_map(|t| &t.rows) {
            for kind in ["minor", "major"] {
                out.count(&FAULTS, vec![("type", kind.into())], row.u64(kind));
                let labels = vec![("comm", row.str("comm").to_string()), ("type", kind.into())];
                out.count(&PROCESS, labels, row.u64(kind));
            }
        }
    }
}

struct Text {
    clear: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        output::top_banner(self.clear, out);
        out.push_str(&format!(
            "{:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "PID", "COMM", "MINOR", "MAJOR", "USER", "KERNEL", "TOTAL"
        ));
        for row in s.tables.iter().flat_map(|t| &t.rows) {
            out.push_str(&format!(
                "{:<7} {:<16} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                row.u64("pid"),
                row.str("comm"),
                row.u64("minor"),
                row.u64("major"),
                row.u64("user"),
                row.u64("kernel"),
                row.u64("total")
            ));
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let source = PageFaults::new(&a, Some(a.rows as usize))?;
    let mut schedule = a.interval.schedule();
    schedule.interval.get_or_insert(Duration::from_secs(1));
    run::tool(
        Box::new(source),
        Box::new(Text { clear: !a.no_clear }),
        a.out.options("page faults", schedule),
    )
}

fn exporter() -> Result<Box<dyn Source>> {
    Ok(Box::new(PageFaults::new(&Args::default(), None)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_args_are_the_bare_command_line() {
        crate::cli::tests::assert_default_is_bare::<super::Args>();
    }
}
