//! tcprtt against the real kernel: two loopback flows in a namespace, one filtered.

use tracer_tests::{
    Tracer,
    net::{Netns, ping_pong},
    require_tracing, run_tracer,
};

#[test]
fn remote_port_filter_keeps_one_flow() {
    require_tracing!();
    let ns = Netns::new();
    let (mut c1, mut s1, p1) = ns.connect("127.0.0.1");
    let (mut c2, mut s2, _p2) = ns.connect("127.0.0.1");
    let t = Tracer::start(&["tcprtt", "-P", &p1.to_string(), "--json"]);
    // 100 round trips on the filtered flow, 1000 on the other.
    ping_pong(&mut c1, &mut s1, 100, 64);
    ping_pong(&mut c2, &mut s2, 1000, 64);
    let out = t.stop();
    out.assert_success();
    let r = &out.json()[0];
    // One sample per segment the client (remote port p1) receives: the 100
    // replies, plus the odd pure ACK.
    let count = r["count"].as_u64().unwrap();
    assert!((100..=110).contains(&count), "{r}");
    // Loopback: well under 10 ms typically, never a second.
    assert!(r["p50"].as_u64().unwrap() < 10_000, "{r}");
    assert!(r["max"].as_u64().unwrap() < 1_000_000, "{r}");
    assert_eq!(r["unit"], "usecs");
}

#[test]
fn per_address_histograms_and_address_filter() {
    require_tracing!();
    let ns = Netns::new();
    let (mut c4, mut s4, _) = ns.connect("127.0.0.1");
    let (mut c6, mut s6, _) = ns.connect("::1");
    let t = Tracer::start(&["tcprtt", "-B", "--json"]);
    ping_pong(&mut c4, &mut s4, 50, 64);
    ping_pong(&mut c6, &mut s6, 50, 64);
    let out = t.stop();
    let recs = out.json();
    for addr in ["127.0.0.1", "::1"] {
        let r = recs
            .iter()
            .find(|r| r["raddr"] == addr)
            .unwrap_or_else(|| panic!("{addr}: {}", out.stdout));
        assert!(
            r["count"].as_u64().unwrap() >= 100,
            "both ends of 50 round trips: {r}"
        );
    }

    let t = Tracer::start(&["tcprtt", "-A", "::1", "--json"]);
    ping_pong(&mut c4, &mut s4, 50, 64);
    ping_pong(&mut c6, &mut s6, 20, 64);
    let out = t.stop();
    let count = out.json()[0]["count"].as_u64().unwrap();
    assert!(
        (40..=50).contains(&count),
        "only the IPv6 flow's 2 x 20 samples: {}",
        out.stdout
    );
}

#[test]
fn bad_input() {
    run_tracer(&["tcprtt", "-a", "nowhere"]).assert_one_line_error("not an IPv4 or IPv6 address");
    run_tracer(&["tcprtt", "-P", "99999"]).assert_one_line_error("invalid value '99999'");
    run_tracer(&["tcprtt", "-b", "-B"]).assert_one_line_error("cannot be used with");
}
