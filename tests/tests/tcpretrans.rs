//! tcpretrans against the real kernel, in network namespaces the tests make, with
//! nftables dropping packets on the input hook.

use std::time::Duration;

use serde_json::{Value, json};
use tracer_tests::{
    Tracer,
    hidden::{NET_RX, TIMER, assert_count},
    net::{Netns, ping_pong, tcp_info, wait_acked},
    require_tracing, run_tracer, wait_for,
};

fn flow_rows<'a>(rows: &'a [Value], ns: &Netns, lport: u16, rport: u16) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["netns"] == ns.inode() && r["lport"] == lport && r["rport"] == rport)
        .collect()
}

/// RTO retransmits of the current unacknowledged data so far (TCP_INFO's
/// tcpi_retransmits; tail loss probes are not counted there).
fn rtos(s: &std::net::TcpStream) -> u8 {
    tcp_info(s).tcpi_retransmits
}

/// The hook the retransmit programs attach to: the raw tracepoint (the
/// default where the kernel has BTF) or, with it skipped, the classic one.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    Raw,
    Classic,
}

impl Via {
    fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Via::Raw => vec![],
            Via::Classic => vec![(
                "TRACER_SKIP_HOOKS",
                "raw:tcp_retransmit_skb,raw:tcp_retransmit_synack",
            )],
        }
    }

    /// What `-v` says of the program for `tracepoint`.
    fn hook_line(self, tracepoint: &str) -> String {
        match self {
            Via::Raw => format!("raw tracepoint {tracepoint} -> {tracepoint}_raw"),
            Via::Classic => format!("tracepoint tcp:{tracepoint} -> {tracepoint} "),
        }
    }
}

/// Tracers on each of `vias`, started together on one workload.
fn start(args: &[&str], vias: &[Via]) -> Vec<(Via, Tracer)> {
    let envs: Vec<_> = vias.iter().map(|v| v.env()).collect();
    let runs: Vec<tracer_tests::Run> = envs.iter().map(|e| (args, &e[..])).collect();
    vias.iter()
        .copied()
        .zip(Tracer::start_together(&runs))
        .collect()
}

/// An established loopback connection; everything to the server port dropped
/// while 100 bytes wait, until the kernel has retransmitted them on two RTOs:
/// one tail loss probe first, then RTOs. The drop rule goes before the next RTO
/// (backoff: twice the last wait), which then gets through. Traced by a
/// tracer on each of `vias` at once: each must tell the same.
fn loss_probe_then_rtos(loopback: &'static str, vias: &[Via]) {
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect(loopback);
    let lport = client.local_addr().unwrap().port();
    ping_pong(&mut client, &mut server, 5, 100);
    // The warm-up's delayed ACKs go out before the drop rule (which would eat
    // them and make the server retransmit too).
    wait_acked(&client, &server);
    let tracers = start(&["tcpretrans", "-l", "--netns", "--json", "-v"], vias);
    let before = ns.snmp();
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    wait_for("two RTOs", || rtos(&client) >= 2);
    ns.flush_rules();
    let mut buf = [0u8; 100];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    // Retransmits are over once the data is acknowledged.
    wait_acked(&client, &server);
    let after = ns.snmp();
    for (via, t) in tracers {
        check_loss_probe_then_rtos(loopback, via, t, &ns, (lport, port), (&before, &after));
    }
}

type Counters = std::collections::HashMap<String, u64>;

