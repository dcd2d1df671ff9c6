//! tcprtt: smoothed RTT histograms from tcp:tcp_probe.
use crate::{assert_size, hist::HistKey, pod, tcp::SkcOffsets};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttConfig {
    /// Address filters (IPv4 in the first 4 bytes) and their family.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub laddr_family: u16,
    pub raddr_family: u16,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
    /// srtt (µs) is divided by this (1 usecs, 1000 msecs).
    pub unit_div: u64,
    /// tcp_probe offsets.
    pub saddr: u16,
    pub daddr: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub srtt: u16,
    /// tcp_sock.srtt_us (u32, µs << 3), for the raw tracepoint's program.
    pub srtt_us: u16,
    pub _pad2: u16,
    /// The raw tracepoint's program reads flows from the socket.
    pub skc: SkcOffsets,
}
assert_size!(RttConfig, 88);
pod!(RttConfig);

pub const FLAG_LADDR: u32 = 1 << 0;
pub const FLAG_RADDR: u32 = 1 << 1;
pub const FLAG_LPORT: u32 = 1 << 2;
pub const FLAG_RPORT: u32 = 1 << 3;
/// One histogram per local (-b) or remote (-B) address.
pub const FLAG_PER_LADDR: u32 = 1 << 4;
pub const FLAG_PER_RADDR: u32 = 1 << 5;

impl RttConfig {
    pub const INITIAL: RttConfig = RttConfig {
        laddr: [0; 16],
        raddr: [0; 16],
        lport: 0,
        rport: 0,
        laddr_family: 0,
        raddr_family: 0,
        flags: 0,
        _pad: 0,
        unit_div: 1,
        saddr: 8,
        daddr: 36,
        sport: 64,
        dport: 66,
        family: 68,
        srtt: 100,
        srtt_us: crate::block::NO_FIELD,
        _pad2: 0,
        skc: SkcOffsets::ABSENT,
    };
}

/// Histogram grouping: an address (-b/-B), else zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RttGroup {
    pub addr: [u8; 16],
    pub family: u16,
    pub _pad: [u16; 3],
}
assert_size!(RttGroup, 24);
assert_size!(HistKey<RttGroup>, 32);
pod!(RttGroup, HistKey<RttGroup>);
