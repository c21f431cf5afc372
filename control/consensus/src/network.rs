//! The outgoing side of Raft: the [`Transport`] the daemon implements, and its adapter to
//! openraft's `RaftNetworkFactory`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};

use crate::error::TransportError;
use crate::{
    AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest,
    ManagerNode, NodeId, StateMachine, TypeConfig, VoteReply, VoteRequest,
};

/// A boxed, sendable future returned by [`Transport`] methods.
pub type RpcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TransportError>> + Send + 'a>>;

/// Delivers Raft RPCs to other managers.
///
/// Each method sends the request to `target` at `addr`, where the receiving daemon passes it to
/// the matching `Consensus::handle_*` method and returns that method's reply unchanged (the
/// reply types are serde-serializable). `Err(TransportError)` is for delivery failures only.
pub trait Transport<S: StateMachine>: Send + Sync + 'static {
    /// Sends AppendEntries (also the heartbeat).
    fn append_entries<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: AppendEntriesRequest<S>,
    ) -> RpcFuture<'a, AppendEntriesReply>;

    /// Sends a vote request.
    fn vote<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: VoteRequest,
    ) -> RpcFuture<'a, VoteReply>;

    /// Sends one chunk of a snapshot.
    fn install_snapshot<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: InstallSnapshotRequest<S>,
    ) -> RpcFuture<'a, InstallSnapshotReply>;
}

/// Openraft's network factory over a [`Transport`].
pub(crate) struct NetworkFactory<S: StateMachine> {
    pub(crate) transport: Arc<dyn Transport<S>>,
}

impl<S: StateMachine> RaftNetworkFactory<TypeConfig<S>> for NetworkFactory<S> {
    type Network = PeerClient<S>;

    async fn new_client(&mut self, target: NodeId, node: &ManagerNode) -> Self::Network {
        PeerClient {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// One peer as seen by openraft's replication and election tasks.
pub(crate) struct PeerClient<S: StateMachine> {
    transport: Arc<dyn Transport<S>>,
    target: NodeId,
    node: ManagerNode,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, ManagerNode, RaftError<NodeId, E>>;

impl<S: StateMachine> PeerClient<S> {
    /// Runs one delivery within openraft's hard deadline and sorts the outcome into the error
    /// kinds openraft reacts to: unreachable peers are backed off, network errors retried, and
    /// remote errors reported as the remote produced them.
    async fn call<T, E>(
        &self,
        option: &RPCOption,
        fut: RpcFuture<'_, Result<T, RaftError<NodeId, E>>>,
    ) -> Result<T, RpcErr<E>>
    where
        E: std::error::Error,
    {
        let outcome = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Ok(o) => o,
            Err(_) => Err(TransportError::Network {
                target: self.target,
                addr: self.node.addr.clone(),
                reason: format!("no answer within {:?}", option.hard_ttl()),
            }),
        };
        match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            Err(e @ TransportError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ TransportError::Network { .. }) => {
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

impl<S: StateMachine> RaftNetwork<TypeConfig<S>> for PeerClient<S> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<S>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let fut = self
            .transport
            .append_entries(self.target, &self.node.addr, rpc);
        self.call(&option, fut).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<S>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let fut = self
            .transport
            .install_snapshot(self.target, &self.node.addr, rpc);
        self.call(&option, fut).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let fut = self.transport.vote(self.target, &self.node.addr, rpc);
        self.call(&option, fut).await
    }
}
