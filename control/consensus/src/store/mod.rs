//! The durable side of Raft: one redb file, `<dir>/raft.redb`, holding the log, the vote, the
//! applied state and the current snapshot.
//!
//! Why redb and this layout: redb commits are atomic and durable (fsync) by default, so each
//! openraft storage call maps onto one write transaction and a crash leaves either the old or
//! the new record, never a mix. The application state is small (the cluster model), so it is
//! kept in memory and written whole, together with `last_applied` and the membership, in the
//! same transaction after every applied batch: a restart reloads exactly what was applied.
//!
//! Tables:
//! - `logs`: log index → JSON [`openraft::Entry`].
//! - `meta`: `vote`, `committed`, `last_purged` → JSON.
//! - `state_machine`: `applied` → JSON [`AppliedState`].
//! - `snapshot`: `meta` → JSON [`openraft::SnapshotMeta`], `data` → the snapshot bytes.

mod log;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use openraft::{
    AnyError, CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use self::log::LogStore;
pub use self::state_machine::{SnapshotBuilder, StateMachineStore};
use crate::error::StoreError;
use crate::{LogEntry, ManagerNode, NodeId, StateMachine};

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "raft.redb";

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_APPLIED: &str = "applied";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";

/// What the state machine has applied, persisted atomically as one record and shipped as the
/// body of a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppliedState<S> {
    /// The last log entry applied to `state`.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, ManagerNode>,
    /// The application state.
    pub state: S,
}

/// The applied state shared between the state-machine store (writer) and the `Consensus`
/// handle (readers).
pub type SharedState<S> = Arc<RwLock<AppliedState<S>>>;

/// The database plus a flag raised once its file is closed. Fields drop in declaration order,
/// so the flag is raised only after redb's own destructor (which flushes) has finished.
pub(crate) struct Db {
    db: Database,
    _closed: CloseSignal,
}

impl Deref for Db {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

struct CloseSignal(Arc<AtomicBool>);

impl Drop for CloseSignal {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Tells whether a store's database file has been closed.
#[derive(Clone)]
pub struct ClosedFlag(Arc<AtomicBool>);

impl ClosedFlag {
    /// True once every user of the store has dropped it and the file is closed.
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// An opened store: the two halves openraft drives, and what the handle keeps.
pub struct Store<S: StateMachine> {
    /// The log half (`RaftLogStorage`).
    pub log: LogStore<S>,
    /// The state-machine half (`RaftStateMachine`).
    pub state_machine: StateMachineStore<S>,
    closed: ClosedFlag,
}

impl<S: StateMachine> Store<S> {
    /// Opens or creates `<dir>/raft.redb` and loads the applied state.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path: PathBuf = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        // Create every table once so read transactions never meet a missing one.
        let txn = db.begin_write().map_err(db_err("creating tables"))?;
        {
            txn.open_table(LOGS).map_err(db_err("creating tables"))?;
            txn.open_table(META).map_err(db_err("creating tables"))?;
            txn.open_table(SM).map_err(db_err("creating tables"))?;
            txn.open_table(SNAPSHOT)
                .map_err(db_err("creating tables"))?;
        }
        txn.commit().map_err(db_err("creating tables"))?;
        let closed = Arc::new(AtomicBool::new(false));
        let db = Arc::new(Db {
            db,
            _closed: CloseSignal(closed.clone()),
        });
        let applied: AppliedState<S> = get_json(&db, SM, KEY_APPLIED)?.unwrap_or_default();
        let shared = Arc::new(RwLock::new(applied));
        Ok(Store {
            log: LogStore::new(db.clone()),
            state_machine: StateMachineStore::new(db, shared),
            closed: ClosedFlag(closed),
        })
    }

    /// The applied state, for readers.
    pub fn shared_state(&self) -> SharedState<S> {
        self.state_machine.shared_state()
    }

    /// A flag raised when every store half has been dropped and the file is closed, which is
    /// when the directory can be opened again.
    pub fn closed_flag(&self) -> ClosedFlag {
        self.closed.clone()
    }

