//! bitesize: I/O size histograms per process name.
use crate::{COMM_LEN, assert_size, hist::HistKey, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeGroup {
    /// The submitting process's name (zero with FLAG_PER_DISK).
    pub comm: [u8; COMM_LEN],
    /// With FLAG_PER_DISK: the request's rwbs and disk instead.
    pub rwbs: [u8; 8],
    pub dev: u32,
    pub _pad: u32,
}
assert_size!(SizeGroup, 32);
assert_size!(HistKey<SizeGroup>, 40);
pod!(SizeGroup, HistKey<SizeGroup>);

/// Configuration global beside the block one: keep only this comm (all if empty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommFilter {
    pub comm: [u8; COMM_LEN],
}
assert_size!(CommFilter, 16);
pod!(CommFilter);
