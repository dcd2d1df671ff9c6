//! The run loop: `tracer <tool>`, `tracer exporter` and `tracer record` are this
//! loop with different sinks (sink/). It owns the sources and, until a signal
//! (SIGINT, SIGTERM, SIGHUP) or a sink's end: drains the event sources' ring
//! buffers into the sinks as records arrive (and every 100 ms), samples the
//! aggregating sources when the sinks ask (on a timer, or on demand), then
//! finishes each sink, reports each source's counters and detaches.

use std::{future::Future, task::Poll, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior, interval_at},
};

use crate::kernel;
use crate::output::{self, Options};
use crate::sink::{Demand, Round, Sink, Sources, heatmap::Heatmap, terminal::Terminal};
use crate::source::{Kind, Layout, Source};

/// Runs a future on a single-threaded tokio runtime: one thread is plenty and
/// keeps the tracer's own footprint small; several sources share it.
fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?
        .block_on(f)
}

/// SIGINT, SIGTERM and SIGHUP: each ends a run after its final report. SIGHUP
/// is left alone when it was ignored at start (`nohup`).
struct Signals {
    int: Signal,
    term: Signal,
    hup: Option<Signal>,
}

impl Signals {
    fn new() -> Result<Signals> {
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

    async fn recv(&mut self) {
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
fn announce(what: &str) {
    eprintln!("Tracing {what}... Hit Ctrl-C to end.");
}

/// How often a quiet ring buffer is drained (the kernel side wakes us only once
/// enough bytes are pending, to batch wake-ups).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// A source's ring buffer, registered with tokio.
struct Ring(AsyncFd<RingBuf<MapData>>);

impl Ring {
    fn take(source: &mut dyn Source) -> Result<Ring> {
        let ring = source.loaded_mut().take_events()?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd
        // stays open for as long as it is registered.
        Ok(Ring(
            unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?,
        ))
    }

    /// Hands pending records to `f` until the ring is empty or `f` returns
    /// false.
    fn drain(&mut self, mut f: impl FnMut(&[u8]) -> bool) {
        let ring = self.0.get_mut();
        while let Some(item) = ring.next() {
            if !f(&item) {
                return;
            }
        }
    }
}

/// Waits until the kernel signals pending records on any of `rings` (never,
/// for none).
async fn any_readable(rings: &mut [(usize, Ring)]) -> Result<()> {
    std::future::poll_fn(|cx| {
        for (_, ring) in rings.iter_mut() {
            if let Poll::Ready(guard) = ring.0.poll_read_ready_mut(cx) {
                guard.context("polling the ring buffer")?.clear_ready();
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    })
    .await
}

/// Runs one tool: its source feeds the terminal (its own layout) or NDJSON,
/// and a heatmap when asked for.
pub fn tool(source: Box<dyn Source>, layout: Box<dyn Layout>, opts: Options) -> Result<()> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let heatmap = match &opts.heatmap {
        Some(path) => Some(Heatmap::new(path, source.name(), opts.schedule.interval)?),
        None => None,
    };
    sinks.push(Box::new(Terminal::new(layout, &opts)?));
    sinks.extend(heatmap.map(|h| Box::new(h) as Box<dyn Sink>));
    run(vec![source], sinks, opts.what, opts.verbose)
}

/// Runs `sources` into `sinks` until a signal, a sink's end (its count of
/// reports or captures) or a sink's stop; `what` is traced, says the banner.
/// With `verbose`, each source's hooks and counters are reported.
pub fn run(
    mut sources: Vec<Box<dyn Source>>,
    mut sinks: Vec<Box<dyn Sink>>,
    what: &str,
    verbose: bool,
) -> Result<()> {
    for s in &sources {
        s.loaded().report_hooks(s.name(), verbose);
    }
    let mut result = block_on(run_loop(&mut sources, &mut sinks, what));
    for sink in &mut sinks {
        let finished = sink.finish(&sources);
        result = result.and(finished);
    }
    for s in &sources {
        exit_report(s.as_ref(), verbose);
    }
    for line in sinks.iter().filter_map(|s| s.summary()) {
        eprintln!("{line}");
    }
    // Detach the newest first. Where several tools share a tracepoint,
    // removing the probe that was attached first while one other remains
    // makes the kernel wait for an RCU grace period (10-15 ms here, each):
    // all tools, 54 ms oldest first, 10-14 ms newest first.
    while let Some(s) = sources.pop() {
        drop(s);
    }
    result
}

/// A timer whose first tick is one `period` from now.
fn timer(period: Duration) -> Interval {
    let mut t = interval_at(Instant::now() + period, period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// The loop of `run`: until a signal, a sink's end or a sink's stop.
async fn run_loop(sources: &mut Sources, sinks: &mut [Box<dyn Sink>], what: &str) -> Result<()> {
    let mut signals = Signals::new()?;
    let mut rings = Vec::new();
    for (i, s) in sources.iter_mut().enumerate() {
        if s.kind() == Kind::Stream {
            rings.push((i, Ring::take(s.as_mut())?));
        }
    }
    for sink in sinks.iter_mut() {
        sink.start(sources)?;
    }
    announce(what);
    let period = sinks.iter().filter_map(|s| s.every()).min();
    let mut ticks = timer(period.unwrap_or(DRAIN_EVERY));
    // A round drains the rings too: a separate timer only when rounds are rarer.
    let drain_timer = !rings.is_empty() && period.is_none_or(|p| p > DRAIN_EVERY);
    let mut drains = timer(DRAIN_EVERY);
    let mut since = kernel::monotonic_ns();
    loop {
        tokio::select! {
            ready = any_readable(&mut rings) => {
                ready?;
                drain(sources, sinks, &mut rings, false);
            }
            _ = drains.tick(), if drain_timer => drain(sources, sinks, &mut rings, false),
            _ = ticks.tick(), if period.is_some() => {
                let drained_at = kernel::monotonic_ns();
                drain(sources, sinks, &mut rings, false);
                let round = sample(sources, sinks, &mut since, drained_at, false)?;
                for sink in sinks.iter_mut() {
                    sink.tick(sources, &round)?;
                }
                if sinks.iter().any(|s| s.done()) {
                    return Ok(());
                }
            }
            (k, demand) = demands(sinks) => match demand {
                Demand::Sample => {
                    sample(sources, sinks, &mut since, kernel::monotonic_ns(), false)?;
                    sinks[k].answer(sources);
                }
                Demand::Stop => break,
            },
            _ = signals.recv() => break,
        }
    }
    // The last round: all the rings hold, and a final report.
    let drained_at = kernel::monotonic_ns();
    drain(sources, sinks, &mut rings, true);
    if sinks.iter().any(|s| s.reports_at_end()) {
        sample(sources, sinks, &mut since, drained_at, true)?;
    }
    Ok(())
}

/// Hands `value` to every sink through `f`: a clone to each but the last,
/// which takes it.
fn each<T: Clone>(
    sinks: &mut [Box<dyn Sink>],
    value: T,
    mut f: impl FnMut(&mut dyn Sink, T) -> Result<()>,
) -> Result<()> {
    let Some((last, others)) = sinks.split_last_mut() else {
        return Ok(());
    };
    for sink in others {
        f(sink.as_mut(), value.clone())?;
    }
    f(last.as_mut(), value)
}

/// Moves the rings' records to the sinks. While a sink is not ready they are
/// left in the ring, but `at_end`.
fn drain(
    sources: &mut Sources,
    sinks: &mut [Box<dyn Sink>],
    rings: &mut [(usize, Ring)],
    at_end: bool,
) {
    for (i, ring) in rings.iter_mut() {
        let i = *i;
        if !at_end && !sinks.iter().all(|s| s.ready()) {
            break;
        }
        let source = &mut sources[i];
        ring.drain(|raw| {
            if let Some(event) = source.decode(raw) {
                let _ = each(sinks, event, |sink, e| {
                    sink.event(i, source.as_ref(), e);
                    Ok(())
                });
            }
            at_end || sinks.iter().all(|s| s.ready())
        });
    }
    for sink in sinks.iter_mut() {
        sink.drained();
    }
}

/// Samples every aggregating source into every sink: a round from `since`
/// (moved to its end).
fn sample(
    sources: &mut Sources,
    sinks: &mut [Box<dyn Sink>],
    since: &mut u64,
    drained_at: u64,
    last: bool,
) -> Result<Round> {
    let round = Round {
        start: *since,
        end: kernel::monotonic_ns(),
        drained_at,
        unix: output::unix_time(),
        last,
    };
    *since = round.end;
    for (i, source) in sources.iter_mut().enumerate() {
        if source.kind() != Kind::Aggregate {
            continue;
        }
        match source.sample() {
            Ok(sample) => each(sinks, sample, |sink, s| {
                sink.sample(i, source.as_ref(), s, &round)
            })?,
            Err(e) => {
                let mut carry_on = true;
                for sink in sinks.iter_mut() {
                    carry_on &= sink.read_failed(source.as_ref(), &e);
                }
                if !carry_on {
                    return Err(e);
                }
            }
        }
    }
    Ok(round)
}

/// The first demand of a sink (in their order), with the sink's index.
fn demands(sinks: &mut [Box<dyn Sink>]) -> impl Future<Output = (usize, Demand)> + '_ {
    std::future::poll_fn(move |cx| {
        for (k, sink) in sinks.iter_mut().enumerate() {
            if let Poll::Ready(d) = sink.poll_demand(cx) {
                return Poll::Ready((k, d));
            }
        }
        Poll::Pending
    })
}

/// At exit: lost records are always reported; with -v every counter is.
fn exit_report(source: &dyn Source, verbose: bool) {
    let extra: Vec<(&str, u64)> = source
        .in_flight()
        .map(|n| ("in_flight_at_exit", n))
        .into_iter()
        .collect();
    source
        .loaded()
        .report_counters(source.name(), verbose, &extra);
}
