//! Helpers the TCP programs share: reading flows from tracepoint records and
//! fields of kernel structs at offsets found in BTF.

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::TracePointContext};
use tracer_common::{
    block::NO_FIELD,
    tcp::{AF_INET, AF_INET6, AddrFields, Flow, SkcOffsets},
};

use crate::tp_field;

/// Reads a `T` at kernel address `base + off`.
#[inline(always)]
pub fn kread<T>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == NO_FIELD {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// The flow of a tcp_retransmit_skb / tcp_retransmit_synack / inet_sock_set_state
/// record (source = local).
#[inline(always)]
pub fn flow(ctx: &TracePointContext, f: &AddrFields) -> Option<Flow> {
    let mut flow = Flow::default();
    read_flow(ctx, f, &mut flow).then_some(flow)
}

/// Like `flow`, into `flow` (which must be zeroed): saves a copy on the 512-byte
/// stack.
#[inline(always)]
pub fn read_flow(ctx: &TracePointContext, f: &AddrFields, flow: &mut Flow) -> bool {
    read_flow_inner(ctx, f, flow).is_some()
}

#[inline(always)]
fn read_flow_inner(ctx: &TracePointContext, f: &AddrFields, flow: &mut Flow) -> Option<()> {
    let family: u16 = if f.family == NO_FIELD {
        // Kernels without the field store an IPv4 flow as ::ffff:a.b.c.d.
        let d: [u8; 16] = tp_field(ctx, f.daddr_v6)?;
        let v4_mapped = d[..10].iter().all(|b| *b == 0) && d[10] == 0xff && d[11] == 0xff;
        if v4_mapped { AF_INET } else { AF_INET6 }
    } else {
        tp_field(ctx, f.family)?
    };
    flow.family = family;
    flow.lport = tp_field(ctx, f.sport)?;
    flow.rport = tp_field(ctx, f.dport)?;
    match family {
        AF_INET => {
            let s: [u8; 4] = tp_field(ctx, f.saddr)?;
            let d: [u8; 4] = tp_field(ctx, f.daddr)?;
            flow.laddr[..4].copy_from_slice(&s);
            flow.raddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            flow.laddr = tp_field(ctx, f.saddr_v6)?;
            flow.raddr = tp_field(ctx, f.daddr_v6)?;
        }
        _ => return None,
    }
    Some(())
}

/// The flow of a socket or request socket (both start with `struct
/// sock_common`), into `flow` (zeroed), as the raw tracepoints' programs see it.
#[inline(always)]
pub fn read_sock_flow(sk: u64, o: &SkcOffsets, flow: &mut Flow) -> bool {
    read_sock_flow_inner(sk, o, flow).is_some()
}

#[inline(always)]
fn read_sock_flow_inner(sk: u64, o: &SkcOffsets, flow: &mut Flow) -> Option<()> {
    let family: u16 = kread(sk, o.family)?;
    flow.family = family;
    flow.lport = kread(sk, o.num)?;
    flow.rport = u16::from_be(kread(sk, o.dport)?);
    match family {
        AF_INET => {
            let s: [u8; 4] = kread(sk, o.rcv_saddr)?;
            let d: [u8; 4] = kread(sk, o.daddr)?;
            flow.laddr[..4].copy_from_slice(&s);
            flow.raddr[..4].copy_from_slice(&d);
        }
        AF_INET6 => {
            flow.laddr = kread(sk, o.v6_rcv_saddr)?;
            flow.raddr = kread(sk, o.v6_daddr)?;
        }
        _ => return None,
    }
    Some(())
}
