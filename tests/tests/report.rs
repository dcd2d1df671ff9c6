//! tracer report on captures the test writes itself, as `tracer record`
//! writes them (no kernel needed): what it reports of every event, that it
//! reads a large capture in memory that does not grow with it, and that it
//! refuses at once what is not a capture.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tracer_tests::{
    ScratchDir,
    measure::{baseline_kib, run_tracer_measured},
    run_command, tracer_bin,
};

/// The window: 10 s of CLOCK_MONOTONIC from T0, the trigger in its middle.
const T0: u64 = 1_000_000_000_000;
const SPAN: u64 = 10_000_000_000;
/// Events, one every 250 us.
const N: u64 = 40_000;
const GAP: u64 = SPAN / N;
/// The event that fired the trigger: a 300 ms read on loop0.
const SLOW: u64 = N / 2;
const TRIGGER: u64 = T0 + SLOW * GAP;
/// Histogram records, one per 100 ms, of 7 I/Os each.
const HISTS: u64 = 100;

/// Event i: block I/Os on loop0 and loop1 (50 us, so that no two on a disk
/// overlap but the slow one), a fault (20 us) and a retransmit in turn.
fn event(i: u64) -> String {
    let ts = T0 + i * GAP;
    let at = format!(
        r#""record":"event","ts_ns":{ts},"time_s":{:.6},"time":"12:00:00.000000""#,
        ts as f64 / 1e9
    );
    match i % 4 {
        0 | 1 => {
            let dur = if i == SLOW { 300_000_000 } else { 50_000 };
            format!(
                r#"{{{at},"source":"block","tool":"biosnoop","comm":"fio","pid":4242,"disk":"loop{}","t":"R","rwbs":"R","sector":{},"bytes":4096,"lat_ms":{},"lat_ns":{dur},"dur_ns":{dur}}}"#,
                i % 4,
                i * 8,
                dur as f64 / 1e6
            )
        }
        2 => format!(
            r#"{{{at},"source":"fault","tool":"faultsnoop","comm":"toucher","pid":4243,"tid":4243,"addr":"0x7f0000001000","ip":"0x401000","type":"user-write-minor","lat_us":20.0,"lat_ns":20000,"dur_ns":20000,"mapping":"[heap]","ip_mapping":"?","ip_offset":0}}"#
        ),
        _ => format!(
            r#"{{{at},"source":"tcp","tool":"tcpretrans","type":"RTO","laddr":"127.0.0.1","lport":40000,"raddr":"127.0.0.1","rport":9999,"state":"ESTABLISHED","dur_ns":0}}"#
        ),
    }
}

/// A capture header with `triggers` triggers (the first: the slow read).
fn header(triggers: usize) -> String {
    let slow: Value = serde_json::from_str(&event(SLOW)).unwrap();
    let fired: Vec<Value> = (0..triggers)
        .map(|_| json!({"trigger": "block.lat>100ms", "at_ns": TRIGGER, "time": "12:00:05.000000", "event": slow}))
        .collect();
    json!({
        "record": "capture", "version": 1, "host": "testhost", "kernel": "6.18.0",
        "triggers": fired,
        "window": {"start_ns": T0, "end_ns": T0 + SPAN, "start": "12:00:00.000000",
                   "end": "12:00:10.000000", "before_s": 5.0, "after_s": 5.0, "closed_early": false},
        "clock": {"unix_ns_at_mono_zero": 1_700_000_000_000_000_000u64},
        "sources": ["biosnoop", "faultsnoop", "tcpretrans", "biolatency"],
        "hooks": {}, "events": N,
        "dropped_for_memory": {"events": 0, "hist_slices": 0},
        "lost": {}, "missed": {}, "lost_spans": [], "suppressed_triggers": 0,
    })
    .to_string()
}

