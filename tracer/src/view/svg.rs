//! Pictures as hand-written SVG: heatmaps (time x value grids of counts or
//! fractions) and scatter plots. Self-contained files: no external fonts or
//! scripts; every cell and point carries its numbers in `data-` attributes and
//! a `<title>` (hover text that works with scripts off); a small inline script
//! adds a crosshair.

use std::{collections::HashMap, fmt::Write as _};

/// One panel's grid: rows bottom to top, columns left to right.
pub struct Grid {
    pub title: String,
    /// Lowest first.
    pub rows: Vec<Row>,
    pub columns: Vec<Column>,
}

/// A row of a grid: its tick label, its range as hover text, and its bounds
/// (the cells' data-low/data-high).
pub struct Row {
    pub label: String,
    pub span: String,
    pub low: f64,
    pub high: f64,
}

impl Row {
    /// A row of values low..=high in `unit`, labelled by its lower bound.
    pub fn range(low: f64, high: f64, unit: &str) -> Row {
        Row {
            label: format!("{low}"),
            span: format!("{low}..{high} {unit}"),
            low,
            high,
        }
    }
}

pub struct Column {
    /// Seconds (Unix time or since the start; see `Picture::x_label`).
    pub t0: f64,
    pub t1: f64,
    /// One value per row.
    pub values: Vec<f64>,
}

/// What the cells' values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Counts of operations: colour on a log scale; p50/p99 lines when `lines`.
    Counts { lines: bool },
    /// Busy fractions 0..1: colour on a linear scale.
    Fraction,
}

/// A picture: a title and one or more panels sharing the x axis.
#[derive(Clone)]
pub struct Picture {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    /// Formats an x value (a tick label).
    pub x_fmt: fn(f64) -> String,
    pub y_label: String,
    /// Formats a y value (row bounds, ticks).
    pub y_fmt: fn(f64) -> String,
}

const PLOT_W: f64 = 900.0;
const LEFT: f64 = 140.0;
const RIGHT: f64 = 130.0;
const ROW_H: f64 = 14.0;
const PANEL_GAP: f64 = 70.0;
const TOP: f64 = 60.0;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Tick positions: a 1, 2 or 5 step times a power of ten, about `n` of them.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + step * 1e-9 {
        v.push(t);
        t += step;
    }
    v
}

