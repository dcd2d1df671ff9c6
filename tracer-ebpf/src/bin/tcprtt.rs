//! tcprtt: the smoothed RTT of TCP connections as log2 histograms, sampled by
//! tcp:tcp_probe (each segment received on an established connection).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    counters::NUM_COUNTERS,
    hist::{HistKey, HistStats, SlotHist},
    tcp::{AF_INET, AF_INET6, Flow},
    tcprtt::{
        FLAG_LADDR, FLAG_LPORT, FLAG_PER_LADDR, FLAG_PER_RADDR, FLAG_RADDR, FLAG_RPORT, RttConfig,
        RttGroup,
    },
};
use tracer_ebpf::{
    NO_PREALLOC, hist_record, hist_record_slot, kread, raw_arg, tcp::read_sock_flow, tp_field,
    tp_read,
};

tracer_ebpf::license!();

#[unsafe(no_mangle)]
static CONFIG: Global<RttConfig> = Global::new(RttConfig::INITIAL);

#[map]
static HIST_SLOTS: PerCpuArray<SlotHist> = PerCpuArray::with_max_entries(1, 0);
#[map]
static HIST: PerCpuHashMap<HistKey<RttGroup>, u64> =
    PerCpuHashMap::with_max_entries(16384, NO_PREALLOC);
#[map]
static HIST_STATS: PerCpuHashMap<RttGroup, HistStats> =
    PerCpuHashMap::with_max_entries(4096, NO_PREALLOC);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// The address in a sockaddr_in / sockaddr_in6 field (IPv4 in the first bytes).
#[inline(always)]
fn addr(ctx: &TracePointContext, field: u16, family: u16) -> Option<[u8; 16]> {
    let mut a = [0u8; 16];
    match family {
        AF_INET => a[..4].copy_from_slice(&tp_field::<[u8; 4]>(ctx, field + 4)?),
        AF_INET6 => a = tp_field(ctx, field + 8)?,
        _ => return None,
    }
    Some(a)
}

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    let cfg = CONFIG.load();
    let Some(family) = tp_read::<u16, 68>(&ctx, cfg.family) else {
        return 0;
    };
    let mut flow = Flow {
        family,
        ..Flow::default()
    };
    if cfg.flags & FLAG_LPORT != 0 {
        flow.lport = tp_read::<u16, 64>(&ctx, cfg.sport).unwrap_or(0);
    }
    if cfg.flags & FLAG_RPORT != 0 {
        flow.rport = tp_read::<u16, 66>(&ctx, cfg.dport).unwrap_or(0);
    }
    // Plain arrays, always written: an Option's payload left unwritten is
    // copied later, and 5.10's verifier refuses reads of uninitialized stack.
    if cfg.flags & (FLAG_LADDR | FLAG_PER_LADDR) != 0 {
        let Some(a) = addr(&ctx, cfg.saddr, family) else {
            return 0;
        };
        flow.laddr = a;
    }
    if cfg.flags & (FLAG_RADDR | FLAG_PER_RADDR) != 0 {
        let Some(a) = addr(&ctx, cfg.daddr, family) else {
            return 0;
        };
        flow.raddr = a;
    }
    let Some(srtt) = tp_read::<u32, 100>(&ctx, cfg.srtt) else {
        return 0;
    };
    on_sample(&cfg, &flow, srtt);
    0
}

/// The same from the raw tracepoint: (sk, skb), the flow and srtt read from
/// the socket. The socket's layout is taken from the configuration first and
/// the rest after the reads: held together across the helper calls, the
/// configuration's bytes were spilled to 488 bytes of stack, which with a
/// callee's frame 6.1 and 5.10 refuse (over 512).
#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn tcp_probe_raw(ctx: RawTracePointContext) -> i32 {
    let (skc, srtt_off) = {
        let cfg = CONFIG.load();
        (cfg.skc, cfg.srtt_us)
    };
    let sk = raw_arg(&ctx, 0, 2);
    let mut flow = Flow::default();
    if !read_sock_flow(sk, &skc, &mut flow) {
        return 0;
    }
    let Some(srtt_us) = kread::<u32>(sk, srtt_off) else {
        return 0;
    };
    // As the classic tracepoint reports it.
    on_sample(&CONFIG.load(), &flow, srtt_us >> 3);
    0
}

/// One RTT sample of `flow` (its addresses and ports are only read where a
/// filter or grouping needs them): filtered, then recorded.
#[inline(always)]
fn on_sample(cfg: &RttConfig, flow: &Flow, srtt: u32) {
    if cfg.flags & FLAG_LPORT != 0 && flow.lport != cfg.lport {
        return;
    }
    if cfg.flags & FLAG_RPORT != 0 && flow.rport != cfg.rport {
        return;
    }
    let family = flow.family;
    if cfg.flags & FLAG_LADDR != 0 && (family != cfg.laddr_family || flow.laddr != cfg.laddr) {
        return;
    }
    if cfg.flags & FLAG_RADDR != 0 && (family != cfg.raddr_family || flow.raddr != cfg.raddr) {
        return;
    }
    let value = (srtt as u64).checked_div(cfg.unit_div).unwrap_or(0);
    let group = if cfg.flags & FLAG_PER_LADDR != 0 {
        flow.laddr
    } else if cfg.flags & FLAG_PER_RADDR != 0 {
        flow.raddr
    } else {
        hist_record_slot(&HIST_SLOTS, 0, value);
        return;
    };
    hist_record(
        &HIST,
        &HIST_STATS,
        &COUNTERS,
        RttGroup {
            addr: group,
            family,
            _pad: [0; 3],
        },
        value,
    );
}