/// Writes the capture; returns its size in bytes.
fn write_capture(path: &Path) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{}", header(1)).unwrap();
    for i in 0..N {
        writeln!(f, "{}", event(i)).unwrap();
    }
    for h in 0..HISTS {
        let (start, end) = (T0 + h * 100_000_000, T0 + (h + 1) * 100_000_000);
        writeln!(
            f,
            r#"{{"record":"hist","tool":"biolatency","disk":"loop0","unit":"usecs","ts":1.0,"start_ns":{start},"end_ns":{end},"count":7,"buckets":[{{"low":32,"high":63,"count":7}}]}}"#
        )
        .unwrap();
    }
    drop(f);
    std::fs::metadata(path).unwrap().len()
}

/// Events within 100 ms of the trigger: 400 either side and the slow one.
const AROUND: usize = 801;

/// Trace packets in the Perfetto trace (each a length-delimited Trace.packet).
fn packets(trace: &[u8]) -> u64 {
    let (mut i, mut n) = (0, 0);
    while i < trace.len() {
        assert_eq!(trace[i], 0x0a, "a packet at byte {i}");
        let (mut len, mut shift) = (0usize, 0);
        loop {
            i += 1;
            len |= ((trace[i] & 0x7f) as usize) << shift;
            shift += 7;
            if trace[i] & 0x80 == 0 {
                break;
            }
        }
        i += 1 + len;
        n += 1;
    }
    assert_eq!(i, trace.len());
    n
}

#[test]
fn a_large_capture_is_read_in_memory_that_does_not_grow_with_it() {
    let dir = ScratchDir::new("report-large");
    let capture = dir.path.join("capture.ndjson");
    let size = write_capture(&capture);
    let file = capture.to_str().unwrap();
    // Before: about 12 times the file (a 500 MB capture peaked at 5.9 GB,
    // 10.8 GB with --json). Now: the binary and a few buffers, and for
    // Perfetto 16 bytes an event.
    // Over what reading its first lines costs (the binary, its buffers).
    let bound_kib = baseline_kib(&["report", "{}"], &capture, 1000) + size / 2 / 1024;
    // Generous: a kernel under qemu's emulation runs it 50 times slower.
    let limit = Duration::from_secs(180);

    let run = run_tracer_measured(&["report", file], limit);
    run.out.assert_success();
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
    let text = &run.out.stdout;
    assert!(
        text.contains("\n40000 events: block 20000, fault 10000, tcp 10000\n"),
        "{text}"
    );
    assert!(text.contains("\ntrigger block.lat>100ms at 12:00:05.000000\n  block: fio 4242 loop0 R sector 160000 4096 bytes 300.000 ms\n"));
    // loop0: 9999 I/Os of 50 us and the slow one.
    let disk = |k: &str, n: u64, ms: f64| format!("\n  {k:<46} {n:>8} {ms:>12.3}\n");
    assert!(text.contains(&disk("loop0", 10_000, 799.95)), "{text}");
    assert!(text.contains(&disk("loop1", 10_000, 500.0)), "{text}");
    assert!(text.contains("biolatency disk loop0: in the kernel, host-wide, over the window\n"));
    assert!(
        text.contains("        32 -> 63         : 700      |"),
        "{text}"
    );
    let around = text
        .split("events within 100 ms of the first trigger (s from it):\n")
        .nth(1)
        .and_then(|s| s.split("\nno records lost in the window").next())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(around.lines().count(), AROUND);
    assert!(
        around.contains(
            "\n  +0.000000  block fio 4242 loop0 R sector 160000 4096 bytes 300.000 ms\n"
        )
    );

    let run = run_tracer_measured(&["report", file, "--json"], limit);
    run.out.assert_success();
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
    let report: Value = serde_json::from_str(&run.out.stdout).unwrap();
    assert_eq!(
        report["counts"],
        json!({"block": 20_000, "fault": 10_000, "tcp": 10_000})
    );
    assert_eq!(report["around_trigger"].as_array().unwrap().len(), AROUND);
    assert_eq!(report["hists"], HISTS);
    assert_eq!(
        report["header"]["triggers"][0]["trigger"],
        "block.lat>100ms"
    );

    let trace = dir.path.join("trace.pftrace");
    let run = run_tracer_measured(
        &["report", file, "--perfetto", trace.to_str().unwrap()],
        limit,
    );
    run.out.assert_success();
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
    let bytes = std::fs::read(&trace).unwrap();
    assert_eq!(
        run.out.stderr,
        format!(
            "report: wrote {} ({} bytes)\n",
            trace.display(),
            bytes.len()
        )
    );
    // Tracks: the triggers', loop0 (and its second lane, for the I/Os during
    // the slow one), loop1, the toucher's faults, the flow. Then the trigger,
    // a begin and an end per I/O and fault, an instant per retransmit.
    assert_eq!(packets(&bytes), 6 + 1 + 2 * (N / 2 + N / 4) + N / 4);
}

