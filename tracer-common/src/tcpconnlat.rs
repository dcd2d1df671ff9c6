//! tcpconnlat: active TCP connect latency, from sock:inet_sock_set_state.
use crate::{
    COMM_LEN, TaskFilter, assert_size, pod,
    tcp::{AddrFields, SkcOffsets},
};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    pub task: TaskFilter,
    pub min_latency_ns: u64,
    pub unit_div: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// inet_sock_set_state offsets.
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub protocol: u16,
    /// sock.sk_protocol (u16), for the raw tracepoint's program.
    pub sk_protocol: u16,
    pub _pad: u16,
    pub addrs: AddrFields,
    /// The raw tracepoint's program reads flows from the socket.
    pub skc: SkcOffsets,
}
assert_size!(ConnConfig, 80);
pod!(ConnConfig);

/// Histogram instead of records (--hist).
pub const FLAG_HIST: u32 = 1 << 0;

impl ConnConfig {
    pub const INITIAL: ConnConfig = ConnConfig {
        task: TaskFilter {
            tgid: 0,
            _pad: 0,
            cgroup_id: 0,
        },
        min_latency_ns: 0,
        unit_div: 1000,
        flags: 0,
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        protocol: 30,
        sk_protocol: crate::block::NO_FIELD,
        _pad: 0,
        addrs: AddrFields::ABSENT,
        skc: SkcOffsets::ABSENT,
    };
}

/// A connect in progress, keyed by socket address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStart {
    pub ts: u64,
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}
assert_size!(ConnStart, 32);
pod!(ConnStart);
assert_size!(crate::Slot<u64, ConnStart>, 48);
pod!(crate::Slot<u64, ConnStart>);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub ts: u64,
    pub lat_ns: u64,
    pub tgid: u32,
    pub family: u16,
    pub dport: u16,
    pub lport: u16,
    pub _pad: [u16; 3],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
}
assert_size!(ConnEvent, 80);
pod!(ConnEvent);
