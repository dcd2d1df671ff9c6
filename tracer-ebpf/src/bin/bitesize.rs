//! bitesize: I/O size histograms per process name, attributed to the submitter.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_get_current_comm,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    bitesize::{CommFilter, SizeGroup},
    block::{BlockConfig, FLAG_PER_DISK, Inflight, RqKey},
    counters::{Counter, NUM_COUNTERS},
    hist::{HistKey, HistStats},
};
use tracer_ebpf::{NO_PREALLOC, block::RqEvent, count, hist_record};

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

// The size is known at issue; the request's entry is not needed after it.
tracer_ebpf::block_hook!(CONFIG, issue, issue);

#[inline(always)]
fn issue(cfg: &BlockConfig, e: &impl RqEvent) {
    let Some(key) = e.key(cfg) else {
        return;
    };
    // The submitter's entry: under the request's first bio (see
    // FLAG_SUBMIT_BIO) or the request's own key.
    let requests = requests();
    let submitted = match e.submitted_as(cfg) {
        Some(bio) => requests.take(&bio, bio.slot()),
        None => None,
    };
    let comm = match submitted.or_else(|| requests.take(&key, key.slot())) {
        Some(v) => v.comm,
        None if cfg.filters_tasks() => return,
        None => {
            count(&COUNTERS, Counter::Unattributed);
            bpf_get_current_comm().unwrap_or_default()
        }
    };
    let want = COMM.load();
    if want.comm[0] != 0 && want.comm != comm {
        return;
    }
    let bytes = e.bytes(cfg) as u64;
    let value = bytes.checked_div(cfg.unit_div).unwrap_or(0);
    let group = if cfg.flags & FLAG_PER_DISK != 0 {
        SizeGroup {
            rwbs: e.rwbs(cfg),
            dev: e.dev(cfg),
            ..SizeGroup::default()
        }
    } else {
        SizeGroup {
            comm,
            ..SizeGroup::default()
        }
    };
    hist_record(&HIST, &HIST_STATS, &COUNTERS, group, value);
}
