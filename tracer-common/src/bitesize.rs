//! bitesize: I/O size histograms per process name.
use crate::{COMM_LEN, assert_size, hist::HistKey, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeGroup {
    pub comm: [u8; COMM_LEN],
}
assert_size!(SizeGroup, 16);
assert_size!(HistKey<SizeGroup>, 24);
pod!(SizeGroup, HistKey<SizeGroup>);

/// Configuration global beside the block one: keep only this comm (all if empty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommFilter {
    pub comm: [u8; COMM_LEN],
}
assert_size!(CommFilter, 16);
pod!(CommFilter);
