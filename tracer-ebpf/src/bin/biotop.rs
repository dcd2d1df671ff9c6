//! biotop: per-process block I/O totals (count, bytes, time), counted in the kernel.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_ANY,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    biotop::{TopKey, TopValue},
    block::{BlockConfig, Inflight, RqKey},
    counters::{Counter, NUM_COUNTERS},
};
use tracer_ebpf::{
    NO_PREALLOC,
    block::{self, RqEvent},
    count,
};

tracer_ebpf::license!();
tracer_ebpf::block_programs!(CONFIG, requests, submit, issue);

#[unsafe(no_mangle)]
static CONFIG: Global<BlockConfig> = Global::new(BlockConfig::INITIAL);

// In-flight requests: array slots, and the overflow map for collisions.
tracer_ebpf::inflight_table!(fn requests, INFLIGHT_SLOTS, INFLIGHT: RqKey => Inflight);

#[map]
static TOTALS: PerCpuHashMap<TopKey, TopValue> =
    PerCpuHashMap::with_max_entries(10240, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::block_hook!(CONFIG, complete, complete);

#[inline(always)]
fn complete(cfg: &BlockConfig, e: &impl RqEvent) {
    let Some((rq, now)) = block::on_complete(e, cfg, &requests()) else {
        return;
    };
    let rwbs: [u8; 8] = e.rwbs(cfg);
    // The op letter follows an optional preflush 'F' (see blk_fill_rwbs).
    let write = rwbs[0] == b'W' || (rwbs[0] == b'F' && rwbs[1] == b'W');
    let top = TopKey {
        tgid: rq.tgid,
        dev: e.dev(cfg),
        write: write as u32,
        _pad: 0,
        comm: rq.comm,
    };
    let ns = now.saturating_sub(rq.ts_issue);
    match TOTALS.get_ptr_mut(top) {
        Some(v) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let v = unsafe { &mut *v };
            v.io += 1;
            v.bytes += rq.bytes as u64;
            v.ns += ns;
        }
        None => {
            let v = TopValue {
                io: 1,
                bytes: rq.bytes as u64,
                ns,
            };
            if TOTALS.insert(top, v, BPF_ANY as u64).is_err() {
                count(&COUNTERS, Counter::MapFull);
            }
        }
    }
}
