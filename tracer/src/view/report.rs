//! `tracer report FILE`: what a capture of `tracer record` holds, read the way
//! an incident is read: the trigger and its event first, then each source's
//! count and distribution, the top processes, disks, flows and vCPUs, the events
//! around the trigger in time order, and where records were lost. Fault
//! addresses are symbolized from the ELF symbol tables of the mapped files.
//! `--perfetto OUT` writes the capture as a Perfetto trace.
//!
//! The capture is read as a stream (`records`): what the report says of all
//! events is summed in one pass, and the events it shows one by one (those
//! around the trigger; every event for Perfetto, by start time) are kept as
//! offsets into the file and read again, so memory does not grow with the
//! capture beyond 16 bytes an event for Perfetto.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::source::hist::Hist;
use crate::view::{
    perfetto::{Arg, Kind, Lanes, Trace},
    records::Records,
};

/// Events this close to the first trigger are listed one by one.
const AROUND_NS: u64 = 100_000_000;

/// A capture being read: its header, then its records.
struct Capture {
    header: Value,
    records: Records<BufReader<File>>,
}

impl Capture {
    fn open(path: &Path) -> Result<Capture> {
        let name = path.display().to_string();
        let mut records = Records::open(path)?;
        let header = match records.next() {
            None => bail!("{name} is empty"),
            Some(Err(e)) if e.root_cause().is::<serde_json::Error>() => {
                bail!("{name} is not a capture (its first line is not JSON)")
            }
            Some(r) => r?.value,
        };
        if header["record"] != "capture" {
            bail!("{name} is not a capture of tracer record");
        }
        // The events shown are read again, at their offsets.
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            bail!(
                "{name} is not a regular file: the report reads it twice (save it to a file first)"
            );
        }
        Ok(Capture { header, records })
    }

    fn first_trigger_ns(&self) -> u64 {
        self.header["triggers"][0]["at_ns"].as_u64().unwrap_or(0)
    }

    /// The event at `offset`, symbolized.
    fn event_at(&mut self, offset: u64, symbols: &mut Symbols) -> Result<Value> {
        let mut e = self.records.at(offset)?;
        symbols.add_to(&mut e);
        Ok(e)
    }
}

