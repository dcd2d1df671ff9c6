//! The slow-device helper itself: reads covering the slowed-down byte take at
//! least the delay and reach the FUSE server as delayed reads; the others do not.

use std::time::Duration;

use tracer_tests::{fuse::SlowDisk, measure::timed, require_tracing};

#[test]
fn slowed_byte_delays_exactly_its_read() {
    require_tracing!();
    let disk = SlowDisk::new(16);
    let delay = Duration::from_millis(300);
    disk.slow_down(5 << 20, delay);
    let mut io = disk.dev.open_direct();
    for i in 0..100u64 {
        io.write(i * 4096, 4096);
    }
    let mut slow = Vec::new();
    for j in 0..20u64 {
        let off = (4 << 20) + j * 65536;
        let took = timed(|| io.read(off, 65536));
        if took >= delay {
            slow.push(off);
        }
    }
    let delayed = disk.fs.delayed();
    assert_eq!(delayed.len(), 1, "{delayed:?}");
    assert!(delayed[0].offset <= 5 << 20 && 5 << 20 < delayed[0].offset + delayed[0].len as u64);
    assert!(slow.contains(&(5 << 20)), "{slow:?}");
}
