//! tcpretrans: one record (or per-flow count) per TCP retransmit, telling a tail
//! loss probe (L) from an RTO or fast retransmit (R) by the socket's timer and
//! congestion state, which the tracepoint's skaddr lets us read.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    counters::{Counter, NUM_COUNTERS},
    tcp::{ICSK_TIME_LOSS_PROBE, TCP_CA_RECOVERY},
    tcpretrans::{
        FLAG_COUNT, FLAG_FAILED, FLAG_NETNS, KIND_FAILED, KIND_LOSS_PROBE, KIND_RETRANS,
        KIND_SYNACK, RetransConfig, RetransEvent, RetransKey,
    },
};
use tracer_ebpf::{
    NO_PREALLOC, count, emit, kread, now_ns, raw_arg,
    tcp::{read_flow, read_sock_flow},
    tp_field,
};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<RetransConfig> = Global::new(RetransConfig::INITIAL);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
#[map]
static COUNTS: PerCpuHashMap<RetransKey, u64> = PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// TCP_NEW_SYN_RECV: the state of a request socket (SYN-ACK retransmits).
const TCP_NEW_SYN_RECV: i32 = 12;

#[inline(always)]
fn netns(cfg: &RetransConfig, sk: u64) -> u32 {
    if cfg.flags & FLAG_NETNS == 0 {
        return 0;
    }
    let net: u64 = kread(sk, cfg.sock.skc_net).unwrap_or(0);
    kread(net, cfg.sock.net_inum).unwrap_or(0)
}

/// Inlined: as a BPF-to-BPF call its frame plus the caller's exceeded the
/// 512-byte stack on 6.1 ("combined stack size of 2 calls is 544").
#[inline(always)]
fn report(cfg: &RetransConfig, e: &mut RetransEvent) {
    if cfg.flags & FLAG_COUNT != 0 {
        let key = RetransKey {
            flow: e.flow,
            netns: e.netns,
            kind: e.kind as u32,
        };
        match COUNTS.get_ptr_mut(key) {
            // SAFETY: per-CPU value, only this CPU writes it.
            Some(n) => unsafe { *n += e.segs as u64 },
            None => {
                if COUNTS.insert(key, e.segs as u64, BPF_ANY as u64).is_err() {
                    count(&COUNTERS, Counter::MapFull);
                }
            }
        }
        return;
    }
    e.ts = now_ns();
    e.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit(&EVENTS, &COUNTERS, e);
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let mut e = RetransEvent::default();
    if !read_flow(&ctx, &cfg.addrs, &mut e.flow) {
        return 0;
    }
    let sk: u64 = tp_field(&ctx, cfg.skaddr).unwrap_or(0);
    let skb: u64 = tp_field(&ctx, cfg.skbaddr).unwrap_or(0);
    e.err = tp_field(&ctx, cfg.err).unwrap_or(0);
    e.state = tp_field(&ctx, cfg.state).unwrap_or(0);
    on_retransmit(&cfg, &mut e, sk, skb);
    0
}

/// The same from the raw tracepoint: (sk, skb[, err]).
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_raw(ctx: RawTracePointContext) -> i32 {
    let cfg = CONFIG.load();
    let mut e = RetransEvent::default();
    let sk = raw_arg(&ctx, 0, cfg.raw_args);
    if !read_sock_flow(sk, &cfg.skc, &mut e.flow) {
        return 0;
    }
    let skb = raw_arg(&ctx, 1, cfg.raw_args);
    e.err = raw_arg(&ctx, 2, cfg.raw_args) as i32;
    e.state = kread::<u8>(sk, cfg.sock.skc_state).unwrap_or(0) as i32;
    on_retransmit(&cfg, &mut e, sk, skb);
    0
}

/// A retransmit whose flow, error and state are in `e`: filtered, classified,
/// then counted or sent.
#[inline(always)]
fn on_retransmit(cfg: &RetransConfig, e: &mut RetransEvent, sk: u64, skb: u64) {
    if cfg.family != 0 && e.flow.family != cfg.family {
        return;
    }
    e.kind = if e.err != 0 {
        // Kernels >= 6.17 report failed attempts too: not retransmits.
        if cfg.flags & FLAG_FAILED == 0 {
            return;
        }
        KIND_FAILED
    } else {
        // A loss probe is sent from the ICSK_TIME_LOSS_PROBE timer while the
        // connection is in Open/Disorder/CWR; an RTO clears icsk_pending first
        // and enters Loss, a fast retransmit runs in Recovery or Loss.
        let s = &cfg.sock;
        let pending: u8 = kread(sk, s.icsk_pending).unwrap_or(0);
        let ca_byte: u8 = kread(sk, s.icsk_ca_state).unwrap_or(0xff);
        let ca_state = (ca_byte >> s.ca_state_shift) & ((1u16 << s.ca_state_bits) - 1) as u8;
        if pending == ICSK_TIME_LOSS_PROBE && ca_state < TCP_CA_RECOVERY {
            KIND_LOSS_PROBE
        } else {
            KIND_RETRANS
        }
    };
    e.segs = kread::<u16>(skb, cfg.sock.skb_gso_segs).unwrap_or(1).max(1) as u32;
    e.netns = netns(cfg, sk);
    report(cfg, e);
}

/// SYN-ACK retransmits go through a request socket and this tracepoint only;
/// the kernel counts them in TcpRetransSegs as well.
#[tracepoint]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let mut e = RetransEvent::default();
    if !read_flow(&ctx, &cfg.synack, &mut e.flow) {
        return 0;
    }
    let sk: u64 = tp_field(&ctx, cfg.skaddr).unwrap_or(0);
    on_synack(&cfg, &mut e, sk);
    0
}

/// The same from the raw tracepoint: (listener sk, request sock), the flow
/// read from the request sock.
#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack_raw(ctx: RawTracePointContext) -> i32 {
    let cfg = CONFIG.load();
    let mut e = RetransEvent::default();
    let req = raw_arg(&ctx, 1, 2);
    if !read_sock_flow(req, &cfg.skc, &mut e.flow) {
        return 0;
    }
    let sk = raw_arg(&ctx, 0, 2);
    on_synack(&cfg, &mut e, sk);
    0
}

#[inline(always)]
fn on_synack(cfg: &RetransConfig, e: &mut RetransEvent, sk: u64) {
    if cfg.family != 0 && e.flow.family != cfg.family {
        return;
    }
    e.netns = netns(cfg, sk);
    e.state = TCP_NEW_SYN_RECV;
    e.segs = 1;
    e.kind = KIND_SYNACK;
    report(cfg, e);
}
