//! Reports: a table per kernel, the failures' excerpts, the matrix.

use super::*;

/// Compact hook names for the table.
pub(super) fn short_hook(h: &str) -> String {
    h.replace("raw tracepoint ", "raw_tp ")
        .replace("tracepoint ", "tp ")
        .replace("software perf event ", "perf ")
        .replace(" (every CPU)", "")
}

/// `tracer doctor --json` from the guest, as far as the report reads it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Doctor {
    pub(super) kprobes: Option<bool>,
    pub(super) btf: Option<bool>,
    pub(super) tools: Vec<DoctorTool>,
}

#[derive(Debug, PartialEq)]
pub(super) struct DoctorTool {
    pub(super) tool: String,
    /// It can run on this kernel.
    pub(super) runs: bool,
    pub(super) hooks: Vec<DoctorHook>,
    /// Why it cannot run, or what went wrong probing it.
    pub(super) why: Option<String>,
}

#[derive(Debug, PartialEq)]
pub(super) struct DoctorHook {
    pub(super) role: String,
    /// Empty when no hook fills the role here.
    pub(super) hook: String,
    /// The option that needs it ("" = always).
    pub(super) when: String,
    pub(super) fallback: bool,
}

impl Doctor {
    /// Parses the report, refusing one whose shape is not doctor's.
    pub(super) fn parse(text: &str) -> Result<Doctor> {
        let v: Value = serde_json::from_str(text.trim()).context("not JSON")?;
        let str_of = |v: &Value, key: &str| -> Result<String> {
            match &v[key] {
                Value::Null => Ok(String::new()),
                Value::String(s) => Ok(s.clone()),
                other => bail!("{key} is not a string: {other}"),
            }
        };
        let tools = v["tools"]
            .as_array()
            .context("no tools array")?
            .iter()
            .map(|t| {
                let hooks = t["hooks"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|h| {
                        Ok(DoctorHook {
                            role: str_of(h, "role")?,
                            hook: str_of(h, "hook")?,
                            when: str_of(h, "when")?,
                            fallback: str_of(h, "detail")?.contains("(fallback"),
                        })
                    })
                    .collect::<Result<_>>()?;
                let why = [str_of(t, "error")?, str_of(t, "why")?]
                    .into_iter()
                    .find(|w| !w.is_empty());
                Ok(DoctorTool {
                    tool: str_of(t, "tool")?,
                    runs: t["runs"].as_bool().context("a tool without runs")?,
                    hooks,
                    why,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Doctor {
            kprobes: v["kprobes"].as_bool(),
            btf: v["btf"].as_bool(),
            tools,
        })
    }

    /// The hooks a tool chose on the guest's kernel, for the table.
    pub(super) fn tool_path(&self, tool: &str) -> Option<(bool, String)> {
        let t = self.tools.iter().find(|t| t.tool == tool)?;
        let mut parts = Vec::new();
        for h in &t.hooks {
            let mut p = format!("{}: ", h.role);
            if h.hook.is_empty() {
                p.push_str("none");
            } else {
                p.push_str(&short_hook(&h.hook));
            }
            if h.fallback {
                p.push_str(" (fallback)");
            }
            if !h.when.is_empty() {
                p.push_str(&format!(" [{}]", h.when));
            }
            parts.push(p);
        }
        if let Some(why) = &t.why {
            parts.push(format!("({why})"));
        }
        Some((t.runs, parts.join("; ")))
    }
}

pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(super) fn report(series: &str, k: &Kernel, run: &GuestRun, stage: &Stage) -> String {
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
        let yn = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = writeln!(
            s,
            "Guest: kprobes {}, BTF {}, tracefs {}, /dev/kvm {}.",
            yn(d.kprobes),
            yn(d.btf),
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
    let none = Doctor::default();
    let doctor = run.doctor.as_ref().unwrap_or(&none);
    let tools: Vec<String> = doctor.tools.iter().map(|t| t.tool.clone()).collect();
    for (name, _) in &stage.tests {
        let b = run.bins.iter().find(|b| &b.name == name);
        let (offered, mut path) = match doctor.tool_path(name) {
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
        if let Some((runs, p)) = doctor.tool_path(t) {
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
pub(super) fn show_failures(series: &str, run: &GuestRun) {
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
pub(super) fn matrix(outcomes: &[(String, GuestRun)], stage: &Stage) -> String {
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
