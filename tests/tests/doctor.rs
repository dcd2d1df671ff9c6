//! `tracer doctor`, `tracer list` and a tool without the privileges tracing
//! needs: they say what is missing and what would grant it, never that the
//! kernel lacks its tracepoints.

use std::{os::unix::fs::PermissionsExt as _, sync::Mutex};

use tracer_tests::{Finished, ScratchDir, require_tracing, run_in_own_mounts, tracer_bin};

const TRACEFS: &str = "/sys/kernel/tracing";

/// One run at a time: each sets the mode of tracefs' root, which all share.
static SERIAL: Mutex<()> = Mutex::new(());

/// What tracer says when tracefs' root (mode 0700, owned by root) is closed
/// to it.
fn denied() -> String {
    format!(
        "permission denied reading {TRACEFS} (mode 0700): run as root, or add \
         CAP_DAC_READ_SEARCH to CAP_BPF and CAP_PERFMON, or let a group of yours read it: \
         mount -o remount,mode=0750,gid=GROUP {TRACEFS}"
    )
}

/// Runs `tracer ARGS` as nobody (uid and gid 65534, no groups) with only the
/// capabilities `caps` (setpriv's names, e.g. ",+bpf,+perfmon"), in a mount
/// namespace of its own with tracefs (magic 0x74726163) mounted at
/// /sys/kernel/tracing (the host's may be elsewhere or nowhere) and its root
/// at the default mode 0700, put back as it was after.
fn as_nobody(caps: &str, args: &[&str]) -> Finished {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A copy nobody may run wherever the tests' binary lives.
    let dir = ScratchDir::new("nobody");
    let bin = dir.path.join("tracer");
    std::fs::copy(tracer_bin(), &bin).expect("copying the tracer binary");
    for path in [&dir.path, &bin] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let caps = format!("-all{caps}");
    let script = format!(
        "[ $(stat -f -c %t {TRACEFS}) = 74726163 ] || mount -t tracefs nodev {TRACEFS} || exit 99; \
         mode=$(stat -c %a {TRACEFS}) && chmod 700 {TRACEFS} || exit 99; \
         setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps={caps} \
         --ambient-caps={caps} --bounding-set={caps} -- {} {}; \
         rc=$?; chmod $mode {TRACEFS}; exit $rc",
        bin.display(),
        args.join(" ")
    );
    run_in_own_mounts(&script)
}

#[track_caller]
fn assert_has_line(out: &Finished, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l == line),
        "no line {line:?} in:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// The RUNS column of `tracer list` for `tool`.
#[track_caller]
fn runs(out: &Finished, tool: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(tool)).then(|| cols.next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("{tool} missing:\n{}{}", out.stdout, out.stderr))
}

#[test]
fn nobody_is_told_permission_is_denied() {
    require_tracing!();
    let out = as_nobody("", &["doctor"]);
    out.assert_success();
    assert_has_line(
        &out,
        "privileges  NO: run as root (CAP_BPF and CAP_PERFMON)",
    );
    assert_has_line(&out, &format!("tracefs     NO: {}", denied()));
    // Whether the kernel has the hooks is unknown, and said so.
    assert_has_line(&out, "biolatency (unknown: cannot read tracefs)");
    assert_has_line(&out, "  issue     unknown: cannot read tracefs");
    assert!(
        !out.stdout.contains("not in this kernel") && !out.stdout.contains("has no hook"),
        "{}",
        out.stdout
    );

    let out = as_nobody("", &["list"]);
    out.assert_success();
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "list: cannot tell which tracepoints this kernel has (RUNS ?): {}",
            denied()
        )
    );
    assert_eq!(runs(&out, "biolatency"), "?");
    // Software perf events need no tracefs.
    assert_eq!(runs(&out, "pagefaults"), "yes");
}

#[test]
fn bpf_and_perfmon_alone_do_not_open_tracefs() {
    require_tracing!();
    let caps = ",+bpf,+perfmon";
    let out = as_nobody(caps, &["doctor"]);
    out.assert_success();
    assert_has_line(&out, "privileges  yes (CAP_BPF + CAP_PERFMON)");
    assert_has_line(&out, &format!("tracefs     NO: {}", denied()));

    let out = as_nobody(caps, &["biolatency", "1", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end(), format!("biolatency: {}", denied()));

    // What the message says grants it does.
    let out = as_nobody(",+bpf,+perfmon,+dac_read_search", &["list"]);
    out.assert_success();
    assert_eq!(out.stderr, "");
    assert_eq!(runs(&out, "biolatency"), "yes");
}
