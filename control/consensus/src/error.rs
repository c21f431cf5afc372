//! Errors at the crate boundary. Each message says what failed and what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::ConfigError;
use crate::store::{OpenError, SealError};
use crate::NodeId;

/// The redb store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the directory that holds `raft.redb` and `raft.key` failed.
    #[error("cannot create the Raft store directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Opening the database file failed (another process may hold it, or it is corrupt).
    #[error("cannot open the Raft store {} (is another shoald using this directory?): {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// A read or write transaction failed.
    #[error("Raft store I/O failed while {doing}: {source}")]
    Db {
        /// What the store was doing.
        doing: &'static str,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// `raft.redb` exists but `raft.key` does not: the records cannot be decrypted, and a new
    /// key would not help.
    #[error("the Raft store {} exists but its key file {} is missing, so its records cannot be decrypted; restore the key file from the backup or manager this directory came from (a store directory is only usable whole), or remove the directory to leave the swarm's Raft group and rejoin", db.display(), key.display())]
    KeyMissing {
        /// The database file.
        db: PathBuf,
        /// The key file that should be next to it.
        key: PathBuf,
    },
    /// The key file does not hold a 32-byte key.
    #[error("the Raft store key file {} holds {len} bytes instead of 32: it is damaged or not a key file; restore it from the backup or manager this directory came from", path.display())]
    KeyDamaged {
        /// The key file.
        path: PathBuf,
        /// What it holds.
        len: usize,
    },
    /// Reading or creating the key file failed.
    #[error("cannot {op} the Raft store key file {}: {source}", path.display())]
    KeyIo {
        /// What was being done.
        op: &'static str,
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The system random source gave no bytes for a new key file.
    #[error("cannot create the Raft store key file {}: the system random source failed", path.display())]
    KeyRandom {
        /// The key file.
        path: PathBuf,
    },
    /// A record could not be sealed before writing.
    #[error("cannot seal Raft store record {record}: {source}")]
    Seal {
        /// Which record (`table/key`).
        record: String,
        /// The cause.
        source: SealError,
    },
    /// A sealed record failed to open: it is corrupt, or `raft.key` is not the key it was
    /// sealed with.
    #[error("Raft store record {table}/{key} cannot be decrypted: {source}; the record is corrupt, or raft.key is not the key this raft.redb was sealed with (were the two files copied from different directories?)")]
    Unseal {
        /// The table.
        table: &'static str,
        /// The key within the table (a log index for `logs`).
        key: String,
        /// The cause.
        source: OpenError,
    },
    /// A stored record could not be encoded or decoded (the file is corrupt or from an
    /// incompatible version).
    #[error("Raft store record `{what}` cannot be encoded or decoded: {source}")]
    Codec {
        /// Which record (`table/key` for a sealed one).
        what: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The blocking task that wrote to the store panicked or was cancelled.
    #[error("the Raft store's writer task failed: {0}")]
    Task(String),
}

/// Opening, starting or steering the local Raft node failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Openraft refused to start on this store.
    #[error("cannot start Raft node {node_id}: {reason}")]
    Start {
        /// The local node id.
        node_id: NodeId,
        /// Why.
        reason: String,
    },
    /// `force_new_cluster` found no cluster in the directory.
    #[error("nothing to recover in {}: the store has no membership (was this node ever part of a cluster?)", path.display())]
    NothingToRecover {
        /// The store directory.
        path: PathBuf,
    },
    /// The node is not the leader; send the request to the named leader instead.
    #[error("this node is not the Raft leader; retry on leader {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        /// The known leader, if any.
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// Openraft refused the request (membership change in progress, already initialized, ...).
    #[error("Raft refused the request: {0}")]
    Refused(String),
    /// The cluster did not answer in time.
    #[error("Raft request timed out after {0:?}: no quorum reachable or no leader elected")]
    Timeout(Duration),
    /// The Raft node has stopped (shut down, or a storage failure stopped it).
    #[error("the Raft node has stopped: {0}")]
    Stopped(String),
    /// After shutdown, background tasks still held the store open.
    #[error("Raft node {node_id} shut down but its store stayed open for {waited:?}; reopening the directory will fail until the process exits")]
    StoreStillOpen {
        /// The local node id.
        node_id: NodeId,
        /// How long shutdown waited.
        waited: Duration,
    },
}

/// A replicated write failed. Only `ForwardToLeader` and `Refused` guarantee that the command was
/// not committed; after `Timeout` or `Interrupted` it may still be applied later.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// This node is not the leader; send the write to the named leader instead.
    #[error("this node is not the Raft leader; retry on leader {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        /// The known leader, if any (None during an election: retry shortly).
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// Not committed within the request timeout: the leader cannot reach a quorum. The outcome
    /// is unknown; retry only if the command is idempotent.
    #[error(
        "write not committed within {0:?}: no quorum of managers reachable; the outcome is unknown"
    )]
    Timeout(Duration),
    /// The leader lost leadership while the write was in flight; the outcome is unknown.
    #[error("leadership changed while the write was in flight; the outcome is unknown, retry on the new leader")]
    Interrupted,
    /// Openraft refused the write.
    #[error("Raft refused the write: {0}")]
    Refused(String),
    /// The Raft node has stopped (shut down, or a storage failure stopped it).
    #[error("the Raft node has stopped: {0}")]
    Fatal(String),
}

/// A linearizable read failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// This node is not the leader; read on the named leader instead.
    #[error("this node is not the Raft leader; read on leader {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        /// The known leader, if any.
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// The leader could not confirm its leadership with a quorum.
    #[error("the leader could not reach a quorum to confirm a linearizable read: {0}")]
    NoQuorum(String),
    /// No confirmation within the request timeout.
    #[error("linearizable read not confirmed within {0:?}")]
    Timeout(Duration),
    /// The Raft node has stopped.
    #[error("the Raft node has stopped: {0}")]
    Fatal(String),
}

/// An outgoing Raft RPC could not be delivered or answered.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The peer cannot be reached now (connection refused, partition); Raft backs off.
    #[error("Raft peer {target} at {addr} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The RPC failed in flight (reset, bad response); Raft retries at once.
    #[error("Raft RPC to peer {target} at {addr} failed: {reason}")]
    Network {
        /// The peer.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
}
