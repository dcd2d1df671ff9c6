//! tcprtt against the real kernel: two loopback flows in a namespace, one filtered.

use tracer_tests::{
    Finished, Tracer,
    hidden::{NET_RX, TIMER},
    net::{Netns, ping_pong, segs_in, wait_acked},
    require_tracing, run_tracer,
};

/// Two flows, one kept by its remote port; traced at once through the raw
/// tracepoint and, as on kernels without BTF, the classic one: each must count
/// the same.
#[test]
fn remote_port_filter_keeps_one_flow() {
    require_tracing!();
    let ns = Netns::new();
    let (mut c1, mut s1, p1) = ns.connect("127.0.0.1");
    let (mut c2, mut s2, _p2) = ns.connect("127.0.0.1");
    let before_start = segs_in(&c1);
    let port = p1.to_string();
    let args = ["tcprtt", "-P", &port, "--json", "-v"];
    let classic = [("TRACER_SKIP_HOOKS", "raw:tcp_probe")];
    let tracers = Tracer::start_together(&[(&args, &[]), (&args, &classic)]);
    let after_start = segs_in(&c1);
    // 100 round trips on the filtered flow, 1000 on the other.
    ping_pong(&mut c1, &mut s1, 100, 64);
    ping_pong(&mut c2, &mut s2, 1000, 64);
    wait_acked(&c1, &s1);
    let before_stop = segs_in(&c1);
    let outs: Vec<Finished> = tracers.into_iter().map(Tracer::stop).collect();
    let after_stop = segs_in(&c1);
    let hooks = [
        "raw tracepoint tcp_probe -> tcp_probe_raw",
        "tracepoint tcp:tcp_probe -> tcp_probe ",
    ];
    for (out, hook_line) in outs.iter().zip(hooks) {
        out.assert_success();
        assert!(out.stderr.contains(hook_line), "{}", out.stderr);
        let r = &out.json()[0];
        // One sample per segment the client (remote port p1) receives in the
        // established state (tcp_probe): the 100 replies and however many pure
        // ACKs the kernel chose to send, which TCP_INFO counts. Sampled on both
        // sides of start and stop, the kernel's count brackets the tracer's
        // (equal when quiet).
        let count = r["count"].as_u64().unwrap();
        // Segments received in softirqs the kernel hides from BPF are not sampled.
        let hidden = out.hidden(&[TIMER, NET_RX]);
        assert!(count + hidden >= 100, "{r}");
        assert!(
            (before_stop - after_start..=after_stop - before_start)
                .any(|n| count <= n && count + hidden >= n),
            "{count} samples; the client received {}..={} segments: {r}",
            before_stop - after_start,
            after_stop - before_start
        );
        assert!(
            r["p50"].as_u64().unwrap() <= r["max"].as_u64().unwrap(),
            "{r}"
        );
        assert_eq!(r["unit"], "usecs");
    }
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
            r["count"].as_u64().unwrap() + out.hidden(&[TIMER, NET_RX]) >= 100,
            "both ends of 50 round trips: {r}"
        );
    }

    // Only the IPv6 flow's client (its remote port narrows it to one socket):
    // exactly what that socket received, bracketed as above.
    let p6 = c6.peer_addr().unwrap().port();
    wait_acked(&c6, &s6);
    let before_start = segs_in(&c6);
    let t = Tracer::start(&["tcprtt", "-A", "::1", "-P", &p6.to_string(), "--json"]);
    let after_start = segs_in(&c6);
    ping_pong(&mut c4, &mut s4, 50, 64);
    ping_pong(&mut c6, &mut s6, 20, 64);
    wait_acked(&c6, &s6);
    let before_stop = segs_in(&c6);
    let out = t.stop();
    let after_stop = segs_in(&c6);
    let count = out.json()[0]["count"].as_u64().unwrap();
    let hidden = out.hidden(&[TIMER, NET_RX]);
    assert!(count + hidden >= 20, "{}", out.stdout);
    assert!(
        (before_stop - after_start..=after_stop - before_start)
            .any(|n| count <= n && count + hidden >= n),
        "{count} samples; the IPv6 client received {}..={} segments: {}",
        before_stop - after_start,
        after_stop - before_start,
        out.stdout
    );
}

#[test]
fn bad_input() {
    run_tracer(&["tcprtt", "-a", "nowhere"]).assert_one_line_error("not an IPv4 or IPv6 address");
    run_tracer(&["tcprtt", "-P", "99999"]).assert_one_line_error("invalid value '99999'");
    run_tracer(&["tcprtt", "-b", "-B"]).assert_one_line_error("cannot be used with");
}
