//! sink/capture/: `tracer record`, the flight recorder sink (here), and the
//! triggers that make it write a capture (trigger.rs).
//!
//! `tracer record`: a flight recorder. Event sources stream into a bounded
//! in-memory window (by time, `--before`, and by memory, `--max-mem`: the
//! oldest records go first, counted); aggregating sources are sampled every
//! 100 ms for context. A trigger makes a capture: once `--after` has passed,
//! the window around it is written to one file, on a thread of its own so that
//! writing never holds up tracing. Triggers inside a pending window extend it.

pub mod trigger;

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::{DiskArgs, TaskArgs};
use crate::kernel;
use crate::output::{self, Clock};
use crate::sink::capture::trigger::{EventKind, Excursion, Subsystem, Trigger};
use crate::sink::terminal::{event_record, sample_records};
use crate::sink::{Demand, Round, Sink, Sources};
use crate::source::{Event, Sample, Source};

/// The filters `tracer record` passes to every source it starts.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub cgroup: Option<PathBuf>,
    pub disk: Option<String>,
    /// Faults faster than this are not streamed (major faults always are).
    pub fault_floor: Duration,
}

impl Filter {
    /// The task filter as a tool's `-p`/`-c`.
    pub fn task(&self) -> TaskArgs {
        TaskArgs {
            pid: self.pid,
            cgroup: self.cgroup.clone(),
        }
    }

    /// The disk filter as a tool's `-d`.
    pub fn disk(&self) -> DiskArgs {
        DiskArgs {
            disk: self.disk.clone(),
        }
    }
}

/// A tool's event stream as the recorder starts it.
#[derive(Clone, Copy, Debug)]
pub struct Recorder {
    pub family: Subsystem,
    pub kind: EventKind,
    pub make: fn(&Filter) -> Result<Box<dyn Source>>,
}

/// What an event source's records are to the triggers.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub family: Subsystem,
    pub kind: EventKind,
}

pub struct Options {
    pub triggers: Vec<Trigger>,
    pub before: Duration,
    pub after: Duration,
    pub max_mem: u64,
    pub holdoff: Duration,
    pub max_captures: Option<u64>,
    pub dir: PathBuf,
}

/// A record in the window.
struct Stored {
    ts: u64,
    stream: usize,
    event: Event,
    bytes: u64,
}

/// A context sample in the window.
struct Slice {
    start: u64,
    end: u64,
    source: usize,
    sample: Sample,
    bytes: u64,
}

/// Records and samples dropped for `--max-mem`, and the time they span.
#[derive(Clone, Copy, Debug)]
struct Dropped {
    first_ns: u64,
    last_ns: u64,
    events: u64,
    slices: u64,
}

/// Records lost by the kernel in one 100 ms slice: `records` did not fit in
/// the ring, `missed` never reached the programs (see `Loaded::missed`).
#[derive(Clone, Debug)]
struct LostSpan {
    start: u64,
    end: u64,
    source: usize,
    records: u64,
    missed: u64,
}

/// A trigger that fired, and the event that fired it (None: SIGUSR2, or an
/// excursion, which has its statistic instead).
#[derive(Clone, Debug)]
struct Fired {
    trigger: String,
    at: u64,
    event: Option<(usize, Event)>,
    detail: Option<Value>,
}

struct Pending {
    start: u64,
    end: u64,
    fired: Vec<Fired>,
}

