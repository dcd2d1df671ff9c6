//! `cargo xtask bench`: what tracing costs, measured side by side with bpftrace.
//!
//! (a) BPF run time per event from the kernel's own statistics
//!     (kernel.bpf_stats_enabled; run_time_ns / run_cnt of each program) — this
//!     machine's wall clock is too noisy for differences of 100 ns, these are not;
//! (b) end to end: the workload's time per operation with no tracing, with tracer
//!     and with bpftrace, in alternating rounds, medians and ratios;
//! (c) start-up: exec to attached (tracer's banner, bpftrace's BEGIN);
//! (d) peak RSS (VmHWM from /proc/PID/status, not wait4's figure).
//! The report goes to stdout and to target/bench-report.md.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{run as run_cmd, workspace_root};

/// A tracing configuration under test.
#[derive(Clone)]
enum Tracing {
    None,
    Tracer(Vec<String>),
    Bpftrace(String),
    /// A libbpf-tools program (Debian's package) and its arguments.
    LibbpfTools(Vec<String>),
}

#[derive(Clone)]
struct Config {
    name: String,
    tracing: Tracing,
}

fn tracer(name: &str, args: &[&str]) -> Config {
    Config {
        name: name.into(),
        tracing: Tracing::Tracer(args.iter().map(|s| s.to_string()).collect()),
    }
}

fn libbpf_tools(name: &str, args: &[&str]) -> Config {
    Config {
        name: name.into(),
        tracing: Tracing::LibbpfTools(args.iter().map(|s| s.to_string()).collect()),
    }
}

fn bpftrace(name: &str, script: &str) -> Config {
    Config {
        name: name.into(),
        tracing: Tracing::Bpftrace(script.into()),
    }
}

