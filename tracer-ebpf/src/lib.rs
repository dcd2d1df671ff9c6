//! Helpers shared by tracer's kernel programs. Each tool is its own ELF
//! (src/bin/<tool>.rs) so that a verifier failure or a missing hook breaks one
//! tool only; what they have in common lives here.
#![no_std]
// Inline assembly for the BPF target (see block::Typed::new).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod block;
pub mod fault;
pub mod inflight;
pub mod tcp;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{CgroupArray, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{
    TaskFilter,
    counters::Counter,
    hist::{HistKey, HistStats, NUM_BUCKETS, SlotHist, bucket_of},
};

/// Every ELF must declare a GPL-compatible license: bpf_probe_read_kernel and the
/// ring buffer helpers are GPL-only.
#[macro_export]
macro_rules! license {
    () => {
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 4] = *b"GPL\0";

        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }
    };
}

/// Reads a field of a classic tracepoint record at a byte offset found in its
/// tracefs format file. `off` is `NO_FIELD` when the running kernel lacks it.
#[inline(always)]
pub fn tp_field<T>(ctx: &TracePointContext, off: u16) -> Option<T> {
    if off == tracer_common::block::NO_FIELD {
        return None;
    }
    // SAFETY: the offset comes from the kernel's own format file for this event.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// Argument `n` of a raw tracepoint whose kernel passes `arity` arguments (0
/// beyond them or on a failed read). Read through bpf_probe_read_kernel rather
/// than loaded: the kernel refuses to attach a program whose loads reach past
/// the tracepoint's arguments, even in a branch not taken on that kernel. Into
/// a zeroed u64, not an Option: 5.10's verifier rejects reading a stack slot
/// that one path left unwritten, which an Option's payload can be.
/// Also a BTF-typed tracepoint's argument as a plain number (a struct pointer
/// loaded directly is one the verifier forbids arithmetic on: no map key).
#[inline(always)]
pub fn raw_arg(ctx: &impl aya_ebpf::EbpfContext, n: u16, arity: u16) -> u64 {
    let mut value: u64 = 0;
    if n < arity {
        let args = ctx.as_ptr() as *const u64;
        // SAFETY: the context is the array of the tracepoint's `arity` u64
        // arguments; the helper checks the read and zeroes `value` on failure.
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                (&mut value as *mut u64).cast(),
                8,
                args.wrapping_add(n as usize).cast(),
            );
        }
    }
    value
}

/// The first `N` arguments of a raw tracepoint, loaded directly: for programs
/// written for one prototype (the kernel refuses to attach a program whose
/// loads reach past the tracepoint's arguments, and the tool falls back).
#[inline(always)]
pub fn raw_args<const N: usize>(ctx: &RawTracePointContext) -> [u64; N] {
    // SAFETY: the context is the array of the tracepoint's u64 arguments.
    unsafe { *(ctx.as_ptr() as *const [u64; N]) }
}

