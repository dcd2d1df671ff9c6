//! `tracer plot INPUT -o OUT.svg --kind KIND`: pictures from any tool's NDJSON
//! (`--json`) or a capture of `tracer record`.
//!
//! - scatter: completion time x latency, a marker per operation type;
//! - latency-heatmap: time x log2 latency buckets, from events or from
//!   histogram records (then the kernel's own buckets, one column per record);
//! - offset-heatmap: time x disk offset, per disk (sequential vs random);
//! - utilization: per disk, the busy fraction of each interval, from each
//!   I/O's issue-to-completion span.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::core::{
    heatmap::{slot_rows, write_atomically},
    hist::slot_bounds,
    output,
    svg::{self, Column, Grid, Picture, Point, Row, Values},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Scatter,
    LatencyHeatmap,
    OffsetHeatmap,
    Utilization,
}

/// One operation read from the input.
struct Op {
    /// Completion time, seconds (Unix time for captures, else since the start).
    t: f64,
    lat_ns: Option<u64>,
    series: String,
    disk: Option<String>,
    sector: Option<u64>,
    bytes: Option<u64>,
    title: String,
}

/// A histogram record: its time, panel, unit and log2 counts.
struct HistRec {
    t0: Option<f64>,
    t1: f64,
    panel: String,
    unit: String,
    slots: Vec<u64>,
}

struct Input {
    ops: Vec<Op>,
    hists: Vec<HistRec>,
    /// Times are Unix seconds (a capture), else seconds since the run began.
    unix: bool,
    tool: String,
    host_kernel: Option<String>,
}

fn op_name(letter: &str) -> &str {
    match letter {
        "R" => "read",
        "W" => "write",
        "D" => "discard",
        "F" => "flush",
        "N" => "none",
        other => other,
    }
}

/// A histogram record's labels (its text fields but the bookkeeping ones) as
/// a panel title, as the heatmap sink titles them: "disk vda, op read".
fn hist_title(v: &Value) -> String {
    const SKIP: &[&str] = &["tool", "time", "unit", "record"];
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, x)| x.is_string() && !SKIP.contains(&k.as_str()))
        .map(|(k, x)| format!("{k} {}", x.as_str().unwrap_or("")))
        .collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

fn read(path: &Path) -> Result<Input> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut input = Input {
        ops: Vec::new(),
        hists: Vec::new(),
        unix: false,
        tool: String::new(),
        host_kernel: None,
    };
    let mut mono_zero_unix: Option<f64> = None;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        if v["record"] == "capture" {
            input.unix = true;
            mono_zero_unix = v["clock"]["unix_ns_at_mono_zero"]
                .as_u64()
                .map(|n| n as f64 / 1e9);
            input.tool = "tracer record".into();
            input.host_kernel = Some(format!(
                "{} (kernel {})",
                v["host"].as_str().unwrap_or("?"),
                v["kernel"].as_str().unwrap_or("?")
            ));
            continue;
        }
        if input.tool.is_empty() {
            input.tool = v["tool"].as_str().unwrap_or("").to_string();
        }
        if let Some(buckets) = v["buckets"].as_array() {
            let mut slots = Vec::new();
            for b in buckets {
                let low = b["low"].as_u64().unwrap_or(0);
                let slot = if low == 0 { 0 } else { low.ilog2() as usize };
                if slots.len() <= slot {
                    slots.resize(slot + 1, 0);
                }
                slots[slot] += b["count"].as_u64().unwrap_or(0);
            }
            let mono = |k: &str| {
                v[k].as_u64()
                    .zip(mono_zero_unix)
                    .map(|(ns, z)| z + ns as f64 / 1e9)
            };
            let Some(t1) = mono("end_ns").or_else(|| v["ts"].as_f64()) else {
                continue;
            };
            input.hists.push(HistRec {
                t0: mono("start_ns"),
                t1,
                panel: format!("{} {}", v["tool"].as_str().unwrap_or(""), hist_title(&v)),
                unit: v["unit"].as_str().unwrap_or("").to_string(),
                slots,
            });
            continue;
        }
        // An event: when it completed, and how long it took.
        let t = match (v["ts_ns"].as_u64(), mono_zero_unix, v["time_s"].as_f64()) {
            (Some(ns), Some(z), _) => z + ns as f64 / 1e9,
            (_, _, Some(s)) => s,
            _ => continue,
        };
        let lat_ns = v["lat_ns"]
            .as_u64()
            .or_else(|| v["dur_ns"].as_u64())
            .or_else(|| v["lat_ms"].as_f64().map(|ms| (ms * 1e6) as u64))
            .or_else(|| v["lat_us"].as_f64().map(|us| (us * 1e3) as u64));
        let series = if let Some(t) = v["t"].as_str() {
            op_name(t).to_string()
        } else if let Some(t) = v["type"].as_str().filter(|_| v["record"] != "hist") {
            t.to_string()
        } else if let Some(r) = v["reason"].as_str() {
            r.to_string()
        } else {
            v["tool"].as_str().unwrap_or("event").to_string()
        };
        let mut title = format!(
            "{:.6} s {}",
            t,
            v["comm"]
                .as_str()
                .unwrap_or(v["tool"].as_str().unwrap_or(""))
        );
        for k in ["pid", "disk", "sector", "bytes", "addr", "reason"] {
            if !v[k].is_null() {
                title.push_str(&format!(" {k} {}", v[k]));
            }
        }
        if let Some(ns) = lat_ns {
            title.push_str(&format!(" {:.3} ms", ns as f64 / 1e6));
        }
        input.ops.push(Op {
            t,
            lat_ns,
            series,
            disk: v["disk"].as_str().map(str::to_string),
            sector: v["sector"].as_u64(),
            bytes: v["bytes"].as_u64(),
            title,
        });
    }
    Ok(input)
}

