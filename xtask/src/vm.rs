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
//! (target/vm-test/<kernel>/guest-N/guest.sh: each kernel's binaries are split
//! between two guests, two running at a time) loads the modules the tests need, records
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

/// The kernel series `--kernel all` runs.
pub const ALL: &[&str] = &["5.10", "6.1", "6.12"];

/// One guest's work: the kernel (an index into the series), which of its
/// guests this is, and the test binaries it runs.
type Job = (usize, usize, Vec<(String, PathBuf)>);

/// Roughly how long each test binary runs in a guest, relative to the others
/// (5.10 CI run: record 123 s, plot 82, exporter 77, tcpretrans 71, cli 51,
/// tcpdrop 41, tcpconnlat 40; the rest 2-19 s): only to balance the guests.
fn weight(binary: &str) -> u32 {
    match binary {
        "record" => 12,
        "plot" | "exporter" => 8,
        "tcpretrans" => 7,
        "cli" => 5,
        "tcpdrop" | "tcpconnlat" => 4,
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

// ---------------------------------------------------------------------------
// Binaries

struct Stage {
    /// target/vm-test/stage: tracer, the helpers, deps/<test binaries>.
    dir: PathBuf,
    /// (name, staged path), in the order they run.
    tests: Vec<(String, PathBuf)>,
}

/// `biolatency-0123456789abcdef` -> `biolatency`.
fn test_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => file,
    }
}

/// Copies the tracer binary, the test executables and their helper binaries
/// (found next to the test executables' deps/ directory) to target/vm-test/stage,
/// keeping that layout.
fn stage_binaries(bin: &Path, tests: &[PathBuf], only: &[String]) -> Result<Stage> {
    let dir = workspace_root().join("target/vm-test/stage");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("deps"))?;
    let copy = |from: &Path, to: &Path| {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))
    };
    copy(bin, &dir.join("tracer"))?;
    let mut staged = Vec::new();
    let mut helpers_from = None;
    for t in tests {
        let name = test_name(t);
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let to = dir.join("deps").join(t.file_name().context("test path")?);
        copy(t, &to)?;
        staged.push((name, to));
        helpers_from = t.parent().and_then(Path::parent).map(Path::to_path_buf);
    }
    if staged.is_empty() {
        let names: Vec<String> = tests.iter().map(|t| test_name(t)).collect();
        bail!(
            "no test binary selected (--only {}); there are: {}",
            only.join(","),
            names.join(", ")
        );
    }
    staged.sort();
    if let Some(from) = helpers_from {
        // The helper binaries of tracer-tests (src/bin): executables next to deps/.
        for entry in fs::read_dir(&from)?.flatten() {
            let p = entry.path();
            let is_exec = fs::metadata(&p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            });
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_exec && name != "tracer" && !name.contains('.') {
                copy(&p, &dir.join(&name))?;
            }
        }
    }
    step(&format!(
        "staged tracer and {} test binar{} in {}",
        staged.len(),
        if staged.len() == 1 { "y" } else { "ies" },
        dir.display()
    ));
    Ok(Stage { dir, tests: staged })
}

// ---------------------------------------------------------------------------
// Kernels

struct Kernel {
    package: String,
    release: String,
    vmlinuz: PathBuf,
}

/// The numbers in a package name, for ordering versions (6.12.9 < 6.12.117).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// Whether `pkg` is the generic amd64 image of `series`: linux-image-6.1.0-56-amd64,
/// linux-image-6.12.117+deb12-amd64; not -cloud, -rt, -unsigned or -dbg.
fn is_series_image(pkg: &str, series: &str) -> bool {
    let Some(rest) = pkg.strip_prefix("linux-image-") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(series) else {
        return false;
    };
    let Some(mid) = rest.strip_suffix("-amd64") else {
        return false;
    };
    // 6.1: ".0-56"; 6.12: ".117+deb12". The ABI part after ".0-" has no dash.
    let mid = mid.strip_prefix(".0-").or_else(|| mid.strip_prefix('.'));
    mid.is_some_and(|m| {
        m.starts_with(|c: char| c.is_ascii_digit()) && !m.contains('-') && !m.contains("dbg")
    })
}

/// Debian releases other than the host's whose kernels vm-test boots, by series.
const OTHER_RELEASES: &[(&str, &str)] = &[("5.10", "bullseye")];

/// apt options for `series`: none for the host's own release (6.1, 6.12 are in
/// bookworm); for an older release, a sources list and apt state of its own
/// under target/vm-kernels, so that the host's apt configuration is never
/// touched. Uses the mirror the host's sources already name.
fn apt_options(series: &str) -> Result<Vec<String>> {
    let Some((_, release)) = OTHER_RELEASES.iter().find(|(s, _)| *s == series) else {
        return Ok(Vec::new());
    };
    let dir = workspace_root().join(format!("target/vm-kernels/apt-{release}"));
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let mirror = host_mirror();
    let list = dir.join("sources.list");
    let text = format!(
        "deb {mirror} {release} main\ndeb {security} {release}-security main\n",
        security = mirror.replace("/debian", "/debian-security")
    );
    if fs::read_to_string(&list).ok().as_deref() != Some(text.as_str()) {
        fs::write(&list, text)?;
    }
    let p = |k: &str, v: &Path| format!("{k}={}", v.display());
    Ok(vec![
        "-o".into(),
        p("Dir::Etc::sourcelist", &list),
        "-o".into(),
        "Dir::Etc::sourceparts=-".into(),
        "-o".into(),
        p("Dir::State::Lists", &dir.join("lists")),
        "-o".into(),
        p("Dir::Cache", &dir.join("cache")),
    ])
}

/// The Debian mirror of the host's apt sources (deb822 or one-line format).
fn host_mirror() -> String {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        texts.extend(
            dir.flatten()
                .filter_map(|e| fs::read_to_string(e.path()).ok()),
        );
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("URIs:").map(str::trim).or_else(|| {
                l.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().find(|w| w.contains("://")))
            })
        })
        .find(|u| u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

fn apt_candidates(series: &str, options: &[String]) -> Vec<String> {
    let out = Command::new("apt-cache")
        .args(options)
        .args(["pkgnames", "linux-image-"])
        .output();
    let mut names: Vec<String> = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter(|p| is_series_image(p, series))
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names
}

/// The extracted kernel image in `tree`, if extraction finished.
fn extracted(tree: &Path) -> Option<(String, PathBuf)> {
    let entries = fs::read_dir(tree.join("boot")).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Some((release.to_string(), e.path()));
        }
    }
    None
}

