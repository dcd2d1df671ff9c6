//! `peak-rss OUT PROGRAM [ARGS...]`: runs PROGRAM with this process's stdin,
//! stdout and stderr, writes its peak resident memory (KiB, the kernel's
//! ru_maxrss of the child) to OUT, and exits with its status.
//!
//! The tests measure tracer's peak through this small process because a
//! child's ru_maxrss includes the memory of whoever forked it (the mm it
//! shared until exec): forked from a test holding a large input, tracer would
//! be charged for the test. Sampling /proc/PID/status instead misses the peak
//! of a run shorter than the sampling period.

use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: peak-rss OUT PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let child = Command::new(program)
        .args(rest)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child, with valid out-parameters.
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    std::fs::write(out, usage.ru_maxrss.to_string()).expect("writing the peak");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::process::exit(code);
}
