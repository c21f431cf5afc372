//! The durable side of Raft: one redb file, `<dir>/raft.redb`, holding the log, the vote, the
//! applied state and the current snapshot, and beside it `<dir>/raft.key`, the key its records
//! are sealed with.
//!
//! Why redb and this layout: redb commits are atomic and durable (fsync) by default, so each
//! openraft storage call maps onto one write transaction and a crash leaves either the old or
//! the new record, never a mix. The application state is small (the cluster model), so it is
//! kept in memory and written whole, together with `last_applied` and the membership, in the
//! same transaction after every applied batch: a restart reloads exactly what was applied.
//!
//! Encryption at rest: every record that carries application state is sealed (AES-256-GCM,
//! `seal.rs`) with the directory's own key (`key_file.rs`) and bound to its table and key, so
//! the database file alone shows none of the swarm's secrets, and a record moved to another
//! place fails to open. What leaves the store for openraft, and so for the network, is plain:
//! a snapshot shipped to another manager is sealed there with that manager's key.
//!
//! Tables (sealed records marked *sealed*):
//! - `logs`: log index → JSON [`openraft::Entry`], *sealed*.
//! - `meta`: `vote`, `committed`, `last_purged` → JSON. Plain: terms, node ids and log
//!   indexes only, and one seal fewer per commit against the key's nonce budget.
//! - `state_machine`: `applied` → JSON [`AppliedState`], *sealed*.
//! - `snapshot`: `meta` → JSON [`openraft::SnapshotMeta`], `data` → the snapshot bytes, both
//!   *sealed*.

mod key_file;
mod log;
mod seal;
mod state_machine;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
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
use self::seal::Sealer;
pub use self::seal::{OpenError, SealError};
pub use self::state_machine::{SnapshotBuilder, StateMachineStore};
use crate::error::StoreError;
use crate::{LogEntry, ManagerNode, NodeId, StateMachine};

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "raft.redb";
/// File name of the data-encryption key inside the store directory.
pub const KEY_FILE: &str = "raft.key";

const LOGS_NAME: &str = "logs";
const SM_NAME: &str = "state_machine";
const SNAPSHOT_NAME: &str = "snapshot";
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new(LOGS_NAME);
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SM: TableDefinition<&str, &[u8]> = TableDefinition::new(SM_NAME);
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new(SNAPSHOT_NAME);

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_APPLIED: &str = "applied";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";

const SLOT_APPLIED: Slot = Slot::Named(SM_NAME, KEY_APPLIED);
const SLOT_SNAPSHOT_META: Slot = Slot::Named(SNAPSHOT_NAME, KEY_SNAPSHOT_META);
const SLOT_SNAPSHOT_DATA: Slot = Slot::Named(SNAPSHOT_NAME, KEY_SNAPSHOT_DATA);

/// The place of a sealed record. Its [`Slot::aad`] is sealed with the record, so the record
/// opens only where it was written.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// An entry of `logs`, by log index.
    Log(u64),
    /// A record of a string-keyed table: table name, key.
    Named(&'static str, &'static str),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.table(), self.key())
    }
}

impl Slot {
    fn table(self) -> &'static str {
        match self {
            Slot::Log(_) => LOGS_NAME,
            Slot::Named(table, _) => table,
        }
    }

    fn key(self) -> String {
        match self {
            Slot::Log(index) => index.to_string(),
            Slot::Named(_, key) => key.to_owned(),
        }
    }

    /// `shoal-raft-v1/<table>/<key>`, a log index in decimal. Changing this makes every
    /// existing store unreadable.
    fn aad(self) -> Vec<u8> {
        format!("shoal-raft-v1/{}/{}", self.table(), self.key()).into_bytes()
    }
}

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

/// The database, the sealer of its records, and a flag raised once its file is closed. Fields
/// drop in declaration order, so the flag is raised only after redb's own destructor (which
/// flushes) has finished.
pub(crate) struct Db {
    db: Database,
    sealer: Sealer,
    _closed: CloseSignal,
}

impl Db {
    /// Serializes `value` and seals it for `slot`.
    fn seal_json<T: Serialize>(&self, slot: Slot, value: &T) -> Result<Vec<u8>, StoreError> {
        self.seal(slot, &encode(&slot, value)?)
    }

    /// Opens a record of `slot` and deserializes it.
    fn open_json<T: DeserializeOwned>(&self, slot: Slot, sealed: &[u8]) -> Result<T, StoreError> {
        decode(&slot, &self.open(slot, sealed)?)
    }

    fn seal(&self, slot: Slot, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer
            .seal(&slot.aad(), plaintext)
            .map_err(|source| StoreError::Seal {
                record: slot.to_string(),
                source,
            })
    }

