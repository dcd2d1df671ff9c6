//! biosnoop: one record per completed block I/O.
use crate::{COMM_LEN, assert_size, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BioEvent {
    /// Completion time (CLOCK_MONOTONIC ns).
    pub ts: u64,
    pub sector: u64,
    /// Issue to completion, ns.
    pub lat_ns: u64,
    /// Insert to issue, ns (0 when the insert was not seen).
    pub queue_ns: u64,
    pub tgid: u32,
    pub dev: u32,
    pub bytes: u32,
    pub _pad: u32,
    pub rwbs: [u8; 8],
    pub comm: [u8; COMM_LEN],
}
assert_size!(BioEvent, 72);
pod!(BioEvent);
