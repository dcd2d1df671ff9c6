//! tcpconnlat against the real kernel: connects inside a namespace, one of them
//! with its first SYN dropped.

use std::{net::TcpListener, time::Duration};

use tracer_tests::{
    Finished, Tracer,
    hidden::{NET_RX, TIMER, assert_count},
    measure::timed,
    net::Netns,
    own_pid, require_tracing, run_tracer, wait_for,
};

/// The tests trace this process's connects: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A fast and a slow connect, traced at once through the raw tracepoint and,
/// as on kernels without BTF, the classic one: each must tell the same.
#[test]
fn connect_latency_and_attribution() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new();
    let port = ns.run("ns-listen", || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::mem::forget(l);
        port
    });
    let pid = own_pid().to_string();
    let args = ["tcpconnlat", "-p", &pid, "--json", "-v"];
    let classic = [("TRACER_SKIP_HOOKS", "raw:inet_sock_set_state")];
    let tracers = Tracer::start_together(&[(&args, &[]), (&args, &classic)]);
    let fast_took = ns.run("connector", move || {
        timed(|| drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()))
    });
    let slow_took = slow_connect(&ns, "127.0.0.1", port);
    let hooks = [
        "raw tracepoint inet_sock_set_state -> inet_sock_set_state_raw",
        "tracepoint sock:inet_sock_set_state -> inet_sock_set_state ",
    ];
    for (t, hook_line) in tracers.into_iter().zip(hooks) {
        check_connects(t.stop(), hook_line, port, (fast_took, slow_took));
    }
}

fn check_connects(
    out: Finished,
    hook_line: &str,
    port: u16,
    (fast_took, slow_took): (Duration, Duration),
) {
    out.assert_success();
    assert!(out.stderr.contains(hook_line), "{}", out.stderr);
    let rows: Vec<_> = out
        .json()
        .into_iter()
        .filter(|r| r["dport"] == port)
        .collect();
    // The slow connect completes in a softirq (the SYN-ACK to the retransmitted
    // SYN), which the kernel may hide from BPF.
    let allowed = out.hidden(&[TIMER, NET_RX]);
    assert_count(rows.len() as u64, 2, allowed, "connects");
    let fast = &rows[0];
    assert_eq!(fast["pid"], own_pid());
    assert_eq!(fast["comm"], "connector");
    assert_eq!(fast["daddr"], "127.0.0.1");
    // Each connect's latency lies within the connect() call the test timed; the
    // slow one waited for the SYN retransmit (the initial RTO, 1 s).
    let lat = fast["lat_ms"].as_f64().unwrap();
    assert!(
        lat > 0.0 && lat <= fast_took.as_secs_f64() * 1e3,
        "{fast} in {fast_took:?}"
    );
    if let Some(slow) = rows.get(1) {
        let lat = slow["lat_ms"].as_f64().unwrap();
        assert!(lat >= 1000.0, "{slow}");
        assert!(
            lat <= slow_took.as_secs_f64() * 1e3,
            "{slow} in {slow_took:?}"
        );
    }
}

#[test]
fn histogram_and_min_latency() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new();
    let port = ns.run("ns-listen", || {
        let l = TcpListener::bind("::1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::mem::forget(l);
        port
    });
    let hist = Tracer::start(&[
        "tcpconnlat",
        "--hist",
        "-p",
        &own_pid().to_string(),
        "--json",
    ]);
    let slow_only = Tracer::start(&[
        "tcpconnlat",
        "--min-latency",
        "500",
        "-p",
        &own_pid().to_string(),
        "--json",
    ]);
    // 20 connects the test times, and one it makes slow (its first SYN dropped).
    let fast: Vec<(u16, Duration)> = ns.run("connector", move || {
        (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                let s = std::net::TcpStream::connect(("::1", port)).unwrap();
                (s.local_addr().unwrap().port(), start.elapsed())
            })
            .collect()
    });
    slow_connect(&ns, "::1", port);
    let (hist, slow_only) = (hist.stop(), slow_only.stop());
    let allowed = hist.hidden(&[TIMER, NET_RX]);
    assert_count(
        hist.json()[0]["count"].as_u64().unwrap(),
        21,
        allowed,
        "connects",
    );
    // The slow connect is kept; a fast one only if its connect() took 500 ms.
    let kept = slow_only.json();
    let slow_rows: Vec<_> = kept
        .iter()
        .filter(|r| r["lat_ms"].as_f64().unwrap() >= 1000.0)
        .collect();
    let allowed = slow_only.hidden(&[TIMER, NET_RX]);
    assert_count(slow_rows.len() as u64, 1, allowed, "slow connects");
    for r in &kept {
        assert!(r["lat_ms"].as_f64().unwrap() >= 500.0, "{r}");
        let lport = r["lport"].as_u64().unwrap() as u16;
        if let Some((_, took)) = fast.iter().find(|(p, _)| *p == lport) {
            assert!(
                *took >= Duration::from_millis(500),
                "kept, but took {took:?}: {r}"
            );
        }
    }
}

/// A connect whose first SYN the namespace drops: it completes with the SYN
/// retransmit, one initial RTO (1 s) later. The rule counts what it drops, so the
/// test lifts it only once the first SYN is gone. Returns how long connect() took.
fn slow_connect(ns: &Netns, addr: &'static str, port: u16) -> Duration {
    ns.drop_rule(&format!("tcp dport {port} tcp flags syn counter drop"));
    let slow = ns.run("slow-connector", move || {
        std::thread::spawn(move || {
            timed(|| drop(std::net::TcpStream::connect((addr, port)).unwrap()))
        })
    });
    wait_for("the first SYN to be dropped", || ns.counted_packets() >= 1);
    ns.flush_rules();
    slow.join().unwrap()
}

#[test]
fn bad_input() {
    run_tracer(&["tcpconnlat", "--min-latency", "-1"]).assert_one_line_error("--min-latency");
    run_tracer(&["tcpconnlat", "-p", "999999999"]).assert_one_line_error("no such process");
}
