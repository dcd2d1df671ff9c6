//! view/: what a person reads or looks at: `tracer report` (report.rs) and its
//! Perfetto traces (perfetto.rs) over the capture reader (records.rs), with
//! symbols for instruction pointers (symbols.rs), `tracer plot` (plot.rs) and
//! the live `--heatmap` (heatmap.rs), drawn with svg.rs. Views read samples and
//! files, not BPF maps; they read a tool's records through its schema, handed
//! to them (`source::schema::Schemas`), and name no tool.

pub mod heatmap;
pub mod perfetto;
pub mod plot;
pub mod records;
pub mod report;
pub mod svg;
pub mod symbols;
