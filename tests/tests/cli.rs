//! Bad input, privileges, tracefs and the shared command-line conventions.

use std::process::Command;

use tracer_tests::{
    Finished, require_tracing, run_command, run_in_own_mounts, run_tracer, tracer_bin,
};

#[test]
fn bad_intervals_are_one_line_errors() {
    for bad in ["0", "-1", "abc"] {
        let out = run_tracer(&["biolatency", bad]);
        out.assert_one_line_error("interval must be a positive whole number");
        assert_eq!(out.status.code(), Some(2));
    }
    run_tracer(&["biolatency", "1", "0"])
        .assert_one_line_error("count must be a positive whole number");
    run_tracer(&["biotop", "-r", "0"]).assert_one_line_error("biotop:");
    run_tracer(&["nosuchtool"]).assert_one_line_error("unrecognized subcommand");
}

/// The tools and aliases (`tracer list --names`).
fn tool_names() -> Vec<String> {
    let names = run_tracer(&["list", "--names"]);
    names.assert_success();
    names.stdout.split_whitespace().map(String::from).collect()
}

/// The tools and aliases whose --help offers `flag` (e.g. `--disk`).
fn tools_offering(flag: &str) -> Vec<String> {
    let tools: Vec<String> = tool_names()
        .into_iter()
        .filter(|tool| {
            let help = run_tracer(&[tool, "--help"]);
            help.assert_success();
            help.stdout.lines().any(|l| {
                l.trim_start().starts_with('-')
                    && l.split_whitespace()
                        .any(|w| w.trim_end_matches(',') == flag)
            })
        })
        .collect();
    assert!(!tools.is_empty(), "no tool offers {flag}");
    tools
}

/// An unknown disk, for every tool with a disk filter; a pid that is no
/// number; a cgroup that does not exist. (Pids that do not exist: below.)
#[test]
fn unknown_disk_pid_and_cgroup() {
    for tool in tools_offering("--disk") {
        run_tracer(&[&tool, "-d", "nosuchdisk"]).assert_one_line_error("unknown disk: nosuchdisk");
    }
    run_tracer(&["biolatency", "-p", "abc"]).assert_one_line_error("invalid value 'abc'");
    run_tracer(&["biolatency", "-c", "/no/such/cgroup"]).assert_one_line_error("no such cgroup");
    run_tracer(&["biosnoop", "--min-latency", "-3"]).assert_one_line_error("--min-latency");
}

#[test]
fn not_root_is_a_clear_error() {
    require_tracing!();
    // Drop to nobody: no capabilities left.
    let out = run_command(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(tracer_bin())
            .arg("biolatency"),
    );
    out.assert_one_line_error("needs root (CAP_BPF and CAP_PERFMON)");
}

#[test]
fn tracefs_absent_and_unmountable_is_a_clear_error() {
    require_tracing!();
    // A private mount namespace without tracefs, and no CAP_SYS_ADMIN to mount
    // it (CAP_BPF and CAP_PERFMON remain, so loading would otherwise work).
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
         exec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin -- {} biolatency",
        tracer_bin().display()
    );
    let out = run_in_own_mounts(&script);
    out.assert_one_line_error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed",
    );
}

#[test]
fn tracefs_is_mounted_when_missing() {
    require_tracing!();
    let script = format!(
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; exec {} doctor",
        tracer_bin().display()
    );
    let out = run_in_own_mounts(&script);
    out.assert_success();
    assert!(
        out.stdout.contains("was not mounted: mounted it now"),
        "{}",
        out.stdout
    );
}

#[test]
fn list_and_doctor() {
    require_tracing!();
    let out = run_tracer(&["list"]);
    out.assert_success();
    for tool in [
        "biolatency",
        "biosnoop (iosnoop)",
        "biotop",
        "bitesize",
        "biopattern",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(tool))
            .unwrap_or_else(|| panic!("{tool} missing:\n{}", out.stdout));
        assert!(line.contains(" yes "), "{line}");
    }
    let out = run_tracer(&["doctor", "--json"]);
    out.assert_success();
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["privileges"], true);
    assert_eq!(v["btf"], true);
    let biolat = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "biolatency")
        .unwrap();
    // With BTF (CI requires it), the BTF-typed tracepoint.
    assert_eq!(biolat["hooks"][0]["hook"], "BTF tracepoint block_rq_issue");
}