fn check_loss_probe_then_rtos(
    loopback: &str,
    via: Via,
    t: Tracer,
    ns: &Netns,
    (lport, port): (u16, u16),
    (before, after): (&Counters, &Counters),
) {
    let out = t.stop();
    out.assert_success();
    let hook = via.hook_line("tcp_retransmit_skb");
    assert!(out.stderr.contains(&hook), "{}", out.stderr);
    let rows = out.json();
    let flow = flow_rows(&rows, ns, lport, port);
    let kinds: Vec<&str> = flow.iter().map(|r| r["type"].as_str().unwrap()).collect();
    let delta = |k: &str| after[k] - before[k];
    let in_ns: Vec<String> = rows
        .iter()
        .filter(|r| r["netns"] == ns.inode())
        .map(|r| {
            format!(
                "{}:{}>{}:{} {}",
                r["laddr"], r["lport"], r["raddr"], r["rport"], r["type"]
            )
        })
        .collect();
    let counters = format!(
        "kernel: TCPLossProbes {} TCPTimeouts {} RetransSegs {}; rows: {kinds:?}; all rows in the namespace: {in_ns:?}",
        delta("TcpExt:TCPLossProbes"),
        delta("TcpExt:TCPTimeouts"),
        delta("Tcp:RetransSegs")
    );
    // Exactly one probe, first; every other retransmit is an RTO: the two the
    // test waited for, and the ones (normally one) until the rule was gone. The
    // timers fire in softirqs: the kernel may have hidden some (see `hidden`).
    let allowed = out.hidden(&[TIMER, NET_RX]);
    assert_eq!(delta("TcpExt:TCPLossProbes"), 1, "{counters}");
    let probes = kinds.iter().filter(|k| **k == "L").count() as u64;
    assert_count(probes, 1, allowed, &format!("loss probes; {counters}"));
    if probes == 1 {
        assert_eq!(kinds.first(), Some(&"L"), "{counters}");
    }
    assert_count(
        kinds.len() as u64,
        delta("Tcp:RetransSegs"),
        allowed,
        &counters,
    );
    let rtos = kinds.iter().filter(|k| **k == "R").count() as u64;
    assert_eq!(rtos + probes, kinds.len() as u64, "{counters}");
    assert!(delta("TcpExt:TCPTimeouts") >= 2, "{counters}");
    for r in &flow {
        assert_eq!(r["ip"], if loopback == "::1" { 6 } else { 4 });
        assert_eq!(r["laddr"], loopback);
        assert_eq!(r["state"], "ESTABLISHED");
    }
}

/// Also through the classic tracepoint's program (the path of kernels
/// without BTF), on the same retransmits.
#[test]
fn tail_loss_probe_is_told_from_rtos_ipv4() {
    require_tracing!();
    loss_probe_then_rtos("127.0.0.1", &[Via::Raw, Via::Classic]);
}

#[test]
fn tail_loss_probe_is_told_from_rtos_ipv6() {
    require_tracing!();
    loss_probe_then_rtos("::1", &[Via::Raw]);
}

/// The client's handshake ACK dropped, the server's request socket
/// retransmits its SYN-ACK (T = S), reported with the flow as the server sees
/// it, from the raw tracepoint (which reads it from the request socket) and
/// from the classic one.
#[test]
fn synack_retransmits_carry_the_flow() {
    require_tracing!();
    let ns = Netns::new();
    let (listener, port) = ns.run("listen", || {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    });
    let tracers = start(
        &["tcpretrans", "--netns", "--json", "-v"],
        &[Via::Raw, Via::Classic],
    );
    let before = ns.snmp();
    // Pure ACKs only: the SYN and the SYN-ACKs pass.
    ns.drop_rule(&format!("tcp dport {port} tcp flags == ack drop"));
    let mut client = ns.run("connect", move || {
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    });
    let cport = client.local_addr().unwrap().port();
    let retrans = || ns.snmp()["Tcp:RetransSegs"] - before["Tcp:RetransSegs"];
    wait_for("a SYN-ACK retransmit", || retrans() >= 1);
    ns.flush_rules();
    // Data completes the handshake at the server.
    std::io::Write::write_all(&mut client, b"x").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut buf = [0u8; 1];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    wait_acked(&client, &server);
    let kernel = retrans();
    for (via, t) in tracers {
        let out = t.stop();
        out.assert_success();
        let hook = via.hook_line("tcp_retransmit_synack");
        assert!(out.stderr.contains(&hook), "{}", out.stderr);
        let rows = out.json();
        let in_ns: Vec<&Value> = rows.iter().filter(|r| r["netns"] == ns.inode()).collect();
        let allowed = out.hidden(&[TIMER, NET_RX]);
        assert_count(in_ns.len() as u64, kernel, allowed, &format!("{in_ns:?}"));
        check_synack_rows(&in_ns, port, cport);
    }
}

fn check_synack_rows(in_ns: &[&Value], port: u16, cport: u16) {
    for r in in_ns {
        assert_eq!(
            (&r["laddr"], &r["lport"], &r["raddr"], &r["rport"]),
            (
                &json!("127.0.0.1"),
                &json!(port),
                &json!("127.0.0.1"),
                &json!(cport)
            ),
            "{r}"
        );
        assert_eq!(
            (&r["type"], &r["state"], &r["ip"]),
            (&json!("S"), &json!("NEW_SYN_RECV"), &json!(4))
        );
    }
}

