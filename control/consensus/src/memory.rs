//! In-process transport for tests and simulations: a router of `Consensus` nodes that can cut
//! any node off from the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::consensus::Consensus;
use crate::error::TransportError;
use crate::network::{RpcFuture, Transport};
use crate::{
    AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest, NodeId,
    StateMachine, VoteReply, VoteRequest,
};

/// Routes RPCs between in-process nodes by node id.
///
/// Registered nodes are held until unregistered, so unregister a node before shutting it down.
pub struct InMemoryRouter<S: StateMachine> {
    nodes: Mutex<HashMap<NodeId, Consensus<S>>>,
    isolated: Mutex<HashSet<NodeId>>,
}

impl<S: StateMachine> InMemoryRouter<S> {
    /// An empty router.
    pub fn new() -> Arc<Self> {
        Arc::new(InMemoryRouter {
            nodes: Mutex::new(HashMap::new()),
            isolated: Mutex::new(HashSet::new()),
        })
    }

    /// The transport node `source` uses to reach the others.
    pub fn transport_for(self: &Arc<Self>, source: NodeId) -> Arc<dyn Transport<S>> {
        Arc::new(InMemoryTransport {
            router: self.clone(),
            source,
        })
    }

    /// Makes `node` reachable under its node id.
    pub fn register(&self, node: Consensus<S>) {
        self.lock_nodes().insert(node.node_id(), node);
    }

    /// Makes node `id` unreachable and releases the router's handle on it.
    pub fn unregister(&self, id: NodeId) -> Option<Consensus<S>> {
        self.lock_nodes().remove(&id)
    }

    /// Cuts node `id` off: every RPC from or to it fails as unreachable.
    pub fn isolate(&self, id: NodeId) {
        self.lock_isolated().insert(id);
    }

    /// Reconnects an isolated node.
    pub fn heal(&self, id: NodeId) {
        self.lock_isolated().remove(&id);
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Consensus<S>>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_isolated(&self) -> std::sync::MutexGuard<'_, HashSet<NodeId>> {
        self.isolated.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route(
        &self,
        source: NodeId,
        target: NodeId,
        addr: &str,
    ) -> Result<Consensus<S>, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        {
            let isolated = self.lock_isolated();
            if isolated.contains(&source) {
                return Err(unreachable("the sending node is isolated"));
            }
            if isolated.contains(&target) {
                return Err(unreachable("the target node is isolated"));
            }
        }
        self.lock_nodes()
            .get(&target)
            .cloned()
            .ok_or_else(|| unreachable("no such node registered"))
    }
}

/// One node's view of an [`InMemoryRouter`].
pub struct InMemoryTransport<S: StateMachine> {
    router: Arc<InMemoryRouter<S>>,
    source: NodeId,
}

impl<S: StateMachine> Transport<S> for InMemoryTransport<S> {
    fn append_entries<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: AppendEntriesRequest<S>,
    ) -> RpcFuture<'a, AppendEntriesReply> {
        Box::pin(async move {
            let node = self.router.route(self.source, target, addr)?;
            Ok(node.handle_append_entries(req).await)
        })
    }

    fn vote<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: VoteRequest,
    ) -> RpcFuture<'a, VoteReply> {
        Box::pin(async move {
            let node = self.router.route(self.source, target, addr)?;
            Ok(node.handle_vote(req).await)
        })
    }

    fn install_snapshot<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: InstallSnapshotRequest<S>,
    ) -> RpcFuture<'a, InstallSnapshotReply> {
        Box::pin(async move {
            let node = self.router.route(self.source, target, addr)?;
            Ok(node.handle_install_snapshot(req).await)
        })
    }
}
