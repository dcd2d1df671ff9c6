//! Block request tracking through the classic block tracepoints, keyed by (dev,
//! sector). The submitting task is captured at submission (block_io_start, or
//! block_bio_queue on kernels without it), where `current` is the task that asked
//! for the I/O; issue and completion may run in other contexts.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_comm,
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    block::{BlockConfig, FLAG_ATTRIBUTE, Inflight, RqFields, RqKey},
    counters::Counter,
};

use crate::{count, current_tgid, now_ns, task_passes, tp_field};

#[inline(always)]
pub fn rq_key(ctx: &TracePointContext, f: &RqFields, cfg: &BlockConfig) -> Option<RqKey> {
    let dev: u32 = tp_field(ctx, f.dev)?;
    if cfg.dev != 0 && dev != cfg.dev {
        return None;
    }
    let sector: u64 = tp_field(ctx, f.sector)?;
    Some(RqKey {
        dev,
        _pad: 0,
        sector,
    })
}

#[inline(always)]
fn current_task(v: &mut Inflight) {
    v.tgid = current_tgid();
    v.comm = bpf_get_current_comm().unwrap_or_default();
}

/// block_io_start / block_bio_queue: remember who submitted the I/O.
#[inline(always)]
pub fn on_submit(
    ctx: &TracePointContext,
    cfg: &BlockConfig,
    inflight: &LruHashMap<RqKey, Inflight>,
) {
    if !task_passes(&cfg.task) {
        return;
    }
    let Some(key) = rq_key(ctx, &cfg.submit, cfg) else {
        return;
    };
    let mut v = Inflight::default();
    current_task(&mut v);
    let _ = inflight.insert(key, v, BPF_ANY as u64);
}

/// Finds the request's entry, or creates one attributed to the current task when
/// no task filter is set. None: not ours.
#[inline(always)]
pub fn entry(
    key: &RqKey,
    cfg: &BlockConfig,
    inflight: &LruHashMap<RqKey, Inflight>,
    counters: &PerCpuArray<u64>,
) -> Option<*mut Inflight> {
    if let Some(p) = inflight.get_ptr_mut(key) {
        return Some(p);
    }
    if cfg.filters_tasks() {
        return None;
    }
    let mut v = Inflight::default();
    if cfg.flags & FLAG_ATTRIBUTE != 0 {
        current_task(&mut v);
        count(counters, Counter::Unattributed);
    }
    if inflight.insert(key, v, BPF_ANY as u64).is_err() {
        count(counters, Counter::MapFull);
        return None;
    }
    inflight.get_ptr_mut(key)
}

/// block_rq_insert (only attached with -Q).
#[inline(always)]
pub fn on_insert(
    ctx: &TracePointContext,
    cfg: &BlockConfig,
    inflight: &LruHashMap<RqKey, Inflight>,
    counters: &PerCpuArray<u64>,
) {
    let Some(key) = rq_key(ctx, &cfg.insert, cfg) else {
        return;
    };
    if let Some(p) = entry(&key, cfg, inflight, counters) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*p).ts_insert = now_ns() };
    }
}

/// block_rq_issue: the request goes to the driver. Returns the entry and key.
#[inline(always)]
pub fn on_issue(
    ctx: &TracePointContext,
    cfg: &BlockConfig,
    inflight: &LruHashMap<RqKey, Inflight>,
    counters: &PerCpuArray<u64>,
) -> Option<(RqKey, *mut Inflight)> {
    let key = rq_key(ctx, &cfg.issue, cfg)?;
    let p = entry(&key, cfg, inflight, counters)?;
    // SAFETY: map value pointer from a successful lookup.
    let v = unsafe { &mut *p };
    if v.ts_issue != 0 {
        count(counters, Counter::Replaced);
    }
    v.ts_issue = now_ns();
    v.bytes = match tp_field::<u32>(ctx, cfg.issue.bytes) {
        Some(b) => b,
        None => tp_field::<u32>(ctx, cfg.issue.nr_sector).unwrap_or(0) << 9,
    };
    count(counters, Counter::Started);
    Some((key, p))
}

/// block_rq_complete: returns the finished request, its key and the time now;
/// its in-flight entry is removed.
#[inline(always)]
pub fn on_complete(
    ctx: &TracePointContext,
    cfg: &BlockConfig,
    inflight: &LruHashMap<RqKey, Inflight>,
    counters: &PerCpuArray<u64>,
) -> Option<(RqKey, Inflight, u64)> {
    let key = rq_key(ctx, &cfg.complete, cfg)?;
    let now = now_ns();
    let Some(p) = inflight.get_ptr(key) else {
        if !cfg.filters_tasks() {
            count(counters, Counter::Unmatched);
        }
        return None;
    };
    // SAFETY: map value pointer from a successful lookup.
    let v = unsafe { *p };
    let _ = inflight.remove(key);
    if v.ts_issue == 0 {
        // Submitted (attributed) but its issue was never seen.
        count(counters, Counter::Unmatched);
        return None;
    }
    count(counters, Counter::Matched);
    Some((key, v, now))
}