/// Colour of a cell: white for nothing; from pale yellow to dark red otherwise,
/// so a cell of one operation is never invisible.
pub fn colour(fraction: f64) -> String {
    let f = fraction.clamp(0.0, 1.0);
    // Pale yellow (255,237,160) -> orange (253,141,60) -> dark red (128,0,38).
    let (a, b, t) = if f < 0.5 {
        ((255.0, 237.0, 160.0), (253.0, 141.0, 60.0), f * 2.0)
    } else {
        ((253.0, 141.0, 60.0), (128.0, 0.0, 38.0), (f - 0.5) * 2.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

fn header(out: &mut String, w: f64, h: f64, pic: &Picture) {
    let _ = write!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans, Verdana, sans-serif" font-size="11">
<style>rect.cell:hover, .point:hover {{ stroke: #000; stroke-width: 1.5; }} text {{ fill: #222; }}</style>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
<text x="{LEFT}" y="40" fill="#555">{}</text>
"##,
        escape(&pic.title),
        escape(&pic.subtitle)
    );
}

/// The crosshair: two lines that follow the pointer (the picture works without).
fn footer(out: &mut String) {
    out.push_str(
        r##"<line id="xh" x1="0" y1="0" x2="0" y2="0" stroke="#888" stroke-dasharray="3,3" pointer-events="none" visibility="hidden"/>
<line id="yh" x1="0" y1="0" x2="0" y2="0" stroke="#888" stroke-dasharray="3,3" pointer-events="none" visibility="hidden"/>
<script><![CDATA[
(function () {
  var svg = document.documentElement, xh = document.getElementById("xh"), yh = document.getElementById("yh");
  svg.addEventListener("mousemove", function (e) {
    var p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
    var q = p.matrixTransform(svg.getScreenCTM().inverse());
    xh.setAttribute("x1", q.x); xh.setAttribute("x2", q.x); xh.setAttribute("y1", 0); xh.setAttribute("y2", svg.getAttribute("height"));
    yh.setAttribute("y1", q.y); yh.setAttribute("y2", q.y); yh.setAttribute("x1", 0); yh.setAttribute("x2", svg.getAttribute("width"));
    xh.setAttribute("visibility", "visible"); yh.setAttribute("visibility", "visible");
  });
})();
]]></script>
</svg>
"##,
    );
}

fn x_axis(out: &mut String, pic: &Picture, t_min: f64, t_max: f64, x0: f64, y: f64) {
    let sx = |t: f64| x0 + (t - t_min) / (t_max - t_min).max(1e-9) * PLOT_W;
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#000"/>"##,
        x0 + PLOT_W
    );
    for t in ticks(t_min, t_max, 8) {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{:.1}" stroke="#000"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y + 5.0,
            y + 17.0,
            escape(&(pic.x_fmt)(t))
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
        x0 + PLOT_W / 2.0,
        y + 33.0,
        escape(&pic.x_label)
    );
}

/// The row holding quantile `q` of a column's counts, as a fractional row
/// position (the middle of the row where the cumulative count crosses q).
fn quantile_row(values: &[f64], q: f64) -> Option<f64> {
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut acc = 0.0;
    for (i, v) in values.iter().enumerate() {
        acc += v;
        if acc >= q * total {
            return Some(i as f64 + 0.5);
        }
    }
    Some(values.len() as f64 - 0.5)
}

/// Where a heatmap's values go: x from time, colour from value.
struct Scale {
    t_min: f64,
    t_max: f64,
    kind: Values,
    max_value: f64,
}

impl Scale {
    fn of(panels: &[Grid], kind: Values) -> Scale {
        let columns = || panels.iter().flat_map(|p| &p.columns);
        let t_min = columns().map(|c| c.t0).fold(f64::INFINITY, f64::min);
        let t_max = columns().map(|c| c.t1).fold(f64::NEG_INFINITY, f64::max);
        let (t_min, t_max) = if t_max > t_min {
            (t_min, t_max)
        } else {
            (t_min, t_min + 1.0)
        };
        let max_value = columns()
            .flat_map(|c| c.values.iter().copied())
            .fold(0.0, f64::max);
        Scale {
            t_min,
            t_max,
            kind,
            max_value,
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t_min) / (self.t_max - self.t_min) * PLOT_W
    }

    /// A value's place on the colour scale, 0..1.
    fn shade(&self, v: f64) -> f64 {
        match self.kind {
            Values::Counts { .. } => {
                if self.max_value <= 1.0 {
                    0.0
                } else {
                    v.ln() / self.max_value.ln()
                }
            }
            Values::Fraction => v,
        }
    }
}

/// Heatmap panels in one picture.
pub fn heatmap(pic: &Picture, panels: &[Grid], kind: Values) -> String {
    let scale = Scale::of(panels, kind);
    let heights: Vec<f64> = panels
        .iter()
        .map(|p| p.rows.len().max(1) as f64 * ROW_H)
        .collect();
    // Tall enough for the legend too.
    let h =
        (TOP + heights.iter().map(|h| h + PANEL_GAP + 20.0).sum::<f64>() + 20.0).max(TOP + 220.0);
    let w = LEFT + PLOT_W + RIGHT;
    let mut out = String::new();
    header(&mut out, w, h, pic);
    let mut y_top = TOP;
    for (panel, height) in panels.iter().zip(&heights) {
        let y_bottom = heatmap_panel(&mut out, pic, panel, &scale, y_top, *height);
        y_top = y_bottom + PANEL_GAP;
    }
    legend(&mut out, kind, scale.max_value);
    footer(&mut out);
    out
}

/// One panel: its title, cells, quantile lines and axes, from `y_top` (its
/// title) down, its cells `height` high: where its x axis is.
fn heatmap_panel(
    out: &mut String,
    pic: &Picture,
    panel: &Grid,
    scale: &Scale,
    y_top: f64,
    height: f64,
) -> f64 {
    let y_top_plot = y_top + 20.0;
    let y_bottom = y_top_plot + height;
    let _ = writeln!(
        out,
        r##"<g class="panel" data-title="{}"><text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"##,
        escape(&panel.title),
        y_top + 12.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y_top_plot:.1}" width="{PLOT_W}" height="{height:.1}" fill="#fafafa" stroke="#ccc"/>"##
    );
    for c in &panel.columns {
        cells(out, pic, panel, c, scale, y_bottom);
    }
    if let Values::Counts { lines: true } = scale.kind {
        quantile_lines(out, panel, scale, y_bottom);
    }
    y_axis(out, pic, panel, y_top_plot, y_bottom);
    x_axis(out, pic, scale.t_min, scale.t_max, LEFT, y_bottom);
    out.push_str("</g>\n");
    y_bottom
}

/// A column's cells, each with its numbers and hover text.
fn cells(out: &mut String, pic: &Picture, panel: &Grid, c: &Column, scale: &Scale, y_bottom: f64) {
    let total: f64 = c.values.iter().sum();
    let x0 = scale.x(c.t0);
    let cw = (scale.x(c.t1) - x0).max(1.0);
    let mut below = 0.0;
    for (r, &v) in c.values.iter().enumerate() {
        if v <= 0.0 {
            continue;
        }
        let row = &panel.rows[r];
        let (lo, hi) = (row.low, row.high);
        let y = y_bottom - (r as f64 + 1.0) * ROW_H;
        let (data, what) = match scale.kind {
            Values::Counts { .. } => {
                below += v;
                (
                    format!(r#"data-count="{}""#, v as u64),
                    format!(
                        "{} in {}: cumulative {:.1}% of the column",
                        v as u64,
                        row.span,
                        100.0 * below / total
                    ),
                )
            }
            Values::Fraction => (
                format!(r#"data-busy="{v:.4}""#),
                format!("{}: {:.1}% busy", row.span, 100.0 * v),
            ),
        };
        let _ = writeln!(
            out,
            r##"<rect class="cell" x="{x0:.2}" y="{y:.1}" width="{cw:.2}" height="{ROW_H}" fill="{}" {data} data-row="{r}" data-t0="{:.6}" data-t1="{:.6}" data-low="{lo}" data-high="{hi}"><title>{} .. {}: {}</title></rect>"##,
            colour(scale.shade(v)),
            c.t0,
            c.t1,
            escape(&(pic.x_fmt)(c.t0)),
            escape(&(pic.x_fmt)(c.t1)),
            escape(&what)
        );
    }
}

/// The p50 and p99 of each column, as steps across it; a column with
/// nothing breaks the line.
fn quantile_lines(out: &mut String, panel: &Grid, scale: &Scale, y_bottom: f64) {
    for (q, style, name) in [
        (0.5, r##"stroke="#1f4e9e" stroke-dasharray="5,3""##, "p50"),
        (0.99, r##"stroke="#000000""##, "p99"),
    ] {
        let mut runs: Vec<Vec<String>> = vec![Vec::new()];
        for c in &panel.columns {
            match quantile_row(&c.values, q) {
                Some(r) => {
                    let y = y_bottom - r * ROW_H;
                    let run = runs.last_mut().expect("never empty");
                    run.push(format!("{:.1},{y:.1}", scale.x(c.t0)));
                    run.push(format!("{:.1},{y:.1}", scale.x(c.t1)));
                }
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let _ = writeln!(
                out,
                r##"<polyline class="{name}" points="{}" fill="none" {style} stroke-width="1.5" pointer-events="none"/>"##,
                run.join(" ")
            );
        }
    }
}

/// A panel's y axis: every row's lower bound (every other when crowded).
fn y_axis(out: &mut String, pic: &Picture, panel: &Grid, y_top_plot: f64, y_bottom: f64) {
    let every = if panel.rows.len() > 30 { 2 } else { 1 };
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{y_top_plot:.1}" x2="{LEFT}" y2="{y_bottom:.1}" stroke="#000"/>"##
    );
    for (r, row) in panel.rows.iter().enumerate().step_by(every) {
        // Labels sit at the row's lower edge (bounds) or its middle (names).
        let y = if row.low == row.high {
            y_bottom - (r as f64 + 0.5) * ROW_H
        } else {
            y_bottom - r as f64 * ROW_H
        };
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#000"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="ytick">{}</text>"##,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0,
            escape(&row.label)
        );
    }
    let _ = writeln!(
        out,
        r##"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        (y_top_plot + y_bottom) / 2.0,
        escape(&pic.y_label)
    );
}

fn legend(out: &mut String, kind: Values, max_value: f64) {
    let x = LEFT + PLOT_W + 30.0;
    let y = TOP + 20.0;
    let steps = 10;
    let _ = writeln!(
        out,
        r##"<g class="legend"><text x="{x}" y="{:.1}">{}</text>"##,
        y - 6.0,
        match kind {
            Values::Counts { .. } => "count",
            Values::Fraction => "busy",
        }
    );
    for i in 0..steps {
        let f = 1.0 - i as f64 / (steps - 1) as f64;
        let label = match kind {
            Values::Counts { .. } => format!("{:.0}", max_value.max(1.0).powf(f)),
            // Idle cells are not drawn: the palette starts above 0%.
            Values::Fraction => format!("{:.0}%", 100.0 * (1.0 - i as f64 / steps as f64)),
        };
        let _ = writeln!(
            out,
            r##"<rect x="{x}" y="{:.1}" width="16" height="14" fill="{}" stroke="#ccc"/><text x="{:.1}" y="{:.1}">{label}</text>"##,
            y + i as f64 * 14.0,
            colour(f),
            x + 22.0,
            y + i as f64 * 14.0 + 11.0
        );
    }
    if let Values::Counts { lines: true } = kind {
        let ly = y + steps as f64 * 14.0 + 20.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#1f4e9e" stroke-dasharray="5,3" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">p50</text><line x1="{x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">p99</text>"##,
            x + 16.0,
            x + 22.0,
            ly + 4.0,
            ly + 16.0,
            x + 16.0,
            ly + 16.0,
            x + 22.0,
            ly + 20.0
        );
    }
    out.push_str("</g>\n");
}

/// A point of a scatter plot.
pub struct Point {
    pub t: f64,
    pub value: f64,
    /// Index into the series (marker and colour).
    pub series: usize,
}

/// What a scatter plot draws: points, each with its hover text (kept by the
/// caller however it likes: a plot of millions is not copied).
pub trait Points {
    fn count(&self) -> usize;
    fn point(&self, i: usize) -> Point;
    fn title(&self, i: usize) -> String;
}

/// Markers a scatter plot draws at most: past this many points, they are
/// binned (see `bin`).
pub const MAX_MARKERS: usize = 10_000;

const MARKERS: [(&str, &str); 6] = [
    ("circle", "#1f77b4"),
    ("triangle", "#d62728"),
    ("square", "#2ca02c"),
    ("diamond", "#9467bd"),
    ("cross", "#ff7f0e"),
    ("circle", "#7f7f7f"),
];

fn marker(out: &mut String, series: usize, x: f64, y: f64, attrs: &str) {
    let (shape, fill) = MARKERS[series.min(MARKERS.len() - 1)];
    let r = 3.5;
    let _ = match shape {
        "triangle" => write!(
            out,
            r##"<path class="point" d="M{x:.1},{:.1}L{:.1},{:.1}L{:.1},{:.1}Z" fill="{fill}" fill-opacity="0.8" {attrs}>"##,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r
        ),
        "square" => write!(
            out,
            r##"<rect class="point" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" fill-opacity="0.8" {attrs}>"##,
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        "diamond" => write!(
            out,
            r##"<path class="point" d="M{x:.1},{:.1}L{:.1},{y:.1}L{x:.1},{:.1}L{:.1},{y:.1}Z" fill="{fill}" fill-opacity="0.8" {attrs}>"##,
            y - r,
            x + r,
            y + r,
            x - r
        ),
        "cross" => write!(
            out,
            r##"<path class="point" d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{fill}" stroke-width="2" {attrs}>"##,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r
        ),
        _ => write!(
            out,
            r##"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}" fill-opacity="0.8" {attrs}>"##
        ),
    };
}

fn close_marker(series: usize) -> &'static str {
    match MARKERS[series.min(MARKERS.len() - 1)].0 {
        "triangle" | "diamond" | "cross" => "</path>",
        "square" => "</rect>",
        _ => "</circle>",
    }
}

/// The markers to draw: (the point drawn, how many points it stands for).
/// Up to `MAX_MARKERS` points, each one; past that the plot is divided into
/// square cells (4 px, doubled until the markers fit) and each cell's slowest
/// point of each style is drawn for all of that style in the cell, so an
/// outlier is always drawn where it is. `place` gives a point's style and
/// position. Also returns the cell size in px.
fn bin(
    points: &dyn Points,
    place: impl Fn(&Point) -> (usize, f64, f64),
) -> (Vec<(usize, u64)>, Option<f64>) {
    let n = points.count();
    if n <= MAX_MARKERS {
        return ((0..n).map(|i| (i, 1)).collect(), None);
    }
    let mut cell = 4.0;
    loop {
        // Cell -> (its slowest point, that one's value, how many).
        let mut cells: HashMap<(usize, i64, i64), (usize, f64, u64)> = HashMap::new();
        for i in 0..n {
            let p = points.point(i);
            let (style, x, y) = place(&p);
            let key = (style, (x / cell).floor() as i64, (y / cell).floor() as i64);
            let (slowest, value, count) = cells.entry(key).or_insert((i, p.value, 0));
            *count += 1;
            if p.value > *value {
                (*slowest, *value) = (i, p.value);
            }
        }
        // At most MARKERS.len() styles: a few cells of 1024 px always fit.
        if cells.len() <= MAX_MARKERS {
            let mut markers: Vec<(usize, u64)> = cells
                .into_values()
                .map(|(i, _, count)| (i, count))
                .collect();
            markers.sort_unstable();
            return (markers, Some(cell));
        }
        cell *= 2.0;
    }
}

/// Series past the markers' styles share the last style and one legend
/// entry, "other": a series' style, and the legend's names.
fn styles(series: &[String]) -> (impl Fn(usize) -> usize, Vec<String>) {
    let last = MARKERS.len() - 1;
    let mut names: Vec<String> = series.iter().take(MARKERS.len()).cloned().collect();
    if series.len() > MARKERS.len() {
        names[last] = "other".into();
    }
    (move |s: usize| s.min(last), names)
}

/// A scatter plot's plotting area's height.
const SCATTER_H: f64 = 420.0;

/// Where a scatter plot's points go: x from time, y from value (log10 of it
/// when `log`, from `lo` to `hi` decades; else from 0).
struct Axes {
    t_min: f64,
    t_max: f64,
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axes {
    fn of(points: &dyn Points, log: bool) -> Axes {
        let (t_min, t_max, v_max, v_min_pos) = (0..points.count()).map(|i| points.point(i)).fold(
            (f64::INFINITY, f64::NEG_INFINITY, 0.0, f64::INFINITY),
            |(t0, t1, v1, v0), p| {
                let pos = if p.value > 0.0 { p.value } else { v0 };
                (t0.min(p.t), t1.max(p.t), f64::max(v1, p.value), v0.min(pos))
            },
        );
        let (t_min, t_max) = if t_max > t_min {
            (t_min, t_max)
        } else {
            (t_min - 0.5, t_min + 0.5)
        };
        let (lo, hi) = if log {
            let lo = v_min_pos.min(v_max).log10().floor();
            let hi = v_max.log10().ceil().max(lo + 1.0);
            (lo, hi)
        } else {
            (0.0, if v_max > 0.0 { v_max * 1.05 } else { 1.0 })
        };
        Axes {
            t_min,
            t_max,
            lo,
            hi,
            log,
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t_min) / (self.t_max - self.t_min) * PLOT_W
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = (self.lo, self.hi);
        let f = if self.log {
            (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo)
        } else {
            (v - lo) / (hi - lo)
        };
        TOP + SCATTER_H - f * SCATTER_H
    }

    /// The y axis's ticks: (value, y).
    fn y_ticks(&self) -> Vec<(f64, f64)> {
        let values = if self.log {
            (self.lo as i32..=self.hi as i32)
                .map(|e| 10f64.powi(e))
                .collect()
        } else {
            ticks(self.lo, self.hi, 8)
        };
        values.into_iter().map(|v| (v, self.y(v))).collect()
    }
}

/// A scatter plot: x time, y value (log10 scale when `log`), one marker and
/// colour per series, with a legend. Also returns, when the points were
/// binned (see `bin`), a note saying so (the picture says it too).
pub fn scatter(
    pic: &Picture,
    series: &[String],
    points: &dyn Points,
    log: bool,
) -> (String, Option<String>) {
    let (style, names) = styles(series);
    let axes = Axes::of(points, log);
    let (markers, cell) = bin(points, |p| (style(p.series), axes.x(p.t), axes.y(p.value)));
    let note = cell.map(|c| {
        format!(
            "{} operations binned: {} markers, each the slowest operation of its series in its {c}x{c} px cell (data-count: how many it stands for)",
            points.count(),
            markers.len()
        )
    });
    let mut out = String::new();
    let mut noted = pic.clone();
    if let Some(n) = &note {
        noted.subtitle = format!("{}; {n}", pic.subtitle);
    }
    header(
        &mut out,
        LEFT + PLOT_W + RIGHT,
        TOP + SCATTER_H + 70.0,
        &noted,
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{SCATTER_H}" fill="#fafafa" stroke="#ccc"/>"##
    );
    scatter_y_axis(&mut out, pic, &axes.y_ticks());
    out.push_str("<g class=\"points\">\n");
    for &(i, n) in &markers {
        let p = points.point(i);
        let s = style(p.series);
        let attrs = format!(
            r#"data-series="{}" data-t="{:.6}" data-value="{}" data-count="{n}""#,
            escape(&names[s]),
            p.t,
            p.value
        );
        marker(&mut out, s, axes.x(p.t), axes.y(p.value), &attrs);
        let mut hover = points.title(i);
        if n > 1 {
            hover.push_str(&format!(", the slowest of {n} {} here", names[s]));
        }
        let _ = writeln!(out, "<title>{}</title>{}", escape(&hover), close_marker(s));
    }
    out.push_str("</g>\n");
    x_axis(&mut out, pic, axes.t_min, axes.t_max, LEFT, TOP + SCATTER_H);
    let mut counts = vec![0u64; names.len()];
    for i in 0..points.count() {
        counts[style(points.point(i).series)] += 1;
    }
    scatter_legend(&mut out, &names, &counts);
    footer(&mut out);
    (out, note)
}

/// The y axis: grid lines and labels at `ticks` (value, y), and its label.
fn scatter_y_axis(out: &mut String, pic: &Picture, ticks: &[(f64, f64)]) {
    for &(v, y) in ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#000"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="ytick">{}</text>"##,
            LEFT,
            LEFT + PLOT_W,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0,
            escape(&(pic.y_fmt)(v))
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#000"/><text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        TOP + SCATTER_H,
        TOP + SCATTER_H / 2.0,
        escape(&pic.y_label)
    );
}

/// One legend entry per marker style: its name and count of points.
fn scatter_legend(out: &mut String, names: &[String], counts: &[u64]) {
    let x = LEFT + PLOT_W + 30.0;
    out.push_str("<g class=\"legend\">\n");
    for (i, (name, n)) in names.iter().zip(counts).enumerate() {
        let y = TOP + 20.0 + i as f64 * 18.0;
        marker(out, i, x + 5.0, y - 4.0, "");
        out.push_str(close_marker(i));
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{y:.1}">{} ({n})</text>"##,
            x + 16.0,
            escape(name)
        );
    }
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(3.0, 3.0, 5), vec![3.0]);
        let t = ticks(0.13, 0.91, 8);
        assert!((t[0] - 0.2).abs() < 1e-9 && t.len() == 8, "{t:?}");
    }

    #[test]
    fn one_operation_is_visible() {
        assert_eq!(colour(0.0), "#ffeda0");
        assert_eq!(colour(1.0), "#800026");
        assert_ne!(colour(0.0), "#ffffff");
    }

    /// Points in a slice, "op I" their hover text.
    struct Listed<'a>(&'a [Point]);

    impl Points for Listed<'_> {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn point(&self, i: usize) -> Point {
            let p = &self.0[i];
            Point {
                t: p.t,
                value: p.value,
                series: p.series,
            }
        }
        fn title(&self, i: usize) -> String {
            format!("op {i}")
        }
    }

    #[test]
    fn many_points_are_binned_and_outliers_kept() {
        let pic = Picture {
            title: String::new(),
            subtitle: String::new(),
            x_label: String::new(),
            x_fmt: |t| format!("{t:.0}"),
            y_label: String::new(),
            y_fmt: |v| format!("{v:.0}"),
        };
        let n = 200_000;
        let mut points: Vec<Point> = (0..n)
            .map(|i| Point {
                t: i as f64 / 1000.0,
                value: (i % 1000) as f64 / 100.0,
                series: i % 8,
            })
            .collect();
        points[123_456].value = 300.0;
        let series: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
        let (svg, note) = scatter(&pic, &series, &Listed(&points), true);
        let markers: Vec<&str> = svg.split("data-count=\"").skip(1).collect();
        assert!(markers.len() <= MAX_MARKERS, "{}", markers.len());
        let total: u64 = markers
            .iter()
            .map(|s| s[..s.find('"').unwrap()].parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, n as u64);
        assert!(svg.contains("data-value=\"300\""), "the outlier is drawn");
        assert!(
            svg.contains("<title>op 123456</title>"),
            "alone in its cell"
        );
        assert!(note.unwrap().starts_with("200000 operations binned: "));
        // Eight series: five by name, the rest as one.
        assert!(
            svg.contains(">s4 (25000)<") && svg.contains(">other (75000)<"),
            "legend"
        );
        assert!(!svg.contains(">s5 ("));
        // Few points: each drawn as it is.
        let (svg, note) = scatter(&pic, &series, &Listed(&points[..100]), false);
        assert_eq!(svg.matches("data-count=\"1\"").count(), 100);
        assert!(note.is_none());
    }

    #[test]
    fn quantile_rows() {
        assert_eq!(quantile_row(&[0.0, 10.0, 0.0, 1.0], 0.5), Some(1.5));
        assert_eq!(quantile_row(&[0.0, 99.0, 0.0, 1.0], 0.99), Some(1.5));
        assert_eq!(quantile_row(&[0.0, 98.0, 0.0, 2.0], 0.99), Some(3.5));
        assert_eq!(quantile_row(&[0.0, 0.0], 0.5), None);
    }

    #[test]
    fn heatmap_cells_carry_their_counts() {
        let pic = Picture {
            title: "t <&>".into(),
            subtitle: String::new(),
            x_label: "time".into(),
            x_fmt: |t| format!("{t:.0}"),
            y_label: "usecs".into(),
            y_fmt: |v| format!("{v:.0}"),
        };
        let grid = Grid {
            title: "all".into(),
            rows: vec![
                Row::range(0.0, 1.0, "usecs"),
                Row::range(2.0, 3.0, "usecs"),
                Row::range(4.0, 7.0, "usecs"),
            ],
            columns: vec![
                Column {
                    t0: 0.0,
                    t1: 1.0,
                    values: vec![0.0, 5.0, 1.0],
                },
                Column {
                    t0: 1.0,
                    t1: 2.0,
                    values: vec![2.0, 0.0, 0.0],
                },
            ],
        };
        let svg = heatmap(&pic, &[grid], Values::Counts { lines: true });
        assert_eq!(svg.matches("class=\"cell\"").count(), 3);
        let sum: u64 = svg
            .split("data-count=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum, 8);
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains("class=\"p50\"") && svg.contains("class=\"p99\""));
    }
}
