//! The replicated cluster state and the commands that change it.
//!
//! Every change to the cluster is a [`Command`] that the leader proposes to Raft;
//! once committed, every manager applies it with [`ClusterState::apply`]. The
//! function is pure and deterministic: it reads no clock and no randomness (the
//! leader puts times, ids and key material into the command before proposing),
//! so all managers reach the same state. A command that breaks a rule is still
//! committed but changes nothing; its [`Outcome`] carries the refusal, with the
//! words Docker uses where Docker has words for it.
//!
//! The state holds the cluster, its nodes, its overlay networks (with the
//! address management that gives them subnets and VNIs, in [`network`]),
//! its secrets ([`secret`]), and its services and their tasks ([`service`],
//! placed by the pure [`orchestrator`] and [`scheduler`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub mod attachment;
pub mod constraint;
pub mod network;
pub mod orchestrator;
pub mod scheduler;
pub mod secret;
pub mod service;
pub mod task;
pub mod update;

pub use attachment::{attachment_key, Attachment};
pub use network::{
    AddressPool, Network, NetworkDriver, NetworkSpec, PoolError, FIRST_VNI, INGRESS_NAME, MAX_VNI,
};
pub use secret::{Secret, SecretData, SecretSpec, MAX_SECRET_SIZE};
pub use service::{Service, ServiceMode, ServiceSpec, Task, TaskId, TaskState, TaskStatus};
pub use task::{TaskNetwork, TaskUpdate};

/// A node id: 25 lower-case base-36 characters, like Docker's.
pub type NodeId = String;

/// Seconds since the Unix epoch, as the leader saw them when it proposed.
pub type Timestamp = u64;

/// How many network or gossip keys the cluster keeps (Docker keeps 3).
pub const KEPT_KEYS: usize = 3;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes part in Raft and serves the manager API.
    Manager,
    /// Runs tasks only.
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

/// Whether the scheduler may place tasks on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed.
    #[default]
    Active,
    /// Running tasks stay; no new ones.
    Pause,
    /// Tasks move elsewhere.
    Drain,
}

impl std::str::FromStr for Availability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            other => Err(format!(
                "invalid availability {other:?}: use active, pause or drain"
            )),
        }
    }
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Availability::Active => "Active",
            Availability::Pause => "Pause",
            Availability::Drain => "Drain",
        })
    }
}

/// A node's health as the managers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Joined, no heartbeat yet.
    #[default]
    Unknown,
    /// Heartbeating.
    Ready,
    /// Missed its heartbeats.
    Down,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeStatus::Unknown => "Unknown",
            NodeStatus::Ready => "Ready",
            NodeStatus::Down => "Down",
        })
    }
}

/// One node of the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its hostname, as it reported it.
    pub hostname: String,
    /// Manager or worker.
    pub role: Role,
    /// Scheduling availability.
    pub availability: Availability,
    /// User labels (`node update --label-add`).
    pub labels: BTreeMap<String, String>,
    /// The address other nodes reach it at (`--advertise-addr`).
    pub addr: IpAddr,
    /// Where its manager API listens (or would, once promoted).
    pub api_addr: Option<SocketAddr>,
    /// Its member id in the Raft group while it is a manager.
    pub raft_id: Option<u64>,
    /// Health.
    pub status: NodeStatus,
    /// Why the status is what it is ("heartbeat failure" and the like).
    pub status_message: String,
    /// When it joined.
    pub created_at: Timestamp,
    /// When anything about it last changed.
    pub updated_at: Timestamp,
    /// Bumped on every change, for optimistic updates.
    pub version: u64,
    /// Its address on the ingress network: the routing mesh's connections
    /// to tasks leave from it (Docker's ingress sandbox). Given in `apply`.
    #[serde(default)]
    pub ingress_ip: Option<std::net::Ipv4Addr>,
    /// The container engine it runs tasks of `--image` services with
    /// (`Docker 20.10.24`), as its agent last reported; `None`: processes
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// A network or gossip key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterKey {
    /// Key id (1-255), carried in sealed frames.
    pub id: u8,
    /// 32 bytes, hex.
    pub secret: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// The join tokens (`SWMTKN-1-...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    /// Joins as a worker.
    pub worker: String,
    /// Joins as a manager.
    pub manager: String,
}