/// The value of a configuration global, read in place. `Global::load` copies
/// it all onto the 512-byte stack (144 bytes for the block tools' config);
/// reading through a pointer the compiler cannot see through keeps it from
/// folding in the compile-time initial value, which the loader replaces, and
/// each field is loaded where it is used, from the frozen map the verifier
/// knows the values of.
#[inline(always)]
pub fn config<T>(global: &'static aya_ebpf::Global<T>) -> &'static T {
    let p: *const aya_ebpf::Global<T> = global;
    // SAFETY: reading a local; Global is repr(transparent) over an initialized T.
    unsafe { &*core::ptr::read_volatile(&p).cast::<T>() }
}

/// Reads a `T` at kernel address `base + off` (an offset from BTF).
#[inline(always)]
pub fn kread<T>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == tracer_common::block::NO_FIELD {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// Loads a `T` at `base + off` from a struct pointer a BTF-typed tracepoint
/// gave (or a pointer loaded through one): no helper call. The verifier checks
/// the load against the kernel's BTF, which it can because `off` comes from
/// the frozen .rodata, and turns a faulting one into a zero.
#[inline(always)]
pub fn kload<T: Copy + Default>(base: u64, off: u16) -> T {
    if base == 0 || off == tracer_common::block::NO_FIELD {
        return T::default();
    }
    // SAFETY: see above; the kernel makes the load safe.
    unsafe { core::ptr::read_volatile((base + off as u64) as *const T) }
}

/// CLOCK_MONOTONIC now, ns.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper call.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Map flag BPF_F_NO_PREALLOC: elements are allocated on insert, so creating a
/// large hash map costs nothing at start-up (a preallocated per-CPU hash map of
/// 64k entries took 77 ms to create here). Perf-event programs may only use
/// preallocated hash maps: their maps stay small instead.
pub const NO_PREALLOC: u32 = 1;

/// Map flag BPF_F_NO_COMMON_LRU: per-CPU LRU free lists, so inserts into the
/// in-flight maps take no global lock.
pub const NO_COMMON_LRU: u32 = 2;

/// Reads a tracepoint field that usually sits at offset `AT`: a direct load with
/// an immediate offset when the running kernel agrees (`off` comes from the frozen
/// .rodata, so the verifier knows it and prunes the other branch), else a helper
/// read at the offset from the format file.
#[inline(always)]
pub fn tp_read<T: Copy, const AT: u16>(ctx: &TracePointContext, off: u16) -> Option<T> {
    use aya_ebpf::EbpfContext as _;
    if off == AT && (AT as usize).is_multiple_of(core::mem::size_of::<T>()) {
        // SAFETY: AT is inside the record (the format file says so) and aligned.
        return Some(unsafe {
            core::ptr::read((ctx.as_ptr() as *const u8).add(AT as usize).cast::<T>())
        });
    }
    tp_field(ctx, off)
}

/// Current process id (tgid).
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The cgroup of the task filter (`-c`), set by userspace (see TaskFilter).
#[map]
pub static TASK_CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

/// Whether the current task matches the pid and cgroup filter.
#[inline(always)]
pub fn task_passes(filter: &TaskFilter) -> bool {
    if filter.tgid != 0 && current_tgid() != filter.tgid {
        return false;
    }
    if filter.cgroup_id != 0 && TASK_CGROUP.current_task_under_cgroup(0) != Ok(true) {
        return false;
    }
    true
}

#[inline(always)]
pub fn count(counters: &PerCpuArray<u64>, counter: Counter) {
    if let Some(slot) = counters.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Adds `n` to a per-CPU counter keyed by `key`, creating it if needed.
#[inline(always)]
pub fn percpu_add<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64, counters: &PerCpuArray<u64>) {
    match map.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(v) => unsafe { *v += n },
        None => {
            // BPF_ANY: if another CPU created the key meanwhile, this writes only
            // this CPU's slot, which was zero: no count is lost.
            if map.insert(key, n, BPF_ANY as u64).is_err() {
                count(counters, Counter::MapFull);
            }
        }
    }
}

/// Records `value` in the log-linear histogram of `group`, and its exact totals.
#[inline(always)]
pub fn hist_record<G: Copy>(
    hist: &PerCpuHashMap<HistKey<G>, u64>,
    stats: &PerCpuHashMap<G, HistStats>,
    counters: &PerCpuArray<u64>,
    group: G,
    value: u64,
) {
    let key = HistKey {
        group,
        bucket: bucket_of(value),
        _pad: 0,
    };
    percpu_add(hist, &key, 1, counters);
    match stats.get_ptr_mut(group) {
        Some(s) => {
            // SAFETY: per-CPU value, only this CPU writes it.
            let s = unsafe { &mut *s };
            s.count += 1;
            s.sum += value;
            if value > s.max {
                s.max = value;
            }
        }
        None => {
            let s = HistStats {
                count: 1,
                sum: value,
                max: value,
            };
            if stats.insert(group, s, BPF_ANY as u64).is_err() {
                count(counters, Counter::MapFull);
            }
        }
    }
}

/// Records `value` in the histogram held whole in slot `slot` of a per-CPU array.
#[inline(always)]
pub fn hist_record_slot(hists: &PerCpuArray<SlotHist>, slot: u32, value: u64) {
    let Some(h) = hists.get_ptr_mut(slot) else {
        return;
    };
    // LLVM knows bucket_of() < NUM_BUCKETS and would drop the check below; the
    // verifier does not know it and needs the check. A volatile read hides the range.
    let b = bucket_of(value) as usize;
    // SAFETY: reading a local.
    let b = unsafe { core::ptr::read_volatile(&b) };
    if b >= NUM_BUCKETS as usize {
        return;
    }
    // SAFETY: per-CPU value, only this CPU writes it; b is in bounds.
    unsafe {
        let h = &mut *h;
        h.count += 1;
        h.sum += value;
        if value > h.max {
            h.max = value;
        }
        *h.buckets.get_unchecked_mut(b) += 1;
    }
}

/// Ring buffer bytes pending before the consumer is woken; below that it drains
/// on its own timer. Batching wake-ups is most of the per-event cost saved.
pub const WAKEUP_BYTES: u64 = 64 * 1024;

/// Writes one record to the ring buffer, counting it as lost if it does not fit.
#[inline(always)]
pub fn emit<T: 'static>(ring: &RingBuf, counters: &PerCpuArray<u64>, record: &T) {
    if ring.output::<T>(record, wakeup_flags(ring)).is_err() {
        count(counters, Counter::Lost);
    }
}

/// The submit flags that wake the consumer only once `WAKEUP_BYTES` are pending.
#[inline(always)]
pub fn wakeup_flags(ring: &RingBuf) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if ring.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
