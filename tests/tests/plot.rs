//! Pictures: `--heatmap` on a histogram tool and `tracer plot`, checked the way
//! a viewer reads them: well-formed XML (xmllint), rendered by a real SVG
//! renderer (rsvg-convert), and the numbers each cell and point carries.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tracer_tests::{
    ScratchDir, Tracer,
    block::{R_BASE, R_SIZE, W_SIZE},
    fuse::SlowDisk,
    hidden::{BLOCK, assert_count},
    measure::{baseline_kib, run_tracer_measured},
    require_tracing, run_command, run_tracer,
};

/// The attributes of every element of `class` in an SVG.
fn elements(svg: &str, class: &str) -> Vec<HashMap<String, String>> {
    let marker = format!("class=\"{class}\"");
    svg.split('<')
        .filter(|tag| tag.contains(&marker))
        .map(|tag| {
            let tag = tag.split('>').next().unwrap_or("");
            let mut attrs = HashMap::new();
            let mut rest = tag;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].rsplit(' ').next().unwrap_or("").to_string();
                let value_start = eq + 2;
                let Some(len) = rest[value_start..].find('"') else {
                    break;
                };
                attrs.insert(name, rest[value_start..value_start + len].to_string());
                rest = &rest[value_start + len + 1..];
            }
            attrs
        })
        .collect()
}

fn num(attrs: &HashMap<String, String>, name: &str) -> f64 {
    attrs[name]
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {attrs:?}"))
}

/// Well-formed (xmllint) and drawable (rsvg-convert makes a PNG of it).
fn check_renders(svg: &Path) {
    run_command(Command::new("xmllint").arg("--noout").arg(svg)).assert_success();
    let png = svg.with_extension("png");
    run_command(Command::new("rsvg-convert").arg(svg).arg("-o").arg(&png)).assert_success();
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        png.display()
    );
}

fn plot(input: &Path, out: &Path, kind: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "plot",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--kind",
        kind,
    ];
    args.extend(extra);
    run_tracer(&args).assert_success();
    check_renders(out);
    std::fs::read_to_string(out).unwrap()
}

