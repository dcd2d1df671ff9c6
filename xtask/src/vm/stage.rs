//! Staging: the tracer binary, the test binaries and their helpers, copied
//! where the guests read them.

use super::*;

pub(super) struct Stage {
    /// target/vm-test/stage: tracer, the helpers, deps/<test binaries>.
    pub(super) dir: PathBuf,
    /// (name, staged path), in the order they run.
    pub(super) tests: Vec<(String, PathBuf)>,
}

/// `biolatency-0123456789abcdef` -> `biolatency`.
pub(super) fn test_name(path: &Path) -> String {
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
pub(super) fn stage_binaries(bin: &Path, tests: &[PathBuf], only: &[String]) -> Result<Stage> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binary_names() {
        assert_eq!(
            test_name(Path::new("/t/release/deps/kvm_guest-0bc3f878857a908b")),
            "kvm_guest"
        );
        assert_eq!(test_name(Path::new("/t/deps/page-toucher")), "page-toucher");
    }
}
