//! Block request tracking through the classic block tracepoints, keyed by (dev,
//! sector). The submitting task is captured at submission (block_io_start, or
//! block_bio_queue on kernels without it), where `current` is the task that asked
//! for the I/O; issue and completion may run in other contexts.

use aya_ebpf::{helpers::bpf_get_current_comm, programs::TracePointContext};
use tracer_common::{
    block::{BlockConfig, FLAG_ATTRIBUTE, Inflight, RqFields, RqKey, layout},
    counters::Counter,
};

use crate::{
    count, current_tgid,
    inflight::{Entry, Table},
    now_ns, task_passes, tp_field, tp_read,
};

/// The in-flight table of block requests.
pub type Requests<'a> = Table<'a, RqKey, Inflight>;

impl Entry for Inflight {
    fn stamp(&self) -> u64 {
        self.ts_first
    }
}

/// A record's rwbs flags, zero after the terminating NUL: the kernel leaves
/// whatever its buffer held there, and a map key (biolatency -F) must not
/// depend on it (it split one flag set into several groups).
#[inline(always)]
pub fn rwbs(ctx: &TracePointContext, off: u16) -> [u8; 8] {
    let mut r: [u8; 8] = tp_field(ctx, off).unwrap_or_default();
    let mut ended = false;
    for b in r.iter_mut() {
        ended |= *b == 0;
        if ended {
            *b = 0;
        }
    }
    r
}

/// The programs every block tool with an in-flight table attaches the same way:
/// `block_submit`, and (when named) `block_insert` and `block_issue`.
#[macro_export]
macro_rules! block_programs {
    ($config:ident, $requests:ident $(, $prog:ident)*) => {
        $(
            $crate::block_programs!(@one $prog, $config, $requests);
        )*
    };
    (@one submit, $config:ident, $requests:ident) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn block_submit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::block::on_submit(&ctx, &$config.load(), &$requests());
            0
        }
    };
    (@one insert, $config:ident, $requests:ident) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn block_insert(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::block::on_insert(&ctx, &$config.load(), &$requests());
            0
        }
    };
    (@one issue, $config:ident, $requests:ident) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn block_issue(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::block::on_issue(&ctx, &$config.load(), &$requests());
            0
        }
    };
}

#[inline(always)]
pub fn rq_key(ctx: &TracePointContext, f: &RqFields, cfg: &BlockConfig) -> Option<RqKey> {
    let dev: u32 = tp_read::<_, { layout::DEV }>(ctx, f.dev)?;
    if cfg.dev != 0 && dev != cfg.dev {
        return None;
    }
    let sector: u64 = tp_read::<_, { layout::SECTOR }>(ctx, f.sector)?;
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
pub fn on_submit(ctx: &TracePointContext, cfg: &BlockConfig, requests: &Requests) {
    if !task_passes(&cfg.task) {
        return;
    }
    let Some(key) = rq_key(ctx, &cfg.submit, cfg) else {
        return;
    };
    let now = now_ns();
    let mut v = Inflight {
        ts_first: now,
        ..Inflight::default()
    };
    current_task(&mut v);
    let _ = requests.insert(&key, key.slot(), &v, now);
}

/// Finds the request's entry, or creates one attributed to the current task when
/// no task filter is set. None: not ours.
#[inline(always)]
pub fn entry(
    key: &RqKey,
    cfg: &BlockConfig,
    requests: &Requests,
    now: u64,
) -> Option<*mut Inflight> {
    if let Some(p) = requests.find(key, key.slot()) {
        return Some(p);
    }
    if cfg.filters_tasks() {
        return None;
    }
    let mut v = Inflight {
        ts_first: now,
        ..Inflight::default()
    };
    if cfg.flags & FLAG_ATTRIBUTE != 0 {
        current_task(&mut v);
        count(requests.counters, Counter::Unattributed);
    }
    requests.insert(key, key.slot(), &v, now)
}

/// block_rq_insert (only attached with -Q).
#[inline(always)]
pub fn on_insert(ctx: &TracePointContext, cfg: &BlockConfig, requests: &Requests) {
    let Some(key) = rq_key(ctx, &cfg.insert, cfg) else {
        return;
    };
    let now = now_ns();
    if let Some(p) = entry(&key, cfg, requests, now) {
        // SAFETY: table entry pointer.
        unsafe { (*p).ts_insert = now };
    }
}

/// The request's size from the block_rq_issue record.
#[inline(always)]
pub fn issue_bytes(ctx: &TracePointContext, cfg: &BlockConfig) -> u32 {
    match tp_read::<u32, { layout::BYTES }>(ctx, cfg.issue.bytes) {
        Some(b) => b,
        None => tp_read::<u32, { layout::NR_SECTOR }>(ctx, cfg.issue.nr_sector).unwrap_or(0) << 9,
    }
}

/// block_rq_issue: the request goes to the driver.
#[inline(always)]
pub fn on_issue(ctx: &TracePointContext, cfg: &BlockConfig, requests: &Requests) {
    let Some(key) = rq_key(ctx, &cfg.issue, cfg) else {
        return;
    };
    let now = now_ns();
    let Some(p) = entry(&key, cfg, requests, now) else {
        return;
    };
    // SAFETY: table entry pointer.
    let v = unsafe { &mut *p };
    if v.ts_issue != 0 {
        // Issued again (requeued): time the last issue.
        count(requests.counters, Counter::Replaced);
    }
    v.ts_issue = now;
    v.bytes = issue_bytes(ctx, cfg);
}

/// block_rq_complete: returns the finished request, its key and the time now;
/// its in-flight entry is removed.
#[inline(always)]
pub fn on_complete(
    ctx: &TracePointContext,
    cfg: &BlockConfig,
    requests: &Requests,
) -> Option<(RqKey, Inflight, u64)> {
    let key = rq_key(ctx, &cfg.complete, cfg)?;
    let Some(v) = requests.take(&key, key.slot()) else {
        if !cfg.filters_tasks() {
            count(requests.counters, Counter::Unmatched);
        }
        return None;
    };
    if v.ts_issue == 0 {
        // Submitted (attributed) but its issue was never seen.
        count(requests.counters, Counter::Unmatched);
        return None;
    }
    Some((key, v, now_ns()))
}
