//! biosnoop: one ring-buffer record per completed block I/O, with the task that
//! submitted it. Outliers are filtered in the kernel (--min-latency).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use tracer_common::{
    biosnoop::BioEvent,
    block::{BlockConfig, Inflight, RqKey},
    counters::NUM_COUNTERS,
};
use tracer_ebpf::{block, emit};

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

#[tracepoint]
pub fn block_complete(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let Some((key, rq, now)) = block::on_complete(&ctx, &cfg, &requests()) else {
        return 0;
    };
    let lat_ns = now.saturating_sub(rq.ts_issue);
    if lat_ns < cfg.min_latency_ns {
        return 0;
    }
    let event = BioEvent {
        ts: now,
        sector: key.sector,
        lat_ns,
        queue_ns: if rq.ts_insert != 0 {
            rq.ts_issue.saturating_sub(rq.ts_insert)
        } else {
            0
        },
        tgid: rq.tgid,
        dev: key.dev,
        bytes: rq.bytes,
        _pad: 0,
        rwbs: block::rwbs(&ctx, cfg.complete.rwbs),
        comm: rq.comm,
    };
    emit(&EVENTS, &COUNTERS, &event);
    0
}
