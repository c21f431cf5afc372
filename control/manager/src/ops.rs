//! The operations a manager serves, as they travel to the leader.
//!
//! Every request that reads or changes cluster state is an [`Op`]. A manager
//! that is not the Raft leader forwards the op to the leader over the
//! manager API (`POST /v1/op`, manager certificates only); the leader
//! executes it against its state and Raft. This gives the CLI on any manager
//! the same answers, and writes on any manager the same order.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::dispatch::{Assignments, ServiceLogLine, TaskLogLine};
use crate::state::update::ServiceChanges;
use crate::state::{
    Availability, ClusterKey, Network, NetworkSpec, Role, SecretSpec, ServiceSpec, TaskUpdate,
};
use crate::views::{NodeView, SecretView, ServiceView, TaskView};

/// A request to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// `node ls`.
    Nodes,
    /// `node inspect KEY`.
    Node {
        /// Id, id prefix or hostname.
        key: String,
    },
    /// `node update`.
    UpdateNode {
        /// Id, id prefix or hostname.
        key: String,
        /// `--availability`.
        availability: Option<Availability>,
        /// `--label-add k=v`.
        label_add: BTreeMap<String, String>,
        /// `--label-rm k`.
        label_rm: Vec<String>,
    },
    /// `node promote` / `node demote`.
    SetRole {
        /// Id, id prefix or hostname.
        key: String,
        /// The new role.
        role: Role,
    },
    /// `node rm`.
    RemoveNode {
        /// Id, id prefix or hostname.
        key: String,
        /// `--force`.
        force: bool,
    },
    /// `swarm join-token [--rotate] ROLE`.
    JoinToken {
        /// Which token.
        role: Role,
        /// Make a new one first.
        rotate: bool,
    },
    /// `network ls`.
    Networks,
    /// `network inspect KEY`.
    Network {
        /// Id, name or id prefix.
        key: String,
    },
    /// `network create`.
    CreateNetwork(Box<NetworkSpec>),
    /// `network rm`.
    RemoveNetwork {
        /// Id, name or id prefix.
        key: String,
    },
    /// `secret ls`.
    Secrets,
    /// `secret inspect KEY`.
    Secret {
        /// Id, name or id prefix.
        key: String,
    },
    /// `secret create`. The only op that carries a secret's bytes (to the
    /// leader); no reply carries them back.
    CreateSecret(Box<SecretSpec>),
    /// `secret rm`.
    RemoveSecret {
        /// Id, name or id prefix.
        key: String,
    },
    /// `service ls`.
    Services,
    /// `service inspect KEY`.
    Service {
        /// Id, name or id prefix.
        key: String,
    },
    /// `service create`: networks as the user named them, ports as given.
    CreateService(Box<ServiceSpec>),
    /// `service scale NAME=K`.
    ScaleService {
        /// Id, name or id prefix.
        key: String,
        /// The new number of replicas.
        replicas: u64,
    },
    /// `service update`.
    UpdateService {
        /// Id, name or id prefix.
        key: String,
        /// What to change.
        changes: Box<ServiceChanges>,
    },
    /// `service rollback`: back to the previous spec.
    RollbackService {
        /// Id, name or id prefix.
        key: String,
    },
    /// `service rm`.
    RemoveService {
        /// Id, name or id prefix.
        key: String,
    },
    /// `service ps SERVICE` (tasks of a service) or `node ps NODE` (tasks on
    /// a node); both may be given.
    Tasks {
        /// Service id, name or id prefix.
        service: Option<String>,
        /// Node id, hostname or id prefix.
        node: Option<String>,
    },
    /// A node joins with a token.
    Join(JoinRequest),
    /// A node is alive (the id comes from its certificate, never from the body).
    Heartbeat {
        /// The node.
        node_id: String,
        /// The container engine it runs image tasks with.
        #[serde(default)]
        engine: Option<String>,
    },
    /// A manager leaving with `swarm leave --force` asks to be taken out of
    /// the Raft group and marked as left (only for itself: the forwarding
    /// manager's certificate must name this node).
    Leave {
        /// The node.
        node_id: String,
    },
    /// A node's agent asks what to run (the id comes from its certificate).
    Assignments {
        /// The node.
        node_id: String,
    },
    /// A node's agent reports on its tasks.
    ReportTasks {
        /// The node (from its certificate).
        node_id: String,
        /// The reports.
        updates: Vec<TaskUpdate>,
    },
    /// A node attaches a container to an attachable network (the node from
    /// its certificate); the reply is the container's address.
    Attach {
        /// The node.
        node_id: String,
        /// The node's id for the container's endpoint.
        id: String,
        /// The network's id.
        network: String,
    },
    /// A node detaches a container.
    Detach {
        /// The node.
        node_id: String,
        /// The node's id for the container's endpoint.
        id: String,
    },
    /// A node's agent hands over what its tasks wrote.
    PushLogs {
        /// The node (from its certificate).
        node_id: String,
        /// The lines.
        lines: Vec<TaskLogLine>,
    },
    /// `service logs`: the lines after `since`.
    Logs {
        /// Service id, name or id prefix.
        service: String,
        /// The last line already seen (0: from the start).
        since: u64,
    },
    /// A node asks for a new certificate for its current role.
    Renew {
        /// The node (from its certificate).
        node_id: String,
        /// Its certificate signing request (PEM).
        csr: String,
    },
}

