//! The public handle on one manager's Raft node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{ChangeMembers, RaftMetrics, ServerState};

use crate::config::ConsensusConfig;
use crate::error::{ConsensusError, ReadError, WriteError};
use crate::network::{NetworkFactory, Transport};
use crate::store::{ClosedFlag, SharedState, Store};
use crate::{
    AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest,
    ManagerNode, NodeId, Raft, StateMachine, VoteReply, VoteRequest,
};

/// What a node currently does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Replicates the log and serves writes.
    Leader,
    /// A voter following a leader.
    Follower,
    /// A voter campaigning for leadership.
    Candidate,
    /// Receives the log but does not vote (a manager being added, or not yet initialized).
    Learner,
    /// Shut down.
    Shutdown,
}

/// A summary of the local node's Raft metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusMetrics {
    /// This node.
    pub node_id: NodeId,
    /// What this node does now.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// The known leader's address.
    pub leader_addr: Option<String>,
    /// The voters of the effective membership.
    pub voters: BTreeSet<NodeId>,
    /// The learners of the effective membership.
    pub learners: BTreeSet<NodeId>,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to the state.
    pub last_applied_index: Option<u64>,
    /// Index of the last entry covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry purged from the log.
    pub purged_index: Option<u64>,
}

impl ConsensusMetrics {
    fn from_raft(m: &RaftMetrics<NodeId, ManagerNode>) -> Self {
        let membership = m.membership_config.membership();
        ConsensusMetrics {
            node_id: m.id,
            role: match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
            term: m.current_term,
            leader_id: m.current_leader,
            leader_addr: m
                .current_leader
                .and_then(|id| membership.get_node(&id))
                .map(|n| n.addr.clone()),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
        }
    }
}

/// One manager's Raft node: replicated writes, local and linearizable reads, membership
/// changes, and the receiving end of the Raft RPCs. Cheap to clone.
pub struct Consensus<S: StateMachine> {
    inner: Arc<Inner<S>>,
}

