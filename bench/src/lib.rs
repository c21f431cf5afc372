//! Shoal's benchmarks. Benchmarks measure; tests assert behaviour. Every figure
//! here is compared with a peer measured in the same run.
#![forbid(unsafe_code)]

pub mod chart;
pub mod overlay;
pub mod peers;
pub mod raft;
