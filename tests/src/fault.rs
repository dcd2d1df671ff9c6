//! Page faults the tests cause themselves: the page-toucher helper process
//! (src/bin/page-toucher.rs) and the kernel's own count of its faults.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::read_to_string;

/// The page-toucher helper process (tests/src/bin/page-toucher.rs), stopped at
/// its handshake until `go()`.
pub struct Toucher {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    long: Vec<usize>,
    /// Its (minor, major) fault counts while blocked at "ready", and at "done".
    at_ready: (u64, u64),
    at_done: (u64, u64),
}

impl Toucher {
    #[track_caller]
    pub fn spawn(args: &[&str]) -> Toucher {
        Toucher::spawn_timed(args, None)
    }

    /// Like `spawn`, timing each touch: `long_touches` then lists the pages
    /// whose touch (which contains its fault) took at least `long`.
    #[track_caller]
    pub fn spawn_timed(args: &[&str], long: Option<Duration>) -> Toucher {
        Toucher::spawn_with(args, long, None)
    }

    /// Like `spawn`, under a process name of the test's choosing (at most 15
    /// bytes): its faults are told from any other page-toucher's by name.
    #[track_caller]
    pub fn spawn_named(args: &[&str], comm: &str) -> Toucher {
        Toucher::spawn_with(args, None, Some(comm))
    }

    #[track_caller]
    fn spawn_with(args: &[&str], long: Option<Duration>, comm: Option<&str>) -> Toucher {
        let mut cmd = Command::new(crate::host::helper_bin("page-toucher"));
        if let Some(long) = long {
            cmd.env("TOUCHER_LONG_NS", long.as_nanos().to_string());
        }
        if let Some(comm) = comm {
            cmd.env("TOUCHER_COMM", comm);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting page-toucher");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "page-toucher did not start");
        let mut t = Toucher {
            child,
            stdout,
            long: Vec::new(),
            at_ready: (0, 0),
            at_done: (0, 0),
        };
        t.at_ready = t.faults_when_blocked();
        t
    }

    /// Waits until the helper is blocked reading stdin (where it takes no
    /// faults), then reads its fault counters from /proc/PID/stat. The kernel
    /// counts them in mm_account_fault, beside the perf events the tools count.
    #[track_caller]
    fn faults_when_blocked(&self) -> (u64, u64) {
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // "0 0x0 ..." while in read(0, ...) (x86-64 syscall 0); "running" else.
            let syscall = read_to_string(&format!("/proc/{pid}/syscall"));
            if syscall.starts_with("0 0x0 ") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "page-toucher never blocked on stdin: {syscall}"
            );
            thread::sleep(Duration::from_millis(1));
        }
        let stat = read_to_string(&format!("/proc/{pid}/stat"));
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // After the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt.
        (fields[7].parse().unwrap(), fields[9].parse().unwrap())
    }

    /// The (minor, major) faults the helper took between "ready" and "done",
    /// counted by the kernel: what a tracer attached meanwhile must count, exactly.
    pub fn faults(&self) -> (u64, u64) {
        (
            self.at_done.0 - self.at_ready.0,
            self.at_done.1 - self.at_ready.1,
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it fault and waits until it is blocked again; returns the mapping's
    /// address range [start, end).
    #[track_caller]
    pub fn go(&mut self) -> (u64, u64) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.first(), Some(&"done"), "page-toucher: {line}");
        self.long = parts[3]
            .split(',')
            .filter(|s| *s != "-")
            .map(|s| s.parse().unwrap())
            .collect();
        self.at_done = self.faults_when_blocked();
        (
            u64::from_str_radix(parts[1], 16).unwrap(),
            u64::from_str_radix(parts[2], 16).unwrap(),
        )
    }

    /// Pages (indexes) whose touch took at least the `spawn_timed` limit.
    pub fn long_touches(&self) -> &[usize] {
        &self.long
    }
}

impl Drop for Toucher {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
