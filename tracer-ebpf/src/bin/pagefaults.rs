//! pagefaults: per-process fault counts, split minor/major and user/kernel mode,
//! counted in the kernel with one program run per fault (at accounting time).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_ANY,
    helpers::bpf_get_current_comm,
    macros::{map, perf_event},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::PerfEventContext,
};
use tracer_common::{
    counters::{Counter, NUM_COUNTERS},
    fault::FaultConfig,
    pagefaults::ProcFaults,
};
use tracer_ebpf::{count, current_tgid, fault::user_mode, task_passes};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

#[map]
static PROCS: PerCpuHashMap<u32, ProcFaults> = PerCpuHashMap::with_max_entries(16384, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[inline(always)]
fn account(ctx: &PerfEventContext, major: bool) {
    if !task_passes(&CONFIG.load().task) {
        return;
    }
    let tgid = current_tgid();
    let user = user_mode(ctx);
    match PROCS.get_ptr_mut(tgid) {
        Some(p) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let p = unsafe { &mut *p };
            if major {
                p.major += 1;
            } else {
                p.minor += 1;
            }
            if user {
                p.user += 1;
            } else {
                p.kernel += 1;
            }
        }
        None => {
            let v = ProcFaults {
                minor: !major as u64,
                major: major as u64,
                user: user as u64,
                kernel: !user as u64,
                comm: bpf_get_current_comm().unwrap_or_default(),
            };
            if PROCS.insert(tgid, v, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
        }
    }
}

#[perf_event]
pub fn fault_minor(ctx: PerfEventContext) -> u32 {
    account(&ctx, false);
    0
}

#[perf_event]
pub fn fault_major(ctx: PerfEventContext) -> u32 {
    account(&ctx, true);
    0
}
