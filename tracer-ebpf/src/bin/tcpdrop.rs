//! tcpdrop: TCP packets freed as drops (skb:kfree_skb with a drop reason), with
//! the packet's addresses and ports read from its headers.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_stack},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    block::NO_FIELD,
    counters::{Counter, NUM_COUNTERS},
    tcp::{AF_INET, AF_INET6},
    tcpdrop::{
        DropConfig, DropEvent, ETH_P_IP, ETH_P_IPV6, FLAG_COUNT, FLAG_STACK, MAX_FRAMES,
        StackedDrop,
    },
};
use tracer_ebpf::{
    NO_PREALLOC, count, emit, kread, now_ns, percpu_add, raw_arg, tp_field, wakeup_flags,
};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<DropConfig> = Global::new(DropConfig {
    skbaddr: 8,
    location: 16,
    rx_sk: NO_FIELD,
    protocol: 32,
    reason: 36,
    raw_args: 2,
    sock: tracer_common::tcpretrans::RetransConfig::INITIAL.sock,
    flags: 0,
});

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Drops per reason (FLAG_COUNT).
#[map]
static REASONS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(1024, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

const IPPROTO_TCP: u8 = 6;
const UNSET: u16 = 0xffff;

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let Some(proto) = tp_field::<u16>(&ctx, cfg.protocol) else {
        return 0;
    };
    let Some(skb) = tp_field::<u64>(&ctx, cfg.skbaddr) else {
        return 0;
    };
    let freed = FreedSkb {
        skb,
        proto,
        rx_sk: tp_field::<u64>(&ctx, cfg.rx_sk).unwrap_or(0),
        reason: tp_field(&ctx, cfg.reason).unwrap_or(0),
        location: tp_field(&ctx, cfg.location).unwrap_or(0),
    };
    on_drop(&ctx, &cfg, &freed);
    0
}

/// The same from the raw tracepoint: (skb, location[, reason[, rx_sk]]).
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb_raw(ctx: RawTracePointContext) -> i32 {
    let cfg = CONFIG.load();
    let skb = raw_arg(&ctx, 0, cfg.raw_args);
    let Some(proto) = kread::<u16>(skb, cfg.sock.skb_protocol) else {
        return 0;
    };
    let freed = FreedSkb {
        skb,
        proto: u16::from_be(proto),
        location: raw_arg(&ctx, 1, cfg.raw_args),
        reason: raw_arg(&ctx, 2, cfg.raw_args) as u32,
        rx_sk: raw_arg(&ctx, 3, cfg.raw_args),
    };
    on_drop(&ctx, &cfg, &freed);
    0
}

/// What the kernel passes about a freed packet; `proto` in host order.
struct FreedSkb {
    skb: u64,
    proto: u16,
    rx_sk: u64,
    reason: u32,
    location: u64,
}

#[inline(always)]
fn on_drop<C: EbpfContext>(ctx: &C, cfg: &DropConfig, d: &FreedSkb) {
    if d.proto != ETH_P_IP && d.proto != ETH_P_IPV6 {
        return;
    }
    let s = &cfg.sock;
    let head: u64 = kread(d.skb, s.skb_head).unwrap_or(0);
    let nh: u16 = kread(d.skb, s.skb_network_header).unwrap_or(UNSET);
    let th: u16 = kread(d.skb, s.skb_transport_header).unwrap_or(UNSET);
    if head == 0 || nh == UNSET {
        return;
    }
    let ip = head + nh as u64;
    let Some(first) = kread::<u8>(ip, 0) else {
        return;
    };
    let mut e = DropEvent::default();
    let header_len = match first >> 4 {
        4 => {
            if kread::<u8>(ip, 9) != Some(IPPROTO_TCP) {
                return;
            }
            e.family = AF_INET;
            e.saddr[..4].copy_from_slice(&kread::<[u8; 4]>(ip, 12).unwrap_or_default());
            e.daddr[..4].copy_from_slice(&kread::<[u8; 4]>(ip, 16).unwrap_or_default());
            (first & 0xf) as u64 * 4
        }
        6 => {
            if kread::<u8>(ip, 6) != Some(IPPROTO_TCP) {
                return;
            }
            e.family = AF_INET6;
            e.saddr = kread(ip, 8).unwrap_or_default();
            e.daddr = kread(ip, 24).unwrap_or_default();
            40
        }
        _ => return,
    };
    let tcp = if th != UNSET && th > nh {
        head + th as u64
    } else {
        ip + header_len
    };
    e.sport = u16::from_be(kread(tcp, 0).unwrap_or(0));
    e.dport = u16::from_be(kread(tcp, 2).unwrap_or(0));
    e.tcp_flags = kread(tcp, 13).unwrap_or(0);
    let sk = if d.rx_sk != 0 {
        d.rx_sk
    } else {
        kread(d.skb, s.skb_sk).unwrap_or(0)
    };
    e.state = kread::<u8>(sk, s.skc_state).unwrap_or(0) as u32;
    e.reason = d.reason;
    if cfg.flags & FLAG_COUNT != 0 {
        percpu_add(&REASONS, &e.reason, 1, &COUNTERS);
        return;
    }
    e.location = d.location;
    e.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    e.ts = now_ns();
    if cfg.flags & FLAG_STACK != 0 {
        emit_with_stack(ctx, &e);
    } else {
        emit(&EVENTS, &COUNTERS, &e);
    }
}

/// Sends the drop with the kernel stack written straight into its record (too
/// big for the 512-byte BPF stack).
#[inline(always)]
fn emit_with_stack<C: EbpfContext>(ctx: &C, e: &DropEvent) {
    let Some(mut entry) = EVENTS.reserve::<StackedDrop>(0) else {
        count(&COUNTERS, Counter::Lost);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: rec is the reserved record, sized for StackedDrop; the helper
    // writes at most the frames array.
    let written = unsafe {
        (*rec).drop = *e;
        bpf_get_stack(
            ctx.as_ptr(),
            (*rec).frames.as_mut_ptr().cast(),
            (MAX_FRAMES * 8) as u32,
            0,
        )
    };
    let frames = if written > 0 { written as u32 / 8 } else { 0 };
    if frames == 0 {
        count(&COUNTERS, Counter::NoStack);
    }
    // SAFETY: as above.
    unsafe { (*rec).drop.frames = frames };
    entry.submit(wakeup_flags(&EVENTS));
}
