//! tracer: eBPF tracing tools for performance analysis.
pub mod core;
pub mod tools;

/// Embeds a tool's eBPF object, built by build.rs into OUT_DIR.
#[macro_export]
macro_rules! ebpf_object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name))
    };
}
