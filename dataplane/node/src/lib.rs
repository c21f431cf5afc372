//! The data-plane driver of a Shoal node.
//!
//! It runs the pure overlay core (`shoal-overlay`) on real descriptors: one TAP
//! device per task endpoint, held by the daemon, and one UDP socket on the VXLAN
//! port. Configuration arrives typed and validated ([`config`]); the running
//! [`DataPlane`] exposes counters and the calls that gossip, the node agent and
//! the local API use to add and remove networks, endpoints, peers, keys
//! and virtual IPs while it runs.
#![forbid(unsafe_code)]

pub mod config;
mod control;
mod dataplane;
mod endpoint;
mod forward;
mod tables;
mod vips;

pub use dataplane::{DataPlane, DataPlaneError, FrameCounts, FrameStats};
