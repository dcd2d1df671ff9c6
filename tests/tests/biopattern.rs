//! biopattern against the real kernel: sequential and shuffled workloads.

use tracer_tests::{
    Tracer,
    block::{LoopDevice, W_SIZE},
    hidden::{BLOCK, assert_count},
    require_tracing,
};

const N: u64 = 400;

/// biopattern's record for the writes at `offsets`, and how many completions
/// the kernel may have hidden (each costs one I/O, and makes the next one look
/// random: it is compared with the I/O before the hidden one).
fn pattern(dev: &LoopDevice, offsets: &[u64]) -> (serde_json::Value, u64) {
    let t = Tracer::start(&["biopattern", "-d", &dev.name, "--json"]);
    let mut io = dev.open_direct();
    for &o in offsets {
        io.write(o * W_SIZE, W_SIZE as usize);
    }
    let out = t.stop();
    out.assert_success();
    let recs = out.json();
    assert_eq!(recs.len(), 1, "{}", out.stdout);
    (recs[0].clone(), out.hidden(&[BLOCK]))
}

#[test]
fn sequential_run_is_sequential() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    let offsets: Vec<u64> = (0..N).collect();
    let (r, hidden) = pattern(&dev, &offsets);
    // The first I/O has no predecessor: N - 1 classified, all sequential.
    let count = r["count"].as_u64().unwrap();
    assert_count(count, N - 1, hidden, "I/Os");
    assert_count(
        r["sequential"].as_u64().unwrap(),
        N - 1,
        2 * hidden,
        "sequential I/Os",
    );
    if hidden == 0 {
        assert_eq!(r["sequential_pct"], 100.0, "{r}");
    }
    // Bytes count every I/O, the unclassified first one too.
    assert_eq!(r["kbytes"], (count + 1) * W_SIZE / 1024);
}

#[test]
fn shuffled_run_is_random() {
    require_tracing!();
    let dev = LoopDevice::new(64);
    // A fixed permutation (multiplicative step coprime with N).
    let offsets: Vec<u64> = (0..N).map(|i| (i * 157 + 11) % N).collect();
    let (r, hidden) = pattern(&dev, &offsets);
    assert_count(r["count"].as_u64().unwrap(), N - 1, hidden, "I/Os");
    // No two consecutive offsets (nor two apart) are adjacent: all random.
    assert_eq!(r["random_pct"], 100.0, "{r}");
}

#[test]
fn two_disks_interleaved_are_told_apart() {
    require_tracing!();
    // Every disk traced (no -d): each keeps its own previous I/O, so
    // alternating writes to two disks leave one all sequential and the other
    // all random.
    let (seq_dev, rnd_dev) = (LoopDevice::new(64), LoopDevice::new(64));
    let t = Tracer::start(&["biopattern", "--json"]);
    let (mut seq_io, mut rnd_io) = (seq_dev.open_direct(), rnd_dev.open_direct());
    for i in 0..N {
        seq_io.write(i * W_SIZE, W_SIZE as usize);
        rnd_io.write(((i * 157 + 11) % N) * W_SIZE, W_SIZE as usize);
    }
    let out = t.stop();
    out.assert_success();
    let hidden = out.hidden(&[BLOCK]);
    let recs = out.json();
    let row = |dev: &LoopDevice| {
        let rows: Vec<_> = recs.iter().filter(|r| r["disk"] == dev.name).collect();
        assert_eq!(rows.len(), 1, "{}: {}", dev.name, out.stdout);
        rows[0].clone()
    };
    let (s, r) = (row(&seq_dev), row(&rnd_dev));
    assert_count(
        s["sequential"].as_u64().unwrap(),
        N - 1,
        2 * hidden,
        "sequential I/Os",
    );
    assert_count(s["count"].as_u64().unwrap(), N - 1, hidden, "I/Os");
    assert_count(r["random"].as_u64().unwrap(), N - 1, hidden, "random I/Os");
    assert_eq!(r["sequential"], 0, "{r}");
    assert_eq!(s["kbytes"], N * W_SIZE / 1024, "{s}");
    assert_eq!(r["kbytes"], N * W_SIZE / 1024, "{r}");
}
