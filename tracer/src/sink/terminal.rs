//! The terminal and NDJSON sink of `tracer <tool>`: the tool's own text layout
//! or one JSON object per record. Output goes to stdout through a thread of its
//! own (`output::StdoutWriter`), so that a blocked reader never makes the tool
//! deaf to its signals: while stdout is backed up, events stay in the kernel's
//! ring (which counts what it cannot keep) and interval reports are merged.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Result;
use serde_json::{Value, json};

use crate::output::{self, Batch, Clock, Options, Schedule, StdoutWriter};
use crate::sink::{Demand, Round, Sink, Sources};
use crate::source::{Event, Layout, Sample, Source};

/// How long stdout may take to write what is queued once a run ends: a reader
/// that takes nothing meanwhile is blocked, and the tool exits without it.
const FLUSH_GRACE: Duration = Duration::from_millis(250);

/// How much text one batch of records holds (a drain of a full ring is cut
/// into such batches, so that a backed-up stdout stops it early).
const BATCH: usize = 64 << 10;

/// The terminal or NDJSON output of one tool's source.
pub struct Terminal {
    layout: Box<dyn Layout>,
    json: bool,
    timestamp: bool,
    schedule: Schedule,
    name: &'static str,
    clock: Clock,
    out: StdoutWriter,
    /// Resolves once a write to stdout failed (taken when it did).
    failed: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// Records not yet sent to the writer.
    batch: Batch,
    /// Intervals not yet shown because stdout was backed up (merged: the
    /// next report covers them).
    held: Option<Sample>,
    /// Without an interval, the samples so far (a heatmap has the source
    /// sampled every second): the report at the end covers the whole run.
    whole: Option<Sample>,
    /// Interval reports made.
    reports: u64,
}

impl Terminal {
    pub fn new(layout: Box<dyn Layout>, opts: &Options) -> Result<Terminal> {
        let out = StdoutWriter::start()?;
        let whole_run = opts.schedule.interval.is_none() && opts.heatmap.is_some();
        Ok(Terminal {
            layout,
            json: opts.json,
            timestamp: opts.timestamp,
            schedule: opts.schedule,
            name: "",
            clock: Clock::now(),
            failed: Some(Box::pin(out.failed())),
            out,
            batch: Batch::default(),
            held: None,
            whole: whole_run.then(Sample::default),
            reports: 0,
        })
    }

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
        if self.json {
            for rec in sample_records(source.name(), &sample, self.timestamp) {
                text.push_str(&rec.to_string());
                text.push('\n');
            }
        } else {
            self.layout.sample(&sample, &mut text);
        }
        self.out.send(Batch::report(text));
    }
}

impl Sink for Terminal {
    fn every(&self) -> Option<Duration> {
        self.schedule.interval
    }

    fn start(&mut self, sources: &Sources) -> Result<()> {
        self.name = sources.first().map_or("", |s| s.name());
        if !self.json
            && let Some(h) = self.layout.header()
        {
            self.out.send(Batch::text(h + "\n"));
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        !self.out.backed_up()
    }

    fn event(&mut self, _i: usize, source: &dyn Source, event: Event) {
        let text = &mut self.batch.text;
        if self.json {
            text.push_str(&event_record(source.name(), &event, &self.clock).to_string());
            text.push('\n');
        } else {
            self.layout.event(&event, &self.clock, text);
        }
        self.batch.end_record();
        if self.batch.text.len() >= BATCH {
            self.out.send(std::mem::take(&mut self.batch));
        }
    }

    fn drained(&mut self) {
        self.out.send(std::mem::take(&mut self.batch));
    }

    fn sample(
        &mut self,
        _i: usize,
        source: &dyn Source,
        sample: Sample,
        round: &Round,
    ) -> Result<()> {
        if self.schedule.interval.is_some() {
            self.show(source, sample, round.last);
        } else if !round.last {
            source.absorb(self.whole.get_or_insert_default(), sample);
        } else {
            let sample = match self.whole.take() {
                Some(mut whole) => {
                    source.absorb(&mut whole, sample);
                    whole
                }
                None => sample,
            };
            self.show(source, sample, true);
        }
        Ok(())
    }

    fn tick(&mut self, _sources: &Sources, _round: &Round) -> Result<()> {
        if self.schedule.interval.is_some() {
            self.reports += 1;
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.schedule.count.is_some_and(|c| self.reports >= c)
    }

    fn poll_demand(&mut self, cx: &mut Context<'_>) -> Poll<Demand> {
        let Some(failed) = &mut self.failed else {
            return Poll::Pending;
        };
        if failed.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.failed = None;
        Poll::Ready(Demand::Stop)
    }

    fn reports_at_end(&self) -> bool {
        true
    }

    /// What stdout did not take is said on stderr; a write error other than
    /// a reader that went away fails the run.
    fn finish(&mut self, _sources: &Sources) -> Result<()> {
        self.out.finish(FLUSH_GRACE).report(self.name)
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
