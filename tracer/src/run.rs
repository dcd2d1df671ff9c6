//! The run loop every tool shares: the banner, Ctrl-C/SIGTERM/SIGHUP (a final
//! report, then detach), `interval [count]`, and the terminal and NDJSON sinks.
//! An aggregating source is sampled each interval (or once at the end); an event
//! source's ring buffer is drained into tokio as records arrive. Output goes to
//! stdout through a thread of its own (`output::StdoutWriter`), so that a
//! blocked reader never makes the tool deaf to its signals.

use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval_at},
};

use crate::output::{self, Batch, Clock, StdoutWriter};
use crate::source::{Event, Kind, Layout, Sample, Source};
use crate::view::heatmap::Heatmap;

/// When to report and when to stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Report every this often; None: once, at the end.
    pub interval: Option<Duration>,
    /// Stop after this many reports; None: until Ctrl-C.
    pub count: Option<u64>,
}

/// How a tool's run prints.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// What is traced, for the banner: "Tracing <what>... Hit Ctrl-C to end."
    pub what: &'a str,
    pub json: bool,
    pub verbose: bool,
    /// -T: wall-clock times in records.
    pub timestamp: bool,
    pub schedule: Schedule,
    /// `--heatmap FILE.svg`: a column per interval (every second without one).
    pub heatmap: Option<PathBuf>,
}

/// Runs a future on a single-threaded tokio runtime: one thread is plenty and
/// keeps the tracer's own footprint small; several sources share it.
pub fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?
        .block_on(f)
}

/// SIGINT, SIGTERM and SIGHUP: each ends a run after its final report. SIGHUP
/// is left alone when it was ignored at start (`nohup`).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Option<Signal>,
}

impl Signals {
    pub fn new() -> Result<Signals> {
        let hup = if ignored(libc::SIGHUP) {
            None
        } else {
            Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?)
        };
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup,
        })
    }

    pub async fn recv(&mut self) {
        let Signals { int, term, hup } = self;
        let hangup = async {
            match hup {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hangup => {}
        }
    }
}

/// Whether signal `sig` was ignored when the process started.
fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the disposition into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
    read && old.sa_sigaction == libc::SIG_IGN
}

/// The banner (stderr; tests wait for it), printed once every hook is attached
/// and the signal handlers are in place, so an early Ctrl-C still gets a report.
pub fn announce(what: &str) {
    eprintln!("Tracing {what}... Hit Ctrl-C to end.");
}

/// How often a quiet ring buffer is drained (the kernel side wakes us only once
/// enough bytes are pending, to batch wake-ups).
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// A source's ring buffer, registered with tokio.
pub struct Ring(AsyncFd<RingBuf<MapData>>);

impl Ring {
    pub fn take(source: &mut dyn Source) -> Result<Ring> {
        let ring = source.loaded_mut().take_events()?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd
        // stays open for as long as it is registered.
        Ok(Ring(
            unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?,
        ))
    }

    /// Hands pending records to `f` until the ring is empty (returns false) or
    /// `f` returns false (returns true: more may be pending).
    pub fn drain(&mut self, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        let ring = self.0.get_mut();
        while let Some(item) = ring.next() {
            if !f(&item) {
                return true;
            }
        }
        false
    }

    /// Waits until the kernel signals pending records.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self
            .0
            .readable_mut()
            .await
            .context("polling the ring buffer")?;
        guard.clear_ready();
        Ok(())
    }
}

