//! Block request tracking. A request is seen at submission (block_io_start, or
//! on kernels without it a kprobe on the I/O accounting start function that
//! tracepoint sits in, or block_bio_queue), where `current` is the task that
//! asked for the I/O, then at insert, issue and completion, which may run in
//! other contexts. Each hook has three programs: one on the raw tracepoint,
//! keying the request by its address and reading its fields at BTF offsets,
//! a twin on the BTF-typed tracepoint, which loads those fields directly
//! instead of through a helper call each, and one on the classic tracepoint,
//! keying it by (dev, sector) from the record; submission has a fourth, the
//! kprobe. A tool keys all its requests one way only (userspace decides), so
//! keys agree.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_comm,
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, TracePointContext},
};
use tracer_common::{
    block::{
        BlockConfig, FLAG_ATTRIBUTE, FLAG_SIZES, FLAG_SUBMIT_BIO, Inflight, RqArg, RqFields, RqKey,
        layout, mkdev,
    },
    counters::Counter,
};

use crate::{
    count, current_tgid,
    inflight::{Entry, Table},
    kload, kread, now_ns, raw_arg, task_passes, tp_field, tp_read,
};

/// The in-flight table of block requests.
pub type Requests<'a> = Table<'a, RqKey, Inflight>;

impl Entry for Inflight {
    fn stamp(&self) -> u64 {
        self.ts_first
    }
}

/// One hit of a block tracepoint: what the programs read about its request.
pub trait RqEvent {
    /// The in-flight key, or None when the request is on a disk not asked for.
    fn key(&self, cfg: &BlockConfig) -> Option<RqKey>;
    /// The key a submission is kept under (see FLAG_SUBMIT_BIO).
    fn submit_key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        self.key(cfg)
    }
    /// The key of the submission that made this request, when it is not the
    /// request's own (see FLAG_SUBMIT_BIO).
    fn submitted_as(&self, _: &BlockConfig) -> Option<RqKey> {
        None
    }
    /// The key to find an existing entry by. By address, that needs no device
    /// filter: only requests that passed it have entries.
    fn lookup_key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        self.key(cfg)
    }
    /// Kernel dev_t of the request's disk (0 if it has none).
    fn dev(&self, cfg: &BlockConfig) -> u32;
    fn sector(&self, cfg: &BlockConfig) -> u64;
    /// The request's size in bytes (at issue: all of it).
    fn bytes(&self, cfg: &BlockConfig) -> u32;
    /// Bytes completed (block_rq_complete only).
    fn done_bytes(&self, cfg: &BlockConfig) -> u32;
    fn rwbs(&self, cfg: &BlockConfig) -> [u8; 8];
}

/// A classic tracepoint's record, with its fields' offsets.
pub struct Classic<'a> {
    pub ctx: &'a TracePointContext,
    pub fields: &'a RqFields,
}

impl RqEvent for Classic<'_> {
    #[inline(always)]
    fn key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        let dev = self.dev(cfg);
        if cfg.dev != 0 && dev != cfg.dev {
            return None;
        }
        Some(RqKey {
            dev,
            _pad: 0,
            id: self.sector(cfg),
        })
    }

    #[inline(always)]
    fn dev(&self, _: &BlockConfig) -> u32 {
        tp_read::<u32, { layout::DEV }>(self.ctx, self.fields.dev).unwrap_or(0)
    }

    #[inline(always)]
    fn sector(&self, _: &BlockConfig) -> u64 {
        tp_read::<u64, { layout::SECTOR }>(self.ctx, self.fields.sector).unwrap_or(0)
    }

    #[inline(always)]
    fn bytes(&self, _: &BlockConfig) -> u32 {
        match tp_read::<u32, { layout::BYTES }>(self.ctx, self.fields.bytes) {
            Some(b) => b,
            None => self.sectors() << 9,
        }
    }

    #[inline(always)]
    fn done_bytes(&self, _: &BlockConfig) -> u32 {
        self.sectors() << 9
    }

    /// The record's rwbs flags, zero after the terminating NUL: the kernel
    /// leaves whatever its buffer held there, and a map key (biolatency -F)
    /// must not depend on it (it split one flag set into several groups).
    #[inline(always)]
    fn rwbs(&self, _: &BlockConfig) -> [u8; 8] {
        let mut r: [u8; 8] = tp_field(self.ctx, self.fields.rwbs).unwrap_or_default();
        let mut ended = false;
        for b in r.iter_mut() {
            ended |= *b == 0;
            if ended {
                *b = 0;
            }
        }
        r
    }
}