#[test]
fn probes_are_hidden_without_l() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    ping_pong(&mut client, &mut server, 5, 100);
    wait_acked(&client, &server);
    let t = Tracer::start(&["tcpretrans", "--netns", "--json"]);
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    wait_for("an RTO", || rtos(&client) >= 1);
    ns.flush_rules();
    let mut buf = [0u8; 100];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    wait_acked(&client, &server);
    let out = t.stop();
    let rows = out.json();
    let flow = flow_rows(&rows, &ns, client.local_addr().unwrap().port(), port);
    assert!(
        !flow.is_empty() || out.hidden(&[TIMER, NET_RX]) > 0,
        "{}",
        out.stdout
    );
    assert!(flow.iter().all(|r| r["type"] == "R"), "{}", out.stdout);
}

/// Every tenth data packet dropped on input during a 1 MB transfer (a counter,
/// not `numgen random`: loopback's TSO packets can number only a few dozen, and
/// a random 10% then sometimes drops none; heavier drop rates can chain RTO
/// backoffs into stalls of minutes under emulation): the per-flow counts (-c)
/// add up to the namespace's TcpRetransSegs. Both directions count (the server
/// may retransmit its FIN), and SYN-ACK retransmits would too (T = S); tail loss
/// probes are included with -l.
#[test]
fn per_flow_counts_match_the_kernel() {
    require_tracing!();
    let ns = Netns::new();
    ns.exec("ip link set lo mtu 1500");
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    // Fail rather than hang if the transfer stalls.
    server
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let t = Tracer::start(&["tcpretrans", "-c", "-l", "--netns", "--json", "600"]);
    let before = ns.snmp();
    ns.drop_rule(&format!("tcp dport {port} numgen inc mod 10 == 0 drop"));
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            match std::io::Read::read(&mut server, &mut buf) {
                Ok(0) => break (total, server),
                Ok(n) => total += n,
                Err(e) => panic!("transfer stalled after {total} bytes: {e}"),
            }
        }
    });
    std::io::Write::write_all(&mut client, &vec![9u8; 1 << 20]).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    // The server stays open until the counters are read: its FIN (and the
    // client's ACK of it, which the rule could drop) would come later.
    let (total, server) = reader.join().unwrap();
    assert_eq!(total, 1 << 20);
    ns.flush_rules();
    wait_acked(&client, &server);
    let after = ns.snmp();
    let out = t.stop();
    out.assert_success();
    let mut segs = 0;
    for rec in out.json() {
        for f in rec["flows"].as_array().unwrap() {
            if f["netns"] == ns.inode() {
                segs += f["segs"].as_u64().unwrap();
            }
        }
    }
    let kernel = after["Tcp:RetransSegs"] - before["Tcp:RetransSegs"];
    assert!(kernel > 0, "no retransmits happened");
    // Exact, unless the kernel ran softirqs where BPF cannot see them: one can
    // hold several retransmits, so then the tracer's count is only bounded.
    if out.hidden(&[TIMER, NET_RX]) == 0 {
        assert_eq!(
            segs, kernel,
            "tracer {segs} segments, kernel {kernel}; {}",
            out.stdout
        );
    } else {
        assert!(
            segs <= kernel,
            "tracer {segs} segments, kernel {kernel}; {}",
            out.stdout
        );
    }
}

#[test]
fn text_columns() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    ping_pong(&mut client, &mut server, 3, 10);
    wait_acked(&client, &server);
    let t = Tracer::start(&["tcpretrans", "-l"]);
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 10]).unwrap();
    // The loss probe's line, or an RTO's if the kernel hid the probe.
    let needle = format!("> 127.0.0.1:{port}");
    wait_for("a retransmit's line", || t.stdout_now().contains(&needle));
    ns.flush_rules();
    let out = t.stop();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "TIME",
            "PID",
            "IP",
            "LADDR:LPORT",
            "T>",
            "RADDR:RPORT",
            "STATE"
        ]
    );
    assert!(out.stdout.contains(&needle), "{}", out.stdout);
}

#[test]
fn bad_input() {
    run_tracer(&["tcpretrans", "-4", "-6"]).assert_one_line_error("cannot be used with");
    run_tracer(&["tcpretrans", "0"])
        .assert_one_line_error("interval must be a positive whole number");
}