/// A round column width giving about 100 columns over the range.
fn auto_interval(range: f64) -> f64 {
    round_up((range / 100.0).max(0.001))
}

/// The next 1, 2 or 5 times a power of ten.
fn round_up(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn seconds(t: f64) -> String {
    let s = format!("{t:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn local(t: f64) -> String {
    output::format_local((t.max(0.0) * 1e9) as u64, false)
}

fn value(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Columns of `width` seconds from `t_min`: the index of time `t`.
fn column_of(t: f64, t_min: f64, width: f64, n: usize) -> usize {
    (((t - t_min) / width).floor().max(0.0) as usize).min(n - 1)
}

/// Merges overlapping [start, end] spans.
fn union(mut spans: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Busy fraction of each column [t_min + i*w, t_min + (i+1)*w).
fn busy_fractions(spans: Vec<(f64, f64)>, t_min: f64, width: f64, n: usize) -> Vec<f64> {
    let mut busy = vec![0.0; n];
    for (s, e) in union(spans) {
        let first = column_of(s, t_min, width, n);
        let last = column_of(e, t_min, width, n);
        for (i, b) in busy.iter_mut().enumerate().take(last + 1).skip(first) {
            let c0 = t_min + i as f64 * width;
            let c1 = c0 + width;
            *b += (e.min(c1) - s.max(c0)).max(0.0);
        }
    }
    busy.iter().map(|b| (b / width).min(1.0)).collect()
}

pub struct Options {
    pub kind: Kind,
    /// Column width in seconds (heatmaps, utilization); None: about 100 columns.
    pub interval: Option<f64>,
    /// Scatter: log10 latency axis.
    pub log: bool,
}

pub fn plot(input_path: &Path, out: &Path, opts: &Options) -> Result<()> {
    let input = read(input_path)?;
    let name = input_path.display().to_string();
    let svg = draw(&input, &name, opts)?;
    write_atomically(out, svg.as_bytes())
}

fn draw(input: &Input, name: &str, opts: &Options) -> Result<String> {
    let timed: Vec<&Op> = input.ops.iter().filter(|o| o.lat_ns.is_some()).collect();
    let block: Vec<&Op> = timed
        .iter()
        .copied()
        .filter(|o| o.disk.is_some() && o.sector.is_some())
        .collect();
    let (x_label, x_fmt): (String, fn(f64) -> String) = if input.unix {
        ("local time".into(), local)
    } else {
        ("seconds since tracing began".into(), seconds)
    };
    let from = match &input.host_kernel {
        Some(h) => format!("{name}, {h}"),
        None => name.to_string(),
    };
    let range = |ts: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = ts.collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let span_text = |lo: f64, hi: f64| format!("{} .. {}", x_fmt(lo), x_fmt(hi));
    match opts.kind {
        Kind::Scatter => {
            if timed.is_empty() {
                bail!(
                    "{name} has no events with a latency to plot (e.g. biosnoop --json, a capture)"
                );
            }
            let mut series: Vec<String> = Vec::new();
            let points: Vec<Point> = timed
                .iter()
                .map(|o| {
                    let i = series
                        .iter()
                        .position(|s| *s == o.series)
                        .unwrap_or_else(|| {
                            series.push(o.series.clone());
                            series.len() - 1
                        });
                    Point {
                        t: o.t,
                        value: o.lat_ns.unwrap_or(0) as f64 / 1e6,
                        series: i,
                        title: o.title.clone(),
                    }
                })
                .collect();
            let (lo, hi) = range(&mut timed.iter().map(|o| o.t));
            let pic = Picture {
                title: format!("{}: latency of each operation", input.tool),
                subtitle: format!(
                    "{} operations, {}, from {from}",
                    timed.len(),
                    span_text(lo, hi)
                ),
                x_label: format!("completion time ({x_label})"),
                x_fmt,
                y_label: if opts.log {
                    "latency (ms, log scale)".into()
                } else {
                    "latency (ms)".into()
                },
                y_fmt: value,
            };
            Ok(svg::scatter(&pic, &series, &points, opts.log))
        }
        Kind::LatencyHeatmap if !timed.is_empty() => {
            let (lo, hi) = range(&mut timed.iter().map(|o| o.t));
            let width = opts.interval.unwrap_or_else(|| auto_interval(hi - lo));
            let n = (((hi - lo) / width).floor() as usize + 1).max(1);
            let mut counts = vec![Vec::<u64>::new(); n];
            for o in &timed {
                let us = o.lat_ns.unwrap_or(0) / 1000;
                let slot = if us == 0 { 0 } else { us.ilog2() as usize };
                let c = &mut counts[column_of(o.t, lo, width, n)];
                if c.len() <= slot {
                    c.resize(slot + 1, 0);
                }
                c[slot] += 1;
            }
            let grid = slot_grid("all operations".into(), &counts, lo, width, "usecs");
            let pic = Picture {
                title: format!("{}: latency heatmap", input.tool),
                subtitle: format!(
                    "{} operations, {}, columns of {} s; rows: log2 buckets of usecs; from {from}",
                    timed.len(),
                    span_text(lo, hi),
                    seconds(width)
                ),
                x_label,
                x_fmt,
                y_label: "latency (usecs)".into(),
                y_fmt: value,
            };
            Ok(svg::heatmap(&pic, &[grid], Values::Counts { lines: true }))
        }
        Kind::LatencyHeatmap => {
            if input.hists.is_empty() {
                bail!("{name} has neither events with a latency nor histogram records");
            }
            // One column per record; a record without a start begins where the
            // previous one of its panel ended (the first: one median interval back).
            let mut panels: BTreeMap<String, Vec<&HistRec>> = BTreeMap::new();
            for h in &input.hists {
                panels.entry(h.panel.clone()).or_default().push(h);
            }
            let unit = input.hists[0].unit.clone();
            let mut grids = Vec::new();
            for (title, recs) in panels {
                let mut gaps: Vec<f64> = recs.windows(2).map(|w| w[1].t1 - w[0].t1).collect();
                gaps.sort_by(f64::total_cmp);
                let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1.0);
                let slots: Vec<Vec<u64>> = recs.iter().map(|r| r.slots.clone()).collect();
                let (lo, hi) = slot_rows(&slots);
                let columns = recs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Column {
                        t0: r.t0.unwrap_or(if i == 0 {
                            r.t1 - typical
                        } else {
                            recs[i - 1].t1
                        }),
                        t1: r.t1,
                        values: (lo..=hi)
                            .map(|s| r.slots.get(s).copied().unwrap_or(0) as f64)
                            .collect(),
                    })
                    .collect();
                grids.push(Grid {
                    title,
                    rows: (lo..=hi)
                        .map(|s| {
                            let (a, b) = slot_bounds(s);
                            Row::range(a as f64, b as f64, &unit)
                        })
                        .collect(),
                    columns,
                });
            }
            let (lo, hi) = range(&mut input.hists.iter().map(|h| h.t1));
            let pic = Picture {
                title: format!("{}: latency heatmap (the kernel's histograms)", input.tool),
                subtitle: format!(
                    "{} histogram records, {}; rows: log2 buckets of {unit}; from {from}",
                    input.hists.len(),
                    span_text(lo, hi)
                ),
                x_label: if input.unix {
                    x_label
                } else {
                    "local time".into()
                },
                // Histogram records carry Unix times.
                x_fmt: local,
                y_label: unit.clone(),
                y_fmt: value,
            };
            Ok(svg::heatmap(&pic, &grids, Values::Counts { lines: true }))
        }
        Kind::OffsetHeatmap => {
            if block.is_empty() {
                bail!("{name} has no block I/O events with sectors (biosnoop --json, a capture)");
            }
            let (lo, hi) = range(&mut block.iter().map(|o| o.t));
            let width = opts.interval.unwrap_or_else(|| auto_interval(hi - lo));
            let n = (((hi - lo) / width).floor() as usize + 1).max(1);
            let mut disks: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
            for o in &block {
                disks
                    .entry(o.disk.as_deref().unwrap_or("?"))
                    .or_default()
                    .push(o);
            }
            const ROWS: usize = 48;
            let grids = disks
                .into_iter()
                .map(|(disk, ops)| {
                    // Offsets in MiB, from the lowest to the highest byte touched.
                    let start = |o: &Op| o.sector.unwrap_or(0) as f64 * 512.0 / 1048576.0;
                    let end = |o: &Op| start(o) + o.bytes.unwrap_or(0) as f64 / 1048576.0;
                    let (o_lo, o_hi) = (
                        ops.iter().map(|o| start(o)).fold(f64::INFINITY, f64::min),
                        ops.iter().map(|o| end(o)).fold(f64::NEG_INFINITY, f64::max),
                    );
                    // Round rows (a 1, 2 or 5 step in MiB) from a multiple of the step.
                    let step = round_up(((o_hi - o_lo) / ROWS as f64).max(1.0 / 1024.0));
                    let o_lo = (o_lo / step).floor() * step;
                    let rows = (((o_hi - o_lo) / step).ceil() as usize).clamp(1, ROWS + 1);
                    let mut cols = vec![vec![0.0; rows]; n];
                    for o in &ops {
                        let r = (((start(o) - o_lo) / step).floor() as usize).min(rows - 1);
                        cols[column_of(o.t, lo, width, n)][r] += 1.0;
                    }
                    Grid {
                        title: format!("disk {disk}"),
                        rows: (0..rows)
                            .map(|r| {
                                let a = o_lo + r as f64 * step;
                                Row {
                                    label: value(a),
                                    span: format!("{}..{} MiB", value(a), value(a + step)),
                                    low: a,
                                    high: a + step,
                                }
                            })
                            .collect(),
                        columns: cols
                            .into_iter()
                            .enumerate()
                            .map(|(i, values)| Column {
                                t0: lo + i as f64 * width,
                                t1: lo + (i + 1) as f64 * width,
                                values,
                            })
                            .collect(),
                    }
                })
                .collect::<Vec<_>>();
            let pic = Picture {
                title: format!("{}: disk offset heatmap", input.tool),
                subtitle: format!(
                    "{} I/Os, {}, columns of {} s; from {from}",
                    block.len(),
                    span_text(lo, hi),
                    seconds(width)
                ),
                x_label,
                x_fmt,
                y_label: "offset (MiB)".into(),
                y_fmt: value,
            };
            Ok(svg::heatmap(&pic, &grids, Values::Counts { lines: false }))
        }
        Kind::Utilization => {
            if block.is_empty() {
                bail!("{name} has no block I/O events (biosnoop --json, a capture)");
            }
            let spans = |o: &Op| (o.t - o.lat_ns.unwrap_or(0) as f64 / 1e9, o.t);
            let lo = block
                .iter()
                .map(|o| spans(o).0)
                .fold(f64::INFINITY, f64::min);
            let hi = block.iter().map(|o| o.t).fold(f64::NEG_INFINITY, f64::max);
            let width = opts.interval.unwrap_or_else(|| auto_interval(hi - lo));
            let n = (((hi - lo) / width).floor() as usize + 1).max(1);
            let mut disks: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
            for o in &block {
                disks
                    .entry(o.disk.as_deref().unwrap_or("?"))
                    .or_default()
                    .push(spans(o));
            }
            let names: Vec<&str> = disks.keys().copied().collect();
            let per_disk: Vec<Vec<f64>> = disks
                .into_values()
                .map(|s| busy_fractions(s, lo, width, n))
                .collect();
            let grid = Grid {
                title: "busy fraction per disk".into(),
                rows: names
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Row {
                        label: d.to_string(),
                        span: format!("disk {d}"),
                        low: i as f64,
                        high: i as f64,
                    })
                    .collect(),
                columns: (0..n)
                    .map(|i| Column {
                        t0: lo + i as f64 * width,
                        t1: lo + (i + 1) as f64 * width,
                        values: per_disk.iter().map(|d| d[i]).collect(),
                    })
                    .collect(),
            };
            let pic = Picture {
                title: format!("{}: disk utilization", input.tool),
                subtitle: format!(
                    "{} I/Os on {} disks, {}, columns of {} s (issue to completion); from {from}",
                    block.len(),
                    names.len(),
                    span_text(lo, hi),
                    seconds(width)
                ),
                x_label,
                x_fmt,
                y_label: "disk".into(),
                y_fmt: value,
            };
            Ok(svg::heatmap(&pic, &[grid], Values::Fraction))
        }
    }
}

/// A latency grid from per-column log2 slot counts.
fn slot_grid(title: String, counts: &[Vec<u64>], t_min: f64, width: f64, unit: &str) -> Grid {
    let (lo, hi) = slot_rows(counts);
    Grid {
        title,
        rows: (lo..=hi)
            .map(|s| {
                let (a, b) = slot_bounds(s);
                Row::range(a as f64, b as f64, unit)
            })
            .collect(),
        columns: counts
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                t0: t_min + i as f64 * width,
                t1: t_min + (i + 1) as f64 * width,
                values: (lo..=hi)
                    .map(|s| c.get(s).copied().unwrap_or(0) as f64)
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_is_the_union_of_spans() {
        // Two overlapping I/Os over 0.0..0.6 and one over 1.5..2.0, columns of 1 s.
        let b = busy_fractions(vec![(0.0, 0.5), (0.1, 0.6), (1.5, 2.0)], 0.0, 1.0, 3);
        assert!((b[0] - 0.6).abs() < 1e-9, "{b:?}");
        assert!((b[1] - 0.5).abs() < 1e-9, "{b:?}");
        assert_eq!(b[2], 0.0);
    }

    #[test]
    fn round_intervals() {
        assert_eq!(auto_interval(10.0), 0.1);
        assert_eq!(auto_interval(250.0), 5.0);
        assert_eq!(auto_interval(0.0), 0.001);
    }

    #[test]
    fn reads_tool_output_and_captures() {
        let dir = std::env::temp_dir().join(format!("tracer-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snoop = dir.join("snoop.ndjson");
        std::fs::write(
            &snoop,
            r#"{"tool":"biosnoop","comm":"dd","pid":1,"disk":"vda","t":"R","sector":8,"bytes":4096,"lat_ns":2000000,"time_s":0.5}
{"tool":"biosnoop","comm":"dd","pid":1,"disk":"vda","t":"W","sector":16,"bytes":4096,"lat_ns":300000000,"time_s":1.5}
"#,
        )
        .unwrap();
        let input = read(&snoop).unwrap();
        assert_eq!(input.ops.len(), 2);
        assert_eq!(input.ops[1].series, "write");
        assert_eq!(input.ops[1].lat_ns, Some(300_000_000));
        assert!(!input.unix);
        let opts = |kind| Options {
            kind,
            interval: Some(1.0),
            log: false,
        };
        let svg = draw(&input, "x", &opts(Kind::Scatter)).unwrap();
        assert_eq!(
            svg.matches("class=\"point\"").count(),
            2 + 2,
            "two points, two legend markers"
        );
        let svg = draw(&input, "x", &opts(Kind::LatencyHeatmap)).unwrap();
        // 2 ms is in slot 10 (1024..2047 us), 300 ms in slot 18.
        assert!(svg.contains("data-count=\"1\" data-row=\"0\""));
        assert!(svg.contains("data-low=\"262144\" data-high=\"524287\""));
        let svg = draw(&input, "x", &opts(Kind::Utilization)).unwrap();
        assert!(svg.contains("data-busy"));
        let capture = dir.join("capture.ndjson");
        std::fs::write(
            &capture,
            r#"{"record":"capture","clock":{"unix_ns_at_mono_zero":1000000000000000000},"host":"h","kernel":"k"}
{"record":"event","tool":"biosnoop","source":"block","disk":"vda","t":"R","sector":8,"bytes":4096,"lat_ns":1000,"dur_ns":1000,"ts_ns":2000000000}
{"record":"hist","tool":"biolatency","disk":"vda","unit":"nsecs","start_ns":1000000000,"end_ns":1100000000,"buckets":[{"low":0,"high":1,"count":0},{"low":2,"high":3,"count":4}]}
"#,
        )
        .unwrap();
        let input = read(&capture).unwrap();
        assert!(input.unix);
        assert_eq!(input.ops[0].t, 1_000_000_002.0);
        assert_eq!(input.hists.len(), 1);
        assert_eq!(input.hists[0].slots, vec![0, 4]);
        assert_eq!(input.hists[0].panel, "biolatency disk vda");
        let empty = dir.join("empty.ndjson");
        std::fs::write(&empty, "").unwrap();
        let e = draw(&read(&empty).unwrap(), "empty", &opts(Kind::Scatter)).unwrap_err();
        assert!(e.to_string().contains("no events"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
