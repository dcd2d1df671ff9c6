//! Loading a tool's embedded eBPF object and attaching its programs to hooks
//! chosen by probing the running kernel, recording what was chosen and why so that
//! `-v` and `tracer doctor` can say it.

use std::fmt;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use tracer_common::counters::{Counter, NUM_COUNTERS};

use crate::core::{kernel, tracefs};

/// A place in the kernel a program can attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Classic tracepoint: stable, fields located through its format file.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// Raw tracepoint: arguments are the tracepoint's raw pointers.
    RawTracepoint { name: &'static str },
    /// A software perf event on every CPU, sampling every event.
    PerfSoftware { event: SoftwareEvent },
}

/// The software perf events tracer uses, with their perf(1) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftwareEvent {
    PageFaultsMin,
    PageFaultsMaj,
}

impl SoftwareEvent {
    fn name(self) -> &'static str {
        match self {
            SoftwareEvent::PageFaultsMin => "minor-faults",
            SoftwareEvent::PageFaultsMaj => "major-faults",
        }
    }

    fn aya(self) -> aya::programs::perf_event::SoftwareEvent {
        use aya::programs::perf_event::SoftwareEvent as Aya;
        match self {
            SoftwareEvent::PageFaultsMin => Aya::PageFaultsMin,
            SoftwareEvent::PageFaultsMaj => Aya::PageFaultsMaj,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Tracepoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            Hook::RawTracepoint { name } => write!(f, "raw tracepoint {name}"),
            Hook::PerfSoftware { event } => {
                write!(f, "software perf event {} (every CPU)", event.name())
            }
        }
    }
}

impl Hook {
    pub const fn tp(category: &'static str, name: &'static str) -> Hook {
        Hook::Tracepoint { category, name }
    }

    /// Whether the running kernel has this hook; Err says why not.
    pub fn probe(&self) -> Result<(), String> {
        match self {
            Hook::Tracepoint { category, name } => match tracefs::event_dir(category, name) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("not in this kernel".into()),
                Err(e) => Err(format!("{e:#}")),
            },
            Hook::RawTracepoint { name } => {
                // Every classic tracepoint is also a raw one; look it up by name.
                let found = tracefs::ensure()
                    .ok()
                    .and_then(|t| std::fs::read_dir(t.path.join("events")).ok())
                    .is_some_and(|cats| {
                        cats.flatten()
                            .any(|c| c.path().join(name).join("format").exists())
                    });
                if found {
                    Ok(())
                } else {
                    Err("not in this kernel".into())
                }
            }
            Hook::PerfSoftware { .. } => {
                if std::path::Path::new("/sys/bus/event_source/devices/software").exists() {
                    Ok(())
                } else {
                    Err("this kernel has no software perf events".into())
                }
            }
        }
    }
}

/// One role of a tool (e.g. "issue") and the hooks that can fill it, best first.
#[derive(Clone, Copy, Debug)]
pub struct HookChain {
    pub role: &'static str,
    pub program: &'static str,
    pub candidates: &'static [Hook],
}

/// The outcome of probing a chain.
#[derive(Clone, Debug)]
pub struct Choice {
    pub role: &'static str,
    pub program: &'static str,
    pub hook: Hook,
    /// Why better candidates were passed over.
    pub skipped: Vec<(Hook, String)>,
}

impl Choice {
    pub fn explain(&self) -> String {
        let mut s = format!("{:<9} {} -> {}", self.role, self.hook, self.program);
        if self.skipped.is_empty() {
            s.push_str(" (preferred)");
        } else {
            let why: Vec<String> = self
                .skipped
                .iter()
                .map(|(h, r)| format!("{h}: {r}"))
                .collect();
            s.push_str(&format!(" (fallback; {})", why.join("; ")));
        }
        s
    }
}

impl HookChain {
    /// Picks the first candidate the running kernel has. Hooks named in
    /// TRACER_SKIP_HOOKS (comma-separated, e.g. `block:block_io_start`) are
    /// passed over, so tests can exercise fallbacks on kernels that have the
    /// preferred hook.
    pub fn choose(&self) -> Result<Choice> {
        let skip = std::env::var("TRACER_SKIP_HOOKS").unwrap_or_default();
        let mut skipped = Vec::new();
        for hook in self.candidates {
            let name = match hook {
                Hook::Tracepoint { category, name } => format!("{category}:{name}"),
                Hook::RawTracepoint { name } => name.to_string(),
                Hook::PerfSoftware { event } => event.name().to_string(),
            };
            if skip.split(',').any(|s| s.trim() == name) {
                skipped.push((*hook, "skipped by TRACER_SKIP_HOOKS".to_string()));
                continue;
            }
            match hook.probe() {
                Ok(()) => {
                    return Ok(Choice {
                        role: self.role,
                        program: self.program,
                        hook: *hook,
                        skipped,
                    });
                }
                Err(why) => skipped.push((*hook, why)),
            }
        }
        let tried: Vec<String> = skipped.iter().map(|(h, r)| format!("{h} ({r})")).collect();
        bail!(
            "this kernel has no hook for {}: tried {}",
            self.role,
            tried.join(", ")
        )
    }
}

