//! `cargo xtask`: set up a machine, build, run, test, install and benchmark tracer.
//!
//! Setup is idempotent and quick when nothing is missing: it installs rust-src for
//! the nightly toolchain, the LLVM development package matching nightly's LLVM
//! major version, bpf-linker built against it, and the test suite's tools. It never
//! updates an existing nightly (that would move it past bpf-linker's LLVM).

mod bench;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test tracer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent)
    Setup {
        /// Also install the test suite's tools (nftables, e2fsprogs, ...)
        #[arg(long)]
        test_tools: bool,
    },
    /// Set up, build the release binary and run it: cargo xtask run -- biolatency
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the unit and integration tests on this kernel
    Test {
        /// Extra arguments for the integration test harness (e.g. a test name)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the release binary and install it with a symlink per tool name
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
    },
    /// cargo fmt --check and clippy for userspace and the eBPF crate
    Lint,
    /// Benchmarks: BPF run time per event, end-to-end overhead, start-up, RSS
    Bench {
        /// Rounds per configuration
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Only these benchmarks (comma-separated: block, faults, kvm, tcp, exporter)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// The exporter with every tool under a mixed workload, scraped every second
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Run the integration tests on other kernels under qemu
    VmTest {
        /// 5.10, 6.1, 6.12 or all
        #[arg(long, default_value = "6.1")]
        kernel: String,
        /// Only these test binaries (comma-separated names, e.g. kvmexits,faultlat)
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// --test-threads for each test binary (default: the guest's 2 CPUs)
        #[arg(long)]
        test_threads: Option<usize>,
        /// Limit per test binary inside the guest, in seconds (the slowest takes
        /// about 15 s); past it the guest shows what is stuck and kills it
        #[arg(long, default_value_t = 300)]
        binary_timeout: u64,
        /// More qemu options (after `-cpu max`). The default keeps TCG to one host
        /// thread: with one thread per vCPU (qemu's default, `--qemu-opts ''`) guests
        /// crash or hang in the kernel's int3 code patching (static keys)
        #[arg(long, default_value = "-accel tcg,thread=single")]
        qemu_opts: String,
        /// Extra arguments for every test binary (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup { test_tools } => {
            setup::build_prerequisites()?;
            if test_tools {
                setup::test_prerequisites()?;
            }
            Ok(())
        }
        Cmd::Run { args } => {
            setup::build_prerequisites()?;
            let bin = build_release()?;
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => test(&args),
        Cmd::Install { prefix } => install(&prefix),
        Cmd::Lint => lint(),
        Cmd::Bench { rounds, only } => {
            setup::build_prerequisites()?;
            setup::bench_prerequisites()?;
            let bin = build_release()?;
            bench::run(&bin, rounds, &only)
        }
        Cmd::Soak { minutes } => {
            setup::build_prerequisites()?;
            setup::bench_prerequisites()?;
            let bin = build_release()?;
            bench::soak(&bin, minutes)
        }
        Cmd::VmTest {
            kernel,
            only,
            test_threads,
            binary_timeout,
            qemu_opts,
            args,
        } => {
            if kernel != "all" && !vm::ALL.contains(&kernel.as_str()) {
                eprintln!(
                    "xtask: note: --kernel {kernel} is not one of {} (trying apt's linux-image-{kernel}*-amd64)",
                    vm::ALL.join(", ")
                );
            }
            setup::build_prerequisites()?;
            setup::test_prerequisites()?;
            setup::vm_prerequisites()?;
            let bin = build_release()?;
            let tests = build_integration_tests()?;
            let opts = vm::Options {
                only,
                test_threads,
                binary_timeout: std::time::Duration::from_secs(binary_timeout),
                qemu_opts,
                test_args: args,
            };
            vm::run(&[kernel.as_str()], &bin, &tests, &opts)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its description if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Builds target/release/tracer with its eBPF programs embedded.
pub fn build_release() -> Result<PathBuf> {
    eprintln!("xtask: building tracer (release)");
    run(cargo()
        .args(["build", "--release", "--package", "tracer"])
        .env_remove("TRACER_EBPF_STUBS"))?;
    Ok(workspace_root().join("target/release/tracer"))
}

/// Builds the integration test binaries, returning their paths.
pub fn build_integration_tests() -> Result<Vec<PathBuf>> {
    let out = cargo()
        .args([
            "test",
            "--release",
            "--package",
            "tracer-tests",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        bail!(
            "building the integration tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Only the integration tests (tests/tests/*.rs, target kind "test"), built
    // with the test profile: not the helper binaries nor the lib's and bins' own
    // (unit-test) harnesses.
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] == "compiler-artifact"
            && is_test_target
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
        {
            bins.push(PathBuf::from(exe));
        }
    }
    Ok(bins)
}

fn test(args: &[String]) -> Result<()> {
    setup::build_prerequisites()?;
    setup::test_prerequisites()?;
    let bin = build_release()?;
    eprintln!("xtask: unit tests");
    run(cargo().args([
        "test",
        "--release",
        "--package",
        "tracer",
        "--package",
        "tracer-common",
    ]))?;
    eprintln!(
        "xtask: integration tests against this kernel ({})",
        kernel_release()
    );
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--package", "tracer-tests", "--"])
        .args(args)
        .env("TRACER_BIN", &bin)
        .env("TRACER_PYTHON", setup::python());
    run(&mut cmd)?;
    // The kernel matrix's 6.1 and 5.10 legs (about 5 minutes, side by side):
    // the paths this kernel lacks (block_bio_queue, kvm:kvm_exit) and older
    // tracepoint layouts are exercised there. TRACER_SKIP_VM=1 skips them
    // outside CI; `cargo xtask vm-test --kernel all` runs 6.12 too.
    if std::env::var("TRACER_SKIP_VM").is_ok_and(|v| v == "1") && !in_ci() {
        eprintln!("xtask: TRACER_SKIP_VM=1: not running the 6.1 and 5.10 kernel matrix");
        return Ok(());
    }
    eprintln!("xtask: integration tests on Debian's 6.1 and 5.10 kernels under qemu");
    setup::vm_prerequisites()?;
    let tests = build_integration_tests()?;
    let opts = vm::Options {
        only: Vec::new(),
        test_threads: None,
        binary_timeout: std::time::Duration::from_secs(300),
        qemu_opts: "-accel tcg,thread=single".into(),
        test_args: args.to_vec(),
    };
    vm::run(&["6.1", "5.10"], &bin, &tests, &opts)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn install(prefix: &Path) -> Result<()> {
    setup::build_prerequisites()?;
    let bin = build_release()?;
    let bindir = prefix.join("bin");
    std::fs::create_dir_all(&bindir).with_context(|| format!("creating {}", bindir.display()))?;
    let dest = bindir.join("tracer");
    std::fs::copy(&bin, &dest).with_context(|| format!("copying to {}", dest.display()))?;
    let names = Command::new(&bin)
        .args(["list", "--names"])
        .output()
        .context("listing tool names")?;
    for name in String::from_utf8_lossy(&names.stdout).split_whitespace() {
        let link = bindir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("tracer", &link)
            .with_context(|| format!("creating {}", link.display()))?;
        eprintln!("xtask: {} -> tracer", link.display());
    }
    eprintln!("xtask: installed {}", dest.display());
    Ok(())
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("TRACER_EBPF_STUBS", "1"))?;
    // The kernel programs only build for the BPF target, with nightly's build-std.
    run(Command::new("rustup")
        .current_dir(workspace_root().join("tracer-ebpf"))
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--bins",
        ])
        .args([
            "--target-dir",
            "../target/ebpf-clippy",
            "--",
            "-D",
            "warnings",
        ])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        ))
}
