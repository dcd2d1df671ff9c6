//! faultsnoop against the real kernel: rows of a helper process's faults.

use tracer_tests::{Ext4, Toucher, Tracer, require_tracing};

const N: u64 = 2000;

/// The tests compare fault latencies: run them one at a time so that they do not
/// slow each other's faults down (two cores).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const SLACK: u64 = 16;

#[test]
fn rows_fall_in_the_mapping_and_are_typed() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut toucher = Toucher::spawn(&["anon", &N.to_string()]);
    let t = Tracer::start(&["faultsnoop", "-p", &toucher.pid().to_string(), "--json"]);
    let (start, end) = toucher.go();
    // Keep the helper alive until its rows are printed (mappings come from /proc).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = t.stop();
    out.assert_success();
    let rows = out.json();
    let inside: Vec<_> = rows
        .iter()
        .filter(|r| {
            let a = u64::from_str_radix(r["addr"].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap();
            (start..end).contains(&a)
        })
        .collect();
    assert_eq!(inside.len() as u64, N, "one row per touched page");
    for r in &inside {
        assert_eq!(r["type"], "write/user/minor", "{r}");
        assert_eq!(r["mapping"], "[anon]", "{r}");
        assert_eq!(r["pid"], toucher.pid());
        assert_eq!(r["comm"], "page-toucher");
        assert!(r["lat_ns"].as_u64().unwrap() > 0);
    }
    // Distinct pages, each once.
    let mut pages: Vec<&str> = inside.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    pages.sort();
    pages.dedup();
    assert_eq!(pages.len() as u64, N);
    assert!(rows.len() as u64 <= N + SLACK, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r["pid"] == toucher.pid()));
}

#[test]
fn major_faults_show_the_file() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const K: usize = 32;
    let fs = Ext4::new(64);
    let path = fs.write_file("mapped.bin", K);
    let mut toucher = Toucher::spawn(&["file", path.to_str().unwrap(), &K.to_string()]);
    let t = Tracer::start(&["faultsnoop", "-p", &toucher.pid().to_string(), "--json"]);
    toucher.go();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = t.stop();
    out.assert_success();
    let majors: Vec<_> = out
        .json()
        .into_iter()
        .filter(|r| r["type"] == "read/user/major")
        .collect();
    assert_eq!(majors.len(), K, "{}", out.stdout);
    assert!(
        majors
            .iter()
            .all(|r| r["mapping"] == path.to_str().unwrap()),
        "{}",
        out.stdout
    );
}

#[test]
fn min_latency_keeps_only_slow_faults() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const K: usize = 32;
    let fs = Ext4::new(64);
    let lat = |r: &serde_json::Value| r["lat_ns"].as_u64().unwrap();

    // Calibrate on this machine: the threshold sits at 4x the median minor
    // fault, far below a major fault (a disk read each: 10x to 100x a minor one,
    // natively or under emulation, where both vary from run to run).
    let mut anon = Toucher::spawn(&["anon", &N.to_string()]);
    let t = Tracer::start(&["faultsnoop", "-p", &anon.pid().to_string(), "--json"]);
    anon.go();
    let mut minors: Vec<u64> = t
        .stop()
        .json()
        .iter()
        .filter(|r| r["type"] == "write/user/minor")
        .map(lat)
        .collect();
    minors.sort();
    let threshold = minors[minors.len() / 2] * 4;

    // Anonymous (fast) and file (slow) faults at once, only >= threshold kept.
    let path = fs.write_file("slow.bin", K);
    let mut anon = Toucher::spawn(&["anon", &N.to_string()]);
    let mut file = Toucher::spawn(&["file", path.to_str().unwrap(), &K.to_string()]);
    let min_us = format!("{}", threshold as f64 / 1000.0);
    let slow = Tracer::start(&["faultsnoop", "--json", "--min-latency", &min_us]);
    anon.go();
    file.go();
    let slow = slow.stop();
    slow.assert_success();
    let rows = slow.json();
    assert!(
        rows.iter().all(|r| lat(r) >= threshold),
        "rows under {threshold} ns: {}",
        slow.stdout
    );
    let majors = rows
        .iter()
        .filter(|r| r["pid"] == file.pid() && r["type"] == "read/user/major")
        .count();
    let anons = rows.iter().filter(|r| r["pid"] == anon.pid()).count();
    assert!(
        majors >= K / 2,
        "only {majors} of {K} major faults kept (threshold {threshold} ns)"
    );
    // Minor faults take microseconds; only the odd interrupted one is that slow.
    assert!(
        (anons as u64) < N / 10,
        "{anons} of {N} minor faults kept (threshold {threshold} ns)"
    );
}
