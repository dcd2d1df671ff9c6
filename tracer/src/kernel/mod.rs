//! kernel/: what tracer reads about the running kernel from the kernel's own files:
//! BTF (btf.rs), tracefs and tracepoint formats (tracefs.rs), symbols (ksyms.rs),
//! disks (disks.rs) and process mappings (procmaps.rs).
//!
//! What the running kernel offers and who we are: capabilities, kernel release,
//! BTF, kprobe support, processes and cgroups. Hooks are chosen by probing these,
//! never by version number.

pub mod btf;
pub mod disks;
pub mod ksyms;
pub mod procmaps;
pub mod tracefs;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether we may load and attach tracing programs (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN on kernels that predate them).
pub fn has_bpf_privileges() -> bool {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN)
}

pub fn require_privileges() -> Result<()> {
    if !has_bpf_privileges() {
        bail!("needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs; run it with sudo");
    }
    Ok(())
}

/// `uname -r`.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

pub fn has_btf() -> bool {
    Path::new(BTF_PATH).exists()
}

/// Whether the kernel can create kprobes at all (CONFIG_KPROBES). A symbol in
/// /proc/kallsyms alone does not mean one can attach there.
pub fn has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// Checks that a process exists (for -p).
pub fn check_pid(pid: u32) -> Result<()> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no such process: {pid}");
    }
    Ok(())
}

/// A process's name from /proc (empty if it has exited).
pub fn process_comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A cgroup v2 given by path: its id and depth below the root, which is what
/// `bpf_get_current_ancestor_cgroup_id` compares against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
}

/// The directory of the process's `-c` cgroup, open, for the programs'
/// TASK_CGROUP map (one filter per process: every source of `tracer record`
/// shares it).
static FILTER_CGROUP: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

pub fn set_filter_cgroup(cg: &Cgroup) -> Result<()> {
    let dir = fs::File::open(&cg.path)
        .with_context(|| format!("opening cgroup {}", cg.path.display()))?;
    let _ = FILTER_CGROUP.set(dir);
    Ok(())
}

pub fn filter_cgroup() -> Option<&'static std::fs::File> {
    FILTER_CGROUP.get()
}

fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup v2 filesystem is mounted")
}

/// Resolves `-c CGROUP_PATH`: an absolute path inside the cgroup v2 mount, or a
/// path relative to it (e.g. `system.slice/ssh.service`).
pub fn cgroup(arg: &Path) -> Result<Cgroup> {
    let root = cgroup2_mount()?;
    let path = if arg.starts_with(&root) {
        arg.to_path_buf()
    } else {
        root.join(arg.strip_prefix("/").unwrap_or(arg))
    };
    let meta = fs::metadata(&path).with_context(|| format!("no such cgroup: {}", arg.display()))?;
    if !meta.is_dir() {
        bail!("not a cgroup directory: {}", arg.display());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs with a valid C string and an out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != CGROUP2_SUPER_MAGIC
    {
        bail!("not a cgroup v2 directory: {}", path.display());
    }
    Ok(Cgroup {
        path,
        id: meta.ino(),
    })
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime with a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it; on 6.x
/// memory is charged to the cgroup and failing here (no CAP_SYS_RESOURCE) is fine.
pub fn raise_memlock() -> Result<(), std::io::Error> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