impl Classic<'_> {
    #[inline(always)]
    fn sectors(&self) -> u32 {
        tp_read::<u32, { layout::NR_SECTOR }>(self.ctx, self.fields.nr_sector).unwrap_or(0)
    }
}

/// A raw tracepoint's request (and, at completion, the bytes done), or the
/// request a kprobe's function was called with.
pub struct Raw<'a, C = RawTracePointContext> {
    pub ctx: &'a C,
    pub rq: u64,
    pub arg: RqArg,
    /// Always a request, never a bio standing for one (see FLAG_SUBMIT_BIO).
    request_only: bool,
}

impl<'a> Raw<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a RawTracePointContext, arg: RqArg) -> Raw<'a> {
        // The first argument is loaded directly (every block tracepoint has
        // one); a later one through raw_arg (see there).
        let rq = if arg.index == 0 {
            // SAFETY: the context holds at least one u64 argument.
            unsafe { *(ctx.as_ptr() as *const u64) }
        } else {
            raw_arg(ctx, arg.index as u16, arg.arity as u16)
        };
        Raw {
            ctx,
            rq,
            arg,
            request_only: false,
        }
    }
}

impl<'a> Raw<'a, ProbeContext> {
    /// At a kprobe on a function whose first argument is the request.
    #[inline(always)]
    pub fn probed(ctx: &'a ProbeContext) -> Raw<'a, ProbeContext> {
        Raw {
            ctx,
            rq: ctx.arg::<u64>(0).unwrap_or(0),
            arg: RqArg { index: 0, arity: 1 },
            request_only: true,
        }
    }
}

impl<C: EbpfContext> RqEvent for Raw<'_, C> {
    #[inline(always)]
    fn key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if self.rq == 0 || cfg.dev != 0 && self.dev(cfg) != cfg.dev {
            return None;
        }
        Some(RqKey::request(self.rq))
    }

    /// At block_bio_queue the argument is a bio, whose disk is not looked up:
    /// the device filter applies once it is a request.
    #[inline(always)]
    fn submit_key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if cfg.flags & FLAG_SUBMIT_BIO == 0 || self.request_only {
            return self.key(cfg);
        }
        (self.rq != 0).then(|| RqKey::request(self.rq))
    }

    #[inline(always)]
    fn lookup_key(&self, _: &BlockConfig) -> Option<RqKey> {
        (self.rq != 0).then(|| RqKey::request(self.rq))
    }

    #[inline(always)]
    fn submitted_as(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if cfg.flags & FLAG_SUBMIT_BIO == 0 {
            return None;
        }
        let bio: u64 = kread(self.rq, cfg.rq.bio)?;
        (bio != 0).then(|| RqKey::request(bio))
    }

    /// As the classic records compute it: the disk's first dev_t.
    #[inline(always)]
    fn dev(&self, cfg: &BlockConfig) -> u32 {
        let l = &cfg.rq;
        let disk: u64 = match kread(self.rq, l.rq_disk) {
            Some(disk) => disk,
            None => kread::<u64>(self.rq, l.q)
                .and_then(|q| kread(q, l.q_disk))
                .unwrap_or(0),
        };
        // gendisk: int major, first_minor.
        let numbers: [u32; 2] = kread(disk, l.disk_major).unwrap_or_default();
        mkdev(numbers[0], numbers[1])
    }

    #[inline(always)]
    fn sector(&self, cfg: &BlockConfig) -> u64 {
        kread(self.rq, cfg.rq.sector).unwrap_or(0)
    }

    #[inline(always)]
    fn bytes(&self, cfg: &BlockConfig) -> u32 {
        kread(self.rq, cfg.rq.data_len).unwrap_or(0)
    }

    #[inline(always)]
    fn done_bytes(&self, _: &BlockConfig) -> u32 {
        raw_arg(self.ctx, self.arg.index as u16 + 2, self.arg.arity as u16) as u32
    }

    #[inline(always)]
    fn rwbs(&self, cfg: &BlockConfig) -> [u8; 8] {
        cfg.rq
            .ops
            .rwbs(kread(self.rq, cfg.rq.cmd_flags).unwrap_or(0))
    }
}

