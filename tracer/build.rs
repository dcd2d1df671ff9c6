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
    .map_err(|e| anyhow!("building the eBPF programs failed (run `cargo xtask setup`): {e:#}"))?;
    for bin in ebpf_bins(&ebpf_dir)? {
        let path = out_dir.join(&bin);
        let elf = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let stripped = strip_dwarf(&elf).with_context(|| format!("stripping {bin}"))?;
        fs::write(&path, stripped)?;
    }
    Ok(())
}

/// The object without its DWARF sections. The compiler's debug info is needed
/// only to make the .BTF and .BTF.ext sections (bpf-linker does that), which
/// the loader and the verifier's line info use; the DWARF is 80% of each
/// object, and what is embedded is mapped into every run's memory.
fn strip_dwarf(elf: &[u8]) -> anyhow::Result<Vec<u8>> {
    use object::build::elf::SectionData;
    let mut builder = object::build::elf::Builder::read(elf)?;
    let is_dwarf = |name: &[u8]| name.starts_with(b".debug_") || name.starts_with(b".rel.debug_");
    let mut deleted = Vec::new();
    for section in builder.sections.iter_mut() {
        if is_dwarf(section.name.as_slice()) {
            section.delete = true;
            deleted.push(section.id());
        }
    }
    for symbol in builder.symbols.iter_mut() {
        if symbol.section.is_some_and(|s| deleted.contains(&s)) {
            symbol.delete = true;
        }
    }
    // bpf-linker keeps the section names in .strtab, which the builder only
    // writes to a section string table of their own.
    if !builder
        .sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString))
    {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = SectionData::SectionString;
    }
    let mut out = Vec::new();
    builder.write(&mut out)?;
    Ok(out)
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
