//! kvmexits: VM exits by reason, per VM process and vCPU, with latency histograms.
//! Backends (see tracer_common::kvmexits): kvm:kvm_exit/kvm_entry where KVM emits
//! them, else the generic x86 KVM tracepoints.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use clap::{ArgMatches, CommandFactory as _, ValueEnum};
use serde_json::{Value, json};
use tracer_common::{
    block::NO_FIELD,
    kvmexits::{CountSlots, ExitKey, FLAG_LATENCY, KvmConfig, LatGroup, NO_VCPU, ThreadName, kind},
};

use super::Tool;
use crate::core::{
    cli::{self, IntervalArgs, OutputArgs},
    ebpf::{self, Choice, Hook, HookChain, Loaded},
    hist::{Hist, HistReader},
    kernel,
    kvm::{self, Column, ExitNames},
    output, run,
    tally::Deltas,
    tracefs::{self, Format},
};

const EXIT: HookChain = HookChain {
    role: "exit",
    program: "kvm_exit",
    candidates: &[Hook::tp("kvm", "kvm_exit")],
};
const ENTRY: HookChain = HookChain {
    role: "entry",
    program: "kvm_entry",
    candidates: &[Hook::tp("kvm", "kvm_entry")],
};
const PIO: HookChain = HookChain {
    role: "io",
    program: "kvm_pio",
    candidates: &[Hook::tp("kvm", "kvm_pio")],
};
const MMIO: HookChain = HookChain {
    role: "mmio",
    program: "kvm_mmio",
    candidates: &[Hook::tp("kvm", "kvm_mmio")],
};
const MSR: HookChain = HookChain {
    role: "msr",
    program: "kvm_msr",
    candidates: &[Hook::tp("kvm", "kvm_msr")],
};
const CPUID: HookChain = HookChain {
    role: "cpuid",
    program: "kvm_cpuid",
    candidates: &[Hook::tp("kvm", "kvm_cpuid")],
};
const HYPERCALL: HookChain = HookChain {
    role: "hypercall",
    program: "kvm_hypercall",
    candidates: &[Hook::tp("kvm", "kvm_hypercall")],
};
const USER_EXIT: HookChain = HookChain {
    role: "to-vmm",
    program: "kvm_userspace_exit",
    candidates: &[Hook::tp("kvm", "kvm_userspace_exit")],
};
const WAKEUP: HookChain = HookChain {
    role: "halt",
    program: "kvm_vcpu_wakeup",
    candidates: &[Hook::tp("kvm", "kvm_vcpu_wakeup")],
};
const PAGE_FAULT: HookChain = HookChain {
    role: "npf",
    program: "kvm_page_fault",
    candidates: &[Hook::tp("kvm", "kvm_page_fault")],
};
const INJ: HookChain = HookChain {
    role: "inj",
    program: "kvm_inj_virq",
    candidates: &[Hook::tp("kvm", "kvm_inj_virq")],
};
const RUN_ENTER: HookChain = HookChain {
    role: "kvm-run",
    program: "kvm_run_enter",
    candidates: &[
        Hook::tp("syscalls", "sys_enter_ioctl"),
        Hook::tp("raw_syscalls", "sys_enter"),
    ],
};

pub const TOOL: Tool = Tool {
    name: "kvmexits",
    aliases: &[],
    about: "VM exits by reason, VM and vCPU, with exit latency histograms",
    command: Args::command,
    run,
    hooks: &[USER_EXIT],
    optional_hooks: &[
        ("exit backend", EXIT),
        ("exit backend --latency", ENTRY),
        ("generic backend", PIO),
        ("generic backend", MMIO),
        ("generic backend", MSR),
        ("generic backend", CPUID),
        ("generic backend --latency", RUN_ENTER),
    ],
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// Choose by probing the running kernel
    Auto,
    /// kvm:kvm_exit and kvm:kvm_entry
    Exit,
    /// kvm_pio, kvm_mmio, kvm_msr, kvm_cpuid, ... and KVM_RUN syscalls
    Generic,
}

