//! Bad input, privileges, tracefs and the shared command-line conventions.

use std::process::Command;

use tracer_tests::{require_tracing, run_command, run_tracer, tracer_bin};

#[test]
fn bad_intervals_are_one_line_errors() {
    for bad in ["0", "-1", "abc"] {
        let out = run_tracer(&["biolatency", bad]);
        out.assert_one_line_error("interval must be a positive whole number");
        assert_eq!(out.status.code(), Some(2));
    }
    run_tracer(&["biolatency", "1", "0"])
        .assert_one_line_error("count must be a positive whole number");
    run_tracer(&["biotop", "-r", "0"]).assert_one_line_error("biotop:");
    run_tracer(&["nosuchtool"]).assert_one_line_error("unrecognized subcommand");
}

#[test]
fn unknown_disk_pid_and_cgroup() {
    for tool in ["biolatency", "biosnoop", "biotop", "bitesize", "biopattern"] {
        run_tracer(&[tool, "-d", "nosuchdisk"]).assert_one_line_error("unknown disk: nosuchdisk");
    }
    for tool in ["biolatency", "biosnoop", "biotop", "bitesize"] {
        run_tracer(&[tool, "-p", "999999999"]).assert_one_line_error("no such process: 999999999");
    }
    run_tracer(&["biolatency", "-p", "abc"]).assert_one_line_error("invalid value 'abc'");
    run_tracer(&["biolatency", "-c", "/no/such/cgroup"]).assert_one_line_error("no such cgroup");
    run_tracer(&["biosnoop", "--min-latency", "-3"]).assert_one_line_error("--min-latency");
}

#[test]
fn not_root_is_a_clear_error() {
    require_tracing!();
    // Drop to nobody: no capabilities left.
    let out = run_command(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(tracer_bin())
            .arg("biolatency"),
    );
    out.assert_one_line_error("needs root (CAP_BPF and CAP_PERFMON)");
}

#[test]
fn tracefs_absent_and_unmountable_is_a_clear_error() {
    require_tracing!();
    // A private mount namespace without tracefs, and no CAP_SYS_ADMIN to mount
    // it (CAP_BPF and CAP_PERFMON remain, so loading would otherwise work).
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin -- {} biolatency",
        tracer_bin().display()
    );
    let out = run_command(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    out.assert_one_line_error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed",
    );
}

#[test]
fn tracefs_is_mounted_when_missing() {
    require_tracing!();
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; exec {} doctor",
        tracer_bin().display()
    );
    let out = run_command(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    out.assert_success();
    assert!(
        out.stdout.contains("was not mounted: mounted it now"),
        "{}",
        out.stdout
    );
}

#[test]
fn list_and_doctor() {
    require_tracing!();
    let out = run_tracer(&["list"]);
    out.assert_success();
    for tool in [
        "biolatency",
        "biosnoop (iosnoop)",
        "biotop",
        "bitesize",
        "biopattern",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(tool))
            .unwrap_or_else(|| panic!("{tool} missing:\n{}", out.stdout));
        assert!(line.contains(" yes "), "{line}");
    }
    let out = run_tracer(&["doctor", "--json"]);
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["privileges"], true);
    assert_eq!(v["btf"], true);
    let biolat = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "biolatency")
        .unwrap();
    // With BTF (CI requires it), the BTF-typed tracepoint.
    assert_eq!(biolat["hooks"][0]["hook"], "BTF tracepoint block_rq_issue");
}

#[test]
fn answers_to_tool_names_through_argv0() {
    let dir = std::env::temp_dir().join(format!("tracer-argv0-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("iosnoop");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(tracer_bin(), &link).unwrap();
    let out = run_command(Command::new(&link).arg("--help"));
    std::fs::remove_dir_all(&dir).unwrap();
    out.assert_success();
    assert!(out.stdout.contains("--min-latency"), "{}", out.stdout);
}

#[test]
fn sigterm_prints_the_final_result() {
    require_tracing!();
    let t = tracer_tests::Tracer::start(&["biolatency", "--json"]);
    let out = t.stop_with(libc::SIGTERM);
    out.assert_success();
    assert_eq!(out.json().len(), 1, "{}", out.stdout);
}

#[test]
fn every_tool_rejects_bad_intervals_and_pids() {
    let names = run_tracer(&["list", "--names"]);
    names.assert_success();
    for tool in names.stdout.split_whitespace() {
        run_tracer(&[tool, "0"]).assert_one_line_error("interval must be a positive whole number");
        run_tracer(&[tool, "abc"])
            .assert_one_line_error("interval must be a positive whole number");
        run_tracer(&[tool, "1", "-1"])
            .assert_one_line_error("count must be a positive whole number");
    }
    for tool in [
        "biolatency",
        "biosnoop",
        "biotop",
        "bitesize",
        "pagefaults",
        "faultlat",
        "faultsnoop",
        "kvmexits",
        "tcpconnlat",
    ] {
        run_tracer(&[tool, "-p", "999999999"]).assert_one_line_error("no such process: 999999999");
    }
    run_tracer(&["faultsnoop", "--min-latency", "-5"]).assert_one_line_error("--min-latency");
    run_tracer(&["faultlat", "-m", "-n"]).assert_one_line_error("cannot be used with");
}
