//! kvmexits: VM exits by reason, per VM process and vCPU, with latency histograms.
//! Backends (see tracer_common::kvmexits): kvm:kvm_exit/kvm_entry where KVM emits
//! them, else the generic x86 KVM tracepoints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use clap::{ArgMatches, CommandFactory as _, ValueEnum};
use serde_json::json;
use tracer_common::{
    block::NO_FIELD,
    kvmexits::{
        CountSlots, ExitEvent, ExitKey, FLAG_EVENTS, FLAG_LATENCY, KvmConfig, LatGroup, NO_VCPU,
        ThreadName, kind,
    },
};

use super::{Column, ExitNames};
use crate::bpf::{self, Choice, Hook, HookChain, HookUse, Loaded, Object, tally::Deltas};
use crate::cli::{self, HeatmapArgs, IntervalArgs, OutputArgs};
use crate::kernel::{
    self,
    btf::Btf,
    tracefs::{self, Format},
};
use crate::output;
use crate::run;
use crate::sink::capture::{
    self, Recorder,
    trigger::{EventKind, Subsystem},
};
use crate::source::schema::{Field, Role, Schema, Template, Track, Unit};
use crate::source::{
    self, Event, Fields, Get as _, HistGroup, Kind, Layout, Sample, Source, Table,
    hist::{Hist, HistReader},
    metrics::{Family, Observations},
};
use crate::tools::Tool;

