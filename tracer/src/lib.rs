//! tracer: eBPF tracing tools for performance analysis. Everything is private
//! to the crate but the entry point: `core` is what every tool shares (and never
//! names a tool), `tools` holds one file per tool, `app` is the command line
//! above both.
mod app;
mod core;
mod tools;

pub use app::main;

/// Embeds a tool's eBPF object, built by build.rs into OUT_DIR.
macro_rules! ebpf_object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name))
    };
}
pub(crate) use ebpf_object;
