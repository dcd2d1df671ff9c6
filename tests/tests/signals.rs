//! How a tool ends: SIGHUP like SIGTERM (unless started under nohup).

use std::process::{Command, Stdio};

use serde_json::Value;
use tracer_tests::{
    LoopDevice, Tracer, block_workload,
    hidden::{BLOCK, assert_count},
    require_tracing, tracer_bin,
};

fn sum_count(recs: &[Value]) -> u64 {
    recs.iter().map(|r| r["count"].as_u64().unwrap()).sum()
}

#[test]
fn sighup_ends_a_tool_with_its_final_report() {
    require_tracing!();
    let dev = LoopDevice::new(16);
    let t = Tracer::start(&["biolatency", "-d", &dev.name, "--json"]);
    block_workload(&dev, 100, 0);
    let out = t.stop_with(libc::SIGHUP);
    out.assert_success();
    assert_count(
        sum_count(&out.json()),
        100,
        out.hidden(&[BLOCK]),
        "I/Os in the final report",
    );
}

#[test]
fn sighup_stays_ignored_under_nohup() {
    require_tracing!();
    let dev = LoopDevice::new(16);
    let mut cmd = Command::new("nohup");
    cmd.arg(tracer_bin())
        .args(["biolatency", "-d", &dev.name, "--json"])
        .stdout(Stdio::piped());
    let t = Tracer::start_command(cmd);
    // nohup's SIG_IGN is kept: the kernel discards the hangup at once.
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(ignored & (1 << (libc::SIGHUP - 1)), 0, "{status}");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(t.pid() as i32, libc::SIGHUP) };
    block_workload(&dev, 100, 0);
    let out = t.stop();
    out.assert_success();
    assert_count(
        sum_count(&out.json()),
        100,
        out.hidden(&[BLOCK]),
        "I/Os after the hangup",
    );
}
