//! bpf/: the user side of the eBPF programs: loading a tool's object and attaching
//! its hook chains (here), reading whole maps (mapdump.rs) and per-interval totals
//! of counter maps (tally.rs).
//!
//! Loading a tool's embedded eBPF object and attaching its programs to hooks
//! chosen by probing the running kernel, recording what was chosen and why so that
//! `-v` and `tracer doctor` can say it.

pub mod mapdump;
pub mod tally;

use std::{
    fmt, fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{BtfTracePoint, KProbe, ProgramError, RawTracePoint, TracePoint},
};
use tracer_common::counters::{Counter, NUM_COUNTERS};

use crate::kernel::{
    self,
    btf::{self, Btf},
    tracefs,
};

/// A place in the kernel a program can attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Classic tracepoint: stable, fields located through its format file.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// Raw tracepoint: its program gets the tracepoint's arguments (struct
    /// pointers, read at offsets from BTF) instead of a formatted record. The
    /// kernel skips a classic tracepoint's program while a BPF map syscall (any
    /// tracer's map reads) runs on that CPU, and before 6.7 without counting it;
    /// a raw tracepoint's program is only skipped if it would recurse into
    /// itself.
    RawTracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
    },
    /// BTF-typed tracepoint (libbpf's tp_btf): a raw tracepoint whose program
    /// the kernel verifies against the tracepoint's prototype in its BTF, so
    /// that it may load struct fields directly instead of through a helper
    /// call each (about 30 ns here).
    BtfTracepoint {
        category: &'static str,
        name: &'static str,
        program: &'static str,
    },
    /// A kprobe at the entry of a kernel function, for what no tracepoint
    /// gives on some kernels; its program reads the function's arguments.
    Kprobe {
        function: &'static str,
        program: &'static str,
    },
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
            Hook::RawTracepoint { name, .. } => write!(f, "raw tracepoint {name}"),
            Hook::BtfTracepoint { name, .. } => write!(f, "BTF tracepoint {name}"),
            Hook::Kprobe { function, .. } => write!(f, "kprobe {function}"),
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

    /// A raw tracepoint served by `program` (not the chain's classic one).
    pub const fn raw_tp(category: &'static str, name: &'static str, program: &'static str) -> Hook {
        Hook::RawTracepoint {
            category,
            name,
            program,
        }
    }

    /// A BTF-typed tracepoint served by `program`.
    pub const fn btf_tp(category: &'static str, name: &'static str, program: &'static str) -> Hook {
        Hook::BtfTracepoint {
            category,
            name,
            program,
        }
    }

    /// A kprobe at `function`'s entry, served by `program`.
    pub const fn kprobe(function: &'static str, program: &'static str) -> Hook {
        Hook::Kprobe { function, program }
    }

    /// Whether this hook's program gets the arguments (of a raw or BTF-typed
    /// tracepoint, or a kprobe's function) rather than a tracepoint's record.
    pub fn passes_arguments(&self) -> bool {
        matches!(
            self,
            Hook::RawTracepoint { .. } | Hook::BtfTracepoint { .. } | Hook::Kprobe { .. }
        )
    }

    /// Whether probing this hook looks in tracefs.
    fn needs_tracefs(&self) -> bool {
        matches!(
            self,
            Hook::Tracepoint { .. } | Hook::RawTracepoint { .. } | Hook::BtfTracepoint { .. }
        )
    }

    /// The name TRACER_SKIP_HOOKS knows this hook by.
    fn skip_name(&self) -> String {
        match self {
            Hook::Tracepoint { category, name } => format!("{category}:{name}"),
            Hook::RawTracepoint { name, .. } => format!("raw:{name}"),
            Hook::BtfTracepoint { name, .. } => format!("btf:{name}"),
            Hook::Kprobe { function, .. } => format!("kprobe:{function}"),
            Hook::PerfSoftware { event } => event.name().to_string(),
        }
    }

    /// Whether the running kernel has this hook; Err says why not.
    pub fn probe(&self) -> Result<(), String> {
        match self {
            Hook::Tracepoint { category, name } => match tracefs::event_dir(category, name) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("not in this kernel".into()),
                Err(e) => Err(format!("{e:#}")),
            },
            // Its programs read the arguments at offsets from BTF.
            Hook::RawTracepoint { category, name, .. }
            | Hook::BtfTracepoint { category, name, .. } => {
                if !kernel::has_btf() {
                    return Err("this kernel has no BTF".into());
                }
                Hook::tp(category, name).probe()
            }
            // A symbol in /proc/kallsyms is not enough (this project's
            // reference kernel lists them all and has no kprobes): the kprobe
            // PMU must exist, and BTF (which its programs read the arguments'
            // fields by) must list the function as one not inlined away.
            // Attaching is the final word.
            Hook::Kprobe { function, .. } => {
                if !kernel::has_kprobes() {
                    return Err("this kernel has no kprobes".into());
                }
                if !kernel::has_btf() {
                    return Err("this kernel has no BTF".into());
                }
                match Btf::load() {
                    Ok(btf) if btf.has_function(function) => Ok(()),
                    Ok(_) => Err("no such function in this kernel (inlined?)".into()),
                    Err(e) => Err(format!("{e:#}")),
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

/// A hook chain a tool may attach, the option that needs it ("" = always), and
/// which of its hooks the tool's programs can use on this kernel (`tracer
/// doctor` asks the same question the tool does).
#[derive(Clone, Copy, Debug)]
pub struct HookUse {
    pub chain: HookChain,
    pub when: &'static str,
    pub fits: fn(&Hook) -> Result<(), String>,
}

impl HookUse {
    pub const fn always(chain: HookChain) -> HookUse {
        HookUse::with("", chain)
    }

    pub const fn with(when: &'static str, chain: HookChain) -> HookUse {
        HookUse {
            chain,
            when,
            fits: |_| Ok(()),
        }
    }

    pub const fn fits(self, fits: fn(&Hook) -> Result<(), String>) -> HookUse {
        HookUse { fits, ..self }
    }
}

/// A `usable` for `HookChain::choose_with` and `Loaded::attach_best`: raw
/// tracepoints only when `ready` (their programs read struct fields at offsets
/// the tool found in BTF); otherwise `why` says what is missing.
pub fn raw_if(ready: bool, why: &'static str) -> impl Fn(&Hook) -> Result<(), String> + Copy {
    move |hook| match hook {
        Hook::RawTracepoint { .. } | Hook::BtfTracepoint { .. } | Hook::Kprobe { .. } if !ready => {
            Err(why.to_string())
        }
        _ => Ok(()),
    }
}

/// The outcome of probing a chain.
#[derive(Clone, Debug)]
pub struct Choice {
    pub role: &'static str,
    pub program: &'static str,
    pub hook: Hook,
    /// Why better candidates were passed over.
    pub skipped: Vec<(Hook, String)>,
    /// A BTF-typed tracepoint's `btf_trace_<name>` typedef, when the tool has
    /// looked it up already (else attaching parses the kernel's BTF for it).
    pub btf_id: Option<u32>,
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
        self.choose_with(|_| Ok(()))
    }

    /// Like `choose`, passing over the hooks `usable` says the tool cannot use
    /// on this kernel (e.g. a raw tracepoint when BTF lacks an offset it needs).
    pub fn choose_with(&self, usable: impl Fn(&Hook) -> Result<(), String>) -> Result<Choice> {
        let skip = std::env::var("TRACER_SKIP_HOOKS").unwrap_or_default();
        let mut skipped = Vec::new();
        for hook in self.candidates {
            let name = hook.skip_name();
            if skip.split(',').any(|s| s.trim() == name) {
                skipped.push((*hook, "skipped by TRACER_SKIP_HOOKS".to_string()));
                continue;
            }
            match hook.probe().and_then(|()| usable(hook)) {
                Ok(()) => {
                    let program = match hook {
                        Hook::RawTracepoint { program, .. }
                        | Hook::BtfTracepoint { program, .. }
                        | Hook::Kprobe { program, .. } => program,
                        _ => self.program,
                    };
                    return Ok(Choice {
                        role: self.role,
                        program,
                        hook: *hook,
                        skipped,
                        btf_id: None,
                    });
                }
                Err(why) => skipped.push((*hook, why)),
            }
        }
        // Tracepoints are looked up in tracefs: if it cannot be used, the
        // kernel may well have them (an unprivileged `doctor`), so say why.
        if self.candidates.iter().any(Hook::needs_tracefs) {
            tracefs::ensure()?;
        }
        let tried: Vec<String> = skipped.iter().map(|(h, r)| format!("{h} ({r})")).collect();
        bail!(
            "this kernel has no hook for {}: tried {}",
            self.role,
            tried.join(", ")
        )
    }
}

/// A tool's embedded eBPF object and the maps and globals userspace names in it
/// (checked when it is loaded, and against the ELF by a unit test, as a
/// libbpf skeleton would be at compile time).
#[derive(Clone, Copy, Debug)]
pub struct Object {
    pub elf: &'static [u8],
    pub maps: &'static [&'static str],
    /// Globals set besides CONFIG (aya refuses a missing one at load time).
    #[cfg(test)]
    pub globals: &'static [&'static str],
}