    fn open(&self, slot: Slot, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer
            .open(&slot.aad(), sealed)
            .map_err(|source| StoreError::Unseal {
                table: slot.table(),
                key: slot.key(),
                source,
            })
    }
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
    /// Opens or creates `<dir>/raft.redb` with its key `<dir>/raft.key`, and loads the applied
    /// state. A database whose key file is missing or damaged is refused.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        // The key first: it exists, durably, before any record it seals.
        let sealer = Sealer::new(&key_file::load_or_create(dir)?);
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
            sealer,
            _closed: CloseSignal(closed.clone()),
        });
        let applied = StateMachineStore::<S>::load_applied(&db)?;
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
        let vote: Vote<NodeId> = get_meta(db, KEY_VOTE)?.unwrap_or_default();
        let last_purged: Option<LogId<NodeId>> = get_meta(db, KEY_LAST_PURGED)?;

        let txn = db.begin_write().map_err(db_err("forcing a new cluster"))?;
        {
            let mut logs = txn
                .open_table(LOGS)
                .map_err(db_err("forcing a new cluster"))?;
            let last_entry: Option<LogEntry<S>> =
                match logs.last().map_err(db_err("forcing a new cluster"))? {
                    Some((k, v)) => Some(db.open_json(Slot::Log(k.value()), v.value())?),
                    None => None,
                };
            let mut has_membership = applied_membership.log_id().is_some();
            if !has_membership {
                for item in logs.iter().map_err(db_err("forcing a new cluster"))? {
                    let (k, v) = item.map_err(db_err("forcing a new cluster"))?;
                    let e: LogEntry<S> = db.open_json(Slot::Log(k.value()), v.value())?;
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
            logs.insert(index, db.seal_json(Slot::Log(index), &entry)?.as_slice())
                .map_err(db_err("forcing a new cluster"))?;
            let mut meta = txn
                .open_table(META)
                .map_err(db_err("forcing a new cluster"))?;
            let vote = Vote::new(term, node_id);
            meta.insert(KEY_VOTE, encode(&KEY_VOTE, &vote)?.as_slice())
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

/// `what` names the record in the error, if any.
fn encode<T: Serialize>(what: &dyn fmt::Display, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Codec {
        what: what.to_string(),
        source,
    })
}

/// `what` names the record in the error, if any.
fn decode<T: DeserializeOwned>(what: &dyn fmt::Display, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
        what: what.to_string(),
        source,
    })
}

/// Reads one plain JSON record of the `meta` table.
fn get_meta<T: DeserializeOwned>(
    db: &Database,
    key: &'static str,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(db_err("reading a record"))?;
    let t = txn.open_table(META).map_err(db_err("reading a record"))?;
    match t.get(key).map_err(db_err("reading a record"))? {
        Some(v) => decode(&key, v.value()).map(Some),
        None => Ok(None),
    }
}

/// Writes one plain JSON record of the `meta` table in its own durable transaction.
/// Writes one `meta` record. `durability` is `Immediate` for what Raft's safety
/// rests on (the vote) and `None` for hints that may roll back in a crash (the
/// committed id: openraft then re-applies a little more of the log).
fn put_meta<T: Serialize>(
    db: &Database,
    key: &'static str,
    value: &T,
    durability: redb::Durability,
) -> Result<(), StoreError> {
    let bytes = encode(&key, value)?;
    let mut txn = db.begin_write().map_err(db_err("writing a record"))?;
    txn.set_durability(durability);
    {
        let mut t = txn.open_table(META).map_err(db_err("writing a record"))?;
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

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::RaftLogReader;

    use super::*;

    /// The smallest state machine: a running sum.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    struct Sum(u64);

    impl StateMachine for Sum {
        type Command = u64;
        type Response = u64;
        fn apply(&mut self, cmd: &u64) -> u64 {
            self.0 += cmd;
            self.0
        }
    }

    fn entry(index: u64) -> LogEntry<Sum> {
        openraft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(index),
        }
    }

    /// Sealing binds a record to its place: the bytes of entry 1 written over entry 2 are
    /// refused, with an error naming the place, instead of being read as entry 2.
    #[tokio::test]
    async fn a_record_moved_to_another_place_does_not_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut store = Store::<Sum>::open(dir.path()).unwrap();
        store
            .log
            .blocking_append([entry(1), entry(2)])
            .await
            .unwrap();
        let db = store.log.db().clone();
        let txn = db.begin_write().unwrap();
        {
            let mut logs = txn.open_table(LOGS).unwrap();
            let first = logs.get(1).unwrap().unwrap().value().to_vec();
            logs.insert(2, first.as_slice()).unwrap();
        }
        txn.commit().unwrap();

        assert_eq!(store.log.try_get_log_entries(1..2).await.unwrap().len(), 1);
        let err = store.log.try_get_log_entries(1..3).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("logs/2 cannot be decrypted"), "{msg}");
    }
}
