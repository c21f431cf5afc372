//! One node's part in a swarm: its identity, and when it is a manager, its
//! Raft node, its manager API and its leader duties.
//!
//! [`Swarm`] is what the daemon holds. `init`, `join` and `leave` change
//! which swarm the node is in; [`Swarm::op`] runs an [`Op`] for the CLI,
//! forwarding it to the leader when this manager is not the leader.
//!
//! The leader's duties run in [`leader`](crate::leader): failure detection
//! from heartbeats, key rotation and keeping the Raft membership equal to the
//! managers of the cluster state. Every node runs an [`agent`](crate::agent)
//! that heartbeats and follows its role.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use shoal_consensus::{Consensus, ConsensusConfig, ReadError, WriteError};
use tokio::sync::{watch, Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::identity::NodeFile;
use crate::net::{CallError, Client};
use crate::ops::{HeartbeatReply, JoinReply, JoinRequest, Op, OpError, OpReply, TokenReply};
use crate::state::{
    AddressPool, Cluster, ClusterKey, ClusterSettings, ClusterState, Command, JoinTokens, Node,
    NodeStatus, Outcome, Refusal, Role,
};
use crate::tls;
use crate::views::{NodeView, SecretView, NOT_A_MANAGER, NOT_IN_SWARM, NO_LEADER};

mod services;
mod tasks;

impl shoal_consensus::StateMachine for ClusterState {
    type Command = Command;
    type Response = Outcome;

    fn apply(&mut self, cmd: &Command) -> Outcome {
        ClusterState::apply(self, cmd)
    }
}

/// The replicated state's Raft handle.
pub type Raft = Consensus<ClusterState>;

/// How long an op waits for a leader to be elected before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(6);
/// How many lines of task output the leader keeps for `service logs`.
const LOG_LINES: usize = 100_000;
/// How long a call to another manager may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Node-level settings.
#[derive(Clone)]
pub struct SwarmConfig {
    /// Where the identity and the Raft store live.
    pub state_dir: PathBuf,
    /// This node's hostname, as `node ls` shows it.
    pub hostname: String,
    /// Raft timing.
    pub consensus: ConsensusConfig,
    /// Cluster settings used by `swarm init`.
    pub settings: ClusterSettings,
    /// The shortest `swarm init --cert-expiry` accepted: Docker's one hour
    /// ([`MIN_CERT_SECS`]). Only tests lower it (shoald reads the test-only
    /// `SHOAL_TEST_MIN_CERT_SECS`), to watch certificates renew in seconds.
    pub min_cert_secs: u64,
    /// Runs this node's tasks (`None`: the node runs none, e.g. in tests of
    /// the manager alone).
    pub runtime: Option<Arc<dyn shoal_runtime::Runtime>>,
    /// Attaches tasks to overlay networks (`None`: tasks with networks fail
    /// to start, saying so).
    pub attacher: Option<Arc<dyn crate::worker::NetworkAttacher>>,
    /// How long a task stays out of the rotation (load balancers, DNS)
    /// before it is sent SIGTERM, so that connections in flight finish
    /// and no new one picks it.
    pub drain_grace: Duration,
    /// The container engine this node runs `--image` tasks with, as the
    /// managers should see it (`Docker 20.10.24`); `None`: processes only.
    pub engine: Option<String>,
}

impl std::fmt::Debug for SwarmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmConfig")
            .field("state_dir", &self.state_dir)
            .field("hostname", &self.hostname)
            .field("consensus", &self.consensus)
            .field("settings", &self.settings)
            .field("min_cert_secs", &self.min_cert_secs)
            .field("runtime", &self.runtime.is_some())
            .field("attacher", &self.attacher.is_some())
            .field("drain_grace", &self.drain_grace)
            .field("engine", &self.engine)
            .finish()
    }
}

/// Docker's minimum node certificate lifetime: one hour.
pub const MIN_CERT_SECS: u64 = 3600;

/// How long a manager that leaves with `--force` waits for the others to
/// take it out of the Raft group before it leaves anyway.
const LEAVE_WAIT: Duration = Duration::from_secs(15);

/// Checks a `--cert-expiry` of `secs` against the shortest allowed, `min`.
pub fn check_cert_expiry(secs: u64, min: u64) -> Result<(), String> {
    if secs < min {
        return Err(format!(
            "invalid --cert-expiry {}: node certificates must live at least {}",
            go_duration(secs),
            go_duration(min)
        ));
    }
    Ok(())
}

/// Checks the timing settings a `swarm init` may choose: the heartbeat period
/// (`--dispatcher-heartbeat`, 1 s to 60 s), how long a silent node stays
/// Ready (`--node-down-timeout`, at least two heartbeat periods, so one late
/// heartbeat does not mark a node Down) and the key rotation interval
/// (`--key-rotation-interval`, at least a minute).
pub fn check_timings(s: &ClusterSettings) -> Result<(), String> {
    if !(1..=60).contains(&s.heartbeat_secs) {
        return Err(format!(
            "invalid --dispatcher-heartbeat {}: it must be between 1s and 1m0s",
            go_duration(s.heartbeat_secs)
        ));
    }
    if s.node_down_secs < 2 * s.heartbeat_secs {
        return Err(format!(
            "invalid --node-down-timeout {}: it must be at least two heartbeat periods ({})",
            go_duration(s.node_down_secs),
            go_duration(2 * s.heartbeat_secs)
        ));
    }
    if s.key_rotation_secs < 60 {
        return Err(format!(
            "invalid --key-rotation-interval {}: it must be at least 1m0s",
            go_duration(s.key_rotation_secs)
        ));
    }
    Ok(())
}

