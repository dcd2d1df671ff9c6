//! faultsnoop: one record per page fault.
use crate::{COMM_LEN, assert_size, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultEvent {
    /// Time the fault was accounted (CLOCK_MONOTONIC ns).
    pub ts: u64,
    pub lat_ns: u64,
    pub address: u64,
    pub ip: u64,
    pub tgid: u32,
    pub tid: u32,
    pub error_code: u32,
    /// 1 if taken in kernel mode.
    pub kernel: u32,
    /// 1 if a major fault.
    pub major: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}
assert_size!(FaultEvent, 72);
pod!(FaultEvent);
