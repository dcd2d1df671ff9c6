//! tracer exporter against the real kernel and a real Prometheus: known block,
//! fault and TCP workloads arrive as exact counts, and the HTTP side survives
//! hostile clients.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracer_tests::{
    Tracer,
    block::{LoopDevice, block_workload},
    fault::Toucher,
    hidden::{BLOCK, NET_RX, TIMER, assert_count},
    net::{Netns, host_tcp_counter, ping_pong, tcp_info, wait_acked},
    prometheus::{Prometheus, http_get},
    require_tracing, run_command, run_tracer, tracepoint_has_field, tracer_bin, wait_for,
};

const N: u64 = 200;
const M: u64 = 50;

/// One exporter at a time: they count system-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// Starts `tracer exporter` on a port of the kernel's choice; returns it and
/// the port it serves on.
fn start_exporter(args: &[&str]) -> (Tracer, u16) {
    let mut all = vec!["exporter", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let t = Tracer::start(&all);
    let err = t.stderr_now();
    let port = err
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in: {err}"));
    (t, port)
}

/// The exporter's own value of a series (exact label set, Prometheus text).
fn scrape_value(port: u16, series: &str) -> f64 {
    let (status, _, body) = http_get(port, "/metrics", &[]);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Sum of every series of a family whose labels contain `matcher`.
fn scrape_sum(port: u16, name: &str, matcher: &str) -> f64 {
    let (_, _, body) = http_get(port, "/metrics", &[]);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(matcher))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn block_faults_and_tcp_reach_prometheus() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = LoopDevice::new(64);
    let (exporter, port) = start_exporter(&["--top-processes", "1000"]);
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    prom.wait_value("up{job=\"tracer\"}", 1.0);

    // Block: N 4 KiB writes and M 64 KiB reads on the test's own disk.
    block_workload(&dev, N, M);
    let disk = format!("disk=\"{}\"", dev.name);
    let count =
        |op: &str| format!("sum(tracer_block_io_latency_seconds_count{{{disk},op=\"{op}\"}})");
    // The I/O is complete: what the exporter serves now is all it will count
    // of it. Prometheus must then scrape exactly that (waiting on the count
    // itself could stop early by the hidden allowance, before the reads).
    let served = |op: &str| {
        let (_, _, body) = http_get(port, "/metrics", &[]);
        body.lines()
            .filter(|l| l.starts_with("tracer_block_io_latency_seconds_count{"))
            .filter(|l| l.contains(&disk) && l.contains(&format!("op=\"{op}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (writes, reads) = (served("write"), served("read"));
    for (op, n) in [("write", writes), ("read", reads)] {
        // None served (all hidden) is no series at all: assert_count judges.
        if n > 0.0 {
            prom.wait_value(&count(op), n);
        }
    }
    let allowed = exporter.hidden_now(&[BLOCK]);
    let (writes, reads) = (writes as u64, reads as u64);
    assert_count(writes, N, allowed, "writes in Prometheus");
    assert_count(reads, M, allowed, "reads in Prometheus");
    let sizes = prom
        .value(&format!("sum(tracer_block_io_size_bytes_sum{{{disk}}})"))
        .unwrap() as u64;
    // Sizes are counted at issue (bitesize), the latencies at completion:
    // a completion the kernel hid leaves its I/O in the sizes.
    let want_bytes = N * 4096 + M * 65536;
    assert!(
        sizes >= writes * 4096 + reads * 65536 && sizes <= want_bytes,
        "bytes of the I/O: {sizes}, with {writes} writes and {reads} reads timed (the kernel hid at most {allowed})"
    );
    // Prometheus' median of the writes lies in the bucket of the exporter's
    // exposition where half the writes are reached (the kernel's bucket edges).
    let q = prom
        .value(&format!(
            "histogram_quantile(0.5, sum by (le) (tracer_block_io_latency_seconds_bucket{{{disk},op=\"write\"}}))"
        ))
        .unwrap();
    let (_, _, body) = http_get(port, "/metrics", &[]);
    let buckets: Vec<(f64, f64)> = body
        .lines()
        .filter(|l| {
            l.starts_with("tracer_block_io_latency_seconds_bucket{")
                && l.contains(&disk)
                && l.contains("op=\"write\"")
                && !l.contains("+Inf")
        })
        .map(|l| {
            let le: f64 = l
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (le, l.rsplit_once(' ').unwrap().1.parse().unwrap())
        })
        .collect();
    let half = writes as f64 / 2.0;
    let i = buckets
        .iter()
        .position(|(_, c)| *c >= half)
        .expect("a bucket with half the writes");
    let low = if i == 0 { 0.0 } else { buckets[i - 1].0 };
    assert!(
        low <= q && q <= buckets[i].0,
        "median {q} s outside the bucket ({low}, {}] holding it: {buckets:?}",
        buckets[i].0
    );

    // Faults: the kernel's own count of the helper's faults while it ran.
    // Under a name of its own: another page-toucher may run meanwhile.
    let comm = format!("pt-{}", std::process::id() % 1_000_000);
    let minor = format!("tracer_process_page_faults_total{{comm=\"{comm}\",type=\"minor\"}}");
    let minor = minor.as_str();
    let mut toucher = Toucher::spawn_named(&["anon", "3000"], &comm);
    let before = scrape_value(port, minor);
    toucher.go();
    let after = scrape_value(port, minor);
    assert_eq!((after - before) as u64, toucher.faults().0, "minor faults");
    assert!(toucher.faults().0 >= 3000);
    prom.wait_value(&format!("sum({minor})"), after);
    drop(toucher);

    // TCP: a loss probe and RTOs in a namespace, their segments counted; the
    // retransmits' drops by reason.
    let ns = Netns::new();
    let (mut client, mut server, tcp_port) = ns.connect("127.0.0.1");
    ping_pong(&mut client, &mut server, 5, 100);
    wait_acked(&client, &server);
    let retrans = |p| scrape_sum(p, "tracer_tcp_retransmitted_segments_total", "");
    // 5.10's kfree_skb has no reasons: every drop's reason is "unknown".
    let reason = if tracepoint_has_field("skb", "kfree_skb", "reason") {
        "reason=\"NETFILTER_DROP\""
    } else {
        "reason=\"unknown\""
    };
    let drops = |p| scrape_sum(p, "tracer_tcp_drops_total", reason);
    let hidden_before = exporter.hidden_now(&[TIMER, NET_RX]);
    // The exporter counts the whole host: the test's namespace's counters
    // bound it from below, the host's (read around the scrapes) from above.
    let host0 = host_tcp_counter("Tcp:RetransSegs");
    let (r0, d0, k0) = (retrans(port), drops(port), ns.snmp());
    ns.drop_rule(&format!("tcp dport {tcp_port} counter drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    wait_for("two RTOs", || tcp_info(&client).tcpi_retransmits >= 2);
    ns.accept_all();
    let dropped = ns.counted_packets();
    ns.flush_rules();
    let mut buf = [0u8; 100];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    wait_acked(&client, &server);
    let (r1, d1, k1) = (retrans(port), drops(port), ns.snmp());
    let host = host_tcp_counter("Tcp:RetransSegs") - host0;
    let allowed = exporter.hidden_now(&[TIMER, NET_RX]) - hidden_before;
    let kernel = k1["Tcp:RetransSegs"] - k0["Tcp:RetransSegs"];
    assert!(kernel >= 3, "a probe and two RTOs at least: {kernel}");
    let counted = (r1 - r0) as u64;
    assert!(
        counted + allowed >= kernel && counted <= host,
        "retransmitted segments: {counted}; the namespace's {kernel}, the host's {host}, hidden {allowed}"
    );
    // Drops: other netfilter drops of the host are counted too.
    assert!(
        (d1 - d0) as u64 + allowed >= dropped,
        "netfilter drops: {}, the rule dropped {dropped}",
        d1 - d0
    );
    prom.wait_value("sum(tracer_tcp_retransmitted_segments_total)", r1);
    assert!(
        prom.value("sum(tracer_tcp_rtt_seconds_count)")
            .unwrap_or(0.0)
            > 0.0
    );

    // Self-metrics: every tool is up; nothing was lost.
    assert_eq!(
        prom.value("sum(tracer_source_up)"),
        Some(11.0),
        "{}",
        prom.log()
    );
    assert_eq!(prom.value("sum(tracer_events_lost_total)"), Some(0.0));
    let out = exporter.stop();
    out.assert_success();
}

#[test]
fn exposition_is_valid_and_hostile_clients_do_no_harm() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = LoopDevice::new(16);
    let (exporter, port) = start_exporter(&["--tools", "biolatency,pagefaults"]);
    block_workload(&dev, 10, 0);

    // Both formats, as Prometheus' own checker reads them.
    let (status, head, text) = http_get(port, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (status, head, om) = http_get(
        port,
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
    );
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let mut check = std::process::Command::new("promtool");
    check
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped());
    let mut child = check
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Histograms: cumulative buckets, +Inf equal to _count.
    let disk = format!("disk=\"{}\"", dev.name);
    let counts: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("tracer_block_io_latency_seconds_bucket{") && l.contains(&disk))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    let total = scrape_sum(port, "tracer_block_io_latency_seconds_count", &disk);
    assert_eq!(counts.last().copied(), Some(total));
    assert_count(total as u64, 10, exporter.hidden_now(&[BLOCK]), "I/Os");

    // Paths, methods and malformed requests.
    assert_eq!(http_get(port, "/nope", &[]).0, 404);
    assert_eq!(http_get(port, "/", &[]).0, 200);
    let raw = |req: &[u8]| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let post = raw(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"),
        "{post}"
    );
    let head = raw(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    assert!(raw(b"HELLO\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(b"GET /metrics HTTP/9.9\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert!(raw(huge.as_bytes()).starts_with("HTTP/1.1 431"));

    // Clients that stall (nothing sent, or half a request) hold a connection
    // each, never a scrape: scrapes meanwhile are answered at once.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap();
        }
        stalled.push(s);
    }
    // Concurrent scrapes all succeed.
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || (0..10).all(|_| http_get(port, "/metrics", &[]).0 == 200))
        })
        .collect();
    assert!(scrapers.into_iter().all(|h| h.join().unwrap()));
    // A client that asks and never reads: the response is dropped at the
    // deadline, the server goes on.
    let mut lazy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    lazy.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(http_get(port, "/metrics", &[]).0, 200);
    // Past the connection limit, clients wait for a slot (see
    // half_requests_do_not_starve_scrapes).
    for _ in 0..128 {
        stalled.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    assert_eq!(http_get(port, "/metrics", &[]).0, 200);
    drop(stalled);
    drop(lazy);
    // Memory stays bounded: 128 connections at 8 KiB of request head each, and
    // one exposition shared by every response in flight.
    let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(hwm_kb < 64 * 1024, "exporter peak RSS {hwm_kb} kB");
    let out = exporter.stop();
    out.assert_success();
    assert!(out.stderr.contains("served"), "{}", out.stderr);
}

/// The status line of a raw request's response ("" if none came).
fn status_line(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn absolute_form_and_bare_lf_requests_are_answered() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (exporter, port) = start_exporter(&["--tools", "pagefaults"]);
    // RFC 9112 3.2.2: a server accepts the absolute form of a target.
    let absolute =
        format!("GET http://127.0.0.1:{port}/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(status_line(port, absolute.as_bytes()), "HTTP/1.1 200 OK");
    let absolute = format!("GET http://127.0.0.1:{port}/nope HTTP/1.1\r\n\r\n");
    assert_eq!(
        status_line(port, absolute.as_bytes()),
        "HTTP/1.1 404 Not Found"
    );
    // RFC 9112 2.2: a recipient may take a bare LF as a line's end.
    let started = Instant::now();
    assert_eq!(
        status_line(port, b"GET /metrics HTTP/1.1\nHost: 127.0.0.1\n\n"),
        "HTTP/1.1 200 OK"
    );
    // Answered, not closed at the 10 s deadline for a request never finished.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        status_line(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\n\r\n"),
        "HTTP/1.1 200 OK"
    );
    exporter.stop().assert_success();
}

/// Connections that each sent half a request, reopened as the server closes
/// them, from a thread of their own until dropped.
struct HalfRequests {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl HalfRequests {
    /// Opens `n` (all of them before it returns), then keeps them open.
    fn hold(port: u16, n: usize) -> HalfRequests {
        let open = move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // The server may have closed it already (then it is reopened).
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut conns: Vec<TcpStream> = (0..n).map(|_| open()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut reopened = 0;
            // A hang guard: the test stops it long before.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                for c in &mut conns {
                    match c.read(&mut [0u8; 512]) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // Closed, or answered (and then closed).
                        _ => {
                            *c = open();
                            reopened += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            reopened
        });
        HalfRequests {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops, closes them all; returns how many were reopened.
    fn release(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for HalfRequests {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn half_requests_do_not_starve_scrapes() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (exporter, port) = start_exporter(&["--tools", "pagefaults"]);
    // As many half-sent requests as the server has connection slots, each
    // reopened as soon as the server closes it.
    let attack = HalfRequests::hold(port, 128);
    for i in 1..=20 {
        let started = Instant::now();
        let (status, _, _) = http_get(port, "/metrics", &[]);
        let took = started.elapsed();
        assert_eq!(status, 200, "scrape {i} of 20 (after {took:?})");
        // Needed: about 1 s (the idle deadline while every slot is taken).
        assert!(took < Duration::from_secs(15), "scrape {i} took {took:?}");
    }
    let reopened = attack.release();
    // The scrapes got slots that half-requests held: some were closed.
    assert!(reopened >= 1, "no half-request was closed");
    let evicted = scrape_value(port, "tracer_exporter_evicted_connections_total");
    assert!(evicted >= 1.0, "evicted connections: {evicted}");
    exporter.stop().assert_success();
}

#[test]
fn bad_input() {
    run_tracer(&["exporter", "--tools", "nosuch"]).assert_one_line_error("unknown tool 'nosuch'");
    run_tracer(&["exporter", "--tools", "biosnoop"]).assert_one_line_error("nothing to export");
    let out = run_tracer(&["exporter", "--listen", "nowhere"]);
    out.assert_one_line_error("--listen");
    assert_eq!(out.status.code(), Some(2));
    require_tracing!();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    run_command(std::process::Command::new(tracer_bin()).args(["exporter", "--listen", &addr]))
        .assert_one_line_error("cannot listen on");
}
