//! The errors of this crate's public API.

use std::net::SocketAddr;
use std::path::PathBuf;

use shoal_sys::netns::NetNsError;

/// What went wrong starting the DNS server or its forwarder.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The task's network namespace could not be opened or entered.
    #[error("DNS server: {0}")]
    NetNs(#[from] NetNsError),
    /// A listening socket could not be bound.
    #[error("cannot bind the DNS {proto} socket on {addr}: {source} (is `lo` up in the namespace, and is the port free?)")]
    Bind {
        /// "UDP" or "TCP".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A socket could not be set up or handed to the tokio runtime.
    #[error("cannot set up the DNS {what} socket: {source}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Called outside a tokio runtime (with I/O and time enabled).
    #[error("{0} must be called inside a tokio runtime with I/O and time enabled (Runtime::block_on, or from a task)")]
    NoRuntime(&'static str),
    /// The resolver configuration file could not be read.
    #[error("cannot read resolver configuration {path}: {source}")]
    ResolvConf {
        /// The file tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid DNS configuration: {field}: {reason}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it and what is allowed.
        reason: String,
    },
}
