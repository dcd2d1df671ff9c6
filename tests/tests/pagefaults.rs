//! pagefaults against the real kernel: a helper process touching N pages.

use tracer_tests::{Tracer, block::Ext4, fault::Toucher, require_tracing};

const N: u64 = 5000;

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
    // Exactly what the kernel counted for the helper (its N pages, and the few
    // faults of its own stdio and stack while it reports back).
    let (minor, major) = toucher.faults();
    assert!(minor >= N, "{minor}");
    assert_eq!(r["minor"], minor, "{r}");
    assert_eq!(r["major"], major, "{r}");
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
    assert_eq!(toucher.faults().1, K as u64);
    assert_eq!(r["minor"], toucher.faults().0, "{r}");
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
    assert_eq!(minor, toucher.faults().0, "{row}");
}
