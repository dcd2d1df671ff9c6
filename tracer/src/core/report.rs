//! `tracer report FILE`: what a capture of `tracer record` holds, read the way
//! an incident is read: the trigger and its event first, then each source's
//! count and distribution, the top processes, disks, flows and vCPUs, the events
//! around the trigger in time order, and where records were lost. Fault
//! addresses are symbolized from the ELF symbol tables of the mapped files.
//! `--perfetto OUT` writes the capture as a Perfetto trace.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::core::{
    hist::Hist,
    perfetto::{Arg, Lanes, Trace},
};

/// A capture file, parsed.
pub struct Capture {
    pub header: Value,
    pub events: Vec<Value>,
    pub hists: Vec<Value>,
}

impl Capture {
    pub fn read(path: &Path) -> Result<Capture> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines
            .next()
            .with_context(|| format!("{} is empty", path.display()))?;
        let header: Value = serde_json::from_str(first).with_context(|| {
            format!(
                "{} is not a capture (its first line is not JSON)",
                path.display()
            )
        })?;
        if header["record"] != "capture" {
            bail!("{} is not a capture of tracer record", path.display());
        }
        let mut events = Vec::new();
        let mut hists = Vec::new();
        for (i, l) in lines.enumerate() {
            let v: Value = serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not JSON", path.display(), i + 2))?;
            match v["record"].as_str() {
                Some("event") => events.push(v),
                Some("hist") => hists.push(v),
                _ => {}
            }
        }
        Ok(Capture {
            header,
            events,
            hists,
        })
    }

    fn first_trigger_ns(&self) -> u64 {
        self.header["triggers"][0]["at_ns"].as_u64().unwrap_or(0)
    }
}

/// One event as a line: what it was, to whom, how long.
fn describe(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let u = |k: &str| e[k].as_u64().unwrap_or(0);
    let ms = e["dur_ns"].as_u64().unwrap_or(0) as f64 / 1e6;
    match e["source"].as_str().unwrap_or("") {
        "block" => format!(
            "{} {} {} {} sector {} {} bytes {ms:.3} ms",
            s("comm"),
            u("pid"),
            s("disk"),
            s("t"),
            u("sector"),
            u("bytes")
        ),
        "fault" => format!(
            "{} {} {} at {} ip {} ({}) {ms:.3} ms",
            s("comm"),
            u("pid"),
            s("type"),
            s("addr"),
            if s("symbol").is_empty() {
                s("ip")
            } else {
                s("symbol")
            },
            s("mapping"),
        ),
        "kvm" => format!(
            "vm {} ({}) vcpu {} {} {ms:.3} ms",
            s("vm"),
            u("pid"),
            s("vcpu"),
            s("reason")
        ),
        "tcp" => match e["tool"].as_str() {
            Some("tcpconnlat") => format!(
                "connect {} {} {} -> {}:{} {ms:.3} ms",
                s("comm"),
                u("pid"),
                s("saddr"),
                s("daddr"),
                u("dport")
            ),
            Some("tcpdrop") => format!(
                "drop {}:{} > {}:{} {} {}",
                s("saddr"),
                u("sport"),
                s("daddr"),
                u("dport"),
                s("state"),
                s("reason")
            ),
            _ => format!(
                "retransmit {} {}:{} > {}:{} {}",
                s("type"),
                s("laddr"),
                u("lport"),
                s("raddr"),
                u("rport"),
                s("state")
            ),
        },
        other => format!("{other} event"),
    }
}

fn flow_of(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let u = |k: &str| e[k].as_u64().unwrap_or(0);
    match e["tool"].as_str() {
        Some("tcpconnlat") => format!("{} > {}:{}", s("saddr"), s("daddr"), u("dport")),
        Some("tcpdrop") => format!(
            "{}:{} > {}:{}",
            s("saddr"),
            u("sport"),
            s("daddr"),
            u("dport")
        ),
        _ => format!(
            "{}:{} > {}:{}",
            s("laddr"),
            u("lport"),
            s("raddr"),
            u("rport")
        ),
    }
}

/// Symbolizes fault instruction pointers from the ELF symbols of their
/// mappings (cached per file); a stripped file gives module+offset.
#[derive(Default)]
struct Symbols {
    files: BTreeMap<String, Option<Elf>>,
}

struct Elf {
    /// (file offset, size, virtual address) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// (address, size, name), sorted by address.
    symbols: Vec<(u64, u64, String)>,
}