// Raw tracepoints first: they detach at once, where closing a classic
// tracepoint's perf event waits for an RCU grace period (~75 ms each here).
// kvm_exit stays classic: its reason is decoded by the vendor module.
const EXIT: HookChain = HookChain {
    role: "exit",
    program: "kvm_exit",
    candidates: &[Hook::tp("kvm", "kvm_exit")],
};
const ENTRY: HookChain = HookChain {
    role: "entry",
    program: "kvm_entry",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_entry", "kvm_entry_raw"),
        Hook::tp("kvm", "kvm_entry"),
    ],
};
const PIO: HookChain = HookChain {
    role: "io",
    program: "kvm_pio",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_pio", "kvm_pio_raw"),
        Hook::tp("kvm", "kvm_pio"),
    ],
};
const MMIO: HookChain = HookChain {
    role: "mmio",
    program: "kvm_mmio",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_mmio", "kvm_mmio_raw"),
        Hook::tp("kvm", "kvm_mmio"),
    ],
};
const MSR: HookChain = HookChain {
    role: "msr",
    program: "kvm_msr",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_msr", "kvm_msr_raw"),
        Hook::tp("kvm", "kvm_msr"),
    ],
};
const CPUID: HookChain = HookChain {
    role: "cpuid",
    program: "kvm_cpuid",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_cpuid", "kvm_cpuid_raw"),
        Hook::tp("kvm", "kvm_cpuid"),
    ],
};
const HYPERCALL: HookChain = HookChain {
    role: "hypercall",
    program: "kvm_hypercall",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_hypercall", "kvm_hypercall_raw"),
        Hook::tp("kvm", "kvm_hypercall"),
    ],
};
const USER_EXIT: HookChain = HookChain {
    role: "to-vmm",
    program: "kvm_userspace_exit",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_userspace_exit", "kvm_userspace_exit_raw"),
        Hook::tp("kvm", "kvm_userspace_exit"),
    ],
};
const WAKEUP: HookChain = HookChain {
    role: "halt",
    program: "kvm_vcpu_wakeup",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_vcpu_wakeup", "kvm_vcpu_wakeup_raw"),
        Hook::tp("kvm", "kvm_vcpu_wakeup"),
    ],
};
const PAGE_FAULT: HookChain = HookChain {
    role: "npf",
    program: "kvm_page_fault",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_page_fault", "kvm_page_fault_raw"),
        Hook::tp("kvm", "kvm_page_fault"),
    ],
};
const INJ: HookChain = HookChain {
    role: "inj",
    program: "kvm_inj_virq",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_inj_virq", "kvm_inj_virq_raw"),
        Hook::tp("kvm", "kvm_inj_virq"),
    ],
};
const RUN_ENTER: HookChain = HookChain {
    role: "kvm-run",
    program: "kvm_run_enter",
    candidates: &[
        Hook::raw_tp("kvm", "kvm_fpu", "kvm_run_enter_raw"),
        Hook::tp("syscalls", "sys_enter_ioctl"),
        Hook::tp("raw_syscalls", "sys_enter"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "kvmexits",
    aliases: &[],
    about: "VM exits by reason, VM and vCPU, with exit latency histograms",
    schema: Some(&SCHEMA),
    command: Args::command,
    run,
    hooks: || {
        vec![
            HookUse::always(USER_EXIT),
            HookUse::with("exit backend", EXIT),
            HookUse::with("exit backend --latency", ENTRY),
            HookUse::with("generic backend", PIO),
            HookUse::with("generic backend", MMIO),
            HookUse::with("generic backend", MSR),
            HookUse::with("generic backend", CPUID),
            HookUse::with("generic backend --latency", RUN_ENTER),
        ]
        .into_iter()
        .map(|u| u.fits(raw_fits))
        .collect()
    },
    exporter: Some(exporter),
    family: Subsystem::Kvm,
    record_context: false,
    recorder: Some(Recorder {
        family: Subsystem::Kvm,
        kind: EventKind::Op,
        make: recorder,
    }),
    object: Object {
        elf: crate::ebpf_object!("kvmexits"),
        maps: &[
            "COUNTS",
            "COUNT_CACHE",
            "THREADS",
            "HIST",
            "HIST_STATS",
            "EVENTS",
        ],
        #[cfg(test)]
        globals: &[],
    },
};

/// A timed exit's record (tracer record), and how the views show it.
const SCHEMA: Schema = Schema {
    fields: &[
        Field::u64("pid"),
        Field::u64("tid"),
        Field::str("vm"),
        Field::str("vcpu"),
        Field::str("reason"),
        Field::u64("lat_ns").unit(Unit::Ns).role(Role::Latency),
    ],
    line: Template("vm {vm} ({pid}) vcpu {vcpu} {reason} {lat_ns:ms} ms"),
    track: Track {
        name: Template("vm {vm} vcpu {vcpu}"),
        slice: Template("{reason}"),
    },
    top: Some(("vCPUs", Template("{vm} ({pid}) vcpu {vcpu}"))),
    series: Some("reason"),
    who: Template("{tool} pid {pid} reason \"{reason}\""),
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// Choose by probing the running kernel
    #[default]
    Auto,
    /// kvm:kvm_exit and kvm:kvm_entry
    Exit,
    /// kvm_pio, kvm_mmio, kvm_msr, kvm_cpuid, ... and KVM_RUN syscalls
    Generic,
}

/// VM exits per VM, vCPU and reason, like kvmstat, with latency histograms.
#[derive(clap::Parser, Debug, Default)]
struct Args {
    /// Trace this VM process only
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pid: Option<u32>,
    /// Trace this vCPU only
    #[arg(long = "vcpu", value_name = "N")]
    vcpu: Option<u32>,
    /// One histogram per exit reason of the time from exit to re-entry
    #[arg(short = 'L', long)]
    latency: bool,
    /// Show only the N most frequent reasons
    #[arg(long = "top", value_name = "N", value_parser = |s: &str| cli::parse_positive(s, u64::MAX))]
    top: Option<u64>,
    /// Millisecond histograms
    #[arg(short = 'm', long)]
    milliseconds: bool,
    /// Which kernel events to use
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    pictures: HeatmapArgs,
    #[command(flatten)]
    interval: IntervalArgs,
}

/// Why the kvm_exit backend can or cannot be used here.
fn exit_backend_usable() -> Result<(), String> {
    EXIT.choose().map_err(|e| format!("{e:#}"))?;
    ENTRY.choose().map_err(|e| format!("{e:#}"))?;
    let loaded = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    if loaded("kvm_intel") || loaded("kvm_amd") {
        return Ok(());
    }
    if loaded("kvm_pvm") {
        return Err("KVM here is kvm_pvm, which never emits kvm:kvm_exit".into());
    }
    Err("no kvm_intel or kvm_amd module is loaded".into())
}

fn choose_backend(wanted: Backend) -> Result<(Backend, String)> {
    match (wanted, exit_backend_usable()) {
        (Backend::Exit, Ok(())) | (Backend::Auto, Ok(())) => Ok((
            Backend::Exit,
            "kvm:kvm_exit/kvm_entry (hardware exit reasons)".into(),
        )),
        (Backend::Exit, Err(why)) => Ok((
            Backend::Exit,
            format!("kvm:kvm_exit/kvm_entry, forced ({why})"),
        )),
        (Backend::Generic, _) => Ok((
            Backend::Generic,
            "generic x86 KVM tracepoints, forced".into(),
        )),
        (Backend::Auto, Err(why)) => Ok((
            Backend::Generic,
            format!("generic x86 KVM tracepoints ({why})"),
        )),
    }
}

/// The integer arguments the raw programs read, by position: (tracepoint,
/// [(argument, size)]). The others read no arguments.
const RAW_INT_ARGS: &[(&str, &[(usize, u32)])] = &[
    ("kvm_pio", &[(0, 4)]),
    ("kvm_mmio", &[(0, 4)]),
    ("kvm_msr", &[(0, 4)]),
    ("kvm_hypercall", &[(0, 8)]),
    ("kvm_userspace_exit", &[(0, 4), (1, 4)]),
    ("kvm_fpu", &[(0, 4)]),
];

/// Whether a raw hook's program fits this kernel: the arguments it reads are
/// numbers of the sizes it reads. Where KVM is a module its prototypes are not
/// in the kernel's BTF, and those hooks stay classic. Worked out once, for all
/// of them, from one parse of the BTF (which is then dropped).
fn raw_fits(hook: &Hook) -> Result<(), String> {
    static FITS: OnceLock<Vec<(&str, Result<(), String>)>> = OnceLock::new();
    let Hook::RawTracepoint { name, .. } = hook else {
        return Ok(());
    };
    let fits = FITS.get_or_init(|| {
        let btf = Btf::load().map_err(|e| format!("{e:#}"));
        let check = |tp: &str, args: &[(usize, u32)]| -> Result<(), String> {
            let btf = btf.as_ref().map_err(Clone::clone)?;
            for &(n, size) in args {
                match btf.tracepoint_int_arg(tp, n) {
                    Ok(s) if s == size => {}
                    Ok(s) => return Err(format!("argument {n} is {s} bytes, not {size}")),
                    Err(e) => return Err(format!("{e:#}")),
                }
            }
            Ok(())
        };
        RAW_INT_ARGS
            .iter()
            .map(|&(tp, args)| (tp, check(tp, args)))
            .collect()
    });
    match fits.iter().find(|(tp, _)| tp == name) {
        Some((_, fit)) => fit.clone(),
        None => Ok(()),
    }
}

/// Field offsets of every hook the backend uses.
fn config(backend: Backend, latency: bool, run_enter: Option<&Choice>) -> Result<KvmConfig> {
    let mut cfg = KvmConfig::INITIAL;
    let f = &mut cfg.fields;
    let read = |name: &str| -> Result<Option<Format>> { Format::read("kvm", name) };
    if backend == Backend::Exit {
        let exit = read("kvm_exit")?.context("kvm:kvm_exit is missing")?;
        f.exit_reason = exit.offset("exit_reason", 4)?;
        f.exit_isa = exit.offset("isa", 4)?;
        f.exit_vcpu = exit.offset_or_absent("vcpu_id", 4)?;
    } else {
        if let Some(t) = read("kvm_pio")? {
            f.pio_rw = t.offset("rw", 4)?;
        }
        if let Some(t) = read("kvm_mmio")? {
            f.mmio_type = t.offset("type", 4)?;
        }
        if let Some(t) = read("kvm_msr")? {
            f.msr_write = t.offset("write", 4)?;
        }
        if let Some(t) = read("kvm_hypercall")? {
            f.hypercall_nr = t.offset("nr", 8)?;
        }
    }
    if let Some(t) = read("kvm_userspace_exit")? {
        f.uexit_reason = t.offset("reason", 4)?;
        f.uexit_errno = t.offset("errno", 4)?;
    }
    if let Some(Hook::Tracepoint { category, name }) = run_enter.map(|c| c.hook) {
        let t =
            Format::read(category, name)?.with_context(|| format!("{category}:{name} vanished"))?;
        if name == "sys_enter_ioctl" {
            f.ioctl_cmd = t.offset("cmd", 8)?;
            f.syscall_id = NO_FIELD;
        } else {
            f.syscall_id = t.offset("id", 8)?;
            f.ioctl_cmd = t.offset("args", 48)? + 8;
        }
    }
    if latency {
        cfg.flags |= FLAG_LATENCY;
    }
    Ok(cfg)
}

/// The kernel-side task filter of -p, after checking that the process is a VM
/// and has the vCPU --vcpu asks for.
fn task_filter(a: &Args) -> Result<tracer_common::TaskFilter> {
    let mut task = tracer_common::TaskFilter::default();
    if let Some(pid) = a.pid {
        kernel::check_pid(pid)?;
        let (is_vm, vcpus) = super::vm_fds(pid);
        if !is_vm {
            bail!("process {pid} is not a KVM VM (it holds no KVM VM file descriptor)");
        }
        if let Some(v) = a.vcpu
            && !vcpus.contains(&v)
        {
            bail!("VM {pid} has no vCPU {v} (its vCPUs: {vcpus:?})");
        }
        task.tgid = pid;
    }
    Ok(task)
}

/// The hook chains a backend needs, and those it counts only where the kernel
/// has them.
fn hook_chains(
    backend: Backend,
    latency: bool,
) -> (Vec<&'static HookChain>, Vec<&'static HookChain>) {
    match backend {
        Backend::Exit => (
            if latency {
                vec![&EXIT, &ENTRY]
            } else {
                vec![&EXIT]
            },
            vec![&WAKEUP, &INJ],
        ),
        _ => (
            vec![&USER_EXIT],
            vec![
                &PIO,
                &MMIO,
                &MSR,
                &CPUID,
                &HYPERCALL,
                &WAKEUP,
                &PAGE_FAULT,
                &INJ,
            ],
        ),
    }
}

/// Attaches the backend's hooks; returns the roles of the optional ones this
/// kernel does not have.
fn attach(
    loaded: &mut Loaded,
    backend: Backend,
    latency: bool,
    run_enter: Option<&Choice>,
) -> Result<Vec<&'static str>> {
    let (required, optional) = hook_chains(backend, latency);
    for chain in required {
        loaded.attach_best(chain, raw_fits)?;
    }
    let mut absent = Vec::new();
    for chain in optional {
        match chain.choose_with(raw_fits) {
            Ok(_) => loaded.attach_best(chain, raw_fits)?,
            Err(_) => absent.push(chain.role),
        }
    }
    // Its config names the fields of the hook chosen: no fallback.
    if let Some(choice) = run_enter {
        loaded.attach(choice)?;
    }
    Ok(absent)
}

/// The histograms' unit name, from the divisor of nanoseconds.
fn unit_name(unit_div: u64, milliseconds: bool) -> &'static str {
    if unit_div == 1 {
        "nsecs"
    } else if milliseconds {
        "msecs"
    } else {
        "usecs"
    }
}

