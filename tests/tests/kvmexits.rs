//! kvmexits against the real kernel: a tiny real-mode KVM guest run by the test
//! process itself, counted exit by exit.

use std::sync::Mutex;

use serde_json::Value;
use tracer_tests::{
    Tracer, bucket_sum,
    kvm::{GuestProgram, GuestRun, hold_vm, run_guest},
    own_pid, require_kvm, require_tracing, run_tracer,
};

const PROGRAM: GuestProgram = GuestProgram {
    outs: 1000,
    mmio_writes: 100,
    cpuids: 500,
    rdmsrs: 300,
    wrmsrs: 200,
};

/// Guests run in this process, which the tool traces by pid: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the guest under `kvmexits -p <this process> <args>`; returns the records
/// and what the guest loop itself saw.
fn traced_guest(args: &[&str]) -> (Vec<Value>, GuestRun, String) {
    let _vm = hold_vm().expect("creating a VM");
    let pid = own_pid().to_string();
    let mut argv = vec!["kvmexits", "-p", &pid, "--json", "-v"];
    argv.extend(args);
    let t = Tracer::start(&argv);
    let run = run_guest(&PROGRAM).expect("guest run");
    assert!(run.hlt);
    let out = t.stop();
    out.assert_success();
    (out.json(), run, out.stderr)
}

fn table(recs: &[Value]) -> &Value {
    recs.iter()
        .find(|r| r.get("vcpus").is_some())
        .expect("a table record")
}

fn reason(t: &Value, name: &str) -> u64 {
    t["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == name)
        .map_or(0, |r| r["count"].as_u64().unwrap())
}

/// `kvmexits -p <pid> --json -v --latency --backend generic`.
fn generic_latency_argv(pid: &str) -> [&str; 8] {
    [
        "kvmexits",
        "-p",
        pid,
        "--json",
        "-v",
        "--latency",
        "--backend",
        "generic",
    ]
}

/// The latency histogram of one reason.
fn latency<'a>(recs: &'a [Value], reason: &str) -> Option<&'a Value> {
    recs.iter()
        .find(|r| r["type"] == "latency" && r["reason"] == reason)
}

#[test]
fn counts_every_exit_of_the_guest() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (recs, run, stderr) = traced_guest(&[]);
    let t = table(&recs);
    let rows = t["vcpus"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one vCPU ran: {t}");
    let row = &rows[0];
    assert_eq!(row["pid"], own_pid());
    assert_eq!(
        row["vcpu"], "0",
        "the vCPU thread is named 'CPU 0/KVM': {row}"
    );
    let p = PROGRAM;
    assert_eq!(row["io"], p.outs as u64, "{t}");
    assert_eq!(row["cpuid"], p.cpuids as u64, "{t}");
    assert_eq!(row["halt"], 1, "{t}");
    match t["backend"].as_str().unwrap() {
        "generic" => {
            // MMIO is not always one exit per write; it must match what the
            // guest loop saw come back from KVM_RUN.
            assert!(run.mmio_exits >= p.mmio_writes as u64);
            assert_eq!(row["mmio"], run.mmio_exits, "{t}");
            // kvm_msr fires for every rdmsr and wrmsr the kernel handles.
            assert_eq!(row["msr"], (p.rdmsrs + p.wrmsrs) as u64, "{t}");
            assert_eq!(reason(t, "IO out"), p.outs as u64);
            assert_eq!(reason(t, "RDMSR"), p.rdmsrs as u64);
            assert_eq!(reason(t, "WRMSR"), p.wrmsrs as u64);
            assert_eq!(reason(t, "CPUID"), p.cpuids as u64);
            assert_eq!(reason(t, "to VMM: HLT"), 1);
            assert!(stderr.contains("backend: generic"), "{stderr}");
        }
        "exit" => {
            // Hardware exit reasons (SVM under qemu): MMIO to unbacked memory is
            // a nested page fault.
            assert!(
                row["mmio"].as_u64().unwrap() + row["npf"].as_u64().unwrap()
                    >= p.mmio_writes as u64,
                "{t}"
            );
            assert!(
                reason(t, "io") == p.outs as u64 || reason(t, "IO_INSTRUCTION") == p.outs as u64,
                "{t}"
            );
        }
        other => panic!("backend {other}"),
    }
    let total: u64 = t["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(row["exits"], total);
}

#[test]
fn latency_histograms_count_the_timed_exits() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (recs, run, _) = traced_guest(&["--latency"]);
    let hist = |name: &str| latency(&recs, name).cloned();
    match table(&recs)["backend"].as_str().unwrap() {
        "generic" => {
            // Exits to the VMM are timed until its next KVM_RUN; the final HLT
            // never re-enters.
            let io = hist("to VMM: IO").unwrap_or_else(|| panic!("{recs:?}"));
            assert_eq!(io["count"], PROGRAM.outs as u64);
            assert_eq!(bucket_sum(&io), PROGRAM.outs as u64);
            let mmio = hist("to VMM: MMIO").unwrap();
            assert_eq!(mmio["count"], run.mmio_exits);
            assert!(io["p50"].as_u64().unwrap() <= io["max"].as_u64().unwrap());
        }
        _ => {
            let cpuid = hist("cpuid")
                .or_else(|| hist("CPUID"))
                .unwrap_or_else(|| panic!("{recs:?}"));
            assert_eq!(cpuid["count"], PROGRAM.cpuids as u64);
        }
    }
}

