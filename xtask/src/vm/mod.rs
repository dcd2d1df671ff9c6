//! `cargo xtask vm-test --kernel 5.10|6.1|6.12|all`: the integration tests inside
//! Debian kernels booted under qemu (software emulation, `-cpu max`, which
//! emulates SVM so that `kvm_amd` loads and `kvm:kvm_exit` fires) with virtme-ng.
//!
//! TCG runs on one host thread (`-accel tcg,thread=single`, the default of
//! `--qemu-opts`). With qemu's default of one thread per vCPU, the guest kernel
//! sometimes executes an int3 that text_poke_bp() has already removed while it
//! flips a static key on the other vCPU (the perf software-event key in
//! handle_mm_fault when a tool attaches page-fault events, the preempt-notifier
//! key in __schedule when a test creates a VM): an "Oops: int3" panic on 6.12,
//! an endless int3 retry on 6.1 (a soft lockup; a silent hang at 100% CPU in
//! kvmexits' tests was most likely the same).
//! That happened 5 times in about 10 guest runs with one thread per vCPU (in
//! faultsnoop's and kvmexits' tests) and never with one thread (12 rounds of
//! kvmexits' tests in a row, whose second round had crashed 6.12 with one thread
//! per vCPU); on this 2-core machine the single thread is not slower.
//!
//! The guest sees this machine's root filesystem read-only (9p), so the
//! host-built binaries run as they are. They are copied to target/vm-test/stage
//! first (the release binary may be rebuilt while a guest runs), and from there to
//! a tmpfs inside the guest: run from 9p, the helpers' own code pages come in as
//! major faults and upset the exact fault counts. A generated script
//! (target/vm-test/<kernel>/guest-N/guest.sh, its body xtask/src/vm/guest.sh; each
//! kernel's binaries are split between two guests, two running at a time) loads the modules the tests need, records
//! `tracer doctor --json` and kvmexits' backend, and runs each test binary with
//! TRACER_BIN and CI=true, framing everything with `@@VMTEST` marker lines that
//! the host parses from the console (with `--verbose`, vng shows the script's
//! output and the kernel's on the same console, its stderr). Only kernel
//! warnings and worse reach the console while the script runs (`dmesg -n 5`):
//! they are kept with the binary that was running, and the dmesg of a failing
//! binary is printed after it. A guest whose kernel
//! locks up (or a binary that outlives its limit) is stopped, and a new guest runs
//! the binaries that were left.
//!
//! Kernels are fetched with `apt-get download` (the newest `linux-image-<series>`
//! for amd64 that apt offers), extracted with `dpkg-deb -x` and cached under
//! target/vm-kernels. virtme-ng takes the modules from the extracted tree
//! (`<tree>/lib/modules/<release>`, found from the kernel image's path and linked
//! to /lib/modules/<release> inside the guest), so nothing is installed on the host.
//!
//! Results: a table per kernel (test binary, the hooks each tool chose on that
//! kernel, pass/fail/not offered, time), printed and written to
//! target/vm-test-<kernel>.md, with an excerpt of every failure; the full console
//! is target/vm-test/<kernel>/guest-N/console*.log and each binary's output
//! target/vm-test/<kernel>/<binary>.log.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{kernel_release, workspace_root};

mod guest;
mod kernel;
mod results;
mod stage;

use guest::*;
use kernel::*;
use results::*;
use stage::*;

/// The kernel series `--kernel all` runs.
pub const ALL: &[&str] = &["5.10", "6.1", "6.12"];

/// One guest's work: the kernel (an index into the series), which of its
/// guests this is, and the test binaries it runs.
type Job = (usize, usize, Vec<(String, PathBuf)>);

/// Roughly how long each test binary runs in a guest, in units of 10 s (5.10
/// CI run on c28aed4: cli 199 s, plot 92, record 80, tcpretrans 49, exporter
/// 45, tcpdrop 31, biolatency 26, report 25, biosnoop 22, tcpconnlat 21,
/// signals 18; the rest 1-13 s): only to balance the guests.
fn weight(binary: &str) -> u32 {
    match binary {
        "cli" => 20,
        "plot" => 9,
        "record" => 8,
        "tcpretrans" | "exporter" => 5,
        "tcpdrop" | "biolatency" | "report" => 3,
        "biosnoop" | "tcpconnlat" | "signals" => 2,
        _ => 1,
    }
}

/// Splits the binaries into `n` lists of about equal weight (the heaviest
/// first, each to the lightest list), each in the stage's order.
fn split(tests: &[(String, PathBuf)], n: usize) -> Vec<Vec<(String, PathBuf)>> {
    let mut by_weight: Vec<usize> = (0..tests.len()).collect();
    by_weight.sort_by_key(|&i| std::cmp::Reverse(weight(&tests[i].0)));
    let mut lists: Vec<(u32, Vec<usize>)> = vec![(0, Vec::new()); n];
    for i in by_weight {
        let lightest = lists.iter_mut().min_by_key(|l| l.0).expect("n > 0");
        lightest.0 += weight(&tests[i].0);
        lightest.1.push(i);
    }
    lists
        .into_iter()
        .map(|(_, mut ids)| {
            ids.sort();
            ids.into_iter().map(|i| tests[i].clone()).collect()
        })
        .collect()
}

