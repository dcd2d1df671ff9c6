//! faultlat: page-fault handling time histograms (minor and major), from the
//! fault's start (tracepoint) to its accounting (software perf event).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, perf_event},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::PerfEventContext,
};
use tracer_common::{
    counters::NUM_COUNTERS,
    fault::{FLAG_PER_PROCESS, FaultConfig},
    faultlat::FaultGroup,
    hist::{HistKey, HistStats, SlotHist},
};
use tracer_ebpf::{current_tgid, fault, hist_record, hist_record_slot};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

#[map]
static HIST: PerCpuHashMap<HistKey<FaultGroup>, u64> = PerCpuHashMap::with_max_entries(8192, 0);
#[map]
static HIST_STATS: PerCpuHashMap<FaultGroup, HistStats> = PerCpuHashMap::with_max_entries(512, 0);
/// Without -P: slot 0 minor, slot 1 major.
#[map]
static HIST_SLOTS: PerCpuArray<SlotHist> = PerCpuArray::with_max_entries(2, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::fault_start_programs!();

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