/// A BTF-typed tracepoint's request: the same reads as `Raw`, as loads.
pub struct Typed<'a> {
    pub ctx: &'a BtfTracePointContext,
    /// The request as the typed pointer the kernel passed: for loads only.
    rq: u64,
    pub arg: RqArg,
}

impl<'a> Typed<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a BtfTracePointContext, arg: RqArg) -> Typed<'a> {
        let args = ctx.as_ptr() as *const u64;
        // The request is argument 0 or 1 (see RqArg). `arg` is from the
        // frozen .rodata, so the verifier walks only the load taken, which
        // must be at a fixed offset from the context: written out for
        // argument 1, since LLVM makes two plain loads one from a computed
        // address, which the verifier refuses where that address is not the
        // context's own (5.10, whose block_rq_issue passes the queue first).
        let rq = if arg.index == 0 {
            // SAFETY: every block tracepoint has an argument 0.
            unsafe { core::ptr::read_volatile(args) }
        } else {
            // SAFETY: this kernel's tracepoint has an argument 1.
            unsafe { second_arg(args) }
        };
        Typed { ctx, rq, arg }
    }

    /// The request's address as a number, for keys.
    #[inline(always)]
    fn address(&self) -> u64 {
        raw_arg(self.ctx, self.arg.index as u16, self.arg.arity as u16)
    }
}

/// `args[1]`, as one load at offset 8 from `args`.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn second_arg(args: *const u64) -> u64 {
    let value: u64;
    // SAFETY: the caller's.
    unsafe {
        core::arch::asm!(
            "{value} = *(u64 *)({args} + 8)",
            value = out(reg) value,
            args = in(reg) args,
            options(readonly, nostack, preserves_flags),
        )
    };
    value
}

/// Host builds (unit tests, clippy) never run it.
#[cfg(not(target_arch = "bpf"))]
unsafe fn second_arg(args: *const u64) -> u64 {
    // SAFETY: the caller's.
    unsafe { *args.add(1) }
}

impl RqEvent for Typed<'_> {
    #[inline(always)]
    fn key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if cfg.dev != 0 && self.dev(cfg) != cfg.dev {
            return None;
        }
        self.lookup_key(cfg)
    }

    #[inline(always)]
    fn submit_key(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if cfg.flags & FLAG_SUBMIT_BIO == 0 {
            return self.key(cfg);
        }
        self.lookup_key(cfg)
    }

    #[inline(always)]
    fn lookup_key(&self, _: &BlockConfig) -> Option<RqKey> {
        let rq = self.address();
        (rq != 0).then(|| RqKey::request(rq))
    }

    /// Read, not loaded: a key needs the bio's address as a number.
    #[inline(always)]
    fn submitted_as(&self, cfg: &BlockConfig) -> Option<RqKey> {
        if cfg.flags & FLAG_SUBMIT_BIO == 0 {
            return None;
        }
        let bio: u64 = kread(self.address(), cfg.rq.bio)?;
        (bio != 0).then(|| RqKey::request(bio))
    }

    #[inline(always)]
    fn dev(&self, cfg: &BlockConfig) -> u32 {
        let l = &cfg.rq;
        let disk: u64 = if l.rq_disk != tracer_common::block::NO_FIELD {
            kload(self.rq, l.rq_disk)
        } else {
            kload(kload(self.rq, l.q), l.q_disk)
        };
        // Two loads: the verifier allows none across two members.
        mkdev(kload(disk, l.disk_major), kload(disk, l.disk_major + 4))
    }

    #[inline(always)]
    fn sector(&self, cfg: &BlockConfig) -> u64 {
        kload(self.rq, cfg.rq.sector)
    }

    #[inline(always)]
    fn bytes(&self, cfg: &BlockConfig) -> u32 {
        kload(self.rq, cfg.rq.data_len)
    }

    /// block_rq_complete(rq, error, nr_bytes) on every kernel with BTF.
    #[inline(always)]
    fn done_bytes(&self, _: &BlockConfig) -> u32 {
        // SAFETY: the program is verified against that prototype.
        unsafe { core::ptr::read_volatile((self.ctx.as_ptr() as *const u64).add(2)) as u32 }
    }

    #[inline(always)]
    fn rwbs(&self, cfg: &BlockConfig) -> [u8; 8] {
        cfg.rq.ops.rwbs(kload(self.rq, cfg.rq.cmd_flags))
    }
}