/// Cluster-wide settings (`swarm init` flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How often the leader rotates network and gossip keys.
    pub key_rotation_secs: u64,
    /// How long a node may go without heartbeat before it is marked Down.
    pub node_down_secs: u64,
    /// How often nodes heartbeat.
    pub heartbeat_secs: u64,
    /// How long node certificates live (`swarm init --cert-expiry`). Nodes
    /// renew theirs at a random point between 50% and 80% of it, as Docker
    /// does. States from before this setting read as Docker's 90 days.
    #[serde(default = "default_node_cert_secs")]
    pub node_cert_secs: u64,
}

/// Docker's default node certificate lifetime: 90 days.
pub const DEFAULT_NODE_CERT_SECS: u64 = 90 * 24 * 3600;

fn default_node_cert_secs() -> u64 {
    DEFAULT_NODE_CERT_SECS
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            key_rotation_secs: 12 * 3600,
            node_down_secs: 5,
            heartbeat_secs: 1,
            node_cert_secs: DEFAULT_NODE_CERT_SECS,
        }
    }
}

/// The swarm itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Its id.
    pub id: String,
    /// When `swarm init` ran.
    pub created_at: Timestamp,
    /// The root CA certificate (PEM).
    pub ca_cert: String,
    /// The root CA key (PEM). Replicated to managers only; never served.
    pub ca_key: String,
    /// The join tokens.
    pub tokens: JoinTokens,
    /// Network encryption keys, newest last; the newest seals.
    pub network_keys: Vec<ClusterKey>,
    /// Gossip keys, newest last.
    pub gossip_keys: Vec<ClusterKey>,
    /// When the keys were last rotated.
    pub keys_rotated_at: Timestamp,
    /// Settings.
    pub settings: ClusterSettings,
    /// Where networks without `--subnet` get theirs (`swarm init
    /// --default-addr-pool`). States from before networks existed read as
    /// Docker's default pool.
    #[serde(default)]
    pub address_pool: AddressPool,
}

