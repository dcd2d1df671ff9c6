//! How a tool ends: SIGHUP like SIGTERM (unless started under nohup), a stdout
//! nobody reads never makes it deaf, and a reader that goes away ends it
//! cleanly with its counters.

use std::{
    io::{PipeReader, Read as _},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    Tracer,
    block::{LoopDevice, W_SIZE, block_workload},
    hidden::{BLOCK, assert_count},
    require_tracing, tracer_bin, wait_for,
};

/// Time from a signal (or the reader leaving) to the tool's exit: a quarter
/// of a second of grace for stdout plus detaching is needed; this leaves
/// room for slow (emulated) machines. Blocked, the tool never ended.
const PROMPTLY: Duration = Duration::from_secs(5);

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

/// Whether a thread of process `pid` is blocked in write(2) (syscall 1 on
/// x86-64): the tool's stdout is full.
fn blocked_in_write(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("syscall")).is_ok_and(|s| s.starts_with("1 "))
        })
}

/// biosnoop --json with stdout a pipe the test holds and does not read,
/// after `n` writes of the test's own: started, fed, and blocked writing.
fn biosnoop_into_a_full_pipe(dev: &LoopDevice, n: u64) -> (Tracer, PipeReader) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(tracer_bin());
    cmd.args(["biosnoop", "-v", "--json", "-d", &dev.name])
        .stdout(writer);
    let t = Tracer::start_command(cmd);
    let mut io = dev.open_direct();
    for i in 0..n {
        io.write((i % 1024) * W_SIZE, W_SIZE as usize);
    }
    wait_for("the tracer blocked writing stdout", || {
        blocked_in_write(t.pid())
    });
    (t, reader)
}

/// The one stderr line that starts with `prefix` and ends with `suffix`, and
/// the number between them.
#[track_caller]
fn number_in_line(stderr: &str, prefix: &str, suffix: &str) -> u64 {
    let lines: Vec<u64> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    assert_eq!(lines.len(), 1, "one `{prefix}N{suffix}` line in:\n{stderr}");
    lines[0]
}

#[test]
fn a_blocked_stdout_does_not_make_a_tool_deaf() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    // More records than the pipe, the tool's bounded backlog (256 KiB) and its
    // 1 MiB ring buffer hold together (about 15,000 JSON lines): the ring fills
    // and the kernel counts the rest as lost.
    const N: u64 = 20_000;
    let (t, mut reader) = biosnoop_into_a_full_pipe(&dev, N);
    let out = t.stop_within(libc::SIGTERM, PROMPTLY);
    out.assert_success();
    let not_written = number_in_line(
        &out.stderr,
        "biosnoop: WARNING: ",
        " records not written (stdout blocked)",
    );
    let lost = number_in_line(
        &out.stderr,
        "biosnoop: WARNING: ",
        " records lost (ring buffer full)",
    );
    assert!(not_written > 0 && lost > 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("biosnoop: counters: "),
        "{}",
        out.stderr
    );
    // What the pipe holds, what was not written and what the kernel lost are
    // every write of the test, each once.
    let mut piped = String::new();
    reader.read_to_string(&mut piped).unwrap();
    let complete = &piped[..piped.rfind('\n').map_or(0, |i| i + 1)];
    let written = complete
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|r| assert_eq!(r["disk"], dev.name.as_str(), "{r}"))
        .count() as u64;
    assert_count(
        written + not_written + lost,
        N,
        out.hidden(&[BLOCK]),
        &format!("written {written} + not written {not_written} + lost {lost}"),
    );
}

#[test]
fn a_reader_that_goes_away_ends_a_tool_cleanly() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    // Enough to fill the pipe and the backlog behind it.
    let (t, reader) = biosnoop_into_a_full_pipe(&dev, 8_000);
    drop(reader);
    let out = t.wait_within(PROMPTLY);
    out.assert_success();
    let not_written = number_in_line(
        &out.stderr,
        "biosnoop: ",
        " records not written (stdout closed by its reader)",
    );
    assert!(not_written > 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("biosnoop: counters: "),
        "{}",
        out.stderr
    );
}

#[test]
fn printing_commands_end_quietly_on_a_closed_pipe() {
    let dir = tracer_tests::ScratchDir::new("closed-pipe");
    let capture = dir.path.join("capture.ndjson");
    std::fs::write(
        &capture,
        r#"{"record":"capture","version":1,"triggers":[{"trigger":"SIGUSR2","at_ns":1000,"signal":"SIGUSR2"}],"window":{"start_ns":0,"end_ns":2000}}"#,
    )
    .unwrap();
    for args in [
        vec!["list", "--names"],
        vec!["report", capture.to_str().unwrap()],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(tracer_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        // Like the C tools: SIGPIPE ends it, and nothing is said.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGPIPE),
            "{args:?}: {}",
            out.status
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
