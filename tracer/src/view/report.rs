//! `tracer report FILE`: what a capture of `tracer record` holds, read the way
//! an incident is read: the trigger and its event first, then each source's
//! count and distribution, the top processes (and disks, flows, vCPUs: each
//! tool's schema says which table its events count in), the events around the
//! trigger in time order, and where records were lost. Instruction pointers
//! are symbolized from the ELF symbol tables of the mapped files (symbols.rs).
//! `--perfetto OUT` writes the capture as a Perfetto trace.
//!
//! Events are read through the schema of the tool that wrote them (how one
//! reads as a line, its Perfetto track); an event of a tool without one (a
//! later tracer's) is counted and shown by its source alone.
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

use crate::source::{
    hist::Hist,
    schema::{Schema, Schemas},
};
use crate::view::{
    heatmap::add_buckets,
    perfetto::{Arg, Kind, Lanes, Trace},
    records::Records,
    symbols::Symbols,
};

/// Events this close to the first trigger are listed one by one.
const AROUND_NS: u64 = 100_000_000;

/// A capture being read: its header, then its records, and the schemas its
/// events are read by.
struct Capture<'a> {
    header: Value,
    records: Records<BufReader<File>>,
    schemas: &'a Schemas,
    symbols: Symbols,
}

impl Capture<'_> {
    fn open<'a>(path: &Path, schemas: &'a Schemas) -> Result<Capture<'a>> {
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
        Ok(Capture {
            header,
            records,
            schemas,
            symbols: Symbols::default(),
        })
    }

    fn first_trigger_ns(&self) -> u64 {
        self.header["triggers"][0]["at_ns"].as_u64().unwrap_or(0)
    }

    /// The event at `offset`, symbolized.
    fn event_at(&mut self, offset: u64) -> Result<Value> {
        let mut e = self.records.at(offset)?;
        self.symbolize(&mut e);
        Ok(e)
    }

    fn symbolize(&mut self, e: &mut Value) {
        let schema = self.schemas.of(e);
        self.symbols.add_to(e, schema);
    }

    /// One event as a line: what it was, to whom, how long.
    fn describe(&self, e: &Value) -> String {
        match self.schemas.of(e) {
            Some(s) => s.line.render(s, e),
            None => format!("{} event", e["source"].as_str().unwrap_or("")),
        }
    }
}

