//! faultlat against the real kernel: a helper process touching N pages.

use tracer_tests::{Ext4, Toucher, Tracer, require_tracing};

const N: u64 = 5000;
const SLACK: u64 = 16;

#[test]
fn minor_histogram_counts_the_touched_pages() {
    require_tracing!();
    let mut toucher = Toucher::spawn(&["anon", &N.to_string()]);
    let t = Tracer::start(&["faultlat", "-n", "-p", &toucher.pid().to_string(), "--json"]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    let minor = recs
        .iter()
        .find(|r| r["type"] == "minor")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let count = minor["count"].as_u64().unwrap();
    assert!((N..=N + SLACK).contains(&count), "{minor}");
    assert_eq!(minor["unit"], "nsecs");
    let buckets: u64 = minor["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(buckets, count);
    // A minor fault takes more than 100 ns and less than 10 ms.
    assert!(minor["p50"].as_u64().unwrap() > 100, "{minor}");
    assert!(minor["p50"].as_u64().unwrap() < 10_000_000, "{minor}");
    assert!(!recs.iter().any(|r| r["type"] == "major"), "{}", out.stdout);
}

#[test]
fn major_faults_get_their_own_histogram() {
    require_tracing!();
    const K: usize = 64;
    let fs = Ext4::new(64);
    let path = fs.write_file("data", K);
    let mut toucher = Toucher::spawn(&["file", path.to_str().unwrap(), &K.to_string()]);
    let t = Tracer::start(&["faultlat", "-P", "-p", &toucher.pid().to_string(), "--json"]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    let major = recs
        .iter()
        .find(|r| r["type"] == "major")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(major["count"], K as u64);
    assert_eq!(major["pid"], toucher.pid());
    assert_eq!(major["comm"], "page-toucher");
    // A major fault reads from the disk: slower than the minor ones.
    let minor_p50 = recs
        .iter()
        .find(|r| r["type"] == "minor")
        .map_or(0, |r| r["p50"].as_u64().unwrap());
    assert!(major["p50"].as_u64().unwrap() > minor_p50, "{}", out.stdout);
}

#[test]
fn text_output() {
    require_tracing!();
    let mut toucher = Toucher::spawn(&["anon", "1000"]);
    let t = Tracer::start(&["faultlat", "-p", &toucher.pid().to_string()]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    assert!(
        out.stdout
            .contains("minor faults\n     usecs               : count    distribution"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("p99.9"), "{}", out.stdout);
}
