//! biolatency: block I/O latency histograms.
use crate::{assert_size, hist::HistKey, pod};

/// Histogram grouping: the disk (with -D) and the request's rwbs flags (with -F);
/// zero when not grouped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LatGroup {
    pub dev: u32,
    pub _pad: u32,
    pub rwbs: [u8; 8],
}
assert_size!(LatGroup, 16);
assert_size!(HistKey<LatGroup>, 24);
pod!(LatGroup, HistKey<LatGroup>);
