//! The swarm part of the daemon's local API (HTTP on its Unix socket), for
//! the CLI.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/swarm` | this node's standing ([`SwarmInfo`]) |
//! | POST | `/v1/swarm/init` | `swarm init` ([`InitRequest`]) |
//! | POST | `/v1/swarm/join` | `swarm join` ([`JoinOptions`]) |
//! | POST | `/v1/swarm/leave` | `swarm leave` (`{"force": bool}`) |
//! | POST | `/v1/swarm/op` | a cluster op (`node ls`, `node update`, `network create`, `secret ls`, `swarm join-token`, ...) |

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::ops::{Op, OpError, OpReply};
use crate::server::ApiError;
use crate::state::Role;
use crate::swarm::{InitReply, InitRequest, JoinOptions, Swarm, SwarmInfo};
use crate::views::NOT_IN_SWARM;

/// The router of the swarm routes.
pub fn router(swarm: Arc<Swarm>) -> Router {
    Router::new()
        .route("/v1/swarm", get(info))
        .route("/v1/swarm/init", post(init))
        .route("/v1/swarm/join", post(join))
        .route("/v1/swarm/leave", post(leave))
        .route("/v1/swarm/op", post(op))
        .with_state(swarm)
}

async fn info(State(swarm): State<Arc<Swarm>>) -> Result<Json<SwarmInfo>, ApiError> {
    swarm
        .info()
        .await
        .map(Json)
        .ok_or_else(|| ApiError(OpError::Unavailable(NOT_IN_SWARM.into())))
}

async fn init(
    State(swarm): State<Arc<Swarm>>,
    Json(req): Json<InitRequest>,
) -> Result<Json<InitReply>, ApiError> {
    Ok(Json(swarm.init(req).await?))
}

/// What `swarm join` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Joined {
    /// The role the token gave.
    pub role: Role,
}

async fn join(
    State(swarm): State<Arc<Swarm>>,
    Json(req): Json<JoinOptions>,
) -> Result<Json<Joined>, ApiError> {
    Ok(Json(Joined {
        role: swarm.join(req).await?,
    }))
}

/// The body of `POST /v1/swarm/leave`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Leave even as a manager.
    #[serde(default)]
    pub force: bool,
}

/// The answer to `POST /v1/swarm/leave`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Left {
    /// Set when the node left but something did not happen on the way out
    /// (a manager that the others could not take out of the Raft group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

async fn leave(
    State(swarm): State<Arc<Swarm>>,
    Json(req): Json<LeaveRequest>,
) -> Result<Json<Left>, ApiError> {
    let warning = swarm.leave(req.force).await?;
    Ok(Json(Left { warning }))
}

async fn op(
    State(swarm): State<Arc<Swarm>>,
    Json(op): Json<Op>,
) -> Result<Json<OpReply>, ApiError> {
    match op {
        Op::Join(_)
        | Op::Heartbeat { .. }
        | Op::Renew { .. }
        | Op::Leave { .. }
        | Op::Assignments { .. }
        | Op::ReportTasks { .. }
        | Op::Attach { .. }
        | Op::Detach { .. }
        | Op::PushLogs { .. } => Err(ApiError(OpError::Invalid(
            "this op is for nodes talking to managers, not for the CLI".into(),
        ))),
        op => Ok(Json(swarm.op(op).await?)),
    }
}