#[test]
fn answers_to_tool_names_through_argv0() {
    let dir = std::env::temp_dir().join(format!("tracer-argv0-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("iosnoop");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(tracer_bin(), &link).unwrap();
    let out = run_command(Command::new(&link).arg("--help"));
    std::fs::remove_dir_all(&dir).unwrap();
    out.assert_success();
    assert!(out.stdout.contains("--min-latency"), "{}", out.stdout);
}

#[test]
fn sigterm_prints_the_final_result() {
    require_tracing!();
    let t = tracer_tests::Tracer::start(&["biolatency", "--json"]);
    let out = t.stop_with(libc::SIGTERM);
    out.assert_success();
    assert_eq!(out.json().len(), 1, "{}", out.stdout);
}

#[test]
fn every_tool_rejects_bad_intervals_and_pids() {
    for tool in &tool_names() {
        run_tracer(&[tool, "0"]).assert_one_line_error("interval must be a positive whole number");
        run_tracer(&[tool, "abc"])
            .assert_one_line_error("interval must be a positive whole number");
        run_tracer(&[tool, "1", "-1"])
            .assert_one_line_error("count must be a positive whole number");
    }
    // By name, not from --help: this also asserts that each offers -p.
    for tool in [
        "biolatency",
        "biosnoop",
        "biotop",
        "bitesize",
        "pagefaults",
        "faultlat",
        "faultsnoop",
        "kvmexits",
        "tcpconnlat",
    ] {
        run_tracer(&[tool, "-p", "999999999"]).assert_one_line_error("no such process: 999999999");
    }
    run_tracer(&["faultsnoop", "--min-latency", "-5"]).assert_one_line_error("--min-latency");
    run_tracer(&["faultlat", "-m", "-n"]).assert_one_line_error("cannot be used with");
}

/// Runs tracer where it must stop at parsing: killed after 10 s (100 times what
/// it needs under emulation), so that a value wrongly accepted (the tool would then
/// trace until Ctrl-C) fails the test instead of hanging it; in the temporary
/// directory, where such a `tracer record` would write its captures.
fn run_to_parse(args: &[&str]) -> Finished {
    run_command(
        Command::new("timeout")
            .args(["-s", "KILL", "10"])
            .arg(tracer_bin())
            .args(args)
            .current_dir(std::env::temp_dir()),
    )
}

/// Asserts a usage error: exit status 2, nothing on stdout, exactly `line` on stderr.
#[track_caller]
fn assert_usage_error(out: &Finished, line: &str) {
    assert_eq!(
        (out.status.code(), out.stdout.as_str(), out.stderr.as_str()),
        (Some(2), "", format!("{line}\n").as_str())
    );
}

const DURATION_RANGE: &str = "out of range: a duration is from 0 to 168h (7 days) (see --help)";

/// Numbers too large for a Duration or an Instant used to panic (exit 101) after
/// parsing, some only once the tool had attached.
#[test]
fn huge_durations_and_intervals_are_usage_errors() {
    let huge = "99999999999999999999s";
    for flag in ["--before", "--after", "--holdoff", "--fault-floor"] {
        assert_usage_error(
            &run_to_parse(&["record", flag, huge]),
            &format!("record: invalid value '{huge}' for '{flag} <DURATION>': {DURATION_RANGE}"),
        );
    }
    let trigger = format!("block.lat>{huge}");
    assert_usage_error(
        &run_to_parse(&["record", "--trigger", &trigger]),
        &format!(
            "record: invalid value '{trigger}' for '--trigger <EXPR>': bad trigger '{trigger}': {DURATION_RANGE}"
        ),
    );
    let max = "18446744073709551615";
    for tool in &tool_names() {
        assert_usage_error(
            &run_to_parse(&[tool, max, "1"]),
            &format!(
                "{tool}: invalid value '{max}' for '[INTERVAL]': interval must be a positive \
                 whole number of seconds, at most 604800 (7 days) (see --help)"
            ),
        );
    }
}

/// `block.lat>50` used to mean 50 s.
#[test]
fn a_trigger_duration_needs_a_unit() {
    for trigger in ["block.lat>50", "tcp.connlat>1"] {
        assert_usage_error(
            &run_to_parse(&["record", "--trigger", trigger]),
            &format!(
                "record: invalid value '{trigger}' for '--trigger <EXPR>': bad trigger '{trigger}': \
                 a duration needs a unit: ns, us, ms, s, m or h, e.g. 50ms (see --help)"
            ),
        );
    }
}

/// How a numeric value flag reads its value, by the value name --help shows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Takes {
    /// A number and a unit: `50ms`.
    Duration,
    /// A number and K, M or G: `64M`.
    Size,
    /// A plain number: its unit is the flag's (MS, US, SECONDS, INTERVAL in
    /// seconds), or it is a count (N, ROWS, COUNT). There is no unit to miss.
    Number,
}

const NUMERIC: &[(&str, Takes)] = &[
    ("DURATION", Takes::Duration),
    ("SIZE", Takes::Size),
    ("MS", Takes::Number),
    ("US", Takes::Number),
    ("SECONDS", Takes::Number),
    ("N", Takes::Number),
    ("ROWS", Takes::Number),
    ("INTERVAL", Takes::Number),
    ("COUNT", Takes::Number),
];

/// Value names that are not durations, sizes, counts or intervals: names,
/// paths, addresses, choices and identifiers (a PID or a port is not a count).
const NOT_NUMERIC: &[&str] = &[
    "DISK",
    "PID",
    "CGROUP_PATH",
    "COMM",
    "FILE.svg",
    "SORT",
    "BACKEND",
    "ADDR",
    "PORT",
    "LIST",
    "EXPR",
    "DIR",
    "ADDR:PORT",
    "TOOL,...|all",
    "INPUT",
    "OUT.svg",
    "kind",
    "FILE",
    "OUT",
];

/// Flags that accept 0 (`0s` for durations), and why.
const ZERO_OK: &[(&str, &str, &str)] = &[
    ("record", "--before", "a capture may keep no past"),
    ("record", "--after", "a capture may end at its trigger"),
    (
        "record",
        "--holdoff",
        "captures may follow each other at once",
    ),
    ("record", "--fault-floor", "every fault is kept"),
    ("record", "--trigger", "block.lat>0s: any I/O triggers"),
    ("biosnoop", "--min-latency", "every I/O is printed"),
    ("iosnoop", "--min-latency", "every I/O is printed"),
    ("faultsnoop", "--min-latency", "every fault is printed"),
    ("tcpconnlat", "--min-latency", "every connect is printed"),
    ("kvmexits", "--vcpu", "an index, not a count: vCPU 0"),
];

/// A numeric value flag: `--before`, or a positional such as `[INTERVAL]`.
#[derive(Clone, Debug)]
struct ValueFlag {
    sub: String,
    flag: String,
    takes: Takes,
    /// Put before the value: the trigger's duration is inside its expression.
    prefix: &'static str,
    /// Whether `sub` takes `[INTERVAL] [COUNT]`, which swallow a later `--flag`.
    positionals: bool,
}

impl ValueFlag {
    /// The command line giving this flag `value`, then (for an accepted
    /// value) an unknown flag: the error it gets shows that the value passed.
    fn args(&self, value: &str, then_unknown: bool) -> Vec<String> {
        let value = format!("{}{value}", self.prefix);
        let mut args = vec![self.sub.clone()];
        match self.flag.as_str() {
            "[INTERVAL]" => args.extend([value, "1".into()]),
            "[COUNT]" => args.extend(["1".into(), value]),
            flag if self.positionals && then_unknown => {
                args.extend([flag.into(), value, "1".into(), "1".into()])
            }
            flag => args.extend([flag.into(), value]),
        }
        if then_unknown {
            args.push("--no-such-flag".into());
        }
        args
    }

    fn zero_ok(&self) -> bool {
        ZERO_OK
            .iter()
            .any(|(s, f, _)| *s == self.sub && *f == self.flag)
    }

    /// Values to refuse: 0, -1, 2^64, 1e308, NaN, "", and a missing unit (each
    /// numeric one also with its unit, for flags that need one).
    fn bad_values(&self) -> Vec<String> {
        let plain = ["0", "-1", "18446744073709551616", "1e308", "NaN", ""];
        let mut bad: Vec<String> = plain.iter().map(|v| v.to_string()).collect();
        let unit = match self.takes {
            Takes::Duration => "s",
            Takes::Size => "M",
            Takes::Number => {
                if self.zero_ok() {
                    bad.retain(|v| v != "0");
                }
                return bad;
            }
        };
        bad.extend(plain[..5].iter().map(|v| format!("{v}{unit}")));
        if self.zero_ok() {
            bad.retain(|v| *v != format!("0{unit}"));
        }
        bad.push(if self.takes == Takes::Size { "64" } else { "5" }.into());
        bad
    }

    /// Values to accept (checked by a later unknown flag being the error).
    fn good_values(&self) -> Vec<&'static str> {
        match (self.takes, self.zero_ok()) {
            (Takes::Duration, true) => vec!["1s", "0s"],
            (Takes::Duration, false) => vec!["1s"],
            (Takes::Size, _) => vec!["1M"],
            (Takes::Number, true) => vec!["1", "0"],
            (Takes::Number, false) => vec!["1"],
        }
    }
}

