//! tools/tcp/: the TCP tools, one file per tool (tcpretrans, tcprtt, tcpconnlat,
//! tcpdrop), over the family's user-side code here (tracer-ebpf's tcp.rs is its
//! kernel side).
//!
//! What the TCP tools share on the user side: addresses, TCP states, the layout of
//! the tcp/sock tracepoints, and struct offsets from BTF.

pub mod tcpconnlat;
pub mod tcpdrop;
pub mod tcpretrans;
pub mod tcprtt;

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, bail};
use tracer_common::{
    block::NO_FIELD,
    tcp::{AF_INET, AF_INET6, AddrFields, SkcOffsets, SockOffsets},
};

use crate::kernel::{btf::Btf, tracefs::Format};
use crate::source::Get;

/// An address as the kernel programs hold it (IPv4 in the first 4 bytes).
pub fn fmt_addr(family: u16, a: &[u8; 16]) -> String {
    match family {
        AF_INET => Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        AF_INET6 => Ipv6Addr::from(*a).to_string(),
        f => format!("family {f}"),
    }
}

/// "ADDR:PORT" from a record's address and port fields (its `ip` field says
/// whether to bracket an IPv6 address).
pub fn endpoint(r: &impl Get, addr: &str, port: &str) -> String {
    if r.u64("ip") == 6 {
        format!("[{}]:{}", r.str(addr), r.u64(port))
    } else {
        format!("{}:{}", r.str(addr), r.u64(port))
    }
}

/// Parses an address filter (-a/-A).
pub fn parse_addr(s: &str) -> Result<(u16, [u8; 16])> {
    let mut out = [0u8; 16];
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        out[..4].copy_from_slice(&v4.octets());
        return Ok((AF_INET, out));
    }
    if let Ok(v6) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<Ipv6Addr>()
    {
        return Ok((AF_INET6, v6.octets()));
    }
    bail!("not an IPv4 or IPv6 address: '{s}'")
}

pub fn ip_version(family: u16) -> &'static str {
    if family == AF_INET6 { "6" } else { "4" }
}

/// include/net/tcp_states.h
pub fn tcp_state(state: i32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => "-",
    }
}

/// Address and port fields of tcp_retransmit_skb/synack and inet_sock_set_state.
/// Before 5.11 the retransmit tracepoints have no family field (NO_FIELD): the
/// programs then tell IPv4 by its v4-mapped address in the IPv6 fields, which
/// those kernels fill for IPv4 sockets.
pub fn addr_fields(f: &Format) -> Result<AddrFields> {
    Ok(AddrFields {
        sport: f.offset("sport", 2)?,
        dport: f.offset("dport", 2)?,
        family: f.offset_or_absent("family", 2)?,
        saddr: f.offset("saddr", 4)?,
        daddr: f.offset("daddr", 4)?,
        saddr_v6: f.offset("saddr_v6", 16)?,
        daddr_v6: f.offset("daddr_v6", 16)?,
        _pad: 0,
    })
}

/// Struct offsets the TCP programs read, from the running kernel's BTF.
pub fn sock_offsets(btf: &Btf) -> Result<SockOffsets> {
    let off = |s: &str, p: &str| -> Result<u16> {
        u16::try_from(btf.member(s, p)?.offset).with_context(|| format!("{s}.{p} offset too large"))
    };
    let ca = btf.bitfield("inet_connection_sock", "icsk_ca_state")?;
    let cb = off("sk_buff", "cb")?;
    Ok(SockOffsets {
        icsk_pending: off("inet_connection_sock", "icsk_pending")?,
        icsk_ca_state: u16::try_from(ca.bit_offset / 8)?,
        ca_state_shift: (ca.bit_offset % 8) as u8,
        ca_state_bits: ca.bits as u8,
        skc_net: off("sock", "__sk_common.skc_net.net")?,
        net_inum: off("net", "ns.inum")?,
        skc_state: off("sock", "__sk_common.skc_state")?,
        skb_gso_segs: cb + off("tcp_skb_cb", "tcp_gso_segs")?,
        skb_head: off("sk_buff", "head")?,
        skb_network_header: off("sk_buff", "network_header")?,
        skb_transport_header: off("sk_buff", "transport_header")?,
        skb_sk: off("sk_buff", "sk")?,
        skb_protocol: off("sk_buff", "protocol")?,
    })
}

/// Where a flow is in `struct sock_common`, for the raw tracepoints' programs.
pub fn skc_offsets(btf: &Btf) -> Result<SkcOffsets> {
    let off = |p: &str| -> Result<u16> {
        u16::try_from(btf.member("sock_common", p)?.offset)
            .with_context(|| format!("sock_common.{p} offset too large"))
    };
    // A kernel without IPv6 has no v6 fields: IPv4 flows only.
    let v6 = |p: &str| {
        if btf.member("sock_common", p).is_ok() {
            off(p)
        } else {
            Ok(NO_FIELD)
        }
    };
    Ok(SkcOffsets {
        family: off("skc_family")?,
        num: off("skc_num")?,
        dport: off("skc_dport")?,
        rcv_saddr: off("skc_rcv_saddr")?,
        daddr: off("skc_daddr")?,
        v6_rcv_saddr: v6("skc_v6_rcv_saddr")?,
        v6_daddr: v6("skc_v6_daddr")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let (f, a) = parse_addr("127.0.0.1").unwrap();
        assert_eq!((f, fmt_addr(f, &a)), (AF_INET, "127.0.0.1".to_string()));
        let (f, a) = parse_addr("::1").unwrap();
        assert_eq!((f, fmt_addr(f, &a)), (AF_INET6, "::1".to_string()));
        let row: crate::source::Fields = vec![
            ("ip", serde_json::json!(6)),
            ("a", serde_json::json!("::1")),
            ("p", serde_json::json!(80)),
        ];
        assert_eq!(endpoint(&row, "a", "p"), "[::1]:80");
        assert!(parse_addr("localhost").is_err());
        assert_eq!(tcp_state(1), "ESTABLISHED");
        assert_eq!(tcp_state(99), "-");
    }

    #[test]
    fn retransmit_layout_from_fixture() {
        let f = Format::parse(include_str!(
            "../../../tests/fixtures/tcp_retransmit_skb.format"
        ))
        .unwrap();
        let a = addr_fields(&f).unwrap();
        assert_eq!(
            (
                a.sport, a.dport, a.family, a.saddr, a.daddr, a.saddr_v6, a.daddr_v6
            ),
            (28, 30, 32, 34, 38, 42, 58)
        );
        assert_eq!(f.offset("err", 4).unwrap(), 76);
    }

    #[test]
    fn sock_offsets_from_this_kernel() {
        let Ok(btf) = Btf::load() else {
            assert!(std::env::var("CI").is_err(), "CI needs BTF");
            return;
        };
        let s = sock_offsets(&btf).unwrap();
        assert_eq!(s.icsk_ca_state + 2, s.icsk_pending);
        assert_eq!(s.ca_state_bits, 5);
        let skc = skc_offsets(&btf).unwrap();
        // include/net/sock.h: the address pair, then the port pair, then family.
        assert_eq!(
            (skc.daddr, skc.rcv_saddr, skc.dport, skc.num, skc.family),
            (0, 4, 12, 14, 16)
        );
    }
}
