//! tcpdrop against the real kernel: packets dropped by an nftables rule in a
//! namespace the test makes.

use tracer_tests::{
    Finished, Tracer, counter,
    hidden::{NET_RX, TIMER, assert_count},
    net::{Netns, ping_pong},
    require_tracing, tracepoint_has_field, wait_for,
};

/// The reason an nftables drop is reported with, and the function freeing it.
fn expected_drop() -> (&'static str, &'static str) {
    if tracepoint_has_field("skb", "kfree_skb", "reason") {
        ("NETFILTER_DROP", "nft_do_chain")
    } else {
        ("unknown", "nf_hook_slow")
    }
}

/// Drops of an nftables rule, traced at once through the raw tracepoint and,
/// as on kernels without BTF, the classic one: each must tell the same.
#[test]
fn netfilter_drops_with_tuple_reason_and_stack() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    let cport = client.local_addr().unwrap().port();
    ping_pong(&mut client, &mut server, 2, 10);
    let args = ["tcpdrop", "--stack", "--json", "-v"];
    let classic = [("TRACER_SKIP_HOOKS", "raw:kfree_skb")];
    let tracers = Tracer::start_together(&[(&args, &[]), (&args, &classic)]);
    ns.drop_rule(&format!("tcp dport {port} counter drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    let ours = |r: &serde_json::Value| r["dport"] == port && r["sport"] == cport;
    // The data and its retransmits (a loss probe, then RTOs), each dropped.
    wait_for("two drops", || ns.counted_packets() >= 2);
    ns.accept_all();
    let dropped = ns.counted_packets();
    ns.flush_rules();
    let hooks = [
        "raw tracepoint kfree_skb -> kfree_skb_raw",
        "tracepoint skb:kfree_skb -> kfree_skb ",
    ];
    for (t, hook_line) in tracers.into_iter().zip(hooks) {
        check_drops(t.stop(), hook_line, &ours, dropped);
    }
}

fn check_drops(
    out: Finished,
    hook_line: &str,
    ours: &dyn Fn(&serde_json::Value) -> bool,
    dropped: u64,
) {
    out.assert_success();
    assert!(out.stderr.contains(hook_line), "{}", out.stderr);
    let rows: Vec<_> = out.json().into_iter().filter(|r| ours(r)).collect();
    // Every packet the rule dropped, and only those (but for drops in softirqs
    // the kernel hid from BPF: retransmits come from timers).
    let allowed = out.hidden(&[TIMER, NET_RX]);
    assert_count(rows.len() as u64, dropped, allowed, "drops");
    // Each drop carries its own stack: none is refused or overwritten.
    assert_eq!(counter(&out.stderr, "no_stack"), 0, "{}", out.stderr);
    // Kernels with drop reasons (5.17+) free the packet in nft_do_chain with
    // NETFILTER_DROP; before, nf_hook_slow frees it, reason unknown.
    let (reason, freed_in) = expected_drop();
    for r in &rows {
        assert_eq!(r["reason"], reason, "{r}");
        assert_eq!(r["saddr"], "127.0.0.1");
        assert_eq!(r["daddr"], "127.0.0.1");
        assert_eq!(r["ip"], 4);
        assert!(r["location"].as_str().unwrap().starts_with(freed_in), "{r}");
        let stack: Vec<&str> = r["stack"]
            .as_array()
            .unwrap_or_else(|| panic!("no stack: {r}"))
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(stack.iter().any(|f| f.starts_with(freed_in)), "{stack:?}");
    }
}

#[test]
fn ipv6_drops() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("::1");
    ping_pong(&mut client, &mut server, 2, 10);
    let cport = client.local_addr().unwrap().port();
    let t = Tracer::start(&["tcpdrop", "--json"]);
    ns.drop_rule(&format!("tcp dport {port} counter drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    let ours = |r: &serde_json::Value| r["dport"] == port && r["sport"] == cport;
    wait_for("a drop", || ns.counted_packets() >= 1);
    ns.accept_all();
    let dropped = ns.counted_packets();
    ns.flush_rules();
    let out = t.stop();
    let rows: Vec<_> = out.json().into_iter().filter(ours).collect();
    let allowed = out.hidden(&[TIMER, NET_RX]);
    assert_count(rows.len() as u64, dropped, allowed, "drops");
    let (reason, _) = expected_drop();
    assert!(
        rows.iter()
            .all(|r| r["ip"] == 6 && r["daddr"] == "::1" && r["reason"] == reason),
        "{}",
        out.stdout
    );
}