impl Symbols {
    fn elf(path: &str) -> Option<Elf> {
        use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let mut symbols: Vec<(u64, u64, String)> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
            // Rust symbols read as paths (`{:#}` leaves the hash out); other
            // names are kept as they are.
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.address(), s.size(), name))
            })
            .collect();
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        Some(Elf { segments, symbols })
    }

    /// "symbol+0xoff (module)" for a file offset in a mapping.
    fn name(&mut self, path: &str, file_offset: u64) -> String {
        let module = Path::new(path)
            .file_name()
            .map_or(path.to_string(), |n| n.to_string_lossy().into_owned());
        let elf = self
            .files
            .entry(path.to_string())
            .or_insert_with(|| Symbols::elf(path));
        let Some(elf) = elf else {
            return format!("{module}+{file_offset:#x}");
        };
        let Some(vaddr) = elf
            .segments
            .iter()
            .find(|(off, size, _)| (*off..off + size).contains(&file_offset))
            .map(|(off, _, addr)| file_offset - off + addr)
        else {
            return format!("{module}+{file_offset:#x}");
        };
        let i = elf.symbols.partition_point(|s| s.0 <= vaddr);
        match i.checked_sub(1).map(|i| &elf.symbols[i]) {
            Some((addr, size, name)) if *size == 0 || vaddr < addr + size => {
                format!("{name}+{:#x} ({module})", vaddr - addr)
            }
            _ => format!("{module}+{file_offset:#x}"),
        }
    }
}

/// Adds "symbol" to fault events that carry an ip_mapping and ip_offset.
fn symbolize(events: &mut [Value]) {
    let mut symbols = Symbols::default();
    for e in events.iter_mut().filter(|e| e["source"] == "fault") {
        if let (Some(path), Some(off)) = (e["ip_mapping"].as_str(), e["ip_offset"].as_u64())
            && path.starts_with('/')
        {
            let name = symbols.name(path, off);
            e["symbol"] = json!(name);
        }
    }
}

fn log2_hist(durations_ns: &[u64], unit: u64) -> Hist {
    let mut h = Hist::default();
    for &d in durations_ns {
        let v = d / unit;
        *h.buckets
            .entry(tracer_common::hist::bucket_of(v))
            .or_default() += 1;
        h.count += 1;
        h.sum += v;
        h.max = h.max.max(v);
    }
    h
}

fn top(out: &mut String, title: &str, counts: BTreeMap<String, (u64, u64)>) {
    if counts.is_empty() {
        return;
    }
    let mut rows: Vec<(String, (u64, u64))> = counts.into_iter().collect();
    // Where the time went first: the slow operation's owner leads, however
    // few its events; counts order what has no duration (retransmits).
    rows.sort_by(|a, b| (b.1.1, b.1.0).cmp(&(a.1.1, a.1.0)).then(a.0.cmp(&b.0)));
    let _ = writeln!(out, "\n{title:<48} {:>8} {:>12}", "EVENTS", "TIME(ms)");
    for (k, (n, ns)) in rows.into_iter().take(10) {
        let _ = writeln!(out, "  {k:<46} {n:>8} {:>12.3}", ns as f64 / 1e6);
    }
}

