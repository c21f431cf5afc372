//! `force_new_cluster`: a surviving store directory becomes a one-manager cluster.

use std::collections::BTreeSet;
use std::time::Instant;

use shoal_consensus::{Consensus, ConsensusError, InMemoryRouter, Role};

use crate::support::{copy_dir, fast_config, set, Cluster, Kv, WAIT};

const N: usize = 30;

/// Runs a 3-node cluster that commits N writes, then stops it. Returns it with the node ids
/// of its leader and of one follower.
async fn stopped_cluster_with_writes() -> (Cluster, u64, u64) {
    let mut c = Cluster::voters(3, fast_config()).await;
    let all = BTreeSet::from([1, 2, 3]);
    c.agreed_leader(&all).await;
    let mut index = 0;
    for i in 0..N {
        index = c.write(set(format!("k{i}"), "v")).await;
    }
    let leader = c.agreed_leader(&all).await;
    let follower = *all.iter().find(|id| **id != leader).unwrap();
    // The follower has the entries; it may not yet know they are committed.
    c.node(follower)
        .wait_until(WAIT, "log replicated", |m| {
            m.last_log_index.is_some_and(|i| i >= index)
        })
        .await
        .unwrap();
    c.stop_all().await;
    (c, leader, follower)
}

async fn assert_sole_leader_with_all_writes(node: &Consensus<Kv>, id: u64) {
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), id);
    let m = node
        .wait_until(WAIT, "sole leader", |m| m.role == Role::Leader)
        .await
        .unwrap();
    assert_eq!(m.voters, BTreeSet::from([id]));
    assert!(m.learners.is_empty(), "{m:?}");
    let map = node.linearizable_read(|kv| kv.map.clone()).await.unwrap();
    for i in 0..N {
        assert!(map.contains_key(&format!("k{i}")), "k{i} lost");
    }
    node.write(set("after-recovery", "v")).await.unwrap();
    assert_eq!(
        node.linearizable_read(|kv| kv.map.len()).await.unwrap(),
        N + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_on_a_copied_follower_directory_with_a_new_id() {
    let (c, _leader, follower) = stopped_cluster_with_writes().await;
    let elsewhere = tempfile::TempDir::new().unwrap();
    let copy = elsewhere.path().join("recovered");
    copy_dir(&c.dir(follower), &copy);

    let router = InMemoryRouter::<Kv>::new();
    let started = Instant::now();
    let node = Consensus::force_new_cluster(
        &copy,
        42,
        "new-manager:2377".into(),
        fast_config(),
        router.transport_for(42),
    )
    .await
    .unwrap();
    router.register(node.clone());
    assert_sole_leader_with_all_writes(&node, 42).await;
    assert!(started.elapsed() < WAIT);
    assert_eq!(
        node.metrics().leader_addr.as_deref(),
        Some("new-manager:2377")
    );

    // The recovered cluster survives a restart as itself.
    router.unregister(42);
    node.shutdown().await.unwrap();
    let node = Consensus::<Kv>::open(
        &copy,
        42,
        "new-manager:2377".into(),
        fast_config(),
        router.transport_for(42),
    )
    .await
    .unwrap();
    assert_eq!(node.wait_for_leader(WAIT).await.unwrap(), 42);
    assert_eq!(
        node.linearizable_read(|kv| kv.map.len()).await.unwrap(),
        N + 1
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_in_place_keeps_the_node_id() {
    let (c, leader, _follower) = stopped_cluster_with_writes().await;
    let router = InMemoryRouter::<Kv>::new();
    let node = Consensus::force_new_cluster(
        &c.dir(leader),
        leader,
        "same-manager:2377".into(),
        fast_config(),
        router.transport_for(leader),
    )
    .await
    .unwrap();
    router.register(node.clone());
    assert_sole_leader_with_all_writes(&node, leader).await;
    router.unregister(leader);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_refuses_an_empty_directory() {
    let dir = tempfile::TempDir::new().unwrap();
    let router = InMemoryRouter::<Kv>::new();
    let err = Consensus::<Kv>::force_new_cluster(
        dir.path(),
        1,
        "m:2377".into(),
        fast_config(),
        router.transport_for(1),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(err, ConsensusError::NothingToRecover { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing to recover"), "{err}");
}
