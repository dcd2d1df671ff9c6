//! biotop: per-process block I/O totals.
use crate::{COMM_LEN, assert_size, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopKey {
    pub tgid: u32,
    pub dev: u32,
    /// 1 for writes, 0 for reads and everything else.
    pub write: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}
assert_size!(TopKey, 32);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopValue {
    pub io: u64,
    pub bytes: u64,
    /// Sum of issue-to-completion latencies, ns.
    pub ns: u64,
}
assert_size!(TopValue, 24);
pod!(TopKey, TopValue);