/// Waits until the kernel signals pending records on any of `rings` (never,
/// for none).
pub async fn any_readable(rings: &mut [Ring]) -> Result<()> {
    std::future::poll_fn(|cx| {
        for ring in rings.iter_mut() {
            if let std::task::Poll::Ready(guard) = ring.0.poll_read_ready_mut(cx) {
                guard.context("polling the ring buffer")?.clear_ready();
                return std::task::Poll::Ready(Ok(()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// How long stdout may take to write what is queued once a run ends: a reader
/// that takes nothing meanwhile is blocked, and the tool exits without it.
const FLUSH_GRACE: Duration = Duration::from_millis(250);

/// Runs one tool: its source feeds the terminal (its own layout) or NDJSON.
pub fn tool(mut source: Box<dyn Source>, mut layout: Box<dyn Layout>, opts: Options) -> Result<()> {
    let name = source.name();
    let verbose = opts.verbose;
    source.loaded().report_hooks(name, verbose);
    let heatmap = match &opts.heatmap {
        Some(path) => Some(Heatmap::new(path, name)?),
        None => None,
    };
    let mut sink = Terminal {
        layout: layout.as_mut(),
        opts,
        clock: Clock::now(),
        out: StdoutWriter::start()?,
        held: None,
    };
    let result = block_on(run_loop(source.as_mut(), &mut sink, heatmap));
    let unwritten = sink.out.finish(FLUSH_GRACE);
    let stdout = unwritten.report(name);
    exit_report(source.as_ref(), verbose);
    result.and(stdout)
}

/// The loop of `tool`: until a signal, the interval count, or stdout failing.
async fn run_loop(
    source: &mut dyn Source,
    sink: &mut Terminal<'_>,
    mut heatmap: Option<Heatmap>,
) -> Result<()> {
    let mut signals = Signals::new()?;
    let mut ring = match source.kind() {
        Kind::Stream => Some(Ring::take(source)?),
        Kind::Aggregate => None,
    };
    announce(sink.opts.what);
    if !sink.opts.json
        && let Some(h) = sink.layout.header()
    {
        sink.out.send(Batch::text(h + "\n"));
    }
    let schedule = sink.opts.schedule;
    let period = schedule.interval;
    // Without an interval, a heatmap still gets a column every second; the
    // terminal then reports the whole run at the end, as without one.
    let mut whole_run = Sample::default();
    let sampled = period.is_some() || heatmap.is_some();
    let mut ticks = interval_at(
        Instant::now() + period.unwrap_or(Duration::from_secs(1)),
        period.unwrap_or(Duration::from_secs(1)),
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drains = interval_at(Instant::now() + DRAIN_EVERY, DRAIN_EVERY);
    drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut done = 0u64;
    loop {
        tokio::select! {
            r = async { ring.as_mut().expect("guarded").readable().await }, if ring.is_some() => {
                r?;
                sink.drain(source, ring.as_mut(), false);
            }
            _ = drains.tick(), if ring.is_some() => sink.drain(source, ring.as_mut(), false),
            _ = ticks.tick(), if sampled => {
                if ring.is_some() {
                    sink.drain(source, ring.as_mut(), false);
                } else {
                    let sample = sample_into(source, heatmap.as_mut())?;
                    match period {
                        Some(_) => sink.show(source, sample, false),
                        None => source.absorb(&mut whole_run, sample),
                    }
                }
                if period.is_some() {
                    done += 1;
                    if schedule.count.is_some_and(|c| done >= c) {
                        return Ok(());
                    }
                }
            }
            _ = signals.recv() => break,
            _ = sink.out.failed() => break,
        }
    }
    // The final report: what the ring still holds, or the last interval (the
    // whole run, when only a heatmap was sampled each second).
    if ring.is_some() {
        sink.drain(source, ring.as_mut(), true);
    } else {
        let sample = sample_into(source, heatmap.as_mut())?;
        if period.is_none() && heatmap.is_some() {
            source.absorb(&mut whole_run, sample);
            sink.show(source, whole_run, true);
        } else {
            sink.show(source, sample, true);
        }
    }
    Ok(())
}

/// Reads what the kernel aggregated since the last read, adding it to the
/// heatmap (a column) when there is one.
fn sample_into(source: &mut dyn Source, heatmap: Option<&mut Heatmap>) -> Result<Sample> {
    let at = output::unix_time();
    let sample = source.sample()?;
    if let Some(h) = heatmap {
        h.add(at, &sample)?;
    }
    Ok(sample)
}

/// At exit: lost records are always reported; with -v every counter is.
pub fn exit_report(source: &dyn Source, verbose: bool) {
    let extra: Vec<(&str, u64)> = source
        .in_flight()
        .map(|n| ("in_flight_at_exit", n))
        .into_iter()
        .collect();
    source
        .loaded()
        .report_counters(source.name(), verbose, &extra);
}

/// The terminal and NDJSON sink of one tool.
struct Terminal<'a> {
    layout: &'a mut dyn Layout,
    opts: Options<'a>,
    clock: Clock,
    out: StdoutWriter,
    /// Intervals not yet shown because stdout was backed up (merged: the
    /// next report covers them).
    held: Option<Sample>,
}

/// How much text one batch of records holds (a drain of a full ring is cut
/// into such batches, so that a backed-up stdout stops it early).
const BATCH: usize = 64 << 10;

impl Terminal<'_> {
    /// Shows an interval's sample, or holds it while stdout is backed up (the
    /// last one, `at_end`, is always queued).
    fn show(&mut self, source: &dyn Source, sample: Sample, at_end: bool) {
        let sample = match self.held.take() {
            Some(mut held) => {
                source.absorb(&mut held, sample);
                held
            }
            None => sample,
        };
        if self.out.backed_up() && !at_end {
            self.held = Some(sample);
            return;
        }
        let mut text = String::new();
        if self.opts.json {
            for rec in sample_records(source.name(), &sample, self.opts.timestamp) {
                text.push_str(&rec.to_string());
                text.push('\n');
            }
        } else {
            self.layout.sample(&sample, &mut text);
        }
        self.out.send(Batch::report(text));
    }

    /// Moves the ring's records to stdout, in batches. While stdout is backed
    /// up the ring is left to fill (the kernel counts what it cannot keep),
    /// except `at_end`: then all is queued, and what stdout does not take is
    /// counted as not written.
    fn drain(&mut self, source: &mut dyn Source, ring: Option<&mut Ring>, at_end: bool) {
        let Some(ring) = ring else { return };
        let name = source.name();
        loop {
            if self.out.backed_up() && !at_end {
                return;
            }
            let mut batch = Batch::default();
            let more = ring.drain(|raw| {
                if let Some(e) = source.decode(raw) {
                    if self.opts.json {
                        batch
                            .text
                            .push_str(&event_record(name, &e, &self.clock).to_string());
                        batch.text.push('\n');
                    } else {
                        self.layout.event(&e, &self.clock, &mut batch.text);
                    }
                    batch.end_record();
                }
                batch.text.len() < BATCH
            });
            self.out.send(batch);
            if !more {
                return;
            }
        }
    }
}

fn object(tool: &str, fields: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut v = json!({"tool": tool});
    for (k, val) in fields {
        v[k] = val;
    }
    v
}

/// A sample as NDJSON records: one for the interval's fields and named tables,
/// one per row of an unnamed table, one per histogram (with explicit bounds).
pub fn sample_records(tool: &str, s: &Sample, timestamp: bool) -> Vec<Value> {
    let mut stamp = vec![("ts", json!(output::unix_time()))];
    if timestamp {
        stamp.push(("time", json!(output::local_time())));
    }
    let mut out = Vec::new();
    let named: Vec<_> = s.tables.iter().filter(|t| t.name.is_some()).collect();
    if !s.fields.is_empty() || !named.is_empty() {
        let mut v = object(tool, stamp.iter().cloned().chain(s.fields.iter().cloned()));
        for t in named {
            let rows: Vec<Value> = t
                .rows
                .iter()
                .map(|r| Value::Object(r.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()))
                .collect();
            v[t.name.expect("named")] = Value::Array(rows);
        }
        out.push(v);
    }
    for t in s.tables.iter().filter(|t| t.name.is_none()) {
        for row in &t.rows {
            out.push(object(
                tool,
                stamp.iter().cloned().chain(row.iter().cloned()),
            ));
        }
    }
    for h in &s.hists {
        let v = object(tool, stamp.iter().cloned().chain(h.labels.iter().cloned()));
        out.push(h.hist.json_with(v, s.unit));
    }
    out
}

/// An event as an NDJSON record: its fields, seconds since tracing began
/// (`time_s`) and the local time (`time`).
pub fn event_record(tool: &str, e: &Event, clock: &Clock) -> Value {
    let mut v = object(tool, e.fields.iter().cloned());
    v["time_s"] = json!(clock.since_start(e.ts));
    v["time"] = json!(output::format_local(clock.unix_ns(e.ts), true));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{HistGroup, Table};

    #[test]
    fn records_of_a_sample() {
        let mut hist = crate::source::hist::Hist::default();
        hist.buckets.insert(3, 2);
        hist.count = 2;
        hist.sum = 6;
        hist.max = 3;
        let s = Sample {
            fields: vec![("backend", json!("generic"))],
            tables: vec![
                Table {
                    name: Some("rows"),
                    rows: vec![vec![("pid", json!(1))]],
                },
                Table {
                    name: None,
                    rows: vec![vec![("disk", json!("vda"))], vec![("disk", json!("vdb"))]],
                },
            ],
            hists: vec![HistGroup {
                labels: vec![("disk", json!("vda"))],
                hist,
            }],
            unit: "usecs",
        };
        let recs = sample_records("t", &s, false);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0]["backend"], "generic");
        assert_eq!(recs[0]["rows"][0]["pid"], 1);
        assert_eq!(
            (recs[1]["disk"].clone(), recs[2]["disk"].clone()),
            (json!("vda"), json!("vdb"))
        );
        assert_eq!(recs[3]["count"], 2);
        assert_eq!(recs[3]["unit"], "usecs");
        assert!(recs.iter().all(|r| r["tool"] == "t" && r["ts"].is_f64()));
    }
}
