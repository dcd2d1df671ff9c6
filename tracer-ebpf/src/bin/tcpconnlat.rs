//! tcpconnlat: active TCP connect latency, from the socket's move to SYN_SENT (in
//! the connecting task) to ESTABLISHED, via sock:inet_sock_set_state.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    helpers::bpf_get_current_comm,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    INFLIGHT_SLOTS as INFLIGHT_SLOTS_LEN,
    counters::NUM_COUNTERS,
    hist::SlotHist,
    tcp::Flow,
    tcpconnlat::{ConnConfig, ConnEvent, ConnStart, FLAG_HIST},
};
use tracer_ebpf::{
    current_tgid, emit, hist_record_slot, kread, now_ns, raw_arg, task_passes,
    tcp::{read_flow, read_sock_flow},
    tp_field,
};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<ConnConfig> = Global::new(ConnConfig::INITIAL);

tracer_ebpf::inflight_table!(fn connects, INFLIGHT_SLOTS, INFLIGHT: u64 => ConnStart);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static HIST_SLOTS: PerCpuArray<SlotHist> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;

/// Sockets are at least 64-byte aligned: drop the low bits for the slot index.
#[inline(always)]
fn slot_of(sk: u64) -> u32 {
    ((sk >> 6) ^ (sk >> 16)) as u32 & (INFLIGHT_SLOTS_LEN - 1)
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    if tp_field::<u16>(&ctx, cfg.protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    let (Some(old), Some(new), Some(sk)) = (
        tp_field::<i32>(&ctx, cfg.oldstate),
        tp_field::<i32>(&ctx, cfg.newstate),
        tp_field::<u64>(&ctx, cfg.skaddr),
    ) else {
        return 0;
    };
    if let Some((start, now, lat_ns)) = on_change(&cfg, sk, old, new) {
        let mut f = Flow::default();
        if read_flow(&ctx, &cfg.addrs, &mut f) {
            report(&start, now, lat_ns, &f);
        }
    }
    0
}

/// The same from the raw tracepoint: (sk, oldstate, newstate), the protocol
/// and flow read from the socket.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> i32 {
    let cfg = CONFIG.load();
    let sk = raw_arg(&ctx, 0, 3);
    if kread::<u16>(sk, cfg.sk_protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    let (old, new) = (raw_arg(&ctx, 1, 3) as i32, raw_arg(&ctx, 2, 3) as i32);
    if let Some((start, now, lat_ns)) = on_change(&cfg, sk, old, new) {
        let mut f = Flow::default();
        if read_sock_flow(sk, &cfg.skc, &mut f) {
            report(&start, now, lat_ns, &f);
        }
    }
    0
}

/// A TCP socket's state change. A connect's start is remembered; its end is
/// recorded in the histogram, or returned (start, end, latency) when it is to
/// be reported with its flow.
#[inline(always)]
fn on_change(cfg: &ConnConfig, sk: u64, old: i32, new: i32) -> Option<(ConnStart, u64, u64)> {
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        // Inside connect(): the current task is the one connecting.
        if !task_passes(&cfg.task) {
            return None;
        }
        let now = now_ns();
        let start = ConnStart {
            ts: now,
            tgid: current_tgid(),
            _pad: 0,
            comm: bpf_get_current_comm().unwrap_or_default(),
        };
        let _ = connects().insert(&sk, slot_of(sk), &start, now);
        return None;
    }
    if old != TCP_SYN_SENT {
        return None;
    }
    // Established, or failed (SYN_SENT -> CLOSE): the attempt is over.
    let start = connects().take(&sk, slot_of(sk))?;
    if new != TCP_ESTABLISHED {
        return None;
    }
    let now = now_ns();
    let lat_ns = now.saturating_sub(start.ts);
    if cfg.flags & FLAG_HIST != 0 {
        hist_record_slot(
            &HIST_SLOTS,
            0,
            lat_ns.checked_div(cfg.unit_div).unwrap_or(0),
        );
        return None;
    }
    if lat_ns < cfg.min_latency_ns {
        return None;
    }
    Some((start, now, lat_ns))
}

#[inline(always)]
fn report(start: &ConnStart, now: u64, lat_ns: u64, f: &Flow) {
    let e = ConnEvent {
        ts: now,
        lat_ns,
        tgid: start.tgid,
        family: f.family,
        dport: f.rport,
        lport: f.lport,
        _pad: [0; 3],
        saddr: f.laddr,
        daddr: f.raddr,
        comm: start.comm,
    };
    emit(&EVENTS, &COUNTERS, &e);
}
