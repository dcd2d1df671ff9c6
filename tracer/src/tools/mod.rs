//! The tool registry: adding a tool is one file here plus one line in `TOOLS`.

use anyhow::Result;
use clap::{ArgMatches, Command};
use serde_json::json;

use crate::core::{ebpf::HookChain, kernel, tracefs};

mod biolatency;
mod biopattern;
mod biosnoop;
mod biotop;
mod bitesize;
mod faultlat;
mod faultsnoop;
mod kvmexits;
mod pagefaults;
mod tcpconnlat;
mod tcpdrop;
mod tcpretrans;
mod tcprtt;

/// A tool: its command line, its run function and the hooks it may use.
pub struct Tool {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub about: &'static str,
    pub command: fn() -> Command,
    pub run: fn(&ArgMatches) -> Result<()>,
    /// Hook chains the tool always needs.
    pub hooks: &'static [HookChain],
    /// Hook chains used only with some options, with the option.
    pub optional_hooks: &'static [(&'static str, HookChain)],
}

pub static TOOLS: &[&Tool] = &[
    &biolatency::TOOL,
    &biosnoop::TOOL,
    &biotop::TOOL,
    &bitesize::TOOL,
    &biopattern::TOOL,
    &pagefaults::TOOL,
    &faultlat::TOOL,
    &faultsnoop::TOOL,
    &kvmexits::TOOL,
    &tcpretrans::TOOL,
    &tcprtt::TOOL,
    &tcpconnlat::TOOL,
    &tcpdrop::TOOL,
];

pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS
        .iter()
        .copied()
        .find(|t| t.name == name || t.aliases.contains(&name))
}

/// Whether the running kernel has a hook for every chain the tool needs.
fn runnable(tool: &Tool) -> Result<(), String> {
    for chain in tool.hooks {
        chain.choose().map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

pub fn list(names_only: bool) -> Result<()> {
    if names_only {
        for tool in TOOLS {
            println!("{}", tool.name);
            for alias in tool.aliases {
                println!("{alias}");
            }
        }
        return Ok(());
    }
    let probe = tracefs::ensure().map(|_| ()).map_err(|e| format!("{e:#}"));
    println!("{:<12} {:<5} DESCRIPTION", "TOOL", "RUNS");
    for tool in TOOLS {
        let runs = match &probe {
            Err(_) => "?",
            Ok(()) if runnable(tool).is_ok() => "yes",
            Ok(()) => "no",
        };
        let name = if tool.aliases.is_empty() {
            tool.name.to_string()
        } else {
            format!("{} ({})", tool.name, tool.aliases.join(", "))
        };
        println!("{name:<12} {runs:<5} {}", tool.about);
    }
    if let Err(e) = probe {
        eprintln!("list: cannot probe this kernel's hooks: {e}");
    }
    Ok(())
}

pub fn doctor(as_json: bool) -> Result<()> {
    let privileged = kernel::has_bpf_privileges();
    let tracefs = tracefs::ensure();
    let mut tools = Vec::new();
    for tool in TOOLS {
        let mut hooks = Vec::new();
        let chains = tool
            .hooks
            .iter()
            .map(|c| ("", c))
            .chain(tool.optional_hooks.iter().map(|(w, c)| (*w, c)));
        for (when, chain) in chains {
            let (hook, detail) = match chain.choose() {
                Ok(choice) => (Some(choice.hook.to_string()), choice.explain()),
                Err(e) => (None, format!("{e:#}")),
            };
            hooks.push(json!({"role": chain.role, "when": when, "hook": hook, "detail": detail}));
        }
        tools.push(json!({"tool": tool.name, "runs": runnable(tool).is_ok(), "hooks": hooks}));
    }
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
    if as_json {
        println!("{report}");
        return Ok(());
    }
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
    match &tracefs {
        Ok(t) if t.mounted_now => println!(
            "tracefs     {} (was not mounted: mounted it now)",
            t.path.display()
        ),
        Ok(t) => println!("tracefs     {}", t.path.display()),
        Err(e) => println!("tracefs     NO: {e:#}"),
    }
    for tool in report["tools"].as_array().into_iter().flatten() {
        println!(
            "\n{} ({})",
            tool["tool"].as_str().unwrap_or(""),
            if tool["runs"] == true {
                "runs"
            } else {
                "cannot run"
            }
        );
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
    Ok(())
}