/// Defines a block role's three programs, on the classic, the raw and the
/// BTF-typed tracepoint (`block_issue`, `block_issue_raw` and
/// `block_issue_btf`, ...: the names tools/block/mod.rs attaches), each calling
/// `$handler(&cfg, &event)`.
#[macro_export]
macro_rules! block_hook {
    ($config:ident, submit, $handler:expr) => {
        $crate::block_hook!(@all $config, submit, "block_io_start", block_submit, block_submit_raw, block_submit_btf, $handler);

        // The request at the I/O accounting start function (kernels without
        // block_io_start, which fires there), in the submitter's context.
        #[aya_ebpf::macros::kprobe]
        pub fn block_submit_kprobe(ctx: aya_ebpf::programs::ProbeContext) -> u32 {
            let cfg = $crate::config(&$config);
            let event = $crate::block::Raw::probed(&ctx);
            ($handler)(cfg, &event);
            0
        }
    };
    ($config:ident, insert, $handler:expr) => {
        $crate::block_hook!(@all $config, insert, "block_rq_insert", block_insert, block_insert_raw, block_insert_btf, $handler);
    };
    ($config:ident, issue, $handler:expr) => {
        $crate::block_hook!(@all $config, issue, "block_rq_issue", block_issue, block_issue_raw, block_issue_btf, $handler);
    };
    ($config:ident, complete, $handler:expr) => {
        $crate::block_hook!(@all $config, complete, "block_rq_complete", block_complete, block_complete_raw, block_complete_btf, $handler);
    };
    (@all $config:ident, $field:ident, $tracepoint:literal, $classic:ident, $raw:ident, $btf:ident, $handler:expr) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $classic(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            let cfg = $crate::config(&$config);
            let event = $crate::block::Classic {
                ctx: &ctx,
                fields: &cfg.$field,
            };
            ($handler)(cfg, &event);
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            let cfg = $crate::config(&$config);
            let event = $crate::block::Raw::new(&ctx, cfg.args.$field);
            ($handler)(cfg, &event);
            0
        }

        // The section names the tracepoint; userspace loads the program
        // for whichever one the hook chain chose (block_bio_queue for submit).
        #[aya_ebpf::macros::btf_tracepoint(function = $tracepoint)]
        pub fn $btf(ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
            let cfg = $crate::config(&$config);
            let event = $crate::block::Typed::new(&ctx, cfg.args.$field);
            ($handler)(cfg, &event);
            0
        }
    };
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
        $crate::block_hook!($config, submit, |cfg, e| $crate::block::on_submit(e, cfg, &$requests()));
    };
    (@one insert, $config:ident, $requests:ident) => {
        $crate::block_hook!($config, insert, |cfg, e| $crate::block::on_insert(e, cfg, &$requests()));
    };
    (@one issue, $config:ident, $requests:ident) => {
        $crate::block_hook!($config, issue, |cfg, e| $crate::block::on_issue(e, cfg, &$requests()));
    };
}

#[inline(always)]
fn current_task(v: &mut Inflight) {
    v.tgid = current_tgid();
    v.comm = bpf_get_current_comm().unwrap_or_default();
}