fn write_ndjson(path: &Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// biosnoop-like records: (time_s, op, disk, sector, lat_ns).
fn snoop_fixture() -> Vec<Value> {
    let mut recs = Vec::new();
    for i in 0..20u64 {
        let (t, disk) = if i < 10 { ("W", "vda") } else { ("R", "vdb") };
        recs.push(json!({
            "tool": "biosnoop", "comm": "fio", "pid": 7, "disk": disk, "t": t,
            "sector": i * 8, "bytes": 4096, "lat_ns": 100_000 + i * 1000,
            "time_s": 0.1 * i as f64,
        }));
    }
    // The outlier: 300 ms, a read.
    recs.push(json!({
        "tool": "biosnoop", "comm": "fio", "pid": 7, "disk": "vdb", "t": "R",
        "sector": 4096, "bytes": 65536, "lat_ns": 300_000_000u64, "time_s": 2.5,
    }));
    recs
}

#[test]
fn pictures_from_fixtures_count_every_record() {
    let dir = ScratchDir::new("plot-fixture");
    let input = dir.path.join("snoop.ndjson");
    let recs = snoop_fixture();
    write_ndjson(&input, &recs);

    // Scatter: one point per record, reads and writes apart, the outlier at
    // its latency.
    let svg = plot(&input, &dir.path.join("scatter.svg"), "scatter", &["--log"]);
    let points: Vec<_> = elements(&svg, "point")
        .into_iter()
        .filter(|p| p.contains_key("data-series"))
        .collect();
    assert_eq!(points.len(), recs.len());
    assert_eq!(
        points
            .iter()
            .filter(|p| p["data-series"] == "write")
            .count(),
        10
    );
    assert_eq!(
        points.iter().filter(|p| p["data-series"] == "read").count(),
        11
    );
    assert!(points.iter().any(|p| num(p, "data-value") == 300.0));
    assert!(
        svg.contains("read (11)") && svg.contains("write (10)"),
        "legend"
    );
    assert!(svg.contains("<title>"), "hover text");

    // Latency heatmap from events: counts sum to the records; the outlier in
    // the 262144..524287 us row.
    let svg = plot(
        &input,
        &dir.path.join("lat.svg"),
        "latency-heatmap",
        &["--interval", "1"],
    );
    let cells = elements(&svg, "cell");
    let total: f64 = cells.iter().map(|c| num(c, "data-count")).sum();
    assert_eq!(total as usize, recs.len());
    let slow: Vec<_> = cells.iter().filter(|c| c["data-low"] == "262144").collect();
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0]["data-high"], "524287");
    assert_eq!(num(slow[0], "data-count"), 1.0);
    assert!(
        (num(slow[0], "data-t0") - 2.0).abs() < 1e-9,
        "{:?}",
        slow[0]
    );
    // Ticks at the buckets' lower edges.
    assert!(svg.contains("class=\"ytick\">64<"), "{svg}");
    assert!(svg.contains("class=\"ytick\">262144<"));
    assert!(svg.contains("class=\"p50\"") && svg.contains("class=\"p99\""));

    // Offset heatmap: one panel per disk, every I/O counted.
    let svg = plot(&input, &dir.path.join("offset.svg"), "offset-heatmap", &[]);
    let total: f64 = elements(&svg, "cell")
        .iter()
        .map(|c| num(c, "data-count"))
        .sum();
    assert_eq!(total as usize, recs.len());
    assert_eq!(elements(&svg, "panel").len(), 2);

    // Utilization: two overlapping I/Os over 0.0..0.6 s, one over 1.5..2.0 s.
    let util = dir.path.join("util.ndjson");
    write_ndjson(
        &util,
        &[
            json!({"tool":"biosnoop","disk":"vda","t":"R","sector":0,"bytes":4096,"lat_ns":500_000_000u64,"time_s":0.5}),
            json!({"tool":"biosnoop","disk":"vda","t":"R","sector":8,"bytes":4096,"lat_ns":500_000_000u64,"time_s":0.6}),
            json!({"tool":"biosnoop","disk":"vda","t":"W","sector":16,"bytes":4096,"lat_ns":500_000_000u64,"time_s":2.0}),
        ],
    );
    let svg = plot(
        &util,
        &dir.path.join("util.svg"),
        "utilization",
        &["--interval", "1"],
    );
    let busy: Vec<f64> = elements(&svg, "cell")
        .iter()
        .map(|c| num(c, "data-busy"))
        .collect();
    assert_eq!(busy, vec![0.6, 0.5], "{svg}");

    // Latency heatmap from histogram records (biolatency --json): the kernel's
    // own buckets, one column per record.
    let hists = dir.path.join("hists.ndjson");
    let hist = |ts: f64, counts: [u64; 4]| {
        json!({"tool":"biolatency","ts":ts,"disk":"vda","unit":"usecs","count":counts.iter().sum::<u64>(),
               "buckets":[{"low":0,"high":1,"count":counts[0]},{"low":2,"high":3,"count":counts[1]},
                          {"low":4,"high":7,"count":counts[2]},{"low":8,"high":15,"count":counts[3]}]})
    };
    write_ndjson(
        &hists,
        &[
            hist(100.0, [0, 5, 1, 0]),
            hist(101.0, [0, 0, 7, 2]),
            hist(102.0, [1, 0, 0, 0]),
        ],
    );
    let svg = plot(&hists, &dir.path.join("hists.svg"), "latency-heatmap", &[]);
    let cells = elements(&svg, "cell");
    let total: f64 = cells.iter().map(|c| num(c, "data-count")).sum();
    assert_eq!(total, 16.0);
    let columns: std::collections::BTreeSet<&str> =
        cells.iter().map(|c| c["data-t1"].as_str()).collect();
    assert_eq!(columns.len(), 3);
    assert!(svg.contains("class=\"ytick\">8<"));

    // Nothing to draw: one clear line, no file.
    let empty = dir.path.join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let out = dir.path.join("empty.svg");
    run_tracer(&[
        "plot",
        empty.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--kind",
        "scatter",
    ])
    .assert_one_line_error("no events with a latency");
    assert!(!out.exists());
    let out = run_tracer(&[
        "plot",
        input.to_str().unwrap(),
        "-o",
        "/x.svg",
        "--kind",
        "pie",
    ]);
    assert_eq!(out.status.code(), Some(2));
    run_tracer(&[
        "plot",
        "/nonexistent",
        "-o",
        "/tmp/x.svg",
        "--kind",
        "scatter",
    ])
    .assert_one_line_error("reading /nonexistent");
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn heatmap_puts_the_slow_io_in_its_cell() {
    require_tracing!();
    const N: u64 = 100;
    const M: u64 = 30;
    let disk = SlowDisk::new(64);
    let slow_offset = R_BASE + 10 * R_SIZE;
    disk.slow_down(slow_offset + 4096, Duration::from_millis(300));
    let dir = ScratchDir::new("plot-heatmap");
    let svg_path = dir.path.join("io.svg");
    let bio = Tracer::start(&[
        "biolatency",
        "-m",
        "-d",
        &disk.dev.name,
        "--heatmap",
        svg_path.to_str().unwrap(),
    ]);
    let snoop = Tracer::start(&["biosnoop", "-d", &disk.dev.name, "--json"]);
    let mut io = disk.dev.open_direct();
    for i in 0..N {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    let mut slow_span = (0.0, 0.0);
    for j in 0..M {
        let offset = R_BASE + j * R_SIZE;
        let start = unix_now();
        io.read(offset, R_SIZE as usize);
        if offset == slow_offset {
            slow_span = (start, unix_now());
        }
    }
    let out = bio.stop();
    out.assert_success();
    let snooped = snoop.stop();
    snooped.assert_success();
    let allowed = out.hidden(&[BLOCK]);
    check_renders(&svg_path);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let cells = elements(&svg, "cell");
    let total: f64 = cells.iter().map(|c| num(c, "data-count")).sum();
    assert_count(total as u64, N + M, allowed, "operations in the heatmap");
    // Without an interval the text still reports the whole run at Ctrl-C.
    assert!(
        out.stdout.contains(&format!("{} total)", total as u64)),
        "{}",
        out.stdout
    );
    // The slow read: the 256..511 ms row, in the column of the interval in
    // which it completed (inside its syscall); every other I/O is faster.
    let slow: Vec<_> = cells.iter().filter(|c| c["data-low"] == "256").collect();
    if allowed == 0 || !slow.is_empty() {
        assert_eq!(slow.len(), 1, "{cells:?}");
        assert_eq!(slow[0]["data-high"], "511");
        assert_eq!(num(slow[0], "data-count"), 1.0);
        let (t0, t1) = (num(slow[0], "data-t0"), num(slow[0], "data-t1"));
        assert!(
            t0 <= slow_span.1 && t1 >= slow_span.0,
            "column {t0}..{t1}, the read {slow_span:?}"
        );
    }
    for c in &cells {
        assert!(num(c, "data-low") <= 256.0, "{c:?}");
    }

    // The same run's biosnoop output as a scatter plot: a point per I/O.
    let ndjson = dir.path.join("snoop.ndjson");
    std::fs::write(&ndjson, &snooped.stdout).unwrap();
    let rows = snooped.json();
    let scatter = plot(&ndjson, &dir.path.join("scatter.svg"), "scatter", &[]);
    let points: Vec<_> = elements(&scatter, "point")
        .into_iter()
        .filter(|p| p.contains_key("data-series"))
        .collect();
    assert_eq!(points.len(), rows.len());
    assert_count(
        rows.len() as u64,
        N + M,
        snooped.hidden(&[BLOCK]),
        "biosnoop rows",
    );
    if let Some(r) = rows.iter().find(|r| r["sector"] == slow_offset / 512) {
        let ms = r["lat_ns"].as_u64().unwrap() as f64 / 1e6;
        assert!(ms >= 300.0);
        assert!(
            points
                .iter()
                .any(|p| (num(p, "data-value") - ms).abs() < 1e-6 && p["data-series"] == "read"),
            "no point at {ms} ms"
        );
    }
}

#[test]
fn heatmap_with_an_interval_has_a_column_each() {
    require_tracing!();
    let disk = SlowDisk::new(16);
    let dir = ScratchDir::new("plot-interval");
    let svg_path = dir.path.join("io.svg");
    let t = Tracer::start(&[
        "biolatency",
        "-d",
        &disk.dev.name,
        "--heatmap",
        svg_path.to_str().unwrap(),
        "1",
        "3",
    ]);
    let mut io = disk.dev.open_direct();
    for i in 0..10 {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    let out = t.wait();
    out.assert_success();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains(", 3 columns;"), "{svg}");
    let total: f64 = elements(&svg, "cell")
        .iter()
        .map(|c| num(c, "data-count"))
        .sum();
    assert_count(total as u64, 10, out.hidden(&[BLOCK]), "writes");
    run_tracer(&["kvmexits", "--heatmap", "/tmp/k.svg"]).assert_one_line_error("needs --latency");
    run_tracer(&["biolatency", "--heatmap", "/proc/nope/x.svg"])
        .assert_one_line_error("cannot write /proc/nope/x.svg");
}

/// How far over a run on a small input (the binary and its buffers, which
/// weigh differently on each machine) a bounded run may reach: a line read
/// to the 16 MiB bound in a buffer that doubles as it fills.
const GROWTH_KIB: u64 = 48 << 10;

/// Generous: a kernel under qemu's emulation runs tracer 50 times slower.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_fine_interval_is_raised_to_bound_the_cells() {
    let dir = ScratchDir::new("plot-interval-bound");
    let input = dir.path.join("snoop.ndjson");
    // The fixture, and a write a day later.
    let mut recs = snoop_fixture();
    recs.push(json!({
        "tool": "biosnoop", "comm": "fio", "pid": 7, "disk": "vda", "t": "W",
        "sector": 8192, "bytes": 4096, "lat_ns": 100_000, "time_s": 86_400.0,
    }));
    write_ndjson(&input, &recs);
    let small_out = dir.path.join("small.svg");
    let small = [
        "plot",
        "{}",
        "-o",
        small_out.to_str().unwrap(),
        "--kind",
        "latency-heatmap",
    ];
    let bound_kib = baseline_kib(&small, &input, recs.len() - 1) + GROWTH_KIB;
    // Before: a day in 1 ms columns took 8 GB or aborted allocating 3.5 GB.
    for (kind, width, most) in [
        ("latency-heatmap", "50", 1800),
        // Two disks of up to 49 rows.
        ("offset-heatmap", "100", 1175),
        ("utilization", "50", 1800),
    ] {
        let out = dir.path.join(format!("{kind}.svg"));
        let run = run_tracer_measured(
            &[
                "plot",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--kind",
                kind,
                "--interval",
                "0.001",
            ],
            LIMIT,
        );
        run.out.assert_success();
        assert_eq!(
            run.out.stderr,
            format!(
                "plot: columns of 0.001 s would make 86400001 columns; using {width} s (at most {most} columns, 115200 cells)\n"
            )
        );
        assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
        check_renders(&out);
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains(&format!("columns of {width} s")), "{svg}");
        let cells = elements(&svg, "cell");
        let columns: std::collections::BTreeSet<&str> =
            cells.iter().map(|c| c["data-t0"].as_str()).collect();
        assert!(!columns.is_empty() && columns.len() <= most);
        if kind != "utilization" {
            let total: f64 = cells.iter().map(|c| num(c, "data-count")).sum();
            assert_eq!(total as usize, recs.len(), "{kind}");
        }
    }
}

