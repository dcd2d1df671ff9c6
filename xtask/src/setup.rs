//! Idempotent installation of what tracer's build and tests need. Each step says
//! what it checks and does; a failing step says what to run by hand.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::run;

const BPF_LINKER_VERSION: &str = "0.13.0";

fn step(what: &str, state: &str) {
    eprintln!("xtask setup: {what}: {state}");
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn cargo_home() -> std::path::PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo")
        })
}

/// Installs Debian packages that are not installed yet.
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step("apt-get install", &missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().is_ok_and(|s| s.success()) {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed")?;
        if !install().is_ok_and(|s| s.success()) {
            bail!(
                "apt-get install {} failed; install them by hand (as root)",
                missing.join(" ")
            );
        }
    }
    Ok(())
}

/// The LLVM major version of the nightly rustc (bpf-linker must match it).
fn nightly_llvm_major() -> Result<u32> {
    let vv = output("rustc", &["+nightly", "-vV"]).context("rustc +nightly -vV failed")?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV does not report an LLVM version")?;
    llvm.split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .context("unparsable LLVM version")
}

pub fn build_prerequisites() -> Result<()> {
    // 1. A nightly toolchain (for build-std on the BPF target). Never updated.
    let toolchains = output("rustup", &["toolchain", "list"])
        .context("rustup is required: https://rustup.rs")?;
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        step(
            "nightly toolchain",
            "present (not updated: bpf-linker must match its LLVM)",
        );
    } else {
        step("nightly toolchain", "missing, installing");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("install it by hand: rustup toolchain install nightly --profile minimal")?;
    }

    // 2. rust-src for nightly.
    let components = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src (nightly)", "present");
    } else {
        step("rust-src (nightly)", "missing, installing");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("install it by hand: rustup component add rust-src --toolchain nightly")?;
    }

    // 3. LLVM development files of the same major version as nightly's LLVM.
    let major = nightly_llvm_major()?;
    let prefix = format!("/usr/lib/llvm-{major}");
    let stamp = cargo_home().join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-llvm-{major}.stamp"
    ));
    let linker_ok = output("bpf-linker", &["--version"])
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
        && stamp.exists();
    if linker_ok {
        step(
            "bpf-linker",
            &format!("{BPF_LINKER_VERSION} for LLVM {major}: present"),
        );
        return Ok(());
    }
    apt_install(&[
        &format!("llvm-{major}-dev"),
        &format!("libpolly-{major}-dev"),
        "libzstd-dev",
        "zlib1g-dev",
    ])
    .with_context(|| {
        format!("nightly uses LLVM {major}; bpf-linker must be built against the same major")
    })?;
    step("LLVM dev files", &format!("{prefix} present"));

    // 4. bpf-linker built against that LLVM (its default LLVM is newer).
    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against LLVM {major} (a few minutes, once)"),
    );
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force", "--no-default-features"])
        .args(["--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", &prefix))
    .with_context(|| {
        format!(
            "by hand: LLVM_PREFIX={prefix} cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked \
             --no-default-features --features llvm-{major}"
        )
    })?;
    std::fs::write(&stamp, b"").with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// Tools the integration tests drive: loop devices, filesystems, namespaces,
/// nftables, capability dropping.
pub fn test_prerequisites() -> Result<()> {
    let needed = [
        ("losetup", "mount"),
        ("setpriv", "util-linux"),
        ("unshare", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("nstat", "iproute2"),
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("xmllint", "libxml2-utils"),
        ("rsvg-convert", "librsvg2-bin"),
        ("fio", "fio"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !have_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        step("test tools", "present");
    } else {
        apt_install(&missing)?;
    }
    // The Perfetto protos that pip's `perfetto` package ships: the record
    // tests parse tracer's traces with them (test-only, never a dependency).
    let has_protos = || {
        Command::new("python3")
            .args([
                "-c",
                "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_protos() {
        step("perfetto protos (python)", "present");
    } else {
        step(
            "perfetto protos (python)",
            &format!("missing, installing perfetto=={PERFETTO_VERSION} with pip"),
        );
        pip_install(&format!("perfetto=={PERFETTO_VERSION}"))?;
        if !has_protos() {
            bail!("pip installed perfetto but python3 cannot import its protos");
        }
    }
    Ok(())
}

const PERFETTO_VERSION: &str = "0.59.1";

/// The interpreter `python3` resolves to here (the one pip installed the
/// perfetto protos for), by absolute path: the tests use it through
/// TRACER_PYTHON, also inside the vm-test guest, whose PATH is the system's.
pub fn python() -> String {
    Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

fn pip_install(spec: &str) -> Result<()> {
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .arg(spec)
            .status()
            .is_ok_and(|s| s.success())
    };
    // Debian's own python refuses system-wide pip installs (PEP 668).
    if !pip(&[]) && !pip(&["--break-system-packages"]) {
        bail!("pip install {spec} failed; install it by hand");
    }
    Ok(())
}

/// Peers the benchmarks compare against.
pub fn bench_prerequisites() -> Result<()> {
    test_prerequisites()?;
    // libbpf-tools: the C peers (biolatency, bitesize, biopattern run here).
    let peers_present = have_command("bpftrace")
        && have_command("bpftool")
        && Path::new("/usr/sbin/biopattern").exists();
    if peers_present {
        step("bpftrace, bpftool and libbpf-tools", "present");
        return Ok(());
    }
    apt_install(&["bpftrace", "bpftool", "libbpf-tools"])
}

/// What `vm-test` needs on the host: qemu, kmod (depmod for the guest's modules),
/// a static busybox (virtme-ng builds its initramfs from it) and virtme-ng.
/// The kernels themselves are fetched by `vm::ensure_kernel`.
pub fn vm_prerequisites() -> Result<()> {
    let needed = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("depmod", "kmod"),
        ("modprobe", "kmod"),
        ("dpkg-deb", "dpkg"),
    ];
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !have_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    // virtme-ng looks for busybox-static, busybox.static, then busybox.
    if !["busybox-static", "busybox.static", "busybox"]
        .iter()
        .any(|b| have_command(b))
    {
        missing.push("busybox-static");
    }
    missing.dedup();
    if missing.is_empty() {
        step("qemu, kmod, busybox", "present");
    } else {
        apt_install(&missing)?;
    }

    match output("vng", &["--version"]) {
        Some(v) => {
            let v = v.trim();
            if v.contains(VIRTME_NG_VERSION) {
                step("virtme-ng", &format!("present ({v})"));
            } else {
                step(
                    "virtme-ng",
                    &format!("present ({v}; {VIRTME_NG_VERSION} is the version verified here)"),
                );
            }
        }
        None => {
            step(
                "virtme-ng",
                &format!("missing, installing {VIRTME_NG_VERSION} with pip"),
            );
            pip_install(&format!("virtme-ng=={VIRTME_NG_VERSION}"))?;
            if output("vng", &["--version"]).is_none() {
                bail!("virtme-ng installed but `vng` is not on PATH (pip's script directory)");
            }
        }
    }
    Ok(())
}

const VIRTME_NG_VERSION: &str = "1.42";