/// Opens a disabled, sample-less perf event on a classic tracepoint, kept open
/// while its program runs. On the reference machine, when a program's own perf
/// event was the one that registered the tracepoint with perf, the program
/// missed every event of the first few milliseconds of activity in ~30% of runs
/// (e.g. the first 281 of 5,000 block completions, all in ksoftirqd); with this
/// event registering it first, none in 60 runs of 5,000. Costs one fd.
fn anchor(category: &str, name: &str) -> Result<OwnedFd> {
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
    let id: u64 = fs::read_to_string(
        tracefs::ensure()?
            .path
            .join("events")
            .join(category)
            .join(name)
            .join("id"),
    )
    .with_context(|| format!("reading the id of tracepoint {category}:{name}"))?
    .trim()
    .parse()
    .with_context(|| format!("the id of tracepoint {category}:{name}"))?;
    // struct perf_event_attr, as PERF_ATTR_SIZE_VER0 (64 bytes): type
    // PERF_TYPE_TRACEPOINT (2) and size, config (the id), sample_period 1,
    // then flags with only `disabled` set.
    let attr: [u64; 8] = [2 | (64 << 32), id, 1, 0, 0, 1, 0, 0];
    // SAFETY: a valid attr of the size it declares; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "perf_event_open on tracepoint {category}:{name} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A loaded tool: its eBPF object and the hooks it attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// One plain perf event per classic tracepoint attached (see `anchor`).
    anchors: Vec<OwnedFd>,
    /// The tracepoints' links, owned here so that they detach together (Drop).
    links: Vec<aya::programs::trace_point::TracePointLink>,
    /// Raw tracepoints' links.
    raw_links: Vec<aya::programs::raw_trace_point::RawTracePointLink>,
    /// BTF-typed tracepoints' links.
    btf_links: Vec<aya::programs::tp_btf::BtfTracePointLink>,
    /// Kprobes' links (perf events before 5.15: closed like the tracepoints').
    kprobe_links: Vec<aya::programs::kprobe::KProbeLink>,
    pub attached: Vec<Choice>,
    pub notes: Vec<String>,
}

