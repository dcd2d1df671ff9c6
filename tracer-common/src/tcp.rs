//! Types the TCP tools share.
use crate::{assert_size, pod};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A TCP flow as the kernel reports it: IPv4 addresses in the first 4 bytes.
/// Ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub family: u16,
    pub lport: u16,
    pub rport: u16,
    pub _pad: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}
assert_size!(Flow, 40);
pod!(Flow);

/// Offsets of the address fields shared by tcp_retransmit_skb, tcp_retransmit_synack
/// and inet_sock_set_state records (from their format files).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrFields {
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    pub _pad: u16,
}
assert_size!(AddrFields, 16);

impl AddrFields {
    pub const ABSENT: AddrFields = AddrFields {
        sport: crate::block::NO_FIELD,
        dport: crate::block::NO_FIELD,
        family: crate::block::NO_FIELD,
        saddr: crate::block::NO_FIELD,
        daddr: crate::block::NO_FIELD,
        saddr_v6: crate::block::NO_FIELD,
        daddr_v6: crate::block::NO_FIELD,
        _pad: 0,
    };
}

/// Where the TCP tools find things inside kernel structs (from BTF at start-up).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOffsets {
    /// inet_connection_sock.icsk_pending (u8).
    pub icsk_pending: u16,
    /// Byte holding the icsk_ca_state bitfield, and its shift and width.
    pub icsk_ca_state: u16,
    pub ca_state_shift: u8,
    pub ca_state_bits: u8,
    /// sock.__sk_common.skc_net (a struct net pointer).
    pub skc_net: u16,
    /// net.ns.inum (u32).
    pub net_inum: u16,
    /// sock.__sk_common.skc_state (u8).
    pub skc_state: u16,
    /// sk_buff.cb + tcp_skb_cb.tcp_gso_segs (u16): segments in this skb.
    pub skb_gso_segs: u16,
    /// sk_buff.head (pointer), network_header and transport_header (u16), sk.
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    pub skb_sk: u16,
    /// sk_buff.protocol (__be16).
    pub skb_protocol: u16,
}
assert_size!(SockOffsets, 24);

/// Where a flow's addresses and ports are in `struct sock_common`, which starts
/// both `struct sock` and `struct request_sock` (raw tracepoints get those).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkcOffsets {
    /// skc_family (u16).
    pub family: u16,
    /// skc_num: the local port in host order (u16).
    pub num: u16,
    /// skc_dport: the remote port (__be16).
    pub dport: u16,
    /// skc_rcv_saddr and skc_daddr (__be32).
    pub rcv_saddr: u16,
    pub daddr: u16,
    /// skc_v6_rcv_saddr and skc_v6_daddr (16 bytes; NO_FIELD without IPv6).
    pub v6_rcv_saddr: u16,
    pub v6_daddr: u16,
    pub _pad: u16,
}
assert_size!(SkcOffsets, 16);

impl SkcOffsets {
    pub const ABSENT: SkcOffsets = SkcOffsets {
        family: crate::block::NO_FIELD,
        num: crate::block::NO_FIELD,
        dport: crate::block::NO_FIELD,
        rcv_saddr: crate::block::NO_FIELD,
        daddr: crate::block::NO_FIELD,
        v6_rcv_saddr: crate::block::NO_FIELD,
        v6_daddr: crate::block::NO_FIELD,
        _pad: 0,
    };
}

/// ICSK_TIME_LOSS_PROBE (include/net/inet_connection_sock.h; a #define, not in BTF).
pub const ICSK_TIME_LOSS_PROBE: u8 = 5;
/// TCP_CA_Recovery: congestion states below it (Open, Disorder, CWR) are where a
/// loss probe can be sent.
pub const TCP_CA_RECOVERY: u8 = 3;
