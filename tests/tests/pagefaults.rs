//! pagefaults against the real kernel: a helper process touching N pages.

use tracer_tests::{Ext4, Toucher, Tracer, require_tracing};

const N: u64 = 5000;
/// Faults the helper takes besides its N pages after the handshake (its stdio
/// and stack while reporting back): documented slack.
const SLACK: u64 = 16;

fn row_for(out: &tracer_tests::Finished, pid: u32) -> serde_json::Value {
    let mut total = serde_json::json!({"minor": 0, "major": 0, "user": 0, "kernel": 0, "total": 0});
    for rec in out.json() {
        for row in rec["rows"].as_array().unwrap() {
            assert_eq!(row["pid"], pid, "-p must keep only that pid: {row}");
            for k in ["minor", "major", "user", "kernel", "total"] {
                total[k] = (total[k].as_u64().unwrap() + row[k].as_u64().unwrap()).into();
            }
            total["comm"] = row["comm"].clone();
        }
    }
    total
}

#[test]
fn anonymous_pages_are_minor_faults_of_that_pid() {
    require_tracing!();
    let mut toucher = Toucher::spawn(&["anon", &N.to_string()]);
    let t = Tracer::start(&[
        "pagefaults",
        "-p",
        &toucher.pid().to_string(),
        "--json",
        "30",
    ]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    let r = row_for(&out, toucher.pid());
    let minor = r["minor"].as_u64().unwrap();
    assert!(
        (N..=N + SLACK).contains(&minor),
        "minor {minor}, want {N}..={}: {r}",
        N + SLACK
    );
    assert_eq!(r["major"], 0, "{r}");
    assert!(r["user"].as_u64().unwrap() >= N, "{r}");
    assert_eq!(r["total"], r["minor"]);
    assert_eq!(r["comm"], "page-toucher");
}

#[test]
fn dropped_file_pages_are_major_faults() {
    require_tracing!();
    const K: usize = 64;
    let fs = Ext4::new(64);
    let path = fs.write_file("data", K);
    let mut toucher = Toucher::spawn(&["file", path.to_str().unwrap(), &K.to_string()]);
    let t = Tracer::start(&[
        "pagefaults",
        "-p",
        &toucher.pid().to_string(),
        "--json",
        "30",
    ]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    let r = row_for(&out, toucher.pid());
    assert_eq!(r["major"], K as u64, "one major fault per page read: {r}");
}

#[test]
fn text_output_has_the_columns() {
    require_tracing!();
    let mut toucher = Toucher::spawn(&["anon", "100"]);
    let t = Tracer::start(&["pagefaults", "-C", "-p", &toucher.pid().to_string(), "30"]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    assert!(
        out.stdout
            .contains("PID     COMM                 MINOR     MAJOR      USER    KERNEL     TOTAL"),
        "{}",
        out.stdout
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&toucher.pid().to_string()))
        .unwrap();
    let minor: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!((100..=100 + SLACK).contains(&minor), "{row}");
}
