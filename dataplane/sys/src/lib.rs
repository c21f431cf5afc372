//! The one crate of Shoal that talks to the kernel.
//!
//! Everything that needs `unsafe` (ioctls on TAP devices and sockets, `setns`,
//! socket options for UDP GSO/GRO, io_uring probes, the pre-exec steps of
//! a task's sandbox) is confined here, behind safe
//! functions. Every other crate is `#![forbid(unsafe_code)]`.

pub mod iface;
pub mod netns;
pub mod poll;
pub mod probe;
pub mod sandbox;
pub mod tap;
pub mod udp;