/// The newest Debian kernel of `series`, downloaded and extracted once under
/// target/vm-kernels (reused as long as apt offers nothing newer).
fn ensure_kernel(series: &str) -> Result<Kernel> {
    let dir = workspace_root().join("target/vm-kernels");
    fs::create_dir_all(&dir)?;
    let options = apt_options(series)?;
    let mut names = apt_candidates(series, &options);
    if names.is_empty() {
        step("no package lists with kernels yet: apt-get update");
        let _ = Command::new("apt-get")
            .args(&options)
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        names = apt_candidates(series, &options);
    }
    let package = match names.last() {
        Some(p) => p.clone(),
        None => {
            // Offline: any kernel of this series cached before.
            let mut cached: Vec<String> = fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_series_image(n, series) && extracted(&dir.join(n)).is_some())
                .collect();
            cached.sort_by_key(|n| version_key(n));
            match cached.pop() {
                Some(p) => p,
                None => bail!(
                    "apt offers no linux-image-{series}*-amd64 (checked `apt-cache pkgnames linux-image-`); \
                     known series: {}",
                    ALL.join(", ")
                ),
            }
        }
    };
    let tree = dir.join(&package);
    if extracted(&tree).is_none() {
        let deb = fs::read_dir(&dir)?.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .is_some_and(|f| f.starts_with(&format!("{package}_")) && f.ends_with(".deb"))
        });
        let deb = match deb {
            Some(d) => {
                step(&format!("{series}: {package}: cached {}", d.display()));
                d
            }
            None => {
                step(&format!(
                    "{series}: downloading {package} (apt-get download) into {}",
                    dir.display()
                ));
                crate::run(
                    Command::new("apt-get")
                        .args(&options)
                        .arg("download")
                        .arg(&package)
                        .current_dir(&dir),
                )
                .with_context(|| format!("apt-get download {package}"))?;
                fs::read_dir(&dir)?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .is_some_and(|f| {
                                f.starts_with(&format!("{package}_")) && f.ends_with(".deb")
                            })
                    })
                    .context("apt-get download left no .deb")?
            }
        };
        step(&format!(
            "{series}: extracting {} (dpkg-deb -x)",
            deb.display()
        ));
        let partial = dir.join(format!("{package}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &tree)?;
        // An older kernel of this series, superseded: its tree and .deb go.
        for e in fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pkg = name.split('_').next().unwrap_or("");
            if pkg != package && is_series_image(pkg, series) {
                step(&format!("{series}: removing the superseded {name}"));
                let p = e.path();
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
    }
    let (release, vmlinuz) =
        extracted(&tree).with_context(|| format!("no boot/vmlinuz-* in {}", tree.display()))?;
    // Debian's packages leave modules.dep to their postinst; the guest's modprobe
    // needs it (virtme-ng would run depmod on every boot otherwise).
    let moddir = tree.join("lib/modules").join(&release);
    if !moddir.join("modules.dep").exists() {
        step(&format!("{series}: depmod for {}", moddir.display()));
        crate::run(
            Command::new("depmod")
                .arg("-a")
                .arg("-b")
                .arg(&tree)
                .arg(&release),
        )?;
    }
    step(&format!(
        "{series}: kernel {release} ({package}), modules from {}",
        moddir.display()
    ));
    Ok(Kernel {
        package,
        release,
        vmlinuz,
    })
}

// ---------------------------------------------------------------------------
// The guest

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script a guest runs: setup, then `tests` (name, path) one binary at a time.
fn guest_script(stage: &Stage, tests: &[(String, PathBuf)], opts: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"#!/bin/bash
# Generated by `cargo xtask vm-test`: runs inside the guest, as root.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
M={MARK}
echo "$M START $(uname -r)"
# Only warnings and worse on the console (lockups, oopses, WARNs and their
# traces), not the informational chatter (loop devices, ext4 mounts).
dmesg -n 5 2>/dev/null
grep -q ' /sys/kernel/tracing tracefs ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing
grep -q ' /sys/kernel/tracing tracefs ' /proc/mounts && echo "$M TRACEFS mounted" || echo "$M TRACEFS missing"
for m in {modules}; do
  if [ -e /sys/module/$m ]; then s=present
  elif modprobe $m 2>/dev/null; then s=loaded
  else s=unavailable; fi
  echo "$M MODULE $m $s"
done
[ -c /dev/kvm ] && echo "$M DEVKVM yes" || echo "$M DEVKVM no"
# The binaries run from tmpfs, as from a local disk on a host: executed from the
# 9p root their own code pages would come in as major faults.
S=$(mktemp -d /dev/shm/vm-test.XXXXXX)
cp -a {stage}/. "$S"/ || {{ echo "$M STAGE-FAILED"; exit 1; }}
T=$S/tracer
echo "$M DOCTOR $("$T" doctor --json 2>&1 | tr -d '\n')"
timeout 120 "$T" kvmexits -v 1 1 2>&1 >/dev/null | sed "s/^/$M KVMEXITS /"
# What a hung binary and the kernel are doing: its processes' kernel stacks,
# every CPU's backtrace and the blocked tasks (sysrq l, w).
descendants() {{
  echo "$1"
  for c in $(ps -e -o pid=,ppid= | awk -v p="$1" '$2 == p {{ print $1 }}'); do descendants "$c"; done
}}
diagnose() {{
  echo "$M DIAG-BEGIN $name"
  ps -e -L -o pid,tid,stat,pcpu,wchan:28,comm --sort=-pcpu | head -n 30
  for p in $(descendants "$1"); do
    for t in /proc/$p/task/*; do
      [ -e "$t/stat" ] || continue
      echo "--- $p/${{t##*/}} $(cat $t/comm 2>/dev/null) state $(awk '{{print $3}}' $t/stat 2>/dev/null)"
      cat $t/stack 2>/dev/null
    done
  done
  # Into the log only (read back below), not onto the console as well.
  dmesg -C 2>/dev/null
  dmesg -n 1 2>/dev/null
  echo l > /proc/sysrq-trigger 2>/dev/null
  echo w > /proc/sysrq-trigger 2>/dev/null
  sleep 2
  dmesg -n 5 2>/dev/null
  dmesg | tail -n 150
  echo "$M DIAG-END $name"
}}
run() {{
  name=$1; shift
  echo "$M BEGIN $name"
  dmesg -C 2>/dev/null
  start=$SECONDS
  (cd /tmp && TRACER_BIN="$T" TRACER_PYTHON={python} CI=true exec "$S/deps/$@" </dev/null 2>&1) &
  pid=$!
  # The limit: past it, say what is stuck, then kill the binary and its children.
  (for _ in $(seq {timeout}); do sleep 1; kill -0 $pid 2>/dev/null || exit 0; done
   echo "$M HUNG $name after {timeout} s"
   diagnose $pid > /tmp/vm-test-diag 2>&1
   kill -9 $(descendants $pid) 2>/dev/null
   cat /tmp/vm-test-diag) &
  watchdog=$!
  wait $pid
  rc=$?
  wait $watchdog
  echo
  echo "$M END $name rc=$rc secs=$((SECONDS - start))"
  if [ "$rc" -ne 0 ]; then
    echo "$M DMESG $name"
    dmesg | tail -n 60
    echo "$M DMESG-END $name"
  fi
}}"#,
        stage = quote(&stage.dir.to_string_lossy()),
        python = quote(&crate::setup::python()),
        timeout = opts.binary_timeout.as_secs(),
        modules = MODULES.join(" "),
    );
    for (name, path) in tests {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The console is a tty: without --color never, libtest colours its verdicts.
        let mut args = vec![quote(&file), "--color=never".into()];
        if let Some(n) = opts.test_threads {
            args.push(format!("--test-threads={n}"));
        }
        args.extend(opts.test_args.iter().map(|a| quote(a)));
        let _ = writeln!(s, "run {name} {}", args.join(" "));
    }
    let _ = writeln!(s, "rm -rf \"$S\"\necho \"$M DONE\"");
    s
}