/// `secs` as Go prints a duration (`2160h0m0s`), the way Docker shows them.
pub fn go_duration(secs: u64) -> String {
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// `swarm init` options.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InitRequest {
    /// The address other nodes reach this one at.
    pub advertise_addr: IpAddr,
    /// Where the manager API listens (default `0.0.0.0:2377`).
    pub listen_addr: Option<SocketAddr>,
    /// Recover a one-manager cluster from this node's surviving state.
    #[serde(default)]
    pub force_new_cluster: bool,
    /// `--default-addr-pool`: where networks without `--subnet` get theirs
    /// (default 10.0.0.0/8).
    #[serde(default)]
    pub default_addr_pool: Option<Ipv4Net>,
    /// `--default-addr-pool-mask-length`: the size of those subnets (default 24).
    #[serde(default)]
    pub subnet_size: Option<u8>,
    /// `--cert-expiry`: how long node certificates live, in seconds
    /// (default 90 days, at least one hour).
    #[serde(default)]
    pub cert_expiry_secs: Option<u64>,
    /// `--dispatcher-heartbeat`: seconds between a node's heartbeats (default 1).
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// `--node-down-timeout`: seconds without a heartbeat before a node is
    /// Down (default 5).
    #[serde(default)]
    pub node_down_secs: Option<u64>,
    /// `--key-rotation-interval`: seconds between network and gossip key
    /// rotations (default 12 h).
    #[serde(default)]
    pub key_rotation_secs: Option<u64>,
}

/// `swarm join` options.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinOptions {
    /// The token.
    pub token: String,
    /// A manager's API address.
    pub remote: SocketAddr,
    /// The address other nodes reach this one at.
    pub advertise_addr: IpAddr,
    /// Where this node's manager API would listen (default `0.0.0.0:2377`).
    pub listen_addr: Option<SocketAddr>,
}

/// What `swarm init` answers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InitReply {
    /// This node's id.
    pub node_id: String,
    /// The worker join token.
    pub worker_token: String,
    /// The address to join at.
    pub manager: SocketAddr,
}

/// This node's standing, for `shoal swarm` commands and `info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SwarmInfo {
    /// This node's id.
    pub node_id: String,
    /// The swarm's id.
    pub cluster_id: String,
    /// Its role.
    pub role: Role,
    /// The address it advertises.
    pub addr: IpAddr,
    /// Its manager API address (for managers, the join address to print).
    pub manager_addr: SocketAddr,
    /// Known managers.
    pub managers: Vec<SocketAddr>,
    /// Managers only: this node's Raft member id.
    pub raft_id: Option<u64>,
    /// Managers only: the Raft leader this manager knows of.
    pub raft_leader: Option<u64>,
    /// Managers only: the voting members.
    pub raft_voters: Vec<u64>,
}

/// The parts of a running manager.
pub(crate) struct ManagerParts {
    pub(crate) raft: Raft,
    /// The manager API's TLS configuration; replaced when the certificate is.
    server_tls: watch::Sender<Arc<rustls::ServerConfig>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// State shared by the server, the agent and the leader loop.
pub(crate) struct Shared {
    pub(crate) config: SwarmConfig,
    pub(crate) node: RwLock<Option<NodeFile>>,
    pub(crate) manager: RwLock<Option<ManagerParts>>,
    /// Mutual-TLS client with this node's identity.
    pub(crate) client: RwLock<Option<Client>>,
    /// Leader only: when each node was last heard from.
    pub(crate) last_seen: StdMutex<HashMap<String, Instant>>,
    /// Leader only: held from reading the state to committing a network, so
    /// this leader never plans two networks from the same state (the apply
    /// would refuse the second one's subnet or VNI as taken).
    allocating: Mutex<()>,
    /// Leader only: one reconciliation at a time (the tick's and the ops'),
    /// so no two plans are made from the same state.
    reconciling: Mutex<()>,
    /// Leader only: the recent output of tasks, for `service logs`.
    pub(crate) logs: StdMutex<crate::dispatch::LogStore>,
    /// The network keys from the last heartbeat, for the data plane.
    pub(crate) network_keys: StdMutex<Vec<ClusterKey>>,
    /// The gossip keys from the last heartbeat.
    pub(crate) gossip_keys: StdMutex<Vec<ClusterKey>>,
}

/// A node's membership in a swarm.
pub struct Swarm {
    pub(crate) shared: Arc<Shared>,
    /// Serialises init, join, leave and role changes.
    lifecycle: Mutex<()>,
    agent: StdMutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random id of `len` base-36 characters, like Docker's node ids.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; len];
    tls::fill_random(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % 36] as char)
        .collect()
}

fn random_raft_id() -> u64 {
    let mut b = [0u8; 8];
    tls::fill_random(&mut b);
    u64::from_be_bytes(b) >> 1 | 1
}

pub(crate) fn random_key(id: u8, at: u64) -> ClusterKey {
    let mut secret = [0u8; 32];
    tls::fill_random(&mut secret);
    ClusterKey {
        id,
        secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
        created_at: at,
    }
}

fn refused(out: Outcome) -> Result<(), OpError> {
    out.into_result().map_err(op_error)
}

/// The op error a refusal becomes: unknown things are not found, bad input
/// is invalid, the rest is a conflict with the cluster state.
fn op_error(r: Refusal) -> OpError {
    use Refusal::*;
    match r {
        NoSuchNode(_) | NoSuchNetwork(_) | NoSuchSecret(_) | NoSuchService(_) => {
            OpError::NotFound(r.to_string())
        }
        BadLabel(_)
        | UnsupportedDriver(_)
        | BadNetworkName(_)
        | BadNetworkOption(_)
        | BadSubnet { .. }
        | BadGateway { .. }
        | GatewayWithoutSubnet
        | BadSecretName(_)
        | SecretSize
        | BadServiceName(_)
        | BadServiceSpec(_)
        | IngressAttach(_)
        | DnsrrWithIngress
        | PortPublishedTwice(_)
        | ScaleGlobal(_) => OpError::Invalid(r.to_string()),
        _ => OpError::Refused(r.to_string()),
    }
}

fn default_listen(listen: Option<SocketAddr>) -> SocketAddr {
    listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 2377)))
}

/// The API address other nodes use: the advertised address and the listen port.
fn api_addr(node: &NodeFile) -> SocketAddr {
    SocketAddr::new(node.addr, node.listen.port())
}

impl Swarm {
    /// A node in no swarm yet, or (when `state_dir` holds an identity) the
    /// swarm it was in before a restart; call [`Swarm::resume`] next.
    pub fn new(config: SwarmConfig) -> Self {
        Swarm {
            shared: Arc::new(Shared {
                config,
                node: RwLock::new(None),
                manager: RwLock::new(None),
                client: RwLock::new(None),
                last_seen: StdMutex::new(HashMap::new()),
                allocating: Mutex::new(()),
                reconciling: Mutex::new(()),
                logs: StdMutex::new(crate::dispatch::LogStore::new(LOG_LINES)),
                network_keys: StdMutex::new(Vec::new()),
                gossip_keys: StdMutex::new(Vec::new()),
            }),
            lifecycle: Mutex::new(()),
            agent: StdMutex::new(None),
        }
    }

