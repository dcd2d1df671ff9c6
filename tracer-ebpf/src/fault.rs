//! Page-fault start/end tracking shared by faultlat and faultsnoop (see
//! tracer_common::fault for the method).

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    maps::{LruHashMap, PerCpuArray},
    programs::{PerfEventContext, TracePointContext},
};
use tracer_common::{
    counters::Counter,
    fault::{FaultConfig, FaultStart},
};

use crate::{count, now_ns, task_passes, tp_field};

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// exceptions:page_fault_user / page_fault_kernel: a fault begins.
#[inline(always)]
pub fn on_start(
    ctx: &TracePointContext,
    cfg: &FaultConfig,
    inflight: &LruHashMap<u32, FaultStart>,
    counters: &PerCpuArray<u64>,
    kernel: u32,
) {
    if !task_passes(&cfg.task) {
        return;
    }
    let f = &cfg.fields;
    let start = FaultStart {
        ts: now_ns(),
        address: tp_field(ctx, f.address).unwrap_or(0),
        ip: tp_field(ctx, f.ip).unwrap_or(0),
        error_code: tp_field::<u64>(ctx, f.error_code).unwrap_or(0) as u32,
        kernel,
    };
    let tid = current_tid();
    if inflight.insert(tid, start, BPF_NOEXIST as u64).is_err() {
        // The thread's previous fault was never accounted (failed, or a signal).
        count(counters, Counter::Replaced);
        if inflight.insert(tid, start, BPF_ANY as u64).is_err() {
            count(counters, Counter::MapFull);
            return;
        }
    }
    count(counters, Counter::Started);
}

/// PAGE_FAULTS_MIN / PAGE_FAULTS_MAJ in the faulting thread: the fault was
/// accounted. Returns its start, the thread id and the time now.
#[inline(always)]
pub fn on_end(
    cfg: &FaultConfig,
    inflight: &LruHashMap<u32, FaultStart>,
    counters: &PerCpuArray<u64>,
) -> Option<(u32, FaultStart, u64)> {
    let now = now_ns();
    let tid = current_tid();
    let Some(p) = inflight.get_ptr(tid) else {
        if cfg.task.tgid == 0 && cfg.task.cgroup_id == 0 {
            // Accounted without a start (e.g. it began before tracing did).
            count(counters, Counter::Unmatched);
        }
        return None;
    };
    // SAFETY: map value pointer from a successful lookup.
    let start = unsafe { *p };
    let _ = inflight.remove(tid);
    count(counters, Counter::Matched);
    Some((tid, start, now))
}

/// Whether the perf event's registers are user mode (CPL 3).
#[inline(always)]
pub fn user_mode(ctx: &PerfEventContext) -> bool {
    // SAFETY: the perf event context is readable at constant offsets.
    unsafe { (*ctx.ctx).regs.cs & 3 == 3 }
}
