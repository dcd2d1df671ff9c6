//! kvmexits: VM exits counted per (process, vCPU thread, kind, reason) in a per-CPU
//! cache with an overflow map, and optionally timed (--latency). See
//! tracer_common::kvmexits for the two backends.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    INFLIGHT_SLOTS as INFLIGHT_SLOTS_LEN,
    counters::{Counter, NUM_COUNTERS},
    hist::{HistKey, HistStats},
    kvmexits::{
        COUNT_SLOTS, CountSlots, ExitEvent, ExitKey, FLAG_EVENTS, FLAG_LATENCY, KVM_RUN, KvmConfig,
        LatGroup, NO_VCPU, Pending, SYS_IOCTL, ThreadName, kind, layout,
    },
};
use tracer_ebpf::{
    NO_COMMON_LRU, NO_PREALLOC, count, emit, hist_record, now_ns, raw_args, task_passes, tp_read,
};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<KvmConfig> = Global::new(KvmConfig::INITIAL);

#[map]
static COUNT_CACHE: PerCpuArray<CountSlots> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COUNTS: PerCpuHashMap<ExitKey, u64> = PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
// Exits awaiting re-entry (--latency), and MMIO reads sent to userspace (their
// completion must not count twice), by vCPU thread.
tracer_ebpf::inflight_table!(fn pending, PENDING_SLOTS, PENDING: u64 => Pending);
tracer_ebpf::inflight_table!(fn mmio_reads, MMIO_READS_SLOTS, MMIO_READS: u64 => Pending);
/// Names of the vCPU threads seen, by tid.
#[map]
static THREADS: LruHashMap<u32, ThreadName> = LruHashMap::with_max_entries(4096, NO_COMMON_LRU);
#[map]
static HIST: PerCpuHashMap<HistKey<LatGroup>, u64> =
    PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
#[map]
static HIST_STATS: PerCpuHashMap<LatGroup, HistStats> =
    PerCpuHashMap::with_max_entries(1024, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);
/// Timed exits, one record each (FLAG_EVENTS).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 18, 0);

#[inline(always)]
fn slot_of(tid: u64) -> u32 {
    tid as u32 & (INFLIGHT_SLOTS_LEN - 1)
}

/// The current vCPU thread if it passes the filters: (tgid, tid).
#[inline(always)]
fn current(cfg: &KvmConfig) -> Option<(u32, u32)> {
    if !task_passes(&cfg.task) {
        return None;
    }
    let id = bpf_get_current_pid_tgid();
    let tid = id as u32;
    if cfg.tid != 0 && tid != cfg.tid {
        return None;
    }
    Some(((id >> 32) as u32, tid))
}

