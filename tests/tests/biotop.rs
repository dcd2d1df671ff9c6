//! biotop against the real kernel: per-process totals of the test's own I/O.

use std::time::{Duration, Instant};

use tracer_tests::{
    Tracer,
    block::{LoopDevice, R_SIZE, W_SIZE, block_workload, dd_writer},
    hidden::{BLOCK, assert_count},
    own_pid, require_tracing, thread_comm,
};

const N: u64 = 200;
const M: u64 = 50;

#[test]
fn totals_per_process_and_direction() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let t = Tracer::start(&["biotop", "-d", &dev.name, "--json"]);
    let mut dd = dd_writer(&dev, 30, 4096);
    let dd_pid = dd.id();
    block_workload(&dev, N, M);
    assert!(dd.wait().unwrap().success());
    let out = t.stop();
    out.assert_success();
    // One report per second: the run's totals are the sum over its reports.
    let recs = out.json();
    let find = |pid: u32, d: &str| {
        let mut total: Option<serde_json::Value> = None;
        for r in recs.iter().flat_map(|rec| rec["rows"].as_array().unwrap()) {
            if r["pid"] != pid || r["d"] != d {
                continue;
            }
            match &mut total {
                None => total = Some(r.clone()),
                Some(t) => {
                    for k in ["io", "bytes"] {
                        t[k] = (t[k].as_u64().unwrap() + r[k].as_u64().unwrap()).into();
                    }
                }
            }
        }
        total
    };
    let allowed = out.hidden(&[BLOCK]);
    let w = find(own_pid(), "W").unwrap_or_else(|| panic!("no write row: {}", out.stdout));
    let ios = w["io"].as_u64().unwrap();
    assert_count(ios, N, allowed, "writes");
    assert_eq!(w["bytes"], ios * W_SIZE);
    assert_eq!(w["comm"], thread_comm().as_str());
    assert_eq!(w["disk"], dev.name.as_str());
    assert_eq!(w["major"], 7);
    let r = find(own_pid(), "R").unwrap();
    let ios = r["io"].as_u64().unwrap();
    assert_count(ios, M, allowed, "reads");
    assert_eq!(r["bytes"], ios * R_SIZE);
    let d = find(dd_pid, "W").unwrap();
    assert_eq!(d["comm"], "dd");
    assert_count(d["io"].as_u64().unwrap(), 30, allowed, "dd's writes");
    // Sorted by bytes, largest first.
    for rec in &recs {
        let bytes: Vec<u64> = rec["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["bytes"].as_u64().unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
    }
}

/// Waits until `t` has printed more than `n` reports; returns how many it has.
fn wait_reports(t: &Tracer, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = t.stdout_now().lines().count();
        if have > n {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "no report after {n}: {}",
            t.stdout_now()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn each_interval_counts_only_its_own_io() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let t = Tracer::start(&[
        "biotop",
        "--json",
        "-d",
        &dev.name,
        "-p",
        &own_pid().to_string(),
        "1",
    ]);
    // Two bursts, each followed by two reports: the second of them covers only
    // time after the burst, so the burst is wholly in the reports before it, and
    // those reports (however the burst fell across their intervals) hold exactly
    // its I/O: each report counts only what happened in its own interval.
    let mut seen = wait_reports(&t, 0);
    let mut bursts = Vec::new();
    for n in [40, 25] {
        block_workload(&dev, n, 0);
        let after = wait_reports(&t, seen);
        let quiet = wait_reports(&t, after);
        bursts.push((seen, quiet));
        seen = quiet;
    }
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    let own_io = |rec: &serde_json::Value| -> u64 {
        rec["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["pid"] == own_pid())
            .map(|r| r["io"].as_u64().unwrap())
            .sum()
    };
    let per_report: Vec<u64> = recs.iter().map(own_io).collect();
    let allowed = out.hidden(&[BLOCK]);
    for ((from, quiet), n) in bursts.into_iter().zip([40, 25]) {
        let burst = per_report[from..quiet - 1].iter().sum::<u64>();
        assert_count(
            burst,
            n,
            allowed,
            &format!("I/Os of a burst, per report {per_report:?}"),
        );
        assert_eq!(per_report[quiet - 1], 0, "{per_report:?}");
    }
}

#[test]
fn text_columns() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let t = Tracer::start(&[
        "biotop",
        "-C",
        "-d",
        &dev.name,
        "-p",
        &own_pid().to_string(),
    ]);
    block_workload(&dev, 10, 0);
    let out = t.stop();
    out.assert_success();
    assert!(
        out.stdout
            .contains("PID     COMM             D MAJ MIN DISK       I/O  Kbytes  AVGms"),
        "{}",
        out.stdout
    );
    // Text rows: PID COMM D MAJ MIN DISK I/O Kbytes AVGms, summed over reports.
    let ios: u64 = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&own_pid().to_string()))
        .map(|l| l.split_whitespace().nth(6).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_count(ios, 10, out.hidden(&[BLOCK]), "I/Os");
}