impl Drop for Loaded {
    /// Detaches at once. Closing a classic tracepoint's perf event waits for
    /// the kernel (an RCU grace period for the last one, ~75 ms here; 25-30 ms
    /// for the others), one after the other when the fds are simply dropped
    /// (kvmexits --latency: 20 of them, 0.7 s). Each is closed on a thread of
    /// its own instead, so that the waits overlap.
    fn drop(&mut self) {
        self.close_perf_events();
    }
}

impl Loaded {
    fn close_perf_events(&mut self) {
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                scope.spawn(move || drop(link));
            }
            for anchor in self.anchors.drain(..) {
                scope.spawn(move || drop(anchor));
            }
            for link in self.kprobe_links.drain(..) {
                scope.spawn(move || drop(link));
            }
        });
    }
}

/// Loads an embedded object. `configure` sets the globals (field offsets, filters).
pub fn load<'a>(object: &Object, configure: impl FnOnce(&mut EbpfLoader<'a>)) -> Result<Loaded> {
    let elf = object.elf;
    if elf.is_empty() {
        bail!(
            "this tracer binary was built without its eBPF programs (TRACER_EBPF_STUBS=1); rebuild it normally"
        );
    }
    let mut notes = Vec::new();
    if let Err(e) = kernel::raise_memlock() {
        notes.push(format!("setrlimit(RLIMIT_MEMLOCK) failed ({e}); fine on kernels that charge BPF memory to the cgroup"));
    }
    let mut loader = EbpfLoader::new();
    // The programs use no CO-RE relocations: skip parsing the kernel's BTF (start-up time).
    loader.btf(None);
    // Asked only for objects with such maps (it parses the kernel's BTF).
    loader.preallocate_hash_maps(|| !btf::has_bpf_mem_alloc());
    configure(&mut loader);
    let mut ebpf = loader.load(elf).map_err(|e| {
        anyhow!(
            "loading the eBPF object failed: {}",
            first_line(&e.to_string())
        )
    })?;
    if loader.preallocated_hash_maps() {
        notes.push(
            "hash maps preallocated: this kernel has no BPF memory allocator (before 6.1), \
             and a tracing program using one that allocates on insert makes it log a WARNING"
                .into(),
        );
    }
    if let (Some(dir), Some(map)) = (kernel::filter_cgroup(), ebpf.map_mut("TASK_CGROUP")) {
        aya::maps::CgroupArray::try_from(map)?
            .set(0, dir.as_raw_fd(), 0)
            .context("setting the cgroup filter")?;
    }
    for map in object.maps.iter().chain(&["COUNTERS"]) {
        if ebpf.map(map).is_none() {
            bail!(
                "the embedded eBPF object has no map {map}: tracer was built from mismatched sources"
            );
        }
    }
    Ok(Loaded {
        anchors: Vec::new(),
        links: Vec::new(),
        raw_links: Vec::new(),
        btf_links: Vec::new(),
        kprobe_links: Vec::new(),
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
        other => {
            // aya's errors keep the errno in their source (`perf_event_open`
            // failed: ...): say it.
            let mut why = first_line(&other.to_string());
            let mut source = std::error::Error::source(&other);
            while let Some(e) = source {
                why.push_str(": ");
                why.push_str(&first_line(&e.to_string()));
                source = e.source();
            }
            anyhow!("attaching {program} to {hook} failed: {why}")
        }
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
                self.anchors.push(anchor(category, name)?);
                let tp: &mut TracePoint = prog.try_into()?;
                if tp.fd().is_err() {
                    tp.load().map_err(|e| program_error(program, &hook, e))?;
                }
                let link = tp
                    .attach(category, name)
                    .map_err(|e| program_error(program, &hook, e))?;
                self.links.push(tp.take_link(link)?);
            }
            Hook::RawTracepoint { name, .. } => {
                let tp: &mut RawTracePoint = prog.try_into()?;
                if tp.fd().is_err() {
                    tp.load().map_err(|e| program_error(program, &hook, e))?;
                }
                let link = tp
                    .attach(name)
                    .map_err(|e| program_error(program, &hook, e))?;
                self.raw_links.push(tp.take_link(link)?);
            }
            Hook::BtfTracepoint { name, .. } => {
                let tp: &mut BtfTracePoint = prog.try_into()?;
                if tp.fd().is_err() {
                    let id = match choice.btf_id {
                        Some(id) => id,
                        None => Btf::load()?.tracepoint_typedef(name)?,
                    };
                    tp.load_with_btf_id(id)
                        .map_err(|e| program_error(program, &hook, e))?;
                }
                let link = tp.attach().map_err(|e| program_error(program, &hook, e))?;
                self.btf_links.push(tp.take_link(link)?);
            }
            Hook::Kprobe { function, .. } => {
                let kp: &mut KProbe = prog.try_into()?;
                if kp.fd().is_err() {
                    kp.load().map_err(|e| program_error(program, &hook, e))?;
                }
                let link = kp
                    .attach(function, 0)
                    .map_err(|e| program_error(program, &hook, e))?;
                self.kprobe_links.push(kp.take_link(link)?);
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

    /// Detaches every program attached so far (to attach another set instead).
    pub fn detach_all(&mut self) {
        self.raw_links.clear();
        self.btf_links.clear();
        self.close_perf_events();
        self.attached.clear();
    }

    /// Probes a chain and attaches its best hook.
    pub fn attach_chain(&mut self, chain: &HookChain) -> Result<()> {
        self.attach_best(chain, |_| Ok(()))
    }

    /// Attaches the best hook of `chain` that `usable` allows and the kernel
    /// accepts: where the kernel refuses the program at one hook (a verifier
    /// of another version), the next candidate is tried, and `-v` says why.
    pub fn attach_best(
        &mut self,
        chain: &HookChain,
        usable: impl Fn(&Hook) -> Result<(), String>,
    ) -> Result<()> {
        let mut refused: Vec<(Hook, String)> = Vec::new();
        loop {
            let choice = chain.choose_with(|h| match refused.iter().find(|(r, _)| r == h) {
                Some((_, why)) => Err(why.clone()),
                None => usable(h),
            })?;
            let last = chain.candidates.last() == Some(&choice.hook);
            match self.attach(&choice) {
                Ok(()) => return Ok(()),
                Err(e) if last => return Err(e),
                Err(e) => refused.push((choice.hook, format!("{e:#}"))),
            }
        }
    }

    /// The event tools' ring buffer, `EVENTS`, for the run loop.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("EVENTS map missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sums the per-CPU `COUNTERS` array.
    pub fn counters(&self) -> Result<[u64; NUM_COUNTERS as usize]> {
        let map = self.ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let mut out = [0u64; NUM_COUNTERS as usize];
        for (i, per_cpu) in crate::bpf::mapdump::entries::<u32, u64>(map)? {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = per_cpu.iter().sum();
            }
        }
        Ok(out)
    }

    /// Events the kernel did not hand to the tool's programs: it skips a
    /// classic tracepoint's program while another BPF program, or a BPF map
    /// syscall (any tracer's map reads), is active on that CPU, and counts it.
    pub fn missed(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.info().ok())
            .map(|info| info.recursion_misses())
            .sum()
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
        let counters = match self.counters() {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "{tool}: WARNING: cannot read the kernel counters ({e:#}): lost records unknown"
                );
                return;
            }
        };
        let lost = counters[Counter::Lost as usize];
        if lost > 0 {
            eprintln!("{tool}: WARNING: {lost} records lost (ring buffer full)");
        }
        let full = counters[Counter::MapFull as usize];
        if full > 0 {
            let s = if full == 1 { "" } else { "s" };
            eprintln!("{tool}: WARNING: {full} event{s} not counted (a kernel map was full)");
        }
        let no_stack = counters[Counter::NoStack as usize];
        if no_stack > 0 {
            eprintln!(
                "{tool}: WARNING: {no_stack} records without their kernel stack (the kernel could not walk it)"
            );
        }
        let missed = self.missed();
        if missed > 0 {
            let s = if missed == 1 { "" } else { "s" };
            eprintln!(
                "{tool}: WARNING: {missed} event{s} missed (the kernel skipped tracing while BPF was busy on that CPU)"
            );
        }
        if verbose {
            let mut parts: Vec<String> = Counter::ALL
                .iter()
                .map(|c| format!("{} {}", c.name(), counters[*c as usize]))
                .collect();
            parts.push(format!("missed {missed}"));
            parts.extend(extra.iter().map(|(k, v)| format!("{k} {v}")));
            eprintln!("{tool}: counters: {}", parts.join(", "));
        }
    }
}
