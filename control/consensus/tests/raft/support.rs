//! A toy replicated map and an in-process cluster harness. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_consensus::{
    Consensus, ConsensusConfig, InMemoryRouter, NodeId, Role, StateMachine, WriteError,
};
use tempfile::TempDir;

/// The toy state: a string map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvCmd {
    Set { key: String, value: String },
    Delete { key: String },
}

impl StateMachine for Kv {
    type Command = KvCmd;
    /// The previous value.
    type Response = Option<String>;

    fn apply(&mut self, cmd: &KvCmd) -> Option<String> {
        match cmd {
            KvCmd::Set { key, value } => self.map.insert(key.clone(), value.clone()),
            KvCmd::Delete { key } => self.map.remove(key),
        }
    }
}

pub fn set(key: impl Into<String>, value: impl Into<String>) -> KvCmd {
    KvCmd::Set {
        key: key.into(),
        value: value.into(),
    }
}

/// Short timers so elections take well under a second.
pub fn fast_config() -> ConsensusConfig {
    ConsensusConfig {
        cluster_name: "test".to_owned(),
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        snapshot_logs_since_last: 1000,
        max_in_snapshot_log_to_keep: 100,
        request_timeout: Duration::from_secs(2),
    }
}

pub const WAIT: Duration = Duration::from_secs(15);

pub fn addr_of(id: NodeId) -> String {
    format!("manager-{id}:2377")
}

/// In-process managers, each with its own store directory under one temporary directory.
pub struct Cluster {
    pub router: Arc<InMemoryRouter<Kv>>,
    pub nodes: BTreeMap<NodeId, Consensus<Kv>>,
    pub config: ConsensusConfig,
    tmp: TempDir,
}

impl Cluster {
    pub fn empty(config: ConsensusConfig) -> Self {
        Cluster {
            router: InMemoryRouter::new(),
            nodes: BTreeMap::new(),
            config,
            tmp: TempDir::new().expect("temporary directory"),
        }
    }

    /// A cluster of voters `1..=n`, node 1 bootstrapped and the others added through it.
    pub async fn voters(n: u64, config: ConsensusConfig) -> Self {
        let mut c = Cluster::empty(config);
        for id in 1..=n {
            c.start(id).await;
        }
        c.node(1).initialize_single().await.expect("initialize");
        assert_eq!(c.node(1).wait_for_leader(WAIT).await.unwrap(), 1);
        for id in 2..=n {
            c.node(1)
                .add_learner(id, addr_of(id))
                .await
                .expect("add learner");
        }
        c.node(1)
            .change_membership((1..=n).collect())
            .await
            .expect("change membership");
        c
    }

    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.tmp.path().join(format!("node-{id}"))
    }

    pub fn node(&self, id: NodeId) -> &Consensus<Kv> {
        &self.nodes[&id]
    }

    /// Opens (or reopens) node `id` on its directory and registers it.
    pub async fn start(&mut self, id: NodeId) {
        let node = Consensus::open(
            &self.dir(id),
            id,
            addr_of(id),
            self.config.clone(),
            self.router.transport_for(id),
        )
        .await
        .expect("open node");
        self.router.register(node.clone());
        self.nodes.insert(id, node);
    }

    /// Shuts node `id` down; its directory stays.
    pub async fn stop(&mut self, id: NodeId) {
        self.router.unregister(id);
        let node = self.nodes.remove(&id).expect("running node");
        node.shutdown().await.expect("shutdown");
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// Waits until the given nodes all name the same leader, which itself claims leadership.
    pub async fn agreed_leader(&self, among: &BTreeSet<NodeId>) -> NodeId {
        let start = Instant::now();
        loop {
            let views: Vec<_> = among.iter().map(|id| self.node(*id).metrics()).collect();
            if let Some(leader) = views[0].leader_id {
                let agreed = views.iter().all(|m| m.leader_id == Some(leader));
                if agreed
                    && among.contains(&leader)
                    && self.node(leader).metrics().role == Role::Leader
                {
                    return leader;
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "no agreed leader among {among:?} within {WAIT:?}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes through the current leader, following a leader change if one happens meanwhile,
    /// and returns the log index of the write.
    pub async fn write(&self, cmd: KvCmd) -> u64 {
        let deadline = Instant::now() + WAIT;
        match write_anywhere(&self.nodes, cmd, deadline).await {
            Ok((index, _)) => index,
            Err(e) => panic!("write failed for {WAIT:?}: {e}"),
        }
    }

    /// Waits until every node in `ids` has applied at least up to `index`.
    pub async fn sync(&self, ids: &BTreeSet<NodeId>, index: u64) {
        for id in ids {
            self.wait_applied(*id, index).await;
        }
    }

    /// Waits until node `id` has applied at least up to `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64) {
        self.node(id)
            .wait_until(WAIT, "applied", |m| {
                m.last_applied_index.is_some_and(|i| i >= index)
            })
            .await
            .unwrap_or_else(|e| panic!("node {id} did not apply index {index}: {e}"));
    }
}

/// Writes `cmd` through whichever node leads, following leader hints and retrying the others,
/// until it succeeds or `deadline` passes. Safe for idempotent commands only.
pub async fn write_anywhere(
    nodes: &BTreeMap<NodeId, Consensus<Kv>>,
    cmd: KvCmd,
    deadline: Instant,
) -> Result<(u64, Option<String>), WriteError> {
    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    // A deposed leader cut off from the others may still claim leadership: prefer the claim in
    // the highest term.
    let mut target = ids
        .iter()
        .map(|id| nodes[id].metrics())
        .filter(|m| m.role == Role::Leader)
        .max_by_key(|m| m.term)
        .map(|m| m.node_id)
        .unwrap_or(ids[0]);
    let mut next = 0usize;
    loop {
        let result = nodes[&target].write_with_index(cmd.clone()).await;
        let err = match result {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err);
        }
        match err {
            WriteError::ForwardToLeader {
                leader_id: Some(l), ..
            } if nodes.contains_key(&l) && l != target => target = l,
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                next += 1;
                target = ids[next % ids.len()];
            }
        }
    }
}

/// Copies a (closed) store directory.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read store dir") {
        let entry = entry.expect("dir entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy store file");
    }
}
