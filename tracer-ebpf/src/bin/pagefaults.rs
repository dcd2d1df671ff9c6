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
    pagefaults::{ProcCache, ProcFaults},
};
use tracer_ebpf::{count, current_tgid, fault::user_mode, task_passes};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

/// Faults per process, flushed from CACHE.
#[map]
static PROCS: PerCpuHashMap<u32, ProcFaults> = PerCpuHashMap::with_max_entries(8192, 0);
#[map]
static CACHE: PerCpuArray<ProcCache> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// Adds a process's cached counts into PROCS.
#[inline(always)]
fn flush(tgid: u32, c: &ProcFaults) {
    match PROCS.get_ptr_mut(tgid) {
        Some(p) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let p = unsafe { &mut *p };
            p.minor += c.minor;
            p.major += c.major;
            p.user += c.user;
            p.kernel += c.kernel;
        }
        None => {
            if PROCS.insert(tgid, c, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
        }
    }
}

#[inline(always)]
fn account(ctx: &PerfEventContext, major: bool) {
    if !task_passes(&CONFIG.load().task) {
        return;
    }
    let Some(cache) = CACHE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value, only this CPU writes it.
    let cache = unsafe { &mut *cache };
    let tgid = current_tgid();
    if cache.tgid != tgid {
        if cache.tgid != 0 {
            flush(cache.tgid, &cache.counts);
        }
        cache.tgid = tgid;
        cache.counts = ProcFaults {
            comm: bpf_get_current_comm().unwrap_or_default(),
            ..ProcFaults::default()
        };
    }
    let c = &mut cache.counts;
    if major {
        c.major += 1;
    } else {
        c.minor += 1;
    }
    if user_mode(ctx) {
        c.user += 1;
    } else {
        c.kernel += 1;
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
