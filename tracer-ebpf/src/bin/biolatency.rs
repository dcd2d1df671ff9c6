//! biolatency: block I/O latency histograms, aggregated in the kernel.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    biolatency::LatGroup,
    block::{BlockConfig, FLAG_PER_DISK, FLAG_PER_FLAGS, FLAG_QUEUED, Inflight, RqKey},
    counters::NUM_COUNTERS,
    hist::{HistKey, HistStats, SlotHist},
};
use tracer_ebpf::{
    NO_PREALLOC,
    block::{self, RqEvent},
    hist_record, hist_record_slot,
};

tracer_ebpf::license!();
tracer_ebpf::block_programs!(CONFIG, requests, submit, insert, issue);

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);

// In-flight requests: array slots, and the overflow map for collisions.
tracer_ebpf::inflight_table!(fn requests, INFLIGHT_SLOTS, INFLIGHT: RqKey => Inflight);

#[map]
static HIST: PerCpuHashMap<HistKey<LatGroup>, u64> =
    PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
#[map]
static HIST_STATS: PerCpuHashMap<LatGroup, HistStats> =
    PerCpuHashMap::with_max_entries(1024, NO_PREALLOC);
/// The ungrouped histogram (no -D/-F): one array slot.
#[map]
static HIST_SLOTS: PerCpuArray<SlotHist> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::block_hook!(CONFIG, complete, complete);

#[inline(always)]
fn complete(cfg: &BlockConfig, e: &impl RqEvent) {
    let Some((rq, now)) = block::on_complete(e, cfg, &requests()) else {
        return;
    };
    let start = if cfg.flags & FLAG_QUEUED != 0 && rq.ts_insert != 0 {
        rq.ts_insert
    } else {
        rq.ts_issue
    };
    let value = now
        .saturating_sub(start)
        .checked_div(cfg.unit_div)
        .unwrap_or(0);
    if cfg.flags & (FLAG_PER_DISK | FLAG_PER_FLAGS) == 0 {
        hist_record_slot(&HIST_SLOTS, 0, value);
        return;
    }
    let mut group = LatGroup::default();
    if cfg.flags & FLAG_PER_DISK != 0 {
        group.dev = e.dev(cfg);
    }
    if cfg.flags & FLAG_PER_FLAGS != 0 {
        group.rwbs = e.rwbs(cfg);
    }
    hist_record(&HIST, &HIST_STATS, &COUNTERS, group, value);
}
