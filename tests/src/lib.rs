//! Helpers for tracer's integration tests: running the real binary against the
//! real kernel, and deterministic workloads the tests create and clean up
//! themselves (loop devices on tmpfs, direct I/O, child processes).
//!
//! Outside CI, a test that needs root skips with a message; with CI=true a skip
//! is a failure.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod fuse;
pub mod hidden;
pub mod kvm;
pub mod measure;
pub mod net;
pub mod prometheus;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether this test can trace here. Outside CI it may skip (returns false after
/// saying why); in CI it fails instead.
pub fn can_trace() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("needs root (CAP_BPF, CAP_PERFMON)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("needs a kernel with BTF")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) if in_ci() => panic!("cannot run with CI=true: {why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// Returns early from a test that cannot run here (see `can_trace`).
#[macro_export]
macro_rules! require_tracing {
    () => {
        if !$crate::can_trace() {
            return;
        }
    };
}

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
pub fn programs_missed(pid: u32) -> u64 {
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

/// Whether the running kernel has tracepoint category:name.
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    std::path::Path::new(&format!(
        "/sys/kernel/tracing/events/{category}/{name}/format"
    ))
    .exists()
}

/// Whether a kprobe could go at kernel function `name`: the kernel has the
/// kprobe PMU and lists the function in its symbol table (the tests' own
/// judgement, which the tool's, by BTF, must agree with).
pub fn has_kprobe_function(name: &str) -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
        && read_to_string("/proc/kallsyms").lines().any(|l| {
            let mut w = l.split_whitespace().skip(1);
            matches!(w.next(), Some("T" | "t")) && w.next() == Some(name)
        })
}

/// Whether this kernel's tracepoint `category:name` has `field` (so a test
/// asserts what the running kernel can tell: 5.10's kfree_skb has no reason).
pub fn tracepoint_has_field(category: &str, name: &str, field: &str) -> bool {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/format");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("field:"))
        .filter_map(|d| d.split(';').next())
        .any(|d| {
            d.split(|c: char| c.is_whitespace() || c == '[')
                .any(|w| w == field)
        })
}

/// Counter `name` of a tool's `-v` "counters:" line in `stderr`.
#[track_caller]
pub fn counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("counters: ").map(|(_, c)| c))
        .unwrap_or_else(|| panic!("no counters line (run with -v): {stderr}"));
    line.split(", ")
        .find_map(|c| c.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in: {line}"))
}

/// The sum of the tracer's "N events missed (...)" warnings (one per tool).
pub fn reported_missed(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("WARNING: ")?
                .1
                .split_once(" event")?
                .0
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

    /// The NDJSON records printed so far (complete lines only).
    pub fn json_now(&self) -> Vec<Value> {
        let out = self.stdout_now();
        let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
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

pub fn run_command(cmd: &mut Command) -> Finished {
    let out = cmd.stdin(Stdio::null()).output().expect("running command");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        hidden: Vec::new(),
    }
}

/// Runs a shell command that must succeed; returns its stdout.
#[track_caller]
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The calling thread's name as the kernel reports it (what COMM columns show).
pub fn thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

pub fn own_pid() -> u32 {
    std::process::id()
}

/// Loop devices are attached one at a time: `losetup -f` can hand the same free
/// device to two concurrent callers.
static LOSETUP: Mutex<()> = Mutex::new(());

/// A loop device backed by a file on tmpfs (/dev/shm), detached and removed on drop.
pub struct LoopDevice {
    pub path: String,
    pub name: String,
    /// The backing file, removed on drop when the device made it.
    made_backing: Option<PathBuf>,
}

impl LoopDevice {
    #[track_caller]
    pub fn new(size_mb: u64) -> LoopDevice {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let backing = PathBuf::from(format!(
            "/dev/shm/tracer-test-{}-{}.img",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = File::create(&backing).expect("creating the backing file");
        file.set_len(size_mb << 20).unwrap();
        drop(file);
        match LoopDevice::attach(&backing) {
            Ok(mut dev) => {
                dev.made_backing = Some(backing);
                dev
            }
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                panic!("{e}");
            }
        }
    }

    /// A loop device on an existing file (e.g. on a `fuse::SlowFs`).
    #[track_caller]
    pub fn on_file(backing: &Path) -> LoopDevice {
        LoopDevice::attach(backing).unwrap_or_else(|e| panic!("{e}"))
    }

    fn attach(backing: &Path) -> Result<LoopDevice, String> {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .expect("losetup");
        if !out.status.success() {
            return Err(format!(
                "losetup {} failed: {}",
                backing.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = path.trim_start_matches("/dev/").to_string();
        // Where udev runs, it probes (reads) a new device: let that finish before
        // the test counts the device's I/O.
        let _ = Command::new("udevadm")
            .args(["settle", "--timeout=30"])
            .status();
        Ok(LoopDevice {
            path,
            name,
            made_backing: None,
        })
    }

    /// Opens the device for O_DIRECT I/O.
    pub fn open_direct(&self) -> DirectIo {
        DirectIo::open(Path::new(&self.path))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _guard = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        if let Some(backing) = &self.made_backing {
            let _ = std::fs::remove_file(backing);
        }
    }
}

/// O_DIRECT I/O with a page-aligned buffer: each call is one request that
/// nothing merges with, issued by the calling thread.
pub struct DirectIo {
    file: File,
    buf: *mut u8,
    cap: usize,
}

const DIRECT_BUF: usize = 1 << 20;

impl DirectIo {
    pub fn open(path: &Path) -> DirectIo {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {} O_DIRECT: {e}", path.display()));
        let layout = std::alloc::Layout::from_size_align(DIRECT_BUF, 4096).unwrap();
        // SAFETY: non-zero size layout.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!buf.is_null());
        DirectIo {
            file,
            buf,
            cap: DIRECT_BUF,
        }
    }

    fn buf(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.cap);
        // SAFETY: buf is a live allocation of cap bytes.
        unsafe { std::slice::from_raw_parts_mut(self.buf, len) }
    }

    #[track_caller]
    pub fn write(&mut self, offset: u64, len: usize) {
        let file = self.file.try_clone().unwrap();
        let n = file.write_at(self.buf(len), offset).expect("direct write");
        assert_eq!(n, len);
    }

    #[track_caller]
    pub fn read(&mut self, offset: u64, len: usize) {
        let file = self.file.try_clone().unwrap();
        let n = file.read_at(self.buf(len), offset).expect("direct read");
        assert_eq!(n, len);
    }
}

impl Drop for DirectIo {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, 4096).unwrap();
        // SAFETY: allocated in open() with this layout.
        unsafe { std::alloc::dealloc(self.buf, layout) };
    }
}

/// The standard block workload: `writes` sequential 4 KiB O_DIRECT writes from
/// offset 0, then `reads` 64 KiB O_DIRECT reads from 1 MiB on, one at a time.
pub const W_SIZE: u64 = 4096;
pub const R_SIZE: u64 = 65536;
pub const R_BASE: u64 = 1 << 20;

pub fn block_workload(dev: &LoopDevice, writes: u64, reads: u64) {
    let mut io = dev.open_direct();
    for i in 0..writes {
        io.write(i * W_SIZE, W_SIZE as usize);
    }
    for j in 0..reads {
        io.read(R_BASE + j * R_SIZE, R_SIZE as usize);
    }
}

/// `block_workload`, timing each syscall: returns the longest (which bounds the
/// latency of every block I/O of the workload: each lies within its syscall).
pub fn block_workload_timed(dev: &LoopDevice, writes: u64, reads: u64) -> Duration {
    let mut io = dev.open_direct();
    let mut longest = Duration::ZERO;
    for i in 0..writes {
        let start = Instant::now();
        io.write(i * W_SIZE, W_SIZE as usize);
        longest = longest.max(start.elapsed());
    }
    for j in 0..reads {
        let start = Instant::now();
        io.read(R_BASE + j * R_SIZE, R_SIZE as usize);
        longest = longest.max(start.elapsed());
    }
    longest
}

/// Starts a child process (`dd`) writing `count` 4 KiB O_DIRECT blocks to the
/// device at `offset_blocks`; returns it so the test knows its pid.
pub fn dd_writer(dev: &LoopDevice, count: u64, offset_blocks: u64) -> Child {
    Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dev.path))
        .args(["bs=4096", "oflag=direct", "status=none"])
        .arg(format!("count={count}"))
        .arg(format!("seek={offset_blocks}"))
        .spawn()
        .expect("starting dd")
}

/// Reads a whole file into a string (helper for /proc).
pub fn read_to_string(path: &str) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_default();
    s
}