/// `tracer report`: the text (or `--json`) on stdout, and with `perfetto` a
/// Perfetto trace written there too. Events are read by the tools' `schemas`.
pub fn run(path: &Path, as_json: bool, perfetto: Option<&Path>, schemas: &Schemas) -> Result<()> {
    let mut capture = Capture::open(path, schemas)?;
    let mut summary = Summary::read(&mut capture, perfetto.is_some())?;
    if let Some(out) = perfetto {
        let starts = std::mem::take(&mut summary.starts);
        let n = write_perfetto(&mut capture, starts, out)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report: wrote {} ({n} bytes)", out.display());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if as_json {
        json(&mut capture, &summary, &mut out)?;
    } else {
        text(&mut capture, &summary, &mut out)?;
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
    /// The tables the schemas name ("disks", "flows", ...), by title.
    tops: BTreeMap<&'static str, Totals>,
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
                    s.add_event(e, c.schemas.of(e));
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

    fn add_event(&mut self, e: &Value, schema: Option<&Schema>) {
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
        if let Some(s) = schema
            && let Some((title, key)) = s.top
        {
            add(self.tops.entry(title).or_default(), key.render(s, e));
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
        add_buckets(slots, h);
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
fn text(c: &mut Capture, s: &Summary, out: &mut dyn Write) -> Result<()> {
    text_header(&c.header, out)?;
    text_triggers(c, out)?;
    text_summary(s, out)?;
    text_around(c, s, out)?;
    text_losses(&c.header, c.first_trigger_ns(), out)?;
    Ok(())
}

/// Where and when the capture was made.
fn text_header(h: &Value, out: &mut dyn Write) -> io::Result<()> {
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
    )
}

/// Each trigger, with the event that fired it.
fn text_triggers(c: &mut Capture, out: &mut dyn Write) -> io::Result<()> {
    let triggers = c.header["triggers"].as_array().cloned().unwrap_or_default();
    for t in &triggers {
        writeln!(
            out,
            "\ntrigger {} at {}",
            t["trigger"].as_str().unwrap_or(""),
            t["time"].as_str().unwrap_or("")
        )?;
        if let Some(e) = t.get("event") {
            let mut e = e.clone();
            c.symbolize(&mut e);
            writeln!(
                out,
                "  {}: {}",
                e["source"].as_str().unwrap_or(""),
                c.describe(&e)
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

/// Events per source, their durations, the kernel's histograms and the tops.
fn text_summary(s: &Summary, out: &mut dyn Write) -> io::Result<()> {
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
    for (title, totals) in &s.tops {
        top(out, &format!("top {title}"), totals)?;
    }
    Ok(())
}

/// The events within `AROUND_NS` of the first trigger, in time order.
fn text_around(c: &mut Capture, s: &Summary, out: &mut dyn Write) -> Result<()> {
    let t0 = c.first_trigger_ns();
    writeln!(
        out,
        "\nevents within 100 ms of the first trigger (s from it):"
    )?;
    for &offset in &s.around {
        let e = c.event_at(offset)?;
        let ts = e["ts_ns"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "  {:+.6}  {:<5} {}",
            (ts as i128 - t0 as i128) as f64 / 1e9,
            e["source"].as_str().unwrap_or(""),
            c.describe(&e)
        )?;
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
fn json(c: &mut Capture, s: &Summary, out: &mut dyn Write) -> Result<()> {
    // The keys in serde_json's (sorted) order, as a Value of it would print.
    out.write_all(b"{\"around_trigger\":[")?;
    for (i, &offset) in s.around.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &c.event_at(offset)?)?;
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

/// Writes the capture as a Perfetto trace (see `Perfetto`): the bytes written.
fn write_perfetto(c: &mut Capture, mut starts: Vec<(u64, u64)>, path: &Path) -> Result<u64> {
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
        let e = c.event_at(offset)?;
        p.event(&e, c.schemas.of(&e))?;
    }
    Ok(p.trace.finish()?)
}

/// The Perfetto trace being written: each event on the track its tool's
/// schema names (a disk, a process's faults, a flow, a vCPU), with lanes
/// under it so that concurrent operations do not overlap on one track;
/// operations as slices, instants (retransmits, drops) as instants, and the
/// triggers on a track of their own.
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

    /// One event, with its fields as arguments; an event of a tool without a
    /// schema goes on the track "other".
    fn event(&mut self, e: &Value, schema: Option<&Schema>) -> io::Result<()> {
        let end = e["ts_ns"].as_u64().unwrap_or(0);
        let dur = e["dur_ns"].as_u64().unwrap_or(0);
        let start = end.saturating_sub(dur);
        let args = args(e);
        let (group, name) = schema.map_or_else(
            || ("other".to_string(), "event".to_string()),
            |s| (s.track.name.render(s, e), s.track.slice.render(s, e)),
        );
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

/// An event's fields as Perfetto arguments, but its times and record type.
fn args(e: &Value) -> Vec<(&str, Arg)> {
    e.as_object()
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
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A capture of every event tool's record, one of a tool without a schema
    /// ("later"), a histogram and a lost span; the trigger at 1 s.
    const CAPTURE: &str = r#"{"record":"capture","version":1,"host":"h","kernel":"6.1","triggers":[{"trigger":"block.lat>1ms","at_ns":1000000000,"time":"12:00:01.000000","event":{"record":"event","tool":"biosnoop","source":"block","comm":"dd","pid":10,"disk":"vda","t":"R","rwbs":"RS","sector":8,"bytes":4096,"lat_ns":2000000,"ts_ns":1000000000,"dur_ns":2000000}},{"trigger":"SIGUSR2","at_ns":1050000000,"time":"12:00:01.050000","signal":"SIGUSR2"}],"window":{"start_ns":0,"end_ns":2000000000,"start":"12:00:00.000000","end":"12:00:02.000000","before_s":1.0,"after_s":1.0,"closed_early":false},"clock":{"unix_ns_at_mono_zero":0},"sources":["biosnoop","faultsnoop","biolatency"],"events":9,"dropped_for_memory":{"events":0,"hist_slices":0},"lost_spans":[{"source":"biosnoop","start_ns":900000000,"end_ns":1000000000,"records":3,"missed":1}]}
{"record":"event","tool":"biosnoop","source":"block","comm":"dd","pid":10,"disk":"vda","t":"R","rwbs":"RS","sector":8,"bytes":4096,"lat_ns":2000000,"ts_ns":1000000000,"dur_ns":2000000}
{"record":"event","tool":"biosnoop","source":"block","comm":"dd","pid":10,"disk":"vda","t":"W","rwbs":"WS","sector":16,"bytes":8192,"lat_ns":3000000,"ts_ns":1001000000,"dur_ns":3000000}
{"record":"event","tool":"faultsnoop","source":"fault","comm":"a","pid":20,"tid":20,"addr":"0x1000","ip":"0x55aa","type":"read/user/major","lat_ns":50000,"mapping":"/f","ip_mapping":"?","ip_offset":0,"ts_ns":1010000000,"dur_ns":50000}
{"record":"event","tool":"faultsnoop","source":"fault","comm":"a","pid":20,"tid":20,"addr":"0x2000","ip":"0x66bb","type":"write/user/minor","lat_ns":150000,"mapping":"[anon]","ip_mapping":"/nonexistent/lib.so","ip_offset":16,"ts_ns":1015000000,"dur_ns":150000}
{"record":"event","tool":"kvmexits","source":"kvm","pid":30,"tid":31,"vm":"guest","vcpu":"0","reason":"io","lat_ns":7000,"ts_ns":1020000000,"dur_ns":7000}
{"record":"event","tool":"tcpconnlat","source":"tcp","pid":40,"comm":"curl","ip":4,"saddr":"127.0.0.1","daddr":"127.0.0.1","dport":80,"lport":5000,"lat_ns":90000,"ts_ns":1030000000,"dur_ns":90000}
{"record":"event","tool":"tcpdrop","source":"tcp","pid":0,"ip":4,"saddr":"127.0.0.1","sport":5000,"daddr":"127.0.0.1","dport":80,"state":"-","tcp_flags":2,"reason":"NO_SOCKET","location":"tcp_v4_rcv","ts_ns":1040000000,"dur_ns":0}
{"record":"event","tool":"later","source":"sched","comm":"x","pid":50,"ts_ns":1060000000,"dur_ns":1000}
{"record":"event","tool":"tcpretrans","source":"tcp","pid":0,"ip":4,"laddr":"127.0.0.1","lport":5000,"raddr":"127.0.0.1","rport":80,"type":"R","state":"ESTABLISHED","segs":1,"netns":1,"err":0,"ts_ns":1500000000,"dur_ns":0}
{"record":"hist","tool":"biolatency","disk":"vda","unit":"usecs","start_ns":900000000,"end_ns":1000000000,"buckets":[{"low":1024,"high":2047,"count":2}]}
"#;

    /// A file for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        /// A file of its own: tests run on threads at once, and two may
        /// share a `name`.
        fn new(name: &str, text: &str) -> Scratch {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "tracer-report-{}-{n}-{name}.ndjson",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The report of `capture`, as text or JSON.
    fn report(name: &str, capture: &str, as_json: bool) -> Result<String> {
        let file = Scratch::new(name, capture);
        let schemas = crate::tools::schemas();
        let mut c = Capture::open(&file.0, &schemas)?;
        let s = Summary::read(&mut c, false)?;
        let mut out = Vec::new();
        if as_json {
            json(&mut c, &s, &mut out)?;
        } else {
            text(&mut c, &s, &mut out)?;
        }
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn text_reads_each_event_by_its_tools_schema() {
        let text = report("text", CAPTURE, false).unwrap();
        assert!(text.starts_with(
            "capture on h (kernel 6.1), sources biosnoop, faultsnoop, biolatency
window 12:00:00.000000 .. 12:00:02.000000 (2.000 s: 1.0 s before the first trigger, 1.0 s after the last)

trigger block.lat>1ms at 12:00:01.000000
  block: dd 10 vda R sector 8 4096 bytes 2.000 ms

trigger SIGUSR2 at 12:00:01.050000
  (SIGUSR2)

9 events: block 2, fault 2, kvm 1, sched 1, tcp 3

block: time per operation in the window
"
        ));
        assert!(
            text.contains("\nbiolatency disk vda: in the kernel, host-wide, over the window\n")
        );
        let from_tops = &text[text.find("\ntop processes").unwrap()..];
        assert_eq!(
            from_tops,
            "
top processes                                      EVENTS     TIME(ms)
  dd (10)                                               2        5.000
  a (20)                                                2        0.200
  curl (40)                                             1        0.090
  x (50)                                                1        0.001

top disks                                          EVENTS     TIME(ms)
  vda                                                   2        5.000

top flows                                          EVENTS     TIME(ms)
  127.0.0.1 > 127.0.0.1:80                              1        0.090
  127.0.0.1:5000 > 127.0.0.1:80                         2        0.000

top vCPUs                                          EVENTS     TIME(ms)
  guest (30) vcpu 0                                     1        0.007

events within 100 ms of the first trigger (s from it):
  +0.000000  block dd 10 vda R sector 8 4096 bytes 2.000 ms
  +0.001000  block dd 10 vda W sector 16 8192 bytes 3.000 ms
  +0.010000  fault a 20 read/user/major at 0x1000 ip 0x55aa (/f) 0.050 ms
  +0.015000  fault a 20 write/user/minor at 0x2000 ip lib.so+0x10 ([anon]) 0.150 ms
  +0.020000  kvm   vm guest (30) vcpu 0 io 0.007 ms
  +0.030000  tcp   connect curl 40 127.0.0.1 -> 127.0.0.1:80 0.090 ms
  +0.040000  tcp   drop 127.0.0.1:5000 > 127.0.0.1:80 - NO_SOCKET
  +0.060000  sched sched event

records lost (ring buffer full) or missed (the kernel skipped tracing while BPF was busy on that CPU):
  biosnoop 3 lost, 1 missed in the 100 ms ending +0.000 s from the trigger
"
        );
    }

    #[test]
    fn json_holds_the_events_around_the_trigger_symbolized() {
        let v: Value = serde_json::from_str(&report("json", CAPTURE, true).unwrap()).unwrap();
        let around = v["around_trigger"].as_array().unwrap();
        let tools: Vec<&str> = around.iter().map(|e| e["tool"].as_str().unwrap()).collect();
        assert_eq!(
            tools,
            [
                "biosnoop",
                "biosnoop",
                "faultsnoop",
                "faultsnoop",
                "kvmexits",
                "tcpconnlat",
                "tcpdrop",
                "later"
            ]
        );
        // A mapping without a path has no symbol; a file that cannot be read,
        // its module and offset.
        assert!(around[2].get("symbol").is_none());
        assert_eq!(around[3]["symbol"], "lib.so+0x10");
        assert_eq!(
            v["counts"],
            json!({"block": 2, "fault": 2, "kvm": 1, "sched": 1, "tcp": 3})
        );
        assert_eq!(v["hists"], 1);
        assert_eq!(v["header"]["host"], "h");
    }

    #[test]
    fn perfetto_puts_each_event_on_its_tools_track() {
        let file = Scratch::new("perfetto-in", CAPTURE);
        let out = Scratch::new("perfetto-out", "");
        let schemas = crate::tools::schemas();
        let mut c = Capture::open(&file.0, &schemas).unwrap();
        let mut s = Summary::read(&mut c, true).unwrap();
        let n = write_perfetto(&mut c, std::mem::take(&mut s.starts), &out.0).unwrap();
        let bytes = std::fs::read(&out.0).unwrap();
        assert_eq!(n, bytes.len() as u64);
        // Protobuf strings are their bytes: each track and slice name is there.
        let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
        for name in [
            "tracer record: triggers",
            "disk vda",
            "disk vda #2",
            "RS 4096",
            "faults a (20)",
            "write/user/minor",
            "vm guest vcpu 0",
            "tcp 127.0.0.1 > 127.0.0.1:80",
            "connect",
            "tcp 127.0.0.1:5000 > 127.0.0.1:80",
            "drop NO_SOCKET",
            "retransmit R",
            "other",
            "lib.so+0x10",
        ] {
            assert!(has(name), "{name}");
        }
    }

    #[test]
    fn what_is_not_a_capture_is_refused() {
        for (name, text, message) in [
            ("empty", "", "is empty"),
            (
                "text",
                "nope\n",
                "is not a capture (its first line is not JSON)",
            ),
            (
                "event",
                "{\"record\":\"event\"}\n",
                "is not a capture of tracer record",
            ),
        ] {
            let e = report(name, text, false).unwrap_err().to_string();
            assert!(e.ends_with(&format!("-{name}.ndjson {message}")), "{e}");
        }
        // A bare header is a capture with nothing in it.
        let text = report("bare", "{\"record\":\"capture\"}\n", false).unwrap();
        assert!(text.contains("\n0 events: \n"), "{text}");
        assert!(
            text.ends_with("\nno records lost in the window\n"),
            "{text}"
        );
    }
}