/// block_io_start / block_bio_queue: remember who submitted the I/O.
#[inline(always)]
pub fn on_submit(e: &impl RqEvent, cfg: &BlockConfig, requests: &Requests) {
    if !task_passes(&cfg.task) {
        return;
    }
    let Some(key) = e.submit_key(cfg) else {
        return;
    };
    let now = now_ns();
    let mut v = Inflight {
        ts_first: now,
        ..Inflight::default()
    };
    current_task(&mut v);
    if key.dev == 0 {
        // A request's (or bio's) address is reused once it is freed, which
        // it also is when merged into another one (no completion): not a
        // lost I/O.
        let _ = requests.overwrite(&key, key.slot(), &v, now);
    } else {
        let _ = requests.insert(&key, key.slot(), &v, now);
    }
}

/// Finds the request's entry, or creates one attributed to the current task when
/// no task filter is set. None: not ours.
#[inline(always)]
pub fn entry(
    e: &impl RqEvent,
    key: &RqKey,
    cfg: &BlockConfig,
    requests: &Requests,
    now: u64,
) -> Option<*mut Inflight> {
    // The submitter's entry, made under the request's first bio, becomes the
    // request's (before any older entry of the request's address).
    if let Some(bio) = e.submitted_as(cfg)
        && let Some(v) = requests.take(&bio, bio.slot())
    {
        return requests.overwrite(key, key.slot(), &v, now);
    }
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
    if key.dev == 0 {
        // By address, a stale entry in the slot is one that ends unseen
        // without anything being lost (a bio merged into another request).
        requests.overwrite(key, key.slot(), &v, now)
    } else {
        requests.insert(key, key.slot(), &v, now)
    }
}

/// block_rq_insert (only attached with -Q).
#[inline(always)]
pub fn on_insert(e: &impl RqEvent, cfg: &BlockConfig, requests: &Requests) {
    let Some(key) = e.key(cfg) else {
        return;
    };
    let now = now_ns();
    if let Some(p) = entry(e, &key, cfg, requests, now) {
        // SAFETY: table entry pointer.
        unsafe { (*p).ts_insert = now };
    }
}

/// block_rq_issue: the request goes to the driver.
#[inline(always)]
pub fn on_issue(e: &impl RqEvent, cfg: &BlockConfig, requests: &Requests) {
    let Some(key) = e.key(cfg) else {
        return;
    };
    let now = now_ns();
    let Some(p) = entry(e, &key, cfg, requests, now) else {
        return;
    };
    // SAFETY: table entry pointer.
    let v = unsafe { &mut *p };
    if v.ts_issue != 0 {
        // Issued again (requeued): time the last issue.
        count(requests.counters, Counter::Replaced);
    }
    v.ts_issue = now;
    if cfg.flags & FLAG_SIZES != 0 {
        v.bytes = e.bytes(cfg);
    }
}

/// block_rq_complete: returns the finished request and the time now; its
/// in-flight entry is removed.
#[inline(always)]
pub fn on_complete(
    e: &impl RqEvent,
    cfg: &BlockConfig,
    requests: &Requests,
) -> Option<(Inflight, u64)> {
    let key = e.lookup_key(cfg)?;
    let Some(v) = requests.take(&key, key.slot()) else {
        // By address, a completion of nothing is the end of a request whose
        // data completed earlier (a write's flush sequence ends it again) or
        // that never had any: nothing was missed.
        let ended_again = key.dev == 0 && e.done_bytes(cfg) == 0;
        let other_disk = cfg.dev != 0 && e.dev(cfg) != cfg.dev;
        if !cfg.filters_tasks() && !ended_again && !other_disk {
            count(requests.counters, Counter::Unmatched);
        }
        return None;
    };
    if v.ts_issue == 0 {
        // Submitted but never issued. By (dev, sector): its issue was missed
        // or went to another entry. By address: it never went to the driver
        // (a data-less flush, done by the queue's own flush request).
        if key.dev != 0 {
            count(requests.counters, Counter::Unmatched);
        }
        return None;
    }
    Some((v, now_ns()))
}