/// The body of `POST /v1/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token.
    pub token: String,
    /// The joining node's certificate signing request (PEM).
    pub csr: String,
    /// Its hostname.
    pub hostname: String,
    /// Its advertised address.
    pub addr: IpAddr,
    /// Where its manager API will listen, if it joins as a manager.
    pub listen: SocketAddr,
    /// The container engine it runs image tasks with.
    #[serde(default)]
    pub engine: Option<String>,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    /// The new node's id.
    pub node_id: String,
    /// The swarm's id.
    pub cluster_id: String,
    /// Its role (from the token).
    pub role: Role,
    /// Its Raft member id if a manager.
    pub raft_id: Option<u64>,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    /// The managers' API addresses.
    pub managers: Vec<SocketAddr>,
}

/// The answer to a heartbeat: what the node should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Its role in the cluster state.
    pub role: Role,
    /// Its Raft member id if a manager.
    pub raft_id: Option<u64>,
    /// The managers' API addresses.
    pub managers: Vec<SocketAddr>,
    /// The network encryption keys, newest last.
    pub network_keys: Vec<ClusterKey>,
    /// The gossip keys, newest last.
    pub gossip_keys: Vec<ClusterKey>,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
}

/// The answer to `swarm join-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReply {
    /// The role.
    pub role: Role,
    /// The token.
    pub token: String,
}

/// What an op returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum OpReply {
    /// Nodes.
    Nodes(Vec<NodeView>),
    /// One node.
    Node(Box<NodeView>),
    /// The id of the node, network or secret created or changed.
    Id(String),
    /// Networks.
    Networks(Vec<Network>),
    /// One network.
    Network(Box<Network>),
    /// Secrets, without their data.
    Secrets(Vec<SecretView>),
    /// One secret, without its data.
    Secret(Box<SecretView>),
    /// Services with their task counts.
    Services(Vec<ServiceView>),
    /// One service.
    Service(Box<ServiceView>),
    /// Tasks, by service and slot, newest first.
    Tasks(Vec<TaskView>),
    /// A join token.
    Token(TokenReply),
    /// A join.
    Joined(Box<JoinReply>),
    /// A heartbeat.
    Heartbeat(Box<HeartbeatReply>),
    /// A renewed certificate (PEM).
    Certificate(String),
    /// A node's assignments.
    Assignments(Box<Assignments>),
    /// Log lines, oldest first.
    Logs(Vec<ServiceLogLine>),
    /// Done, nothing to say.
    Done,
    /// A container's address on an attachable network.
    Attached(AttachReply),
}

/// Why an op failed; the message is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// The request is wrong (bad token, unknown flag value...).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The cluster state forbids it.
    #[error("{0}")]
    Refused(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No leader, no quorum, or the leader could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl OpError {
    /// The HTTP status that carries it.
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid(_) => 400,
            OpError::NotFound(_) => 404,
            OpError::Refused(_) => 409,
            OpError::Forbidden(_) => 403,
            OpError::Unavailable(_) => 503,
        }
    }

    /// Rebuilds the error from an HTTP status and message.
    pub fn from_status(status: u16, message: String) -> Self {
        match status {
            400 => OpError::Invalid(message),
            404 => OpError::NotFound(message),
            409 => OpError::Refused(message),
            403 => OpError::Forbidden(message),
            _ => OpError::Unavailable(message),
        }
    }
}

/// The answer to [`Op::Attach`]: the container's address and its network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachReply {
    /// The address.
    pub ip: std::net::Ipv4Addr,
    /// The network's prefix length.
    pub prefix_len: u8,
    /// The network's gateway.
    pub gateway: std::net::Ipv4Addr,
}
