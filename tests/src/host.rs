//! The machine a test runs on: shell commands, /proc, the running kernel's
//! tracepoints and symbols, clocks and scratch directories.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

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

/// Reads a whole file into a string (helper for /proc).
pub fn read_to_string(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's timestamps (bpf_ktime_get_ns).
pub fn mono_ns() -> u64 {
    // SAFETY: clock_gettime with a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `tracer-<what>-<pid>-<n>`: a name for something the test makes on the
/// machine (a file, a mount, a namespace), which no other object of this
/// process and no other test process has.
pub(crate) fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "tracer-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory for a test's files, removed on drop.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(unique_name(what));
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

/// Whether the running kernel has tracepoint category:name.
pub fn has_tracepoint(category: &str, name: &str) -> bool {
    Path::new(&format!(
        "/sys/kernel/tracing/events/{category}/{name}/format"
    ))
    .exists()
}

/// Whether a kprobe could go at kernel function `name`: the kernel has the
/// kprobe PMU and lists the function in its symbol table (the tests' own
/// judgement, which the tool's, by BTF, must agree with).
pub fn has_kprobe_function(name: &str) -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
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

/// A helper binary of this crate (src/bin), next to the test executables.
pub(crate) fn helper_bin(name: &str) -> PathBuf {
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