#[test]
fn an_endless_line_is_refused_at_once() {
    // The binary, and the line read up to the 16 MiB bound (a buffer that
    // doubles as it fills): at most 48 MiB over a small capture's run.
    let dir = ScratchDir::new("report-long-line");
    let path = dir.path.join("capture.ndjson");
    std::fs::write(&path, format!("{}\n{}\n", header(1), event(0))).unwrap();
    let bound_kib = baseline_kib(&["report", "{}"], &path, 2) + (48 << 10);
    // Generous: a kernel under qemu's emulation runs it 50 times slower.
    let limit = Duration::from_secs(60);

    // Before: read /dev/zero into memory until the machine ran out.
    let run = run_tracer_measured(&["report", "/dev/zero"], limit);
    assert_eq!(run.out.status.code(), Some(1));
    assert_eq!(
        run.out.stderr,
        "report: /dev/zero line 1: longer than 16 MiB (not a record of tracer)\n"
    );
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);

    // A capture that goes on with a line of 17 MiB.
    let mut text = format!("{}\n{}\n{}\n", header(1), event(0), event(1));
    text.push_str(&"x".repeat(17 << 20));
    std::fs::write(&path, text).unwrap();
    let run = run_tracer_measured(&["report", path.to_str().unwrap()], limit);
    assert_eq!(run.out.status.code(), Some(1));
    assert_eq!(
        run.out.stderr,
        format!(
            "report: {} line 4: longer than 16 MiB (not a record of tracer)\n",
            path.display()
        )
    );
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
}

#[test]
fn a_header_of_many_triggers_is_a_capture() {
    // Every trigger while a capture is pending is listed with its event:
    // 5000 make a header of 1.7 MB, over 1 MiB and under the 16 MiB bound.
    let dir = ScratchDir::new("report-triggers");
    let path = dir.path.join("capture.ndjson");
    let head = header(5000);
    assert!(head.len() > 1 << 20, "{}", head.len());
    std::fs::write(&path, format!("{head}\n{}\n", event(SLOW))).unwrap();
    let run = run_tracer_measured(&["report", path.to_str().unwrap()], Duration::from_secs(60));
    run.out.assert_success();
    assert_eq!(
        run.out
            .stdout
            .matches("\ntrigger block.lat>100ms at 12:00:05.000000\n")
            .count(),
        5000
    );
    assert!(run.out.stdout.contains("\n1 events: block 1\n"));
}

#[test]
fn a_capture_from_a_pipe_is_refused_with_a_reason() {
    // The events shown are read again from the file: a pipe cannot be.
    let mut child = Command::new(tracer_bin())
        .args(["report", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}\n{}", header(1), event(SLOW)).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "report: /dev/stdin is not a regular file: the report reads it twice (save it to a file first)\n"
    );
    // Not a capture at all: said before anything else.
    run_command(Command::new(tracer_bin()).args(["report", "/dev/null"]))
        .assert_one_line_error("/dev/null is empty");
}