/// Guests each kernel's test binaries are split between, and guests run at
/// once (one host core each).
const GUESTS_PER_KERNEL: usize = 2;
const GUESTS_AT_ONCE: usize = 2;

const MARK: &str = "@@VMTEST";

/// Modules the tests need, loaded in the guest when not built in.
const MODULES: &[&str] = &[
    "loop",
    "ext4",
    "nf_tables",
    "nft_numgen",
    "nft_ct",
    "veth",
    "kvm_amd",
    "fuse",
];

pub struct Options {
    /// Only these test binaries (by name, e.g. `kvmexits`).
    pub only: Vec<String>,
    /// `--test-threads` for every test binary (libtest's default: the guest's CPUs).
    pub test_threads: Option<usize>,
    /// Per test binary, inside the guest.
    pub binary_timeout: Duration,
    /// More qemu options, after `-cpu max`.
    pub qemu_opts: String,
    /// Extra arguments for every test binary (e.g. a test name filter).
    pub test_args: Vec<String>,
}

fn step(what: &str) {
    eprintln!("xtask vm-test: {what}");
}

/// Runs the tests on each kernel of `kernels` ("all" for every series).
pub fn run(kernels: &[&str], bin: &Path, tests: &[PathBuf], opts: &Options) -> Result<()> {
    let series: Vec<&str> = if kernels == ["all"] {
        ALL.to_vec()
    } else {
        kernels.to_vec()
    };
    let stage = stage_binaries(bin, tests, &opts.only)?;
    let kernels: Vec<Kernel> = series
        .iter()
        .map(|s| ensure_kernel(s))
        .collect::<Result<_>>()?;
    // Each kernel's binaries are split between two guests (alternately, in
    // their order), and two guests run at a time, each on one host thread
    // (TCG single-threaded): on 2 cores the cores stay busy until the last
    // binary, whichever kernel finishes first. The slowest kernel (the oldest)
    // goes first.
    let mut jobs: VecDeque<Job> = VecDeque::new();
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by_key(|&i| version_key(series[i]));
    for i in order {
        for (part, tests) in split(&stage.tests, GUESTS_PER_KERNEL)
            .into_iter()
            .enumerate()
        {
            if !tests.is_empty() {
                jobs.push_back((i, part, tests));
            }
        }
    }
    for s in &series {
        let work = workspace_root().join("target/vm-test").join(s);
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
        }
    }
    let jobs = std::sync::Mutex::new(jobs);
    let done: std::sync::Mutex<Vec<(usize, Result<GuestRun>)>> = Default::default();
    std::thread::scope(|scope| {
        for _ in 0..GUESTS_AT_ONCE {
            scope.spawn(|| {
                loop {
                    let Some((i, part, tests)) = jobs.lock().unwrap().pop_front() else {
                        break;
                    };
                    let r = boot_and_test(series[i], &kernels[i], &stage, &tests, opts, part);
                    done.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut runs: Vec<Option<GuestRun>> = (0..series.len()).map(|_| None).collect();
    for (i, r) in done.into_inner().unwrap() {
        let r = r?;
        runs[i] = Some(match runs[i].take() {
            Some(prev) => prev.merge(r),
            None => r,
        });
    }
    let runs: Vec<GuestRun> = runs
        .into_iter()
        .map(|r| {
            let mut r = r.unwrap_or_default();
            let position = |name: &str| stage.tests.iter().position(|(n, _)| n == name);
            r.bins.sort_by_key(|b| position(&b.name));
            r
        })
        .collect();
    let mut outcomes = Vec::new();
    for ((s, k), run) in series.iter().zip(&kernels).zip(runs) {
        let report = report(s, k, &run, &stage);
        println!("\n{report}");
        let md = workspace_root().join(format!("target/vm-test-{s}.md"));
        fs::write(&md, &report).with_context(|| format!("writing {}", md.display()))?;
        step(&format!("{s}: report written to {}", md.display()));
        if !run.ok() {
            show_failures(s, &run);
        }
        outcomes.push((s.to_string(), run));
    }
    if outcomes.len() > 1 {
        println!("\n{}", matrix(&outcomes, &stage));
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, r)| !r.ok())
        .map(|(s, r)| format!("{s} ({})", r.verdict()))
        .collect();
    for (s, r) in &outcomes {
        step(&format!(
            "{s}: {} in {} s (boot {} s)",
            r.verdict(),
            r.wall.as_secs(),
            r.boot.map_or("?".into(), |b| b.as_secs().to_string())
        ));
    }
    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_balances_by_weight_and_keeps_the_order() {
        let names = [
            "biolatency",
            "cli",
            "exporter",
            "plot",
            "record",
            "tcpretrans",
            "tcprtt",
        ];
        let tests: Vec<(String, PathBuf)> = names
            .iter()
            .map(|n| (n.to_string(), PathBuf::from(n)))
            .collect();
        let lists = split(&tests, 2);
        let weights: Vec<u32> = lists
            .iter()
            .map(|l| l.iter().map(|(n, _)| weight(n)).sum())
            .collect();
        assert_eq!(weights.iter().sum::<u32>(), 51);
        assert!(weights[0].abs_diff(weights[1]) <= 2, "{weights:?}");
        for l in &lists {
            let order: Vec<usize> = l
                .iter()
                .map(|(n, _)| names.iter().position(|x| x == n).unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(lists.iter().map(Vec::len).sum::<usize>(), names.len());
    }
}
