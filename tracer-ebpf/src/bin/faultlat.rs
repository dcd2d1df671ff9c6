//! faultlat: page-fault handling time histograms (minor and major), from the
//! fault's start (tracepoint) to its accounting (software perf event).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, perf_event, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{PerfEventContext, TracePointContext},
};
use tracer_common::{
    counters::NUM_COUNTERS,
    fault::{FLAG_PER_PROCESS, FaultConfig, FaultStart},
    faultlat::FaultGroup,
    hist::{HistKey, HistStats},
};
use tracer_ebpf::{current_tgid, fault, hist_record};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

/// BPF_F_NO_COMMON_LRU: per-CPU LRU lists, cheaper inserts under load.
#[map]
static INFLIGHT: LruHashMap<u32, FaultStart> = LruHashMap::with_max_entries(65536, 2);
#[map]
static HIST: PerCpuHashMap<HistKey<FaultGroup>, u64> = PerCpuHashMap::with_max_entries(65536, 0);
#[map]
static HIST_STATS: PerCpuHashMap<FaultGroup, HistStats> = PerCpuHashMap::with_max_entries(8192, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[tracepoint]
pub fn fault_start_user(ctx: TracePointContext) -> u32 {
    fault::on_start(&ctx, &CONFIG.load(), &INFLIGHT, &COUNTERS, 0);
    0
}

#[tracepoint]
pub fn fault_start_kernel(ctx: TracePointContext) -> u32 {
    fault::on_start(&ctx, &CONFIG.load(), &INFLIGHT, &COUNTERS, 1);
    0
}

#[inline(always)]
fn end(major: u32) {
    let cfg = CONFIG.load();
    let Some((_, start, now)) = fault::on_end(&cfg, &INFLIGHT, &COUNTERS) else {
        return;
    };
    let tgid = if cfg.flags & FLAG_PER_PROCESS != 0 {
        current_tgid()
    } else {
        0
    };
    let value = now
        .saturating_sub(start.ts)
        .checked_div(cfg.unit_div)
        .unwrap_or(0);
    hist_record(
        &HIST,
        &HIST_STATS,
        &COUNTERS,
        FaultGroup { tgid, major },
        value,
    );
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
