//! faultlat: page-fault handling time histograms (minor and major), from the
//! fault's start (tracepoint) to its accounting (software perf event).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, perf_event, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{PerfEventContext, TracePointContext},
};
use tracer_common::{
    INFLIGHT_SLOTS as INFLIGHT_SLOTS_LEN, Slot,
    counters::NUM_COUNTERS,
    fault::{FLAG_PER_PROCESS, FaultConfig, FaultStart},
    faultlat::FaultGroup,
    hist::{HistKey, HistStats, SlotHist},
};
use tracer_ebpf::{NO_COMMON_LRU, current_tgid, fault, hist_record, hist_record_slot};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

/// In-flight faults by thread: array slots, and the overflow map for collisions.
#[map]
static INFLIGHT_SLOTS: Array<Slot<u64, FaultStart>> =
    Array::with_max_entries(INFLIGHT_SLOTS_LEN, 0);
#[map]
static INFLIGHT: LruHashMap<u64, FaultStart> = LruHashMap::with_max_entries(8192, NO_COMMON_LRU);

fn faults() -> fault::Faults<'static> {
    fault::Faults {
        slots: &INFLIGHT_SLOTS,
        overflow: &INFLIGHT,
        counters: &COUNTERS,
    }
}
#[map]
static HIST: PerCpuHashMap<HistKey<FaultGroup>, u64> = PerCpuHashMap::with_max_entries(65536, 0);
#[map]
static HIST_STATS: PerCpuHashMap<FaultGroup, HistStats> = PerCpuHashMap::with_max_entries(8192, 0);
/// Without -P: slot 0 minor, slot 1 major.
#[map]
static HIST_SLOTS: PerCpuArray<SlotHist> = PerCpuArray::with_max_entries(2, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[tracepoint]
pub fn fault_start_user(ctx: TracePointContext) -> u32 {
    fault::on_start(&ctx, &CONFIG.load(), &faults(), 0);
    0
}

#[tracepoint]
pub fn fault_start_kernel(ctx: TracePointContext) -> u32 {
    fault::on_start(&ctx, &CONFIG.load(), &faults(), 1);
    0
}

#[inline(always)]
fn end(major: u32) {
    let cfg = CONFIG.load();
    let Some((_, start, now)) = fault::on_end(&cfg, &faults()) else {
        return;
    };
    let value = now
        .saturating_sub(start.ts)
        .checked_div(cfg.unit_div)
        .unwrap_or(0);
    if cfg.flags & FLAG_PER_PROCESS == 0 {
        hist_record_slot(&HIST_SLOTS, major, value);
        return;
    }
    let group = FaultGroup {
        tgid: current_tgid(),
        major,
    };
    hist_record(&HIST, &HIST_STATS, &COUNTERS, group, value);
}

#[perf_event]
pub fn fault_minor(_ctx: PerfEventContext) -> u32 {
    end(0);
    0
}

#[perf_event]
pub fn fault_major(_ctx: PerfEventContext) -> u32 {
    end(1);
    0
}
