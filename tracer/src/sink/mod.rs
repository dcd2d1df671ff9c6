//! sink/: where sources go besides the terminal and NDJSON (those are in run.rs):
//! the Prometheus exporter (prometheus.rs) and the flight recorder (capture/).

pub mod capture;
pub mod prometheus;
