//! tracer record and tracer report against the real kernel: outliers made by
//! the test (a FUSE server that answers one read late, a VMM that sleeps in one
//! exit, nftables dropping a flow until it retransmits), captured with what
//! happened around them.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    ScratchDir, Tracer,
    block::{LoopDevice, R_BASE, R_SIZE, W_SIZE, block_workload},
    fault::Toucher,
    fuse::{SlowDisk, SlowFile},
    hidden::{BLOCK, NET_RX, TIMER, assert_count},
    kvm::{GuestProgram, hold_vm, run_guest_with},
    mono_ns,
    net::{Netns, ping_pong, tcp_info, wait_acked},
    own_pid, require_kvm, require_tracing, run_command, run_tracer, sh, wait_for,
};

/// The capture files in `dir`, parsed: (path, header, the other records).
fn captures(dir: &Path) -> Vec<(PathBuf, Value, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.display().to_string();
            let mut recs = text.lines().map(|l| {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}"))
            });
            let header = recs.next().expect("a header line");
            assert_eq!(header["record"], "capture", "{header}");
            (p, header, recs.collect())
        })
        .collect()
}

fn events<'a>(recs: &'a [Value], source: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["record"] == "event" && r["source"] == source)
        .collect()
}

fn trigger<'a>(header: &'a Value, name: &str) -> Option<&'a Value> {
    header["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trigger"] == name)
}

fn window(header: &Value) -> (u64, u64) {
    (
        header["window"]["start_ns"].as_u64().unwrap(),
        header["window"]["end_ns"].as_u64().unwrap(),
    )
}

fn send(t: &Tracer, signal: i32) {
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(t.pid() as i32, signal) };
}

fn report(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["report", file.to_str().unwrap()];
    args.extend(extra);
    let out = run_tracer(&args);
    out.assert_success();
    out.stdout
}

/// The Perfetto trace `tracer report --perfetto` writes, parsed with the protos
/// of pip's `perfetto` package: every track event as
/// {ts, type, track, name, args}.
fn perfetto_events(capture: &Path, dir: &Path) -> Vec<Value> {
    let trace = dir.join("trace.pftrace");
    report(capture, &["--perfetto", trace.to_str().unwrap()]);
    const READER: &str = r#"
import json, sys
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
t = pb.Trace()
t.ParseFromString(open(sys.argv[1], "rb").read())
names, out = {}, []
for p in t.packet:
    if p.HasField("track_descriptor"):
        names[p.track_descriptor.uuid] = p.track_descriptor.name
for p in t.packet:
    if p.HasField("track_event"):
        e = p.track_event
        args = {}
        for a in e.debug_annotations:
            for f in ("uint_value", "int_value", "double_value", "string_value"):
                if a.HasField(f):
                    args[a.name] = getattr(a, f)
        out.append({"ts": p.timestamp, "type": pb.TrackEvent.Type.Name(e.type),
                    "track": names.get(e.track_uuid, "?"), "name": e.name, "args": args})
print(json.dumps(out))
"#;
    let out = run_command(
        Command::new(std::env::var("TRACER_PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-c", READER])
            .arg(&trace),
    );
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap()
}

/// One of the test's own I/Os, timed by the test: its block I/O was issued and
/// completed between `start_ns` and `end_ns` (CLOCK_MONOTONIC, the kernel's).
struct Io {
    sector: u64,
    op: &'static str,
    start_ns: u64,
    end_ns: u64,
}

fn timed_io(ios: &mut Vec<Io>, sector: u64, op: &'static str, f: impl FnOnce()) {
    let start_ns = mono_ns();
    f();
    ios.push(Io {
        sector,
        op,
        start_ns,
        end_ns: mono_ns(),
    });
}

