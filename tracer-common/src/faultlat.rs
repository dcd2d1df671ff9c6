//! faultlat: page-fault latency histograms.
use crate::{assert_size, hist::HistKey, pod};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultGroup {
    /// Process (with -P), else 0.
    pub tgid: u32,
    /// 0 minor, 1 major.
    pub major: u32,
}
assert_size!(FaultGroup, 8);
assert_size!(HistKey<FaultGroup>, 16);
pod!(FaultGroup, HistKey<FaultGroup>);
