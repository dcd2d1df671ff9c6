//! faultlat against the real kernel: a helper process touching N pages.

use std::time::Duration;

use tracer_tests::{Tracer, bucket_sum, fault::Toucher, fuse::SlowFile, require_tracing};

const N: u64 = 5000;

#[test]
fn minor_histogram_counts_the_touched_pages() {
    require_tracing!();
    let mut toucher = Toucher::spawn(&["anon", &N.to_string()]);
    let t = Tracer::start(&["faultlat", "-n", "-p", &toucher.pid().to_string(), "--json"]);
    let took = tracer_tests::measure::timed(|| {
        toucher.go();
    });
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    let minor = recs
        .iter()
        .find(|r| r["type"] == "minor")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let count = minor["count"].as_u64().unwrap();
    assert!(count >= N, "{minor}");
    assert_eq!(count, toucher.faults().0, "{minor}");
    assert_eq!(minor["unit"], "nsecs");
    assert_eq!(bucket_sum(minor), count);
    // The helper is single-threaded and took all these faults while the test
    // waited for it: together they cannot have taken longer than that wait.
    assert!(
        minor["sum"].as_u64().unwrap() <= took.as_nanos() as u64,
        "{minor} in {took:?}"
    );
    assert!(minor["max"].as_u64().unwrap() > 0, "{minor}");
    assert!(!recs.iter().any(|r| r["type"] == "major"), "{}", out.stdout);
}

#[test]
fn major_faults_get_their_own_histogram() {
    require_tracing!();
    // Major faults on a FUSE file whose server answers each page read 20 ms late:
    // each of them takes at least that long, whatever the machine's speed.
    const K: u64 = 16;
    let delay = Duration::from_millis(20);
    let file = SlowFile::new(K);
    for page in 0..K {
        file.slow_down_page(page, delay);
    }
    let mut toucher = Toucher::spawn(&["file", file.path.to_str().unwrap(), &K.to_string()]);
    let t = Tracer::start(&["faultlat", "-P", "-p", &toucher.pid().to_string(), "--json"]);
    toucher.go();
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    let major = recs
        .iter()
        .find(|r| r["type"] == "major")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(major["count"], K);
    assert_eq!(major["pid"], toucher.pid());
    assert_eq!(major["comm"], "page-toucher");
    assert_eq!(major["unit"], "usecs");
    // Every major fault sits in a bucket that reaches the delay.
    let delay_us = delay.as_micros() as u64;
    for b in major["buckets"].as_array().unwrap() {
        if b["high"].as_u64().unwrap() < delay_us {
            assert_eq!(
                b["count"], 0,
                "a major fault faster than {delay:?}: {major}"
            );
        }
    }
    assert!(
        major["p50"].as_u64().unwrap() >= delay_us * 15 / 16,
        "{major}"
    );
    assert_eq!(file.fs.delayed().len() as u64, K, "{:?}", file.fs.delayed());
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
