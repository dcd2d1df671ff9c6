//! Measurements: how long the test's own operation took, and the time and
//! peak memory of one run of tracer (for the tests of inputs that once made
//! it grow without bound).

use std::{
    io::Read,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{Finished, tracer_bin};

/// A finished run, with its peak resident memory and how long it took.
pub struct Measured {
    pub out: Finished,
    /// The kernel's high-water mark of its resident memory (ru_maxrss), KiB.
    pub peak_kib: u64,
    pub took: Duration,
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs tracer with `args` to its end under the peak-rss helper
/// (src/bin/peak-rss.rs), which reports the kernel's own high-water mark of
/// its resident memory; fails the test if it runs longer than `limit`.
#[track_caller]
pub fn run_tracer_measured(args: &[&str], limit: Duration) -> Measured {
    let start = Instant::now();
    let peak_file = std::env::temp_dir().join(crate::host::unique_name("peak-rss"));
    let mut child = Command::new(crate::host::helper_bin("peak-rss"))
        .arg(&peak_file)
        .arg(tracer_bin())
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting peak-rss");
    let stdout = read_all(child.stdout.take().expect("piped"));
    let stderr = read_all(child.stderr.take().expect("piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tracer") {
            break status;
        }
        if start.elapsed() > limit {
            // SAFETY: signalling the process group the helper leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            let _ = std::fs::remove_file(&peak_file);
            panic!("tracer {args:?} still ran after {limit:?}");
        }
        thread::sleep(Duration::from_millis(2));
    };
    let peak = std::fs::read_to_string(&peak_file);
    let _ = std::fs::remove_file(&peak_file);
    Measured {
        out: Finished {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            hidden: Vec::new(),
        },
        peak_kib: peak
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("peak-rss wrote the peak"),
        took: start.elapsed(),
    }
}

/// Times a closure (the test's own measurement of a syscall, which contains the
/// block I/O or page fault it causes).
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The peak resident memory of tracer reading the first `lines` lines of
/// `input` (`args` with `{}` standing for the file): what a run costs before
/// its input could make it grow. Bounds on growth are over this, since the
/// binary's own pages weigh differently on each machine (a kernel under qemu
/// runs it from tmpfs, with transparent huge pages).
#[track_caller]
pub fn baseline_kib(args: &[&str], input: &Path, lines: usize) -> u64 {
    let text = std::fs::read_to_string(input).expect("reading the input");
    let head: String = text.split_inclusive('\n').take(lines).collect();
    let small = input.with_extension("head");
    std::fs::write(&small, head).expect("writing the baseline input");
    let small_str = small.to_str().expect("UTF-8 path");
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "{}" { small_str } else { a })
        .collect();
    let run = run_tracer_measured(&args, Duration::from_secs(60));
    run.out.assert_success();
    let _ = std::fs::remove_file(&small);
    run.peak_kib
}
