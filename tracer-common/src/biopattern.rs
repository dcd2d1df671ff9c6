//! biopattern: random vs sequential I/O per disk.
use crate::{assert_size, pod};

/// Per-disk counts (per-CPU in the kernel, summed by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PatternValue {
    pub sequential: u64,
    pub random: u64,
    pub bytes: u64,
}
assert_size!(PatternValue, 24);
pod!(PatternValue);
