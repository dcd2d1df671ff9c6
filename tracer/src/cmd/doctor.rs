//! `tracer doctor`: privileges, BTF, tracefs, and which hook each tool would
//! use here; and the probing `tracer list` shares.

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Value, json};

use super::Subcommand;
use crate::bpf::{Choice, HookUse};
use crate::kernel::{self, tracefs};
use crate::tools::{TOOLS, Tool};

pub(super) const SUBCOMMAND: Subcommand = Subcommand {
    name: "doctor",
    command,
    run,
    names_usage_errors: false,
};

fn command() -> Command {
    Command::new(SUBCOMMAND.name)
        .about("Check privileges, BTF and tracefs, and which hooks each tool would use")
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print JSON"),
        )
}

/// What probing a chain of hooks found.
enum Probed {
    Hook(Choice),
    /// The kernel has none of them: why.
    Absent(String),
    /// No telling: tracefs cannot be used (which is said once, on its own).
    Unknown,
}

fn probe(u: &HookUse) -> Probed {
    match u.chain.choose_with(u.fits) {
        Ok(choice) => Probed::Hook(choice),
        Err(e) if e.is::<tracefs::Unavailable>() => Probed::Unknown,
        Err(e) => Probed::Absent(format!("{e:#}")),
    }
}

/// Whether the running kernel has a hook for every chain the tool always
/// needs; None when that cannot be told.
pub(super) fn runnable(tool: &Tool) -> Option<bool> {
    let mut runs = Some(true);
    for u in (tool.hooks)().iter().filter(|u| u.when.is_empty()) {
        match probe(u) {
            Probed::Hook(_) => {}
            Probed::Absent(_) => return Some(false),
            Probed::Unknown => runs = None,
        }
    }
    runs
}

fn run(m: &ArgMatches) -> Result<()> {
    let privileged = kernel::has_bpf_privileges();
    let tracefs = tracefs::ensure();
    let tools: Vec<Value> = TOOLS.iter().map(|t| tool_report(t)).collect();
    let report = json!({
        "kernel": kernel::release(),
        "privileges": privileged,
        "btf": kernel::has_btf(),
        "kprobes": kernel::has_kprobes(),
        "tracefs": match &tracefs {
            Ok(t) => json!({"path": t.path, "mounted_now": t.mounted_now}),
            Err(e) => json!({"error": format!("{e:#}")}),
        },
        "tools": tools,
    });
    if m.get_flag("json") {
        println!("{report}");
    } else {
        print_report(&report, privileged, &tracefs);
    }
    Ok(())
}

/// A tool's hooks as probed here, and whether it runs.
fn tool_report(tool: &Tool) -> Value {
    let mut hooks = Vec::new();
    for u in (tool.hooks)() {
        let (hook, detail) = match probe(&u) {
            Probed::Hook(choice) => (Some(choice.hook.to_string()), choice.explain()),
            Probed::Absent(why) => (None, why),
            Probed::Unknown => (
                None,
                format!("{:<9} unknown: cannot read tracefs", u.chain.role),
            ),
        };
        hooks.push(json!({"role": u.chain.role, "when": u.when, "hook": hook, "detail": detail}));
    }
    json!({"tool": tool.name, "runs": runnable(tool), "hooks": hooks})
}

/// The report as text: the kernel's facilities, then each tool's hooks.
fn print_report(report: &Value, privileged: bool, tracefs: &Result<&tracefs::Tracefs>) {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("kernel      {}", kernel::release());
    println!(
        "privileges  {}",
        if privileged {
            "yes (CAP_BPF + CAP_PERFMON)"
        } else {
            "NO: run as root (CAP_BPF and CAP_PERFMON)"
        }
    );
    println!(
        "BTF         {} ({})",
        yes_no(kernel::has_btf()),
        kernel::BTF_PATH
    );
    println!("kprobes     {}", yes_no(kernel::has_kprobes()));
    match tracefs {
        Ok(t) if t.mounted_now => println!(
            "tracefs     {} (was not mounted: mounted it now)",
            t.path.display()
        ),
        Ok(t) => println!("tracefs     {}", t.path.display()),
        Err(e) => println!("tracefs     NO: {e:#}"),
    }
    for tool in report["tools"].as_array().into_iter().flatten() {
        let runs = match tool["runs"].as_bool() {
            Some(true) => "runs",
            Some(false) => "cannot run",
            None => "unknown: cannot read tracefs",
        };
        println!("\n{} ({runs})", tool["tool"].as_str().unwrap_or(""));
        for hook in tool["hooks"].as_array().into_iter().flatten() {
            let when = hook["when"].as_str().unwrap_or("");
            let when = if when.is_empty() {
                String::new()
            } else {
                format!(" [with {when}]")
            };
            println!("  {}{when}", hook["detail"].as_str().unwrap_or(""));
        }
    }
}
