//! faultsnoop: one record per page fault with its handling time; outliers are
//! filtered in the kernel (--min-latency).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_get_current_comm,
    macros::{map, perf_event, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, TracePointContext},
};
use tracer_common::{
    INFLIGHT_SLOTS as INFLIGHT_SLOTS_LEN, Slot,
    counters::NUM_COUNTERS,
    fault::{FaultConfig, FaultStart},
    faultsnoop::FaultEvent,
};
use tracer_ebpf::{NO_COMMON_LRU, current_tgid, emit, fault};

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
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 24, 0);
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
    let Some((tid, start, now)) = fault::on_end(&cfg, &faults()) else {
        return;
    };
    let lat_ns = now.saturating_sub(start.ts);
    if lat_ns < cfg.min_latency_ns {
        return;
    }
    let event = FaultEvent {
        ts: now,
        lat_ns,
        address: start.address,
        ip: start.ip,
        tgid: current_tgid(),
        tid,
        error_code: start.error_code,
        kernel: start.kernel,
        major,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    emit(&EVENTS, &COUNTERS, &event);
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
