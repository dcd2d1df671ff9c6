//! tracer: eBPF tracing tools for performance analysis. Everything is private
//! to the crate but the entry point. From the kernel up:
//! `kernel` (what the running kernel offers), `bpf` (loading programs, reading
//! maps), `source` (what a tool hands on: samples, events, histograms, metrics),
//! `tools` (one folder per family, and the registry), `run` with `output` and
//! `cli` (the one run loop, stdout, shared arguments), `sink` (the terminal and
//! NDJSON, heatmaps, the exporter, the flight recorder), `view` (reports,
//! traces, pictures) and `cmd`, the command line above them all. Only `tools`
//! names a tool.
mod bpf;
mod cli;
mod cmd;
mod kernel;
mod output;
mod run;
mod sink;
mod source;
mod tools;
mod view;

pub use cmd::main;

/// Embeds a tool's eBPF object, built by build.rs into OUT_DIR.
macro_rules! ebpf_object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name))
    };
}
pub(crate) use ebpf_object;