    /// Picks up the swarm this node was in before the daemon restarted.
    pub async fn resume(&self) -> Result<bool, OpError> {
        let _guard = self.lifecycle.lock().await;
        let Some(node) = NodeFile::load(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?
        else {
            return Ok(false);
        };
        self.activate(node, None).await?;
        Ok(true)
    }

    /// This node's standing, or `None` outside a swarm.
    pub async fn info(&self) -> Option<SwarmInfo> {
        let node = self.shared.node.read().await.clone()?;
        let metrics = self.shared.raft().await.map(|r| r.metrics());
        Some(SwarmInfo {
            raft_id: node.raft_id,
            raft_leader: metrics.as_ref().and_then(|m| m.leader_id),
            raft_voters: metrics
                .map(|m| m.voters.into_iter().collect())
                .unwrap_or_default(),
            node_id: node.node_id.clone(),
            cluster_id: node.cluster_id.clone(),
            role: node.role,
            addr: node.addr,
            manager_addr: api_addr(&node),
            managers: node.managers.clone(),
        })
    }

    /// `swarm init`.
    pub async fn init(&self, req: InitRequest) -> Result<InitReply, OpError> {
        let _guard = self.lifecycle.lock().await;
        let existing = NodeFile::load(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        if req.force_new_cluster {
            if req.default_addr_pool.is_some() || req.subnet_size.is_some() {
                return Err(OpError::Invalid(
                    "--default-addr-pool and --default-addr-pool-mask-length are for a new swarm; --force-new-cluster keeps the address pool of the swarm it restores".into(),
                ));
            }
            let named = [
                ("--cert-expiry", req.cert_expiry_secs),
                ("--dispatcher-heartbeat", req.heartbeat_secs),
                ("--node-down-timeout", req.node_down_secs),
                ("--key-rotation-interval", req.key_rotation_secs),
            ];
            if let Some((flag, _)) = named.iter().find(|(_, v)| v.is_some()) {
                return Err(OpError::Invalid(format!(
                    "{flag} is for a new swarm; --force-new-cluster keeps the settings of the swarm it restores"
                )));
            }
            return self.force_new_cluster(req, existing).await;
        }
        let default_pool = AddressPool::default();
        let address_pool = AddressPool::new(
            req.default_addr_pool.unwrap_or(default_pool.pool()),
            req.subnet_size.unwrap_or(default_pool.subnet_size()),
        )
        .map_err(|e| OpError::Invalid(e.to_string()))?;
        let mut settings = self.shared.config.settings.clone();
        if let Some(secs) = req.cert_expiry_secs {
            check_cert_expiry(secs, self.shared.config.min_cert_secs).map_err(OpError::Invalid)?;
            settings.node_cert_secs = secs;
        }
        settings.heartbeat_secs = req.heartbeat_secs.unwrap_or(settings.heartbeat_secs);
        settings.node_down_secs = req.node_down_secs.unwrap_or(settings.node_down_secs);
        settings.key_rotation_secs = req.key_rotation_secs.unwrap_or(settings.key_rotation_secs);
        check_timings(&settings).map_err(OpError::Invalid)?;
        if existing.is_some() || self.shared.node.read().await.is_some() {
            return Err(OpError::Refused(
                "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.".into(),
            ));
        }
        let now = now_secs();
        let ca = tls::ClusterCa::generate().map_err(OpError::Invalid)?;
        let cluster_id = random_id(25);
        let node_id = random_id(25);
        let raft_id = random_raft_id();
        let listen = default_listen(req.listen_addr);
        let key = tls::NodeKey::generate().map_err(OpError::Invalid)?;
        let cert_pem = ca
            .issue(
                &key.csr_pem(&node_id).map_err(OpError::Invalid)?,
                &node_id,
                Role::Manager,
                &cluster_id,
                settings.node_cert_secs,
            )
            .map_err(OpError::Invalid)?;
        let api = SocketAddr::new(req.advertise_addr, listen.port());
        let cluster = Cluster {
            id: cluster_id.clone(),
            created_at: now,
            ca_cert: ca.cert_pem(),
            ca_key: ca.key_pem(),
            tokens: JoinTokens {
                worker: tls::new_join_token(&ca),
                manager: tls::new_join_token(&ca),
            },
            network_keys: vec![random_key(1, now)],
            gossip_keys: vec![random_key(1, now)],
            keys_rotated_at: now,
            settings,
            address_pool,
        };
        let ingress = crate::state::network::initial_ingress(&cluster, random_id(25), now)
            .map_err(op_error)?;
        let worker_token = cluster.tokens.worker.clone();
        let node = Node {
            id: node_id.clone(),
            hostname: self.shared.config.hostname.clone(),
            role: Role::Manager,
            availability: Default::default(),
            labels: BTreeMap::new(),
            addr: req.advertise_addr,
            api_addr: Some(api),
            raft_id: Some(raft_id),
            status: NodeStatus::Ready,
            status_message: String::new(),
            created_at: now,
            updated_at: now,
            version: 1,
            ingress_ip: None,
            engine: self.shared.config.engine.clone(),
        };
        let file = NodeFile {
            node_id: node_id.clone(),
            cluster_id,
            role: Role::Manager,
            raft_id: Some(raft_id),
            addr: req.advertise_addr,
            listen,
            cert_pem,
            key_pem: key.key_pem(),
            ca_pem: ca.cert_pem(),
            managers: vec![api],
        };
        file.store(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        let init = Command::Init {
            cluster: Box::new(cluster),
            node: Box::new(node),
            networks: vec![ingress],
        };
        if let Err(e) = self.activate(file, Some(init)).await {
            let _ = self.stop_all().await;
            let _ = NodeFile::wipe(&self.shared.config.state_dir);
            return Err(e);
        }
        Ok(InitReply {
            node_id,
            worker_token,
            manager: api,
        })
    }

    async fn force_new_cluster(
        &self,
        req: InitRequest,
        existing: Option<NodeFile>,
    ) -> Result<InitReply, OpError> {
        let Some(mut file) = existing else {
            return Err(OpError::Invalid(format!(
                "--force-new-cluster needs the state of a former manager in {}, and there is none",
                self.shared.config.state_dir.display()
            )));
        };
        if file.role != Role::Manager {
            return Err(OpError::Invalid(
                "--force-new-cluster needs the state of a former manager; this node was a worker"
                    .into(),
            ));
        }
        self.stop_all().await;
        let raft_id = file.raft_id.unwrap_or_else(random_raft_id);
        file.raft_id = Some(raft_id);
        file.addr = req.advertise_addr;
        file.listen = default_listen(req.listen_addr.or(Some(file.listen)));
        let api = api_addr(&file);
        file.managers = vec![api];
        file.store(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        let dir = self.shared.config.state_dir.join("raft");
        let transport = Arc::new(crate::server::RaftTransport::new(self.shared.clone()));
        let raft = Consensus::force_new_cluster(
            &dir,
            raft_id,
            api.to_string(),
            self.shared.config.consensus.clone(),
            transport,
        )
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))?;
        // The lone voter elects itself after one election timeout; proposing
        // before that would only be told to find a leader.
        raft.wait_for_leader(LEADER_WAIT)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        self.start_with(file.clone(), raft).await?;
        let shared = self.shared.clone();
        let cmd = Command::ForceNewCluster {
            id: file.node_id.clone(),
            raft_id,
            at: now_secs(),
        };
        let reply = shared.propose(cmd).await;
        refused(reply?)?;
        let worker_token = shared
            .read_state(|s| s.cluster.as_ref().map(|c| c.tokens.worker.clone()))
            .await?
            .unwrap_or_default();
        Ok(InitReply {
            node_id: file.node_id,
            worker_token,
            manager: api,
        })
    }

    /// `swarm join`.
    pub async fn join(&self, opts: JoinOptions) -> Result<Role, OpError> {
        let _guard = self.lifecycle.lock().await;
        if self.shared.node.read().await.is_some() {
            return Err(OpError::Refused(
                "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.".into(),
            ));
        }
        let token = tls::parse_join_token(&opts.token).map_err(OpError::Invalid)?;
        let key = tls::NodeKey::generate().map_err(OpError::Invalid)?;
        let listen = default_listen(opts.listen_addr);
        let client = Client::new(
            tls::bootstrap_client_config(&token),
            crate::net::MANAGER_SERVER_NAME,
            CALL_TIMEOUT,
        );
        let req = JoinRequest {
            token: opts.token.clone(),
            // The manager names the node; the CSR only carries its key.
            csr: key.csr_pem("joining").map_err(OpError::Invalid)?,
            hostname: self.shared.config.hostname.clone(),
            addr: opts.advertise_addr,
            listen,
            engine: self.shared.config.engine.clone(),
        };
        let reply: JoinReply = match client.post(opts.remote, "/v1/join", &req).await {
            Ok(r) => r,
            Err(CallError::Refused { status, message }) => {
                return Err(OpError::from_status(status, message))
            }
            Err(e) => return Err(OpError::Unavailable(e.to_string())),
        };
        let file = NodeFile {
            node_id: reply.node_id,
            cluster_id: reply.cluster_id,
            role: reply.role,
            raft_id: reply.raft_id,
            addr: opts.advertise_addr,
            listen,
            cert_pem: reply.cert_pem,
            key_pem: key.key_pem(),
            ca_pem: reply.ca_pem,
            managers: reply.managers,
        };
        file.store(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        let role = file.role;
        if let Err(e) = self.activate(file, None).await {
            let _ = self.stop_all().await;
            let _ = crate::identity::NodeFile::wipe(&self.shared.config.state_dir);
            return Err(e);
        }
        Ok(role)
    }

    /// `swarm leave`. A manager (only with `force`) first asks the leader to
    /// take it out of the Raft group and mark it as left, so the remaining
    /// managers keep their quorum; when that cannot be done it still leaves
    /// (that is what `--force` means) and the answer is a warning saying why.
    pub async fn leave(&self, force: bool) -> Result<Option<String>, OpError> {
        let _guard = self.lifecycle.lock().await;
        let Some(node) = self.shared.node.read().await.clone() else {
            return Err(OpError::Refused("This node is not part of a swarm".into()));
        };
        if node.role == Role::Manager && !force {
            let managers = self
                .shared
                .read_state(|s| s.managers().count())
                .await
                .unwrap_or(1);
            let left = managers.saturating_sub(1);
            return Err(OpError::Refused(format!(
                "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves {left} managers out of {managers}. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."
            )));
        }
        let mut warning = None;
        if node.role == Role::Manager {
            // No heartbeat may mark this node Ready or follow the role the
            // leave gives it while it is leaving.
            self.stop_agent().await;
            if let Err(reason) = self.leave_raft(&node).await {
                tracing::warn!(%reason, "leaving without being taken out of the Raft group");
                warning = Some(format!(
                    "the other managers could not take this node out of the Raft group ({reason}); it still counts towards their quorum until it is demoted and removed with `shoal node demote` and `shoal node rm`"
                ));
            }
        }
        self.stop_all().await;
        NodeFile::wipe(&self.shared.config.state_dir)
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        Ok(warning)
    }

    /// Asks the leader (maybe this node) to take this manager out of the
    /// Raft group; nothing to do when it is the only member.
    async fn leave_raft(&self, node: &NodeFile) -> Result<(), String> {
        let Some(raft) = self.shared.raft().await else {
            return Ok(());
        };
        let m = raft.metrics();
        if m.voters.iter().all(|&v| v == m.node_id) {
            return Ok(());
        }
        let op = Op::Leave {
            node_id: node.node_id.clone(),
        };
        match tokio::time::timeout(LEAVE_WAIT, self.shared.run_op(op)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {}s; the remaining managers may have no quorum",
                LEAVE_WAIT.as_secs()
            )),
        }
    }

    async fn stop_agent(&self) {
        let agent = self.agent.lock().expect("agent lock").take();
        if let Some((stop, task)) = agent {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Runs an op for the local CLI: refused on workers and outside a swarm.
    pub async fn op(&self, op: Op) -> Result<OpReply, OpError> {
        match self.shared.node.read().await.as_ref() {
            None => return Err(OpError::Unavailable(NOT_IN_SWARM.into())),
            Some(n) if n.role != Role::Manager => {
                return Err(OpError::Forbidden(NOT_A_MANAGER.into()))
            }
            Some(_) => {}
        }
        self.shared.run_op(op).await
    }

    /// Asks the managers for an address for container endpoint `id` on the
    /// attachable network `network` (Docker's network attachment); asking
    /// again for the same id gives the same address.
    pub async fn attach_container(
        &self,
        network: &str,
        id: &str,
    ) -> Result<crate::ops::AttachReply, String> {
        let body = crate::server::AttachBody {
            id: id.to_string(),
            network: network.to_string(),
        };
        self.post_managers("/v1/attach", &body).await
    }

    /// Frees container endpoint `id`'s address (see
    /// [`attach_container`](Self::attach_container)).
    pub async fn detach_container(&self, id: &str) -> Result<(), String> {
        let body = crate::server::AttachBody {
            id: id.to_string(),
            network: String::new(),
        };
        self.post_managers("/v1/detach", &body).await
    }

    /// POSTs `body` to the managers in turn until one answers
    /// ([`Client::post_any`](crate::net::Client::post_any)).
    async fn post_managers<B, R>(&self, path: &str, body: &B) -> Result<R, String>
    where
        B: serde::Serialize + Sync,
        R: serde::de::DeserializeOwned,
    {
        let node = self.shared.node.read().await.clone().ok_or(NOT_IN_SWARM)?;
        let client = self
            .shared
            .client
            .read()
            .await
            .clone()
            .ok_or("no identity")?;
        let (_, reply) = client
            .post_any(&node.managers, 0, path, body)
            .await
            .map_err(|e| e.to_string())?;
        Ok(reply)
    }

    /// Stops everything (daemon shutdown); the identity stays for a restart.
    pub async fn shutdown(&self) {
        let _guard = self.lifecycle.lock().await;
        self.stop_all().await;
    }

    async fn stop_all(&self) {
        self.stop_agent().await;
        self.shared.stop_manager().await;
        *self.shared.node.write().await = None;
        *self.shared.client.write().await = None;
    }

    /// Brings up a node from its identity: the client, and for a manager the
    /// Raft node and the API (proposing `init` first when given); then the agent.
    async fn activate(&self, node: NodeFile, init: Option<Command>) -> Result<(), OpError> {
        if node.role == Role::Manager {
            let raft = self.shared.open_raft(&node).await?;
            if let Some(cmd) = init {
                raft.initialize_single()
                    .await
                    .map_err(|e| OpError::Unavailable(e.to_string()))?;
                raft.wait_for_leader(LEADER_WAIT)
                    .await
                    .map_err(|e| OpError::Unavailable(e.to_string()))?;
                self.start_with(node, raft.clone()).await?;
                let out = raft
                    .write(cmd)
                    .await
                    .map_err(|e| OpError::Unavailable(e.to_string()))?;
                return refused(out);
            }
            self.start_with(node, raft).await
        } else {
            self.shared.set_node(node).await?;
            self.start_agent();
            Ok(())
        }
    }

    async fn start_with(&self, node: NodeFile, raft: Raft) -> Result<(), OpError> {
        self.shared.set_node(node.clone()).await?;
        self.shared.start_manager(&node, raft).await?;
        self.start_agent();
        Ok(())
    }

    fn start_agent(&self) {
        let (stop, rx) = watch::channel(false);
        let (a, w) = (self.shared.clone(), self.shared.clone());
        let rx2 = rx.clone();
        let task = tokio::spawn(async move {
            tokio::join!(crate::agent::run(a, rx), crate::worker::run(w, rx2));
        });
        if let Some((old, _)) = self.agent.lock().expect("agent lock").replace((stop, task)) {
            let _ = old.send(true);
        }
    }
}

impl Shared {
    /// Adopts a (new) identity: its certificate for calls, its file in memory.
    pub(crate) async fn set_identity(&self, node: NodeFile) -> Result<(), String> {
        self.set_node(node).await.map_err(|e| e.to_string())
    }

    /// Adopts a renewed certificate: new calls and, on a manager, new
    /// connections to its API use it; connections already open finish with
    /// the old one (it stays valid until its own expiry).
    pub(crate) async fn adopt_certificate(&self, node: NodeFile) -> Result<(), String> {
        if let Some(parts) = self.manager.read().await.as_ref() {
            parts.server_tls.send_replace(tls::server_config(&node)?);
        }
        self.set_identity(node).await
    }

    async fn set_node(&self, node: NodeFile) -> Result<(), OpError> {
        let tls = tls::client_config(&node).map_err(OpError::Invalid)?;
        *self.client.write().await = Some(Client::new(
            tls,
            crate::net::MANAGER_SERVER_NAME,
            CALL_TIMEOUT,
        ));
        *self.node.write().await = Some(node);
        Ok(())
    }

    pub(crate) async fn open_raft(self: &Arc<Self>, node: &NodeFile) -> Result<Raft, OpError> {
        let raft_id = node
            .raft_id
            .ok_or_else(|| OpError::Invalid("a manager identity without a Raft id".into()))?;
        let transport = Arc::new(crate::server::RaftTransport::new(self.clone()));
        Consensus::open(
            &self.config.state_dir.join("raft"),
            raft_id,
            api_addr(node).to_string(),
            self.config.consensus.clone(),
            transport,
        )
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))
    }

    /// Starts the manager API and the leader loop around `raft`.
    pub(crate) async fn start_manager(
        self: &Arc<Self>,
        node: &NodeFile,
        raft: Raft,
    ) -> Result<(), OpError> {
        let listener = tokio::net::TcpListener::bind(node.listen)
            .await
            .map_err(|e| {
                OpError::Unavailable(format!(
                    "cannot listen for the manager API on {}: {e}",
                    node.listen
                ))
            })?;
        let (server_tls, tls_rx) =
            watch::channel(tls::server_config(node).map_err(OpError::Invalid)?);
        let (stop, rx) = watch::channel(false);
        let router = crate::server::router(self.clone());
        let serve = tokio::spawn(crate::net::serve(listener, tls_rx, router, rx.clone()));
        let lead = tokio::spawn(crate::leader::run(self.clone(), rx));
        *self.manager.write().await = Some(ManagerParts {
            raft,
            server_tls,
            stop,
            tasks: vec![serve, lead],
        });
        Ok(())
    }

    pub(crate) async fn stop_manager(&self) {
        let parts = self.manager.write().await.take();
        if let Some(parts) = parts {
            let _ = parts.stop.send(true);
            for t in parts.tasks {
                let _ = t.await;
            }
            let _ = parts.raft.shutdown().await;
        }
    }

    pub(crate) async fn raft(&self) -> Option<Raft> {
        self.manager.read().await.as_ref().map(|m| m.raft.clone())
    }

    /// Reads the local copy of the state (managers only).
    pub(crate) async fn read_state<T>(
        &self,
        f: impl FnOnce(&ClusterState) -> T,
    ) -> Result<T, OpError> {
        let raft = self
            .raft()
            .await
            .ok_or_else(|| OpError::Forbidden(NOT_A_MANAGER.into()))?;
        Ok(raft.read(f))
    }

    /// The leader's API address, waiting for an election if there is none.
    async fn leader(&self, raft: &Raft) -> Result<Option<SocketAddr>, OpError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let m = raft.metrics();
            if m.leader_id == Some(m.node_id) {
                return Ok(None);
            }
            if let Some(addr) = m.leader_addr.as_deref().and_then(|a| a.parse().ok()) {
                return Ok(Some(addr));
            }
            if Instant::now() >= deadline {
                return Err(OpError::Unavailable(NO_LEADER.into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `op` on the leader: here if this manager leads, else over the API.
    pub(crate) async fn run_op(self: &Arc<Self>, op: Op) -> Result<OpReply, OpError> {
        let raft = self
            .raft()
            .await
            .ok_or_else(|| OpError::Forbidden(NOT_A_MANAGER.into()))?;
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let result = match self.leader(&raft).await? {
                None => self.execute(&raft, op.clone()).await,
                Some(addr) => self.forward(addr, &op).await,
            };
            match result {
                // Leadership moved while the op was on its way: ask again.
                Err(OpError::Unavailable(m)) if Instant::now() < deadline => {
                    tracing::debug!(message = %m, "op not served; retrying on the current leader");
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward(&self, leader: SocketAddr, op: &Op) -> Result<OpReply, OpError> {
        let client = self
            .client
            .read()
            .await
            .clone()
            .ok_or_else(|| OpError::Unavailable(NOT_IN_SWARM.into()))?;
        client
            .post(leader, "/v1/op", op)
            .await
            .map_err(|e| match e {
                CallError::Refused { status, message } => OpError::from_status(status, message),
                other => OpError::Unavailable(other.to_string()),
            })
    }

    /// Proposes a command (forwarding to the leader when needed).
    pub(crate) async fn propose(self: &Arc<Self>, cmd: Command) -> Result<Outcome, OpError> {
        let raft = self
            .raft()
            .await
            .ok_or_else(|| OpError::Forbidden(NOT_A_MANAGER.into()))?;
        write(&raft, cmd).await
    }

    /// Executes an op; this manager must be the leader.
    pub(crate) async fn execute(&self, raft: &Raft, op: Op) -> Result<OpReply, OpError> {
        match op {
            Op::Nodes => {
                let (nodes, leader) = read_linear(raft, |s| s.nodes.clone()).await?;
                Ok(OpReply::Nodes(
                    nodes.values().map(|n| NodeView::of(n, leader)).collect(),
                ))
            }
            Op::Node { key } => {
                let (node, leader) = read_linear(raft, |s| s.find_node(&key).cloned()).await?;
                let node = node.map_err(OpError::NotFound)?;
                Ok(OpReply::Node(Box::new(NodeView::of(&node, leader))))
            }
            Op::UpdateNode {
                key,
                availability,
                label_add,
                label_rm,
            } => {
                let id = resolve(raft, &key)?;
                refused(
                    write(
                        raft,
                        Command::UpdateNode {
                            id: id.clone(),
                            availability,
                            label_add,
                            label_rm,
                            at: now_secs(),
                        },
                    )
                    .await?,
                )?;
                Ok(OpReply::Id(id))
            }
            Op::SetRole { key, role } => {
                let id = resolve(raft, &key)?;
                let raft_id = (role == Role::Manager).then(random_raft_id);
                refused(
                    write(
                        raft,
                        Command::SetRole {
                            id: id.clone(),
                            role,
                            raft_id,
                            at: now_secs(),
                        },
                    )
                    .await?,
                )?;
                Ok(OpReply::Id(id))
            }
            Op::RemoveNode { key, force } => {
                let id = resolve(raft, &key)?;
                refused(
                    write(
                        raft,
                        Command::RemoveNode {
                            id: id.clone(),
                            force,
                        },
                    )
                    .await?,
                )?;
                self.last_seen.lock().expect("last_seen").remove(&id);
                Ok(OpReply::Id(id))
            }
            Op::JoinToken { role, rotate } => {
                if rotate {
                    let ca = self.cluster_ca(raft)?;
                    let token = tls::new_join_token(&ca);
                    refused(write(raft, Command::RotateToken { role, token }).await?)?;
                }
                let (tokens, _) =
                    read_linear(raft, |s| s.cluster.as_ref().map(|c| c.tokens.clone())).await?;
                let tokens = tokens.ok_or_else(|| OpError::Unavailable(NOT_IN_SWARM.into()))?;
                let token = match role {
                    Role::Worker => tokens.worker,
                    Role::Manager => tokens.manager,
                };
                Ok(OpReply::Token(TokenReply { role, token }))
            }
            Op::Networks => {
                let (networks, _) =
                    read_linear(raft, |s| s.networks.values().cloned().collect()).await?;
                Ok(OpReply::Networks(networks))
            }
            Op::Network { key } => {
                let (network, _) = read_linear(raft, |s| s.find_network(&key).cloned()).await?;
                Ok(OpReply::Network(Box::new(
                    network.map_err(OpError::NotFound)?,
                )))
            }
            Op::CreateNetwork(spec) => {
                let _one_at_a_time = self.allocating.lock().await;
                let (planned, _) =
                    read_linear(raft, |s| s.plan_network(&spec, random_id(25), now_secs())).await?;
                let network = planned.map_err(op_error)?;
                let id = network.id.clone();
                refused(
                    write(
                        raft,
                        Command::CreateNetwork {
                            network: Box::new(network),
                        },
                    )
                    .await?,
                )?;
                Ok(OpReply::Id(id))
            }
            Op::RemoveNetwork { key } => {
                let (id, _) =
                    read_linear(raft, |s| s.find_network(&key).map(|n| n.id.clone())).await?;
                let id = id.map_err(OpError::NotFound)?;
                refused(write(raft, Command::RemoveNetwork { id: id.clone() }).await?)?;
                Ok(OpReply::Id(id))
            }
            Op::Secrets => {
                let (secrets, _) =
                    read_linear(raft, |s| s.secrets.values().map(SecretView::of).collect()).await?;
                Ok(OpReply::Secrets(secrets))
            }
            Op::Secret { key } => {
                let (secret, _) =
                    read_linear(raft, |s| s.find_secret(&key).map(SecretView::of)).await?;
                Ok(OpReply::Secret(Box::new(
                    secret.map_err(OpError::NotFound)?,
                )))
            }
            Op::CreateSecret(spec) => {
                let (planned, _) =
                    read_linear(raft, |s| s.plan_secret(&spec, random_id(25), now_secs())).await?;
                let secret = planned.map_err(op_error)?;
                let id = secret.id.clone();
                refused(
                    write(
                        raft,
                        Command::CreateSecret {
                            secret: Box::new(secret),
                        },
                    )
                    .await?,
                )?;
                Ok(OpReply::Id(id))
            }
            Op::RemoveSecret { key } => {
                let (id, _) =
                    read_linear(raft, |s| s.find_secret(&key).map(|n| n.id.clone())).await?;
                let id = id.map_err(OpError::NotFound)?;
                refused(write(raft, Command::RemoveSecret { id: id.clone() }).await?)?;
                Ok(OpReply::Id(id))
            }
            Op::Services
            | Op::Service { .. }
            | Op::CreateService(_)
            | Op::ScaleService { .. }
            | Op::UpdateService { .. }
            | Op::RollbackService { .. }
            | Op::RemoveService { .. }
            | Op::Tasks { .. } => self.execute_service(raft, op).await,
            Op::Assignments { .. }
            | Op::ReportTasks { .. }
            | Op::Attach { .. }
            | Op::Detach { .. }
            | Op::PushLogs { .. }
            | Op::Logs { .. } => self.execute_task(raft, op).await,
            Op::Join(req) => self.admit(raft, req).await,
            Op::Heartbeat { node_id, engine } => self.heartbeat(raft, node_id, engine).await,
            Op::Leave { node_id } => {
                let (raft_id, _) =
                    read_linear(raft, |s| s.nodes.get(&node_id).map(|n| n.raft_id)).await?;
                let raft_id = raft_id.ok_or_else(|| {
                    OpError::NotFound(format!("node {node_id} is not a member of this swarm"))
                })?;
                refused(
                    write(
                        raft,
                        Command::Leave {
                            id: node_id.clone(),
                            at: now_secs(),
                        },
                    )
                    .await?,
                )?;
                if let Some(id) = raft_id {
                    remove_member(raft, id).await?;
                }
                Ok(OpReply::Id(node_id))
            }
            Op::Renew { node_id, csr } => {
                let ca = self.cluster_ca(raft)?;
                let (node, _) = read_linear(raft, |s| s.nodes.get(&node_id).cloned()).await?;
                let node = node.ok_or_else(|| {
                    OpError::Forbidden(format!("node {node_id} is not a member of this swarm"))
                })?;
                let (cluster_id, lifetime) = raft.read(|s| {
                    s.cluster.as_ref().map_or((String::new(), 0), |c| {
                        (c.id.clone(), c.settings.node_cert_secs)
                    })
                });
                let cert = ca
                    .issue(&csr, &node_id, node.role, &cluster_id, lifetime)
                    .map_err(OpError::Invalid)?;
                Ok(OpReply::Certificate(cert))
            }
        }
    }

    fn cluster_ca(&self, raft: &Raft) -> Result<tls::ClusterCa, OpError> {
        let pems = raft.read(|s| {
            s.cluster
                .as_ref()
                .map(|c| (c.ca_cert.clone(), c.ca_key.clone()))
        });
        let (cert, key) = pems.ok_or_else(|| OpError::Unavailable(NOT_IN_SWARM.into()))?;
        tls::ClusterCa::from_pem(&cert, &key).map_err(OpError::Unavailable)
    }

    async fn admit(&self, raft: &Raft, req: JoinRequest) -> Result<OpReply, OpError> {
        let (cluster, _) = read_linear(raft, |s| s.cluster.clone()).await?;
        let cluster = cluster.ok_or_else(|| OpError::Unavailable(NOT_IN_SWARM.into()))?;
        let role = if tls::token_matches(&req.token, &cluster.tokens.manager) {
            Role::Manager
        } else if tls::token_matches(&req.token, &cluster.tokens.worker) {
            Role::Worker
        } else {
            return Err(OpError::Forbidden(
                "invalid join token: it is not this swarm's current worker or manager token (was it rotated?)".into(),
            ));
        };
        let ca = self.cluster_ca(raft)?;
        let node_id = random_id(25);
        let cert_pem = ca
            .issue(
                &req.csr,
                &node_id,
                role,
                &cluster.id,
                cluster.settings.node_cert_secs,
            )
            .map_err(OpError::Invalid)?;
        let now = now_secs();
        let raft_id = (role == Role::Manager).then(random_raft_id);
        let api = SocketAddr::new(req.addr, req.listen.port());
        let node = Node {
            id: node_id.clone(),
            hostname: req.hostname,
            role,
            availability: Default::default(),
            labels: BTreeMap::new(),
            addr: req.addr,
            // Kept for workers too: where its manager API listens once promoted.
            api_addr: Some(api),
            raft_id,
            status: NodeStatus::Ready,
            status_message: String::new(),
            created_at: now,
            updated_at: now,
            version: 1,
            ingress_ip: None,
            engine: req.engine,
        };
        refused(
            write(
                raft,
                Command::Join {
                    node: Box::new(node),
                },
            )
            .await?,
        )?;
        self.last_seen
            .lock()
            .expect("last_seen")
            .insert(node_id.clone(), Instant::now());
        let managers = raft.read(manager_addrs);
        Ok(OpReply::Joined(Box::new(JoinReply {
            node_id,
            cluster_id: cluster.id,
            role,
            raft_id,
            cert_pem,
            ca_pem: cluster.ca_cert,
            managers,
        })))
    }

    async fn heartbeat(
        &self,
        raft: &Raft,
        node_id: String,
        engine: Option<String>,
    ) -> Result<OpReply, OpError> {
        let node = raft.read(|s| s.nodes.get(&node_id).cloned());
        let node = node.ok_or_else(|| {
            OpError::Forbidden(format!(
                "node {node_id} is not a member of this swarm (was it removed?)"
            ))
        })?;
        self.last_seen
            .lock()
            .expect("last_seen")
            .insert(node_id.clone(), Instant::now());
        if node.status != NodeStatus::Ready {
            refused(
                write(
                    raft,
                    Command::SetStatus {
                        id: node_id.clone(),
                        status: NodeStatus::Ready,
                        message: String::new(),
                        at: now_secs(),
                    },
                )
                .await?,
            )?;
        }
        if node.engine != engine {
            refused(
                write(
                    raft,
                    Command::SetEngine {
                        id: node_id.clone(),
                        engine,
                        at: now_secs(),
                    },
                )
                .await?,
            )?;
        }
        let reply = raft.read(|s| {
            let c = s.cluster.as_ref();
            HeartbeatReply {
                role: node.role,
                raft_id: s.nodes.get(&node_id).and_then(|n| n.raft_id),
                managers: manager_addrs(s),
                network_keys: c.map(|c| c.network_keys.clone()).unwrap_or_default(),
                gossip_keys: c.map(|c| c.gossip_keys.clone()).unwrap_or_default(),
                heartbeat_secs: c.map_or(1, |c| c.settings.heartbeat_secs),
            }
        });
        Ok(OpReply::Heartbeat(Box::new(reply)))
    }
}

/// The API addresses of the managers in `s`.
pub(crate) fn manager_addrs(s: &ClusterState) -> Vec<SocketAddr> {
    s.managers().filter_map(|n| n.api_addr).collect()
}

fn resolve(raft: &Raft, key: &str) -> Result<String, OpError> {
    raft.read(|s| s.find_node(key).map(|n| n.id.clone()))
        .map_err(OpError::NotFound)
}

/// Takes Raft member `id` out of the group (the leader's reconcile loop may
/// be doing the same, so a refused change is retried until the membership
/// no longer names it). When `id` is this leader, openraft commits the change
/// with the remaining voters and the leader then steps down.
async fn remove_member(raft: &Raft, id: u64) -> Result<(), OpError> {
    let deadline = Instant::now() + LEAVE_WAIT;
    loop {
        let m = raft.metrics();
        if !m.voters.contains(&id) && !m.learners.contains(&id) {
            return Ok(());
        }
        let err = match raft.remove_node(id).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(OpError::Unavailable(format!(
                "cannot take Raft member {id} out of the group: {err}"
            )));
        }
        tracing::debug!(raft_id = id, error = %err, "Raft member not removed yet; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A linearizable read on the leader, with the leader's Raft id.
async fn read_linear<T>(
    raft: &Raft,
    f: impl FnOnce(&ClusterState) -> T,
) -> Result<(T, Option<u64>), OpError> {
    let value = raft.linearizable_read(f).await.map_err(|e| match e {
        ReadError::ForwardToLeader { .. } => OpError::Unavailable("leadership moved".into()),
        other => OpError::Unavailable(format!("{NO_LEADER} ({other})")),
    })?;
    Ok((value, raft.metrics().leader_id))
}

/// Commits a command on this (leading) manager.
async fn write(raft: &Raft, cmd: Command) -> Result<Outcome, OpError> {
    raft.write(cmd).await.map_err(|e| match e {
        WriteError::ForwardToLeader { .. } => OpError::Unavailable("leadership moved".into()),
        WriteError::Timeout(_) | WriteError::Interrupted => {
            OpError::Unavailable(format!("{NO_LEADER} ({e})"))
        }
        other => OpError::Unavailable(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_checked_and_name_the_flag() {
        let ok = ClusterSettings::default();
        assert_eq!(check_timings(&ok), Ok(()));
        let err = |s: ClusterSettings| check_timings(&s).unwrap_err();
        assert!(err(ClusterSettings {
            heartbeat_secs: 0,
            ..ok.clone()
        })
        .starts_with("invalid --dispatcher-heartbeat 0s"));
        assert!(err(ClusterSettings {
            heartbeat_secs: 61,
            ..ok.clone()
        })
        .contains("between 1s and 1m0s"));
        assert_eq!(
            err(ClusterSettings {
                heartbeat_secs: 3,
                node_down_secs: 5,
                ..ok.clone()
            }),
            "invalid --node-down-timeout 5s: it must be at least two heartbeat periods (6s)"
        );
        assert!(err(ClusterSettings {
            key_rotation_secs: 59,
            ..ok.clone()
        })
        .starts_with("invalid --key-rotation-interval 59s"));
        assert_eq!(
            check_timings(&ClusterSettings {
                heartbeat_secs: 2,
                node_down_secs: 4,
                key_rotation_secs: 60,
                ..ok
            }),
            Ok(())
        );
    }

    #[test]
    fn cert_expiry_below_the_minimum_is_refused_in_docker_words() {
        assert_eq!(check_cert_expiry(3600, MIN_CERT_SECS), Ok(()));
        assert_eq!(
            check_cert_expiry(3599, MIN_CERT_SECS).unwrap_err(),
            "invalid --cert-expiry 59m59s: node certificates must live at least 1h0m0s"
        );
        assert_eq!(check_cert_expiry(20, 10), Ok(()));
        assert_eq!(go_duration(90 * 86400), "2160h0m0s");
        assert_eq!(go_duration(5), "5s");
    }
}
