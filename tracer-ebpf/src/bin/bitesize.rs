//! bitesize: I/O size histograms per process name, attributed to the submitter.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_get_current_comm,
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use tracer_common::{
    bitesize::{CommFilter, SizeGroup},
    block::{BlockConfig, FLAG_PER_DISK, Inflight, RqKey},
    counters::{Counter, NUM_COUNTERS},
    hist::{HistKey, HistStats},
};
use tracer_ebpf::{NO_PREALLOC, block, count, hist_record};

tracer_ebpf::license!();
tracer_ebpf::block_programs!(CONFIG, requests, submit);

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);
#[unsafe(no_mangle)]
static COMM: Global<CommFilter> = Global::new(CommFilter { comm: [1; 16] });

// In-flight requests: array slots, and the overflow map for collisions.
tracer_ebpf::inflight_table!(fn requests, INFLIGHT_SLOTS, INFLIGHT: RqKey => Inflight);

#[map]
static HIST: PerCpuHashMap<HistKey<SizeGroup>, u64> =
    PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
#[map]
static HIST_STATS: PerCpuHashMap<SizeGroup, HistStats> =
    PerCpuHashMap::with_max_entries(4096, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// The size is known at issue; the request's entry is not needed after it.
#[tracepoint]
pub fn block_issue(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let Some(key) = block::rq_key(&ctx, &cfg.issue, &cfg) else {
        return 0;
    };
    let comm = match requests().take(&key, key.slot()) {
        Some(v) => v.comm,
        None if cfg.filters_tasks() => return 0,
        None => {
            count(&COUNTERS, Counter::Unattributed);
            bpf_get_current_comm().unwrap_or_default()
        }
    };
    let want = COMM.load();
    if want.comm[0] != 0 && want.comm != comm {
        return 0;
    }
    let bytes = block::issue_bytes(&ctx, &cfg) as u64;
    let value = bytes.checked_div(cfg.unit_div).unwrap_or(0);
    let group = if cfg.flags & FLAG_PER_DISK != 0 {
        SizeGroup {
            rwbs: block::rwbs(&ctx, cfg.issue.rwbs),
            dev: key.dev,
            ..SizeGroup::default()
        }
    } else {
        SizeGroup {
            comm,
            ..SizeGroup::default()
        }
    };
    hist_record(&HIST, &HIST_STATS, &COUNTERS, group, value);
    0
}