struct KvmExits {
    loaded: Loaded,
    /// Timed exits arrive as events (tracer record).
    events: bool,
    backend: Backend,
    latency: bool,
    /// --vcpu: the generic backend's events carry no vCPU id, so its vCPUs are
    /// known by thread name and filtered here.
    vcpu: Option<u32>,
    top: Option<u64>,
    unit: &'static str,
    names: ExitNames,
    deltas: Deltas<ExitKey, u64>,
    hists: HistReader<LatGroup>,
    /// (pid, tid) → vCPU, from thread names (remembered after the thread exits).
    threads: HashMap<(u32, u32), Option<u32>>,
    /// pid → VM name, remembered after the VM exits.
    vm_names: HashMap<u32, String>,
}

impl KvmExits {
    /// `interactive`: say so when no VM is running yet (the exporter does not).
    /// `events`: also stream each timed exit (tracer record).
    fn new(
        a: &Args,
        unit_div: u64,
        verbose: bool,
        interactive: bool,
        events: bool,
    ) -> Result<KvmExits> {
        let task = task_filter(a)?;
        if !tracefs::ensure()?.path.join("events/kvm").exists() {
            bail!(
                "no KVM on this host: the kvm tracepoints are missing (is the kvm module loaded?)"
            );
        }
        if interactive && a.pid.is_none() && super::vm_processes().is_empty() {
            eprintln!(
                "kvmexits: no VM is running yet (no process holds a KVM VM); tracing VMs as they start"
            );
        }
        let (backend, why) = choose_backend(a.backend)?;
        let run_enter = if a.latency && backend == Backend::Generic {
            Some(RUN_ENTER.choose_with(raw_fits)?)
        } else {
            None
        };
        let mut cfg = config(backend, a.latency, run_enter.as_ref())?;
        cfg.task = task;
        cfg.unit_div = unit_div;
        if events {
            cfg.flags |= FLAG_EVENTS | FLAG_LATENCY;
        }
        if let (Some(v), Backend::Exit) = (a.vcpu, backend) {
            cfg.vcpu = v;
        }
        let mut loaded = bpf::load(&TOOL.object, |l| {
            l.override_global("CONFIG", &cfg, true);
        })?;
        let absent = attach(&mut loaded, backend, a.latency, run_enter.as_ref())?;
        if verbose {
            eprintln!("kvmexits: backend: {why}");
            if !absent.is_empty() {
                eprintln!(
                    "kvmexits: not in this kernel, not counted: {}",
                    absent.join(", ")
                );
            }
        }
        let names = match Format::read("kvm", "kvm_exit")? {
            Some(f) => ExitNames::default().with_kernel_tables(&f.print_fmt),
            None => ExitNames::default(),
        };
        Ok(KvmExits {
            loaded,
            events,
            backend,
            latency: a.latency,
            vcpu: a.vcpu,
            top: a.top,
            unit: unit_name(unit_div, a.milliseconds),
            names,
            deltas: Deltas::default(),
            hists: HistReader::default(),
            threads: HashMap::new(),
            vm_names: HashMap::new(),
        })
    }

