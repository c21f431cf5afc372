//! The manager API on TCP 2377 (mutual TLS), and Raft's transport over it.
//!
//! | method | path | who may call |
//! |---|---|---|
//! | POST | `/v1/join` | anyone holding a join token (no certificate needed) |
//! | POST | `/v1/heartbeat` | any node of this swarm |
//! | POST | `/v1/renew` | any node of this swarm (a new certificate for its role) |
//! | POST | `/v1/op` | managers (ops forwarded to the leader; `Leave` only for the caller itself) |
//! | POST | `/raft/append`, `/raft/vote`, `/raft/snapshot` | managers |
//!
//! The caller's identity is its certificate (node id, role, cluster id), never
//! a field of the body.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use shoal_consensus::{
    AppendEntriesReply, AppendEntriesRequest, InstallSnapshotReply, InstallSnapshotRequest, NodeId,
    RpcFuture, Transport, TransportError, VoteReply, VoteRequest,
};

use crate::net::{CallError, PeerCerts};
use crate::ops::{Op, OpError, OpReply};
use crate::state::{ClusterState, Role};
use crate::swarm::Shared;
use crate::tls::{self, PeerIdentity};

type AppState = Arc<Shared>;

/// The largest Raft request a manager accepts from another.
///
/// axum's default (2 MB) is too small once entries carry secrets: one
/// 500 KiB secret is about 700 KB of JSON, openraft sends up to 300
/// entries in one append to a manager that is catching up, and a 3 MiB
/// snapshot chunk is up to 12 MB as a JSON array. A request refused for its
/// size is re-sent unchanged, so the lagging manager could never catch up
/// (and with one other manager down, the swarm lost its quorum). 256 MiB
/// covers 300 of the largest secrets; only managers of this swarm may send
/// these requests.
const RAFT_BODY_LIMIT: usize = 256 << 20;

/// The router of the manager API.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let raft_limit = DefaultBodyLimit::max(RAFT_BODY_LIMIT);
    Router::new()
        .route("/v1/join", post(join))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/renew", post(renew))
        .route("/v1/assignments", post(assignments))
        .route("/v1/task-status", post(task_status))
        .route("/v1/attach", post(attach))
        .route("/v1/detach", post(detach))
        .route(
            "/v1/logs",
            post(push_logs).layer(DefaultBodyLimit::max(LOG_BATCH_LIMIT)),
        )
        .route("/v1/op", post(op))
        .route("/raft/append", post(raft_append).layer(raft_limit))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", post(raft_snapshot).layer(raft_limit))
        .with_state(shared)
}

/// An error answer with a message naming the problem.
pub(crate) struct ApiError(pub(crate) OpError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(serde_json::json!({ "message": self.0.to_string() })),
        )
            .into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        ApiError(e)
    }
}

/// The caller, if it presented a certificate of this swarm.
async fn caller(shared: &Shared, peer: &PeerCerts) -> Result<PeerIdentity, OpError> {
    let Some(leaf) = peer.0.first() else {
        return Err(OpError::Forbidden(
            "permission denied: this endpoint needs a node certificate of this swarm; join first"
                .into(),
        ));
    };
    let id = tls::peer_identity(leaf).map_err(OpError::Forbidden)?;
    let ours = shared
        .node
        .read()
        .await
        .as_ref()
        .map(|n| n.cluster_id.clone());
    if ours.as_deref() != Some(id.cluster_id.as_str()) {
        return Err(OpError::Forbidden(format!(
            "permission denied: node {} belongs to another swarm",
            id.node_id
        )));
    }
    Ok(id)
}

async fn manager_caller(shared: &Shared, peer: &PeerCerts) -> Result<PeerIdentity, OpError> {
    let id = caller(shared, peer).await?;
    if id.role != Role::Manager {
        return Err(OpError::Forbidden(format!(
            "permission denied: node {} presented a worker certificate; only managers may call this endpoint",
            id.node_id
        )));
    }
    Ok(id)
}

