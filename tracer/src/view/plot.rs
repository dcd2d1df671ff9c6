//! `tracer plot INPUT -o OUT.svg --kind KIND`: pictures from any tool's NDJSON
//! (`--json`) or a capture of `tracer record`, whose events are read through
//! their tool's schema (which field is the latency, the disk, the sector, the
//! series); a capture's event of a tool without one, by its duration alone.
//!
//! - scatter: completion time x latency, a marker per operation type;
//! - latency-heatmap: time x log2 latency buckets, from events or from
//!   histogram records (then the kernel's own buckets, one column per record);
//! - offset-heatmap: time x disk offset, per disk (sequential vs random);
//! - utilization: per disk, the busy fraction of each interval, from each
//!   I/O's issue-to-completion span.
//!
//! The input is read as a stream of records, each operation kept in a few
//! tens of bytes. A picture stays bounded whatever the input: a heatmap has at
//! most `MAX_COLUMNS` columns and `MAX_CELLS` cells (a finer `--interval` is
//! raised, with a note on stderr, and histogram records are merged), and a
//! scatter plot of many points is binned (`svg::scatter`).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::output;
use crate::source::schema::{Role, Schema, Schemas};
use crate::view::{
    heatmap::{
        MAX_COLUMNS, add_buckets, add_slots, add_to_slot, slot_grid, slot_of, slot_rows,
        write_atomically,
    },
    records::Records,
    svg::{self, Column, Grid, Picture, Point, Row, Values},
};

/// Cells a heatmap has at most, over all its panels: every log2 latency
/// bucket (64 rows) in each of `MAX_COLUMNS` columns.
const MAX_CELLS: usize = MAX_COLUMNS * 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Scatter,
    LatencyHeatmap,
    OffsetHeatmap,
    Utilization,
}

