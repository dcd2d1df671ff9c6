//! biosnoop: one ring-buffer record per completed block I/O, with the task that
//! submitted it. Outliers are filtered in the kernel (--min-latency).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::{
    biosnoop::BioEvent,
    block::{BlockConfig, Inflight, RqKey},
    counters::NUM_COUNTERS,
};
use tracer_ebpf::{
    block::{self, RqEvent},
    emit,
};

tracer_ebpf::license!();
tracer_ebpf::block_programs!(CONFIG, requests, submit, insert, issue);

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);

// In-flight requests: array slots, and the overflow map for collisions.
tracer_ebpf::inflight_table!(fn requests, INFLIGHT_SLOTS, INFLIGHT: RqKey => Inflight);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::block_hook!(CONFIG, complete, complete);

#[inline(always)]
fn complete(cfg: &BlockConfig, e: &impl RqEvent) {
    let Some((rq, now)) = block::on_complete(e, cfg, &requests()) else {
        return;
    };
    let lat_ns = now.saturating_sub(rq.ts_issue);
    if lat_ns < cfg.min_latency_ns {
        return;
    }
    let event = BioEvent {
        ts: now,
        sector: e.sector(cfg),
        lat_ns,
        queue_ns: if rq.ts_insert != 0 {
            rq.ts_issue.saturating_sub(rq.ts_insert)
        } else {
            0
        },
        tgid: rq.tgid,
        dev: e.dev(cfg),
        bytes: rq.bytes,
        _pad: 0,
        rwbs: e.rwbs(cfg),
        comm: rq.comm,
    };
    emit(&EVENTS, &COUNTERS, &event);
}