async fn join(
    State(shared): State<AppState>,
    Json(req): Json<crate::ops::JoinRequest>,
) -> Result<Json<OpReplyJoined>, ApiError> {
    match shared.run_op(Op::Join(req)).await? {
        OpReply::Joined(r) => Ok(Json(*r)),
        other => Err(unexpected(&other)),
    }
}

type OpReplyJoined = crate::ops::JoinReply;

/// A heartbeat's body: what the node reports about itself (older agents
/// send `null`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatBody {
    /// The container engine it runs image tasks with.
    #[serde(default)]
    pub engine: Option<String>,
}

async fn heartbeat(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<Option<HeartbeatBody>>,
) -> Result<Json<crate::ops::HeartbeatReply>, ApiError> {
    let id = caller(&shared, &peer).await?;
    match shared
        .run_op(Op::Heartbeat {
            node_id: id.node_id,
            engine: body.unwrap_or_default().engine,
        })
        .await?
    {
        OpReply::Heartbeat(r) => Ok(Json(*r)),
        other => Err(unexpected(&other)),
    }
}

#[derive(serde::Deserialize)]
struct RenewBody {
    csr: String,
}

async fn renew(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<RenewBody>,
) -> Result<Json<String>, ApiError> {
    let id = caller(&shared, &peer).await?;
    match shared
        .run_op(Op::Renew {
            node_id: id.node_id,
            csr: body.csr,
        })
        .await?
    {
        OpReply::Certificate(c) => Ok(Json(c)),
        other => Err(unexpected(&other)),
    }
}

/// The most a batch of log lines from one agent may weigh.
const LOG_BATCH_LIMIT: usize = 4 << 20;

async fn assignments(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
) -> Result<Json<crate::dispatch::Assignments>, ApiError> {
    let id = caller(&shared, &peer).await?;
    match shared
        .run_op(Op::Assignments {
            node_id: id.node_id,
        })
        .await?
    {
        OpReply::Assignments(a) => Ok(Json(*a)),
        other => Err(unexpected(&other)),
    }
}

/// The body of `POST /v1/task-status`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct TaskStatusBody {
    pub(crate) updates: Vec<crate::state::TaskUpdate>,
}

async fn task_status(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<TaskStatusBody>,
) -> Result<Json<()>, ApiError> {
    let id = caller(&shared, &peer).await?;
    shared
        .run_op(Op::ReportTasks {
            node_id: id.node_id,
            updates: body.updates,
        })
        .await?;
    Ok(Json(()))
}

/// The body of `POST /v1/attach` and `POST /v1/detach`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AttachBody {
    /// The node's id for the container's endpoint.
    pub(crate) id: String,
    /// The network's id (attach only).
    #[serde(default)]
    pub(crate) network: String,
}

async fn attach(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<AttachBody>,
) -> Result<Json<crate::ops::AttachReply>, ApiError> {
    let id = caller(&shared, &peer).await?;
    match shared
        .run_op(Op::Attach {
            node_id: id.node_id,
            id: body.id,
            network: body.network,
        })
        .await?
    {
        OpReply::Attached(r) => Ok(Json(r)),
        other => Err(unexpected(&other)),
    }
}

async fn detach(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<AttachBody>,
) -> Result<Json<()>, ApiError> {
    let id = caller(&shared, &peer).await?;
    shared
        .run_op(Op::Detach {
            node_id: id.node_id,
            id: body.id,
        })
        .await?;
    Ok(Json(()))
}

/// The body of `POST /v1/logs`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct LogsBody {
    pub(crate) lines: Vec<crate::dispatch::TaskLogLine>,
}

async fn push_logs(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(body): Json<LogsBody>,
) -> Result<Json<()>, ApiError> {
    let id = caller(&shared, &peer).await?;
    shared
        .run_op(Op::PushLogs {
            node_id: id.node_id,
            lines: body.lines,
        })
        .await?;
    Ok(Json(()))
}

fn unexpected(reply: &OpReply) -> ApiError {
    ApiError(OpError::Unavailable(format!(
        "internal error: unexpected answer {reply:?}"
    )))
}

