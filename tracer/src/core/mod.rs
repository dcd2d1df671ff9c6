//! What every tool shares: loading and attaching, kernel probing, histograms,
//! output, the run loop and the command-line conventions.
pub mod block;
pub mod btf;
pub mod cli;
pub mod disks;
pub mod ebpf;
pub mod fault;
pub mod hist;
pub mod kernel;
pub mod ksyms;
pub mod kvm;
pub mod net;
pub mod output;
pub mod procmaps;
pub mod run;
pub mod tally;
pub mod tracefs;
