//! The swarm manager.
//!
//! - [`state`]: the replicated cluster state and the commands that change it,
//!   a pure, deterministic state machine (Raft applies the same commands in the
//!   same order on every manager, so every manager holds the same state).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod dispatch;
pub mod identity;
mod leader;
pub mod local;
pub mod net;
pub mod ops;
pub mod server;
pub mod state;
pub mod swarm;
mod tls;
pub mod views;
pub mod worker;
