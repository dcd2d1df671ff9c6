//! tcpretrans: TCP retransmits, telling tail loss probes from RTO/fast retransmits.
use crate::{
    assert_size, pod,
    tcp::{AddrFields, Flow, SkcOffsets, SockOffsets},
};

/// Kinds of retransmit (the T column).
pub const KIND_RETRANS: u8 = b'R';
pub const KIND_LOSS_PROBE: u8 = b'L';
pub const KIND_SYNACK: u8 = b'S';
/// A retransmit attempt that failed (kernels >= 6.17 report those too).
pub const KIND_FAILED: u8 = b'F';

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransConfig {
    /// tcp_retransmit_skb: skaddr, skbaddr, state, err (NO_FIELD before 6.17).
    pub skaddr: u16,
    pub skbaddr: u16,
    pub state: u16,
    pub err: u16,
    pub addrs: AddrFields,
    /// tcp_retransmit_synack.
    pub synack: AddrFields,
    pub sock: SockOffsets,
    /// The raw tracepoints' programs read flows from the socket.
    pub skc: SkcOffsets,
    /// 0 any, else AF_INET or AF_INET6 (-4/-6).
    pub family: u16,
    /// Arguments of the raw tcp_retransmit_skb (3 with err, from 6.17).
    pub raw_args: u16,
    /// `FLAG_*` bits.
    pub flags: u32,
}
assert_size!(RetransConfig, 88);
pod!(RetransConfig);

/// Count per flow instead of emitting records (-c).
pub const FLAG_COUNT: u32 = 1 << 0;
/// Read each socket's network namespace (--netns).
pub const FLAG_NETNS: u32 = 1 << 1;
/// Report failed attempts too, as F.
pub const FLAG_FAILED: u32 = 1 << 2;

impl RetransConfig {
    pub const INITIAL: RetransConfig = RetransConfig {
        skaddr: 16,
        skbaddr: 8,
        state: 24,
        err: crate::block::NO_FIELD,
        addrs: AddrFields::ABSENT,
        synack: AddrFields::ABSENT,
        sock: SockOffsets {
            icsk_pending: 0,
            icsk_ca_state: 0,
            ca_state_shift: 0,
            ca_state_bits: 5,
            skc_net: 0,
            net_inum: 0,
            skc_state: 0,
            skb_gso_segs: 0,
            skb_head: 0,
            skb_network_header: 0,
            skb_transport_header: 0,
            skb_sk: 0,
            skb_protocol: 0,
        },
        skc: SkcOffsets::ABSENT,
        family: 0,
        raw_args: 2,
        flags: 0,
    };
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransEvent {
    pub ts: u64,
    pub flow: Flow,
    pub pid: u32,
    pub netns: u32,
    pub state: i32,
    pub err: i32,
    /// Segments retransmitted (a GSO skb carries several).
    pub segs: u32,
    pub kind: u8,
    pub _pad: [u8; 3],
}
assert_size!(RetransEvent, 72);
pod!(RetransEvent);

/// Per-flow totals (-c).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetransKey {
    pub flow: Flow,
    pub netns: u32,
    pub kind: u32,
}
assert_size!(RetransKey, 48);
pod!(RetransKey);
