//! Types shared by the kernel programs (tracer-ebpf) and userspace (tracer).
//!
//! Every type that crosses the boundary is `#[repr(C)]`, has no implicit padding
//! (explicit `_pad` fields instead, so map keys hash the same bytes on both sides)
//! and carries a size assertion.
#![no_std]

pub mod block;
pub mod counters;
pub mod fault;
pub mod hist;
pub mod tcp;

pub mod biolatency;
pub mod biopattern;
pub mod biosnoop;
pub mod biotop;
pub mod bitesize;
pub mod faultlat;
pub mod faultsnoop;
pub mod kvmexits;
pub mod pagefaults;
pub mod tcpconnlat;
pub mod tcpdrop;
pub mod tcpretrans;
pub mod tcprtt;

/// Asserts a shared type's size at compile time.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}

/// Marks shared types as plain old data for aya's map and global APIs.
#[macro_export]
macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: repr(C), Copy, no implicit padding (checked by assert_size!).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

/// Filter on the task that causes an event. Zero fields match everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Process id (tgid) to keep, 0 for all.
    pub tgid: u32,
    pub _pad: u32,
    /// cgroup v2 id (inode number of its directory) to keep, with descendants;
    /// 0 for all. The programs test membership with the cgroup userspace put in
    /// their TASK_CGROUP map (bpf_current_task_under_cgroup: every kernel from
    /// 4.9, where bpf_get_current_ancestor_cgroup_id is refused to tracepoint
    /// programs before 5.13 or so).
    pub cgroup_id: u64,
}
assert_size!(TaskFilter, 16);
pod!(TaskFilter);

pub const COMM_LEN: usize = 16;

/// One slot of a direct-mapped in-flight table (an array map indexed by a hash of
/// the key). Array slots cost a few ns where a hash-map update costs hundreds here;
/// a key whose slot is taken by another live key goes to an overflow LRU map.
/// An all-zero key marks a free slot. `K` and `V` must make the struct padding-free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot<K, V> {
    pub key: K,
    pub value: V,
    /// Entries of keys hashing here that went to the overflow map (while this slot
    /// was taken) and are still there: lookups consult the overflow map only then.
    pub spill: u64,
}

/// Number of slots in each in-flight table (a power of two): small enough to stay
/// in cache (a cold slot costs more here than the rest of a program run), large
/// enough that two operations in flight rarely share a slot.
pub const INFLIGHT_SLOTS: u32 = 1024;

/// A slot whose entry is older than this is stale (its end event was never seen)
/// and may be taken over.
pub const STALE_NS: u64 = 10_000_000_000;
