//! The tiny KVM guest that the kvmexits tests drive: it must be exact, halt
//! cleanly, run on a thread named like qemu's, and release everything.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{
    kvm::{
        GuestProgram, KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_MMIO, run_guest, run_guest_repeated,
        run_guest_with,
    },
    require_kvm, run_command,
};

/// One guest at a time, so the thread and fd checks see only their own guest.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn small_program_exits_exactly() {
    require_kvm!();
    let _serial = serial();
    let p = GuestProgram {
        outs: 100,
        mmio_writes: 10,
        cpuids: 100,
        rdmsrs: 100,
        wrmsrs: 100,
    };
    let run = run_guest(&p).unwrap();
    assert!(run.hlt);
    assert_eq!(run.io_exits, 100);
    // One exit per write is what KVM does (also kvm_pvm here); the contract
    // for the tools' tests is only "at least one".
    assert!(run.mmio_exits >= 10, "{run:?}");
    // CPUID, RDMSR and WRMSR are handled in the kernel: no exits to userspace.
    let expected = BTreeMap::from([
        (KVM_EXIT_IO, 100),
        (KVM_EXIT_HLT, 1),
        (KVM_EXIT_MMIO, run.mmio_exits),
    ]);
    assert_eq!(run.exit_counts, expected);
    assert_eq!(run.pid, std::process::id());
    assert_ne!(run.vcpu_tid, run.pid, "the vCPU must run on its own thread");
}

#[test]
fn zero_program_just_halts() {
    require_kvm!();
    let _serial = serial();
    let run = run_guest(&GuestProgram::default()).unwrap();
    assert!(run.hlt);
    assert_eq!((run.io_exits, run.mmio_exits), (0, 0));
    assert_eq!(run.exit_counts, BTreeMap::from([(KVM_EXIT_HLT, 1)]));
}

#[test]
fn counters_are_32_bit() {
    require_kvm!();
    let _serial = serial();
    // More than a 16-bit counter can hold.
    let p = GuestProgram {
        outs: 65_537,
        ..GuestProgram::default()
    };
    let run = run_guest(&p).unwrap();
    assert_eq!(run.io_exits, 65_537);
    assert_eq!(run.exit_counts[&KVM_EXIT_HLT], 1);
}

#[test]
fn repeat_reenters_the_same_vcpu() {
    require_kvm!();
    let _serial = serial();
    let p = GuestProgram {
        outs: 10,
        mmio_writes: 2,
        cpuids: 3,
        rdmsrs: 4,
        wrmsrs: 5,
    };
    let run = run_guest_repeated(&p, 5).unwrap();
    assert!(run.hlt);
    assert_eq!(run.io_exits, 50);
    assert!(run.mmio_exits >= 10, "{run:?}");
    assert_eq!(run.exit_counts[&KVM_EXIT_HLT], 5);
    assert!(run_guest_repeated(&p, 0).is_err());
}

/// Threads of this process named like the vCPU thread.
fn vcpu_named_threads() -> BTreeSet<u32> {
    let mut tids = BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "CPU 0/KVM" {
            tids.extend(
                entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok()),
            );
        }
    }
    tids
}

/// This process's open KVM VM and vCPU file descriptors.
fn kvm_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("anon_inode:kvm-"))
        .count()
}

#[test]
fn vcpu_thread_is_named_like_qemu_and_cleans_up() {
    require_kvm!();
    let _serial = serial();
    assert_eq!(kvm_fds(), 0);
    // The vCPU thread stops at its first I/O exit until the test has looked at
    // /proc: it is seen running by construction, however fast the guest is.
    let p = GuestProgram {
        outs: 10,
        ..GuestProgram::default()
    };
    let (at_exit, exited) = mpsc::channel();
    let (resume, resumed) = mpsc::channel::<()>();
    let guest = thread::spawn(move || {
        run_guest_with(&p, 1, move |n| {
            if n == 1 {
                at_exit.send(()).unwrap();
                resumed.recv().unwrap();
            }
        })
    });
    exited.recv().expect("the guest never made an I/O exit");
    let seen = vcpu_named_threads();
    let fds = kvm_fds();
    resume.send(()).unwrap();
    let run = guest.join().unwrap().unwrap();
    assert_eq!(
        seen,
        BTreeSet::from([run.vcpu_tid]),
        "one thread {} named \"CPU 0/KVM\" while running",
        run.vcpu_tid
    );
    assert_eq!(fds, 2, "one VM and one vCPU fd while running");
    assert_eq!(kvm_fds(), 0, "VM and vCPU fds must be closed");
    // A joined thread may linger in /proc briefly (join returns before the
    // kernel releases the task): wait for it to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !vcpu_named_threads().is_empty() {
        assert!(Instant::now() < deadline, "the vCPU thread must be gone");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn tiny_guest_cli() {
    let bin = env!("CARGO_BIN_EXE_tiny-guest");
    for (args, error) in [
        (
            &["--outs", "abc"][..],
            "--outs: \"abc\" is not a whole number",
        ),
        (&["--mmio", "-1"], "--mmio: \"-1\" is not a whole number"),
        (&["--cpuid"], "--cpuid needs a value"),
        (&["--repeat", "0"], "--repeat must be at least 1"),
        (&["--bogus", "1"], "unknown argument \"--bogus\""),
    ] {
        run_command(Command::new(bin).args(args)).assert_one_line_error(error);
    }

    require_kvm!();
    let _serial = serial();
    let out = run_command(Command::new(bin).args([
        "--outs", "7", "--mmio", "3", "--cpuid", "2", "--rdmsr", "2", "--wrmsr", "2", "--repeat",
        "2",
    ]));
    out.assert_success();
    let json = out.json();
    assert_eq!(json.len(), 1, "{}", out.stdout);
    let j = &json[0];
    assert_eq!(j["io_exits"], 14);
    assert_eq!(j["exit_counts"]["2"], 14);
    assert_eq!(j["exit_counts"]["5"], 2);
    assert!(j["mmio_exits"].as_u64().unwrap() >= 6);
    assert_eq!(j["hlt"], true);
    assert_eq!(j["repeat"], 2);
    assert!(j["vcpu_tid"].as_u64().unwrap() > 0 && j["pid"].as_u64().unwrap() > 0);
}