#[test]
fn vcpu_filter() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (recs, _, _) = traced_guest(&["--vcpu", "0"]);
    assert_eq!(table(&recs)["vcpus"][0]["io"], PROGRAM.outs as u64);

    let _vm = hold_vm().unwrap();
    let pid = own_pid().to_string();
    run_tracer(&["kvmexits", "-p", &pid, "--vcpu", "3"]).assert_one_line_error("has no vCPU 3");
}

#[test]
fn every_backend_loads_and_attaches() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for backend in ["exit", "generic"] {
        let (recs, _, stderr) = traced_guest(&["--backend", backend, "--latency"]);
        assert_eq!(table(&recs)["backend"], backend);
        let hooks: Vec<&str> = stderr.lines().filter(|l| l.contains(" hook ")).collect();
        // Raw where the kernel's BTF has KVM's prototypes, else classic.
        let has = |tp: &str| {
            hooks.iter().any(|h| {
                h.contains(&format!("raw tracepoint {tp} "))
                    || h.contains(&format!("tracepoint kvm:{tp} "))
            })
        };
        if backend == "exit" {
            assert!(
                hooks.iter().any(|h| h.contains("tracepoint kvm:kvm_exit ")),
                "kvm_exit's reason is only in its record: {stderr}"
            );
            assert!(has("kvm_entry"), "{stderr}");
        } else {
            for tp in [
                "kvm_pio",
                "kvm_mmio",
                "kvm_msr",
                "kvm_cpuid",
                "kvm_userspace_exit",
            ] {
                assert!(has(tp), "{tp}: {stderr}");
            }
        }
    }
}

#[test]
fn bad_input() {
    require_tracing!();
    run_tracer(&["kvmexits", "-p", "999999999"])
        .assert_one_line_error("no such process: 999999999");
    run_tracer(&["kvmexits", "-p", "1"]).assert_one_line_error("process 1 is not a KVM VM");
    run_tracer(&["kvmexits", "0"])
        .assert_one_line_error("interval must be a positive whole number");
    run_tracer(&["kvmexits", "--top", "0"]).assert_one_line_error("kvmexits:");
    run_tracer(&["kvmexits", "--backend", "magic"]).assert_one_line_error("invalid value 'magic'");
}

