//! faultsnoop against the real kernel: rows of a helper process's faults.

use std::time::Duration;

use tracer_tests::{Run, Tracer, block::Ext4, fault::Toucher, fuse::SlowFile, require_tracing};

const N: u64 = 2000;

/// The tests compare fault latencies: run them one at a time so that they do not
/// slow each other's faults down (two cores).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn rows_fall_in_the_mapping_and_are_typed() {
    require_tracing!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut toucher = Toucher::spawn(&["anon", &N.to_string()]);
    // The raw tracepoint (preferred) and the classic one, on the same faults.
    let pid = toucher.pid().to_string();
    let args = ["faultsnoop", "-p", &pid, "--json", "-v"];
    let paths = [
        (
            "",
            "raw tracepoint page_fault_user -> fault_start_user_raw (preferred)",
        ),
        (
            "raw:page_fault_user",
            "tracepoint exceptions:page_fault_user -> fault_start_user (fallback",
        ),
    ];
    let envs = paths.map(|(skip, _)| [("TRACER_SKIP_HOOKS", skip)]);
    let runs: Vec<Run> = envs.iter().map(|env| (&args[..], &env[..])).collect();
    let tracers = Tracer::start_together(&runs);
    let (start, end) = toucher.go();
    let (minor, major) = toucher.faults();
    let mut ips = Vec::new();
    for (t, (skip, hook)) in tracers.into_iter().zip(paths) {
        let out = t.stop();
        out.assert_success();
        assert!(out.stderr.contains(hook), "{skip}: {}", out.stderr);
        let rows = out.json();
        let inside: Vec<_> = rows
            .iter()
            .filter(|r| {
                let a =
                    u64::from_str_radix(r["addr"].as_str().unwrap().trim_start_matches("0x"), 16)
                        .unwrap();
                (start..end).contains(&a)
            })
            .collect();
        assert_eq!(inside.len() as u64, N, "{skip}: one row per touched page");
        for r in &inside {
            assert_eq!(r["type"], "write/user/minor", "{skip}: {r}");
            assert_eq!(r["mapping"], "[anon]", "{skip}: {r}");
            assert_eq!(r["pid"], toucher.pid());
            assert_eq!(r["comm"], "page-toucher");
            assert!(r["lat_ns"].as_u64().unwrap() > 0);
        }
        // Distinct pages, each once.
        let mut pages: Vec<&str> = inside.iter().map(|r| r["addr"].as_str().unwrap()).collect();
        pages.sort();
        pages.dedup();
        assert_eq!(pages.len() as u64, N, "{skip}");
        assert_eq!(
            rows.len() as u64,
            minor + major,
            "{skip}: {} rows",
            rows.len()
        );
        assert!(rows.iter().all(|r| r["pid"] == toucher.pid()));
        // The faulting instructions, as both paths read them.
        let mut at: Vec<String> = inside.iter().map(|r| r["ip"].to_string()).collect();
        at.sort();
        ips.push(at);
    }
    assert_eq!(ips[0], ips[1], "the two paths disagree on the faulting ips");
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
    // One page of a FUSE file is read 200 ms late: its major fault takes at least
    // that. Every other fault is reported only if it really took 100 ms: the
    // helpers time each touch, which contains its fault.
    const K: u64 = 32;
    const SLOW_PAGE: u64 = 5;
    let delay = Duration::from_millis(200);
    let threshold = Duration::from_millis(100);
    let file = SlowFile::new(K);
    file.slow_down_page(SLOW_PAGE, delay);
    let lat = |r: &serde_json::Value| r["lat_ns"].as_u64().unwrap();
    let addr = |r: &serde_json::Value| {
        u64::from_str_radix(r["addr"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    };

    let mut anon = Toucher::spawn_timed(&["anon", &N.to_string()], Some(threshold));
    let mut mapped = Toucher::spawn_timed(
        &["file", file.path.to_str().unwrap(), &K.to_string()],
        Some(threshold),
    );
    let slow = Tracer::start(&["faultsnoop", "--json", "--min-latency", "100000"]);
    let anon_range = anon.go();
    let file_range = mapped.go();
    let out = slow.stop();
    out.assert_success();
    let rows = out.json();
    assert!(
        rows.iter().all(|r| lat(r) >= threshold.as_nanos() as u64),
        "rows under the threshold: {}",
        out.stdout
    );
    let page_of = |r: &serde_json::Value, (start, end): (u64, u64)| {
        let a = addr(r);
        (start..end)
            .contains(&a)
            .then(|| ((a - start) / 4096) as usize)
    };
    let slow_page = rows
        .iter()
        .find(|r| r["pid"] == mapped.pid() && page_of(r, file_range) == Some(SLOW_PAGE as usize))
        .unwrap_or_else(|| panic!("the slow page's fault is missing:\n{}", out.stdout));
    assert_eq!(slow_page["type"], "read/user/major", "{slow_page}");
    assert_eq!(
        slow_page["mapping"],
        file.path.to_str().unwrap(),
        "{slow_page}"
    );
    assert!(lat(slow_page) >= delay.as_nanos() as u64, "{slow_page}");
    // Any other fault of the helpers' mappings that was kept really was slow.
    for (toucher, range) in [(&anon, anon_range), (&mapped, file_range)] {
        for r in rows.iter().filter(|r| r["pid"] == toucher.pid()) {
            let Some(page) = page_of(r, range) else {
                continue;
            };
            let made_slow = toucher.pid() == mapped.pid() && page == SLOW_PAGE as usize;
            assert!(
                made_slow || toucher.long_touches().contains(&page),
                "kept, but its touch took under {threshold:?}: {r}"
            );
        }
    }
    assert_eq!(file.fs.delayed().len(), 1, "{:?}", file.fs.delayed());
}