/// Remembers a thread's name the first time one of its keys is counted.
#[inline(always)]
fn remember_thread(key: &ExitKey) {
    let name = ThreadName {
        tgid: key.tgid,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = THREADS.insert(key.tid, name, BPF_ANY as u64);
}

/// Adds one to a key's count: its cache slot if it owns or can claim it, else the
/// overflow map.
#[inline(always)]
fn add(key: &ExitKey) {
    if let Some(cache) = COUNT_CACHE.get_ptr_mut(0) {
        let i = key.slot() as usize;
        // LLVM knows i < COUNT_SLOTS, the verifier needs to be told.
        // SAFETY: reading a local.
        let i = unsafe { core::ptr::read_volatile(&i) };
        if i < COUNT_SLOTS as usize {
            // SAFETY: per-CPU value, only this CPU writes it; i is in bounds.
            let s = unsafe { (*cache).slots.get_unchecked_mut(i) };
            if s.key == *key {
                s.count += 1;
                return;
            }
            if s.key == ExitKey::default() {
                s.key = *key;
                s.count = 1;
                remember_thread(key);
                return;
            }
        }
    }
    match COUNTS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(n) => unsafe { *n += 1 },
        None => {
            if COUNTS.insert(key, 1, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
            remember_thread(key);
        }
    }
}

#[inline(always)]
fn event(kind: u16, code: u32, vcpu: u32) -> Option<KvmConfig> {
    let cfg = CONFIG.load();
    let (tgid, tid) = current(&cfg)?;
    add(&ExitKey {
        tgid,
        tid,
        vcpu,
        kind,
        _pad: 0,
        code,
        _pad2: 0,
    });
    Some(cfg)
}

#[inline(always)]
fn start_timing(kind: u16, code: u32) {
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    let now = now_ns();
    let _ = pending().insert(
        &tid,
        slot_of(tid),
        &Pending {
            ts: now,
            kind: kind as u32,
            code,
        },
        now,
    );
}

#[inline(always)]
fn finish_timing(cfg: &KvmConfig, kind: u32) {
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    let Some(p) = pending().take(&tid, slot_of(tid)) else {
        return;
    };
    if p.kind != kind && !(kind == kind::EXIT_VMX as u32 && p.kind < kind::PIO as u32) {
        return;
    }
    let now = now_ns();
    let lat_ns = now.saturating_sub(p.ts);
    if cfg.flags & FLAG_EVENTS != 0 {
        let e = ExitEvent {
            ts: now,
            lat_ns,
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            tid: tid as u32,
            kind: p.kind,
            code: p.code,
        };
        emit(&EVENTS, &COUNTERS, &e);
    }
    let value = lat_ns.checked_div(cfg.unit_div).unwrap_or(0);
    let group = LatGroup {
        tid: tid as u32,
        kind: p.kind,
        code: p.code,
        _pad: 0,
    };
    hist_record(&HIST, &HIST_STATS, &COUNTERS, group, value);
}

// ---- kvm_exit backend ----

#[tracepoint]
pub fn kvm_exit(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let f = &cfg.fields;
    let vcpu: u32 = tp_read::<u32, 56>(&ctx, f.exit_vcpu).unwrap_or(NO_VCPU);
    if cfg.vcpu != NO_VCPU && vcpu != cfg.vcpu {
        return 0;
    }
    let reason: u32 = tp_read::<u32, { layout::EXIT_REASON }>(&ctx, f.exit_reason).unwrap_or(0);
    let k = match tp_read::<u32, 24>(&ctx, f.exit_isa) {
        Some(1) => kind::EXIT_VMX,
        Some(2) => kind::EXIT_SVM,
        _ => kind::EXIT_OTHER,
    };
    if event(k, reason, vcpu).is_some() && cfg.flags & FLAG_LATENCY != 0 {
        start_timing(k, reason);
    }
    0
}

/// kvm:kvm_entry: any kvm_exit kind (VMX, SVM, other) ends at the next entry.
#[inline(always)]
fn on_entry() {
    let cfg = CONFIG.load();
    if current(&cfg).is_some() {
        finish_timing(&cfg, kind::EXIT_VMX as u32);
    }
}

#[tracepoint]
pub fn kvm_entry(_ctx: TracePointContext) -> u32 {
    on_entry();
    0
}

#[raw_tracepoint(tracepoint = "kvm_entry")]
pub fn kvm_entry_raw(_ctx: RawTracePointContext) -> i32 {
    on_entry();
    0
}

// ---- generic backend ----
// Each event has a classic program (fields at offsets from its format file)
// and a raw one (arguments by position, the prototype checked against BTF by
// userspace): raw tracepoints detach at once.

/// The classic and raw programs of an event that is only counted, as `kind`
/// with code 0, or with its first field as the code: read from the record at
/// its format-file offset (usually `$at`), or as the raw tracepoint's first
/// argument.
macro_rules! counted {
    ($classic:ident, $raw:ident, $tracepoint:literal, $kind:expr) => {
        #[tracepoint]
        pub fn $classic(_ctx: TracePointContext) -> u32 {
            let _ = event($kind, 0, NO_VCPU);
            0
        }

        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(_ctx: RawTracePointContext) -> i32 {
            let _ = event($kind, 0, NO_VCPU);
            0
        }
    };
    ($classic:ident, $raw:ident, $tracepoint:literal, $kind:expr, $field:ident: $ty:ty = $at:expr) => {
        #[tracepoint]
        pub fn $classic(ctx: TracePointContext) -> u32 {
            let code = tp_read::<$ty, { $at }>(&ctx, CONFIG.load().fields.$field).unwrap_or(0);
            let _ = event($kind, code as u32, NO_VCPU);
            0
        }

        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            let _ = event($kind, raw_args::<1>(&ctx)[0] as u32, NO_VCPU);
            0
        }
    };
}

// (rw, port, size, count, data)
counted!(kvm_pio, kvm_pio_raw, "kvm_pio", kind::PIO, pio_rw: u32 = layout::PIO_RW);
// (write, ecx, data, exception)
counted!(kvm_msr, kvm_msr_raw, "kvm_msr", kind::MSR, msr_write: u32 = layout::MSR_WRITE);
// (nr, a0, a1, a2, a3)
counted!(
    kvm_hypercall,
    kvm_hypercall_raw,
    "kvm_hypercall",
    kind::HYPERCALL,
    hypercall_nr: u64 = layout::HYPERCALL_NR
);
counted!(kvm_cpuid, kvm_cpuid_raw, "kvm_cpuid", kind::CPUID);
counted!(
    kvm_vcpu_wakeup,
    kvm_vcpu_wakeup_raw,
    "kvm_vcpu_wakeup",
    kind::WAKEUP
);
counted!(
    kvm_inj_virq,
    kvm_inj_virq_raw,
    "kvm_inj_virq",
    kind::INJ_IRQ
);
counted!(
    kvm_page_fault,
    kvm_page_fault_raw,
    "kvm_page_fault",
    kind::PAGE_FAULT
);