/// Every subcommand and alias, from `tracer --help` and `tracer list --names`.
fn subcommands() -> Vec<String> {
    let help = run_tracer(&["--help"]);
    help.assert_success();
    let mut subs: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .map(String::from)
        .collect();
    for name in tool_names() {
        if !subs.contains(&name) {
            subs.push(name);
        }
    }
    subs
}

/// `sub`'s numeric value flags, from its --help: `  -r, --rows <ROWS>` and
/// `  [INTERVAL]` (descriptions are indented further). Panics on a value name
/// neither list classifies, so that a new flag cannot go untested.
fn value_flags(sub: &str) -> Vec<ValueFlag> {
    let help = run_tracer(&[sub, "--help"]);
    help.assert_success();
    let positionals = help.stdout.contains("[INTERVAL] [COUNT]");
    let mut flags = Vec::new();
    for line in help.stdout.lines() {
        let text = line.trim_start();
        if line.len() - text.len() > 6 {
            continue;
        }
        let mut words = text.split_whitespace();
        let (flag, value) = match text.chars().next() {
            Some('[' | '<') => {
                let w = words.next().unwrap_or_default();
                (w, w.trim_matches(['[', ']', '<', '>']))
            }
            Some('-') => {
                let Some(flag) = words.find(|w| w.starts_with("--")) else {
                    continue;
                };
                match words.next().filter(|w| w.starts_with('<')) {
                    Some(v) => (flag.trim_end_matches(','), v.trim_matches(['<', '>'])),
                    None => continue,
                }
            }
            _ => continue,
        };
        match NUMERIC.iter().find(|(name, _)| *name == value) {
            Some(&(_, takes)) => flags.push(ValueFlag {
                sub: sub.to_string(),
                flag: flag.to_string(),
                takes,
                prefix: "",
                positionals,
            }),
            None => assert!(
                NOT_NUMERIC.contains(&value),
                "{sub} {flag}: classify its value name {value} in this test"
            ),
        }
    }
    flags
}

