//! tcpdrop: TCP packets the kernel drops, with its drop reason.
use crate::{assert_size, pod, tcp::SockOffsets};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropConfig {
    /// skb:kfree_skb record offsets (rx_sk is NO_FIELD before 6.12).
    pub skbaddr: u16,
    pub location: u16,
    pub rx_sk: u16,
    pub protocol: u16,
    pub reason: u16,
    /// Arguments of the raw kfree_skb: skb, location, then reason (5.17) and
    /// rx_sk (6.12) where the kernel has them.
    pub raw_args: u16,
    pub sock: SockOffsets,
    /// `FLAG_*` bits.
    pub flags: u32,
}
assert_size!(DropConfig, 40);
pod!(DropConfig);

/// Record the kernel stack (--stack).
pub const FLAG_STACK: u32 = 1 << 0;
/// Count drops per reason in `REASONS` instead of sending each (the exporter).
pub const FLAG_COUNT: u32 = 1 << 1;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub ts: u64,
    /// Where the packet was freed (a kernel text address).
    pub location: u64,
    pub pid: u32,
    pub reason: u32,
    /// TCP state of the socket the packet belonged to, 0 if none.
    pub state: u32,
    /// Frames of the kernel stack that follow it in a `StackedDrop`.
    pub frames: u32,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte.
    pub tcp_flags: u8,
    pub _pad: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
assert_size!(DropEvent, 72);
pod!(DropEvent);

/// Frames a drop's stack holds: the kernel's default `perf_event_max_stack`.
pub const MAX_FRAMES: usize = 127;

/// A drop with its kernel stack (--stack), innermost frame first. The stack
/// travels in the record itself: a stack map's ids collide (a bucket holding
/// another stack refuses the new one) and its entries outlive no reader.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackedDrop {
    pub drop: DropEvent,
    /// `drop.frames` of these are filled.
    pub frames: [u64; MAX_FRAMES],
}
assert_size!(StackedDrop, 72 + 8 * MAX_FRAMES);
pod!(StackedDrop);
