//! The run loop every tool shares: Ctrl-C/SIGTERM end the run after a final
//! report; `interval [count]` schedule reports and end the run by themselves; event
//! tools drain their ring buffer into tokio as records arrive.

use std::{future::Future, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval_at},
};

/// When to report and when to stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Report every this often; None: once, at the end.
    pub interval: Option<Duration>,
    /// Stop after this many reports; None: until Ctrl-C.
    pub count: Option<u64>,
}

/// Runs a future on a single-threaded tokio runtime (one thread is plenty and
/// keeps the tracer's own footprint small).
pub fn block_on<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?
        .block_on(f)
}

struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// What to say when tracing begins: the banner (stderr; tests wait for it) and
/// the column header of table output (stdout), printed once the signal handlers are
/// in place so an early Ctrl-C still gets a final report.
pub struct Start<'a> {
    pub what: &'a str,
    pub header: Option<String>,
}

impl<'a> Start<'a> {
    pub fn new(what: &'a str) -> Start<'a> {
        Start { what, header: None }
    }

    pub fn with_header(what: &'a str, header: Option<String>) -> Start<'a> {
        Start { what, header }
    }

    fn announce(&self) {
        eprintln!("Tracing {}... Hit Ctrl-C to end.", self.what);
        if let Some(h) = &self.header {
            println!("{h}");
        }
    }
}

/// Aggregating tools: calls `report(last)` every interval (or once at the end).
pub fn periodic(
    schedule: Schedule,
    start: Start<'_>,
    mut report: impl FnMut(bool) -> Result<()>,
) -> Result<()> {
    block_on(async move {
        let mut signals = Signals::new()?;
        start.announce();
        let Some(period) = schedule.interval else {
            signals.recv().await;
            return report(true);
        };
        let mut ticks = interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut done = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    done += 1;
                    let last = schedule.count.is_some_and(|c| done >= c);
                    report(last)?;
                    if last {
                        return Ok(());
                    }
                }
                _ = signals.recv() => return report(true),
            }
        }
    })
}

/// How often a quiet ring buffer is drained (the kernel side wakes us only once
/// enough bytes are pending, to batch wake-ups).
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Event tools: every record in `ring` is decoded as a `T` and goes to
/// `on_event` (a record shorter than `T` is skipped); `at_end` runs when the run
/// ends: at Ctrl-C/SIGTERM, or after interval * count with a schedule.
pub fn stream<T: aya::Pod>(
    schedule: Schedule,
    start: Start<'_>,
    ring: RingBuf<MapData>,
    mut on_event: impl FnMut(T) -> Result<()>,
    at_end: impl FnOnce() -> Result<()>,
) -> Result<()> {
    block_on(async move {
        let mut signals = Signals::new()?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd
        // stays open for as long as it is registered.
        let mut ring = unsafe { AsyncFd::register(ring) }.context("polling the ring buffer")?;
        start.announce();
        let period = schedule
            .interval
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut ticks = interval_at(Instant::now() + period, period);
        let mut drains = interval_at(Instant::now() + DRAIN_EVERY, DRAIN_EVERY);
        drains.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut done = 0u64;
        let mut drain = |ring: &mut RingBuf<MapData>| -> Result<()> {
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<T>() {
                    // SAFETY: T is plain data, the kernel wrote one; read_unaligned
                    // copes with the ring's 8-byte alignment.
                    on_event(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) })?;
                }
            }
            Ok(())
        };
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("polling the ring buffer")?;
                    drain(guard.get_inner_mut())?;
                    guard.clear_ready();
                }
                _ = drains.tick() => drain(ring.get_mut())?,
                _ = ticks.tick(), if schedule.interval.is_some() => {
                    drain(ring.get_mut())?;
                    done += 1;
                    if schedule.count.is_some_and(|c| done >= c) {
                        return at_end();
                    }
                }
                _ = signals.recv() => {
                    drain(ring.get_mut())?;
                    return at_end();
                }
            }
        }
    })
}
