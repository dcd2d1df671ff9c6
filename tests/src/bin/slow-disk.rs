//! A slow disk for demonstrations and benchmarks: a loop device on the tests'
//! FUSE server (tests/src/fuse.rs), whose block reads covering the given byte
//! offsets are answered DELAY_MS late.
//!
//!   slow-disk SIZE_MB DELAY_MS [OFFSET...]
//!
//! Prints "ready /dev/loopN", then keeps the disk until stdin closes.

use std::{io::BufRead as _, time::Duration};

use tracer_tests::fuse::SlowDisk;

fn die(msg: &str) -> ! {
    eprintln!("slow-disk: {msg}");
    std::process::exit(2);
}

fn number(s: Option<&String>, what: &str) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        die(&format!(
            "{what} must be a number; usage: slow-disk SIZE_MB DELAY_MS [OFFSET...]"
        ))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_mb = number(args.first(), "SIZE_MB");
    let delay = Duration::from_millis(number(args.get(1), "DELAY_MS"));
    let disk = SlowDisk::new(size_mb);
    for off in &args[2..] {
        disk.slow_down(number(Some(off), "OFFSET"), delay);
    }
    println!("ready /dev/{}", disk.dev.name);
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .is_ok_and(|n| n > 0)
    {}
}