#[derive(Default)]
struct BinResult {
    name: String,
    rc: Option<i32>,
    secs: Option<u64>,
    output: Vec<String>,
    dmesg: Vec<String>,
    /// Kernel warnings, oopses, lockups seen on the console while it ran.
    kernel: Vec<String>,
    /// Why the guest was stopped during this binary, if it was.
    stopped: Option<String>,
    /// The guest's watchdog killed it ("after N s").
    hung: Option<String>,
    /// What the watchdog saw: stacks, CPU backtraces, blocked tasks.
    diag: Vec<String>,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests reported FAILED.
    failures: Vec<String>,
}

impl BinResult {
    fn ok(&self) -> bool {
        self.rc == Some(0)
    }

    fn parse_output(&mut self) {
        for l in &self.output {
            if let Some(rest) = l.strip_prefix("test ")
                && let Some((name, status)) = rest.rsplit_once(" ... ")
                && status.trim() == "FAILED"
            {
                self.failures.push(name.to_string());
            }
            // "test result: FAILED. 3 passed; 1 failed; 0 ignored; ..."
            if let Some(rest) = l.strip_prefix("test result: ") {
                for part in rest.split(['.', ';']) {
                    let mut w = part.split_whitespace();
                    if let (Some(n), Some(what)) = (w.next(), w.next())
                        && let Ok(n) = n.parse::<u64>()
                    {
                        match what {
                            "passed" => self.passed += n,
                            "failed" => self.failed += n,
                            "ignored" => self.ignored += n,
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// The tests that started but never reported (running when the guest
    /// stopped): `test x ... ` without a verdict (one thread) or libtest's
    /// `test x has been running for over 60 seconds`.
    fn unfinished(&self) -> Vec<String> {
        let mut started = Vec::new();
        let mut finished = Vec::new();
        for l in &self.output {
            let Some(rest) = l.strip_prefix("test ") else {
                continue;
            };
            if let Some(name) = rest.strip_suffix(" has been running for over 60 seconds") {
                started.push(name.trim().to_string());
            } else if let Some((name, verdict)) = rest.split_once(" ... ") {
                if verdict.trim().is_empty() {
                    started.push(name.trim().to_string());
                } else {
                    finished.push(name.trim().to_string());
                }
            } else if let Some(name) = rest.strip_suffix(" ...") {
                started.push(name.trim().to_string());
            }
        }
        started.retain(|n| !finished.contains(n));
        started.dedup();
        started
    }

    fn result(&self) -> String {
        let total = self.passed + self.failed;
        if let Some(after) = &self.hung {
            let mut s = format!("FAIL: hung, killed {after}");
            let running = self.unfinished();
            if !running.is_empty() {
                let _ = write!(s, " (running: {})", running.join(", "));
            }
            if !self.failures.is_empty() {
                let _ = write!(s, "; failed before: {}", self.failures.join(", "));
            }
            return s;
        }
        match self.rc {
            Some(0) => format!("pass ({}/{total})", self.passed),
            Some(124) | Some(137) => {
                format!(
                    "FAIL: timed out in the guest ({} passed before)",
                    self.passed
                )
            }
            Some(_) if self.failed > 0 => format!(
                "FAIL ({} of {total}: {})",
                self.failed,
                self.failures.join(", ")
            ),
            Some(rc) => format!("FAIL (exit {rc})"),
            None => {
                let why = self.stopped.as_deref().unwrap_or("the guest stopped");
                let mut s = format!("FAIL: {why}");
                if !self.failures.is_empty() {
                    let _ = write!(s, "; failed before: {}", self.failures.join(", "));
                }
                s
            }
        }
    }

    /// libtest's `---- name stdout ----` section of a failed test.
    fn failure_excerpt(&self, test: &str) -> Vec<String> {
        let head = format!("---- {test} stdout ----");
        let Some(start) = self.output.iter().position(|l| l.trim() == head) else {
            return Vec::new();
        };
        self.output[start..]
            .iter()
            .skip(1)
            .take_while(|l| !l.starts_with("---- ") && l.trim() != "failures:")
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct GuestRun {
    release: Option<String>,
    tracefs: Option<String>,
    modules: Vec<(String, String)>,
    devkvm: Option<String>,
    doctor: Option<Value>,
    doctor_raw: Option<String>,
    kvmexits: Vec<String>,
    bins: Vec<BinResult>,
    /// The last guest reached the end of its script.
    done: bool,
    /// Guests booted (more than one when a binary hung or crashed its kernel).
    boots: usize,
    /// Why a guest was stopped before its end without a binary to blame.
    problem: Option<String>,
    wall: Duration,
    /// Boot to the test script, first guest.
    boot: Option<Duration>,
    consoles: Vec<PathBuf>,
    tail: Vec<String>,
}

impl GuestRun {
    /// One kernel's results from two guests, each of which ran some binaries.
    fn merge(mut self, other: GuestRun) -> GuestRun {
        self.release = self.release.or(other.release);
        self.tracefs = self.tracefs.or(other.tracefs);
        if self.modules.is_empty() {
            self.modules = other.modules;
        }
        self.devkvm = self.devkvm.or(other.devkvm);
        self.doctor = self.doctor.or(other.doctor);
        self.doctor_raw = self.doctor_raw.or(other.doctor_raw);
        if self.kvmexits.is_empty() {
            self.kvmexits = other.kvmexits;
        }
        self.bins.extend(other.bins);
        self.done &= other.done;
        // Counted as boots of one guest: more than one says a guest was booted again.
        self.boots += other.boots.saturating_sub(1);
        self.problem = self.problem.or(other.problem);
        self.wall = self.wall.max(other.wall);
        self.boot = match (self.boot, other.boot) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.consoles.extend(other.consoles);
        self.consoles.sort();
        self.tail.extend(other.tail);
        self
    }

    fn ok(&self) -> bool {
        self.done && self.bins.iter().all(BinResult::ok)
    }

    fn verdict(&self) -> String {
        if self.bins.is_empty() {
            return self
                .problem
                .clone()
                .unwrap_or_else(|| "the guest ran no test binary".into());
        }
        let failed = self.bins.iter().filter(|b| !b.ok()).count();
        let n = self.bins.len();
        let binaries = if n == 1 {
            "test binary"
        } else {
            "test binaries"
        };
        let mut v = if failed == 0 {
            format!("{n} {binaries} passed")
        } else {
            format!("{failed} of {n} {binaries} failed")
        };
        if self.boots > 1 {
            let _ = write!(v, " ({} boots)", self.boots);
        }
        if !self.done {
            v.push_str(", the guest stopped before the end");
        }
        v
    }

    fn kvm_backend(&self) -> Option<String> {
        self.kvmexits
            .iter()
            .find_map(|l| l.strip_prefix("kvmexits: backend: "))
            .map(str::to_string)
    }

    fn marker(&mut self, rest: &str, started: Instant) {
        let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let first = self.boots <= 1;
        match kind {
            "START" => {
                self.release = Some(arg.trim().to_string());
                if first {
                    self.boot = Some(started.elapsed());
                }
            }
            "TRACEFS" if first => self.tracefs = Some(arg.trim().to_string()),
            "MODULE" if first => {
                if let Some((m, s)) = arg.split_once(' ') {
                    self.modules.push((m.to_string(), s.trim().to_string()));
                }
            }
            "DEVKVM" if first => self.devkvm = Some(arg.trim().to_string()),
            "DOCTOR" if first => {
                self.doctor_raw = Some(arg.to_string());
                self.doctor = serde_json::from_str(arg.trim()).ok();
            }
            "KVMEXITS" if first => self.kvmexits.push(arg.trim().to_string()),
            "BEGIN" => self.bins.push(BinResult {
                name: arg.trim().to_string(),
                ..Default::default()
            }),
            "END" => {
                if let Some(b) = self.bins.last_mut() {
                    for w in arg.split_whitespace() {
                        if let Some(v) = w.strip_prefix("rc=") {
                            b.rc = v.parse().ok();
                        } else if let Some(v) = w.strip_prefix("secs=") {
                            b.secs = v.parse().ok();
                        }
                    }
                    b.parse_output();
                }
            }
            "HUNG" => {
                if let Some(b) = self.bins.last_mut() {
                    let after = arg.split_once(" after ").map_or("", |(_, a)| a);
                    b.hung = Some(format!("after {after}"));
                }
            }
            "DONE" => self.done = true,
            "STAGE-FAILED" => {
                self.problem = Some("copying the binaries to the guest's tmpfs failed".into())
            }
            _ => {}
        }
    }
}

enum Line {
    Out(String),
    Err(String),
}

/// A kernel message worth reporting, and whether it means the guest is stuck.
fn kernel_problem(line: &str) -> Option<bool> {
    const STUCK: &[&str] = &[
        "soft lockup",
        "hard LOCKUP",
        "Kernel panic",
        "self-detected stall",
        "detected stalls on CPU",
        "blocked for more than",
    ];
    const BAD: &[&str] = &[
        "BUG:",
        "Oops",
        "WARNING:",
        "general protection fault",
        "Call Trace:",
    ];
    if STUCK.iter().any(|p| line.contains(p)) {
        Some(true)
    } else if BAD.iter().any(|p| line.contains(p)) {
        Some(false)
    } else {
        None
    }
}

/// Whether a console line is a kernel message ("[   12.345678] ...").
fn is_printk(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with('[')
        && l[1..].split_once(']').is_some_and(|(t, _)| {
            t.trim().split_once('.').is_some_and(|(s, us)| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && us.len() == 6
                    && us.bytes().all(|b| b.is_ascii_digit())
            })
        })
}

/// Boots guests until every selected binary has run: when one hangs or crashes
/// its kernel, the guest is stopped and a new one runs the rest.
fn boot_and_test(
    series: &str,
    k: &Kernel,
    stage: &Stage,
    tests: &[(String, PathBuf)],
    opts: &Options,
    part: usize,
) -> Result<GuestRun> {
    let logs = workspace_root().join("target/vm-test").join(series);
    let work = logs.join(format!("guest-{}", part + 1));
    fs::create_dir_all(&work)?;
    let started = Instant::now();
    let mut run = GuestRun::default();
    let mut remaining: Vec<(String, PathBuf)> = tests.to_vec();
    while !remaining.is_empty() {
        run.boots += 1;
        run.done = false;
        let before = run.bins.len();
        boot_once(series, k, stage, &remaining, opts, &work, &mut run)?;
        let ran: Vec<String> = run.bins[before..].iter().map(|b| b.name.clone()).collect();
        remaining.retain(|(n, _)| !ran.contains(n));
        if run.done || ran.is_empty() {
            break;
        }
        if !remaining.is_empty() {
            step(&format!(
                "{series}: booting again for the {} binaries left",
                remaining.len()
            ));
        }
    }
    run.wall = started.elapsed();
    for b in &run.bins {
        let mut text = b.output.join("\n");
        if !b.diag.is_empty() {
            text.push_str("\n\n--- what it was doing when the watchdog stopped it ---\n");
            text.push_str(&b.diag.join("\n"));
        }
        if !b.dmesg.is_empty() {
            text.push_str("\n\n--- guest dmesg ---\n");
            text.push_str(&b.dmesg.join("\n"));
        }
        let _ = fs::write(logs.join(format!("{}.log", b.name)), text + "\n");
    }
    Ok(run)
}

fn boot_once(
    series: &str,
    k: &Kernel,
    stage: &Stage,
    tests: &[(String, PathBuf)],
    opts: &Options,
    work: &Path,
    run: &mut GuestRun,
) -> Result<()> {
    let n = run.boots;
    let suffix = if n == 1 {
        String::new()
    } else {
        format!("-{n}")
    };
    let tmp = work.join("tmp");
    fs::create_dir_all(&tmp)?;
    let script = work.join(format!("guest{suffix}.sh"));
    fs::write(&script, guest_script(stage, tests, opts))?;
    let console_path = work.join(format!("console{suffix}.log"));
    let mut console = fs::File::create(&console_path)?;
    run.consoles.push(console_path.clone());

    let mut cmd = Command::new("vng");
    cmd.arg("--run")
        .arg(&k.vmlinuz)
        .args([
            "--disable-kvm",
            "--memory",
            "2G",
            "--cpus",
            "2",
            "--verbose",
        ])
        .arg(format!("--qemu-opts=-cpu max {}", opts.qemu_opts).trim_end())
        .args([
            // virtiofsd does not start here (vng waits for it, then falls back to 9p).
            "--force-9p",
            "--",
        ])
        .arg(format!("bash {}", quote(&script.to_string_lossy())))
        .current_dir(workspace_root())
        // virtme-ng's temporary files stay under target/.
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: stopping the guest stops vng and qemu together.
        .process_group(0);
    step(&format!(
        "{series}: booting {} under qemu (software emulation); console: {}",
        k.release,
        console_path.display()
    ));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting vng (virtme-ng)")?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    let out = child.stdout.take().context("vng stdout")?;
    let err = child.stderr.take().context("vng stderr")?;
    for (stream, is_err) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, false),
        (Box::new(err), true),
    ] {
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
                let _ = tx.send(if is_err {
                    Line::Err(line)
                } else {
                    Line::Out(line)
                });
                buf.clear();
            }
        }));
    }
    drop(tx);

    // Deadlines: the boot, each binary (its own `timeout` in the guest, plus a
    // margin), and a stuck kernel (a lockup reported and no progress after it).
    let boot_limit = Duration::from_secs(300);
    let bin_limit = opts.binary_timeout + Duration::from_secs(120);
    // (RCU stall warnings can be spurious when the host starves the emulator:
    // any output from the guest's script clears the suspicion.)
    let stuck_grace = Duration::from_secs(90);
    let mut deadline = started + boot_limit;
    let mut stuck_since: Option<(Instant, String)> = None;
    let mut in_bin = false;
    let mut in_dmesg = false;
    let mut in_diag = false;
    let mut stop_reason: Option<String> = None;
    let mut booted = false;
    let mut tail: Vec<String> = Vec::new();
    loop {
        let mut limit = deadline;
        if let Some((t, _)) = &stuck_since {
            limit = limit.min(*t + stuck_grace);
        }
        let now = Instant::now();
        if now >= limit {
            let why = match &stuck_since {
                Some((_, l)) if now >= limit && limit < deadline => {
                    format!("guest kernel stuck: {}", l.trim())
                }
                _ if !booted => format!(
                    "the guest's script did not start within {} s",
                    boot_limit.as_secs()
                ),
                _ if !in_bin => format!("no test binary started within {} s", boot_limit.as_secs()),
                _ => format!("no result within {} s in the guest", bin_limit.as_secs()),
            };
            step(&format!("{series}: {why}: stopping the guest"));
            // SAFETY: signals the process group created above for vng and qemu.
            unsafe { libc::killpg(pid, libc::SIGTERM) };
            thread::sleep(Duration::from_secs(3));
            // SAFETY: as above.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
            stop_reason = Some(why);
            break;
        }
        let line = match rx.recv_timeout(limit - now) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (line, is_err) = match line {
            Line::Out(l) => (l, false),
            Line::Err(l) => (l, true),
        };
        let _ = writeln!(console, "{line}");
        if booted && !is_printk(&line) {
            stuck_since = None;
        }
        tail.push(line.clone());
        if tail.len() > 400 {
            tail.drain(..200);
        }
        if let Some(pos) = line.find(MARK) {
            let rest = line[pos + MARK.len()..].trim_start();
            if pos > 0
                && in_bin
                && let Some(b) = run.bins.last_mut()
            {
                // Output without a final newline, then the marker.
                b.output.push(line[..pos].to_string());
            }
            run.marker(rest, started);
            let kind = rest.split_whitespace().next().unwrap_or("");
            let arg = rest.get(kind.len()..).unwrap_or("").trim();
            match kind {
                "START" => {
                    booted = true;
                    eprintln!(
                        "[{series}] booted {arg} in {} s",
                        started.elapsed().as_secs()
                    );
                    deadline = Instant::now() + boot_limit;
                }
                "MODULE" | "TRACEFS" | "DEVKVM" | "KVMEXITS" if n == 1 => {
                    eprintln!("[{series}] {rest}")
                }
                "DOCTOR" if n == 1 => eprintln!(
                    "[{series}] tracer doctor: {}",
                    if run.doctor.is_some() {
                        "recorded"
                    } else {
                        "unparsable (see the console log)"
                    }
                ),
                "BEGIN" => {
                    in_bin = true;
                    stuck_since = None;
                    deadline = Instant::now() + bin_limit;
                    eprintln!("[{series}] === {arg} ===");
                }
                "END" => {
                    in_bin = false;
                    stuck_since = None;
                    deadline = Instant::now() + boot_limit;
                    if let Some(b) = run.bins.last() {
                        eprintln!(
                            "[{series}] === {}: {} in {} s ===",
                            b.name,
                            b.result(),
                            b.secs.unwrap_or(0)
                        );
                    }
                }
                "DMESG" => in_dmesg = true,
                "DMESG-END" => in_dmesg = false,
                "HUNG" => eprintln!("[{series}] {rest}: what it is doing follows"),
                "DIAG-BEGIN" => in_diag = true,
                "DIAG-END" => in_diag = false,
                "DONE" => eprintln!(
                    "[{series}] guest done after {} s",
                    started.elapsed().as_secs()
                ),
                _ => {}
            }
            continue;
        }
        if booted
            && is_printk(&line)
            && let Some(stuck) = kernel_problem(&line)
        {
            if stuck && stuck_since.is_none() {
                stuck_since = Some((Instant::now(), line.clone()));
            }
            if in_bin && let Some(b) = run.bins.last_mut() {
                b.kernel.push(line.clone());
            }
        }
        if in_dmesg {
            if let Some(b) = run.bins.last_mut() {
                b.dmesg.push(line);
            }
        } else if in_bin {
            eprintln!("[{series}]   {line}");
            if let Some(b) = run.bins.last_mut() {
                if in_diag {
                    b.diag.push(line);
                } else {
                    b.output.push(line);
                }
            }
        } else if booted {
            if is_printk(&line) && kernel_problem(&line).is_some() {
                eprintln!("[{series}] kernel: {line}");
            }
        } else if is_err {
            // vng's own complaints before the guest runs anything.
            let l = line.to_lowercase();
            if !line.starts_with('[')
                && (l.starts_with("virtme") || l.contains("error") || l.contains("fail"))
            {
                eprintln!("[{series}] vng: {line}");
            }
        }
    }
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    // A binary that never reached its END marker.
    if in_bin && let Some(b) = run.bins.last_mut() {
        b.parse_output();
        let unfinished = b.unfinished();
        let mut why = stop_reason
            .clone()
            .unwrap_or_else(|| "the guest stopped (see the console log)".into());
        if !unfinished.is_empty() {
            let _ = write!(why, " (running: {})", unfinished.join(", "));
        }
        b.stopped = Some(why);
        eprintln!("[{series}] === {}: {} ===", b.name, b.result());
    } else if !run.done && run.problem.is_none() {
        run.problem =
            Some(stop_reason.unwrap_or_else(|| {
                "the guest stopped before its end (see the console log)".into()
            }));
    }
    run.tail = tail;
    let _ = fs::remove_dir_all(&tmp);
    Ok(())
}

/// Drops carriage returns and ANSI escape sequences (CSI ... letter).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reports

/// Compact hook names for the table.
fn short_hook(h: &str) -> String {
    h.replace("raw tracepoint ", "raw_tp ")
        .replace("tracepoint ", "tp ")
        .replace("software perf event ", "perf ")
        .replace(" (every CPU)", "")
}

/// The hooks a tool chose on the guest's kernel, from `tracer doctor --json`.
fn tool_path(doctor: &Value, tool: &str) -> Option<(bool, String)> {
    let t = doctor["tools"]
        .as_array()?
        .iter()
        .find(|t| t["tool"] == tool)?;
    let runs = t["runs"].as_bool().unwrap_or(false);
    let mut parts = Vec::new();
    for h in t["hooks"].as_array().into_iter().flatten() {
        let role = h["role"].as_str().unwrap_or("?");
        let hook = h["hook"].as_str().unwrap_or("");
        let when = h["when"].as_str().unwrap_or("");
        let detail = h["detail"].as_str().unwrap_or("");
        let mut p = format!("{role}: ");
        if hook.is_empty() {
            p.push_str("none");
        } else {
            p.push_str(&short_hook(hook));
        }
        if detail.contains("(fallback") {
            p.push_str(" (fallback)");
        }
        if !when.is_empty() {
            p.push_str(&format!(" [{when}]"));
        }
        parts.push(p);
    }
    if let Some(e) = t["error"].as_str().or(t["why"].as_str()) {
        parts.push(format!("({e})"));
    }
    Some((runs, parts.join("; ")))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn report(series: &str, k: &Kernel, run: &GuestRun, stage: &Stage) -> String {
    let mut s = String::new();
    let release = run.release.as_deref().unwrap_or(&k.release);
    let _ = writeln!(s, "# vm-test: kernel {series} ({release})\n");
    let _ = writeln!(
        s,
        "Debian package `{}`, booted with virtme-ng under qemu software emulation \
         (`-cpu max`, 2 vCPUs, 2 GiB) on host kernel {}.",
        k.package,
        kernel_release()
    );
    let _ = writeln!(
        s,
        "Wall time {} s: boot to the test script {} s, then the tests. Result: {}.\n",
        run.wall.as_secs(),
        run.boot.map_or("?".into(), |b| b.as_secs().to_string()),
        run.verdict()
    );
    if let Some(d) = &run.doctor {
        let yn = |v: &Value| match v.as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = writeln!(
            s,
            "Guest: kprobes {}, BTF {}, tracefs {}, /dev/kvm {}.",
            yn(&d["kprobes"]),
            yn(&d["btf"]),
            run.tracefs.as_deref().unwrap_or("?"),
            run.devkvm.as_deref().unwrap_or("?"),
        );
    } else if run.release.is_some() {
        let _ = writeln!(
            s,
            "`tracer doctor --json` gave no JSON in the guest: {}",
            run.doctor_raw.as_deref().unwrap_or("(nothing)")
        );
    }
    if !run.modules.is_empty() {
        let m: Vec<String> = run
            .modules
            .iter()
            .map(|(m, st)| format!("{m} {st}"))
            .collect();
        let _ = writeln!(s, "Modules: {}.", m.join(", "));
    }
    if let Some(b) = run.kvm_backend() {
        let _ = writeln!(s, "kvmexits backend chosen by probing: {b}.");
    } else if !run.kvmexits.is_empty() {
        let _ = writeln!(s, "kvmexits probe: {}.", run.kvmexits.join(" / "));
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| test binary | path: hook chosen per role on this kernel | result | time |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    let null = Value::Null;
    let doctor = run.doctor.as_ref().unwrap_or(&null);
    let tools: Vec<String> = doctor["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["tool"].as_str().map(str::to_string))
        .collect();
    for (name, _) in &stage.tests {
        let b = run.bins.iter().find(|b| &b.name == name);
        let (offered, mut path) = match tool_path(doctor, name) {
            Some((runs, p)) => (runs, p),
            None if tools.is_empty() => (true, "?".into()),
            None => (true, "(not a tool)".into()),
        };
        if name == "kvmexits"
            && let Some(backend) = run.kvm_backend()
        {
            path = format!("**backend: {backend}**; {path}");
        }
        let result = match b {
            None => "not run".to_string(),
            Some(b) if !offered => format!("not offered (tests: {})", b.result()),
            Some(b) => b.result(),
        };
        let time = b
            .and_then(|b| b.secs)
            .map_or("".into(), |t| format!("{t} s"));
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {time} |",
            cell(&path),
            cell(&result)
        );
    }
    // Tools without a test binary of their own name.
    for t in &tools {
        if stage.tests.iter().any(|(n, _)| n == t) {
            continue;
        }
        if let Some((runs, p)) = tool_path(doctor, t) {
            let r = if runs {
                "offered, no test binary selected"
            } else {
                "not offered"
            };
            let _ = writeln!(s, "| ({t}) | {} | {r} | |", cell(&p));
        }
    }
    let failing: Vec<&BinResult> = run.bins.iter().filter(|b| !b.ok()).collect();
    if !failing.is_empty() || !run.done {
        let _ = writeln!(s, "\n## Failures\n");
        if !run.done
            && let Some(p) = &run.problem
        {
            let _ = writeln!(
                s,
                "The guest did not finish: {p}. Last console lines:\n\n```\n{}\n```\n",
                run.tail[run.tail.len().saturating_sub(40)..].join("\n")
            );
        }
        for b in failing {
            let _ = writeln!(s, "### {}: {}\n", b.name, b.result());
            let mut shown = false;
            for t in &b.failures {
                let ex = b.failure_excerpt(t);
                if ex.is_empty() {
                    continue;
                }
                shown = true;
                let _ = writeln!(s, "`{t}`:\n\n```");
                for l in ex.iter().take(60) {
                    let _ = writeln!(s, "{l}");
                }
                if ex.len() > 60 {
                    let _ = writeln!(s, "... ({} more lines)", ex.len() - 60);
                }
                let _ = writeln!(s, "```\n");
            }
            if !shown {
                // No libtest report (timed out, crashed): the end of the output,
                // kernel messages included.
                let n = b.output.len();
                let _ = writeln!(s, "```");
                for l in &b.output[n.saturating_sub(60)..] {
                    let _ = writeln!(s, "{l}");
                }
                let _ = writeln!(s, "```\n");
            }
            if !b.diag.is_empty() {
                let _ = writeln!(
                    s,
                    "What it was doing when the guest's watchdog stopped it \
                     (kernel stacks of its processes, CPU backtraces, blocked tasks; \
                     all of it in `target/vm-test/{series}/{}.log`):\n\n```",
                    b.name
                );
                for l in b.diag.iter().take(80) {
                    let _ = writeln!(s, "{l}");
                }
                if b.diag.len() > 80 {
                    let _ = writeln!(s, "... ({} more lines)", b.diag.len() - 80);
                }
                let _ = writeln!(s, "```\n");
            }
            let relevant: Vec<&String> = b
                .dmesg
                .iter()
                .filter(|l| {
                    let l = l.to_lowercase();
                    [
                        "bpf",
                        "bug",
                        "warn",
                        "oops",
                        "call trace",
                        "error",
                        "kvm",
                        "svm",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                })
                .collect();
            if !relevant.is_empty() {
                let _ = writeln!(s, "Guest dmesg during {}:\n\n```", b.name);
                for l in relevant.iter().take(30) {
                    let _ = writeln!(s, "{l}");
                }
                let _ = writeln!(s, "```\n");
            }
        }
    }
    let warned: Vec<&BinResult> = run
        .bins
        .iter()
        .filter(|b| b.ok() && !b.kernel.is_empty())
        .collect();
    if !warned.is_empty() {
        let _ = writeln!(s, "\n## Kernel warnings during passing binaries\n");
        for b in warned {
            let _ = writeln!(s, "{}:\n\n```", b.name);
            for l in b.kernel.iter().take(20) {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```\n");
        }
    }
    let consoles: Vec<String> = run
        .consoles
        .iter()
        .map(|c| {
            format!(
                "`{}`",
                c.strip_prefix(workspace_root()).unwrap_or(c).display()
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "\nConsole: {}; each binary's output: `target/vm-test/{series}/<binary>.log`.",
        consoles.join(", ")
    );
    s
}

/// On failure, the relevant part of the guest's log on the terminal.
fn show_failures(series: &str, run: &GuestRun) {
    eprintln!("\nxtask vm-test: {series}: {}", run.verdict());
    if !run.done
        && let Some(p) = &run.problem
    {
        eprintln!(
            "--- {p}; last console lines ({}) ---",
            run.consoles
                .last()
                .map_or(String::new(), |c| c.display().to_string())
        );
        for l in &run.tail[run.tail.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
    }
    for b in run.bins.iter().filter(|b| !b.ok()) {
        eprintln!("--- {series}: {} ({}) ---", b.name, b.result());
        // libtest's failures section, else the end of the output.
        let start = b
            .output
            .iter()
            .position(|l| l.trim() == "failures:")
            .unwrap_or(b.output.len().saturating_sub(60));
        for l in &b.output[start..] {
            eprintln!("{l}");
        }
        if !b.dmesg.is_empty() {
            eprintln!("--- guest dmesg during {} (last lines) ---", b.name);
            for l in &b.dmesg[b.dmesg.len().saturating_sub(20)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Test binaries × kernels.
fn matrix(outcomes: &[(String, GuestRun)], stage: &Stage) -> String {
    let mut s = String::from("# vm-test: kernel matrix\n\n| test binary |");
    for (k, r) in outcomes {
        let _ = write!(s, " {k} ({}) |", r.release.as_deref().unwrap_or("?"));
    }
    s.push_str("\n| --- |");
    for _ in outcomes {
        s.push_str(" --- |");
    }
    s.push('\n');
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, _) in &stage.tests {
        let cells = outcomes
            .iter()
            .map(|(_, r)| {
                r.bins
                    .iter()
                    .find(|b| &b.name == name)
                    .map_or("not run".into(), |b| {
                        let t = b.secs.map_or(String::new(), |t| format!(", {t} s"));
                        format!("{}{t}", b.result())
                    })
            })
            .collect();
        rows.insert(name, cells);
    }
    for (name, cells) in rows {
        let _ = writeln!(
            s,
            "| {name} | {} |",
            cells
                .iter()
                .map(|c| cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    s.push_str("| (wall time) |");
    for (_, r) in outcomes {
        let _ = write!(s, " {} s |", r.wall.as_secs());
    }
    s.push('\n');
    s
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
        assert_eq!(weights.iter().sum::<u32>(), 42);
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

    #[test]
    fn kernel_packages_of_a_series() {
        assert!(is_series_image("linux-image-6.1.0-56-amd64", "6.1"));
        assert!(is_series_image("linux-image-5.10.0-32-amd64", "5.10"));
        assert!(is_series_image("linux-image-6.12.117+deb12-amd64", "6.12"));
        for not in [
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-56-rt-amd64",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-dbg",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-amd64",
        ] {
            assert!(!is_series_image(not, "6.1"), "{not}");
        }
        assert!(!is_series_image("linux-image-6.1.0-56-amd64", "6.12"));
        assert!(!is_series_image(
            "linux-image-6.12.117+deb12-rt-amd64",
            "6.12"
        ));
        let mut v = [
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.113+deb12-amd64",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-6.12.117+deb12-amd64"));
    }

    #[test]
    fn test_binary_names() {
        assert_eq!(
            test_name(Path::new("/t/release/deps/kvm_guest-0bc3f878857a908b")),
            "kvm_guest"
        );
        assert_eq!(test_name(Path::new("/t/deps/page-toucher")), "page-toucher");
    }

    #[test]
    fn console_lines() {
        assert!(is_printk(
            "[   34.440845] rcu: INFO: rcu_preempt self-detected stall on CPU"
        ));
        assert!(!is_printk("[6.1] not a kernel line"));
        assert!(!is_printk("test foo ... ok"));
        assert!(!is_printk("[1.5] a test's own output"));
        assert_eq!(
            kernel_problem("[  104.588458] watchdog: BUG: soft lockup - CPU#0 stuck for 45s!"),
            Some(true)
        );
        assert_eq!(
            kernel_problem("[   77.741053] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"),
            Some(false)
        );
        assert_eq!(
            kernel_problem("[   10.730000] loop0: detected capacity change"),
            None
        );
        assert_eq!(
            strip_ansi("test a ... \u{1b}[32mok\u{1b}[m\r"),
            "test a ... ok"
        );
    }

    #[test]
    fn libtest_output() {
        let mut b = BinResult {
            output: [
                "running 3 tests",
                "test a ... ok",
                "test b ... FAILED",
                "test c has been running for over 60 seconds",
                "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        };
        b.parse_output();
        assert_eq!((b.passed, b.failed, b.ignored), (1, 1, 0));
        assert_eq!(b.failures, ["b"]);
        assert_eq!(b.unfinished(), ["c"]);
        b.rc = Some(101);
        assert_eq!(b.result(), "FAIL (1 of 2: b)");
        b.hung = Some("after 300 s".into());
        assert_eq!(
            b.result(),
            "FAIL: hung, killed after 300 s (running: c); failed before: b"
        );
    }

    #[test]
    fn markers() {
        let mut run = GuestRun {
            boots: 1,
            ..Default::default()
        };
        let t = Instant::now();
        run.marker("START 6.1.0-56-amd64", t);
        run.marker("MODULE kvm_amd loaded", t);
        run.marker(r#"DOCTOR {"kprobes":true,"tools":[]}"#, t);
        run.marker("KVMEXITS kvmexits: backend: kvm:kvm_exit/kvm_entry", t);
        run.marker("BEGIN cli", t);
        run.bins[0]
            .output
            .push("test result: ok. 8 passed; 0 failed".into());
        run.marker("END cli rc=0 secs=7", t);
        run.marker("DONE", t);
        assert_eq!(run.release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(run.modules, [("kvm_amd".to_string(), "loaded".to_string())]);
        assert_eq!(run.doctor.as_ref().unwrap()["kprobes"], true);
        assert_eq!(run.kvm_backend().as_deref(), Some("kvm:kvm_exit/kvm_entry"));
        assert_eq!(run.bins[0].result(), "pass (8/8)");
        assert_eq!(run.bins[0].secs, Some(7));
        assert!(run.ok());
    }
}
