//! biopattern against the real kernel: sequential and shuffled workloads.

use tracer_tests::{LoopDevice, Tracer, W_SIZE, require_tracing};

const N: u64 = 400;

fn pattern(dev: &LoopDevice, offsets: &[u64]) -> serde_json::Value {
    let t = Tracer::start(&["biopattern", "-d", &dev.name, "--json"]);
    let mut io = dev.open_direct();
    for &o in offsets {
        io.write(o * W_SIZE, W_SIZE as usize);
    }
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    assert_eq!(recs.len(), 1, "{}", out.stdout);
    recs[0].clone()
}

#[test]
fn sequential_run_is_sequential() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let offsets: Vec<u64> = (0..N).collect();
    let r = pattern(&dev, &offsets);
    // The first I/O has no predecessor: N - 1 classified.
    assert_eq!(r["count"], N - 1, "{r}");
    assert_eq!(r["sequential_pct"], 100.0, "{r}");
    assert_eq!(r["kbytes"], N * W_SIZE / 1024);
}

#[test]
fn shuffled_run_is_random() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    // A fixed permutation (multiplicative step coprime with N).
    let offsets: Vec<u64> = (0..N).map(|i| (i * 157 + 11) % N).collect();
    let r = pattern(&dev, &offsets);
    assert_eq!(r["count"], N - 1, "{r}");
    assert_eq!(r["random_pct"], 100.0, "{r}");
}
