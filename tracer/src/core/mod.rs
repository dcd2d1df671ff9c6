//! What every tool shares: loading and attaching, kernel probing, the families'
//! user-side code (block, fault, tcp: as in tracer-ebpf), histograms, sources and
//! the sinks they feed (terminal, NDJSON, the exporter), the run loop and the
//! command-line conventions. Nothing here names a tool.
pub mod block;
pub mod btf;
pub mod cli;
pub mod disks;
pub mod ebpf;
pub mod exporter;
pub mod fault;
pub mod heatmap;
pub mod hist;
pub mod kernel;
pub mod ksyms;
pub mod mapdump;
pub mod metrics;
pub mod output;
pub mod perfetto;
pub mod plot;
pub mod procmaps;
pub mod record;
pub mod records;
pub mod report;
pub mod run;
pub mod source;
pub mod svg;
pub mod tally;
pub mod tcp;
pub mod tracefs;
pub mod trigger;