/// The heap a record holds (what `--max-mem` bounds), counted from the real
/// layout: its slot in the window (twice over: a VecDeque grows by doubling),
/// its field vector, and each string's allocation, with the allocator's
/// 16-byte overhead and rounding per allocation.
fn size_of_event(e: &Event) -> u64 {
    fn alloc(bytes: usize) -> u64 {
        (bytes.next_multiple_of(16) + 16) as u64
    }
    fn heap(v: &Value) -> u64 {
        match v {
            Value::String(s) => alloc(s.capacity()),
            Value::Array(a) => {
                alloc(a.capacity() * std::mem::size_of::<Value>()) + a.iter().map(heap).sum::<u64>()
            }
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| 64 + alloc(k.capacity()) + heap(v))
                .sum::<u64>(),
            _ => 0,
        }
    }
    2 * std::mem::size_of::<Stored>() as u64
        + alloc(e.fields.capacity() * std::mem::size_of::<(&str, Value)>())
        + e.fields.iter().map(|(_, v)| heap(v)).sum::<u64>()
}

fn size_of_sample(s: &Sample) -> u64 {
    let hists: u64 = s
        .hists
        .iter()
        .map(|h| 96 + 24 * h.hist.buckets.len() as u64 + 32 * h.labels.len() as u64)
        .sum();
    let rows: u64 = s.tables.iter().map(|t| 64 * t.rows.len() as u64).sum();
    64 + hists + rows
}

/// The flight recorder sink. Its sources are event sources and context
/// sources (sampled every 100 ms), in the order they were started.
pub struct FlightRecorder {
    /// Per source: what its events are to the triggers (None: a context source).
    streams: Vec<Option<Stream>>,
    opts: Options,
    clock: Clock,
    window: VecDeque<Stored>,
    slices: VecDeque<Slice>,
    lost: VecDeque<LostSpan>,
    bytes: u64,
    /// Records and samples dropped for `--max-mem` since the start.
    dropped_events: u64,
    dropped_slices: u64,
    /// What was dropped for `--max-mem` that a capture could still cover.
    drops: Option<Dropped>,
    /// Per source, (lost, missed) so far (event sources only).
    last_lost: Vec<(u64, u64)>,
    pending: Option<Pending>,
    holdoff_until: u64,
    suppressed: u64,
    /// Captures made (each written by a thread of its own, or not).
    captures: u64,
    excursions: Vec<(usize, Excursion)>,
    /// Durations of each family's operations in the current 100 ms slice.
    slice_durations: Vec<(Subsystem, u64)>,
    /// The capture writers; each returns whether its file was written.
    writers: Vec<std::thread::JoinHandle<bool>>,
    /// Captures written, once the writers are done.
    written: u64,
    /// SIGUSR2, installed at the start.
    usr2: Option<Signal>,
}

