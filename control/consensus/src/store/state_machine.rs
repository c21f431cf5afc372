//! The state-machine half: `RaftStateMachine` and `RaftSnapshotBuilder`.
//!
//! The state lives in memory behind a lock shared with the `Consensus` handle's readers. Every
//! applied batch ends with one durable transaction holding the whole [`AppliedState`]; a
//! snapshot is that same record serialized, stored next to its meta in the `snapshot` table.
//!
//! Every record here is sealed on its way into redb and opened on its way out. Snapshot data
//! crosses this boundary plain in both directions (built, installed from the leader, handed to
//! openraft to send): the receiving manager seals it with its own key when it stores it.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership,
};

use super::{
    db_err, decode, encode, sto, AppliedState, Db, SharedState, KEY_APPLIED, KEY_SNAPSHOT_DATA,
    KEY_SNAPSHOT_META, SLOT_APPLIED, SLOT_SNAPSHOT_DATA, SLOT_SNAPSHOT_META, SM, SNAPSHOT,
};
use crate::error::StoreError;
use crate::{LogEntry, ManagerNode, NodeId, StateMachine, TypeConfig};

type Meta = SnapshotMeta<NodeId, ManagerNode>;

/// Applies committed entries to `S` and keeps snapshots.
pub struct StateMachineStore<S: StateMachine> {
    db: Arc<Db>,
    shared: SharedState<S>,
    /// Makes snapshot ids unique even when two snapshots cover the same log id.
    snapshot_seq: Arc<AtomicU64>,
}

impl<S: StateMachine> StateMachineStore<S> {
    pub(super) fn new(db: Arc<Db>, shared: SharedState<S>) -> Self {
        StateMachineStore {
            db,
            shared,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The applied state, shared with readers.
    pub fn shared_state(&self) -> SharedState<S> {
        self.shared.clone()
    }

    /// Reads the persisted applied state; the default one if nothing was applied yet.
    pub(super) fn load_applied(db: &Db) -> Result<AppliedState<S>, StoreError> {
        let txn = db
            .begin_read()
            .map_err(db_err("loading the applied state"))?;
        let t = txn
            .open_table(SM)
            .map_err(db_err("loading the applied state"))?;
        match t
            .get(KEY_APPLIED)
            .map_err(db_err("loading the applied state"))?
        {
            Some(v) => db.open_json(SLOT_APPLIED, v.value()),
            None => Ok(AppliedState::default()),
        }
    }

    /// Seals and saves the snapshot (`data` is the plain snapshot) and, if given, the applied
    /// state it replaces, in one transaction.
    fn persist_snapshot(
        db: &Db,
        meta: &Meta,
        data: &[u8],
        applied: Option<&AppliedState<S>>,
    ) -> Result<(), StoreError> {
        let meta_bytes = db.seal_json(SLOT_SNAPSHOT_META, meta)?;
        let data_bytes = db.seal(SLOT_SNAPSHOT_DATA, data)?;
        let applied_bytes = applied.map(|a| db.seal_json(SLOT_APPLIED, a)).transpose()?;
        let txn = db.begin_write().map_err(db_err("saving a snapshot"))?;
        {
            let mut t = txn
                .open_table(SNAPSHOT)
                .map_err(db_err("saving a snapshot"))?;
            t.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(db_err("saving a snapshot"))?;
            t.insert(KEY_SNAPSHOT_DATA, data_bytes.as_slice())
                .map_err(db_err("saving a snapshot"))?;
            if let Some(bytes) = applied_bytes {
                let mut sm = txn.open_table(SM).map_err(db_err("saving a snapshot"))?;
                sm.insert(KEY_APPLIED, bytes.as_slice())
                    .map_err(db_err("saving a snapshot"))?;
            }
        }
        txn.commit().map_err(db_err("saving a snapshot"))
    }

    /// The stored snapshot, opened: its meta and its plain data.
    fn read_snapshot(&self) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(db_err("reading the snapshot"))?;
        let t = txn
            .open_table(SNAPSHOT)
            .map_err(db_err("reading the snapshot"))?;
        let meta = t
            .get(KEY_SNAPSHOT_META)
            .map_err(db_err("reading the snapshot"))?;
        let data = t
            .get(KEY_SNAPSHOT_DATA)
            .map_err(db_err("reading the snapshot"))?;
        match (meta, data) {
            (Some(m), Some(d)) => Ok(Some((
                self.db.open_json(SLOT_SNAPSHOT_META, m.value())?,
                self.db.open(SLOT_SNAPSHOT_DATA, d.value())?,
            ))),
            _ => Ok(None),
        }
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig<S>> for StateMachineStore<S> {
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, ManagerNode>), StorageError<NodeId>>
    {
        let a = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<S::Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry<S>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        // Applied entries are committed: they are durable in the log, so the state is not
        // written here (that cost a serialization of the whole state and an fsync per batch).
        // It is saved with each snapshot; on restart openraft re-applies the log from the
        // saved state up to the committed id, before the node does anything else. The log is
        // purged only behind a saved snapshot, so what needs re-applying is always there.
        // Applied in place under the write lock, so readers never see half a batch and no
        // write pays for a copy of the whole state (it was cloned per batch before).
        let mut applied = self.shared.write().unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(S::Response::default()),
                EntryPayload::Normal(cmd) => responses.push(applied.state.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(S::Response::default());
                }
            }
        }
        drop(applied);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
            seq: self.snapshot_seq.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let mut applied: AppliedState<S> =
            decode(&"snapshot data", &data).map_err(sto(subject(), ErrorVerb::Read))?;
        // The meta is authoritative for what the snapshot covers.
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Self::persist_snapshot(&self.db, meta, &data, Some(&applied))
            .map_err(sto(subject(), ErrorVerb::Write))?;
        *self.shared.write().unwrap_or_else(PoisonError::into_inner) = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig<S>>>, StorageError<NodeId>> {
        let found = self
            .read_snapshot()
            .map_err(sto(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot of the applied state; runs concurrently with `apply`, so it copies the
/// state, its `last_applied` and membership under one lock.
pub struct SnapshotBuilder<S: StateMachine> {
    db: Arc<Db>,
    shared: SharedState<S>,
    seq: Arc<AtomicU64>,
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig<S>> for SnapshotBuilder<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<S>>, StorageError<NodeId>> {
        let applied = self
            .shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let data = encode(&"snapshot data", &applied)
            .map_err(sto(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
            None => format!("empty-{seq}"),
        };
        let meta = Meta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        StateMachineStore::<S>::persist_snapshot(&self.db, &meta, &data, Some(&applied)).map_err(
            sto(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            ),
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