#[test]
fn raw_syscalls_fallback_times_the_same_exits() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Kernels without syscall tracepoints per syscall (CONFIG_FTRACE_SYSCALLS off)
    // time KVM_RUN with raw_syscalls:sys_enter instead: force that path.
    let _vm = hold_vm().expect("creating a VM");
    let pid = own_pid().to_string();
    let t = Tracer::start_with_env(
        &generic_latency_argv(&pid),
        &[("TRACER_SKIP_HOOKS", "raw:kvm_fpu,syscalls:sys_enter_ioctl")],
    );
    let run = run_guest(&PROGRAM).expect("guest run");
    let out = t.stop();
    out.assert_success();
    assert!(
        out.stderr
            .contains("tracepoint raw_syscalls:sys_enter -> kvm_run_enter (fallback"),
        "{}",
        out.stderr
    );
    let recs = out.json();
    let io = latency(&recs, "to VMM: IO").expect("IO latency");
    assert_eq!(io["count"], PROGRAM.outs as u64);
    let mmio = latency(&recs, "to VMM: MMIO").expect("MMIO latency");
    assert_eq!(mmio["count"], run.mmio_exits);
}

/// The raw programs, every hook of the generic backend: KVM's tracepoint
/// prototypes are in the kernel's BTF when KVM is built in (a module's are in
/// its own BTF, which tracer does not read).
const RAW_HOOKS: &[&str] = &[
    "kvm_userspace_exit",
    "kvm_pio",
    "kvm_mmio",
    "kvm_msr",
    "kvm_cpuid",
    "kvm_hypercall",
    "kvm_vcpu_wakeup",
    "kvm_page_fault",
    "kvm_inj_virq",
    "kvm_fpu",
];

#[test]
fn raw_and_classic_hooks_count_and_time_the_same_exits() {
    require_tracing!();
    require_kvm!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Built in: not a loaded module.
    let builtin = std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        && !std::fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("kvm "));
    let _vm = hold_vm().expect("creating a VM");
    let pid = own_pid().to_string();
    let argv = generic_latency_argv(&pid);
    let skip_raw: Vec<String> = RAW_HOOKS.iter().map(|h| format!("raw:{h}")).collect();
    let skip_raw = skip_raw.join(",");
    // Both watch the same guest run.
    let raw = Tracer::start(&argv);
    let classic = Tracer::start_with_env(&argv, &[("TRACER_SKIP_HOOKS", &skip_raw)]);
    let run = run_guest(&PROGRAM).expect("guest run");
    let (raw, classic) = (raw.stop(), classic.stop());
    raw.assert_success();
    classic.assert_success();
    let hooks = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(" hook "))
            .map(String::from)
            .collect()
    };
    assert!(
        !hooks(&classic.stderr).iter().any(|h| h.contains("_raw (")),
        "{}",
        classic.stderr
    );
    for tp in RAW_HOOKS {
        if builtin {
            assert!(
                hooks(&raw.stderr)
                    .iter()
                    .any(|h| h.contains(&format!("raw tracepoint {tp} "))
                        && h.contains("(preferred)")),
                "KVM is built in, so {tp} is raw: {}",
                raw.stderr
            );
        }
    }
    let (raw, classic) = (raw.json(), classic.json());
    let row = |recs: &[Value]| table(recs)["vcpus"][0].clone();
    let (r, c) = (row(&raw), row(&classic));
    for column in ["exits", "io", "mmio", "msr", "cpuid", "halt"] {
        assert_eq!(r[column], c[column], "{column}: raw {r} classic {c}");
    }
    assert_eq!(r["io"], PROGRAM.outs as u64);
    assert_eq!(r["mmio"], run.mmio_exits);
    for recs in [&raw, &classic] {
        let timed = |name: &str| {
            latency(recs, name)
                .map(|h| h["count"].clone())
                .unwrap_or_else(|| panic!("{name}: {recs:?}"))
        };
        assert_eq!(timed("to VMM: IO"), PROGRAM.outs as u64);
        assert_eq!(timed("to VMM: MMIO"), run.mmio_exits);
    }
}
