//! Helpers for tracer's integration tests: running the real binary against the
//! real kernel, and deterministic workloads the tests create and clean up
//! themselves.
//!
//! The harness (running the binary, reading its output, the machine around
//! it) is re-exported here, one name each; the workloads of each family of
//! tools live in modules of their own (`block`, `fault`, `fuse`, `kvm`, `net`,
//! `prometheus`), as do the allowances for events the kernel hides (`hidden`)
//! and the test's own timings and a run's peak memory (`measure`).
//!
//! Outside CI, a test that needs root skips with a message; with CI=true a skip
//! is a failure.

use std::path::Path;

mod host;
mod output;
mod run;

pub mod block;
pub mod fault;
pub mod fuse;
pub mod hidden;
pub mod kvm;
pub mod measure;
pub mod net;
pub mod prometheus;

pub use host::{
    ScratchDir, has_kprobe_function, has_tracepoint, mono_ns, own_pid, read_to_string, sh,
    thread_comm, tracepoint_has_field,
};
pub use output::{bucket_sum, counter};
pub use run::{
    Finished, Run, Tracer, run_command, run_in_own_mounts, run_tracer, tracer_bin, wait_for,
};

/// Whether the tests run in CI (CI=true), where a skip is a failure.
pub(crate) fn in_ci() -> bool {
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