/// What changes the cluster. The leader fills in times, ids and secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    /// `swarm init`: the cluster and its first manager.
    Init {
        /// The cluster.
        cluster: Box<Cluster>,
        /// The first manager.
        node: Box<Node>,
        /// The networks every swarm starts with (the ingress network).
        #[serde(default)]
        networks: Vec<Network>,
    },
    /// A node joined with a valid token.
    Join {
        /// The new node, as the leader built it.
        node: Box<Node>,
    },
    /// `swarm join-token --rotate`.
    RotateToken {
        /// Which token.
        role: Role,
        /// The new token.
        token: String,
    },
    /// `node update`.
    UpdateNode {
        /// The node (id, or a unique id prefix or hostname, resolved by the leader).
        id: NodeId,
        /// New availability.
        availability: Option<Availability>,
        /// Labels to add or change.
        label_add: BTreeMap<String, String>,
        /// Labels to remove.
        label_rm: Vec<String>,
        /// When.
        at: Timestamp,
    },
    /// `node promote` / `node demote`.
    SetRole {
        /// The node.
        id: NodeId,
        /// The new role.
        role: Role,
        /// Its Raft member id when it becomes a manager.
        raft_id: Option<u64>,
        /// When.
        at: Timestamp,
    },
    /// `node rm` (or a node leaving).
    RemoveNode {
        /// The node.
        id: NodeId,
        /// `--force`: remove although it is not down.
        force: bool,
    },
    /// `swarm leave --force` on a manager: it stops being a manager (so the
    /// leader takes it out of the Raft group and the remaining managers keep
    /// their quorum) and stays listed as a Down worker until `node rm`.
    Leave {
        /// The node.
        id: NodeId,
        /// When.
        at: Timestamp,
    },
    /// The leader's failure detector or a heartbeat changed a node's health.
    SetStatus {
        /// The node.
        id: NodeId,
        /// New status.
        status: NodeStatus,
        /// Why.
        message: String,
        /// When.
        at: Timestamp,
    },
    /// Key rotation: a new key becomes the sending key; at most [`KEPT_KEYS`] stay.
    RotateKeys {
        /// The new network key.
        network: ClusterKey,
        /// The new gossip key.
        gossip: ClusterKey,
        /// When.
        at: Timestamp,
    },
    /// `swarm init --force-new-cluster`: only this manager stays in the group.
    ForceNewCluster {
        /// The surviving manager.
        id: NodeId,
        /// Its (new) Raft member id.
        raft_id: u64,
        /// When.
        at: Timestamp,
    },
    /// `network create`, as the leader planned it ([`ClusterState::plan_network`]).
    CreateNetwork {
        /// The network, with its subnet and VNI allocated.
        network: Box<Network>,
    },
    /// `network rm`.
    RemoveNetwork {
        /// The network's id (resolved by the leader).
        id: String,
    },
    /// `secret create`.
    CreateSecret {
        /// The secret.
        secret: Box<Secret>,
    },
    /// `secret rm`.
    RemoveSecret {
        /// The secret's id (resolved by the leader).
        id: String,
    },
    /// `service create`, as the leader planned it ([`ClusterState::plan_service`]).
    CreateService {
        /// The service, with its networks resolved and its ports allocated.
        service: Box<Service>,
    },
    /// `service scale` (and, later, `service update`): a new spec.
    UpdateService {
        /// The service's id (resolved by the leader).
        id: String,
        /// The new spec, planned by the leader.
        spec: Box<ServiceSpec>,
        /// When.
        at: Timestamp,
        /// `--force`: replace the tasks even if nothing they run changed.
        #[serde(default)]
        force: bool,
        /// `service rollback`: the spec is the previous one.
        #[serde(default)]
        rollback: bool,
    },
    /// `service rm`: the service and its tasks.
    RemoveService {
        /// The service's id (resolved by the leader).
        id: String,
    },
    /// The orchestrator's and scheduler's decisions
    /// ([`orchestrator::reconcile`]): tasks made, placed or stopped, and
    /// tasks deleted.
    SetTasks {
        /// Tasks to add or replace, whole.
        tasks: Vec<Task>,
        /// Ids of tasks to delete.
        removed: Vec<TaskId>,
        /// Rolling updates that moved on (completed, paused), by service id.
        #[serde(default)]
        updates: Vec<(String, update::UpdateStatus)>,
        /// Services whose failed update rolls back to their previous spec.
        #[serde(default)]
        rollbacks: Vec<String>,
        /// When (for the rollbacks).
        #[serde(default)]
        at: Timestamp,
    },
    /// A node's agent reports the container engine it runs image tasks
    /// with (only when it changed).
    SetEngine {
        /// The node (from its certificate).
        id: NodeId,
        /// `Docker 20.10.24`, or `None` for none.
        engine: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// A node attaches a container to an attachable network (`docker run
    /// --network NET`); the address is given in `apply`.
    Attach {
        /// The node's id for it (the Docker endpoint id).
        id: String,
        /// The network's id.
        network: String,
        /// The node (from its certificate).
        node: NodeId,
        /// When.
        at: Timestamp,
    },
    /// A node detaches a container; detaching one that is gone succeeds.
    Detach {
        /// The node's id for it.
        id: String,
        /// The node (from its certificate).
        node: NodeId,
    },
    /// A node's agent reports what its tasks are doing.
    UpdateTaskStatus {
        /// The reporting node (from its certificate).
        node: NodeId,
        /// The reports.
        updates: Vec<TaskUpdate>,
    },
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// No `swarm init` yet.
    #[error("this node is not part of a swarm")]
    NoCluster,
    /// `swarm init` twice.
    #[error("this node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.")]
    AlreadyInitialised,
    /// Unknown node.
    #[error("node {0} not found")]
    NoSuchNode(NodeId),
    /// A join that reuses an id.
    #[error("node {0} is already a member of the swarm")]
    DuplicateNode(NodeId),
    /// `node rm` of a manager.
    #[error("node {0} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal")]
    RemoveManager(NodeId),
    /// `node rm` without `--force` of a node that is up.
    #[error("node {0} is not down and can't be removed")]
    NotDown(NodeId),
    /// Demoting the last manager.
    #[error("attempting to demote the last manager of the swarm")]
    LastManager,
    /// A label key that cannot be used.
    #[error("invalid label {0:?}: keys must be 1 to 128 characters without '=' or whitespace")]
    BadLabel(String),
    /// A key id that is not new.
    #[error("key id {0} is already in use; rotation needs a fresh id")]
    KeyIdInUse(u8),
    /// `network create -d bridge`.
    #[error("network driver {0:?} is not supported by shoal; use overlay")]
    UnsupportedDriver(String),
    /// A network name Docker would refuse.
    #[error("invalid network name {0:?}: use letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters (a network name must be valid as a DNS name component)")]
    BadNetworkName(String),
    /// A network name that is taken.
    #[error("network with name {0} already exists")]
    NetworkNameInUse(String),
    /// A network id that is taken (the leader drew an id twice).
    #[error("network id {0} is already in use")]
    NetworkIdInUse(String),
    /// Unknown network.
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    /// A driver option shoal does not know, or a bad value.
    #[error("invalid network option {0}")]
    BadNetworkOption(String),
    /// A subnet that cannot be a network's.
    #[error("invalid subnet {subnet}: {why}")]
    BadSubnet {
        /// The subnet.
        subnet: Ipv4Net,
        /// What is wrong with it.
        why: String,
    },
    /// A gateway that cannot be its subnet's.
    #[error("invalid gateway {gateway} for subnet {subnet}: {why}")]
    BadGateway {
        /// The gateway.
        gateway: Ipv4Addr,
        /// Its subnet.
        subnet: Ipv4Net,
        /// What is wrong with it.
        why: String,
    },
    /// `--gateway` without `--subnet`.
    #[error("a gateway needs its subnet: give --subnet together with --gateway")]
    GatewayWithoutSubnet,
    /// A subnet that shares addresses with another network's.
    #[error("subnet {subnet} overlaps network {network} ({other})")]
    SubnetOverlap {
        /// The subnet asked for.
        subnet: Ipv4Net,
        /// The network it overlaps.
        network: String,
        /// That network's subnet.
        other: Ipv4Net,
    },
    /// The default address pool has no free block left.
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network: every /{size} of the default address pool {pool} is taken (give --subnet, or remove a network)")]
    PoolExhausted {
        /// The pool.
        pool: Ipv4Net,
        /// Its block size.
        size: u8,
    },
    /// Every VXLAN id is taken.
    #[error("no VXLAN id is free: every one of {FIRST_VNI}-{MAX_VNI} is taken")]
    VniExhausted,
    /// A VXLAN id outside the swarm's range.
    #[error("VXLAN id {0} is out of range ({FIRST_VNI}-{MAX_VNI})")]
    VniOutOfRange(u32),
    /// A VXLAN id that another network has.
    #[error("VXLAN id {vni} is already used by network {network}")]
    VniInUse {
        /// The id.
        vni: u32,
        /// The network that has it.
        network: String,
    },
    /// A network attachment that cannot be made.
    #[error("{0}")]
    BadAttachment(String),
    /// A second ingress network.
    #[error("an ingress network ({0}) already exists; a swarm has at most one")]
    IngressExists(String),
    /// `network rm` of a network a service is attached to.
    #[error("network {network} is in use by service {}", .services.join(", "))]
    NetworkInUse {
        /// The network.
        network: String,
        /// The services attached.
        services: Vec<String>,
    },
    /// `network rm` of the ingress network while a service publishes ports.
    #[error("ingress network cannot be removed because service {} depends on it", .services.join(", "))]
    IngressInUse {
        /// The services publishing ports.
        services: Vec<String>,
    },
    /// A secret name swarmkit would refuse.
    #[error("invalid secret name {0:?}: only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]")]
    BadSecretName(String),
    /// A secret name that is taken.
    #[error("secret {0} already exists")]
    SecretNameInUse(String),
    /// A secret id that is taken (the leader drew an id twice).
    #[error("secret id {0} is already in use")]
    SecretIdInUse(String),
    /// Unknown secret.
    #[error("secret {0} not found")]
    NoSuchSecret(String),
    /// An empty or too large secret.
    #[error("secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes")]
    SecretSize,
    /// `secret rm` of a secret a service uses.
    #[error("secret '{secret}' is in use by the following service{}: {}", if .services.len() == 1 { "" } else { "s" }, .services.join(", "))]
    SecretInUse {
        /// The secret's name.
        secret: String,
        /// The services that use it.
        services: Vec<String>,
    },
    /// A service name Docker would refuse.
    #[error("invalid service name {0:?}: use letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters (a service name must be valid as a DNS name component)")]
    BadServiceName(String),
    /// A service name that is taken.
    #[error("service {0} already exists")]
    ServiceNameInUse(String),
    /// A service id that is taken (the leader drew an id twice).
    #[error("service id {0} is already in use")]
    ServiceIdInUse(String),
    /// Unknown service.
    #[error("service {0} not found")]
    NoSuchService(String),
    /// A spec value that cannot be used (named in the text).
    #[error("invalid service spec: {0}")]
    BadServiceSpec(String),
    /// An ingress port that another service publishes (Docker's words).
    #[error("port '{port}' is already in use by service '{service}' ({id}) as an ingress port")]
    PortInUse {
        /// The published port.
        port: u16,
        /// The service that has it.
        service: String,
        /// Its id.
        id: String,
    },
    /// The same published port twice in one spec.
    #[error("port '{0}' is published more than once by this service")]
    PortPublishedTwice(u16),
    /// No free port left for an ingress port without `published=`.
    #[error("no free port left in the dynamic range 30000-32767 for an ingress port; give published= explicitly")]
    PortsExhausted,
    /// `--network ingress`.
    #[error("service cannot be explicitly attached to the ingress network \"{0}\"")]
    IngressAttach(String),
    /// An ingress-mode port on a DNS round-robin service (Docker's words).
    #[error("port published with ingress mode can't be used with dnsrr mode")]
    DnsrrWithIngress,
    /// `service scale` of a global service (Docker's words).
    #[error("{0}: scale can only be used with replicated or replicated-job mode")]
    ScaleGlobal(String),
    /// Tasks planned from a state that moved on (a failover, a service
    /// removed meanwhile); the next reconciliation plans again.
    #[error("stale task plan: {0}")]
    StaleTasks(String),
    /// A node reporting on a task placed elsewhere.
    #[error("node {node} may not report on task {task}: the task is not assigned to it")]
    NotYourTask {
        /// The node.
        node: NodeId,
        /// The task.
        task: TaskId,
    },
    /// A node reporting a state only managers set.
    #[error("a node cannot report task state {0:?}: nodes report states from accepted on")]
    BadTaskState(String),
}