/// VM exits per VM, vCPU and reason, like kvmstat, with latency histograms.
#[derive(clap::Parser, Debug)]
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
    #[arg(long = "top", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
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
    if let Some(choice) = run_enter {
        let Hook::Tracepoint { category, name } = choice.hook else {
            unreachable!("tracepoints")
        };
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

fn run(m: &ArgMatches) -> Result<()> {
    let a: Args = cli::parse(m)?;
    let mut task = tracer_common::TaskFilter::default();
    if let Some(pid) = a.pid {
        kernel::check_pid(pid)?;
        let (is_vm, vcpus) = kvm::vm_fds(pid);
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
    kernel::require_privileges()?;
    tracefs::ensure()?;
    if !std::path::Path::new(&tracefs::ensure()?.path)
        .join("events/kvm")
        .exists()
    {
        bail!("no KVM on this host: the kvm tracepoints are missing (is the kvm module loaded?)");
    }
    let vms = kvm::vm_processes();
    if a.pid.is_none() && vms.is_empty() {
        eprintln!(
            "kvmexits: no VM is running yet (no process holds a KVM VM); tracing VMs as they start"
        );
    }

    let (backend, why) = choose_backend(a.backend)?;
    let run_enter = if a.latency && backend == Backend::Generic {
        Some(RUN_ENTER.choose()?)
    } else {
        None
    };
    let mut cfg = config(backend, a.latency, run_enter.as_ref())?;
    cfg.task = task;
    cfg.unit_div = if a.milliseconds { 1_000_000 } else { 1000 };
    if let (Some(v), Backend::Exit) = (a.vcpu, backend) {
        cfg.vcpu = v;
    }
    let mut loaded = ebpf::load(crate::ebpf_object!("kvmexits"), |l| {
        l.override_global("CONFIG", &cfg, true);
    })?;
    let (required, optional): (Vec<&HookChain>, Vec<&HookChain>) = match backend {
        Backend::Exit => (
            if a.latency {
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
    };
    for chain in required {
        loaded.attach_chain(chain)?;
    }
    let mut absent = Vec::new();
    for chain in optional {
        match chain.choose() {
            Ok(choice) => loaded.attach(&choice)?,
            Err(_) => absent.push(chain.role),
        }
    }
    if let Some(choice) = &run_enter {
        loaded.attach(choice)?;
    }
    if a.out.verbose {
        eprintln!("kvmexits: backend: {why}");
        if !absent.is_empty() {
            eprintln!(
                "kvmexits: not in this kernel, not counted: {}",
                absent.join(", ")
            );
        }
    }
    loaded.report_hooks(TOOL.name, a.out.verbose);

    let names = match Format::read("kvm", "kvm_exit")? {
        Some(f) => ExitNames::default().with_kernel_tables(&f.print_fmt),
        None => ExitNames::default(),
    };
    let mut state = Report {
        a: &a,
        backend,
        names,
        deltas: Deltas::default(),
        hists: HistReader::default(),
        threads: HashMap::new(),
        vm_names: HashMap::new(),
    };
    let what = if a.latency {
        "VM exits and their latency"
    } else {
        "VM exits"
    };
    run::periodic(a.interval.schedule(), run::Start::new(what), |last| {
        state.report(&mut loaded)?;
        if last {
            loaded.report_counters(TOOL.name, a.out.verbose, &[]);
        }
        Ok(())
    })
}

struct Report<'a> {
    a: &'a Args,
    backend: Backend,
    names: ExitNames,
    deltas: Deltas<ExitKey, u64>,
    hists: HistReader<LatGroup>,
    /// (pid, tid) → vCPU, from thread names (remembered after the thread exits).
    threads: HashMap<(u32, u32), Option<u32>>,
    /// pid → VM name, remembered after the VM exits.
    vm_names: HashMap<u32, String>,
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

impl Report<'_> {
    /// This interval's counts: the overflow map first, then the per-CPU caches.
    fn read_counts(&mut self, loaded: &mut Loaded) -> Result<Vec<(ExitKey, u64)>> {
        let mut totals: HashMap<ExitKey, u64> = HashMap::new();
        {
            let counts: PerCpuHashMap<&MapData, ExitKey, u64> =
                PerCpuHashMap::try_from(loaded.ebpf.map("COUNTS").context("COUNTS map missing")?)?;
            for entry in counts.iter() {
                let (k, per_cpu) = entry?;
                *totals.entry(k).or_default() += per_cpu.iter().sum::<u64>();
            }
        }
        let mut cached = HashSet::new();
        {
            let cache: PerCpuArray<&MapData, CountSlots> = PerCpuArray::try_from(
                loaded
                    .ebpf
                    .map("COUNT_CACHE")
                    .context("COUNT_CACHE map missing")?,
            )?;
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
        let mut counts: PerCpuHashMap<&mut MapData, ExitKey, u64> = PerCpuHashMap::try_from(
            loaded
                .ebpf
                .map_mut("COUNTS")
                .context("COUNTS map missing")?,
        )?;
        for k in idle {
            let _ = counts.remove(&k);
        }
        Ok(changed)
    }

    /// The vCPU of a thread, from its name now or as recorded when first seen.
    fn thread_vcpu(&mut self, tgid: u32, tid: u32, recorded: &HashMap<u32, String>) -> Option<u32> {
        *self.threads.entry((tgid, tid)).or_insert_with(|| {
            let now = kvm::thread_name(tgid, tid);
            let name = if now.is_empty() {
                recorded.get(&tid).cloned().unwrap_or_default()
            } else {
                now
            };
            kvm::vcpu_of_thread_name(&name)
        })
    }

    fn vcpu(&mut self, k: &ExitKey, recorded: &HashMap<u32, String>) -> String {
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
            .or_insert_with(|| kvm::vm_name(pid));
        if name.is_empty() {
            "(exited)".into()
        } else {
            name.clone()
        }
    }

    fn report(&mut self, loaded: &mut Loaded) -> Result<()> {
        let counts = self.read_counts(loaded)?;
        let recorded = recorded_threads(loaded);
        let mut rows: BTreeMap<(u32, String), Row> = BTreeMap::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for (k, n) in &counts {
            let vcpu = self.vcpu(k, &recorded);
            // The exit backend filters by vCPU id in the kernel; the generic one's
            // events carry none, so its vCPUs are known by thread name.
            if let Some(want) = self.a.vcpu
                && vcpu != want.to_string()
            {
                continue;
            }
            let row = rows.entry((k.tgid, vcpu)).or_default();
            if k.kind == kind::INJ_IRQ {
                row.inj += n;
                continue;
            }
            let Some(col) = kvm::column(k.kind, k.code) else {
                continue;
            };
            *row.columns.entry(col).or_default() += n;
            row.exits += n;
            *reasons.entry(self.names.name(k.kind, k.code)).or_default() += n;
        }
        let total: u64 = reasons.values().sum();
        let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
        reasons.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        if let Some(top) = self.a.top {
            reasons.truncate(top as usize);
        }
        // Latency per reason, merged over the vCPU threads (or one vCPU's).
        let mut hists: BTreeMap<(u32, u32), Hist> = BTreeMap::new();
        if self.a.latency {
            for (g, h) in self.hists.read(&loaded.ebpf)? {
                let pid = counts
                    .iter()
                    .find(|(k, _)| k.tid == g.tid)
                    .map_or(0, |(k, _)| k.tgid);
                if let Some(want) = self.a.vcpu
                    && self.backend == Backend::Generic
                    && self.thread_vcpu(pid, g.tid, &recorded) != Some(want)
                {
                    continue;
                }
                hists.entry((g.kind, g.code)).or_default().merge(&h);
            }
        }
        let unit = if self.a.milliseconds {
            "msecs"
        } else {
            "usecs"
        };
        let cols = [
            Column::Halt,
            Column::Irq,
            Column::Io,
            Column::Mmio,
            Column::Msr,
            Column::Npf,
            Column::Cpuid,
            Column::Other,
        ];
        let col_names = ["halt", "irq", "io", "mmio", "msr", "npf", "cpuid", "other"];

        if self.a.out.json {
            let vcpus: Vec<Value> = rows
                .iter()
                .map(|((pid, vcpu), r)| {
                    let mut v = json!({"pid": pid, "vm": self.vm_name(*pid), "vcpu": vcpu, "exits": r.exits, "inj": r.inj});
                    for (c, name) in cols.iter().zip(col_names) {
                        v[name] = json!(r.columns.get(c).copied().unwrap_or(0));
                    }
                    v
                })
                .collect();
            let reasons: Vec<Value> = reasons
                .iter()
                .map(|(name, n)| json!({"reason": name, "count": n, "pct": 100.0 * *n as f64 / total.max(1) as f64}))
                .collect();
            let backend = if self.backend == Backend::Exit {
                "exit"
            } else {
                "generic"
            };
            output::json_line(&json!({
                "tool": "kvmexits", "ts": output::unix_time(), "backend": backend, "vcpus": vcpus, "reasons": reasons,
            }));
            for ((kind, code), h) in &hists {
                let v = json!({"tool": "kvmexits", "type": "latency", "reason": self.names.name(*kind as u16, *code)});
                let v = h.json_with(v, unit);
                output::json_line(&v);
            }
            return Ok(());
        }
        if self.a.out.timestamp {
            println!("{}", output::local_time());
        }
        println!(
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
        for ((pid, vcpu), r) in &rows {
            let c = |col: Column| r.columns.get(&col).copied().unwrap_or(0);
            println!(
                "{pid:<7} {:<16.16} {vcpu:>5} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>7}",
                self.vm_name(*pid),
                r.exits,
                c(Column::Halt),
                c(Column::Irq),
                c(Column::Io),
                c(Column::Mmio),
                c(Column::Msr),
                c(Column::Npf),
                c(Column::Cpuid),
                c(Column::Other),
                r.inj
            );
        }
        println!("\n{:<32} {:>10} {:>6}", "REASON", "COUNT", "%");
        for (name, n) in &reasons {
            println!(
                "{name:<32} {n:>10} {:>6.2}",
                100.0 * *n as f64 / total.max(1) as f64
            );
        }
        for ((kind, code), h) in &hists {
            println!("\nlatency: {}", self.names.name(*kind as u16, *code));
            print!("{}", h.render(unit));
        }
        println!();
        Ok(())
    }
}
