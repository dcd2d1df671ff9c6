//! tcprtt: the smoothed RTT of TCP connections as log2 histograms, sampled by
//! tcp:tcp_probe (each segment received on an established connection).
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use tracer_common::{
    counters::NUM_COUNTERS,
    hist::{HistKey, HistStats, SlotHist},
    tcp::{AF_INET, AF_INET6},
    tcprtt::{
        FLAG_LADDR, FLAG_LPORT, FLAG_PER_LADDR, FLAG_PER_RADDR, FLAG_RADDR, FLAG_RPORT, RttConfig,
        RttGroup,
    },
};
use tracer_ebpf::{NO_PREALLOC, hist_record, hist_record_slot, tp_field, tp_read};

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
    if cfg.flags & FLAG_LPORT != 0 && tp_read::<u16, 64>(&ctx, cfg.sport) != Some(cfg.lport) {
        return 0;
    }
    if cfg.flags & FLAG_RPORT != 0 && tp_read::<u16, 66>(&ctx, cfg.dport) != Some(cfg.rport) {
        return 0;
    }
    let needs_laddr = cfg.flags & (FLAG_LADDR | FLAG_PER_LADDR) != 0;
    let needs_raddr = cfg.flags & (FLAG_RADDR | FLAG_PER_RADDR) != 0;
    // Plain arrays, always written: an Option's payload left unwritten is
    // copied later, and 5.10's verifier refuses reads of uninitialized stack.
    let mut laddr = [0u8; 16];
    if needs_laddr {
        let Some(a) = addr(&ctx, cfg.saddr, family) else {
            return 0;
        };
        laddr = a;
    }
    let mut raddr = [0u8; 16];
    if needs_raddr {
        let Some(a) = addr(&ctx, cfg.daddr, family) else {
            return 0;
        };
        raddr = a;
    }
    if cfg.flags & FLAG_LADDR != 0 && (family != cfg.laddr_family || laddr != cfg.laddr) {
        return 0;
    }
    if cfg.flags & FLAG_RADDR != 0 && (family != cfg.raddr_family || raddr != cfg.raddr) {
        return 0;
    }
    let Some(srtt) = tp_read::<u32, 100>(&ctx, cfg.srtt) else {
        return 0;
    };
    let value = (srtt as u64).checked_div(cfg.unit_div).unwrap_or(0);
    let group = if cfg.flags & FLAG_PER_LADDR != 0 {
        laddr
    } else if cfg.flags & FLAG_PER_RADDR != 0 {
        raddr
    } else {
        hist_record_slot(&HIST_SLOTS, 0, value);
        return 0;
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
    0
}
