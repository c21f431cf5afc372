//! The leader's duties, run on every manager and acted on only by the leader.
//!
//! Every tick (250 ms) the leader: marks nodes Down that missed heartbeats for
//! `node_down_secs` (5 s by default); keeps the Raft membership equal to the
//! managers of the cluster state (a joined or promoted manager is added as a
//! learner, then made a voter once caught up; a demoted one is removed); and
//! rotates the network and gossip keys every `key_rotation_secs` (12 h by
//! default); and reconciles services with their tasks (the pure
//! orchestrator and scheduler of `state`), so tasks follow nodes that go
//! Down, are drained, paused or join. A manager that has just become leader first treats every node as
//! heard from now, so a failover never marks healthy nodes Down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::state::{ClusterState, Command, NodeStatus};
use crate::swarm::{now_secs, Raft, Shared};

const TICK: Duration = Duration::from_millis(250);

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut was_leader = false;
    let membership_busy = Arc::new(AtomicBool::new(false));
    let reconcile_busy = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let Some(raft) = shared.raft().await else {
            continue;
        };
        let m = raft.metrics();
        if m.leader_id != Some(m.node_id) {
            was_leader = false;
            continue;
        }
        let now = Instant::now();
        if !was_leader {
            let ids: Vec<String> = raft.read(|s| s.nodes.keys().cloned().collect());
            let mut seen = shared.last_seen.lock().expect("last_seen");
            seen.clear();
            seen.extend(ids.into_iter().map(|id| (id, now)));
            was_leader = true;
        }
        if let Some(me) = shared.node.read().await.as_ref().map(|n| n.node_id.clone()) {
            shared.last_seen.lock().expect("last_seen").insert(me, now);
        }
        detect_down(&shared, &raft, now).await;
        if !membership_busy.swap(true, Ordering::AcqRel) {
            let busy = membership_busy.clone();
            let raft = raft.clone();
            tokio::spawn(async move {
                reconcile_membership(&raft).await;
                busy.store(false, Ordering::Release);
            });
        }
        rotate_keys(&raft).await;
        // On its own task: a write that waits for a quorum must not hold
        // up failure detection.
        if !reconcile_busy.swap(true, Ordering::AcqRel) {
            let busy = reconcile_busy.clone();
            let (shared, raft) = (shared.clone(), raft.clone());
            tokio::spawn(async move {
                shared.reconcile(&raft).await;
                busy.store(false, Ordering::Release);
            });
        }
    }
}

async fn detect_down(shared: &Shared, raft: &Raft, now: Instant) {
    let (nodes, down_after) = raft.read(|s| {
        let down = s.cluster.as_ref().map_or(5, |c| c.settings.node_down_secs);
        let nodes: Vec<(String, NodeStatus)> =
            s.nodes.values().map(|n| (n.id.clone(), n.status)).collect();
        (nodes, Duration::from_secs(down))
    });
    let late: Vec<String> = {
        let mut seen = shared.last_seen.lock().expect("last_seen");
        nodes
            .into_iter()
            .filter(|(_, status)| *status != NodeStatus::Down)
            .filter(|(id, _)| {
                let last = *seen.entry(id.clone()).or_insert(now);
                now.duration_since(last) > down_after
            })
            .map(|(id, _)| id)
            .collect()
    };
    for id in late {
        tracing::info!(node = %id, "missed heartbeats: marking it down");
        let cmd = Command::SetStatus {
            id,
            status: NodeStatus::Down,
            message: "heartbeat failure".into(),
            at: now_secs(),
        };
        if let Err(e) = raft.write(cmd).await {
            tracing::debug!(error = %e, "could not mark node down");
            return;
        }
    }
}

/// The Raft members the cluster state asks for: its managers' ids and addresses.
fn desired_members(s: &ClusterState) -> BTreeMap<u64, String> {
    s.managers()
        .filter_map(|n| Some((n.raft_id?, n.api_addr?.to_string())))
        .collect()
}

async fn reconcile_membership(raft: &Raft) {
    let (initialised, desired) = raft.read(|s| (s.cluster.is_some(), desired_members(s)));
    let m = raft.metrics();
    // Before `init` is applied, or if the state names no manager, there is
    // nothing to reconcile against (never shrink the group to nothing).
    if !initialised || desired.is_empty() {
        return;
    }
    if let Some((&id, addr)) = desired.iter().find(|(id, _)| !m.voters.contains(id)) {
        if !m.learners.contains(&id) {
            tracing::info!(raft_id = id, %addr, "adding manager to the Raft group as a learner");
            if let Err(e) = raft.add_learner(id, addr.clone()).await {
                tracing::info!(raft_id = id, error = %e, "manager not added yet");
                return;
            }
        }
        let mut voters: BTreeSet<u64> = m.voters.clone();
        voters.insert(id);
        tracing::info!(raft_id = id, "making manager a voter");
        if let Err(e) = raft.change_membership(voters).await {
            tracing::info!(raft_id = id, error = %e, "manager not made a voter yet");
        }
        return;
    }
    let extra: Vec<u64> = m
        .voters
        .iter()
        .chain(m.learners.iter())
        .filter(|id| !desired.contains_key(id))
        .copied()
        .collect();
    for id in extra {
        tracing::info!(raft_id = id, "removing former manager from the Raft group");
        if let Err(e) = raft.remove_node(id).await {
            tracing::info!(raft_id = id, error = %e, "former manager not removed yet");
            return;
        }
    }
}

async fn rotate_keys(raft: &Raft) {
    let due = raft.read(|s| {
        let c = s.cluster.as_ref()?;
        let now = now_secs();
        (now.saturating_sub(c.keys_rotated_at) >= c.settings.key_rotation_secs).then(|| {
            (
                ClusterState::next_key_id(&c.network_keys),
                ClusterState::next_key_id(&c.gossip_keys),
                now,
            )
        })
    });
    if let Some((net_id, gossip_id, now)) = due {
        tracing::info!(key = net_id, "rotating network and gossip keys");
        let cmd = Command::RotateKeys {
            network: crate::swarm::random_key(net_id, now),
            gossip: crate::swarm::random_key(gossip_id, now),
            at: now,
        };
        if let Err(e) = raft.write(cmd).await {
            tracing::debug!(error = %e, "key rotation not committed yet");
        }
    }
}
