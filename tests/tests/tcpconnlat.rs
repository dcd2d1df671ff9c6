//! tcpconnlat against the real kernel: connects inside a namespace, one of them
//! with its first SYN dropped.

use std::{net::TcpListener, time::Duration};

use tracer_tests::{Tracer, net::Netns, own_pid, require_tracing, run_tracer};

/// The tests trace this process's connects: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let t = Tracer::start(&["tcpconnlat", "-p", &own_pid().to_string(), "--json"]);
    ns.run("connector", move || {
        drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
    });

    // First SYN dropped: the connect completes with the SYN retransmit, 1 s later.
    ns.drop_rule(&format!("tcp dport {port} tcp flags syn drop"));
    let slow = ns.run("slow-connector", move || {
        std::thread::spawn(move || std::net::TcpStream::connect(("127.0.0.1", port)).map(drop))
    });
    std::thread::sleep(Duration::from_millis(500));
    ns.flush_rules();
    slow.join().unwrap().unwrap();
    let out = t.stop();
    out.assert_success();
    let rows: Vec<_> = out
        .json()
        .into_iter()
        .filter(|r| r["dport"] == port)
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    let fast = &rows[0];
    assert_eq!(fast["pid"], own_pid());
    assert_eq!(fast["comm"], "connector");
    assert_eq!(fast["daddr"], "127.0.0.1");
    let lat = fast["lat_ms"].as_f64().unwrap();
    assert!(lat > 0.0 && lat < 1000.0, "{fast}");
    assert!(rows[1]["lat_ms"].as_f64().unwrap() >= 1000.0, "{}", rows[1]);
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
    ns.run("connector", move || {
        for _ in 0..20 {
            drop(std::net::TcpStream::connect(("::1", port)).unwrap());
        }
    });
    let (hist, slow_only) = (hist.stop(), slow_only.stop());
    assert_eq!(hist.json()[0]["count"], 20, "{}", hist.stdout);
    assert!(
        slow_only.json().is_empty(),
        "loopback connects take far less than 500 ms: {}",
        slow_only.stdout
    );
}

#[test]
fn bad_input() {
    run_tracer(&["tcpconnlat", "--min-latency", "-1"]).assert_one_line_error("--min-latency");
    run_tracer(&["tcpconnlat", "-p", "999999999"]).assert_one_line_error("no such process");
}
