//! Benchmarks (filled in below).
use std::path::Path;

use anyhow::{Result, bail};

pub fn run(_bin: &Path, _rounds: usize, _only: &[String]) -> Result<()> {
    bail!("benchmarks are not written yet")
}