#[test]
fn an_endless_line_is_refused_at_once() {
    let dir = ScratchDir::new("plot-zero");
    let out = dir.path.join("zero.svg");
    let input = dir.path.join("snoop.ndjson");
    write_ndjson(&input, &snoop_fixture());
    let small_out = dir.path.join("small.svg");
    let small = [
        "plot",
        "{}",
        "-o",
        small_out.to_str().unwrap(),
        "--kind",
        "scatter",
    ];
    let bound_kib = baseline_kib(&small, &input, usize::MAX) + GROWTH_KIB;
    // Before: read /dev/zero into memory until the machine ran out.
    let run = run_tracer_measured(
        &[
            "plot",
            "/dev/zero",
            "-o",
            out.to_str().unwrap(),
            "--kind",
            "scatter",
        ],
        LIMIT,
    );
    assert_eq!(run.out.status.code(), Some(1));
    assert_eq!(
        run.out.stderr,
        "plot: /dev/zero line 1: longer than 16 MiB (not a record of tracer)\n"
    );
    assert!(run.peak_kib < bound_kib, "{} KiB", run.peak_kib);
    assert!(!out.exists());
}

#[test]
fn a_scatter_of_many_points_is_binned() {
    const N: u64 = 100_000;
    let dir = ScratchDir::new("plot-many");
    let input = dir.path.join("snoop.ndjson");
    // biosnoop --json over 100 s: reads and writes of 0.1 to 1.1 ms, and one
    // read of 300 ms.
    let mut text = String::new();
    for i in 0..N {
        let (t, rwbs) = if i % 2 == 0 { ("R", "R") } else { ("W", "WS") };
        let lat = if i == N / 3 {
            300_000_000
        } else {
            100_000 + (i * 7919) % 1_000_000
        };
        text.push_str(&format!(
            r#"{{"tool":"biosnoop","time_s":{:.6},"time":"12:00:00.000000","comm":"fio","pid":4242,"disk":"loop0","t":"{t}","rwbs":"{rwbs}","sector":{},"bytes":4096,"lat_ms":{},"lat_ns":{lat}}}"#,
            i as f64 * 100.0 / N as f64,
            i * 8,
            lat as f64 / 1e6
        ));
        text.push('\n');
    }
    std::fs::write(&input, &text).unwrap();
    let size_kib = text.len() as u64 >> 10;
    drop(text);
    let out = dir.path.join("scatter.svg");
    let args = [
        "plot",
        "{}",
        "-o",
        out.to_str().unwrap(),
        "--kind",
        "scatter",
    ];
    let baseline_kib = baseline_kib(&args, &input, 1000);
    let run = run_tracer_measured(
        &[
            "plot",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--kind",
            "scatter",
        ],
        Duration::from_secs(240),
    );
    run.out.assert_success();
    check_renders(&out);
    let svg = std::fs::read_to_string(&out).unwrap();
    let points: Vec<_> = elements(&svg, "point")
        .into_iter()
        .filter(|p| p.contains_key("data-series"))
        .collect();
    // Before: a marker per operation (a 30 MB picture).
    assert!(points.len() <= 10_000, "{} markers", points.len());
    assert!(svg.len() < 4 << 20, "{} bytes", svg.len());
    let stood_for: f64 = points.iter().map(|p| num(p, "data-count")).sum();
    assert_eq!(stood_for as u64, N);
    let slow: Vec<_> = points
        .iter()
        .filter(|p| num(p, "data-value") == 300.0)
        .collect();
    assert_eq!(slow.len(), 1, "the outlier is drawn as itself");
    assert_eq!(num(slow[0], "data-count"), 1.0);
    assert!(svg.contains("read (50000)") && svg.contains("write (50000)"));
    // The y axis spans 0..315 ms, so every other operation is in the lowest
    // 4 px: no cell needs to be coarser.
    let note = format!(
        "{N} operations binned: {} markers, each the slowest operation of its series in its 4x4 px cell (data-count: how many it stands for)",
        points.len()
    );
    assert_eq!(run.out.stderr, format!("plot: {note}\n"));
    assert!(svg.contains(&note));
    // Each operation is held in about 100 bytes, its record was about 190.
    assert!(
        run.peak_kib < baseline_kib + size_kib,
        "peak RSS {} KiB ({baseline_kib} KiB for its first 1000 records) for {size_kib} KiB of records",
        run.peak_kib
    );
}

#[test]
fn a_device_is_written_not_replaced() {
    // Pictures are written to a temporary name and renamed over the output:
    // done to /dev/null, that replaced the device with a regular file.
    use std::os::unix::fs::FileTypeExt as _;
    let dir = ScratchDir::new("plot-devnull");
    let input = dir.path.join("snoop.ndjson");
    write_ndjson(&input, &snoop_fixture());
    let input = input.to_str().unwrap();
    let run = run_tracer(&["plot", input, "-o", "/dev/null", "--kind", "scatter"]);
    run.assert_success();
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "{null:?}");
    assert!(!Path::new("/dev/null.tmp").exists());
}