/// The report as text.
pub fn text(c: &mut Capture) -> String {
    symbolize(&mut c.events);
    let h = &c.header;
    let mut out = String::new();
    let w = &h["window"];
    let _ = writeln!(
        out,
        "capture on {} (kernel {}), sources {}",
        h["host"].as_str().unwrap_or("?"),
        h["kernel"].as_str().unwrap_or("?"),
        h["sources"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    let span =
        (w["end_ns"].as_u64().unwrap_or(0) - w["start_ns"].as_u64().unwrap_or(0)) as f64 / 1e9;
    let _ = writeln!(
        out,
        "window {} .. {} ({span:.3} s: {} s before the first trigger, {} s after the last{})",
        w["start"].as_str().unwrap_or(""),
        w["end"].as_str().unwrap_or(""),
        w["before_s"],
        w["after_s"],
        if w["closed_early"] == true {
            ", closed early by Ctrl-C"
        } else {
            ""
        }
    );
    for t in h["triggers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "\ntrigger {} at {}",
            t["trigger"].as_str().unwrap_or(""),
            t["time"].as_str().unwrap_or("")
        );
        if let Some(e) = t.get("event") {
            // The same event, symbolized.
            let at = e["ts_ns"].as_u64();
            let e = c
                .events
                .iter()
                .find(|x| x["ts_ns"].as_u64() == at && x["tool"] == e["tool"])
                .unwrap_or(e);
            let _ = writeln!(
                out,
                "  {}: {}",
                e["source"].as_str().unwrap_or(""),
                describe(e)
            );
        }
        if let Some(d) = t.get("detail") {
            let _ = writeln!(out, "  {d}");
        }
        if t.get("signal").is_some() {
            let _ = writeln!(out, "  (SIGUSR2)");
        }
    }
    let mut by_source: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in &c.events {
        by_source
            .entry(e["source"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(e);
    }
    let _ = writeln!(
        out,
        "\n{} events: {}",
        c.events.len(),
        by_source
            .iter()
            .map(|(k, v)| format!("{k} {}", v.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (source, events) in &by_source {
        let timed: Vec<u64> = events
            .iter()
            .filter_map(|e| e["dur_ns"].as_u64())
            .filter(|&d| d > 0)
            .collect();
        if timed.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{source}: time per operation in the window");
        out.push_str(&log2_hist(&timed, 1000).render("usecs"));
    }
    for (title, (slots, unit)) in context_hists(&c.hists) {
        let _ = writeln!(out, "\n{title}: in the kernel, host-wide, over the window");
        crate::core::hist::render_log2(&mut out, &slots, &unit);
    }
    let mut procs = BTreeMap::new();
    let mut disks = BTreeMap::new();
    let mut flows = BTreeMap::new();
    let mut vcpus = BTreeMap::new();
    for e in &c.events {
        let dur = e["dur_ns"].as_u64().unwrap_or(0);
        let add = |m: &mut BTreeMap<String, (u64, u64)>, k: String| {
            let v = m.entry(k).or_insert((0, 0));
            v.0 += 1;
            v.1 += dur;
        };
        if let (Some(comm), Some(pid)) = (e["comm"].as_str(), e["pid"].as_u64()) {
            add(&mut procs, format!("{comm} ({pid})"));
        }
        match e["source"].as_str() {
            Some("block") => add(&mut disks, e["disk"].as_str().unwrap_or("?").to_string()),
            Some("tcp") => add(&mut flows, flow_of(e)),
            Some("kvm") => add(
                &mut vcpus,
                format!(
                    "{} ({}) vcpu {}",
                    e["vm"].as_str().unwrap_or(""),
                    e["pid"],
                    e["vcpu"].as_str().unwrap_or("")
                ),
            ),
            _ => {}
        }
    }
    top(&mut out, "top processes", procs);
    top(&mut out, "top disks", disks);
    top(&mut out, "top flows", flows);
    top(&mut out, "top vCPUs", vcpus);
    let t0 = c.first_trigger_ns();
    let _ = writeln!(
        out,
        "\nevents within 100 ms of the first trigger (s from it):"
    );
    for e in &c.events {
        let ts = e["ts_ns"].as_u64().unwrap_or(0);
        if ts.abs_diff(t0) <= 100_000_000 {
            let _ = writeln!(
                out,
                "  {:+.6}  {:<5} {}",
                (ts as i128 - t0 as i128) as f64 / 1e9,
                e["source"].as_str().unwrap_or(""),
                describe(e)
            );
        }
    }
    let spans = h["lost_spans"].as_array().cloned().unwrap_or_default();
    if spans.is_empty() {
        let _ = writeln!(out, "\nno records lost in the window");
    } else {
        let _ = writeln!(
            out,
            "\nrecords lost (ring buffer full) or missed (the kernel skipped tracing while BPF was busy on that CPU):"
        );
        for s in spans {
            let _ = writeln!(
                out,
                "  {} {} lost, {} missed in the 100 ms ending {:+.3} s from the trigger",
                s["source"].as_str().unwrap_or(""),
                s["records"],
                s["missed"].as_u64().unwrap_or(0),
                (s["end_ns"].as_u64().unwrap_or(0) as i128 - t0 as i128) as f64 / 1e9
            );
        }
    }
    let dropped = &h["dropped_for_memory"];
    if dropped["events"].as_u64().unwrap_or(0) + dropped["hist_slices"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "{} records and {} histogram slices up to {:+.3} s from the trigger dropped to stay within --max-mem",
            dropped["events"],
            dropped["hist_slices"],
            (dropped["last_ns"].as_u64().unwrap_or(0) as i128 - t0 as i128) as f64 / 1e9
        );
    }
    out
}

/// The window's in-kernel histograms (sampled every 100 ms, host-wide),
/// summed per tool and labels: title -> (log2 slots, unit).
fn context_hists(hists: &[Value]) -> BTreeMap<String, (Vec<u64>, String)> {
    let mut out: BTreeMap<String, (Vec<u64>, String)> = BTreeMap::new();
    for h in hists {
        let labels: Vec<String> = h
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| v.is_string() && !matches!(k.as_str(), "record" | "tool" | "unit"))
            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("")))
            .collect();
        let title = format!(
            "{} {}",
            h["tool"].as_str().unwrap_or("?"),
            labels.join(", ")
        );
        let unit = h["unit"].as_str().unwrap_or("").to_string();
        let (slots, _) = out.entry(title).or_insert_with(|| (Vec::new(), unit));
        for b in h["buckets"].as_array().into_iter().flatten() {
            let low = b["low"].as_u64().unwrap_or(0);
            let slot = if low == 0 { 0 } else { low.ilog2() as usize };
            if slots.len() <= slot {
                slots.resize(slot + 1, 0);
            }
            slots[slot] += b["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

/// The report as JSON: the header, and per source counts and top lists.
pub fn json(c: &mut Capture) -> Value {
    symbolize(&mut c.events);
    let t0 = c.first_trigger_ns();
    let around: Vec<&Value> = c
        .events
        .iter()
        .filter(|e| e["ts_ns"].as_u64().unwrap_or(0).abs_diff(t0) <= 100_000_000)
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for e in &c.events {
        *counts
            .entry(e["source"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    json!({
        "header": c.header,
        "counts": counts,
        "around_trigger": around,
        "hists": c.hists.len(),
    })
}

/// The capture as a Perfetto trace: a track per disk (lanes under it, so that
/// concurrent I/Os do not overlap on one track), per process for faults, per
/// flow for TCP and per vCPU for KVM; operations as slices, retransmits and
/// drops as instants, and the triggers on a track of their own.
pub fn perfetto(c: &mut Capture) -> bytes::Bytes {
    symbolize(&mut c.events);
    let mut trace = Trace::default();
    let mut tracks: BTreeMap<String, u64> = BTreeMap::new();
    let mut lanes: BTreeMap<String, Lanes> = BTreeMap::new();
    let mut next = 1u64;
    let mut track = |trace: &mut Trace, name: String, parent: Option<u64>| -> u64 {
        *tracks.entry(name.clone()).or_insert_with(|| {
            let id = next;
            next += 1;
            trace.track(id, parent, &name);
            id
        })
    };
    let triggers = track(&mut trace, "tracer record: triggers".into(), None);
    for t in c.header["triggers"].as_array().into_iter().flatten() {
        trace.event(
            t["at_ns"].as_u64().unwrap_or(0),
            triggers,
            crate::core::perfetto::Kind::Instant,
            t["trigger"].as_str().unwrap_or("trigger"),
            &[],
        );
    }
    let mut events: Vec<&Value> = c.events.iter().collect();
    // Slices by start time, for the lanes.
    events.sort_by_key(|e| e["ts_ns"].as_u64().unwrap_or(0) - e["dur_ns"].as_u64().unwrap_or(0));
    for e in events {
        let end = e["ts_ns"].as_u64().unwrap_or(0);
        let dur = e["dur_ns"].as_u64().unwrap_or(0);
        let start = end - dur;
        let args: Vec<(&str, Arg)> = e
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "record" | "ts_ns" | "dur_ns" | "time" | "time_s"
                )
            })
            .map(|(k, v)| {
                let a = match v {
                    Value::Number(n) if n.is_u64() => Arg::Uint(n.as_u64().unwrap_or(0)),
                    Value::Number(n) if n.is_i64() => Arg::Int(n.as_i64().unwrap_or(0)),
                    Value::Number(n) => Arg::Double(n.as_f64().unwrap_or(0.0)),
                    Value::String(s) => Arg::Str(s.clone()),
                    other => Arg::Str(other.to_string()),
                };
                (k.as_str(), a)
            })
            .collect();
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let (group, name) = match e["source"].as_str() {
            Some("block") => (
                format!("disk {}", s("disk")),
                format!("{} {}", s("rwbs"), e["bytes"]),
            ),
            Some("fault") => (format!("faults {} ({})", s("comm"), e["pid"]), s("type")),
            Some("kvm") => (format!("vm {} vcpu {}", s("vm"), s("vcpu")), s("reason")),
            Some("tcp") => (
                format!("tcp {}", flow_of(e)),
                match e["tool"].as_str() {
                    Some("tcpconnlat") => "connect".to_string(),
                    Some("tcpdrop") => format!("drop {}", s("reason")),
                    _ => format!("retransmit {}", s("type")),
                },
            ),
            _ => ("other".to_string(), "event".to_string()),
        };
        let parent = track(&mut trace, group.clone(), None);
        if dur == 0 {
            trace.event(
                end,
                parent,
                crate::core::perfetto::Kind::Instant,
                &name,
                &args,
            );
            continue;
        }
        let lane = lanes.entry(group.clone()).or_default().take(start, end);
        let id = if lane == 0 {
            parent
        } else {
            track(&mut trace, format!("{group} #{}", lane + 1), Some(parent))
        };
        trace.slice(start, dur, id, &name, &args);
    }
    trace.finish()
}
