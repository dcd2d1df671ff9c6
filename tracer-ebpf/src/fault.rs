//! Page-fault start/end tracking shared by faultlat and faultsnoop (see
//! tracer_common::fault for the method).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    programs::{PerfEventContext, RawTracePointContext, TracePointContext},
};
use tracer_common::{
    INFLIGHT_SLOTS,
    counters::Counter,
    fault::{FLAG_IP, FaultConfig, FaultStart, layout},
};

use crate::{
    count,
    inflight::{Entry, Table},
    kread, now_ns, raw_args, task_passes, tp_read,
};

/// In-flight faults, keyed by thread id.
pub type Faults<'a> = Table<'a, u64, FaultStart>;

impl Entry for FaultStart {
    fn stamp(&self) -> u64 {
        self.ts
    }
}

#[inline(always)]
fn current_tid() -> u64 {
    bpf_get_current_pid_tgid() & 0xffff_ffff
}

#[inline(always)]
fn slot(tid: u64) -> u32 {
    tid as u32 & (INFLIGHT_SLOTS - 1)
}

/// exceptions:page_fault_user / page_fault_kernel: a fault begins.
#[inline(always)]
pub fn on_start(ctx: &TracePointContext, cfg: &FaultConfig, faults: &Faults, kernel: u32) {
    if !task_passes(&cfg.task) {
        return;
    }
    let f = &cfg.fields;
    let address = tp_read::<_, { layout::ADDRESS }>(ctx, f.address).unwrap_or(0);
    let ip = tp_read::<_, { layout::IP }>(ctx, f.ip).unwrap_or(0);
    let error_code = tp_read::<u64, { layout::ERROR_CODE }>(ctx, f.error_code).unwrap_or(0);
    start(faults, kernel, address, ip, error_code);
}

/// The same from the raw tracepoint: (address, regs, error_code).
#[inline(always)]
pub fn on_start_raw(ctx: &RawTracePointContext, cfg: &FaultConfig, faults: &Faults, kernel: u32) {
    if !task_passes(&cfg.task) {
        return;
    }
    let [address, regs, error_code] = raw_args::<3>(ctx);
    let ip = if cfg.flags & FLAG_IP != 0 {
        kread(regs, cfg.fields.regs_ip).unwrap_or(0)
    } else {
        0
    };
    start(faults, kernel, address, ip, error_code);
}

#[inline(always)]
fn start(faults: &Faults, kernel: u32, address: u64, ip: u64, error_code: u64) {
    let start = FaultStart {
        ts: now_ns(),
        address,
        ip,
        error_code: error_code as u32,
        kernel,
    };
    let tid = current_tid();
    let _ = faults.insert(&tid, slot(tid), &start, start.ts);
}

/// PAGE_FAULTS_MIN / PAGE_FAULTS_MAJ in the faulting thread: the fault was
/// accounted. Returns its start, the thread id and the time now.
#[inline(always)]
pub fn on_end(cfg: &FaultConfig, faults: &Faults) -> Option<(u32, FaultStart, u64)> {
    let tid = current_tid();
    let Some(start) = faults.take(&tid, slot(tid)) else {
        if cfg.task.tgid == 0 && cfg.task.cgroup_id == 0 {
            // Accounted without a start (e.g. it began before tracing did).
            count(faults.counters, Counter::Unmatched);
        }
        return None;
    };
    Some((tid as u32, start, now_ns()))
}

/// Whether the perf event's registers are user mode (CPL 3).
#[inline(always)]
pub fn user_mode(ctx: &PerfEventContext) -> bool {
    // SAFETY: the perf event context is readable at constant offsets.
    unsafe { (*ctx.ctx).regs.cs & 3 == 3 }
}

/// Declares the in-flight faults table (`faults()`) and the two programs that
/// start timing a fault, for a tool with a `CONFIG: Global<FaultConfig>` and
/// `COUNTERS`.
#[macro_export]
macro_rules! fault_start_programs {
    () => {
        $crate::inflight_table!(fn faults, INFLIGHT_SLOTS, INFLIGHT: u64 => tracer_common::fault::FaultStart);

        #[aya_ebpf::macros::tracepoint]
        pub fn fault_start_user(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::fault::on_start(&ctx, &CONFIG.load(), &faults(), 0);
            0
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn fault_start_kernel(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::fault::on_start(&ctx, &CONFIG.load(), &faults(), 1);
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = "page_fault_user")]
        pub fn fault_start_user_raw(ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            $crate::fault::on_start_raw(&ctx, $crate::config(&CONFIG), &faults(), 0);
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = "page_fault_kernel")]
        pub fn fault_start_kernel_raw(ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            $crate::fault::on_start_raw(&ctx, $crate::config(&CONFIG), &faults(), 1);
            0
        }
    };
}