/// A started tracer or bpftrace.
struct Running {
    child: Child,
    startup: Duration,
    /// Events the tracer said it lost or missed (its "WARNING: N ..." lines).
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn start(bin: &Path, tracing: &Tracing) -> Result<Option<Running>> {
    let (mut cmd, marker, from_stdout) = match tracing {
        Tracing::None => return Ok(None),
        Tracing::Tracer(args) => {
            let mut c = Command::new(bin);
            c.args(args);
            (c, "Hit Ctrl-C to end.", false)
        }
        Tracing::Bpftrace(script) => {
            // BEGIN runs once every probe is attached.
            let mut c = Command::new("bpftrace");
            c.arg("-e")
                .arg(format!("BEGIN {{ printf(\"ready\\n\"); }} {script}"));
            (c, "ready", true)
        }
        Tracing::LibbpfTools(args) => {
            // Its banner goes to a block-buffered stdout when piped: line-buffer it.
            let mut c = Command::new("stdbuf");
            c.arg("-oL")
                .arg(Path::new("/usr/sbin").join(&args[0]))
                .args(&args[1..]);
            (c, "Hit Ctrl-C to end.", true)
        }
    };
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tracer")?;
    let (tx, rx) = mpsc::channel::<()>();
    let stream: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    // Watch for the marker, then keep draining so the child never blocks.
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lost_seen = lost.clone();
    thread::spawn(move || {
        let mut seen = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !seen && line.contains(marker) {
                seen = true;
                let _ = tx.send(());
            }
            if let Some(n) = line
                .split("WARNING: ")
                .nth(1)
                .and_then(|w| w.split_whitespace().next()?.parse().ok())
            {
                lost_seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let other: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut BufReader::new(other), &mut std::io::sink());
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        bail!("tracing did not start within 30 s");
    }
    Ok(Some(Running {
        child,
        startup: t0.elapsed(),
        lost,
    }))
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Stops a run; returns its peak RSS in KiB, the records it said it lost or
/// missed, and how long it took from SIGINT to exit (detaching included).
fn stop(r: Option<Running>) -> (u64, u64, Option<Duration>) {
    let Some(mut r) = r else { return (0, 0, None) };
    let lost = || {
        // The warning is printed at exit; give the reader thread a moment.
        thread::sleep(Duration::from_millis(50));
        r.lost.load(std::sync::atomic::Ordering::Relaxed)
    };
    let hwm = vm_hwm_kb(r.child.id());
    // SAFETY: signalling our own child.
    let signalled = Instant::now();
    unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
    let deadline = signalled + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = r.child.try_wait() {
            let exit = signalled.elapsed();
            return (hwm, lost(), Some(exit));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let _ = r.child.kill();
    let _ = r.child.wait();
    (hwm, lost(), None)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// BPF program ids currently loaded.
fn prog_ids() -> Result<BTreeSet<u64>> {
    Ok(prog_stats()?.into_keys().collect())
}

/// id → (name, run_time_ns, run_cnt)
fn prog_stats() -> Result<HashMap<u64, (String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing bpftool output")?;
    let mut map = HashMap::new();
    for p in v.as_array().into_iter().flatten() {
        let id = p["id"].as_u64().unwrap_or(0);
        let name = p["name"].as_str().unwrap_or("?").to_string();
        map.insert(
            id,
            (
                name,
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            ),
        );
    }
    Ok(map)
}

struct BpfCost {
    /// Per program: name, ns per run, runs.
    programs: Vec<(String, f64, u64)>,
    /// Sum of all programs' run time divided by the workload's operations.
    per_op_ns: f64,
}

/// Runs the workload once under `cfg` with BPF statistics on, and reads the run
/// time of the programs that configuration loaded.
fn bpf_cost(
    bin: &Path,
    cfg: &Config,
    ops: u64,
    workload: &mut dyn FnMut() -> Result<f64>,
) -> Result<BpfCost> {
    let before = prog_ids()?;
    let running = start(bin, &cfg.tracing)?;
    thread::sleep(Duration::from_millis(200));
    workload()?;
    let stats = prog_stats()?;
    let _ = stop(running);
    let mut programs = Vec::new();
    let mut total = 0u64;
    for (id, (name, ns, cnt)) in stats {
        if before.contains(&id) || cnt == 0 && ns == 0 {
            continue;
        }
        total += ns;
        programs.push((
            name,
            if cnt > 0 { ns as f64 / cnt as f64 } else { 0.0 },
            cnt,
        ));
    }
    programs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(BpfCost {
        programs,
        per_op_ns: total as f64 / ops as f64,
    })
}

struct Scenario<'a> {
    title: &'a str,
    unit: &'a str,
    ops: u64,
    configs: Vec<Config>,
    workload: Box<dyn FnMut() -> Result<f64> + 'a>,
}

/// Alternating rounds of every configuration; then BPF statistics.
fn measure(bin: &Path, rounds: usize, mut s: Scenario<'_>, report: &mut String) -> Result<()> {
    eprintln!(
        "bench: {} ({} rounds of {} configurations)",
        s.title,
        rounds,
        s.configs.len()
    );
    let mut times: HashMap<String, Vec<f64>> = HashMap::new();
    let mut startups: HashMap<String, Vec<f64>> = HashMap::new();
    let mut rss: HashMap<String, u64> = HashMap::new();
    let mut lost: HashMap<String, u64> = HashMap::new();
    let mut exits: HashMap<String, Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        for cfg in &s.configs {
            let running = start(bin, &cfg.tracing)?;
            if let Some(r) = &running {
                startups
                    .entry(cfg.name.clone())
                    .or_default()
                    .push(r.startup.as_secs_f64() * 1e3);
            }
            let per_op = (s.workload)()?;
            let (hwm, n, exit) = stop(running);
            if let Some(exit) = exit {
                exits
                    .entry(cfg.name.clone())
                    .or_default()
                    .push(exit.as_secs_f64() * 1e3);
            }
            rss.entry(cfg.name.clone())
                .and_modify(|m| *m = (*m).max(hwm))
                .or_insert(hwm);
            *lost.entry(cfg.name.clone()).or_default() += n;
            times.entry(cfg.name.clone()).or_default().push(per_op);
            eprintln!(
                "bench:   round {round} {:<28} {per_op:10.2} {}/op",
                cfg.name, s.unit
            );
        }
    }
    run_cmd(Command::new("sysctl").args(["-q", "-w", "kernel.bpf_stats_enabled=1"]))?;
    let mut costs = Vec::new();
    for cfg in s
        .configs
        .iter()
        .filter(|c| !matches!(c.tracing, Tracing::None))
    {
        costs.push((
            cfg.name.clone(),
            bpf_cost(bin, cfg, s.ops, &mut s.workload)?,
        ));
    }
    run_cmd(Command::new("sysctl").args(["-q", "-w", "kernel.bpf_stats_enabled=0"]))?;

    let base = median(
        times
            .get_mut("no tracing")
            .map(|v| v.as_mut_slice())
            .unwrap_or(&mut []),
    );
    let _ = writeln!(report, "\n### {}\n", s.title);
    let _ = writeln!(
        report,
        "| configuration | median {unit}/op | overhead {unit}/op | ratio | BPF ns per op | start-up ms | SIGINT to exit ms | peak RSS MB | lost or missed |",
        unit = s.unit
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cfg in &s.configs {
        let m = median(times.get_mut(&cfg.name).unwrap());
        let cost = costs
            .iter()
            .find(|(n, _)| *n == cfg.name)
            .map(|(_, c)| format!("{:.0}", c.per_op_ns));
        let startup = startups
            .get_mut(&cfg.name)
            .map(|v| format!("{:.0}", median(v)));
        let exit = exits
            .get_mut(&cfg.name)
            .map(|v| format!("{:.0}", median(v)));
        let mb = rss
            .get(&cfg.name)
            .filter(|&&k| k > 0)
            .map(|k| format!("{:.1}", *k as f64 / 1024.0));
        let lost = match cfg.tracing {
            Tracing::Tracer(_) => lost.get(&cfg.name).copied().unwrap_or(0).to_string(),
            _ => "-".into(),
        };
        let _ = writeln!(
            report,
            "| {} | {m:.2} | {:+.2} | {:.2} | {} | {} | {} | {} | {lost} |",
            cfg.name,
            m - base,
            m / base,
            cost.unwrap_or_else(|| "-".into()),
            startup.unwrap_or_else(|| "-".into()),
            exit.unwrap_or_else(|| "-".into()),
            mb.unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(
        report,
        "\nBPF run time per program run (kernel statistics):\n"
    );
    let _ = writeln!(report, "| configuration | program | ns/run | runs |");
    let _ = writeln!(report, "|---|---|---:|---:|");
    for (name, cost) in &costs {
        for (prog, ns, cnt) in &cost.programs {
            let _ = writeln!(report, "| {name} | {prog} | {ns:.0} | {cnt} |");
        }
    }
    Ok(())
}

// ---- block I/O ----

/// A loop device on tmpfs, removed on drop.
struct Loop {
    path: String,
    name: String,
    backing: PathBuf,
}

impl Loop {
    fn new(mb: u64) -> Result<Loop> {
        let backing = PathBuf::from(format!("/dev/shm/tracer-bench-{}.img", std::process::id()));
        File::create(&backing)?.set_len(mb << 20)?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = path.trim_start_matches("/dev/").to_string();
        Ok(Loop {
            path,
            name,
            backing,
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// `ops` sequential 4 KiB O_DIRECT writes (wrapping in 64 MiB); µs per write.
fn direct_writes(dev: &str, ops: u64) -> Result<f64> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
    // SAFETY: non-zero layout; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: buf is a live 4096-byte allocation.
    let slice = unsafe { std::slice::from_raw_parts(buf, 4096) };
    let t0 = Instant::now();
    for i in 0..ops {
        file.write_at(slice, (i % 16384) * 4096)?;
    }
    let per = t0.elapsed().as_secs_f64() * 1e6 / ops as f64;
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    Ok(per)
}

fn block(bin: &Path, rounds: usize, report: &mut String) -> Result<()> {
    let dev = Loop::new(128)?;
    let d = dev.name.clone();
    const OPS: u64 = 5000;
    let start = "tracepoint:block:block_rq_issue { @start[args->dev, args->sector] = nsecs; }";
    let configs = vec![
        Config {
            name: "no tracing".into(),
            tracing: Tracing::None,
        },
        tracer("tracer biolatency", &["biolatency", "-d", &d]),
        bpftrace(
            "bpftrace biolatency",
            &format!(
                "{start} tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ \
                 {{ @usecs = hist((nsecs - @start[args->dev, args->sector]) / 1000); \
                 delete(@start[args->dev, args->sector]); }}"
            ),
        ),
        bpftrace(
            "bpftrace count by comm",
            "tracepoint:block:block_rq_issue { @[comm] = count(); }",
        ),
        tracer(
            "tracer exporter --tools biolatency",
            &[
                "exporter",
                "--listen",
                "127.0.0.1:0",
                "--tools",
                "biolatency",
            ],
        ),
        tracer(
            "tracer exporter (all tools)",
            &["exporter", "--listen", "127.0.0.1:0"],
        ),
        tracer(
            "tracer record --sources block",
            &["record", "--sources", "block", "-o", "/tmp"],
        ),
        libbpf_tools("libbpf-tools biolatency", &["biolatency", "-d", &d]),
        tracer("tracer bitesize", &["bitesize", "-d", &d]),
        libbpf_tools("libbpf-tools bitesize", &["bitesize", "-d", &d]),
        tracer("tracer biopattern", &["biopattern", "-d", &d]),
        libbpf_tools("libbpf-tools biopattern", &["biopattern", "-d", &d]),
        tracer("tracer biosnoop", &["biosnoop", "-d", &d]),
        tracer(
            "tracer biosnoop --min-latency 10",
            &["biosnoop", "-d", &d, "--min-latency", "10"],
        ),
        bpftrace(
            "bpftrace biosnoop (printf)",
            &format!(
                "{start} tracepoint:block:block_rq_complete /@start[args->dev, args->sector]/ \
                 {{ printf(\"%d %s %d %d %d\\n\", elapsed, comm, pid, args->sector, \
                 (nsecs - @start[args->dev, args->sector]) / 1000); delete(@start[args->dev, args->sector]); }}"
            ),
        ),
    ];
    let path = dev.path.clone();
    measure(
        bin,
        rounds,
        Scenario {
            title: &format!(
                "Block I/O: {OPS} sequential 4 KiB O_DIRECT writes to a loop device on tmpfs"
            ),
            unit: "us",
            ops: OPS,
            configs,
            workload: Box::new(move || direct_writes(&path, OPS)),
        },
        report,
    )
}

// ---- page faults ----

fn faults(bin: &Path, rounds: usize, report: &mut String) -> Result<()> {
    let toucher = build_helper("page-toucher")?;
    const PAGES: u64 = 10_000;
    const LOOPS: u64 = 20;
    let ops = PAGES * LOOPS;
    let configs = vec![
        Config {
            name: "no tracing".into(),
            tracing: Tracing::None,
        },
        tracer("tracer pagefaults", &["pagefaults", "-C", "3600"]),
        bpftrace(
            "bpftrace page_fault_user count",
            "tracepoint:exceptions:page_fault_user { @[comm] = count(); }",
        ),
        bpftrace(
            "bpftrace minor-faults count",
            "software:minor-faults:1 { @[comm] = count(); }",
        ),
        tracer("tracer faultlat", &["faultlat"]),
        tracer(
            "tracer exporter --tools faultlat",
            &["exporter", "--listen", "127.0.0.1:0", "--tools", "faultlat"],
        ),
        tracer(
            "tracer record --sources faults",
            &["record", "--sources", "faults", "-o", "/tmp"],
        ),
        bpftrace(
            "bpftrace faultlat",
            "tracepoint:exceptions:page_fault_user { @s[tid] = nsecs; } \
             software:minor-faults:1 /@s[tid]/ { @ns = hist(nsecs - @s[tid]); delete(@s[tid]); }",
        ),
        tracer(
            "tracer faultsnoop --min-latency 1000",
            &["faultsnoop", "--min-latency", "1000"],
        ),
        tracer("tracer faultsnoop", &["faultsnoop"]),
        bpftrace(
            "bpftrace faultsnoop (printf)",
            "tracepoint:exceptions:page_fault_user { @s[tid] = nsecs; @a[tid] = args->address; } \
             software:minor-faults:1 /@s[tid]/ { printf(\"%d %s %d %d %lx %d\\n\", elapsed, comm, pid, tid, \
             @a[tid], nsecs - @s[tid]); delete(@s[tid]); delete(@a[tid]); }",
        ),
    ];
    measure(
        bin,
        rounds,
        Scenario {
            title: &format!(
                "Page faults: {LOOPS} x {PAGES} anonymous pages written once (page-toucher loop)"
            ),
            unit: "ns",
            ops,
            configs,
            workload: Box::new(move || {
                let t0 = Instant::now();
                let st = Command::new(&toucher)
                    .args(["loop", &PAGES.to_string(), &LOOPS.to_string()])
                    .status()?;
                if !st.success() {
                    bail!("page-toucher failed");
                }
                Ok(t0.elapsed().as_secs_f64() * 1e9 / ops as f64)
            }),
        },
        report,
    )
}

// ---- KVM exits ----

fn kvm(bin: &Path, rounds: usize, report: &mut String) -> Result<()> {
    let guest = build_helper("tiny-guest")?;
    const OUTS: u64 = 100_000;
    let configs = vec![
        Config {
            name: "no tracing".into(),
            tracing: Tracing::None,
        },
        tracer("tracer kvmexits", &["kvmexits"]),
        tracer("tracer kvmexits --latency", &["kvmexits", "--latency"]),
        tracer(
            "tracer record --sources kvm",
            &["record", "--sources", "kvm", "-o", "/tmp"],
        ),
        bpftrace(
            "bpftrace kvm_pio count by comm",
            "tracepoint:kvm:kvm_pio { @[comm] = count(); }",
        ),
    ];
    measure(
        bin,
        rounds,
        Scenario {
            title: &format!(
                "KVM: a real-mode guest doing {OUTS} `out` instructions (one exit to the VMM each)"
            ),
            unit: "us",
            ops: OUTS,
            configs,
            workload: Box::new(move || {
                let t0 = Instant::now();
                let st = Command::new(&guest)
                    .args(["--outs", &OUTS.to_string()])
                    .stdout(Stdio::null())
                    .status()?;
                if !st.success() {
                    bail!("tiny-guest failed");
                }
                Ok(t0.elapsed().as_secs_f64() * 1e6 / OUTS as f64)
            }),
        },
        report,
    )
}

// ---- TCP ----

/// A network namespace for the stream, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns> {
        let name = format!("tracer-bench-{}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        run_cmd(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Streams `mb` MiB over loopback inside the namespace; µs per MiB.
fn tcp_stream(ns: &str, mb: u64) -> Result<f64> {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd as _,
    };
    let path = format!("/var/run/netns/{ns}");
    let handle = thread::spawn(move || -> Result<f64> {
        let f = File::open(&path)?;
        // SAFETY: setns on this thread only, with a valid namespace fd.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut client = TcpStream::connect(("127.0.0.1", port))?;
        let (mut server, _) = listener.accept()?;
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = server.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
        let chunk = vec![1u8; 1 << 16];
        let t0 = Instant::now();
        for _ in 0..mb * 16 {
            client.write_all(&chunk)?;
        }
        client.shutdown(std::net::Shutdown::Write)?;
        let _ = reader.join();
        Ok(t0.elapsed().as_secs_f64() * 1e6 / mb as f64)
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("stream thread panicked"))?
}

fn tcp(bin: &Path, rounds: usize, report: &mut String) -> Result<()> {
    let ns = Netns::new()?;
    const MB: u64 = 512;
    let configs = vec![
        Config {
            name: "no tracing".into(),
            tracing: Tracing::None,
        },
        tracer("tracer tcprtt", &["tcprtt"]),
        bpftrace(
            "bpftrace tcp_probe srtt hist",
            "tracepoint:tcp:tcp_probe { @us = hist(args->srtt); }",
        ),
        tracer("tracer tcpretrans", &["tcpretrans"]),
        bpftrace(
            "bpftrace tcpretrans (tracepoint)",
            "tracepoint:tcp:tcp_retransmit_skb { printf(\"%d %d %d\\n\", pid, args->sport, args->dport); }",
        ),
    ];
    let name = ns.0.clone();
    measure(
        bin,
        rounds,
        Scenario {
            title: &format!(
                "TCP: a {MB} MiB loopback stream in a network namespace (bpftrace's packaged tcpretrans.bt needs kprobes, absent here)"
            ),
            unit: "us",
            ops: MB,
            configs,
            workload: Box::new(move || tcp_stream(&name, MB)),
        },
        report,
    )
}

// ---- exporter and recorder: start-up, memory, CPU per scrape, idle CPU ----

/// User + system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the comm: utime and stime are the 12th and 13th fields.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A free local TCP port.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET /metrics; returns the body.
fn scrape(port: u16) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("bad scrape: {}", out.lines().next().unwrap_or("")),
    }
}

/// The sum of a metric family's samples in an exposition.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Some block, fault and TCP activity, so that every family has series.
fn mixed_workload(dev: &str, toucher: &Path, ns: &str) -> Result<()> {
    direct_writes(dev, 2000)?;
    let st = Command::new(toucher).args(["loop", "2000", "5"]).status()?;
    if !st.success() {
        bail!("page-toucher failed");
    }
    tcp_stream(ns, 16)?;
    Ok(())
}

fn service(bin: &Path, report: &mut String) -> Result<()> {
    eprintln!("bench: exporter and recorder");
    let dev = Loop::new(128)?;
    let ns = Netns::new()?;
    let toucher = build_helper("page-toucher")?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let exporter = start(
        bin,
        &Tracing::Tracer(vec!["exporter".into(), "--listen".into(), listen]),
    )?
    .context("the exporter did not start")?;
    let pid = exporter.child.id();
    let startup = exporter.startup;
    mixed_workload(&dev.path, &toucher, &ns.0)?;
    let body = scrape(port)?;
    let series = metric_sum(&body, "tracer_exporter_series");
    const SCRAPES: u32 = 200;
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        bytes += scrape(port)?.len();
    }
    let wall = t0.elapsed();
    let per_scrape_ms = (cpu_seconds(pid) - cpu0) * 1e3 / SCRAPES as f64;
    let (hwm, _, _) = stop(Some(exporter));

    // An armed recorder with every source and nothing happening: its own CPU.
    let dir = std::env::temp_dir().join(format!("tracer-bench-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let recorder = start(
        bin,
        &Tracing::Tracer(vec![
            "record".into(),
            "-o".into(),
            dir.display().to_string(),
        ]),
    )?
    .context("the recorder did not start")?;
    let rpid = recorder.child.id();
    let rstartup = recorder.startup;
    thread::sleep(Duration::from_secs(1));
    const IDLE: Duration = Duration::from_secs(20);
    let c0 = cpu_seconds(rpid);
    thread::sleep(IDLE);
    let idle_pct = (cpu_seconds(rpid) - c0) * 100.0 / IDLE.as_secs_f64();
    mixed_workload(&dev.path, &toucher, &ns.0)?;
    let (rhwm, _, _) = stop(Some(recorder));

    // The window's memory bound under a flood of block I/O.
    let mut args: Vec<String> = [
        "record",
        "--sources",
        "block",
        "-d",
        &dev.name,
        "--max-mem",
        "16M",
        "--before",
        "10m",
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    let bounded = start(bin, &Tracing::Tracer(args))?.context("the recorder did not start")?;
    const FLOOD: u64 = 200_000;
    direct_writes(&dev.path, FLOOD)?;
    let (bounded_hwm, bounded_lost, _) = stop(Some(bounded));
    let _ = std::fs::remove_dir_all(&dir);

    let _ = writeln!(
        report,
        "\n### Exporter (every tool) and recorder (every source)\n"
    );
    let _ = writeln!(report, "| measure | value | target |");
    let _ = writeln!(report, "|---|---:|---:|");
    let _ = writeln!(
        report,
        "| exporter start-up (exec to serving) | {:.0} ms | |",
        startup.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        report,
        "| exporter peak RSS | {:.1} MB | <= 20 MB |",
        hwm as f64 / 1024.0
    );
    let _ = writeln!(
        report,
        "| exporter CPU per scrape ({series:.0} series, {} bytes) | {per_scrape_ms:.2} ms | <= 5 ms |",
        bytes / SCRAPES as usize
    );
    let _ = writeln!(
        report,
        "| scrape wall time (client side) | {:.2} ms | |",
        wall.as_secs_f64() * 1e3 / SCRAPES as f64
    );
    let _ = writeln!(
        report,
        "| recorder start-up (exec to armed) | {:.0} ms | |",
        rstartup.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        report,
        "| recorder CPU, armed and idle ({}s) | {idle_pct:.2} % of a core | < 1 % |",
        IDLE.as_secs()
    );
    let _ = writeln!(
        report,
        "| recorder peak RSS (default --max-mem 64M, a short mixed workload) | {:.1} MB | |",
        rhwm as f64 / 1024.0
    );
    let _ = writeln!(
        report,
        "| recorder peak RSS, block only, --max-mem 16M, {FLOOD} I/Os ({bounded_lost} lost) | {:.1} MB | 16 MB + its base |",
        bounded_hwm as f64 / 1024.0
    );
    Ok(())
}

/// `cargo xtask soak --minutes N`: the exporter with every tool under a mixed
/// block/fault/TCP workload, scraped every second; RSS, series, in-flight
/// entries and lost counts once a minute. Memory should stay flat after warm-up.
pub fn soak(bin: &Path, minutes: u64) -> Result<()> {
    run_cmd(Command::new(bin).arg("doctor").stdout(Stdio::null()))?;
    let dev = Loop::new(128)?;
    let ns = Netns::new()?;
    let toucher = build_helper("page-toucher")?;
    let port = free_port()?;
    let exporter = start(
        bin,
        &Tracing::Tracer(vec![
            "exporter".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ]),
    )?
    .context("the exporter did not start")?;
    let pid = exporter.child.id();
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop_flag = stop_flag.clone();
        let (dev, toucher, ns) = (dev.path.clone(), toucher.clone(), ns.0.clone());
        thread::spawn(move || -> Result<u64> {
            let mut rounds = 0;
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                mixed_workload(&dev, &toucher, &ns)?;
                rounds += 1;
            }
            Ok(rounds)
        })
    };
    let vm_rss_kb = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    println!("| minute | RSS MB | peak RSS MB | series | in-flight | lost | map full | CPU s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let t0 = Instant::now();
    let mut scrapes = 0u64;
    for minute in 0..=minutes {
        let until = t0 + Duration::from_secs(minute * 60);
        while Instant::now() < until {
            scrape(port)?;
            scrapes += 1;
            thread::sleep(Duration::from_secs(1));
        }
        let body = scrape(port)?;
        println!(
            "| {minute} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            vm_rss_kb(pid) as f64 / 1024.0,
            vm_hwm_kb(pid) as f64 / 1024.0,
            metric_sum(&body, "tracer_exporter_series"),
            metric_sum(&body, "tracer_inflight_entries"),
            metric_sum(&body, "tracer_events_lost_total"),
            metric_sum(&body, "tracer_map_full_total"),
            cpu_seconds(pid)
        );
    }
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = worker
        .join()
        .map_err(|_| anyhow::anyhow!("workload thread panicked"))??;
    let _ = stop(Some(exporter));
    println!("\n{scrapes} scrapes, {rounds} workload rounds in {minutes} minutes");
    Ok(())
}

/// Builds a helper binary of the tests crate and returns its path.
pub fn build_helper(name: &str) -> Result<PathBuf> {
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "--package",
                "tracer-tests",
                "--bin",
                name,
            ]),
    )?;
    Ok(workspace_root().join("target/release").join(name))
}

pub fn run(bin: &Path, rounds: usize, only: &[String]) -> Result<()> {
    const BENCHMARKS: [&str; 5] = ["block", "faults", "kvm", "tcp", "exporter"];
    if let Some(unknown) = only.iter().find(|o| !BENCHMARKS.contains(&o.as_str())) {
        bail!(
            "no benchmark '{unknown}' (there are {})",
            BENCHMARKS.join(", ")
        );
    }
    // tracer mounts tracefs if needed; bpftrace needs it mounted too.
    run_cmd(Command::new(bin).arg("doctor").stdout(Stdio::null()))?;
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let date = String::from_utf8_lossy(
        &Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()?
            .stdout,
    )
    .trim()
    .to_string();
    let mut report = format!(
        "## Benchmarks ({date}, kernel {}, {} CPUs, {cpu})\n\nMedians of {rounds} alternating rounds. \
         \"BPF ns per op\" is the kernel's own accounting (kernel.bpf_stats_enabled) of all of a \
         configuration's programs, divided by the workload's operations.\n",
        crate::kernel_release(),
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if want("block") {
        block(bin, rounds, &mut report)?;
    }
    if want("faults") {
        faults(bin, rounds, &mut report)?;
    }
    if want("kvm") {
        kvm(bin, rounds, &mut report)?;
    }
    if want("tcp") {
        tcp(bin, rounds, &mut report)?;
    }
    if want("exporter") {
        service(bin, &mut report)?;
    }
    println!("{report}");
    let out = workspace_root().join("target/bench-report.md");
    std::fs::write(&out, &report)?;
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}
