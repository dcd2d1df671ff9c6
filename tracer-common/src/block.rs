//! Block I/O request tracking shared by the block tools.
//!
//! Where the kernel has BTF, requests are tracked through the raw block
//! tracepoints, keyed by their `struct request` address (exact: two I/Os in
//! flight at one sector stay apart), with the request's fields read at offsets
//! from BTF (`RqLayout`). Otherwise through the classic tracepoints, keyed by
//! (device, sector), since their records carry no request pointer; field offsets
//! within each record are read from tracefs `format` files (`RqFields`). Both
//! reach the programs in the tool's configuration global.

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
    /// The raw tracepoints' programs: where the request is among each one's
    /// arguments, and where its fields are.
    pub args: RqArgs,
    pub rq: RqLayout,
}
assert_size!(BlockConfig, 144);
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
        args: RqArgs {
            submit: RqArg::FIRST,
            insert: RqArg::FIRST,
            issue: RqArg::FIRST,
            complete: RqArg::FIRST,
        },
        rq: RqLayout::ABSENT,
    };
}

/// The request among a raw tracepoint's arguments: `index` of `arity`
/// (before 5.11 block_rq_insert and block_rq_issue pass the queue first).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqArg {
    pub index: u8,
    pub arity: u8,
}
assert_size!(RqArg, 2);

impl RqArg {
    pub const FIRST: RqArg = RqArg { index: 0, arity: 1 };
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqArgs {
    pub submit: RqArg,
    pub insert: RqArg,
    pub issue: RqArg,
    /// block_rq_complete's nr_bytes follows the request by two (after error).
    pub complete: RqArg,
}
assert_size!(RqArgs, 8);

/// Byte offsets in `struct request` and what it points to, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqLayout {
    /// request.__sector (u64) and __data_len (u32).
    pub sector: u16,
    pub data_len: u16,
    /// request.cmd_flags (u32): the operation and REQ_* flags.
    pub cmd_flags: u16,
    /// request.rq_disk (older kernels, 5.10 here), else NO_FIELD and the disk
    /// is q->disk.
    pub rq_disk: u16,
    pub q: u16,
    pub q_disk: u16,
    /// gendisk.major; first_minor is the int after it.
    pub disk_major: u16,
    /// request.bio: its first bio, the one its submitter's entry is kept
    /// under when the submitter is seen at block_bio_queue.
    pub bio: u16,
    pub ops: RqOps,
}
assert_size!(RqLayout, 32);

impl RqLayout {
    pub const ABSENT: RqLayout = RqLayout {
        sector: NO_FIELD,
        data_len: NO_FIELD,
        cmd_flags: NO_FIELD,
        rq_disk: NO_FIELD,
        q: NO_FIELD,
        q_disk: NO_FIELD,
        disk_major: NO_FIELD,
        bio: NO_FIELD,
        ops: RqOps::ABSENT,
    };
}

/// What cmd_flags' bits mean in this kernel (enums req_op and req_flag_bits in
/// BTF), for rebuilding the classic tracepoints' rwbs string (blk_fill_rwbs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RqOps {
    /// The operation is cmd_flags' low `op_bits` bits.
    pub op_bits: u8,
    pub read: u8,
    pub write: u8,
    pub flush: u8,
    pub discard: u8,
    pub secure_erase: u8,
    /// REQ_OP_WRITE_SAME of older kernels (shown as a write), else NO_OP.
    pub write_same: u8,
    /// Bit numbers of the flags rwbs shows.
    pub preflush: u8,
    pub fua: u8,
    pub rahead: u8,
    pub sync: u8,
    pub meta: u8,
    pub _pad: [u8; 4],
}
assert_size!(RqOps, 16);

/// An operation this kernel does not have.
pub const NO_OP: u8 = u8::MAX;

impl RqOps {
    pub const ABSENT: RqOps = RqOps {
        op_bits: 8,
        read: NO_OP,
        write: NO_OP,
        flush: NO_OP,
        discard: NO_OP,
        secure_erase: NO_OP,
        write_same: NO_OP,
        preflush: 63,
        fua: 63,
        rahead: 63,
        sync: 63,
        meta: 63,
        _pad: [0; 4],
    };

