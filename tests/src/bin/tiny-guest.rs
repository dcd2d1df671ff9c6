//! tiny-guest: runs the test suite's tiny KVM guest once, for benchmarks and demos.
//!
//! ```text
//! tiny-guest [--outs N] [--mmio N] [--cpuid N] [--rdmsr N] [--wrmsr N] [--repeat R]
//! ```
//!
//! The guest does N `out`s to port 0x3f8, N MMIO writes, N `cpuid`s, N `rdmsr`s
//! and N `wrmsr`s (in that order; each N defaults to 0), then `hlt`. `--repeat R`
//! (default 1) re-enters the same program R times in one VM on one vCPU thread
//! ("CPU 0/KVM", so its tid stays the same), and the counts are totals over all
//! rounds. Prints one JSON line: the GuestRun fields (exit_counts keyed by the
//! KVM_EXIT_* number), the program, `repeat`, and `seconds` spent in the guest
//! run (VM creation included).

use std::{process::ExitCode, time::Instant};

use serde_json::json;
use tracer_tests::kvm::{GuestProgram, run_guest_repeated};

const USAGE: &str =
    "usage: tiny-guest [--outs N] [--mmio N] [--cpuid N] [--rdmsr N] [--wrmsr N] [--repeat R]";

fn parse_args(args: &[String]) -> Result<(GuestProgram, u32), String> {
    let mut p = GuestProgram::default();
    let mut repeat = 1;
    let mut args = args.iter();
    while let Some(opt) = args.next() {
        let slot = match opt.as_str() {
            "--outs" => &mut p.outs,
            "--mmio" => &mut p.mmio_writes,
            "--cpuid" => &mut p.cpuids,
            "--rdmsr" => &mut p.rdmsrs,
            "--wrmsr" => &mut p.wrmsrs,
            "--repeat" => &mut repeat,
            _ => return Err(format!("unknown argument {opt:?}; {USAGE}")),
        };
        let value = args.next().ok_or_else(|| format!("{opt} needs a value"))?;
        *slot = value.parse().map_err(|_| {
            format!(
                "{opt}: {value:?} is not a whole number from 0 to {}",
                u32::MAX
            )
        })?;
    }
    if repeat == 0 {
        return Err("--repeat must be at least 1".to_string());
    }
    Ok((p, repeat))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (p, repeat) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("tiny-guest: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let run = match run_guest_repeated(&p, repeat) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("tiny-guest: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let exit_counts: serde_json::Map<String, serde_json::Value> = run
        .exit_counts
        .iter()
        .map(|(reason, n)| (reason.to_string(), json!(n)))
        .collect();
    let line = json!({
        "exit_counts": exit_counts,
        "io_exits": run.io_exits,
        "mmio_exits": run.mmio_exits,
        "hlt": run.hlt,
        "vcpu_tid": run.vcpu_tid,
        "pid": run.pid,
        "repeat": repeat,
        "program": {
            "outs": p.outs,
            "mmio_writes": p.mmio_writes,
            "cpuids": p.cpuids,
            "rdmsrs": p.rdmsrs,
            "wrmsrs": p.wrmsrs,
        },
        "seconds": seconds,
    });
    println!("{line}");
    ExitCode::SUCCESS
}