/// The result of applying one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `None` when the command took effect.
    pub refused: Option<Refusal>,
}

impl Outcome {
    fn ok() -> Self {
        Outcome { refused: None }
    }

    fn refuse(r: Refusal) -> Self {
        Outcome { refused: Some(r) }
    }

    /// The refusal as an error.
    pub fn into_result(self) -> Result<(), Refusal> {
        self.refused.map_or(Ok(()), Err)
    }
}

/// Everything the managers replicate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The swarm, once initialised.
    pub cluster: Option<Cluster>,
    /// The nodes, by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// The overlay networks, by id. (`serde(default)`: states written before
    /// networks existed still load.)
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// The secrets, by id.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// The services, by id.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Every task of every service, live or kept as history, by id.
    #[serde(default)]
    pub tasks: BTreeMap<TaskId, Task>,
    /// Containers attached to attachable networks outside services, by
    /// [`attachment_key`].
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
}

fn valid_label_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 128 && !k.contains('=') && !k.contains(char::is_whitespace)
}

/// Finds an item by full id, then by name, then by unique id prefix: the
/// order Docker's CLI resolves nodes, networks and secrets in.
fn find_by_key<'a, T>(
    what: &str,
    key: &str,
    by_id: &'a BTreeMap<String, T>,
    name: fn(&T) -> &String,
) -> Result<&'a T, String> {
    if let Some(t) = by_id.get(key) {
        return Ok(t);
    }
    let named: Vec<&T> = by_id.values().filter(|t| name(t) == key).collect();
    match named.len() {
        0 => {}
        1 => return Ok(named[0]),
        n => return Err(format!("{what} {key} is ambiguous ({n} matches)")),
    }
    let prefixed: Vec<&T> = by_id
        .iter()
        .filter(|(id, _)| !key.is_empty() && id.starts_with(key))
        .map(|(_, t)| t)
        .collect();
    match prefixed.len() {
        0 => Err(format!("{what} {key} not found")),
        1 => Ok(prefixed[0]),
        n => Err(format!("{what} {key} is ambiguous ({n} matches)")),
    }
}

