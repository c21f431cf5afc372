//! The log half: `RaftLogStorage` and `RaftLogReader` over the `logs` and `meta` tables.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader, StorageError, Vote,
};
use redb::{Durability, ReadableTable};

use super::{
    db_err, encode, get_meta, put_meta, sto, Db, Slot, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE,
    LOGS, META,
};
use crate::error::StoreError;
use crate::{LogEntry, NodeId, StateMachine, TypeConfig};

/// The Raft log (entries sealed), the vote and the committed/purged log ids (plain). Cloning
/// shares the database; a clone is also the log reader openraft hands to replication tasks.
pub struct LogStore<S> {
    db: Arc<Db>,
    _state: PhantomData<fn() -> S>,
}

impl<S> Clone for LogStore<S> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            _state: PhantomData,
        }
    }
}

impl<S: StateMachine> LogStore<S> {
    pub(super) fn new(db: Arc<Db>) -> Self {
        LogStore {
            db,
            _state: PhantomData,
        }
    }

    pub(super) fn db(&self) -> &Arc<Db> {
        &self.db
    }

    fn read_range(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<LogEntry<S>>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(db_err("reading log entries"))?;
        let t = txn
            .open_table(LOGS)
            .map_err(db_err("reading log entries"))?;
        let mut out = Vec::new();
        for item in t.range(range).map_err(db_err("reading log entries"))? {
            let (k, v) = item.map_err(db_err("reading log entries"))?;
            out.push(self.db.open_json(Slot::Log(k.value()), v.value())?);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig<S>>, StoreError> {
        let last_purged: Option<LogId<NodeId>> = get_meta(&self.db, KEY_LAST_PURGED)?;
        let txn = self
            .db
            .begin_read()
            .map_err(db_err("reading the log state"))?;
        let t = txn
            .open_table(LOGS)
            .map_err(db_err("reading the log state"))?;
        let last = match t.last().map_err(db_err("reading the log state"))? {
            Some((k, v)) => Some(
                self.db
                    .open_json::<LogEntry<S>>(Slot::Log(k.value()), v.value())?
                    .log_id,
            ),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    fn write_entries(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(db_err("appending log entries"))?;
        {
            let mut t = txn
                .open_table(LOGS)
                .map_err(db_err("appending log entries"))?;
            for (index, bytes) in &entries {
                t.insert(*index, bytes.as_slice())
                    .map_err(db_err("appending log entries"))?;
            }
        }
        txn.commit().map_err(db_err("appending log entries"))
    }

    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(db_err("truncating the log"))?;
        {
            let mut t = txn.open_table(LOGS).map_err(db_err("truncating the log"))?;
            t.retain_in(index.., |_, _| false)
                .map_err(db_err("truncating the log"))?;
        }
        txn.commit().map_err(db_err("truncating the log"))
    }

    fn purge_upto(&self, log_id: &LogId<NodeId>) -> Result<(), StoreError> {
        let bytes = encode(&KEY_LAST_PURGED, &Some(*log_id))?;
        let txn = self.db.begin_write().map_err(db_err("purging the log"))?;
        {
            let mut meta = txn.open_table(META).map_err(db_err("purging the log"))?;
            meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                .map_err(db_err("purging the log"))?;
            let mut t = txn.open_table(LOGS).map_err(db_err("purging the log"))?;
            t.retain_in(..=log_id.index, |_, _| false)
                .map_err(db_err("purging the log"))?;
        }
        txn.commit().map_err(db_err("purging the log"))
    }
}

impl<S: StateMachine> RaftLogReader<TypeConfig<S>> for LogStore<S> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry<S>>, StorageError<NodeId>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read_range(range)
            .map_err(sto(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl<S: StateMachine> RaftLogStorage<TypeConfig<S>> for LogStore<S> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig<S>>, StorageError<NodeId>> {
        self.log_state()
            .map_err(sto(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        put_meta(&self.db, KEY_VOTE, vote, Durability::Immediate)
            .map_err(sto(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        get_meta(&self.db, KEY_VOTE).map_err(sto(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        put_meta(&self.db, KEY_COMMITTED, &committed, Durability::None)
            .map_err(sto(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        get_meta::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)
            .map(Option::flatten)
            .map_err(sto(ErrorSubject::Store, ErrorVerb::Read))
    }

    /// Writes the entries in one durable transaction and reports them flushed only after it
    /// committed.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig<S>>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = LogEntry<S>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Sealing and the fsync block; they run on tokio's blocking pool so
        // that the runtime's few workers keep serving Raft RPCs and clients
        // meanwhile (a follower stalled in fsync must still answer its peers).
        let entries: Vec<LogEntry<S>> = entries.into_iter().collect();
        let store = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let batch = entries
                .iter()
                .map(|e| {
                    let index = e.log_id.index;
                    store.db.seal_json(Slot::Log(index), e).map(|b| (index, b))
                })
                .collect::<Result<Vec<(u64, Vec<u8>)>, StoreError>>()?;
            store.write_entries(batch)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Task(e.to_string())));
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(sto(ErrorSubject::Logs, ErrorVerb::Write)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.truncate_from(log_id.index)
            .map_err(sto(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.purge_upto(&log_id)
            .map_err(sto(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
