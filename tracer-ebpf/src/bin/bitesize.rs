//! bitesize: I/O size histograms per process name, attributed to the submitter.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use tracer_common::{
    bitesize::{CommFilter, SizeGroup},
    block::{BlockConfig, Inflight, RqKey},
    counters::NUM_COUNTERS,
    hist::{HistKey, HistStats},
};
use tracer_ebpf::{block, hist_record, tp_field};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);
#[unsafe(no_mangle)]
static COMM: Global<CommFilter> = Global::new(CommFilter { comm: [1; 16] });

#[map]
static INFLIGHT: LruHashMap<RqKey, Inflight> = LruHashMap::with_max_entries(16384, 0);
#[map]
static HIST: PerCpuHashMap<HistKey<SizeGroup>, u64> = PerCpuHashMap::with_max_entries(16384, 0);
#[map]
static HIST_STATS: PerCpuHashMap<SizeGroup, HistStats> = PerCpuHashMap::with_max_entries(4096, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[tracepoint]
pub fn block_submit(ctx: TracePointContext) -> u32 {
    block::on_submit(&ctx, &CONFIG.load(), &INFLIGHT);
    0
}

/// The size is known at issue; the request's entry is not needed after it.
#[tracepoint]
pub fn block_issue(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let Some(key) = block::rq_key(&ctx, &cfg.issue, &cfg) else {
        return 0;
    };
    let Some(p) = block::entry(&key, &cfg, &INFLIGHT, &COUNTERS) else {
        return 0;
    };
    // SAFETY: map value pointer from a successful lookup.
    let comm = unsafe { (*p).comm };
    let _ = INFLIGHT.remove(key);
    let want = COMM.load();
    if want.comm[0] != 0 && want.comm != comm {
        return 0;
    }
    let bytes = match tp_field::<u32>(&ctx, cfg.issue.bytes) {
        Some(b) => b as u64,
        None => (tp_field::<u32>(&ctx, cfg.issue.nr_sector).unwrap_or(0) as u64) << 9,
    };
    hist_record(
        &HIST,
        &HIST_STATS,
        &COUNTERS,
        SizeGroup { comm },
        bytes.checked_div(cfg.unit_div).unwrap_or(0),
    );
    0
}