#[tracepoint]
pub fn kvm_mmio(ctx: TracePointContext) -> u32 {
    on_mmio(
        tp_read::<u32, { layout::MMIO_TYPE }>(&ctx, CONFIG.load().fields.mmio_type).unwrap_or(0),
    );
    0
}

/// (type, len, gpa, val)
#[raw_tracepoint(tracepoint = "kvm_mmio")]
pub fn kvm_mmio_raw(ctx: RawTracePointContext) -> i32 {
    on_mmio(raw_args::<1>(&ctx)[0] as u32);
    0
}

#[inline(always)]
fn on_mmio(ty: u32) {
    const UNSATISFIED_READ: u32 = 0;
    const READ: u32 = 1;
    let cfg = CONFIG.load();
    let Some(_) = current(&cfg) else { return };
    let tid = bpf_get_current_pid_tgid() & 0xffff_ffff;
    match ty {
        UNSATISFIED_READ => {
            // Sent to userspace; its completion shows up as a READ later.
            let now = now_ns();
            let _ = mmio_reads().insert(
                &tid,
                slot_of(tid),
                &Pending {
                    ts: now,
                    kind: 0,
                    code: 0,
                },
                now,
            );
            let _ = event(kind::MMIO, READ, NO_VCPU);
        }
        READ if mmio_reads().take(&tid, slot_of(tid)).is_some() => {}
        _ => {
            let _ = event(kind::MMIO, ty, NO_VCPU);
        }
    }
}

#[tracepoint]
pub fn kvm_userspace_exit(ctx: TracePointContext) -> u32 {
    let f = &CONFIG.load().fields;
    on_userspace_exit(
        tp_read::<u32, { layout::UEXIT_REASON }>(&ctx, f.uexit_reason).unwrap_or(0),
        tp_read::<i32, { layout::UEXIT_ERRNO }>(&ctx, f.uexit_errno).unwrap_or(0),
    );
    0
}

/// (reason, errno)
#[raw_tracepoint(tracepoint = "kvm_userspace_exit")]
pub fn kvm_userspace_exit_raw(ctx: RawTracePointContext) -> i32 {
    let [reason, errno] = raw_args::<2>(&ctx);
    on_userspace_exit(reason as u32, errno as i32);
    0
}

#[inline(always)]
fn on_userspace_exit(reason: u32, errno: i32) {
    if errno < 0 {
        // KVM_RUN interrupted (restart) or failed: no exit.
        return;
    }
    let cfg = CONFIG.load();
    // IO and MMIO exits are counted by kvm_pio/kvm_mmio; without --latency there
    // is nothing more to do for them.
    if cfg.flags & FLAG_LATENCY == 0 && (reason == KVM_EXIT_IO || reason == KVM_EXIT_MMIO) {
        return;
    }
    if event(kind::USER_EXIT, reason, NO_VCPU).is_some() && cfg.flags & FLAG_LATENCY != 0 {
        start_timing(kind::USER_EXIT, reason);
    }
}

const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_MMIO: u32 = 6;

/// syscalls:sys_enter_ioctl (or raw_syscalls:sys_enter): the VMM re-enters the
/// guest with KVM_RUN, ending its handling of the last exit to userspace.
#[tracepoint]
pub fn kvm_run_enter(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let f = &cfg.fields;
    if f.syscall_id != tracer_common::block::NO_FIELD
        && tp_read::<u64, 8>(&ctx, f.syscall_id) != Some(SYS_IOCTL)
    {
        return 0;
    }
    if tp_read::<u64, { layout::IOCTL_CMD }>(&ctx, f.ioctl_cmd).map(|c| c as u32) != Some(KVM_RUN) {
        return 0;
    }
    on_run_enter(&cfg);
    0
}

/// kvm_fpu(load): KVM_RUN loads the guest's FPU state (load = 1) once per
/// ioctl, before it enters the guest; only KVM's threads run it.
#[raw_tracepoint(tracepoint = "kvm_fpu")]
pub fn kvm_run_enter_raw(ctx: RawTracePointContext) -> i32 {
    if raw_args::<1>(&ctx)[0] as u32 == 1 {
        on_run_enter(&CONFIG.load());
    }
    0
}

/// The vCPU thread is back in KVM_RUN: its exit to the VMM ends.
#[inline(always)]
fn on_run_enter(cfg: &KvmConfig) {
    if current(cfg).is_some() {
        finish_timing(cfg, kind::USER_EXIT as u32);
    }
}
