//! What the core hands out: events, datagrams, push-pull openings,
//! members, views and refusals.

use crate::record::EndpointRecord;
use crate::seal::SealError;
use crate::wire::WireError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use thiserror::Error;

/// Outputs for the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A node became reachable.
    MemberUp {
        /// Node id.
        node_id: String,
        /// Gossip address.
        addr: SocketAddr,
    },
    /// A node was declared down (its entries are now unavailable).
    MemberDown {
        /// Node id.
        node_id: String,
        /// Gossip address.
        addr: SocketAddr,
    },
    /// The available endpoints of a network may have changed.
    TableChanged(String),
}

/// A sealed datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Sealed bytes.
    pub payload: Vec<u8>,
}

/// A TCP push-pull exchange to open: connect to `to`, send `frame`
/// (length-prefixed), then feed every reply frame to
/// [`Gossip::handle_stream_frame`] and send back what it returns.
#[derive(Debug, Clone)]
pub struct SyncOpen {
    /// Peer.
    pub to: SocketAddr,
    /// Sealed first message (without the length prefix).
    pub frame: Vec<u8>,
}

/// A member as SWIM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Suspected; refutes or goes down after `suspect_to_down_after`.
    Suspect,
    /// Declared down.
    Down,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub node_id: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// SWIM state.
    pub state: MemberState,
}

/// Why an input was refused (also counted in [`Counters`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecvError {
    /// Envelope refused.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Authentic bytes but not a message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// foca refused the SWIM packet.
    #[error("SWIM packet refused: {0}")]
    Swim(String),
    /// A message on the wrong transport.
    #[error("unexpected {0} message on this transport")]
    Unexpected(&'static str),
}

/// The available endpoints of every network: what DNS, the data plane and
/// the load balancer consume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    /// Changes whenever anything in the tables changed.
    pub version: u64,
    /// Network id to its available endpoints, sorted by task id.
    pub networks: BTreeMap<String, Vec<EndpointRecord>>,
}

impl TableView {
    /// Available endpoints of `net` (empty if unknown).
    pub fn endpoints(&self, net: &str) -> &[EndpointRecord] {
        self.networks.get(net).map_or(&[], Vec::as_slice)
    }
}