    /// The rwbs string of `cmd_flags` as blk_fill_rwbs writes it, NUL-padded.
    #[inline(always)]
    pub fn rwbs(&self, cmd_flags: u32) -> [u8; 8] {
        // Built in a u64 by shifts: older verifiers refuse stack writes at a
        // variable offset.
        let flags = cmd_flags as u64;
        let mut out: u64 = 0;
        let mut at: u64 = 0;
        let mut push = |c: u8| {
            out |= (c as u64) << at;
            at += 8;
        };
        let has = |bit: u8| (flags >> (bit & 63)) & 1 != 0;
        if has(self.preflush) {
            push(b'F');
        }
        let op = (cmd_flags & ((1u32 << (self.op_bits & 31)) - 1)) as u64;
        let is = |code: u8| code != NO_OP && op == code as u64;
        if is(self.write) || is(self.write_same) {
            push(b'W');
        } else if is(self.discard) {
            push(b'D');
        } else if is(self.secure_erase) {
            push(b'D');
            push(b'E');
        } else if is(self.flush) {
            push(b'F');
        } else if is(self.read) {
            push(b'R');
        } else {
            push(b'N');
        }
        if has(self.fua) {
            push(b'F');
        }
        if has(self.rahead) {
            push(b'A');
        }
        if has(self.sync) {
            push(b'S');
        }
        if has(self.meta) {
            push(b'M');
        }
        out.to_le_bytes()
    }
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
/// Keep each request's size from its issue (`Inflight::bytes`).
pub const FLAG_SIZES: u32 = 1 << 5;
/// The submitter is seen at the raw block_bio_queue (kernels without
/// block_io_start): its entry is keyed by the bio's address until the request
/// that starts with that bio is inserted or issued.
pub const FLAG_SUBMIT_BIO: u32 = 1 << 4;

impl BlockConfig {
    /// True when only some tasks' I/O is wanted, so I/O whose submitter was not seen
    /// must be ignored rather than attributed to whoever issued it.
    pub const fn filters_tasks(&self) -> bool {
        self.task.tgid != 0 || self.task.cgroup_id != 0
    }
}

/// In-flight request key: kernel dev_t and start sector (classic tracepoints),
/// or dev 0 and the request's address (raw tracepoints).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RqKey {
    pub dev: u32,
    pub _pad: u32,
    pub id: u64,
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
    /// The key of the request at kernel address `rq`.
    #[inline(always)]
    pub const fn request(rq: u64) -> RqKey {
        RqKey {
            dev: 0,
            _pad: 0,
            id: rq,
        }
    }

    /// Slot index in the in-flight table: neighbours take neighbouring slots,
    /// as the next one is often still in cache (a cold slot costs more here
    /// than the rest of a program run; hashed addresses cost ~400 ns more per
    /// I/O). By sector: consecutive 4 KiB-aligned requests, disks spread apart.
    /// By address: a queue's requests are an array with a stride of a few
    /// hundred bytes (struct request is more than 256), one slot per 256 bytes.
    #[inline(always)]
    pub const fn slot(&self) -> u32 {
        let index = if self.dev == 0 {
            self.id >> 8
        } else {
            (self.id >> 3) ^ ((self.dev as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54)
        };
        index as u32 & (crate::INFLIGHT_SLOTS - 1)
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

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    /// enum req_op and req_flag_bits of 6.18, with a REQ_OP_WRITE_SAME.
    const OPS: RqOps = RqOps {
        op_bits: 8,
        read: 0,
        write: 1,
        flush: 2,
        discard: 3,
        secure_erase: 5,
        write_same: 7,
        preflush: 18,
        fua: 17,
        rahead: 19,
        sync: 11,
        meta: 12,
        _pad: [0; 4],
    };

    fn rwbs(flags: u32) -> String {
        let r = OPS.rwbs(flags);
        let end = r.iter().position(|&b| b == 0).unwrap();
        assert!(r[end..].iter().all(|&b| b == 0), "{r:?}");
        String::from_utf8(r[..end].to_vec()).unwrap()
    }

    #[test]
    fn rwbs_as_blk_fill_rwbs_writes_it() {
        let bit = |b: u8| 1u32 << b;
        for (flags, want) in [
            (0, "R"),
            (bit(19), "RA"),
            (1 | bit(11), "WS"),
            (7, "W"),
            (2 | bit(18), "FF"),
            (1 | bit(18) | bit(17) | bit(11) | bit(12), "FWFSM"),
            (3, "D"),
            (5 | bit(11), "DES"),
            (9, "N"),
        ] {
            assert_eq!(rwbs(flags), want, "{flags:#x}");
        }
    }

    #[test]
    fn request_keys_spread_over_slots() {
        // Requests are an array with a stride of a few hundred bytes.
        let mut used = [false; crate::INFLIGHT_SLOTS as usize];
        for i in 0..256u64 {
            used[RqKey::request(0xffff_8880_1234_0000 + i * 384).slot() as usize] = true;
        }
        assert_eq!(used.iter().filter(|u| **u).count(), 256);
    }
}