impl ClusterState {
    /// Applies a committed command.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        match self.try_apply(cmd) {
            Ok(()) => {
                self.assign_ingress_ips();
                Outcome::ok()
            }
            Err(r) => Outcome::refuse(r),
        }
    }

    /// The managers, in id order.
    pub fn managers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| n.role == Role::Manager)
    }

    /// Finds a node by full id, hostname or unique id prefix, like Docker.
    pub fn find_node(&self, key: &str) -> Result<&Node, String> {
        find_by_key("node", key, &self.nodes, |n| &n.hostname)
    }

    fn cluster_mut(&mut self) -> Result<&mut Cluster, Refusal> {
        self.cluster.as_mut().ok_or(Refusal::NoCluster)
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut Node, Refusal> {
        self.nodes
            .get_mut(id)
            .ok_or_else(|| Refusal::NoSuchNode(id.to_string()))
    }

    fn try_apply(&mut self, cmd: &Command) -> Result<(), Refusal> {
        match cmd {
            Command::Init {
                cluster,
                node,
                networks,
            } => {
                if self.cluster.is_some() {
                    return Err(Refusal::AlreadyInitialised);
                }
                // Checked on a copy: a refused network leaves no half-made swarm.
                let mut next = self.clone();
                next.cluster = Some((**cluster).clone());
                next.nodes.insert(node.id.clone(), (**node).clone());
                for network in networks {
                    next.check_network(network)?;
                    next.networks.insert(network.id.clone(), network.clone());
                }
                *self = next;
            }
            Command::Join { node } => {
                self.cluster_mut()?;
                if self.nodes.contains_key(&node.id) {
                    return Err(Refusal::DuplicateNode(node.id.clone()));
                }
                self.nodes.insert(node.id.clone(), (**node).clone());
            }
            Command::RotateToken { role, token } => {
                let tokens = &mut self.cluster_mut()?.tokens;
                match role {
                    Role::Worker => tokens.worker = token.clone(),
                    Role::Manager => tokens.manager = token.clone(),
                }
            }
            Command::UpdateNode {
                id,
                availability,
                label_add,
                label_rm,
                at,
            } => {
                if let Some(bad) = label_add
                    .keys()
                    .chain(label_rm.iter())
                    .find(|k| !valid_label_key(k))
                {
                    return Err(Refusal::BadLabel(bad.clone()));
                }
                let node = self.node_mut(id)?;
                if let Some(a) = availability {
                    node.availability = *a;
                }
                for k in label_rm {
                    node.labels.remove(k);
                }
                for (k, v) in label_add {
                    node.labels.insert(k.clone(), v.clone());
                }
                node.updated_at = *at;
                node.version += 1;
            }
            Command::SetRole {
                id,
                role,
                raft_id,
                at,
            } => {
                let current = self
                    .nodes
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchNode(id.clone()))?;
                if current.role == Role::Manager
                    && *role == Role::Worker
                    && self.managers().count() == 1
                {
                    return Err(Refusal::LastManager);
                }
                let node = self.node_mut(id)?;
                node.role = *role;
                node.raft_id = match role {
                    Role::Manager => raft_id.or(node.raft_id),
                    Role::Worker => None,
                };
                node.updated_at = *at;
                node.version += 1;
            }
            Command::RemoveNode { id, force } => {
                let node = self
                    .nodes
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchNode(id.clone()))?;
                if node.role == Role::Manager {
                    return Err(Refusal::RemoveManager(id.clone()));
                }
                if !force && node.status != NodeStatus::Down {
                    return Err(Refusal::NotDown(id.clone()));
                }
                self.nodes.remove(id);
                self.attachments.retain(|_, a| &a.node_id != id);
            }
            Command::Leave { id, at } => {
                let current = self
                    .nodes
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchNode(id.clone()))?;
                if current.role == Role::Manager && self.managers().count() == 1 {
                    return Err(Refusal::LastManager);
                }
                let node = self.node_mut(id)?;
                node.role = Role::Worker;
                node.raft_id = None;
                node.status = NodeStatus::Down;
                node.status_message = "node left the swarm".into();
                node.updated_at = *at;
                node.version += 1;
            }
            Command::SetEngine { id, engine, at } => {
                let node = self.node_mut(id)?;
                if node.engine != *engine {
                    node.engine = engine.clone();
                    node.updated_at = *at;
                    node.version += 1;
                }
            }
            Command::Attach {
                id,
                network,
                node,
                at,
            } => self.attach(id, network, node, *at)?,
            Command::Detach { id, node } => {
                self.attachments.remove(&attachment_key(node, id));
            }
            Command::SetStatus {
                id,
                status,
                message,
                at,
            } => {
                let node = self.node_mut(id)?;
                node.status = *status;
                node.status_message = message.clone();
                node.updated_at = *at;
                node.version += 1;
            }
            Command::RotateKeys {
                network,
                gossip,
                at,
            } => {
                let cluster = self.cluster_mut()?;
                if cluster.network_keys.iter().any(|k| k.id == network.id) {
                    return Err(Refusal::KeyIdInUse(network.id));
                }
                if cluster.gossip_keys.iter().any(|k| k.id == gossip.id) {
                    return Err(Refusal::KeyIdInUse(gossip.id));
                }
                for (keys, new) in [
                    (&mut cluster.network_keys, network),
                    (&mut cluster.gossip_keys, gossip),
                ] {
                    keys.push(new.clone());
                    let excess = keys.len().saturating_sub(KEPT_KEYS);
                    keys.drain(..excess);
                }
                cluster.keys_rotated_at = *at;
            }
            Command::ForceNewCluster { id, raft_id, at } => {
                self.cluster_mut()?;
                if !self.nodes.contains_key(id) {
                    return Err(Refusal::NoSuchNode(id.clone()));
                }
                for node in self.nodes.values_mut() {
                    if node.id == *id {
                        node.role = Role::Manager;
                        node.raft_id = Some(*raft_id);
                    } else if node.role == Role::Manager {
                        // The other managers are gone from the Raft group; they
                        // stay as (down) workers so their tasks can be moved.
                        node.role = Role::Worker;
                        node.raft_id = None;
                        node.status = NodeStatus::Down;
                        node.status_message = "removed by --force-new-cluster".into();
                    }
                    node.updated_at = *at;
                    node.version += 1;
                }
            }
            Command::CreateNetwork { network } => {
                self.cluster_mut()?;
                self.check_network(network)?;
                self.networks
                    .insert(network.id.clone(), (**network).clone());
            }
            Command::RemoveNetwork { id } => {
                let network = self
                    .networks
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchNetwork(id.clone()))?;
                let mut services = self.network_users(id);
                if !network.ingress {
                    services.extend(
                        self.network_attachments(id)
                            .map(|a| format!("(container attachment on node {})", a.node_id)),
                    );
                }
                if !services.is_empty() {
                    return Err(if network.ingress {
                        Refusal::IngressInUse { services }
                    } else {
                        Refusal::NetworkInUse {
                            network: network.name.clone(),
                            services,
                        }
                    });
                }
                self.networks.remove(id);
            }
            Command::CreateSecret { secret } => {
                self.cluster_mut()?;
                self.check_secret(secret)?;
                self.secrets.insert(secret.id.clone(), (**secret).clone());
            }
            Command::RemoveSecret { id } => {
                let secret = self
                    .secrets
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchSecret(id.clone()))?;
                let services = self.secret_users(id);
                if !services.is_empty() {
                    return Err(Refusal::SecretInUse {
                        secret: secret.name.clone(),
                        services,
                    });
                }
                self.secrets.remove(id);
            }
            Command::CreateService { service } => {
                self.cluster_mut()?;
                self.check_service(service)?;
                self.services
                    .insert(service.id.clone(), (**service).clone());
                self.assign_vips(&service.id);
            }
            Command::UpdateService {
                id,
                spec,
                at,
                force,
                rollback,
            } => {
                let current = self
                    .services
                    .get(id)
                    .ok_or_else(|| Refusal::NoSuchService(id.clone()))?;
                if spec.name != current.spec.name {
                    return Err(Refusal::BadServiceSpec(format!(
                        "a service cannot be renamed ({} to {})",
                        current.spec.name, spec.name
                    )));
                }
                self.check_spec(spec, id)?;
                let service = self.services.get_mut(id).expect("checked above");
                service.set_spec((**spec).clone(), *force, *rollback, *at);
                self.assign_vips(id);
            }
            Command::RemoveService { id } => {
                if self.services.remove(id).is_none() {
                    return Err(Refusal::NoSuchService(id.clone()));
                }
                self.tasks.retain(|_, t| t.service_id != *id);
            }
            Command::SetTasks {
                tasks,
                removed,
                updates,
                rollbacks,
                at,
            } => {
                self.set_tasks(tasks, removed)?;
                for (id, status) in updates {
                    if let Some(service) = self.services.get_mut(id) {
                        service.update_status = Some(status.clone());
                    }
                }
                for id in rollbacks {
                    if let Some(service) = self.services.get_mut(id) {
                        if let Some(previous) = service.previous_spec.clone() {
                            service.set_spec(previous, false, true, *at);
                        }
                    }
                    self.assign_vips(id);
                }
            }
            Command::UpdateTaskStatus { node, updates } => {
                self.update_task_status(node, updates)?
            }
        }
        Ok(())
    }

    /// The next key id after the newest key (1-255, wrapping past 255 to 1).
    pub fn next_key_id(keys: &[ClusterKey]) -> u8 {
        let last = keys.last().map_or(0, |k| k.id);
        if last == 255 {
            1
        } else {
            last + 1
        }
    }
}

#[cfg(test)]
mod tests;