    /// This interval's counts: the overflow map first, then the per-CPU caches.
    fn read_counts(&mut self) -> Result<Vec<(ExitKey, u64)>> {
        let ebpf = &mut self.loaded.ebpf;
        let mut totals: HashMap<ExitKey, u64> = HashMap::new();
        for (k, per_cpu) in crate::bpf::mapdump::entries::<ExitKey, u64>(
            ebpf.map("COUNTS").context("COUNTS map missing")?,
        )? {
            *totals.entry(k).or_default() += per_cpu.iter().sum::<u64>();
        }
        let mut cached = HashSet::new();
        {
            let cache: PerCpuArray<&MapData, CountSlots> =
                PerCpuArray::try_from(ebpf.map("COUNT_CACHE").context("COUNT_CACHE map missing")?)?;
            for per_cpu in cache.get(&0, 0)?.iter() {
                for s in per_cpu.slots.iter().filter(|s| s.key != ExitKey::default()) {
                    *totals.entry(s.key).or_default() += s.count;
                    cached.insert(s.key);
                }
            }
        }
        let (changed, idle) = self
            .deltas
            .update_keeping(totals.into_iter().collect(), |k| cached.contains(k));
        let mut counts: PerCpuHashMap<&mut MapData, ExitKey, u64> =
            PerCpuHashMap::try_from(ebpf.map_mut("COUNTS").context("COUNTS map missing")?)?;
        for k in idle {
            let _ = counts.remove(&k);
        }
        Ok(changed)
    }