/// Strings that many operations share (series, disks, who), stored once.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }

    fn get(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// One operation with a latency read from the input (nothing else is drawn).
struct Op {
    /// Completion time, seconds (Unix time for captures, else since the start).
    t: f64,
    lat_ns: u64,
    /// In `Input::series`: its type (read, write, a fault's type, a reason).
    series: u32,
    /// In `Input::who`: command, pid, disk and reason, for the hover text.
    who: u32,
    /// In `Input::disks`.
    disk: Option<u32>,
    at: Place,
    /// A block I/O's size (a bio is far under 4 GiB).
    bytes: Option<u32>,
}

/// Where an operation was.
#[derive(Clone, Copy)]
enum Place {
    Sector(u64),
    /// A fault's address.
    Addr(u64),
    Unknown,
}

impl Op {
    fn sector(&self) -> Option<u64> {
        match self.at {
            Place::Sector(s) => Some(s),
            _ => None,
        }
    }
}

/// A histogram record: its time span and log2 counts.
struct HistRec {
    t0: Option<f64>,
    t1: f64,
    slots: Vec<u64>,
}

#[derive(Default)]
struct Input {
    ops: Vec<Op>,
    series: Names,
    who: Names,
    disks: Names,
    /// Histogram records per panel ("biolatency disk vda"), in input order.
    hists: BTreeMap<String, Vec<HistRec>>,
    hist_count: usize,
    /// The first histogram record's unit.
    hist_unit: String,
    /// Times are Unix seconds (a capture), else seconds since the run began.
    unix: bool,
    /// A capture's CLOCK_MONOTONIC zero in Unix seconds.
    mono_zero_unix: Option<f64>,
    tool: String,
    host_kernel: Option<String>,
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

fn read(path: &Path, schemas: &Schemas) -> Result<Input> {
    let mut input = Input::default();
    for r in Records::open(path)? {
        let v = r?.value;
        if v["record"] == "capture" {
            input.unix = true;
            input.mono_zero_unix = v["clock"]["unix_ns_at_mono_zero"]
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
        if v["buckets"].is_array() {
            input.add_hist(&v);
        } else {
            input.add_event(&v, schemas.of(&v));
        }
    }
    Ok(input)
}

impl Input {
    /// A capture's CLOCK_MONOTONIC nanoseconds in `v[key]` as Unix seconds.
    fn mono(&self, v: &Value, key: &str) -> Option<f64> {
        v[key]
            .as_u64()
            .zip(self.mono_zero_unix)
            .map(|(ns, z)| z + ns as f64 / 1e9)
    }

    fn add_hist(&mut self, v: &Value) {
        let mut slots = Vec::new();
        add_buckets(&mut slots, v);
        let Some(t1) = self.mono(v, "end_ns").or_else(|| v["ts"].as_f64()) else {
            return;
        };
        if self.hist_count == 0 {
            self.hist_unit = v["unit"].as_str().unwrap_or("").to_string();
        }
        self.hist_count += 1;
        let rec = HistRec {
            t0: self.mono(v, "start_ns"),
            t1,
            slots,
        };
        let panel = format!("{} {}", v["tool"].as_str().unwrap_or(""), hist_title(v));
        self.hists.entry(panel).or_default().push(rec);
    }

    /// An event: when it completed, how long it took, what and whose it was,
    /// read by its tool's `schema` (without one: a capture's duration, the
    /// tool as its series, its process as whose).
    fn add_event(&mut self, v: &Value, schema: Option<&Schema>) {
        let Some(t) = self.mono(v, "ts_ns").or_else(|| v["time_s"].as_f64()) else {
            return;
        };
        let field = |role| schema.and_then(|s| s.with(role));
        let Some(lat_ns) = field(Role::Latency)
            .and_then(|f| f.ns(v))
            .or_else(|| v["dur_ns"].as_u64())
        else {
            return;
        };
        let series = schema
            .and_then(|s| s.field(s.series?))
            .and_then(|f| f.text(v))
            .or_else(|| v["tool"].as_str())
            .unwrap_or("event");
        let who = match schema {
            Some(s) => s.who.render(s, v),
            None => process(v),
        };
        let number = |role| field(role).and_then(|f| f.number(v));
        let at = match (number(Role::Sector), number(Role::Address)) {
            (Some(s), _) => Place::Sector(s),
            (None, Some(a)) => Place::Addr(a),
            (None, None) => Place::Unknown,
        };
        self.ops.push(Op {
            t,
            lat_ns,
            series: self.series.id(series),
            who: self.who.id(&who),
            disk: field(Role::Disk)
                .and_then(|f| f.text(v))
                .map(|d| self.disks.id(d)),
            at,
            bytes: number(Role::Size).and_then(|b| u32::try_from(b).ok()),
        });
    }

    /// An operation's hover text.
    fn title(&self, o: &Op) -> String {
        let mut s = format!("{:.6} s {}", o.t, self.who.get(o.who));
        if let Place::Sector(n) = o.at {
            s.push_str(&format!(" sector {n}"));
        }
        if let Some(n) = o.bytes {
            s.push_str(&format!(" bytes {n}"));
        }
        if let Place::Addr(a) = o.at {
            s.push_str(&format!(" addr {a:#x}"));
        }
        s.push_str(&format!(" {:.3} ms", o.lat_ns as f64 / 1e6));
        s
    }
}

/// Whose an event of a tool without a schema was: its command (else its
/// tool) and pid.
fn process(v: &Value) -> String {
    let mut who = v["comm"]
        .as_str()
        .or_else(|| v["tool"].as_str())
        .unwrap_or("")
        .to_string();
    if !v["pid"].is_null() {
        who.push_str(&format!(" pid {}", v["pid"]));
    }
    who
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

/// A column width in seconds, as short as it is exact: "0.005", "1e-9" as
/// "0.000000001".
fn width_text(w: f64) -> String {
    let decimals = (3 - w.log10().floor() as i64).clamp(3, 30) as usize;
    let s = format!("{w:.decimals$}");
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

/// Columns over `range` seconds: their width and number. The width asked
/// for (else about 100 columns) is raised, with a note, where it would make
/// more than `MAX_COLUMNS` columns, or more than `MAX_CELLS` cells over the
/// panels' `rows` rows in all.
fn columns(range: f64, asked: Option<f64>, rows: usize) -> (f64, usize) {
    let most = MAX_COLUMNS.min(MAX_CELLS / rows.max(1)).max(1);
    let count = |width: f64| (range / width).floor() + 1.0;
    let mut width = asked.unwrap_or_else(|| auto_interval(range));
    if count(width) > most as f64 {
        let raised = round_up(range / (most - 1).max(1) as f64);
        eprintln!(
            "plot: columns of {} s would make {:.0} columns; using {} s (at most {most} columns, {MAX_CELLS} cells)",
            width_text(width),
            count(width),
            width_text(raised)
        );
        width = raised;
    }
    // Rounding can leave one too many: the last column takes it.
    (width, (count(width) as usize).clamp(1, most))
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

/// `tracer plot`: the picture of `input_path`, whose events are read by the
/// tools' `schemas`, written to `out`.
pub fn plot(input_path: &Path, out: &Path, opts: &Options, schemas: &Schemas) -> Result<()> {
    let input = read(input_path, schemas)?;
    let name = input_path.display().to_string();
    let svg = draw(&input, &name, opts, schemas)?;
    write_atomically(out, svg.as_bytes())
}

/// What every picture of one input shares: its x axis and where it came from.
struct Frame {
    x_label: String,
    x_fmt: fn(f64) -> String,
    /// "INPUT, host (kernel ...)".
    from: String,
}

impl Frame {
    fn span(&self, lo: f64, hi: f64) -> String {
        format!("{} .. {}", (self.x_fmt)(lo), (self.x_fmt)(hi))
    }
}

/// The lowest and highest of some times.
fn range(ts: impl Iterator<Item = f64>) -> (f64, f64) {
    ts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
        (lo.min(t), hi.max(t))
    })
}

/// Which inputs have events with fields of `roles`: "TOOL --json, a capture"
/// (the first tool whose schema has them), for messages.
fn inputs_with(schemas: &Schemas, roles: &[Role]) -> String {
    match schemas.tool_with(roles) {
        Some(tool) => format!("{tool} --json, a capture"),
        None => "a capture".into(),
    }
}

fn draw(input: &Input, name: &str, opts: &Options, schemas: &Schemas) -> Result<String> {
    let (x_label, x_fmt): (String, fn(f64) -> String) = if input.unix {
        ("local time".into(), local)
    } else {
        ("seconds since tracing began".into(), seconds)
    };
    let from = match &input.host_kernel {
        Some(h) => format!("{name}, {h}"),
        None => name.to_string(),
    };
    let frame = Frame {
        x_label,
        x_fmt,
        from,
    };
    let block: Vec<&Op> = input
        .ops
        .iter()
        .filter(|o| o.disk.is_some() && o.sector().is_some())
        .collect();
    let block_inputs = || inputs_with(schemas, &[Role::Disk, Role::Sector]);
    match opts.kind {
        Kind::Scatter => {
            if input.ops.is_empty() {
                bail!(
                    "{name} has no events with a latency to plot (e.g. {})",
                    inputs_with(schemas, &[Role::Latency])
                );
            }
            Ok(scatter(input, &frame, opts.log))
        }
        Kind::LatencyHeatmap if !input.ops.is_empty() => {
            Ok(latency_heatmap(input, &frame, opts.interval))
        }
        Kind::LatencyHeatmap => {
            if input.hists.is_empty() {
                bail!("{name} has neither events with a latency nor histogram records");
            }
            Ok(hist_heatmap(input, &frame))
        }
        Kind::OffsetHeatmap => {
            if block.is_empty() {
                bail!(
                    "{name} has no block I/O events with sectors ({})",
                    block_inputs()
                );
            }
            Ok(offset_heatmap(input, &block, &frame, opts.interval))
        }
        Kind::Utilization => {
            if block.is_empty() {
                bail!("{name} has no block I/O events ({})", block_inputs());
            }
            Ok(utilization(input, &block, &frame, opts.interval))
        }
    }
}

/// The operations as a scatter plot's points.
impl svg::Points for Input {
    fn count(&self) -> usize {
        self.ops.len()
    }

    fn point(&self, i: usize) -> Point {
        let o = &self.ops[i];
        Point {
            t: o.t,
            value: o.lat_ns as f64 / 1e6,
            series: o.series as usize,
        }
    }

    fn title(&self, i: usize) -> String {
        self.title(&self.ops[i])
    }
}

/// Completion time x latency, binned past `svg::MAX_MARKERS` points (said on
/// stderr as in the picture).
fn scatter(input: &Input, frame: &Frame, log: bool) -> String {
    let (lo, hi) = range(input.ops.iter().map(|o| o.t));
    let pic = Picture {
        title: format!("{}: latency of each operation", input.tool),
        subtitle: format!(
            "{} operations, {}, from {}",
            input.ops.len(),
            frame.span(lo, hi),
            frame.from
        ),
        x_label: format!("completion time ({})", frame.x_label),
        x_fmt: frame.x_fmt,
        y_label: if log {
            "latency (ms, log scale)".into()
        } else {
            "latency (ms)".into()
        },
        y_fmt: value,
    };
    let (svg, note) = svg::scatter(&pic, &input.series.names, input, log);
    if let Some(note) = note {
        eprintln!("plot: {note}");
    }
    svg
}

fn latency_heatmap(input: &Input, frame: &Frame, interval: Option<f64>) -> String {
    let (lo, hi) = range(input.ops.iter().map(|o| o.t));
    let (width, n) = columns(hi - lo, interval, 64);
    let mut counts = vec![Vec::<u64>::new(); n];
    for o in &input.ops {
        let c = &mut counts[column_of(o.t, lo, width, n)];
        add_to_slot(c, slot_of(o.lat_ns / 1000), 1);
    }
    let spans: Vec<(f64, f64)> = (0..n)
        .map(|i| (lo + i as f64 * width, lo + (i + 1) as f64 * width))
        .collect();
    let grid = slot_grid("all operations".into(), &spans, &counts, "usecs");
    let pic = Picture {
        title: format!("{}: latency heatmap", input.tool),
        subtitle: format!(
            "{} operations, {}, columns of {} s; rows: log2 buckets of usecs; from {}",
            input.ops.len(),
            frame.span(lo, hi),
            width_text(width),
            frame.from
        ),
        x_label: frame.x_label.clone(),
        x_fmt: frame.x_fmt,
        y_label: "latency (usecs)".into(),
        y_fmt: value,
    };
    svg::heatmap(&pic, &[grid], Values::Counts { lines: true })
}

/// One column per histogram record (a record without a start begins where
/// the previous one of its panel ended; the first, one median interval back),
/// records merged in runs where there would be too many columns or cells.
fn hist_heatmap(input: &Input, frame: &Frame) -> String {
    let unit = &input.hist_unit;
    let rows: usize = input
        .hists
        .values()
        .map(|recs| {
            let (lo, hi) = slot_rows(&recs.iter().map(|r| r.slots.clone()).collect::<Vec<_>>());
            hi - lo + 1
        })
        .sum();
    let most = MAX_COLUMNS.min(MAX_CELLS / rows.max(1)).max(1);
    let longest = input.hists.values().map(Vec::len).max().unwrap_or(0);
    let merge = longest.div_ceil(most).max(1);
    if merge > 1 {
        eprintln!(
            "plot: {longest} histogram records in a panel; merged {merge} at a time (at most {most} columns)"
        );
    }
    let grids: Vec<Grid> = input
        .hists
        .iter()
        .map(|(title, recs)| hist_grid(title, recs, merge, unit))
        .collect();
    let (lo, hi) = range(input.hists.values().flatten().map(|h| h.t1));
    let merged = if merge > 1 {
        format!(", merged {merge} records a column")
    } else {
        String::new()
    };
    let pic = Picture {
        title: format!("{}: latency heatmap (the kernel's histograms)", input.tool),
        subtitle: format!(
            "{} histogram records{merged}, {}; rows: log2 buckets of {unit}; from {}",
            input.hist_count,
            frame.span(lo, hi),
            frame.from
        ),
        x_label: if input.unix {
            frame.x_label.clone()
        } else {
            "local time".into()
        },
        // Histogram records carry Unix times.
        x_fmt: local,
        y_label: unit.clone(),
        y_fmt: value,
    };
    svg::heatmap(&pic, &grids, Values::Counts { lines: true })
}

/// A panel of histogram records, `merge` records a column.
fn hist_grid(title: &str, recs: &[HistRec], merge: usize, unit: &str) -> Grid {
    let mut gaps: Vec<f64> = recs.windows(2).map(|w| w[1].t1 - w[0].t1).collect();
    gaps.sort_by(f64::total_cmp);
    let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(1.0);
    let start = |i: usize| {
        recs[i].t0.unwrap_or(if i == 0 {
            recs[0].t1 - typical
        } else {
            recs[i - 1].t1
        })
    };
    let mut spans = Vec::new();
    let mut slots: Vec<Vec<u64>> = Vec::new();
    for (k, run) in recs.chunks(merge).enumerate() {
        let mut sum = Vec::new();
        for r in run {
            add_slots(&mut sum, &r.slots);
        }
        spans.push((start(k * merge), run[run.len() - 1].t1));
        slots.push(sum);
    }
    slot_grid(title.to_string(), &spans, &slots, unit)
}

/// Block I/Os per disk, the disks by name.
fn per_disk<'a>(input: &'a Input, block: &[&'a Op]) -> BTreeMap<&'a str, Vec<&'a Op>> {
    let mut disks: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for &o in block {
        let disk = o.disk.map_or("?", |d| input.disks.get(d));
        disks.entry(disk).or_default().push(o);
    }
    disks
}

fn offset_heatmap(input: &Input, block: &[&Op], frame: &Frame, interval: Option<f64>) -> String {
    const ROWS: usize = 48;
    let (lo, hi) = range(block.iter().map(|o| o.t));
    let disks = per_disk(input, block);
    let (width, n) = columns(hi - lo, interval, (ROWS + 1) * disks.len());
    let grids = disks
        .into_iter()
        .map(|(disk, ops)| offset_grid(disk, &ops, lo, width, n, ROWS))
        .collect::<Vec<_>>();
    let pic = Picture {
        title: format!("{}: disk offset heatmap", input.tool),
        subtitle: format!(
            "{} I/Os, {}, columns of {} s; from {}",
            block.len(),
            frame.span(lo, hi),
            width_text(width),
            frame.from
        ),
        x_label: frame.x_label.clone(),
        x_fmt: frame.x_fmt,
        y_label: "offset (MiB)".into(),
        y_fmt: value,
    };
    svg::heatmap(&pic, &grids, Values::Counts { lines: false })
}

/// One disk's I/Os by time and offset: about `rows` rows of a round size in MiB.
fn offset_grid(disk: &str, ops: &[&Op], lo: f64, width: f64, n: usize, rows: usize) -> Grid {
    // Offsets in MiB, from the lowest to the highest byte touched.
    let start = |o: &Op| o.sector().unwrap_or(0) as f64 * 512.0 / 1048576.0;
    let end = |o: &Op| start(o) + o.bytes.unwrap_or(0) as f64 / 1048576.0;
    let (o_lo, o_hi) = (
        ops.iter().map(|o| start(o)).fold(f64::INFINITY, f64::min),
        ops.iter().map(|o| end(o)).fold(f64::NEG_INFINITY, f64::max),
    );
    // Round rows (a 1, 2 or 5 step in MiB) from a multiple of the step.
    let step = round_up(((o_hi - o_lo) / rows as f64).max(1.0 / 1024.0));
    let o_lo = (o_lo / step).floor() * step;
    let rows = (((o_hi - o_lo) / step).ceil() as usize).clamp(1, rows + 1);
    let mut cols = vec![vec![0.0; rows]; n];
    for o in ops {
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
}

fn utilization(input: &Input, block: &[&Op], frame: &Frame, interval: Option<f64>) -> String {
    let span = |o: &Op| (o.t - o.lat_ns as f64 / 1e9, o.t);
    let lo = block
        .iter()
        .map(|o| span(o).0)
        .fold(f64::INFINITY, f64::min);
    let hi = block.iter().map(|o| o.t).fold(f64::NEG_INFINITY, f64::max);
    let disks = per_disk(input, block);
    let (width, n) = columns(hi - lo, interval, disks.len());
    let names: Vec<&str> = disks.keys().copied().collect();
    let per_disk: Vec<Vec<f64>> = disks
        .into_values()
        .map(|ops| busy_fractions(ops.iter().map(|o| span(o)).collect(), lo, width, n))
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
            "{} I/Os on {} disks, {}, columns of {} s (issue to completion); from {}",
            block.len(),
            names.len(),
            frame.span(lo, hi),
            width_text(width),
            frame.from
        ),
        x_label: frame.x_label.clone(),
        x_fmt: frame.x_fmt,
        y_label: "disk".into(),
        y_fmt: value,
    };
    svg::heatmap(&pic, &[grid], Values::Fraction)
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
        assert_eq!(width_text(1e-9), "0.000000001");
        assert_eq!(width_text(5.0 * 10f64.powf(-3.0)), "0.005");
        assert_eq!(width_text(0.125), "0.125");
        assert_eq!(width_text(1234.5), "1234.5");
    }

    #[test]
    fn columns_are_bounded() {
        // Asked for and fitting: as asked.
        assert_eq!(columns(10.0, Some(1.0), 64), (1.0, 11));
        assert_eq!(columns(0.0, Some(1e-9), 64), (1e-9, 1));
        // 10 s in columns of 1 ns: raised to a round width that fits.
        let (w, n) = columns(10.0, Some(1e-9), 64);
        assert_eq!(w, 0.01);
        assert!((1000..=MAX_COLUMNS).contains(&n), "{n}");
        // Ten disks of 49 rows: at most MAX_CELLS cells.
        let (w, n) = columns(10.0, Some(0.001), 490);
        assert_eq!(w, 0.05);
        assert!(n * 490 <= MAX_CELLS, "{n}");
        // Wide ranges and huge ones stay bounded.
        assert!(columns(1e300, Some(1e-9), 64).1 <= MAX_COLUMNS);
        assert!(columns(1e9, None, 1_000_000).1 <= 2);
    }

    #[test]
    fn histogram_records_are_merged_to_fit() {
        let mut input = Input::default();
        for i in 0..4000 {
            input.add_hist(&serde_json::json!({
                "tool": "biolatency", "ts": 100.0 + i as f64, "unit": "usecs",
                "buckets": [{"low": 8, "high": 15, "count": 1 + i % 3}],
            }));
        }
        let svg = hist_heatmap(
            &input,
            &Frame {
                x_label: "t".into(),
                x_fmt: seconds,
                from: "x".into(),
            },
        );
        let counts: Vec<u64> = svg
            .split("data-count=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
            .collect();
        // 4000 records, 3 a column: 1334 columns holding every count.
        assert_eq!(counts.len(), 1334);
        assert_eq!(
            counts.iter().sum::<u64>(),
            (0..4000u64).map(|i| 1 + i % 3).sum::<u64>()
        );
        assert!(svg.contains("4000 histogram records, merged 3 records a column"));
    }

    /// The records of `text`, read through a file as `tracer plot` reads them.
    fn read_text(name: &str, text: &str) -> Input {
        let path = std::env::temp_dir().join(format!("tracer-plot-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let input = read(&path, &crate::tools::schemas());
        let _ = std::fs::remove_file(&path);
        input.unwrap()
    }

    fn opts(kind: Kind) -> Options {
        Options {
            kind,
            interval: Some(1.0),
            log: false,
        }
    }

    #[test]
    fn reads_tool_output() {
        let input = read_text(
            "snoop",
            r#"{"tool":"biosnoop","comm":"dd","pid":1,"disk":"vda","t":"R","sector":8,"bytes":4096,"lat_ns":2000000,"time_s":0.5}
{"tool":"biosnoop","comm":"dd","pid":1,"disk":"vda","t":"W","sector":16,"bytes":4096,"lat_ns":300000000,"time_s":1.5}
"#,
        );
        assert_eq!(input.ops.len(), 2);
        assert_eq!(input.series.get(input.ops[1].series), "write");
        assert_eq!(input.ops[1].lat_ns, 300_000_000);
        assert_eq!(
            input.title(&input.ops[1]),
            "1.500000 s dd pid 1 disk \"vda\" sector 16 bytes 4096 300.000 ms"
        );
        assert!(!input.unix);
        let schemas = crate::tools::schemas();
        let svg = draw(&input, "x", &opts(Kind::Scatter), &schemas).unwrap();
        assert_eq!(
            svg.matches("class=\"point\"").count(),
            2 + 2,
            "two points, two legend markers"
        );
        let svg = draw(&input, "x", &opts(Kind::LatencyHeatmap), &schemas).unwrap();
        // 2 ms is in slot 10 (1024..2047 us), 300 ms in slot 18.
        assert!(svg.contains("data-count=\"1\" data-row=\"0\""));
        assert!(svg.contains("data-low=\"262144\" data-high=\"524287\""));
        let svg = draw(&input, "x", &opts(Kind::Utilization), &schemas).unwrap();
        assert!(svg.contains("data-busy"));
    }

    #[test]
    fn reads_captures_by_their_tools_schemas() {
        let input = read_text(
            "capture",
            r#"{"record":"capture","clock":{"unix_ns_at_mono_zero":1000000000000000000},"host":"h","kernel":"k"}
{"record":"event","tool":"biosnoop","source":"block","disk":"vda","t":"R","sector":8,"bytes":4096,"lat_ns":1000,"dur_ns":1000,"ts_ns":2000000000}
{"record":"event","tool":"faultsnoop","source":"fault","comm":"a","pid":2,"addr":"0x1000","type":"read/user/major","lat_ns":5000,"dur_ns":5000,"ts_ns":2100000000}
{"record":"event","tool":"later","source":"sched","comm":"b","pid":3,"t":"R","sector":9,"disk":"vda","dur_ns":7000,"ts_ns":2200000000}
{"record":"hist","tool":"biolatency","disk":"vda","unit":"nsecs","start_ns":1000000000,"end_ns":1100000000,"buckets":[{"low":0,"high":1,"count":0},{"low":2,"high":3,"count":4}]}
"#,
        );
        assert!(input.unix);
        assert_eq!(input.ops[0].t, 1_000_000_002.0);
        // A fault is at its address; an event of a tool without a schema is
        // its duration, its tool and its process, nothing guessed.
        let titles: Vec<String> = input.ops.iter().map(|o| input.title(o)).collect();
        assert_eq!(
            titles[1..],
            [
                "1000000002.100000 s a pid 2 addr 0x1000 0.005 ms",
                "1000000002.200000 s b pid 3 0.007 ms"
            ]
        );
        let series: Vec<&str> = input
            .ops
            .iter()
            .map(|o| input.series.get(o.series))
            .collect();
        assert_eq!(series, ["read", "read/user/major", "later"]);
        assert_eq!(input.ops.iter().filter(|o| o.disk.is_some()).count(), 1);
        assert_eq!(input.hist_count, 1);
        assert_eq!(input.hists["biolatency disk vda"][0].slots, vec![0, 4]);
    }

    #[test]
    fn no_events_say_which_inputs_have_them() {
        let empty = read_text("empty", "");
        let schemas = crate::tools::schemas();
        for (kind, message) in [
            (
                Kind::Scatter,
                "has no events with a latency to plot (e.g. biosnoop --json, a capture)",
            ),
            (
                Kind::LatencyHeatmap,
                "has neither events with a latency nor histogram records",
            ),
            (
                Kind::OffsetHeatmap,
                "has no block I/O events with sectors (biosnoop --json, a capture)",
            ),
            (
                Kind::Utilization,
                "has no block I/O events (biosnoop --json, a capture)",
            ),
        ] {
            let e = draw(&empty, "empty", &opts(kind), &schemas).unwrap_err();
            assert_eq!(e.to_string(), format!("empty {message}"));
        }
        // Without schemas, a capture is what has them.
        let e = draw(&empty, "empty", &opts(Kind::Scatter), &Schemas::default()).unwrap_err();
        assert!(e.to_string().ends_with("(e.g. a capture)"), "{e}");
    }
}
