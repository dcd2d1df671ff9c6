//! Running the tracer binary: started in the background until its banner says
//! it traces, then stopped by a signal; or run to completion.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{hidden, output::reported_missed};

/// The tracer binary under test: $TRACER_BIN, else target/release/tracer.
pub fn tracer_bin() -> PathBuf {
    let bin = std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"));
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A finished tracer run.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Vectors of the softirqs the kernel ran, during the run, where BPF cannot
    /// see them (see `hidden`).
    pub hidden: Vec<u32>,
}

/// The kernel's `recursion_misses` summed over the BPF programs process `pid`
/// holds (/proc/PID/fdinfo shows them for every program fd, 5.12 and later).
fn programs_missed(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("prog_id:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("recursion_misses:"))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

impl Finished {
    /// How many events the kernel may have hidden from the tracer during the
    /// run: the softirqs of these vectors run in PID 1's context (each may
    /// have hidden one event of a workload with one operation in flight), plus
    /// the events the tracer itself reported missed (the kernel skips a
    /// program while BPF is busy on that CPU, e.g. during any tracer's map
    /// reads, and counts it).
    pub fn hidden(&self, vectors: &[u32]) -> u64 {
        self.hidden.iter().filter(|v| vectors.contains(v)).count() as u64
            + reported_missed(&self.stderr)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "tracer failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "tracer panicked:\n{}",
            self.stderr
        );
        self
    }

    /// stdout as NDJSON records.
    #[track_caller]
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Asserts a clean failure: non-zero exit and exactly one line on stderr.
    #[track_caller]
    pub fn assert_one_line_error(&self, contains: &str) {
        assert!(
            !self.status.success(),
            "expected failure, got success; stdout:\n{}",
            self.stdout
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(
            lines[0].contains(contains),
            "stderr {:?} lacks {contains:?}",
            lines[0]
        );
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"));
    }
}

/// A running tracer whose output is collected in the background.
pub struct Tracer {
    child: Child,
    hidden: hidden::Hidden,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

const BANNER: &str = "Hit Ctrl-C to end.";

/// A tracer's arguments and extra environment variables.
pub type Run<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

impl Tracer {
    /// Starts `tracer <args>` and waits until it says it is tracing.
    #[track_caller]
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_with_env(args, &[])
    }

    /// Like `start`, with extra environment variables (e.g. TRACER_SKIP_HOOKS).
    #[track_caller]
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        Tracer::start_command(cmd)
    }

    /// Like `start`, for a command the test prepared (e.g. its stdout a pipe of
    /// its own, or the binary run under `nohup`); stdout is collected when
    /// piped.
    #[track_caller]
    pub fn start_command(mut cmd: Command) -> Tracer {
        let args = format!("{cmd:?}");
        let hidden = hidden::Hidden::start();
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tracer");
        // Closes the parent's copies of the child's stdio (a pipe the test
        // reads to its end).
        drop(cmd);
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = vec![collect(child.stderr.take().unwrap(), stderr.clone())];
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, stdout.clone()));
        }
        let mut tracer = Tracer {
            child,
            hidden,
            stdout,
            stderr,
            readers,
        };
        // Hang guards, not speed assumptions (the verifier is slow under emulation).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if tracer.stderr.lock().unwrap().contains(BANNER) {
                return tracer;
            }
            if let Ok(Some(status)) = tracer.child.try_wait() {
                let f = tracer.finish(status);
                panic!(
                    "tracer {args} exited before tracing ({}):\n{}{}",
                    f.status, f.stdout, f.stderr
                );
            }
            assert!(
                Instant::now() < deadline,
                "tracer {args} did not start in 180 s:\n{}",
                tracer.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts several tracers at once, each on a thread of its own: their
    /// start-ups (BTF, the verifier) overlap.
    #[track_caller]
    pub fn start_together(runs: &[Run]) -> Vec<Tracer> {
        thread::scope(|scope| {
            let starts: Vec<_> = runs
                .iter()
                .map(|(args, env)| scope.spawn(move || Tracer::start_with_env(args, env)))
                .collect();
            starts
                .into_iter()
                .map(|s| s.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Events the kernel may have hidden from the tracer so far: softirqs of
    /// these vectors in PID 1's context, plus its programs' missed runs (see
    /// `Finished::hidden`), read from its program fds' fdinfo.
    pub fn hidden_now(&self, vectors: &[u32]) -> u64 {
        self.hidden
            .softirqs()
            .iter()
            .filter(|v| vectors.contains(v))
            .count() as u64
            + programs_missed(self.child.id())
    }

    /// The output so far.
    pub fn stdout_now(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Its stderr so far.
    pub fn stderr_now(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn finish(mut self, status: ExitStatus) -> Finished {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Finished {
            status,
            stdout,
            stderr,
            hidden: self.hidden.softirqs(),
        }
    }

    #[track_caller]
    fn wait_timeout(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return self.finish(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                let f = self.finish(status);
                panic!(
                    "tracer did not exit within {limit:?}:\n{}{}",
                    f.stdout, f.stderr
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (SIGINT, like Ctrl-C) and collects the final output.
    pub fn stop_with(self, signal: i32) -> Finished {
        self.stop_within(signal, Duration::from_secs(120))
    }

    /// Like `stop_with`, failing unless the tracer exits within `limit`.
    #[track_caller]
    pub fn stop_within(self, signal: i32, limit: Duration) -> Finished {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait_timeout(limit)
    }

    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for a run that ends by itself (interval and count).
    pub fn wait(self) -> Finished {
        self.wait_within(Duration::from_secs(180))
    }

    /// Like `wait`, failing unless the tracer exits within `limit`.
    #[track_caller]
    pub fn wait_within(self, limit: Duration) -> Finished {
        self.wait_timeout(limit)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds, checking every few milliseconds; fails after two
/// minutes (a hang guard, not a speed assumption) saying what never happened.
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs tracer to completion (for bad-input tests).
pub fn run_tracer(args: &[&str]) -> Finished {
    run_command(Command::new(tracer_bin()).args(args))
}

/// Runs a shell script in a mount namespace of its own (private propagation),
/// where it may unmount or remount tracefs without touching the machine's.
pub fn run_in_own_mounts(script: &str) -> Finished {
    run_command(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]))
}

pub fn run_command(cmd: &mut Command) -> Finished {
    let out = cmd.stdin(Stdio::null()).output().expect("running command");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        hidden: Vec::new(),
    }
}