    /// Rewrites the store so this node alone is the cluster: appends a membership entry naming
    /// only `(node_id, addr)` after the last log entry, and replaces the vote by an uncommitted
    /// one for `node_id` in a term above every stored term. On start the node is then the only
    /// voter of its effective membership, elects itself, and its first blank entry commits the
    /// whole log, the new membership included. Nothing applied or logged is dropped.
    ///
    /// Returns `Ok(false)` if the store has no membership at all (never joined a cluster).
    pub fn force_single_voter(&self, node_id: NodeId, addr: String) -> Result<bool, StoreError> {
        let db = self.log.db();
        let applied_membership = self
            .shared_state()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .membership
            .clone();
        let vote: Vote<NodeId> = get_json(db, META, KEY_VOTE)?.unwrap_or_default();
        let last_purged: Option<LogId<NodeId>> = get_json(db, META, KEY_LAST_PURGED)?;

        let txn = db.begin_write().map_err(db_err("forcing a new cluster"))?;
        {
            let mut logs = txn
                .open_table(LOGS)
                .map_err(db_err("forcing a new cluster"))?;
            let last_entry: Option<LogEntry<S>> =
                match logs.last().map_err(db_err("forcing a new cluster"))? {
                    Some((_, v)) => Some(decode("log entry", v.value())?),
                    None => None,
                };
            let mut has_membership = applied_membership.log_id().is_some();
            if !has_membership {
                for item in logs.iter().map_err(db_err("forcing a new cluster"))? {
                    let (_, v) = item.map_err(db_err("forcing a new cluster"))?;
                    let e: LogEntry<S> = decode("log entry", v.value())?;
                    if matches!(e.payload, EntryPayload::Membership(_)) {
                        has_membership = true;
                        break;
                    }
                }
            }
            if !has_membership {
                return Ok(false);
            }
            let last_log_id = last_entry.map(|e| e.log_id).or(last_purged);
            let max_term = vote
                .leader_id
                .term
                .max(last_log_id.map(|l| l.leader_id.term).unwrap_or(0));
            let term = max_term + 1;
            let index = last_log_id.map(|l| l.index + 1).unwrap_or(0);
            let nodes = BTreeMap::from([(node_id, ManagerNode { addr })]);
            let membership = Membership::new(vec![BTreeSet::from([node_id])], nodes);
            let entry: LogEntry<S> = openraft::Entry {
                log_id: LogId::new(CommittedLeaderId::new(term, node_id), index),
                payload: EntryPayload::Membership(membership),
            };
            logs.insert(index, encode("log entry", &entry)?.as_slice())
                .map_err(db_err("forcing a new cluster"))?;
            let mut meta = txn
                .open_table(META)
                .map_err(db_err("forcing a new cluster"))?;
            let vote = Vote::new(term, node_id);
            meta.insert(KEY_VOTE, encode("vote", &vote)?.as_slice())
                .map_err(db_err("forcing a new cluster"))?;
        }
        txn.commit().map_err(db_err("forcing a new cluster"))?;
        Ok(true)
    }
}

fn db_err<E: Into<redb::Error>>(doing: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        doing,
        source: Box::new(e.into()),
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Codec { what, source })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec { what, source })
}

/// Reads one JSON record from a string-keyed table.
fn get_json<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(db_err("reading a record"))?;
    let t = txn.open_table(table).map_err(db_err("reading a record"))?;
    match t.get(key).map_err(db_err("reading a record"))? {
        Some(v) => decode(key, v.value()).map(Some),
        None => Ok(None),
    }
}

/// Writes one JSON record into a string-keyed table in its own durable transaction.
fn put_json<T: Serialize>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = encode(key, value)?;
    let txn = db.begin_write().map_err(db_err("writing a record"))?;
    {
        let mut t = txn.open_table(table).map_err(db_err("writing a record"))?;
        t.insert(key, bytes.as_slice())
            .map_err(db_err("writing a record"))?;
    }
    txn.commit().map_err(db_err("writing a record"))
}

/// Maps a store failure into openraft's error, naming what openraft was doing.
fn sto(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(StoreError) -> StorageError<NodeId> {
    move |e| StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}
