//! Shoal alongside the Docker Engine.
//!
//! - [`plugin`]: the libnetwork remote network driver and IPAM driver
//!   protocol, served on a Unix socket under `/run/docker/plugins/`, so that
//!   `docker run --network NET` attaches containers to a shoal overlay network.
//!   The decisions are the caller's (a [`plugin::Backend`]); this crate only
//!   speaks the protocol.
//! - [`runtime`]: a [`shoal_runtime::Runtime`] that runs swarm tasks as
//!   Docker containers through the Engine API, and a router that sends each
//!   task to the process runtime or to Docker by its spec.
#![forbid(unsafe_code)]

pub mod plugin;
pub mod runtime;