impl<S: StateMachine> Clone for Consensus<S> {
    fn clone(&self) -> Self {
        Consensus {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: StateMachine> {
    node_id: NodeId,
    addr: String,
    raft: Raft<S>,
    state: SharedState<S>,
    store_closed: ClosedFlag,
    request_timeout: Duration,
}

/// How long `shutdown` waits for openraft's tasks to release the store.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(10);

impl<S: StateMachine> Consensus<S> {
    /// Opens (or creates) the store in `dir` and starts the Raft node `node_id`, reachable by
    /// peers at `addr`. A fresh node is a learner of no cluster until [`initialize_single`]
    /// or until a leader adds it; a node with a stored log resumes its cluster.
    ///
    /// [`initialize_single`]: Consensus::initialize_single
    pub async fn open(
        dir: &Path,
        node_id: NodeId,
        addr: String,
        config: ConsensusConfig,
        transport: Arc<dyn Transport<S>>,
    ) -> Result<Self, ConsensusError> {
        let raft_config = config.to_openraft()?;
        let store = Store::<S>::open(dir)?;
        Self::start(store, node_id, addr, &config, raft_config, transport).await
    }

    /// Recovery like `docker swarm init --force-new-cluster`: restarts the store in `dir`
    /// (possibly copied from another manager) as a one-voter cluster made of this node, keeping
    /// every logged and applied command.
    ///
    /// Before Raft starts, a membership entry naming only `(node_id, addr)` is appended after
    /// the last stored entry, and the vote is reset to an uncommitted one for `node_id` in a
    /// term above every stored term. The node then is the only voter of its effective
    /// membership, elects itself at its first election timeout, and commits the whole log
    /// (entries the old cluster had not committed included, as Swarm does). The old members
    /// must not be restarted on their old stores afterwards: they would form a second cluster.
    pub async fn force_new_cluster(
        dir: &Path,
        node_id: NodeId,
        addr: String,
        config: ConsensusConfig,
        transport: Arc<dyn Transport<S>>,
    ) -> Result<Self, ConsensusError> {
        let raft_config = config.to_openraft()?;
        let store = Store::<S>::open(dir)?;
        if !store.force_single_voter(node_id, addr.clone())? {
            return Err(ConsensusError::NothingToRecover {
                path: dir.to_owned(),
            });
        }
        tracing::warn!(node_id, %addr, dir = %dir.display(), "forcing a new one-manager cluster from the stored state");
        Self::start(store, node_id, addr, &config, raft_config, transport).await
    }

    async fn start(
        store: Store<S>,
        node_id: NodeId,
        addr: String,
        config: &ConsensusConfig,
        raft_config: openraft::Config,
        transport: Arc<dyn Transport<S>>,
    ) -> Result<Self, ConsensusError> {
        let state = store.shared_state();
        let store_closed = store.closed_flag();
        let Store {
            log, state_machine, ..
        } = store;
        let raft = openraft::Raft::new(
            node_id,
            Arc::new(raft_config),
            NetworkFactory { transport },
            log,
            state_machine,
        )
        .await
        .map_err(|e| ConsensusError::Start {
            node_id,
            reason: e.to_string(),
        })?;
        Ok(Consensus {
            inner: Arc::new(Inner {
                node_id,
                addr,
                raft,
                state,
                store_closed,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This node's Raft address, as given to `open`.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The underlying openraft handle, for what this API does not cover.
    pub fn raft(&self) -> &Raft<S> {
        &self.inner.raft
    }

    /// Bootstraps a cluster whose only member is this node (`docker swarm init`). Refused if
    /// the node already has a log or a vote.
    pub async fn initialize_single(&self) -> Result<(), ConsensusError> {
        let members = BTreeMap::from([(
            self.inner.node_id,
            ManagerNode {
                addr: self.inner.addr.clone(),
            },
        )]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(ConsensusError::Refused(format!(
                    "cannot initialize node {}: {e}",
                    self.inner.node_id
                )))
            }
            Err(RaftError::APIError(e)) => Err(ConsensusError::Refused(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(ConsensusError::Stopped(f.to_string())),
        }
    }

    /// Whether this node has a log or a vote, i.e. belongs to a cluster already.
    pub async fn is_initialized(&self) -> Result<bool, ConsensusError> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|f| ConsensusError::Stopped(f.to_string()))
    }

    /// Adds a non-voting member and waits (up to the request timeout) until it has caught up.
    /// Call on the leader.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), ConsensusError> {
        let fut = self.inner.raft.add_learner(id, ManagerNode { addr }, true);
        self.membership_call(fut).await
    }

    /// Makes `voters` the voting members (joint consensus under the hood). New voters must be
    /// learners already; removed voters stay as learners (use [`remove_node`] to drop them).
    /// Call on the leader.
    ///
    /// [`remove_node`]: Consensus::remove_node
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), ConsensusError> {
        let fut = self.inner.raft.change_membership(voters, true);
        self.membership_call(fut).await
    }

    /// Removes a member, voter or learner, from the cluster. Call on the leader.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ConsensusError> {
        let metrics = self.metrics();
        if metrics.voters.contains(&id) {
            let mut voters = metrics.voters;
            voters.remove(&id);
            let fut = self.inner.raft.change_membership(voters, false);
            self.membership_call(fut).await
        } else {
            let fut = self
                .inner
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false);
            self.membership_call(fut).await
        }
    }

    async fn membership_call<T>(
        &self,
        fut: impl std::future::Future<
            Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, ManagerNode>>>,
        >,
    ) -> Result<(), ConsensusError> {
        let t = self.inner.request_timeout;
        match tokio::time::timeout(t, fut).await {
            Err(_) => Err(ConsensusError::Timeout(t)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                let (leader_id, leader_addr) = self.leader_of(f);
                Err(ConsensusError::ForwardToLeader {
                    leader_id,
                    leader_addr,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ConsensusError::Refused(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ConsensusError::Stopped(f.to_string())),
        }
    }

    /// Replicates `cmd` and returns what applying it produced, once a quorum has committed it
    /// and this node has applied it. Only works on the leader.
    pub async fn write(&self, cmd: S::Command) -> Result<S::Response, WriteError> {
        self.write_with_index(cmd).await.map(|(_, r)| r)
    }

    /// Like [`write`], and also returns the log index the command was committed at, so a
    /// caller can wait for a follower to apply it (see [`wait_until`]).
    ///
    /// [`write`]: Consensus::write
    /// [`wait_until`]: Consensus::wait_until
    pub async fn write_with_index(
        &self,
        cmd: S::Command,
    ) -> Result<(u64, S::Response), WriteError> {
        let t = self.inner.request_timeout;
        match tokio::time::timeout(t, self.inner.raft.client_write(cmd)).await {
            Err(_) => Err(WriteError::Timeout(t)),
            Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                let (leader_id, leader_addr) = self.leader_of(f);
                Err(WriteError::ForwardToLeader {
                    leader_id,
                    leader_addr,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(WriteError::Refused(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(f))) => {
                // Openraft reports a dropped reply (the entry was truncated by a new leader) as
                // `Stopped` even though the core still runs.
                if self.is_running() {
                    Err(WriteError::Interrupted)
                } else {
                    Err(WriteError::Fatal(f.to_string()))
                }
            }
        }
    }

    /// Reads the local copy of the state: fast, but possibly stale on a follower or a deposed
    /// leader.
    pub fn read<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        let guard = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&guard.state)
    }

    /// Reads after confirming leadership with a quorum and applying everything committed
    /// before the read: the result reflects every write acknowledged before the call.
    pub async fn linearizable_read<T>(&self, f: impl FnOnce(&S) -> T) -> Result<T, ReadError> {
        let t = self.inner.request_timeout;
        match tokio::time::timeout(t, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Err(ReadError::Timeout(t)),
            Ok(Ok(_)) => Ok(self.read(f)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                let (leader_id, leader_addr) = self.leader_of(f);
                Err(ReadError::ForwardToLeader {
                    leader_id,
                    leader_addr,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                Err(ReadError::NoQuorum(q.to_string()))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ReadError::Fatal(f.to_string())),
        }
    }

    /// A summary of the local node's view of the cluster.
    pub fn metrics(&self) -> ConsensusMetrics {
        ConsensusMetrics::from_raft(&self.inner.raft.metrics().borrow())
    }

    /// Waits until `pred` holds for this node's metrics, or `timeout` passes.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&ConsensusMetrics) -> bool + Send + Sync,
    ) -> Result<ConsensusMetrics, ConsensusError> {
        let waited = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| pred(&ConsensusMetrics::from_raft(m)), what)
            .await;
        match waited {
            Ok(m) => Ok(ConsensusMetrics::from_raft(&m)),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ConsensusError::Timeout(timeout)),
            Err(openraft::metrics::WaitError::ShuttingDown) => {
                Err(ConsensusError::Stopped("shutting down".to_owned()))
            }
        }
    }

    /// Waits until this node knows a leader and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ConsensusError> {
        let m = self
            .wait_until(timeout, "a leader is known", |m| m.leader_id.is_some())
            .await?;
        m.leader_id
            .ok_or_else(|| ConsensusError::Stopped("leader vanished".to_owned()))
    }

    /// Builds a snapshot now (and lets the log be purged behind it), whatever the policy says.
    pub async fn trigger_snapshot(&self) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|f| ConsensusError::Stopped(f.to_string()))
    }

    /// Receiving side of AppendEntries: pass the request from a peer, send the reply back.
    pub async fn handle_append_entries(&self, req: AppendEntriesRequest<S>) -> AppendEntriesReply {
        self.inner.raft.append_entries(req).await
    }

    /// Receiving side of RequestVote.
    pub async fn handle_vote(&self, req: VoteRequest) -> VoteReply {
        self.inner.raft.vote(req).await
    }

    /// Receiving side of InstallSnapshot (one chunk per call).
    pub async fn handle_install_snapshot(
        &self,
        req: InstallSnapshotRequest<S>,
    ) -> InstallSnapshotReply {
        self.inner.raft.install_snapshot(req).await
    }

    /// Stops the node and waits until its store file is closed, so the directory can be opened
    /// again (by a restart or `force_new_cluster`).
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| ConsensusError::Stopped(format!("Raft task ended badly: {e}")))?;
        let start = Instant::now();
        while !self.inner.store_closed.is_closed() {
            if start.elapsed() > STORE_RELEASE_WAIT {
                return Err(ConsensusError::StoreStillOpen {
                    node_id: self.inner.node_id,
                    waited: STORE_RELEASE_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.inner.raft.metrics().borrow().running_state.is_ok()
    }

    /// Completes a leader hint with the address from the membership when openraft omitted it.
    fn leader_of(
        &self,
        f: ForwardToLeader<NodeId, ManagerNode>,
    ) -> (Option<NodeId>, Option<String>) {
        let addr = f.leader_node.map(|n| n.addr).or_else(|| {
            let id = f.leader_id?;
            let m = self.inner.raft.metrics().borrow().membership_config.clone();
            m.membership().get_node(&id).map(|n| n.addr.clone())
        });
        (f.leader_id, addr)
    }
}