#[test]
fn slow_io_captures_the_io_around_it() {
    require_tracing!();
    // The FUSE server answers one 64 KiB read 300 ms late: the trigger's 100 ms
    // catches it (and any other of the test's I/Os a loaded machine slows).
    let disk = SlowDisk::new(64);
    let slow_offset = R_BASE + 10 * R_SIZE;
    disk.slow_down(slow_offset + 4096, Duration::from_millis(300));
    let dir = ScratchDir::new("record-block");
    let t = Tracer::start(&[
        "record",
        "--sources",
        "block",
        "-d",
        &disk.dev.name,
        "--trigger",
        "block.lat>100ms",
        "--before",
        "2s",
        "--after",
        "1s",
        "--max-captures",
        "1",
        "-o",
        dir.arg(),
    ]);
    let mut io = disk.dev.open_direct();
    let mut ios = Vec::new();
    for i in 0..20 {
        timed_io(&mut ios, i * W_SIZE / 512, "W", || {
            io.write(i * W_SIZE, W_SIZE as usize)
        });
    }
    timed_io(&mut ios, slow_offset / 512, "R", || {
        io.read(slow_offset, R_SIZE as usize)
    });
    for i in 100..120 {
        timed_io(&mut ios, i * W_SIZE / 512, "W", || {
            io.write(i * W_SIZE, W_SIZE as usize)
        });
    }
    // The kernel may hide a completion from BPF (see `hidden`): if it hid the
    // slow one, nothing triggers; SIGUSR2 then makes the capture instead.
    wait_for("the trigger, or a hidden completion", || {
        t.stderr_now().contains("triggered by block.lat>100ms") || t.hidden_now(&[BLOCK]) > 0
    });
    let sent_usr2 = !t.stderr_now().contains("triggered by");
    if sent_usr2 {
        send(&t, libc::SIGUSR2);
    }
    // --max-captures 1: it stops by itself once the capture is written.
    let out = t.wait();
    out.assert_success();
    let allowed = out.hidden(&[BLOCK]);
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (path, header, recs) = &files[0];
    assert!(out.stderr.contains("1 captures written"), "{}", out.stderr);
    // A loaded (emulated) machine can make another of the test's I/Os slower
    // than 100 ms as well: it triggers too, rightly. Every trigger is one of the
    // test's I/Os, its latency within its syscall's own time; the made one is
    // exact wherever it is in the capture.
    let fired_all: Vec<&Value> = header["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["trigger"] == "block.lat>100ms")
        .collect();
    let Some(&first) = fired_all.first() else {
        assert!(allowed > 0, "no block trigger: {header}");
        return;
    };
    for f in &fired_all {
        let e = &f["event"];
        let lat = e["lat_ns"].as_u64().unwrap();
        let io = ios
            .iter()
            .find(|io| e["sector"] == io.sector && e["t"] == io.op)
            .unwrap_or_else(|| panic!("not the test's: {e}"));
        assert!(lat > 100_000_000 && lat <= io.end_ns - io.start_ns, "{e}");
        assert_eq!(e["pid"], own_pid(), "{e}");
        assert_eq!(e["disk"], disk.dev.name.as_str(), "{e}");
        if e["sector"] == slow_offset / 512 && e["t"] == "R" {
            assert_eq!(e["bytes"], R_SIZE, "{e}");
            assert!(lat >= 300_000_000, "{e}");
        }
    }
    let fired = first;
    assert_eq!(header["kernel"], tracer_tests::sh("uname -r").trim());
    assert!(
        header["hooks"]["biosnoop"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{header}"
    );
    let (start, end) = window(header);
    // Each trigger extends the window: its before from the earliest, its after
    // from the latest. That includes the SIGUSR2 sent when a hidden completion
    // was seen before the trigger fired (both then make the one capture).
    let ats: Vec<u64> = header["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["at_ns"].as_u64().unwrap())
        .collect();
    assert_eq!(start, ats.iter().min().unwrap() - 2_000_000_000);
    assert_eq!(end, ats.iter().max().unwrap() + 1_000_000_000);

    // Every event is one of the test's I/Os, in time order, and every I/O the
    // test made inside the window is there: an I/O's own completion lies
    // between its syscall's start and end.
    let got = events(recs, "block");
    let ts: Vec<u64> = got.iter().map(|e| e["ts_ns"].as_u64().unwrap()).collect();
    assert!(ts.is_sorted(), "{ts:?}");
    for e in &got {
        assert_eq!(e["disk"], disk.dev.name.as_str(), "{e}");
        assert!(
            ios.iter()
                .any(|io| e["sector"] == io.sector && e["t"] == io.op),
            "not the test's: {e}"
        );
    }
    let (mut inside, mut found_inside) = (0, 0);
    let mut last_ts = 0;
    for io in &ios {
        let found = got
            .iter()
            .find(|e| e["sector"] == io.sector && e["t"] == io.op);
        if io.start_ns >= start && io.end_ns <= end {
            inside += 1;
            if let Some(e) = found {
                found_inside += 1;
                let ts = e["ts_ns"].as_u64().unwrap();
                assert!(ts > last_ts, "out of order: {e}");
                assert!(io.start_ns <= ts && ts <= io.end_ns, "{e}");
                last_ts = ts;
            }
        } else if io.end_ns < start || io.start_ns > end {
            assert!(found.is_none(), "outside the window: {found:?}");
        }
    }
    assert_count(
        found_inside,
        inside,
        allowed,
        "the test's I/Os inside the window",
    );
    assert!(
        recs.iter()
            .any(|r| r["record"] == "hist" && r["tool"] == "biolatency"),
        "the window's histograms"
    );

    // The report leads with the trigger and its event.
    let text = report(path, &[]);
    let trig = text
        .find("trigger block.lat>100ms")
        .unwrap_or_else(|| panic!("{text}"));
    let line = text[trig..].lines().nth(1).unwrap();
    assert!(
        line.contains(&format!("sector {}", first["event"]["sector"]))
            && line.contains(&disk.dev.name),
        "{text}"
    );
    assert!(text.contains("top disks"), "{text}");
    let json = report(path, &["--json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    // Unless a SIGUSR2 raced it (then either may come first).
    let first_trigger = if sent_usr2 {
        json["header"]["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t.get("signal").is_none())
            .cloned()
            .unwrap_or_default()
    } else {
        json["header"]["triggers"][0].clone()
    };
    assert_eq!(first_trigger["trigger"], "block.lat>100ms", "{json}");

    // The Perfetto trace: the trigger as an instant, each I/O a slice on its
    // disk's track with its duration.
    let pf = perfetto_events(path, &dir.path);
    let at = fired["at_ns"].as_u64().unwrap();
    assert!(
        pf.iter().any(|p| p["type"] == "TYPE_INSTANT"
            && p["name"] == "block.lat>100ms"
            && p["ts"] == at),
        "{pf:?}"
    );
    let track = format!("disk {}", disk.dev.name);
    let begins: Vec<&Value> = pf
        .iter()
        .filter(|p| {
            p["type"] == "TYPE_SLICE_BEGIN" && p["track"].as_str().unwrap().starts_with(&track)
        })
        .collect();
    assert_eq!(begins.len(), got.len(), "{pf:?}");
    let slow = begins
        .iter()
        .find(|p| p["args"]["sector"] == slow_offset / 512)
        .unwrap_or_else(|| panic!("{pf:?}"));
    let slow_end = pf
        .iter()
        .find(|p| {
            p["type"] == "TYPE_SLICE_END"
                && p["track"] == slow["track"]
                && p["ts"].as_u64() == Some(at)
        })
        .unwrap_or_else(|| panic!("no end of the slow slice at {at}: {pf:?}"));
    assert!(
        slow_end["ts"].as_u64().unwrap() - slow["ts"].as_u64().unwrap() >= 300_000_000,
        "{slow} {slow_end}"
    );
}

#[test]
fn slow_fault_captures_its_address_and_mapping() {
    require_tracing!();
    // A mapped file on the FUSE filesystem: page 5's read is answered 200 ms late.
    const PAGES: u64 = 8;
    let file = SlowFile::new(PAGES);
    file.slow_down_page(5, Duration::from_millis(200));
    let mut toucher = Toucher::spawn(&["file", file.path.to_str().unwrap(), &PAGES.to_string()]);
    let dir = ScratchDir::new("record-fault");
    let t = Tracer::start(&[
        "record",
        "--sources",
        "faults",
        "-p",
        &toucher.pid().to_string(),
        "--trigger",
        "fault.lat>100ms",
        "--before",
        "2s",
        "--after",
        "1s",
        "--max-captures",
        "1",
        "-o",
        dir.arg(),
    ]);
    let (map_start, _) = toucher.go();
    // Faults are taken in the process's own context: none can be hidden.
    let out = t.wait();
    out.assert_success();
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (path, header, recs) = &files[0];
    let fired = trigger(header, "fault.lat>100ms").unwrap_or_else(|| panic!("{header}"));
    let e = &fired["event"];
    assert_eq!(e["addr"], format!("{:#x}", map_start + 5 * 4096), "{e}");
    assert_eq!(e["mapping"], file.path.to_str().unwrap(), "{e}");
    assert_eq!(e["type"], "read/user/major", "{e}");
    assert_eq!(e["pid"], toucher.pid(), "{e}");
    assert_eq!(e["comm"], "page-toucher", "{e}");
    assert!(e["lat_ns"].as_u64().unwrap() >= 200_000_000, "{e}");
    // Every major fault is kept, whatever its latency: exactly the ones the
    // kernel counted for the process.
    let faults = events(recs, "fault");
    let majors = faults
        .iter()
        .filter(|e| e["type"].as_str().unwrap().ends_with("/major"))
        .count() as u64;
    let summary: Vec<String> = faults
        .iter()
        .map(|e| format!("{} {} {} {}", e["ts_ns"], e["addr"], e["type"], e["lat_ns"]))
        .collect();
    assert_eq!(
        majors,
        toucher.faults().1,
        "window {:?}, lost {}: {summary:#?}",
        window(header),
        header["lost"]
    );
    // The report names the faulting instruction's function.
    let text = report(path, &[]);
    let line = text[text.find("trigger fault.lat>100ms").unwrap()..]
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        line.contains("page_toucher::read_page+0x") && line.contains("(page-toucher)"),
        "{text}"
    );
    let pf = perfetto_events(path, &dir.path);
    let track = format!("faults page-toucher ({})", toucher.pid());
    assert_eq!(
        pf.iter()
            .filter(|p| p["type"] == "TYPE_SLICE_BEGIN"
                && p["track"].as_str().unwrap().starts_with(&track)
                && p["name"].as_str().unwrap().ends_with("/major"))
            .count() as u64,
        majors,
        "{pf:?}"
    );
}

#[test]
fn retransmit_captures_the_flow() {
    require_tracing!();
    let ns = Netns::new();
    let (mut client, mut server, port) = ns.connect("127.0.0.1");
    let lport = client.local_addr().unwrap().port();
    ping_pong(&mut client, &mut server, 5, 100);
    wait_acked(&client, &server);
    let dir = ScratchDir::new("record-tcp");
    // Another flow of the host may retransmit meanwhile: no holdoff, so that
    // its capture cannot hold this flow's back.
    let t = Tracer::start(&[
        "record",
        "--sources",
        "tcp",
        "--trigger",
        "tcp.retrans",
        "--before",
        "5s",
        "--after",
        "1s",
        "--holdoff",
        "0s",
        "-o",
        dir.arg(),
    ]);
    ns.drop_rule(&format!("tcp dport {port} drop"));
    std::io::Write::write_all(&mut client, &[1u8; 100]).unwrap();
    wait_for("an RTO", || tcp_info(&client).tcpi_retransmits >= 1);
    ns.flush_rules();
    let mut buf = [0u8; 100];
    std::io::Read::read_exact(&mut server, &mut buf).unwrap();
    wait_acked(&client, &server);
    let inode = ns.inode();
    let ours = |e: &Value| e["netns"] == inode && e["lport"] == lport && e["rport"] == port;
    // The probe and the RTO retransmits fire in timer softirqs, of which the
    // kernel may hide some (see `hidden`); all of them, hardly.
    wait_for("a capture of this flow's retransmit", || {
        captures(&dir.path).iter().any(|(_, h, _)| {
            h["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["trigger"] == "tcp.retrans" && ours(&t["event"]))
        })
    });
    let out = t.stop();
    out.assert_success();
    let files = captures(&dir.path);
    let (_, header, recs) = files
        .iter()
        .find(|(_, h, _)| {
            h["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| ours(&t["event"]))
        })
        .unwrap();
    let fired = header["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| ours(&t["event"]))
        .unwrap();
    let e = &fired["event"];
    assert_eq!(e["laddr"], "127.0.0.1", "{e}");
    assert_eq!(e["raddr"], "127.0.0.1", "{e}");
    assert_eq!(e["state"], "ESTABLISHED", "{e}");
    assert!(["L", "R"].contains(&e["type"].as_str().unwrap()), "{e}");
    let flow: Vec<&Value> = events(recs, "tcp")
        .into_iter()
        .filter(|e| e["tool"] == "tcpretrans" && ours(e))
        .collect();
    assert!(flow.iter().any(|f| f["ts_ns"] == e["ts_ns"]), "{recs:?}");
    let allowed = out.hidden(&[TIMER, NET_RX]);
    assert_count(flow.len() as u64, flow.len() as u64, allowed, "retransmits");
}

/// Guests run in this process; the recorder follows it by pid.
static KVM_SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn slow_vm_exit_triggers_on_that_exit() {
    require_tracing!();
    require_kvm!();
    let _serial = KVM_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _vm = hold_vm().expect("creating a VM");
    let dir = ScratchDir::new("record-kvm");
    // Windows longer than the test: the capture holds the whole run, and is
    // closed by Ctrl-C once the guest is done.
    let pid = own_pid().to_string();
    let t = Tracer::start(&[
        "record",
        "--sources",
        "kvm",
        "-p",
        &pid,
        "--trigger",
        "kvm.lat>50ms",
        "--before",
        "10m",
        "--after",
        "10m",
        "-o",
        dir.arg(),
    ]);
    // The VMM (this test) sleeps 100 ms while handling the guest's 50th I/O exit.
    let program = GuestProgram {
        outs: 100,
        ..GuestProgram::default()
    };
    let run = run_guest_with(&program, 1, |n| {
        if n == 50 {
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .expect("guest run");
    assert_eq!(run.io_exits, 100);
    let out = t.stop();
    out.assert_success();
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (path, header, recs) = &files[0];
    assert_eq!(header["window"]["closed_early"], true);
    // Every exit to the VMM is an event; the I/O exits are timed from the exit
    // to the VMM's next KVM_RUN (the generic backend names them by the exit to
    // the VMM, kvm:kvm_exit by the hardware reason: SVM "io", VMX
    // "IO_INSTRUCTION"; the guest's port I/O all goes to the VMM).
    let is_io = |reason: &Value| {
        ["to VMM: IO", "io", "IO_INSTRUCTION"]
            .map(Value::from)
            .contains(reason)
    };
    let io: Vec<&Value> = events(recs, "kvm")
        .into_iter()
        .filter(|e| is_io(&e["reason"]) && e["tid"] == run.vcpu_tid)
        .collect();
    assert_eq!(io.len(), 100, "{recs:?}");
    let fiftieth = io[49];
    assert!(
        fiftieth["lat_ns"].as_u64().unwrap() >= 100_000_000,
        "{fiftieth}"
    );
    assert_eq!(fiftieth["vcpu"], "0", "{fiftieth}");
    assert_eq!(fiftieth["pid"], own_pid(), "{fiftieth}");
    let fired: Vec<&Value> = header["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["trigger"] == "kvm.lat>50ms")
        .collect();
    assert!(
        fired
            .iter()
            .any(|t| t["event"]["ts_ns"] == fiftieth["ts_ns"]),
        "the 50th exit fired no trigger: {header}"
    );
    let text = report(path, &[]);
    assert!(text.contains("trigger kvm.lat>50ms"), "{text}");
    assert!(text.contains("top vCPUs"), "{text}");
    let pf = perfetto_events(path, &dir.path);
    assert_eq!(
        pf.iter()
            .filter(|p| p["type"] == "TYPE_SLICE_BEGIN"
                && is_io(&p["name"])
                && p["args"]["tid"] == run.vcpu_tid)
            .count(),
        100
    );
}

#[test]
fn sigusr2_and_a_trigger_inside_its_window_make_one_capture() {
    require_tracing!();
    let disk = SlowDisk::new(16);
    let slow_offset = R_BASE;
    disk.slow_down(slow_offset, Duration::from_millis(300));
    let dir = ScratchDir::new("record-usr2");
    // Windows longer than the test; Ctrl-C closes the capture.
    let t = Tracer::start(&[
        "record",
        "--sources",
        "block",
        "-d",
        &disk.dev.name,
        "--trigger",
        "block.lat>100ms",
        "--before",
        "10m",
        "--after",
        "10m",
        "-o",
        dir.arg(),
    ]);
    let mut io = disk.dev.open_direct();
    for i in 0..10 {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    send(&t, libc::SIGUSR2);
    wait_for("the SIGUSR2 trigger", || {
        t.stderr_now().contains("triggered by SIGUSR2")
    });
    io.read(slow_offset, R_SIZE as usize);
    let out = t.stop();
    out.assert_success();
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (path, header, recs) = &files[0];
    assert_eq!(header["triggers"][0]["trigger"], "SIGUSR2", "{header}");
    assert_eq!(header["triggers"][0]["signal"], "SIGUSR2", "{header}");
    assert_eq!(header["window"]["closed_early"], true);
    let allowed = out.hidden(&[BLOCK]);
    let writes = events(recs, "block")
        .iter()
        .filter(|e| e["t"] == "W")
        .count() as u64;
    assert_count(writes, 10, allowed, "writes");
    match trigger(header, "block.lat>100ms") {
        Some(b) => {
            assert_eq!(header["triggers"].as_array().unwrap().len(), 2, "{header}");
            assert_eq!(b["event"]["sector"], slow_offset / 512);
            let text = report(path, &[]);
            let usr2 = text
                .find("trigger SIGUSR2")
                .unwrap_or_else(|| panic!("{text}"));
            let slow = text
                .find("trigger block.lat>100ms")
                .unwrap_or_else(|| panic!("{text}"));
            assert!(usr2 < slow, "{text}");
        }
        None => assert!(allowed > 0, "{header}"),
    }
}

#[test]
fn max_mem_drops_the_oldest_records_and_counts_them() {
    require_tracing!();
    let disk = SlowDisk::new(16);
    let dir = ScratchDir::new("record-mem");
    let t = Tracer::start(&[
        "record",
        "--sources",
        "block",
        "-d",
        &disk.dev.name,
        "--max-mem",
        "64K",
        "--before",
        "10m",
        "--after",
        "10m",
        "-o",
        dir.arg(),
    ]);
    const N: u64 = 2000;
    let mut io = disk.dev.open_direct();
    for i in 0..N {
        io.write((i % 1024) * W_SIZE, W_SIZE as usize);
    }
    send(&t, libc::SIGUSR2);
    wait_for("the SIGUSR2 trigger", || {
        t.stderr_now().contains("triggered by SIGUSR2")
    });
    let out = t.stop();
    out.assert_success();
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (_, header, recs) = &files[0];
    let kept = events(recs, "block");
    let dropped = &header["dropped_for_memory"];
    let dropped_events = dropped["events"].as_u64().unwrap();
    let lost = header["lost"]["biosnoop"].as_u64().unwrap();
    assert!(dropped_events > 0, "{header}");
    assert!(!kept.is_empty(), "{header}");
    // Exactly what the test wrote: kept, dropped for memory or lost by the kernel.
    assert_count(
        kept.len() as u64 + dropped_events + lost,
        N,
        out.hidden(&[BLOCK]),
        &format!("{header}"),
    );
    // The oldest went: what is kept is newer than everything dropped, and the
    // newest writes are there.
    let first_kept = kept[0]["ts_ns"].as_u64().unwrap();
    assert!(
        dropped["last_ns"].as_u64().unwrap() < first_kept,
        "{header}"
    );
    assert_eq!(
        kept.last().unwrap()["sector"],
        ((N - 1) % 1024) * W_SIZE / 512
    );
    assert!(
        out.stderr.contains(&format!("{dropped_events} records")),
        "{}",
        out.stderr
    );
}

/// The recorder's last line but the error, for a run that triggered nothing
/// else and dropped nothing.
fn summary(written: u64, failed: u64) -> String {
    format!(
        "record: {written} captures written, {failed} failed; 0 triggers suppressed (holdoff or --max-captures); 0 records and 0 histogram slices dropped for --max-mem"
    )
}

#[test]
fn sighup_writes_the_pending_capture() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    let dir = ScratchDir::new("record-hup");
    let t = Tracer::start(&[
        "record",
        "--sources",
        "block",
        "-d",
        &dev.name,
        "--before",
        "10m",
        "--after",
        "10m",
        "-o",
        dir.arg(),
    ]);
    block_workload(&dev, 10, 0);
    send(&t, libc::SIGUSR2);
    wait_for("the SIGUSR2 trigger", || {
        t.stderr_now().contains("triggered by SIGUSR2")
    });
    let out = t.stop_with(libc::SIGHUP);
    out.assert_success();
    assert_eq!(out.stderr.lines().last(), Some(summary(1, 0).as_str()));
    let files = captures(&dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    let (_, header, recs) = &files[0];
    assert_eq!(header["window"]["closed_early"], true);
    assert_count(
        events(recs, "block").len() as u64,
        10,
        out.hidden(&[BLOCK]),
        "writes",
    );
}

/// A tmpfs of a given size on a scratch directory, unmounted on drop.
struct Tmpfs {
    dir: ScratchDir,
}

impl Tmpfs {
    fn new(what: &str, size: &str) -> Tmpfs {
        let dir = ScratchDir::new(what);
        sh(&format!(
            "mount -t tmpfs -o size={size} tracer-test {}",
            dir.arg()
        ));
        Tmpfs { dir }
    }

    /// Bytes free.
    fn free(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.arg()).unwrap();
        // SAFETY: a NUL-terminated path and an out-parameter of the right type.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir.path).status();
    }
}

/// Names in `dir` (none left behind by a failed capture ends in .tmp).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Starts a recorder of the test's loop device into `dir` that makes each
/// capture as soon as it is triggered.
fn record_now(dev: &LoopDevice, dir: &str) -> Tracer {
    Tracer::start(&[
        "record",
        "--sources",
        "block",
        "-d",
        &dev.name,
        "--before",
        "10m",
        "--after",
        "0s",
        "--holdoff",
        "0s",
        "-o",
        dir,
    ])
}

/// Triggers a capture and waits until the `n`th has failed.
fn fail_capture(t: &Tracer, n: usize) {
    send(t, libc::SIGUSR2);
    wait_for("a capture that cannot be written", || {
        t.stderr_now().matches("record: cannot write ").count() == n
    });
}

/// The recorder said "cannot write DIR/capture-*: <why>" for each of the
/// `failed` captures, and its last lines say how many were written and lost.
#[track_caller]
fn assert_lost(stderr: &str, dir: &str, why: &str, written: u64, failed: u64) {
    let lines: Vec<&str> = stderr.lines().collect();
    let cannot: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("record: cannot write "))
        .collect();
    assert_eq!(cannot.len() as u64, failed, "{stderr}");
    for l in cannot {
        let name = l
            .strip_prefix(&format!("record: cannot write {dir}/capture-"))
            .and_then(|rest| rest.strip_suffix(&format!(".ndjson: {why}")));
        assert!(name.is_some(), "{l}");
    }
    assert_eq!(
        lines[lines.len() - 2..],
        [
            summary(written, failed).as_str(),
            &format!(
                "record: {failed} of {} captures not written",
                written + failed
            )
        ],
        "{stderr}"
    );
}

#[test]
fn a_full_disk_loses_captures_and_says_so() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    let fs = Tmpfs::new("record-full", "1m");
    // 64 KiB left; the capture of 500 writes is about 190 KB.
    let filler = fs.dir.path.join("filler");
    std::fs::write(&filler, vec![0u8; (fs.free() - (64 << 10)) as usize]).unwrap();
    let free = fs.free();
    let t = record_now(&dev, fs.dir.arg());
    let mut io = dev.open_direct();
    for i in 0..500 {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    for n in 1..=2 {
        fail_capture(&t, n);
        // The partial file is gone, and the space it took with it.
        assert_eq!(names(&fs.dir.path), ["filler"]);
        assert_eq!(fs.free(), free);
    }
    std::fs::remove_file(&filler).unwrap();
    send(&t, libc::SIGUSR2);
    wait_for("a capture written", || {
        t.stderr_now().contains("record: wrote ")
    });
    let out = t.stop_with(libc::SIGTERM);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_lost(
        &out.stderr,
        fs.dir.arg(),
        "No space left on device (os error 28)",
        1,
        2,
    );
    let files = captures(&fs.dir.path);
    assert_eq!(files.len(), 1, "{}", out.stderr);
    assert_count(
        events(&files[0].2, "block").len() as u64,
        500,
        out.hidden(&[BLOCK]),
        "writes",
    );
    assert_eq!(names(&fs.dir.path).len(), 1);
}

#[test]
fn a_read_only_capture_dir_loses_the_capture_and_says_so() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    let fs = Tmpfs::new("record-ro", "1m");
    let t = record_now(&dev, fs.dir.arg());
    sh(&format!("mount -o remount,ro {}", fs.dir.arg()));
    fail_capture(&t, 1);
    let out = t.stop_with(libc::SIGTERM);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_lost(
        &out.stderr,
        fs.dir.arg(),
        "Read-only file system (os error 30)",
        0,
        1,
    );
    assert_eq!(names(&fs.dir.path), Vec::<String>::new());
}

#[test]
fn a_deleted_capture_dir_loses_the_capture_and_says_so() {
    require_tracing!();
    let dev = LoopDevice::new(4);
    let scratch = ScratchDir::new("record-gone");
    let dir = scratch.path.join("captures");
    let t = record_now(&dev, dir.to_str().unwrap());
    std::fs::remove_dir(&dir).unwrap();
    fail_capture(&t, 1);
    let out = t.stop_with(libc::SIGTERM);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_lost(
        &out.stderr,
        dir.to_str().unwrap(),
        "No such file or directory (os error 2)",
        0,
        1,
    );
    assert!(!dir.exists());
}

#[test]
fn bad_input_is_one_line() {
    for (args, says) in [
        (
            vec!["record", "--sources", "block,disk"],
            "unknown source 'disk'",
        ),
        (vec!["record", "--before", "soon"], "not a duration"),
        (
            vec!["record", "--trigger", "block.lat>fast"],
            "not a duration",
        ),
        (vec!["record", "--trigger", "block.p99>3"], "followed by x"),
        (
            vec!["record", "--trigger", "dsk.lat>5ms"],
            "unknown source 'dsk'",
        ),
        (vec!["record", "--max-mem", "lots"], "not a size"),
        (vec!["record", "--max-captures", "0"], "max-captures"),
        (
            vec!["record", "--sources", "block", "--trigger", "tcp.retrans"],
            "needs --sources to include tcp",
        ),
        (
            vec!["record", "-o", "/proc/tracer-nope"],
            "cannot create /proc/tracer-nope",
        ),
        (
            vec!["report", "/nonexistent.ndjson"],
            "reading /nonexistent.ndjson",
        ),
        (vec!["report", "/etc/hostname"], "not a capture"),
    ] {
        let out = run_tracer(&args);
        out.assert_one_line_error(says);
    }
    // Usage errors exit 2, as for every tool.
    let out = run_tracer(&["record", "--trigger", "block.lat>fast"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_tracer(&["record", "--sources", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}
