//! Builds the eBPF programs (one ELF per tool) with aya-build and leaves them in
//! OUT_DIR for `include_bytes_aligned!`. With TRACER_EBPF_STUBS=1 (cargo check,
//! clippy, machines without bpf-linker) empty stubs are written instead; a release
//! build refuses stubs so a shipped binary always embeds real programs.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow, bail};

const EBPF_PACKAGE: &str = "tracer-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_STUBS");
    println!("cargo::rustc-check-cfg=cfg(ebpf_stubs)");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("workspace root")?
        .join(EBPF_PACKAGE);
    let ebpf_dir_str = ebpf_dir.to_str().context("non-UTF-8 path")?;

    if env::var("TRACER_EBPF_STUBS").is_ok_and(|v| v == "1") {
        if env::var("PROFILE").is_ok_and(|p| p == "release") {
            bail!(
                "TRACER_EBPF_STUBS=1 is for checks only: a release build must embed real eBPF programs"
            );
        }
        println!("cargo:rustc-cfg=ebpf_stubs");
        for bin in ebpf_bins(&ebpf_dir)? {
            fs::write(out_dir.join(bin), b"")?;
        }
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: ebpf_dir_str,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .map_err(|e| anyhow!("building the eBPF programs failed (run `cargo xtask setup`): {e:#}"))
}

/// The tools' ELF names: one per file in tracer-ebpf/src/bin.
fn ebpf_bins(ebpf_dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut bins = Vec::new();
    for entry in fs::read_dir(ebpf_dir.join("src/bin"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            bins.push(
                path.file_stem()
                    .context("file name")?
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    Ok(bins)
}
