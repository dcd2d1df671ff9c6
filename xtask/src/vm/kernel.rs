//! Kernels: the newest Debian image of a series, fetched with apt-get download
//! and extracted under target/vm-kernels.

use super::*;

pub(super) struct Kernel {
    pub(super) package: String,
    pub(super) release: String,
    pub(super) vmlinuz: PathBuf,
}

/// The numbers in a package name, for ordering versions (6.12.9 < 6.12.117).
pub(super) fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// Whether `pkg` is the generic amd64 image of `series`: linux-image-6.1.0-56-amd64,
/// linux-image-6.12.117+deb12-amd64; not -cloud, -rt, -unsigned or -dbg.
pub(super) fn is_series_image(pkg: &str, series: &str) -> bool {
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
pub(super) const OTHER_RELEASES: &[(&str, &str)] = &[("5.10", "bullseye")];

/// apt options for `series`: none for the host's own release (6.1, 6.12 are in
/// bookworm); for an older release, a sources list and apt state of its own
/// under target/vm-kernels, so that the host's apt configuration is never
/// touched. Uses the mirror the host's sources already name.
pub(super) fn apt_options(series: &str) -> Result<Vec<String>> {
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
pub(super) fn host_mirror() -> String {
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

pub(super) fn apt_candidates(series: &str, options: &[String]) -> Vec<String> {
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
pub(super) fn extracted(tree: &Path) -> Option<(String, PathBuf)> {
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
pub(super) fn ensure_kernel(series: &str) -> Result<Kernel> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
