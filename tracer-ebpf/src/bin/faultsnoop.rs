//! faultsnoop: one record per page fault with its handling time; outliers are
//! filtered in the kernel (--min-latency).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_get_current_comm,
    macros::{map, perf_event},
    maps::{PerCpuArray, RingBuf},
    programs::PerfEventContext,
};
use tracer_common::{
    counters::NUM_COUNTERS,
    fault::{FLAG_ALL_MAJOR, FaultConfig},
    faultsnoop::FaultEvent,
};
use tracer_ebpf::{current_tgid, emit, fault};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<FaultConfig> = Global::new(FaultConfig::INITIAL);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 21, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

tracer_ebpf::fault_start_programs!();

#[inline(always)]
fn end(major: u32) {
    let cfg = CONFIG.load();
    let Some((tid, start, now)) = fault::on_end(&cfg, &faults()) else {
        return;
    };
    let lat_ns = now.saturating_sub(start.ts);
    if lat_ns < cfg.min_latency_ns && !(major != 0 && cfg.flags & FLAG_ALL_MAJOR != 0) {
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
