//! Block I/O request tracking shared by the block tools.
//!
//! Requests are tracked through the classic block tracepoints, keyed by (device,
//! sector): the tracepoint records carry no request pointer. Field offsets within
//! each tracepoint record are read from tracefs `format` files at start-up and
//! passed in the tool's configuration global.

use crate::{COMM_LEN, TaskFilter, assert_size, pod};

/// The layout of the block_rq* records since Linux 5.x (dev, sector, nr_sector and
/// bytes lead every block_rq event). When the format file agrees, the programs read
/// these fields with direct loads at immediate offsets, which the verifier only
/// accepts as instruction immediates; otherwise they fall back to
/// bpf_probe_read_kernel at the offsets read at start-up.
pub mod layout {
    pub const DEV: u16 = 8;
    pub const SECTOR: u16 = 16;
    pub const NR_SECTOR: u16 = 24;
    pub const BYTES: u16 = 28;
}

/// Offset of a field that the running kernel's tracepoint does not have.
pub const NO_FIELD: u16 = u16::MAX;

/// Byte offsets of the fields the block programs read from one tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqFields {
    pub dev: u16,
    pub sector: u16,
    pub nr_sector: u16,
    pub bytes: u16,
    pub rwbs: u16,
    pub _pad: [u16; 3],
}
assert_size!(RqFields, 16);

impl RqFields {
    pub const ABSENT: RqFields = RqFields {
        dev: NO_FIELD,
        sector: NO_FIELD,
        nr_sector: NO_FIELD,
        bytes: NO_FIELD,
        rwbs: NO_FIELD,
        _pad: [0; 3],
    };
}

impl Default for RqFields {
    fn default() -> Self {
        Self::ABSENT
    }
}

/// Configuration global (`CONFIG`) of every block tool.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockConfig {
    pub task: TaskFilter,
    /// Kernel dev_t (major << 20 | minor) to keep, 0 for all.
    pub dev: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Latencies are recorded in ns / unit_div (1000 = usecs, 1000000 = msecs).
    pub unit_div: u64,
    /// Completions faster than this (ns) are not reported (biosnoop --min-latency).
    pub min_latency_ns: u64,
    /// Where the submitting task is seen: block_io_start, or block_bio_queue.
    pub submit: RqFields,
    pub insert: RqFields,
    pub issue: RqFields,
    pub complete: RqFields,
}
assert_size!(BlockConfig, 104);
pod!(BlockConfig);

impl BlockConfig {
    /// Compile-time initial value of the global (non-zero, so it lands in .rodata).
    pub const INITIAL: BlockConfig = BlockConfig {
        task: TaskFilter {
            tgid: 0,
            _pad: 0,
            cgroup_id: 0,
        },
        dev: 0,
        flags: 0,
        unit_div: 1000,
        min_latency_ns: 0,
        submit: RqFields::ABSENT,
        insert: RqFields::ABSENT,
        issue: RqFields::ABSENT,
        complete: RqFields::ABSENT,
    };
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self::INITIAL
    }
}

/// Measure from block_rq_insert instead of block_rq_issue (-Q).
pub const FLAG_QUEUED: u32 = 1 << 0;
/// One histogram per disk (-D).
pub const FLAG_PER_DISK: u32 = 1 << 1;
/// One histogram per I/O flags (-F).
pub const FLAG_PER_FLAGS: u32 = 1 << 2;
/// The submit hook is attached: capture the submitting task.
pub const FLAG_ATTRIBUTE: u32 = 1 << 3;

impl BlockConfig {
    /// True when only some tasks' I/O is wanted, so I/O whose submitter was not seen
    /// must be ignored rather than attributed to whoever issued it.
    pub const fn filters_tasks(&self) -> bool {
        self.task.tgid != 0 || self.task.cgroup_id != 0
    }
}

/// In-flight request key. Kernel dev_t and start sector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RqKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}
assert_size!(RqKey, 16);
pod!(RqKey);

/// What is known about an in-flight request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// Time of block_rq_insert (0 if not seen).
    pub ts_insert: u64,
    /// Time of block_rq_issue (0 if not yet issued).
    pub ts_issue: u64,
    /// Submitting process and thread name.
    pub tgid: u32,
    /// Request size, from block_rq_issue.
    pub bytes: u32,
    pub comm: [u8; COMM_LEN],
    /// When the entry was made (to recognise stale ones).
    pub ts_first: u64,
}
assert_size!(Inflight, 48);
pod!(Inflight);
assert_size!(crate::Slot<RqKey, Inflight>, 72);
pod!(crate::Slot<RqKey, Inflight>);

impl RqKey {
    /// Slot index in the in-flight table: consecutive 4 KiB-aligned requests take
    /// consecutive slots (the next one is often still in cache), and disks are
    /// spread apart.
    #[inline(always)]
    pub const fn slot(&self) -> u32 {
        let disk = (self.dev as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
        ((self.sector >> 3) ^ disk) as u32 & (crate::INFLIGHT_SLOTS - 1)
    }
}

/// Kernel dev_t (as in tracepoints) from major and minor.
pub const fn mkdev(major: u32, minor: u32) -> u32 {
    (major << 20) | minor
}
pub const fn dev_major(dev: u32) -> u32 {
    dev >> 20
}
pub const fn dev_minor(dev: u32) -> u32 {
    dev & ((1 << 20) - 1)
}