impl FlightRecorder {
    pub fn new(streams: Vec<Option<Stream>>, opts: Options) -> FlightRecorder {
        let excursions = opts
            .triggers
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(t, Trigger::Excursion { .. }))
            .map(|(i, _)| (i, Excursion::default()))
            .collect();
        FlightRecorder {
            last_lost: vec![(0, 0); streams.len()],
            streams,
            opts,
            clock: Clock::now(),
            window: VecDeque::new(),
            slices: VecDeque::new(),
            lost: VecDeque::new(),
            bytes: 0,
            dropped_events: 0,
            dropped_slices: 0,
            drops: None,
            pending: None,
            holdoff_until: 0,
            suppressed: 0,
            captures: 0,
            excursions,
            slice_durations: Vec::new(),
            writers: Vec::new(),
            written: 0,
            usr2: None,
        }
    }

    fn fire(
        &mut self,
        trigger: String,
        at: u64,
        event: Option<(usize, Event)>,
        detail: Option<Value>,
    ) {
        let now = kernel::monotonic_ns();
        if now < self.holdoff_until
            || self
                .opts
                .max_captures
                .is_some_and(|m| self.captures >= m && self.pending.is_none())
        {
            self.suppressed += 1;
            return;
        }
        let after = self.opts.after.as_nanos() as u64;
        let fired = Fired {
            trigger,
            at,
            event,
            detail,
        };
        match &mut self.pending {
            Some(p) => {
                // A trigger seen later may be stamped earlier (another ring).
                p.start = p
                    .start
                    .min(at.saturating_sub(self.opts.before.as_nanos() as u64));
                p.end = p.end.max(at + after);
                p.fired.push(fired);
            }
            None => {
                eprintln!(
                    "record: triggered by {} at {}; capturing until {} after it",
                    fired.trigger,
                    output::format_local(self.clock.unix_ns(at), true),
                    trigger_after(self.opts.after)
                );
                self.pending = Some(Pending {
                    start: at.saturating_sub(self.opts.before.as_nanos() as u64),
                    end: at + after,
                    fired: vec![fired],
                });
            }
        }
    }

    /// The sources' names as captures list them: the event sources, then the
    /// context sources.
    fn names<'a>(&self, sources: &'a Sources) -> Vec<&'a str> {
        let (events, contexts): (Vec<_>, Vec<_>) = sources
            .iter()
            .zip(&self.streams)
            .partition(|(_, stream)| stream.is_some());
        events
            .into_iter()
            .chain(contexts)
            .map(|(s, _)| s.name())
            .collect()
    }

    fn ingest(&mut self, stream: usize, event: Event) {
        let Some(Stream { family, kind }) = self.streams[stream] else {
            return;
        };
        if kind == EventKind::Op {
            self.slice_durations.push((family, event.dur_ns));
        }
        let fired: Vec<String> = self
            .opts
            .triggers
            .iter()
            .filter(|t| t.fires_on(family, kind, event.dur_ns))
            .map(|t| t.to_string())
            .collect();
        for t in fired {
            self.fire(t, event.ts, Some((stream, event.clone())), None);
        }
        let bytes = size_of_event(&event);
        self.bytes += bytes;
        self.window.push_back(Stored {
            ts: event.ts,
            stream,
            event,
            bytes,
        });
        self.evict_for_memory();
    }

    /// Drops the oldest records and samples while the window holds more than
    /// `--max-mem`, counting them.
    fn evict_for_memory(&mut self) {
        while self.bytes > self.opts.max_mem {
            let event_ts = self.window.front().map(|s| s.ts);
            let slice_end = self.slices.front().map(|s| s.end);
            let event_first = match (event_ts, slice_end) {
                (Some(ts), Some(end)) => ts <= end,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            // What is dropped: its bytes and the time it covers.
            let (bytes, first_ns, last_ns) = if event_first {
                let s = self.window.pop_front().expect("has a front");
                self.dropped_events += 1;
                (s.bytes, s.ts, s.ts)
            } else {
                let s = self.slices.pop_front().expect("has a front");
                self.dropped_slices += 1;
                (s.bytes, s.start, s.end)
            };
            self.bytes -= bytes;
            let d = self.drops.get_or_insert(Dropped {
                first_ns,
                last_ns,
                events: 0,
                slices: 0,
            });
            d.last_ns = d.last_ns.max(last_ns);
            if event_first {
                d.events += 1;
            } else {
                d.slices += 1;
            }
        }
    }

    /// Drops what is older than `--before` (unless a pending capture needs it).
    /// Called right after the rings were drained at `drained_at`: every event
    /// stamped before that has been seen, and has fired its triggers, so a
    /// trigger still to come is younger and needs nothing older than this.
    fn evict_by_time(&mut self, drained_at: u64) {
        let mut keep_from = drained_at
            .saturating_sub(COMMIT_GRACE.as_nanos() as u64)
            .saturating_sub(self.opts.before.as_nanos() as u64);
        if let Some(p) = &self.pending {
            keep_from = keep_from.min(p.start);
        }
        while let Some(front) = self.window.front() {
            if front.ts >= keep_from {
                break;
            }
            self.bytes -= front.bytes;
            self.window.pop_front();
        }
        while let Some(front) = self.slices.front() {
            if front.end >= keep_from {
                break;
            }
            self.bytes -= front.bytes;
            self.slices.pop_front();
        }
        while self.lost.front().is_some_and(|l| l.end < keep_from) {
            self.lost.pop_front();
        }
        if self.drops.is_some_and(|d| d.last_ns < keep_from) {
            self.drops = None;
        }
    }

    /// Every 100 ms, after the context samples: lost records, excursions, a
    /// due capture.
    fn slice(&mut self, sources: &Sources, round: &Round) {
        let (start, end) = (round.start, round.end);
        let lost: Vec<(u64, u64)> = sources
            .iter()
            .zip(&self.streams)
            .map(|(s, stream)| {
                if stream.is_none() {
                    return (0, 0);
                }
                let loaded = s.loaded();
                let ring = loaded
                    .counters()
                    .map(|c| c[tracer_common::counters::Counter::Lost as usize])
                    .unwrap_or(0);
                (ring, loaded.missed())
            })
            .collect();
        for (i, &(ring, missed)) in lost.iter().enumerate() {
            let (last_ring, last_missed) = self.last_lost[i];
            if ring > last_ring || missed > last_missed {
                self.lost.push_back(LostSpan {
                    start,
                    end,
                    source: i,
                    records: ring.saturating_sub(last_ring),
                    missed: missed.saturating_sub(last_missed),
                });
            }
        }
        self.last_lost = lost;
        let durations = std::mem::take(&mut self.slice_durations);
        let mut fired = Vec::new();
        for (t, ex) in self.excursions.iter_mut() {
            let trigger = &self.opts.triggers[*t];
            let Trigger::Excursion { family, factor } = trigger else {
                continue;
            };
            let of: Vec<u64> = durations
                .iter()
                .filter(|(f, _)| f == family)
                .map(|(_, d)| *d)
                .collect();
            if let Some((recent, baseline)) = ex.push(end, of, *factor) {
                fired.push((
                    trigger.to_string(),
                    json!({"p99_last_second_ns": recent, "p99_minute_before_ns": baseline}),
                ));
            }
        }
        for (t, detail) in fired {
            self.fire(t, end, None, Some(detail));
        }
        self.evict_for_memory();
        self.evict_by_time(round.drained_at);
        if self
            .pending
            .as_ref()
            .is_some_and(|p| round.drained_at >= p.end + COMMIT_GRACE.as_nanos() as u64)
        {
            self.write_capture(sources, false);
        }
    }

    fn event_json(&self, sources: &Sources, stream: usize, e: &Event) -> Value {
        let mut v = event_record(sources[stream].name(), e, &self.clock);
        v["record"] = json!("event");
        if let Some(s) = self.streams[stream] {
            v["source"] = json!(s.family.name());
        }
        v["ts_ns"] = json!(e.ts);
        v["dur_ns"] = json!(e.dur_ns);
        v
    }

    /// The header line of capture `p`, which holds `events` events.
    fn header(&self, sources: &Sources, p: &Pending, events: usize, early: bool) -> Value {
        // Per event source: lost records, missed events.
        let per_stream = |n: fn(&(u64, u64)) -> u64| -> Value {
            sources
                .iter()
                .zip(&self.streams)
                .zip(&self.last_lost)
                .filter(|((_, stream), _)| stream.is_some())
                .map(|((s, _), last)| (s.name().to_string(), json!(n(last))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let hooks: Value = sources
            .iter()
            .map(|s| {
                let attached: Vec<String> =
                    s.loaded().attached.iter().map(|c| c.explain()).collect();
                (s.name().to_string(), json!(attached))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let clock = self.clock;
        let local = |ns: u64| output::format_local(clock.unix_ns(ns), true);
        let triggers: Vec<Value> = p
            .fired
            .iter()
            .map(|f| {
                let mut v = json!({"trigger": f.trigger, "at_ns": f.at, "time": local(f.at)});
                if let Some((s, e)) = &f.event {
                    v["event"] = self.event_json(sources, *s, e);
                } else if f.detail.is_none() {
                    v["signal"] = json!("SIGUSR2");
                }
                if let Some(d) = &f.detail {
                    v["detail"] = d.clone();
                }
                v
            })
            .collect();
        let lost_spans: Vec<Value> = self
            .lost
            .iter()
            .filter(|l| l.end >= p.start && l.start <= p.end)
            .map(|l| {
                json!({"source": sources[l.source].name(), "start_ns": l.start, "end_ns": l.end, "records": l.records, "missed": l.missed})
            })
            .collect();
        json!({
            "record": "capture",
            "version": 1,
            "host": kernel::hostname(),
            "kernel": kernel::release(),
            "triggers": triggers,
            "window": {
                "start_ns": p.start, "end_ns": p.end,
                "start": local(p.start), "end": local(p.end),
                "before_s": self.opts.before.as_secs_f64(), "after_s": self.opts.after.as_secs_f64(),
                "closed_early": early,
            },
            "clock": {"unix_ns_at_mono_zero": clock.unix_ns(0)},
            "sources": self.names(sources),
            "hooks": hooks,
            "events": events,
            "dropped_for_memory": self.drops.filter(|d| d.last_ns >= p.start).map_or_else(
                || json!({"events": 0, "hist_slices": 0}),
                |d| json!({"events": d.events, "hist_slices": d.slices, "first_ns": d.first_ns, "last_ns": d.last_ns}),
            ),
            "lost": per_stream(|n| n.0),
            "missed": per_stream(|n| n.1),
            "lost_spans": lost_spans,
            "suppressed_triggers": self.suppressed,
        })
    }

    /// The lines of capture `p`: its header, its events in time order, then
    /// the context samples that overlap it.
    fn lines(&self, sources: &Sources, p: &Pending, early: bool) -> (Vec<String>, usize) {
        let mut events: Vec<&Stored> = self
            .window
            .iter()
            .filter(|s| s.ts >= p.start && s.ts <= p.end)
            .collect();
        events.sort_by_key(|s| s.ts);
        let mut lines = Vec::with_capacity(events.len() + 2);
        lines.push(self.header(sources, p, events.len(), early).to_string());
        for s in &events {
            lines.push(self.event_json(sources, s.stream, &s.event).to_string());
        }
        for s in self
            .slices
            .iter()
            .filter(|s| s.end >= p.start && s.start <= p.end)
        {
            for mut rec in sample_records(sources[s.source].name(), &s.sample, false) {
                rec["record"] = json!("hist");
                rec["start_ns"] = json!(s.start);
                rec["end_ns"] = json!(s.end);
                lines.push(rec.to_string());
            }
        }
        (lines, events.len())
    }

    /// Writes the pending capture (on a thread of its own).
    fn write_capture(&mut self, sources: &Sources, early: bool) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let (lines, n_events) = self.lines(sources, &p, early);
        let first = &p.fired[0];
        let path = self.opts.dir.join(format!(
            "capture-{}.ndjson",
            output::format_local(self.clock.unix_ns(first.at), true).replace(':', "")
        ));
        let path = unique(path);
        let what = p
            .fired
            .iter()
            .map(|f| f.trigger.clone())
            .collect::<Vec<_>>()
            .join(", ");
        self.captures += 1;
        self.holdoff_until = kernel::monotonic_ns() + self.opts.holdoff.as_nanos() as u64;
        self.writers.push(std::thread::spawn(move || {
            match write_atomically(&path, &lines) {
                Ok(()) => {
                    eprintln!(
                        "record: wrote {} ({what}; {n_events} events)",
                        path.display()
                    );
                    true
                }
                Err(e) => {
                    eprintln!("record: cannot write {}: {e}", path.display());
                    false
                }
            }
        }));
    }
}

impl Sink for FlightRecorder {
    fn every(&self) -> Option<Duration> {
        Some(trigger::SLICE)
    }

    fn start(&mut self, sources: &Sources) -> Result<()> {
        self.usr2 =
            Some(signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?);
        let names = self.names(sources);
        let triggers = if self.opts.triggers.is_empty() {
            "SIGUSR2 only".to_string()
        } else {
            let t: Vec<String> = self.opts.triggers.iter().map(|t| t.to_string()).collect();
            t.join(", ")
        };
        eprintln!(
            "record: {} armed with {triggers} (window {} before, {} after, {} MiB)",
            names.join(", "),
            trigger_after(self.opts.before),
            trigger_after(self.opts.after),
            self.opts.max_mem >> 20
        );
        Ok(())
    }

    fn event(&mut self, i: usize, _source: &dyn Source, event: Event) {
        self.ingest(i, event);
    }

    /// A context sample with anything in it becomes a slice of the window.
    fn sample(
        &mut self,
        i: usize,
        _source: &dyn Source,
        sample: Sample,
        round: &Round,
    ) -> Result<()> {
        if sample.hists.iter().all(|h| h.hist.count == 0)
            && sample.tables.iter().all(|t| t.rows.is_empty())
        {
            return Ok(());
        }
        let bytes = size_of_sample(&sample);
        self.bytes += bytes;
        self.slices.push_back(Slice {
            start: round.start,
            end: round.end,
            source: i,
            sample,
            bytes,
        });
        Ok(())
    }

    fn tick(&mut self, sources: &Sources, round: &Round) -> Result<()> {
        self.slice(sources, round);
        Ok(())
    }

    fn done(&self) -> bool {
        self.pending.is_none() && self.opts.max_captures.is_some_and(|m| self.captures >= m)
    }

    /// SIGUSR2 fires a trigger.
    fn poll_demand(&mut self, cx: &mut Context<'_>) -> Poll<Demand> {
        while let Some(usr2) = &mut self.usr2
            && let Poll::Ready(Some(())) = usr2.poll_recv(cx)
        {
            self.fire("SIGUSR2".into(), kernel::monotonic_ns(), None, None);
        }
        Poll::Pending
    }

    /// A capture still pending is written (closed early); a capture that
    /// could not be written fails the run once the others are done.
    fn finish(&mut self, sources: &Sources) -> Result<()> {
        self.write_capture(sources, true);
        self.written = self
            .writers
            .drain(..)
            .map(|w| w.join().unwrap_or(false))
            .filter(|&ok| ok)
            .count() as u64;
        let failed = self.captures - self.written;
        if failed > 0 {
            bail!("{failed} of {} captures not written", self.captures);
        }
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        Some(format!(
            "record: {} captures written, {} failed; {} triggers suppressed (holdoff or --max-captures); {} records and {} histogram slices dropped for --max-mem",
            self.written,
            self.captures - self.written,
            self.suppressed,
            self.dropped_events,
            self.dropped_slices
        ))
    }
}

fn trigger_after(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `path`, or with a counter before the extension if it exists.
fn unique(path: PathBuf) -> PathBuf {
    if !path.exists() {
        return path;
    }
    let stem = path.with_extension("");
    (2..)
        .map(|i| PathBuf::from(format!("{}-{i}.ndjson", stem.display())))
        .find(|p| !p.exists())
        .expect("some name is free")
}

/// Writes `lines` to a temporary name, then renames it to `path`. On any
/// failure (a full disk, the directory read-only or gone) the partial file is
/// removed: it would hold the space the next capture needs.
fn write_atomically(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let tmp = path.with_extension("ndjson.tmp");
    let written = write_lines(&tmp, lines).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_lines(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for l in lines {
        f.write_all(l.as_bytes())?;
        f.write_all(b"\n")?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Checks the capture directory before anything is loaded.
pub fn check_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(".tracer-record-probe");
    std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// How long after stamping its time a kernel program may still be committing
/// the record (it runs with preemption off: microseconds; this is generous).
/// Reading the rings at T has every record stamped before T - COMMIT_GRACE.
const COMMIT_GRACE: Duration = Duration::from_millis(20);
