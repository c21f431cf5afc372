//! The overlay suite: real `shoald` daemons in network namespaces, tasks
//! standing in namespaces of their own, traffic checked end to end.
//!
//! Needs root (namespaces, TAP devices) and `ping`; `scripts/test` installs it.

mod attacks;
mod cluster;
mod dynamic;
#[path = "../common/http.rs"]
mod http;
mod interop;
mod pairs;
mod rotation;
mod traffic;
