//! biotop against the real kernel: per-process totals of the test's own I/O.

use tracer_tests::{
    LoopDevice, R_SIZE, Tracer, W_SIZE, block_workload, dd_writer, own_pid, require_tracing,
    thread_comm,
};

const N: u64 = 200;
const M: u64 = 50;

#[test]
fn totals_per_process_and_direction() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let t = Tracer::start(&["biotop", "-d", &dev.name, "--json", "30"]);
    let mut dd = dd_writer(&dev, 30, 4096);
    let dd_pid = dd.id();
    block_workload(&dev, N, M);
    assert!(dd.wait().unwrap().success());
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    assert_eq!(recs.len(), 1, "{}", out.stdout);
    let rows = recs[0]["rows"].as_array().unwrap();
    let find = |pid: u32, d: &str| {
        rows.iter()
            .find(|r| r["pid"] == pid && r["d"] == d)
            .cloned()
    };
    let w = find(own_pid(), "W").unwrap_or_else(|| panic!("no write row: {}", out.stdout));
    assert_eq!(w["io"], N);
    assert_eq!(w["bytes"], N * W_SIZE);
    assert_eq!(w["comm"], thread_comm().as_str());
    assert_eq!(w["disk"], dev.name.as_str());
    assert_eq!(w["major"], 7);
    let r = find(own_pid(), "R").unwrap();
    assert_eq!(r["io"], M);
    assert_eq!(r["bytes"], M * R_SIZE);
    let d = find(dd_pid, "W").unwrap();
    assert_eq!(
        (d["io"].as_u64(), d["comm"].as_str()),
        (Some(30), Some("dd"))
    );
    // Sorted by bytes, largest first.
    let bytes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
}

#[test]
fn each_interval_counts_only_its_own_io() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let t = Tracer::start(&[
        "biotop",
        "-C",
        "-d",
        &dev.name,
        "-p",
        &own_pid().to_string(),
        "1",
    ]);
    block_workload(&dev, 40, 0);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    block_workload(&dev, 25, 0);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = t.stop();
    out.assert_success();
    // Text rows: PID COMM D MAJ MIN DISK I/O Kbytes AVGms
    let ios: Vec<u64> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&own_pid().to_string()))
        .map(|l| l.split_whitespace().nth(6).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ios, [40, 25], "{}", out.stdout);
    assert!(
        out.stdout
            .contains("PID     COMM             D MAJ MIN DISK       I/O  Kbytes  AVGms"),
        "{}",
        out.stdout
    );
}
