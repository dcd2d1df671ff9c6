//! bitesize against the real kernel: I/O sizes of the test's own workload.

use tracer_tests::{
    Tracer,
    block::{LoopDevice, block_workload},
    require_tracing, thread_comm,
};

const N: u64 = 200;
const M: u64 = 50;

#[test]
fn sizes_land_in_their_buckets() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let comm = thread_comm();
    let t = Tracer::start(&["bitesize", "-d", &dev.name, "-c", &comm, "--json"]);
    block_workload(&dev, N, M);
    // Another process (dd) is filtered out by -c.
    tracer_tests::sh(&format!(
        "dd if=/dev/zero of={} bs=8192 count=10 oflag=direct status=none",
        dev.path
    ));
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    assert_eq!(recs.len(), 1, "{}", out.stdout);
    let r = &recs[0];
    assert_eq!(r["comm"], comm.as_str());
    assert_eq!(r["unit"], "kbytes");
    let bucket = |low: u64| {
        r["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["low"] == low)
            .map(|b| (b["high"].clone(), b["count"].clone()))
    };
    assert_eq!(bucket(4), Some((7.into(), N.into())), "{r}");
    assert_eq!(bucket(64), Some((127.into(), M.into())), "{r}");
    assert_eq!(r["count"], N + M);
}

#[test]
fn text_output_groups_by_process_name() {
    require_tracing!();
    let dev = LoopDevice::new(16);
    let t = Tracer::start(&["bitesize", "-d", &dev.name]);
    tracer_tests::sh(&format!(
        "dd if=/dev/zero of={} bs=16384 count=7 oflag=direct status=none",
        dev.path
    ));
    let out = t.stop();
    out.assert_success();
    assert!(out.stdout.contains("Process Name = dd"), "{}", out.stdout);
    assert!(
        out.stdout.contains("        16 -> 31         : 7 "),
        "{}",
        out.stdout
    );
}
