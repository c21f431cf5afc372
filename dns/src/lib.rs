//! Shoal's embedded DNS server: what Docker serves at 127.0.0.11 inside every task.
//!
//! - [`zone`]: the records one task can resolve and Docker's rules for answering
//!   them (pure, no I/O).
//! - [`query`]: bytes in, reply bytes or a forward request out (pure; the fuzz
//!   target).
//! - [`forward`]: asks the host's resolvers for names that are not ours.
//! - [`server`]: UDP and TCP sockets bound inside the task's network namespace,
//!   driving the two pure modules.
#![forbid(unsafe_code)]

pub mod error;
pub mod forward;
pub mod query;
pub mod server;
pub mod zone;

pub use error::DnsError;
pub use forward::{Forwarder, ForwarderConfig, ForwarderStats};
pub use hickory_proto::rr::RecordType;
pub use query::{handle_query, DropReason, ForwardQuery, QueryOutcome, Reply, ReplyKind};
pub use server::{DnsServer, ServerConfig, ServerStats, DEFAULT_LISTEN};
pub use zone::{Endpoint, Lookup, Zone, DEFAULT_TTL};
