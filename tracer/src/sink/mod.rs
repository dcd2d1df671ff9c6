//! sink/: where the sources' data goes. The run loop (run.rs) owns the sources
//! and hands what they read to its sinks: the terminal and NDJSON
//! (terminal.rs), an SVG heatmap (heatmap.rs), the Prometheus exporter
//! (prometheus.rs) and the flight recorder (capture/). A sink never reads a
//! kernel map itself: it says when it wants samples, and the loop reads them.

pub mod capture;
pub mod heatmap;
pub mod prometheus;
pub mod terminal;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Result;

use crate::source::{Event, Sample, Source};

/// The sources of a run, in the order they were started.
pub type Sources = [Box<dyn Source>];

/// One round of the loop: the rings drained, then the aggregating sources
/// sampled.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    /// What the samples cover (CLOCK_MONOTONIC ns): since the last round.
    pub start: u64,
    pub end: u64,
    /// When the rings were drained: every record stamped before this (but
    /// for the time a kernel program takes to commit one) was handed on.
    pub drained_at: u64,
    /// Unix time (seconds) just before the kernel's maps were read.
    pub unix: f64,
    /// The last round of a run that was stopped: its final report.
    pub last: bool,
}

/// What a sink asks of the loop between rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    /// Sample every aggregating source now, then `answer` (an exporter's
    /// scrape).
    Sample,
    /// End the run as a signal does (stdout failed).
    Stop,
}

/// A destination of the sources' events and samples. Every method has a
/// default that does nothing, so a sink states only what it takes.
pub trait Sink {
    /// How often the loop drains the rings, samples the aggregating sources
    /// and calls `tick` (None: never on a timer). Sinks of one run ask for the
    /// same period; the loop takes the shortest.
    fn every(&self) -> Option<Duration> {
        None
    }

    /// Once every source is loaded and the signal handlers are in place,
    /// just before the banner.
    fn start(&mut self, _sources: &Sources) -> Result<()> {
        Ok(())
    }

    /// Whether the sink takes events now. While one does not (its output is
    /// backed up) they stay in the kernel's ring, which counts what it cannot
    /// keep; the last drain of a run takes them all regardless.
    fn ready(&self) -> bool {
        true
    }

    /// One event of `sources[i]`.
    fn event(&mut self, _i: usize, _source: &dyn Source, _event: Event) {}

    /// The end of a drain of the rings.
    fn drained(&mut self) {}

    /// What aggregating source `sources[i]` counted over `round`.
    fn sample(
        &mut self,
        _i: usize,
        _source: &dyn Source,
        _sample: Sample,
        _round: &Round,
    ) -> Result<()> {
        Ok(())
    }

    /// Reading `source` failed: whether the run goes on (the sink counted the
    /// failure) or ends with the error (the default).
    fn read_failed(&mut self, _source: &dyn Source, _error: &anyhow::Error) -> bool {
        false
    }

    /// After each timed round (see `every`).
    fn tick(&mut self, _sources: &Sources, _round: &Round) -> Result<()> {
        Ok(())
    }

    /// Whether the sink has what it ran for (its count of reports, of
    /// captures): the run ends there, without a last round.
    fn done(&self) -> bool {
        false
    }

    /// What the sink asks of the loop, polled as a future. A sink may handle
    /// its own wake-ups here too (the recorder's SIGUSR2) and stay Pending.
    fn poll_demand(&mut self, _cx: &mut Context<'_>) -> Poll<Demand> {
        Poll::Pending
    }

    /// After the samples this sink demanded: answer whoever asked.
    fn answer(&mut self, _sources: &Sources) {}

    /// Whether a run stopped by a signal ends with a last round of samples
    /// (a final report).
    fn reports_at_end(&self) -> bool {
        false
    }

    /// Once the loop has ended: what is pending is written out. Before the
    /// sources' exit reports.
    fn finish(&mut self, _sources: &Sources) -> Result<()> {
        Ok(())
    }

    /// A closing line, said after the sources' exit reports.
    fn summary(&self) -> Option<String> {
        None
    }
}