    /// The vCPU of a thread, from its name now or as recorded when first seen.
    fn thread_vcpu(&mut self, tgid: u32, tid: u32, recorded: &HashMap<u32, String>) -> Option<u32> {
        *self.threads.entry((tgid, tid)).or_insert_with(|| {
            let now = super::thread_name(tgid, tid);
            let name = if now.is_empty() {
                recorded.get(&tid).cloned().unwrap_or_default()
            } else {
                now
            };
            super::vcpu_of_thread_name(&name)
        })
    }

    fn vcpu_label(&mut self, k: &ExitKey, recorded: &HashMap<u32, String>) -> String {
        if k.vcpu != NO_VCPU {
            return k.vcpu.to_string();
        }
        self.thread_vcpu(k.tgid, k.tid, recorded)
            .map_or_else(|| format!("t{}", k.tid), |v| v.to_string())
    }

    fn vm_name(&mut self, pid: u32) -> String {
        let name = self
            .vm_names
            .entry(pid)
            .or_insert_with(|| super::vm_name(pid));
        if name.is_empty() {
            "(exited)".into()
        } else {
            name.clone()
        }
    }

    /// This interval's counts by (pid, vCPU) row and by exit reason.
    fn tally(
        &mut self,
        counts: &[(ExitKey, u64)],
        recorded: &HashMap<u32, String>,
    ) -> (BTreeMap<(u32, String), Row>, BTreeMap<String, u64>) {
        let mut rows: BTreeMap<(u32, String), Row> = BTreeMap::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for (k, n) in counts {
            let vcpu = self.vcpu_label(k, recorded);
            // The exit backend filters by vCPU id in the kernel; the generic one's
            // events carry none, so its vCPUs are known by thread name.
            if let Some(want) = self.vcpu
                && vcpu != want.to_string()
            {
                continue;
            }
            let row = rows.entry((k.tgid, vcpu)).or_default();
            if k.kind == kind::INJ_IRQ {
                row.inj += n;
                continue;
            }
            let Some(col) = super::column(k.kind, k.code) else {
                continue;
            };
            *row.columns.entry(col).or_default() += n;
            row.exits += n;
            *reasons.entry(self.names.name(k.kind, k.code)).or_default() += n;
        }
        (rows, reasons)
    }

