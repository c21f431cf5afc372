//! The redb store on its own: log operations and durability across reopen.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote};
use shoal_consensus::openraft;
use shoal_consensus::store::Store;
use shoal_consensus::{ManagerNode, TypeConfig};

use crate::support::{set, Kv};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig<Kv>> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(set(format!("k{index}"), "v")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_truncate_purge_and_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let mut store = Store::<Kv>::open(dir.path()).unwrap();
        let st = store.log.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));

        store
            .log
            .blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        store.log.save_vote(&Vote::new(3, 2)).await.unwrap();
        store.log.save_committed(Some(log_id(1, 5))).await.unwrap();
        // A new leader overwrites the tail 7.. with entries of term 2.
        store.log.truncate(log_id(1, 7)).await.unwrap();
        store
            .log
            .blocking_append((7..9).map(|i| entry(2, i)))
            .await
            .unwrap();
        store.log.purge(log_id(1, 3)).await.unwrap();
    }
    let mut store = Store::<Kv>::open(dir.path()).unwrap();
    let st = store.log.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(st.last_log_id, Some(log_id(2, 8)));
    assert_eq!(store.log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(
        store.log.read_committed().await.unwrap(),
        Some(log_id(1, 5))
    );
    let ids: Vec<_> = store
        .log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.log_id)
        .collect();
    let expected: Vec<_> = (4..7)
        .map(|i| log_id(1, i))
        .chain((7..9).map(|i| log_id(2, i)))
        .collect();
    assert_eq!(ids, expected);

    // Purging everything keeps the last log id known through the purged marker.
    store.log.purge(log_id(2, 8)).await.unwrap();
    let st = store.log.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id(2, 8)));
    assert!(store
        .log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_state_and_snapshot_survive_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let membership = Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(1, ManagerNode { addr: "a".into() })]),
    );
    let snapshot_meta;
    {
        let mut store = Store::<Kv>::open(dir.path()).unwrap();
        let entries = vec![
            Entry {
                log_id: log_id(1, 0),
                payload: EntryPayload::Membership(membership.clone()),
            },
            entry(1, 1),
            entry(1, 2),
        ];
        let responses = store.state_machine.apply(entries).await.unwrap();
        assert_eq!(responses, vec![None, None, None]);
        let mut builder = store.state_machine.get_snapshot_builder().await;
        let snap = openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
        snapshot_meta = snap.meta;
        store.state_machine.apply(vec![entry(1, 3)]).await.unwrap();
    }
    // The applied state is saved with snapshots, not after every apply: reopened, the store
    // is where the snapshot was, and openraft re-applies entry 3 from the log on start.
    let mut store = Store::<Kv>::open(dir.path()).unwrap();
    let (applied, m) = store.state_machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(m.membership(), &membership);
    assert_eq!(store.shared_state().read().unwrap().state.map.len(), 2);
    let snap = store
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.meta, snapshot_meta);

    // Installing the (older) snapshot replaces the state with what it holds.
    store
        .state_machine
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let (applied, _) = store.state_machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(store.shared_state().read().unwrap().state.map.len(), 2);
}
