//! tcpdrop against the real kernel: packets dropped by an nftables rule in a
//! namespace the test makes.

use std::time::Duration;

use tracer_tests::{
    Tracer,
    net::{Netns, ping_pong},
    require_tracing,
};

#[test]
fn netfilter_drops_with_tuple_reason_and_stack() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    let cport = client.local_addr().unwrap().port();
    ping_pong(&mut client, &mut server, 2, 10);
    let t = Tracer::start(&["tcpdrop", "--stack", "--json"]);
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    ns.flush_rules();
    let out = t.stop();
    out.assert_success();
    let rows: Vec<_> = out
        .json()
        .into_iter()
        .filter(|r| r["dport"] == port && r["sport"] == cport)
        .collect();
    // The probe and the RTO retransmits within 0.7 s, each dropped.
    assert!(rows.len() >= 2, "{}", out.stdout);
    for r in &rows {
        assert_eq!(r["reason"], "NETFILTER_DROP", "{r}");
        assert_eq!(r["saddr"], "127.0.0.1");
        assert_eq!(r["daddr"], "127.0.0.1");
        assert_eq!(r["ip"], 4);
        assert!(
            r["location"].as_str().unwrap().starts_with("nft_do_chain"),
            "{r}"
        );
        let stack: Vec<&str> = r["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(
            stack.iter().any(|f| f.starts_with("nft_do_chain")),
            "{stack:?}"
        );
    }
}

#[test]
fn ipv6_drops() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("::1");
    ping_pong(&mut client, &mut server, 2, 10);
    let t = Tracer::start(&["tcpdrop", "--json"]);
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ns.flush_rules();
    let out = t.stop();
    let rows: Vec<_> = out
        .json()
        .into_iter()
        .filter(|r| r["dport"] == port)
        .collect();
    assert!(!rows.is_empty(), "{}", out.stdout);
    assert!(
        rows.iter()
            .all(|r| r["ip"] == 6 && r["daddr"] == "::1" && r["reason"] == "NETFILTER_DROP"),
        "{}",
        out.stdout
    );
}