    /// Latency per reason, merged over the vCPU threads (or one vCPU's).
    fn latency_hists(
        &mut self,
        counts: &[(ExitKey, u64)],
        recorded: &HashMap<u32, String>,
    ) -> Result<BTreeMap<(u32, u32), Hist>> {
        let mut hists: BTreeMap<(u32, u32), Hist> = BTreeMap::new();
        for (g, h) in self.hists.read(&self.loaded.ebpf)? {
            let pid = counts
                .iter()
                .find(|(k, _)| k.tid == g.tid)
                .map_or(0, |(k, _)| k.tgid);
            if let Some(want) = self.vcpu
                && self.backend == Backend::Generic
                && self.thread_vcpu(pid, g.tid, recorded) != Some(want)
            {
                continue;
            }
            hists.entry((g.kind, g.code)).or_default().merge(&h);
        }
        Ok(hists)
    }

    /// The "vcpus" table: one row per VM and vCPU.
    fn vcpu_rows(&mut self, rows: &BTreeMap<(u32, String), Row>) -> Vec<Fields> {
        rows.iter()
            .map(|((pid, vcpu), r)| {
                let mut f = vec![
                    ("pid", json!(pid)),
                    ("vm", json!(self.vm_name(*pid))),
                    ("vcpu", json!(vcpu)),
                    ("exits", json!(r.exits)),
                    ("inj", json!(r.inj)),
                ];
                for (c, name) in COLUMNS {
                    f.push((name, json!(r.columns.get(&c).copied().unwrap_or(0))));
                }
                f
            })
            .collect()
    }
}

/// Thread names the kernel side recorded, by tid.
fn recorded_threads(loaded: &Loaded) -> HashMap<u32, String> {
    use aya::maps::HashMap as BpfHashMap;
    let Some(map) = loaded.ebpf.map("THREADS") else {
        return HashMap::new();
    };
    let Ok(map) = BpfHashMap::<&MapData, u32, ThreadName>::try_from(map) else {
        return HashMap::new();
    };
    map.iter()
        .flatten()
        .map(|(tid, t)| (tid, output::cstr(&t.comm)))
        .collect()
}