/// A loaded tool: its eBPF object and the hooks it attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub attached: Vec<Choice>,
    pub notes: Vec<String>,
}

/// Loads an embedded object. `configure` sets the globals (field offsets, filters).
pub fn load<'a>(elf: &'static [u8], configure: impl FnOnce(&mut EbpfLoader<'a>)) -> Result<Loaded> {
    if elf.is_empty() {
        bail!(
            "this tracer binary was built without its eBPF programs (TRACER_EBPF_STUBS=1); rebuild it normally"
        );
    }
    kernel::require_privileges()?;
    let mut notes = Vec::new();
    if let Err(e) = kernel::raise_memlock() {
        notes.push(format!("setrlimit(RLIMIT_MEMLOCK) failed ({e}); fine on kernels that charge BPF memory to the cgroup"));
    }
    let mut loader = EbpfLoader::new();
    // The programs use no CO-RE relocations: skip parsing the kernel's BTF (start-up time).
    loader.btf(None);
    configure(&mut loader);
    let ebpf = loader.load(elf).map_err(|e| {
        anyhow!(
            "loading the eBPF object failed: {}",
            first_line(&e.to_string())
        )
    })?;
    Ok(Loaded {
        ebpf,
        attached: Vec::new(),
        notes,
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn program_error(program: &str, hook: &Hook, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if std::env::var_os("TRACER_VERIFIER_LOG").is_some() {
                eprintln!("{verifier_log}");
            }
            anyhow!(
                "the kernel refused program {program} for {hook}: {io_error} (set TRACER_VERIFIER_LOG=1 for the verifier log)"
            )
        }
        other => anyhow!(
            "attaching {program} to {hook} failed: {}",
            first_line(&format!("{other:#}"))
        ),
    }
}

impl Loaded {
    /// Loads (once) and attaches the program of a chosen hook.
    pub fn attach(&mut self, choice: &Choice) -> Result<()> {
        let (program, hook) = (choice.program, choice.hook);
        let prog = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} is missing from the eBPF object"))?;
        match hook {
            Hook::Tracepoint { category, name } => {
                let tp: &mut TracePoint = prog.try_into()?;
                if tp.fd().is_err() {
                    tp.load().map_err(|e| program_error(program, &hook, e))?;
                }
                tp.attach(category, name)
                    .map_err(|e| program_error(program, &hook, e))?;
            }
            Hook::RawTracepoint { name } => {
                let tp: &mut RawTracePoint = prog.try_into()?;
                if tp.fd().is_err() {
                    tp.load().map_err(|e| program_error(program, &hook, e))?;
                }
                tp.attach(name)
                    .map_err(|e| program_error(program, &hook, e))?;
            }
            Hook::PerfSoftware { event } => {
                use aya::programs::perf_event::{
                    PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy,
                };
                let pe: &mut PerfEvent = prog.try_into()?;
                if pe.fd().is_err() {
                    pe.load().map_err(|e| program_error(program, &hook, e))?;
                }
                let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
                for cpu in cpus {
                    pe.attach(
                        PerfEventConfig::Software(event.aya()),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(1),
                        false,
                    )
                    .map_err(|e| program_error(program, &hook, e))?;
                }
            }
        }
        self.attached.push(choice.clone());
        Ok(())
    }

    /// Probes a chain and attaches its best hook.
    pub fn attach_chain(&mut self, chain: &HookChain) -> Result<()> {
        let choice = chain.choose()?;
        self.attach(&choice)
    }

    /// The event tools' ring buffer, `EVENTS`, for `run::stream`.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sums the per-CPU `COUNTERS` array.
    pub fn counters(&self) -> Result<[u64; NUM_COUNTERS as usize]> {
        let map = self.ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0u64; NUM_COUNTERS as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = array.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters().map(|all| all[c as usize]).unwrap_or(0)
    }
}

impl Loaded {
    /// `-v`: which hooks were attached and why, and any start-up notes.
    pub fn report_hooks(&self, tool: &str, verbose: bool) {
        if !verbose {
            return;
        }
        if let Ok(t) = tracefs::ensure()
            && t.mounted_now
        {
            eprintln!(
                "{tool}: mounted tracefs at {} (it was not mounted)",
                t.path.display()
            );
        }
        for choice in &self.attached {
            eprintln!("{tool}: hook {}", choice.explain());
        }
        for note in &self.notes {
            eprintln!("{tool}: note: {note}");
        }
    }

    /// At exit: lost records are always reported; with -v every counter is.
    pub fn report_counters(&self, tool: &str, verbose: bool, extra: &[(&str, u64)]) {
        let Ok(counters) = self.counters() else {
            return;
        };
        let lost = counters[Counter::Lost as usize];
        if lost > 0 {
            eprintln!("{tool}: WARNING: {lost} records lost (ring buffer full)");
        }
        if verbose {
            let mut parts: Vec<String> = Counter::ALL
                .iter()
                .map(|c| format!("{} {}", c.name(), counters[*c as usize]))
                .collect();
            parts.extend(extra.iter().map(|(k, v)| format!("{k} {v}")));
            eprintln!("{tool}: counters: {}", parts.join(", "));
        }
    }
}