/// `tracer report`: the text (or `--json`) on stdout, and with `perfetto` a
/// Perfetto trace written there too.
pub fn run(path: &Path, as_json: bool, perfetto: Option<&Path>) -> Result<()> {
    let mut capture = Capture::open(path)?;
    let mut summary = Summary::read(&mut capture, perfetto.is_some())?;
    let mut symbols = Symbols::default();
    if let Some(out) = perfetto {
        let starts = std::mem::take(&mut summary.starts);
        let n = write_perfetto(&mut capture, starts, &mut symbols, out)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report: wrote {} ({n} bytes)", out.display());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if as_json {
        json(&mut capture, &summary, &mut symbols, &mut out)?;
    } else {
        text(&mut capture, &summary, &mut symbols, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// (events, nanoseconds) per process, disk, flow or vCPU.
type Totals = BTreeMap<String, (u64, u64)>;

/// What the report says of all events, summed in one pass over the capture.
#[derive(Default)]
struct Summary {
    events: u64,
    /// Events per source.
    counts: BTreeMap<String, u64>,
    /// Per source, the durations (usecs) of the events that have one.
    durations: BTreeMap<String, Hist>,
    /// The window's in-kernel histograms (sampled every 100 ms, host-wide),
    /// summed per tool and labels: title -> (log2 slots, unit).
    context: BTreeMap<String, (Vec<u64>, String)>,
    hist_records: u64,
    procs: Totals,
    disks: Totals,
    flows: Totals,
    vcpus: Totals,
    /// Offsets of the events within `AROUND_NS` of the first trigger.
    around: Vec<u64>,
    /// (start, offset) of every event, for the Perfetto trace.
    starts: Vec<(u64, u64)>,
}

impl Summary {
    fn read(c: &mut Capture, with_starts: bool) -> Result<Summary> {
        let t0 = c.first_trigger_ns();
        let mut s = Summary::default();
        for r in c.records.by_ref() {
            let r = r?;
            match r.value["record"].as_str() {
                Some("event") => {
                    let e = &r.value;
                    s.add_event(e);
                    let ts = e["ts_ns"].as_u64().unwrap_or(0);
                    if ts.abs_diff(t0) <= AROUND_NS {
                        s.around.push(r.offset);
                    }
                    if with_starts {
                        let dur = e["dur_ns"].as_u64().unwrap_or(0);
                        s.starts.push((ts.saturating_sub(dur), r.offset));
                    }
                }
                Some("hist") => s.add_hist(&r.value),
                _ => {}
            }
        }
        Ok(s)
    }

    fn add_event(&mut self, e: &Value) {
        let source = e["source"].as_str().unwrap_or("?");
        self.events += 1;
        *self.counts.entry(source.to_string()).or_default() += 1;
        let dur = e["dur_ns"].as_u64().unwrap_or(0);
        if dur > 0 {
            let h = self.durations.entry(source.to_string()).or_default();
            let v = dur / 1000;
            *h.buckets
                .entry(tracer_common::hist::bucket_of(v))
                .or_default() += 1;
            h.count += 1;
            h.sum += v;
            h.max = h.max.max(v);
        }
        let add = |m: &mut Totals, k: String| {
            let v = m.entry(k).or_insert((0, 0));
            v.0 += 1;
            v.1 += dur;
        };
        if let (Some(comm), Some(pid)) = (e["comm"].as_str(), e["pid"].as_u64()) {
            add(&mut self.procs, format!("{comm} ({pid})"));
        }
        match source {
            "block" => add(
                &mut self.disks,
                e["disk"].as_str().unwrap_or("?").to_string(),
            ),
            "tcp" => add(&mut self.flows, flow_of(e)),
            "kvm" => add(
                &mut self.vcpus,
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

    fn add_hist(&mut self, h: &Value) {
        self.hist_records += 1;
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
        let (slots, _) = self
            .context
            .entry(title)
            .or_insert_with(|| (Vec::new(), unit));
        for b in h["buckets"].as_array().into_iter().flatten() {
            let low = b["low"].as_u64().unwrap_or(0);
            let slot = if low == 0 { 0 } else { low.ilog2() as usize };
            if slots.len() <= slot {
                slots.resize(slot + 1, 0);
            }
            slots[slot] += b["count"].as_u64().unwrap_or(0);
        }
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

    /// Adds "symbol" to a fault event that carries an ip_mapping and ip_offset.
    fn add_to(&mut self, e: &mut Value) {
        if e["source"] != "fault" {
            return;
        }
        if let (Some(path), Some(off)) = (e["ip_mapping"].as_str(), e["ip_offset"].as_u64())
            && path.starts_with('/')
        {
            let name = self.name(path, off);
            e["symbol"] = json!(name);
        }
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

fn top(out: &mut dyn Write, title: &str, counts: &Totals) -> io::Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<(&String, &(u64, u64))> = counts.iter().collect();
    // Where the time went first: the slow operation's owner leads, however
    // few its events; counts order what has no duration (retransmits).
    rows.sort_by(|a, b| (b.1.1, b.1.0).cmp(&(a.1.1, a.1.0)).then(a.0.cmp(b.0)));
    writeln!(out, "\n{title:<48} {:>8} {:>12}", "EVENTS", "TIME(ms)")?;
    for (k, (n, ns)) in rows.into_iter().take(10) {
        writeln!(out, "  {k:<46} {n:>8} {:>12.3}", *ns as f64 / 1e6)?;
    }
    Ok(())
}

/// The report as text: the capture's header and triggers, the summary, the
/// events around the first trigger and where records were lost.
fn text(c: &mut Capture, s: &Summary, symbols: &mut Symbols, out: &mut dyn Write) -> Result<()> {
    text_header(&c.header, symbols, out)?;
    writeln!(
        out,
        "\n{} events: {}",
        s.events,
        s.counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for (source, h) in &s.durations {
        writeln!(out, "\n{source}: time per operation in the window")?;
        out.write_all(h.render("usecs").as_bytes())?;
    }
    for (title, (slots, unit)) in &s.context {
        writeln!(out, "\n{title}: in the kernel, host-wide, over the window")?;
        let mut rendered = String::new();
        crate::source::hist::render_log2(&mut rendered, slots, unit);
        out.write_all(rendered.as_bytes())?;
    }
    top(out, "top processes", &s.procs)?;
    top(out, "top disks", &s.disks)?;
    top(out, "top flows", &s.flows)?;
    top(out, "top vCPUs", &s.vcpus)?;
    let t0 = c.first_trigger_ns();
    writeln!(
        out,
        "\nevents within 100 ms of the first trigger (s from it):"
    )?;
    for &offset in &s.around {
        let e = c.event_at(offset, symbols)?;
        let ts = e["ts_ns"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "  {:+.6}  {:<5} {}",
            (ts as i128 - t0 as i128) as f64 / 1e9,
            e["source"].as_str().unwrap_or(""),
            describe(&e)
        )?;
    }
    text_losses(&c.header, t0, out)?;
    Ok(())
}

/// Where and when the capture was made, and each trigger with its event.
fn text_header(h: &Value, symbols: &mut Symbols, out: &mut dyn Write) -> io::Result<()> {
    let w = &h["window"];
    writeln!(
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
    )?;
    let span = w["end_ns"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(w["start_ns"].as_u64().unwrap_or(0)) as f64
        / 1e9;
    writeln!(
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
    )?;
    for t in h["triggers"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "\ntrigger {} at {}",
            t["trigger"].as_str().unwrap_or(""),
            t["time"].as_str().unwrap_or("")
        )?;
        if let Some(e) = t.get("event") {
            let mut e = e.clone();
            symbols.add_to(&mut e);
            writeln!(
                out,
                "  {}: {}",
                e["source"].as_str().unwrap_or(""),
                describe(&e)
            )?;
        }
        if let Some(d) = t.get("detail") {
            writeln!(out, "  {d}")?;
        }
        if t.get("signal").is_some() {
            writeln!(out, "  (SIGUSR2)")?;
        }
    }
    Ok(())
}

/// Records the kernel lost or skipped, and those dropped for `--max-mem`.
fn text_losses(h: &Value, t0: u64, out: &mut dyn Write) -> io::Result<()> {
    let from_trigger = |ns: &Value| (ns.as_u64().unwrap_or(0) as i128 - t0 as i128) as f64 / 1e9;
    let spans = h["lost_spans"].as_array().map_or(&[][..], |a| a.as_slice());
    if spans.is_empty() {
        writeln!(out, "\nno records lost in the window")?;
    } else {
        writeln!(
            out,
            "\nrecords lost (ring buffer full) or missed (the kernel skipped tracing while BPF was busy on that CPU):"
        )?;
        for s in spans {
            writeln!(
                out,
                "  {} {} lost, {} missed in the 100 ms ending {:+.3} s from the trigger",
                s["source"].as_str().unwrap_or(""),
                s["records"],
                s["missed"].as_u64().unwrap_or(0),
                from_trigger(&s["end_ns"])
            )?;
        }
    }
    let dropped = &h["dropped_for_memory"];
    if dropped["events"].as_u64().unwrap_or(0) + dropped["hist_slices"].as_u64().unwrap_or(0) > 0 {
        writeln!(
            out,
            "{} records and {} histogram slices up to {:+.3} s from the trigger dropped to stay within --max-mem",
            dropped["events"],
            dropped["hist_slices"],
            from_trigger(&dropped["last_ns"])
        )?;
    }
    Ok(())
}

/// The report as one JSON object: the header, events per source, the events
/// around the first trigger and how many histogram records there were. The
/// events are written as they are read again, not gathered first.
fn json(c: &mut Capture, s: &Summary, symbols: &mut Symbols, out: &mut dyn Write) -> Result<()> {
    // The keys in serde_json's (sorted) order, as a Value of it would print.
    out.write_all(b"{\"around_trigger\":[")?;
    for (i, &offset) in s.around.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &c.event_at(offset, symbols)?)?;
    }
    writeln!(
        out,
        "],\"counts\":{},\"header\":{},\"hists\":{}}}",
        json!(s.counts),
        c.header,
        s.hist_records
    )?;
    Ok(())
}

/// Writes the capture as a Perfetto trace (see `perfetto_event`): the bytes
/// written.
fn write_perfetto(
    c: &mut Capture,
    mut starts: Vec<(u64, u64)>,
    symbols: &mut Symbols,
    path: &Path,
) -> Result<u64> {
    let file = File::create(path)?;
    let mut p = Perfetto {
        trace: Trace::new(BufWriter::with_capacity(1 << 16, file)),
        tracks: BTreeMap::new(),
        lanes: BTreeMap::new(),
    };
    let triggers = p.track("tracer record: triggers".into(), None)?;
    for t in c.header["triggers"].as_array().into_iter().flatten() {
        p.trace.event(
            t["at_ns"].as_u64().unwrap_or(0),
            triggers,
            Kind::Instant,
            t["trigger"].as_str().unwrap_or("trigger"),
            &[],
        )?;
    }
    // Slices by start time, for the lanes (the file has them by end).
    starts.sort_unstable();
    for (_, offset) in starts {
        let e = c.event_at(offset, symbols)?;
        p.event(&e)?;
    }
    Ok(p.trace.finish()?)
}

/// The Perfetto trace being written: a track per disk (lanes under it, so
/// that concurrent I/Os do not overlap on one track), per process for faults,
/// per flow for TCP and per vCPU for KVM; operations as slices, retransmits
/// and drops as instants, and the triggers on a track of their own.
struct Perfetto {
    trace: Trace<BufWriter<File>>,
    /// Track name -> uuid.
    tracks: BTreeMap<String, u64>,
    lanes: BTreeMap<String, Lanes>,
}

impl Perfetto {
    fn track(&mut self, name: String, parent: Option<u64>) -> io::Result<u64> {
        if let Some(&id) = self.tracks.get(&name) {
            return Ok(id);
        }
        let id = self.tracks.len() as u64 + 1;
        self.trace.track(id, parent, &name)?;
        self.tracks.insert(name, id);
        Ok(id)
    }

    /// One event, with its fields as arguments.
    fn event(&mut self, e: &Value) -> io::Result<()> {
        let end = e["ts_ns"].as_u64().unwrap_or(0);
        let dur = e["dur_ns"].as_u64().unwrap_or(0);
        let start = end.saturating_sub(dur);
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
        let (group, name) = track_and_name(e);
        let parent = self.track(group.clone(), None)?;
        if dur == 0 {
            return self.trace.event(end, parent, Kind::Instant, &name, &args);
        }
        let lane = self
            .lanes
            .entry(group.clone())
            .or_default()
            .take(start, end);
        let id = if lane == 0 {
            parent
        } else {
            self.track(format!("{group} #{}", lane + 1), Some(parent))?
        };
        self.trace.slice(start, end - start, id, &name, &args)
    }
}

/// An event's Perfetto track (its disk, process, flow or vCPU) and name.
fn track_and_name(e: &Value) -> (String, String) {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    match e["source"].as_str() {
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
    }
}