/// One vCPU's row.
#[derive(Default)]
struct Row {
    columns: BTreeMap<Column, u64>,
    exits: u64,
    inj: u64,
}

const COLUMNS: [(Column, &str); 8] = [
    (Column::Halt, "halt"),
    (Column::Irq, "irq"),
    (Column::Io, "io"),
    (Column::Mmio, "mmio"),
    (Column::Msr, "msr"),
    (Column::Npf, "npf"),
    (Column::Cpuid, "cpuid"),
    (Column::Other, "other"),
];

/// The "reasons" table: most frequent first (the `top` most only), each with its
/// share of all exits.
fn reason_rows(reasons: BTreeMap<String, u64>, top: Option<u64>) -> Vec<Fields> {
    let total: u64 = reasons.values().sum();
    let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    reasons.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    if let Some(top) = top {
        reasons.truncate(top as usize);
    }
    reasons
        .iter()
        .map(|(name, n)| {
            vec![
                ("reason", json!(name)),
                ("count", json!(n)),
                ("pct", json!(100.0 * *n as f64 / total.max(1) as f64)),
            ]
        })
        .collect()
}

impl Source for KvmExits {
    fn name(&self) -> &'static str {
        TOOL.name
    }

    fn kind(&self) -> Kind {
        if self.events {
            Kind::Stream
        } else {
            Kind::Aggregate
        }
    }

    fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    fn loaded_mut(&mut self) -> &mut Loaded {
        &mut self.loaded
    }

    fn decode(&mut self, raw: &[u8]) -> Option<Event> {
        let e: ExitEvent = source::record(raw)?;
        let recorded = recorded_threads(&self.loaded);
        let vcpu = self
            .thread_vcpu(e.tgid, e.tid, &recorded)
            .map_or_else(|| format!("t{}", e.tid), |v| v.to_string());
        Some(Event {
            ts: e.ts,
            dur_ns: e.lat_ns,
            fields: vec![
                ("pid", json!(e.tgid)),
                ("tid", json!(e.tid)),
                ("vm", json!(self.vm_name(e.tgid))),
                ("vcpu", json!(vcpu)),
                ("reason", json!(self.names.name(e.kind as u16, e.code))),
                ("lat_ns", json!(e.lat_ns)),
            ],
        })
    }

    fn sample(&mut self) -> Result<Sample> {
        let counts = self.read_counts()?;
        let recorded = recorded_threads(&self.loaded);
        let (rows, reasons) = self.tally(&counts, &recorded);
        let hists = if self.latency {
            self.latency_hists(&counts, &recorded)?
        } else {
            BTreeMap::new()
        };
        let vcpus = self.vcpu_rows(&rows);
        let reasons = reason_rows(reasons, self.top);
        let backend = if self.backend == Backend::Exit {
            "exit"
        } else {
            "generic"
        };
        Ok(Sample {
            fields: vec![("backend", json!(backend))],
            tables: vec![
                Table {
                    name: Some("vcpus"),
                    rows: vcpus,
                },
                Table {
                    name: Some("reasons"),
                    rows: reasons,
                },
            ],
            hists: hists
                .into_iter()
                .map(|((kind, code), hist)| HistGroup {
                    labels: vec![
                        ("type", json!("latency")),
                        ("reason", json!(self.names.name(kind as u16, code))),
                    ],
                    hist,
                })
                .collect(),
            unit: self.unit,
        })
    }

    /// Counts add up; each reason's share is recomputed from the sums.
    fn absorb(&self, total: &mut Sample, next: Sample) {
        total.absorb(next);
        for t in total
            .tables
            .iter_mut()
            .filter(|t| t.name == Some("reasons"))
        {
            let sum: u64 = t.rows.iter().map(|r| r.u64("count")).sum();
            for r in &mut t.rows {
                let pct = 100.0 * r.u64("count") as f64 / sum.max(1) as f64;
                if let Some((_, v)) = r.iter_mut().find(|(k, _)| *k == "pct") {
                    *v = json!(pct);
                }
            }
        }
    }

    fn export(&self, sample: &Sample, out: &mut Observations) {
        static EXITS: Family = Family::counter(
            "tracer_kvm_exits",
            "VM exits, by exit reason (all VMs on this host).",
        );
        static LATENCY: Family = Family::histogram(
            "tracer_kvm_exit_latency_seconds",
            "Time from a VM exit to the vCPU's next entry, by exit reason.",
            1e9,
            (8, 33),
        );
        for t in sample.tables.iter().filter(|t| t.name == Some("reasons")) {
            for row in &t.rows {
                let labels = vec![("reason", row.str("reason").to_string())];
                out.count(&EXITS, labels, row.u64("count"));
            }
        }
        for g in &sample.hists {
            let labels = vec![("reason", g.labels.str("reason").to_string())];
            out.hist(&LATENCY, labels, &g.hist);
        }
    }
}

