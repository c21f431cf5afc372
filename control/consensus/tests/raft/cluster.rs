//! Replication, leader election, failover and request routing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_consensus::{ReadError, Role, WriteError};

use crate::support::{addr_of, fast_config, set, write_anywhere, Cluster, KvCmd, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_applies_writes_and_reloads_them_after_restart() {
    let mut c = Cluster::empty(fast_config());
    c.start(1).await;
    assert!(!c.node(1).is_initialized().await.unwrap());
    c.node(1).initialize_single().await.unwrap();
    assert_eq!(c.node(1).wait_for_leader(WAIT).await.unwrap(), 1);

    assert_eq!(c.node(1).write(set("a", "1")).await.unwrap(), None);
    assert_eq!(
        c.node(1).write(set("a", "2")).await.unwrap(),
        Some("1".to_owned())
    );
    for i in 0..20 {
        c.node(1).write(set(format!("k{i}"), "v")).await.unwrap();
    }
    c.node(1)
        .write(KvCmd::Delete { key: "k0".into() })
        .await
        .unwrap();
    let before = c.node(1).read(|kv| kv.clone());
    assert_eq!(before.map.len(), 20);
    assert_eq!(before.map["a"], "2");
    let m = c.node(1).metrics();
    assert_eq!(m.role, Role::Leader);
    assert_eq!(m.voters, BTreeSet::from([1]));
    assert_eq!(m.leader_addr.as_deref(), Some(addr_of(1).as_str()));
    let applied = m.last_applied_index.unwrap();

    c.stop(1).await;
    c.start(1).await;
    // State is there before any election: it was reloaded from disk, not replayed by a leader.
    assert_eq!(c.node(1).read(|kv| kv.clone()), before);
    assert!(c.node(1).is_initialized().await.unwrap());
    assert_eq!(c.node(1).wait_for_leader(WAIT).await.unwrap(), 1);
    c.wait_applied(1, applied).await;
    assert_eq!(c.node(1).read(|kv| kv.clone()), before);
    c.node(1).write(set("after", "restart")).await.unwrap();
    assert_eq!(
        c.node(1)
            .linearizable_read(|kv| kv.map.get("after").cloned())
            .await
            .unwrap(),
        Some("restart".to_owned())
    );
    // A second bootstrap is refused.
    assert!(c.node(1).initialize_single().await.is_err());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_followers_forward_to_the_leader() {
    let mut c = Cluster::voters(3, fast_config()).await;
    let all = BTreeSet::from([1, 2, 3]);
    c.agreed_leader(&all).await;
    let mut index = 0;
    for i in 0..30 {
        index = c.write(set(format!("k{i}"), i.to_string())).await;
    }
    c.sync(&all, index).await;
    let leader = c.agreed_leader(&all).await;
    for id in &all {
        assert_eq!(c.node(*id).read(|kv| kv.map.len()), 30, "node {id}");
        assert_eq!(c.node(*id).metrics().voters, all);
    }

    let follower = *all.iter().find(|id| **id != leader).unwrap();
    let err = c.node(follower).write(set("x", "y")).await.unwrap_err();
    assert_eq!(
        err,
        WriteError::ForwardToLeader {
            leader_id: Some(leader),
            leader_addr: Some(addr_of(leader)),
        }
    );
    assert!(err.to_string().contains(&addr_of(leader)), "{err}");
    let err = c
        .node(follower)
        .linearizable_read(|kv| kv.map.len())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReadError::ForwardToLeader { leader_id: Some(l), .. } if l == leader),
        "{err:?}"
    );
    assert_eq!(
        c.node(leader)
            .linearizable_read(|kv| kv.map.len())
            .await
            .unwrap(),
        30
    );
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_failover() {
    let mut config = fast_config();
    config.request_timeout = Duration::from_secs(1);
    let mut c = Cluster::voters(3, config).await;
    let all = BTreeSet::from([1, 2, 3]);
    let old_leader = c.agreed_leader(&all).await;

    let nodes = Arc::new(c.nodes.clone());
    let acks = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let nodes = nodes.clone();
        let acks = acks.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (w..200).step_by(8) {
                let key = format!("key-{i:03}");
                if write_anywhere(&nodes, set(key.clone(), "v"), deadline)
                    .await
                    .is_ok()
                {
                    acks.fetch_add(1, Ordering::Relaxed);
                    acked.push(key);
                }
            }
            acked
        }));
    }
    // Cut the leader off while the writers run.
    c.wait_applied(old_leader, 30).await;
    c.router.isolate(old_leader);
    let acked_before_failover = acks.load(Ordering::Relaxed);
    assert!(
        acked_before_failover < 150,
        "the failover came too late to overlap the writes ({acked_before_failover} done)"
    );

    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let rest: BTreeSet<u64> = all.iter().copied().filter(|id| *id != old_leader).collect();
    let new_leader = c.agreed_leader(&rest).await;
    assert_ne!(new_leader, old_leader);
    assert!(
        acked.len() >= 150,
        "only {} of 200 writes were acknowledged",
        acked.len()
    );
    let on_leader = c
        .node(new_leader)
        .linearizable_read(|kv| kv.map.clone())
        .await
        .unwrap();
    for key in &acked {
        assert!(on_leader.contains_key(key), "acknowledged {key} lost");
    }

    // The old leader rejoins and converges to the same state.
    c.router.heal(old_leader);
    let index = c.node(new_leader).metrics().last_applied_index.unwrap();
    c.wait_applied(old_leader, index).await;
    let on_leader = c
        .node(new_leader)
        .linearizable_read(|kv| kv.map.clone())
        .await
        .unwrap();
    assert_eq!(c.agreed_leader(&all).await, new_leader);
    assert_eq!(c.node(old_leader).read(|kv| kv.map.clone()), on_leader);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_cannot_commit() {
    let mut config = fast_config();
    config.request_timeout = Duration::from_millis(800);
    let mut c = Cluster::voters(3, config).await;
    let all = BTreeSet::from([1, 2, 3]);
    let leader = c.agreed_leader(&all).await;
    c.router.isolate(leader);
    let err = c.node(leader).write(set("lost", "1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            WriteError::Timeout(_) | WriteError::ForwardToLeader { .. } | WriteError::Interrupted
        ),
        "{err:?}"
    );
    let rest: BTreeSet<u64> = all.iter().copied().filter(|id| *id != leader).collect();
    let new_leader = c.agreed_leader(&rest).await;
    c.router.heal(leader);
    let (index, _) = c
        .node(new_leader)
        .write_with_index(set("kept", "1"))
        .await
        .unwrap();
    for id in &all {
        c.wait_applied(*id, index).await;
        // The uncommitted entry of the isolated leader was replaced by the new leader's log.
        assert_eq!(c.node(*id).read(|kv| kv.map.get("lost").cloned()), None);
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_nodes_restart_from_disk() {
    let mut c = Cluster::voters(3, fast_config()).await;
    let all = BTreeSet::from([1, 2, 3]);
    c.agreed_leader(&all).await;
    let mut index = 0;
    for i in 0..40 {
        index = c.write(set(format!("k{i}"), "v")).await;
    }
    c.sync(&all, index).await;
    let leader = c.agreed_leader(&all).await;
    let expected = c.node(leader).read(|kv| kv.clone());
    c.stop_all().await;

    for id in &all {
        c.start(*id).await;
    }
    let leader = c.agreed_leader(&all).await;
    assert_eq!(
        c.node(leader)
            .linearizable_read(|kv| kv.clone())
            .await
            .unwrap(),
        expected
    );
    for id in &all {
        assert_eq!(c.node(*id).metrics().voters, all);
    }
    let index = c.write(set("new", "v")).await;
    c.sync(&all, index).await;
    for id in &all {
        assert_eq!(c.node(*id).read(|kv| kv.map.len()), 41, "node {id}");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_voter_leaves_the_membership() {
    let mut c = Cluster::voters(3, fast_config()).await;
    let all = BTreeSet::from([1, 2, 3]);
    let leader = c.agreed_leader(&all).await;
    let victim = *all.iter().find(|id| **id != leader).unwrap();
    c.node(leader).remove_node(victim).await.unwrap();
    let m = c.node(leader).metrics();
    assert!(
        !m.voters.contains(&victim) && !m.learners.contains(&victim),
        "{m:?}"
    );
    c.router.unregister(victim);
    c.nodes.remove(&victim).unwrap().shutdown().await.unwrap();
    c.write(set("k", "v")).await;
    c.stop_all().await;
}