/// Every numeric flag, and the durations inside `record --trigger`.
fn all_value_flags() -> Vec<ValueFlag> {
    let mut flags: Vec<ValueFlag> = subcommands().iter().flat_map(|s| value_flags(s)).collect();
    for prefix in ["block.lat>", "fault.lat>", "kvm.lat>", "tcp.connlat>"] {
        flags.push(ValueFlag {
            sub: "record".into(),
            flag: "--trigger".into(),
            takes: Takes::Duration,
            prefix,
            positionals: false,
        });
    }
    flags
}

/// One invocation's check: a refused value is one usage-error line about this
/// flag and value; an accepted one gets as far as the unknown flag after it.
fn check(f: &ValueFlag, value: &str, accepted: bool) -> Result<(), String> {
    let args = f.args(value, accepted);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_to_parse(&argv);
    let line = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    let about = if f.flag.starts_with('[') {
        f.flag.clone()
    } else {
        format!("{} <", f.flag)
    };
    let ok = out.status.code() == Some(2)
        && out.stdout.is_empty()
        && !line.contains('\n')
        && line.ends_with(" (see --help)")
        && if accepted {
            line == format!(
                "{}: unexpected argument '--no-such-flag' found (see --help)",
                f.sub
            )
        } else {
            line.starts_with(&format!(
                "{}: invalid value '{}{value}' for '{about}",
                f.sub, f.prefix
            ))
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tracer {argv:?}: {:?} stdout {:?} stderr {:?}",
            out.status.code(),
            out.stdout,
            out.stderr
        ))
    }
}

/// Every duration, size, count and interval flag of every subcommand, fed 0,
/// -1, 2^64, 1e308, NaN, "" and a missing unit, exits 2 with one line naming
/// the flag; flags in ZERO_OK accept 0. Nothing attaches: parsing fails first.
#[test]
fn every_numeric_flag_refuses_out_of_range_values() {
    let flags = all_value_flags();
    let found: Vec<(&str, &str)> = flags
        .iter()
        .map(|f| (f.sub.as_str(), f.flag.as_str()))
        .collect();
    for tool in &tool_names() {
        for positional in ["[INTERVAL]", "[COUNT]"] {
            assert!(
                found.contains(&(tool.as_str(), positional)),
                "{tool} {positional}"
            );
        }
    }
    for known in [
        ("record", "--before"),
        ("record", "--after"),
        ("record", "--holdoff"),
        ("record", "--fault-floor"),
        ("record", "--max-mem"),
        ("record", "--max-captures"),
        ("exporter", "--top-processes"),
        ("plot", "--interval"),
        ("biosnoop", "--min-latency"),
        ("faultsnoop", "--min-latency"),
        ("tcpconnlat", "--min-latency"),
        ("biotop", "--rows"),
        ("pagefaults", "--rows"),
        ("kvmexits", "--top"),
        ("kvmexits", "--vcpu"),
    ] {
        assert!(
            found.contains(&known),
            "{known:?} not discovered in {found:?}"
        );
    }
    for (sub, flag, _) in ZERO_OK {
        assert!(found.contains(&(sub, flag)), "ZERO_OK lists {sub} {flag}");
    }
    let cases: Vec<(&ValueFlag, String, bool)> = flags
        .iter()
        .flat_map(|f| {
            let bad = f.bad_values().into_iter().map(move |v| (f, v, false));
            let good = f
                .good_values()
                .into_iter()
                .map(move |v| (f, v.to_string(), true));
            bad.chain(good)
        })
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(f, v, accepted)| check(f, v, *accepted).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
