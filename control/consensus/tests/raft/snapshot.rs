//! Snapshots, log compaction, and a late learner catching up through InstallSnapshot.

use std::collections::BTreeSet;

use openraft::RaftLogReader;
use shoal_consensus::openraft;
use shoal_consensus::store::Store;

use crate::support::{addr_of, fast_config, set, Cluster, Kv, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_purged_and_a_new_learner_catches_up_from_a_snapshot() {
    let mut config = fast_config();
    config.snapshot_logs_since_last = 20;
    config.max_in_snapshot_log_to_keep = 0;
    let mut c = Cluster::voters(2, config).await;
    let voters = BTreeSet::from([1, 2]);
    c.agreed_leader(&voters).await;
    let mut index = 0;
    for i in 0..100 {
        index = c.write(set(format!("k{i:03}"), i.to_string())).await;
    }
    c.sync(&voters, index).await;
    let leader = c.agreed_leader(&voters).await;
    let m = c
        .node(leader)
        .wait_until(WAIT, "log purged", |m| {
            m.purged_index.is_some_and(|p| p >= 60)
        })
        .await
        .unwrap();
    assert!(
        m.snapshot_index.unwrap() >= m.purged_index.unwrap(),
        "{m:?}"
    );
    let purged = m.purged_index.unwrap();

    // A learner added now cannot get the first entries from the log: they are gone.
    c.start(3).await;
    c.node(leader).add_learner(3, addr_of(3)).await.unwrap();
    c.wait_applied(3, index).await;
    let m3 = c.node(3).metrics();
    assert!(
        m3.snapshot_index.is_some_and(|s| s >= purged),
        "learner did not install a snapshot: {m3:?}"
    );
    let expected = c.node(leader).read(|kv| kv.clone());
    assert_eq!(expected.map.len(), 100);
    assert_eq!(c.node(3).read(|kv| kv.clone()), expected);
    assert_eq!(c.node(3).metrics().learners, BTreeSet::from([3]));

    // Make it a voter, then restart it: the installed snapshot is durable.
    c.node(leader)
        .change_membership(BTreeSet::from([1, 2, 3]))
        .await
        .unwrap();
    c.stop(3).await;
    c.start(3).await;
    assert_eq!(c.node(3).read(|kv| kv.clone()), expected);
    let index = c.write(set("late", "v")).await;
    c.wait_applied(3, index).await;
    assert_eq!(c.node(3).read(|kv| kv.map.len()), 101);

    // On disk, the leader's purged entries are gone and its snapshot is stored.
    c.stop_all().await;
    let mut store = Store::<Kv>::open(&c.dir(leader)).unwrap();
    let entries = store.log.try_get_log_entries(0..=purged).await.unwrap();
    assert!(
        entries.is_empty(),
        "{} purged entries still stored",
        entries.len()
    );
    let snap = openraft::storage::RaftStateMachine::get_current_snapshot(&mut store.state_machine)
        .await
        .unwrap()
        .expect("a stored snapshot");
    assert!(snap.meta.last_log_id.unwrap().index >= purged);
}
