//! Raft for the managers: the cluster state replicated with openraft 0.9 on a durable redb store.
//!
//! Why this shape:
//! - The replicated state is any deterministic [`StateMachine`]; the crate knows nothing of the
//!   cluster model, so the daemon plugs it in and tests use a toy map.
//! - Everything durable (vote, log, committed and purged log ids, the applied state, the current
//!   snapshot) lives in one redb file, `<dir>/raft.redb`, next to its data-encryption key,
//!   `<dir>/raft.key` (32 random bytes, mode 0600, made with the store). One directory is one
//!   manager's whole Raft identity and can be copied, key included, for
//!   [`Consensus::force_new_cluster`] recovery.
//! - The replicated state holds the swarm's secrets, so, as Swarm does for its Raft log and
//!   snapshots, every record carrying it (log entries, the applied state, the snapshot) is
//!   sealed with AES-256-GCM under that key and bound to its table and key: `raft.redb` alone
//!   reveals nothing. Only the vote and the committed and purged log ids stay plain. A store
//!   whose key file is missing or damaged refuses to open; a new key is never made for old
//!   data. Snapshots go to other managers plain (inside the transport's TLS), and each
//!   manager seals what it stores with its own key.
//! - The wire is not ours: [`Transport`] is the outgoing side (the daemon implements it over
//!   mutual-TLS HTTP) and `Consensus::handle_*` the incoming side. Both carry openraft's own
//!   serde types, so a reply crosses the network exactly as the remote node produced it.
//!   [`InMemoryRouter`] wires in-process nodes together for tests, with partitions.
#![forbid(unsafe_code)]

mod config;
mod consensus;
mod error;
mod memory;
mod network;
pub mod store;

use std::cmp::Ordering;
use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

pub use config::{ConfigError, ConsensusConfig};
pub use consensus::{Consensus, ConsensusMetrics, Role};
pub use error::{ConsensusError, ReadError, StoreError, TransportError, WriteError};
pub use memory::{InMemoryRouter, InMemoryTransport};
pub use network::{RpcFuture, Transport};

/// Openraft itself, re-exported so the daemon names the same RPC types this crate speaks.
pub use openraft;

/// The replicated application state: a deterministic state machine.
///
/// The whole value is serialized (JSON) into the store after every applied batch and into each
/// snapshot, so it should stay small (the cluster model, not bulk data).
pub trait StateMachine:
    Default + Clone + Send + Sync + Serialize + serde::de::DeserializeOwned + 'static
{
    /// One replicated command.
    type Command: Clone
        + Send
        + Sync
        + fmt::Debug
        + Serialize
        + serde::de::DeserializeOwned
        + 'static;
    /// What applying a command returns to the writer.
    type Response: Clone
        + Send
        + Sync
        + fmt::Debug
        + Serialize
        + serde::de::DeserializeOwned
        + Default
        + 'static;

    /// Applies one committed command. Must be deterministic: every manager applies the same
    /// commands in the same order and must reach the same state. A refused command is expressed
    /// inside `Response` (the command is still committed).
    fn apply(&mut self, cmd: &Self::Command) -> Self::Response;
}

/// A Raft node id. Managers are numbered by the daemon; 0 is a valid id.
pub type NodeId = u64;

/// What the cluster membership records about a manager: where its Raft API listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerNode {
    /// The address the [`Transport`] dials to reach this manager (for example `10.0.0.1:2377`).
    pub addr: String,
}

impl fmt::Display for ManagerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// Openraft type configuration for a state machine `S`.
///
/// `declare_raft_types!` only takes concrete types, so the trait is implemented by hand for this
/// generic marker. The marker traits are implemented by hand too: deriving them would demand
/// `S: Copy + Ord + ...`, which a state has no reason to be.
pub struct TypeConfig<S>(PhantomData<fn() -> S>);

impl<S> fmt::Debug for TypeConfig<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}
impl<S> Clone for TypeConfig<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for TypeConfig<S> {}
impl<S> Default for TypeConfig<S> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<S> PartialEq for TypeConfig<S> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<S> Eq for TypeConfig<S> {}
impl<S> PartialOrd for TypeConfig<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<S> Ord for TypeConfig<S> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

impl<S: StateMachine> openraft::RaftTypeConfig for TypeConfig<S> {
    type D = S::Command;
    type R = S::Response;
    type NodeId = NodeId;
    type Node = ManagerNode;
    type Entry = openraft::Entry<Self>;
    type SnapshotData = Cursor<Vec<u8>>;
    type AsyncRuntime = openraft::TokioRuntime;
    type Responder = openraft::impls::OneshotResponder<Self>;
}

/// The openraft `Raft` handle for a state machine `S`.
pub type Raft<S> = openraft::Raft<TypeConfig<S>>;
/// A log entry for a state machine `S`.
pub type LogEntry<S> = openraft::Entry<TypeConfig<S>>;

/// AppendEntries request, as sent by a leader.
pub type AppendEntriesRequest<S> = openraft::raft::AppendEntriesRequest<TypeConfig<S>>;
/// AppendEntries reply exactly as [`Consensus::handle_append_entries`] produced it on the remote
/// node; a transport carries it back verbatim (it is serde-serializable).
pub type AppendEntriesReply =
    Result<openraft::raft::AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>>;
/// Vote request, as sent by a candidate.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// Vote reply exactly as [`Consensus::handle_vote`] produced it on the remote node.
pub type VoteReply =
    Result<openraft::raft::VoteResponse<NodeId>, openraft::error::RaftError<NodeId>>;
/// One chunk of a snapshot, as sent by a leader to a lagging follower or a new learner.
pub type InstallSnapshotRequest<S> = openraft::raft::InstallSnapshotRequest<TypeConfig<S>>;
/// InstallSnapshot reply exactly as [`Consensus::handle_install_snapshot`] produced it.
pub type InstallSnapshotReply = Result<
    openraft::raft::InstallSnapshotResponse<NodeId>,
    openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
>;
