//! Helpers the TCP programs share: reading flows from tracepoint records and
//! fields of kernel structs at offsets found in BTF.

use aya_ebpf::programs::TracePointContext;
use tracer_common::{
    block::NO_FIELD,
    tcp::{AF_INET, AF_INET6, AddrFields, Flow, SkcOffsets},
};

use crate::{kread, tp_field};

/// The flow of a tcp_retransmit_skb / tcp_retransmit_synack / inet_sock_set_state
/// record (source = local), into `flow` (zeroed; filled in place to spare a copy
/// on the 512-byte stack).
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
    let Some(family) = kread::<u16>(sk, o.family) else {
        return false;
    };
    flow.family = family;
    flow.lport = kread(sk, o.num).unwrap_or(0);
    flow.rport = u16::from_be(kread(sk, o.dport).unwrap_or(0));
    sock_addr(sk, o, family, true, &mut flow.laddr)
        && sock_addr(sk, o, family, false, &mut flow.raddr)
}

/// A socket's local or remote address, written in place (IPv4 in the first 4
/// bytes): no Option copies on the 512-byte stack.
#[inline(always)]
pub fn sock_addr(sk: u64, o: &SkcOffsets, family: u16, local: bool, dst: &mut [u8; 16]) -> bool {
    let (off, len) = match (family, local) {
        (AF_INET, true) => (o.rcv_saddr, 4),
        (AF_INET, false) => (o.daddr, 4),
        (AF_INET6, true) => (o.v6_rcv_saddr, 16),
        (AF_INET6, false) => (o.v6_daddr, 16),
        _ => return false,
    };
    if sk == 0 || off == NO_FIELD {
        return false;
    }
    // SAFETY: the helper checks the kernel address and writes at most `len`
    // (<= 16) bytes into `dst`.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst.as_mut_ptr().cast(),
            len,
            (sk + off as u64) as *const core::ffi::c_void,
        ) == 0
    }
}