/// A helper binary of this crate (src/bin), next to the test executables.
pub fn helper_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: build with `cargo test -p tracer-tests`",
        bin.display()
    );
    bin
}

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
        let mut cmd = Command::new(helper_bin("page-toucher"));
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
}

impl Toucher {
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

/// An ext4 filesystem on a loop device (a real block device, so file pages dropped
/// from the page cache come back through major faults), unmounted on drop.
pub struct Ext4 {
    pub mountpoint: PathBuf,
    _dev: LoopDevice,
}

impl Ext4 {
    #[track_caller]
    pub fn new(size_mb: u64) -> Ext4 {
        let dev = LoopDevice::new(size_mb);
        sh(&format!("mkfs.ext4 -q -F {}", dev.path));
        let mountpoint = std::env::temp_dir().join(format!("tracer-ext4-{}", dev.name));
        std::fs::create_dir_all(&mountpoint).unwrap();
        sh(&format!("mount {} {}", dev.path, mountpoint.display()));
        Ext4 {
            mountpoint,
            _dev: dev,
        }
    }

    /// Writes a file of `pages` 4 KiB pages and makes it durable.
    pub fn write_file(&self, name: &str, pages: usize) -> PathBuf {
        let path = self.mountpoint.join(name);
        let data = vec![7u8; pages * 4096];
        std::fs::write(&path, &data).unwrap();
        File::open(&path).unwrap().sync_all().unwrap();
        path
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's timestamps (bpf_ktime_get_ns).
pub fn mono_ns() -> u64 {
    // SAFETY: clock_gettime with a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A directory for a test's files, removed on drop.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tracer-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a scratch directory");
        ScratchDir { path }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