/// An op forwarded by another manager: served only by the leader.
async fn op(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(op): Json<Op>,
) -> Result<Json<OpReply>, ApiError> {
    let caller = manager_caller(&shared, &peer).await?;
    if let Op::Leave { node_id } = &op {
        if *node_id != caller.node_id {
            return Err(OpError::Forbidden(format!(
                "permission denied: manager {} may only take itself out of the swarm, not {node_id}",
                caller.node_id
            ))
            .into());
        }
    }
    let raft = shared
        .raft()
        .await
        .ok_or_else(|| OpError::Unavailable("this node is no longer a manager".into()))?;
    let m = raft.metrics();
    if m.leader_id != Some(m.node_id) {
        return Err(OpError::Unavailable("this manager is not the leader".into()).into());
    }
    Ok(Json(shared.execute(&raft, op).await?))
}

async fn raft_or_refuse(
    shared: &Shared,
    peer: &PeerCerts,
) -> Result<shoal_consensus::Consensus<ClusterState>, ApiError> {
    manager_caller(shared, peer).await?;
    shared
        .raft()
        .await
        .ok_or_else(|| ApiError(OpError::Unavailable("this node is not a manager".into())))
}

async fn raft_append(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(req): Json<AppendEntriesRequest<ClusterState>>,
) -> Result<Json<AppendEntriesReply>, ApiError> {
    let raft = raft_or_refuse(&shared, &peer).await?;
    Ok(Json(raft.handle_append_entries(req).await))
}

async fn raft_vote(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(req): Json<VoteRequest>,
) -> Result<Json<VoteReply>, ApiError> {
    let raft = raft_or_refuse(&shared, &peer).await?;
    Ok(Json(raft.handle_vote(req).await))
}

async fn raft_snapshot(
    State(shared): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    Json(req): Json<InstallSnapshotRequest<ClusterState>>,
) -> Result<Json<InstallSnapshotReply>, ApiError> {
    let raft = raft_or_refuse(&shared, &peer).await?;
    Ok(Json(raft.handle_install_snapshot(req).await))
}

/// Raft's outgoing RPCs, over the manager API with this node's certificate.
pub(crate) struct RaftTransport {
    shared: Arc<Shared>,
}

impl RaftTransport {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RaftTransport { shared }
    }

    async fn call<B, R>(
        &self,
        target: NodeId,
        addr: &str,
        path: &str,
        body: &B,
    ) -> Result<R, TransportError>
    where
        B: serde::Serialize,
        R: serde::de::DeserializeOwned,
    {
        let unreachable = |reason: String| TransportError::Unreachable {
            target,
            addr: addr.to_string(),
            reason,
        };
        let sock: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| unreachable(format!("bad address: {e}")))?;
        let client = self
            .shared
            .client
            .read()
            .await
            .clone()
            .ok_or_else(|| unreachable("this node has no identity".into()))?;
        client.post(sock, path, body).await.map_err(|e| match e {
            CallError::Unreachable { reason, .. } => unreachable(reason),
            other => TransportError::Network {
                target,
                addr: addr.to_string(),
                reason: other.to_string(),
            },
        })
    }
}

impl Transport<ClusterState> for RaftTransport {
    fn append_entries<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: AppendEntriesRequest<ClusterState>,
    ) -> RpcFuture<'a, AppendEntriesReply> {
        Box::pin(async move { self.call(target, addr, "/raft/append", &req).await })
    }

    fn vote<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: VoteRequest,
    ) -> RpcFuture<'a, VoteReply> {
        Box::pin(async move { self.call(target, addr, "/raft/vote", &req).await })
    }

    fn install_snapshot<'a>(
        &'a self,
        target: NodeId,
        addr: &'a str,
        req: InstallSnapshotRequest<ClusterState>,
    ) -> RpcFuture<'a, InstallSnapshotReply> {
        Box::pin(async move { self.call(target, addr, "/raft/snapshot", &req).await })
    }
}