struct Text {
    timestamp: bool,
}

impl Layout for Text {
    fn sample(&mut self, s: &Sample, out: &mut String) {
        use std::fmt::Write as _;
        if self.timestamp {
            let _ = writeln!(out, "{}", output::local_time());
        }
        let table = |name| {
            s.tables
                .iter()
                .find(|t| t.name == Some(name))
                .map_or(&[][..], |t| &t.rows[..])
        };
        let _ = writeln!(
            out,
            "{:<7} {:<16} {:>5} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>7}",
            "PID",
            "VM",
            "VCPU",
            "EXITS",
            "HALT",
            "IRQ",
            "IO",
            "MMIO",
            "MSR",
            "EPT/NPF",
            "CPUID",
            "OTHER",
            "INJ"
        );
        for r in table("vcpus") {
            let _ = writeln!(
                out,
                "{:<7} {:<16.16} {:>5} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>7}",
                r.u64("pid"),
                r.str("vm"),
                r.str("vcpu"),
                r.u64("exits"),
                r.u64("halt"),
                r.u64("irq"),
                r.u64("io"),
                r.u64("mmio"),
                r.u64("msr"),
                r.u64("npf"),
                r.u64("cpuid"),
                r.u64("other"),
                r.u64("inj")
            );
        }
        let _ = writeln!(out, "\n{:<32} {:>10} {:>6}", "REASON", "COUNT", "%");
        for r in table("reasons") {
            let _ = writeln!(
                out,
                "{:<32} {:>10} {:>6.2}",
                r.str("reason"),
                r.u64("count"),
                r.f64("pct")
            );
        }
        for g in &s.hists {
            let _ = writeln!(out, "\nlatency: {}", g.labels.str("reason"));
            out.push_str(&g.hist.render(s.unit));
        }
        out.push('\n');
    }
}

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    if a.pictures.heatmap.is_some() && !a.latency {
        anyhow::bail!("--heatmap draws the exit latency histograms: it needs --latency");
    }
    let unit_div = if a.milliseconds { 1_000_000 } else { 1000 };
    let source = KvmExits::new(&a, unit_div, a.out.verbose, true, false)?;
    let what = if a.latency {
        "VM exits and their latency"
    } else {
        "VM exits"
    };
    run::tool(
        Box::new(source),
        Box::new(Text {
            timestamp: a.out.timestamp,
        }),
        a.out
            .options(what, a.interval.schedule())
            .with_heatmap(&a.pictures),
    )
}

/// Exits by reason and their latency in nanoseconds, every VM.
fn exporter() -> Result<Box<dyn Source>> {
    let a = Args {
        latency: true,
        ..Args::default()
    };
    Ok(Box::new(KvmExits::new(&a, 1, false, false, false)?))
}

/// Every timed exit (to the VMM, on hosts whose KVM has no kvm_exit), for
/// `tracer record`.
fn recorder(f: &capture::Filter) -> Result<Box<dyn Source>> {
    let a = Args {
        latency: true,
        // Only a VM process can be a kvmexits -p; others see every VM.
        pid: f.pid.filter(|&pid| super::vm_fds(pid).0),
        ..Args::default()
    };
    Ok(Box::new(KvmExits::new(&a, 1, false, false, true)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_args_are_the_bare_command_line() {
        crate::cli::tests::assert_default_is_bare::<super::Args>();
    }
}
