//! Services and their tasks in the cluster state.
//!
//! A [`Service`] is what the user asked for (its [`ServiceSpec`]); a [`Task`]
//! is one replica of it (a slot of a replicated service, or one node's copy
//! of a global one) with where it was placed and what state it is in. The
//! leader turns a spec into a service with [`ClusterState::plan_service`]
//! (resolving network names to ids, allocating ingress ports that were left
//! open) and proposes it; `apply` checks it again with
//! [`ClusterState::check_service`], so two services racing for one published
//! port cannot both get it. Tasks are made and placed by the pure
//! orchestrator and scheduler ([`super::orchestrator`], [`super::scheduler`])
//! and committed as [`Command::SetTasks`](super::Command::SetTasks).
//!
//! The value parsers (ports, durations) live here, not in the CLI, so that the
//! manager and the CLI refuse the same inputs with the same words.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::constraint::Constraint;
use super::task::TaskNetwork;
use super::update::UpdateStatus;
use super::{ClusterState, NodeId, Refusal, Timestamp};

/// A task id: 25 lower-case base-36 characters.
pub type TaskId = String;

/// The range Docker allocates published ports from when none is given.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Replicated (a number of slots) or global (one task per eligible node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// `--replicas K`: slots 1 to K.
    Replicated {
        /// How many tasks should run.
        replicas: u64,
    },
    /// `--mode global`: a task on every node that may run it.
    Global,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

impl ServiceMode {
    /// "replicated" or "global", as `service ls` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
        }
    }
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("invalid protocol {other:?}: use tcp or udp")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// How a port is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// The routing mesh: every node answers on the port.
    #[default]
    Ingress,
    /// Only the node running the task, straight to it.
    Host,
}

impl std::str::FromStr for PublishMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingress" => Ok(PublishMode::Ingress),
            "host" => Ok(PublishMode::Host),
            other => Err(format!(
                "invalid publish mode {other:?}: use ingress or host"
            )),
        }
    }
}

impl std::fmt::Display for PublishMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        })
    }
}

/// One published port (`-p 5000:80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port inside the task.
    pub target: u16,
    /// The port on the nodes. `None` until the leader allocates one (ingress);
    /// a host-mode port without one is refused (no node picks one).
    pub published: Option<u16>,
    /// Routing mesh or host.
    pub mode: PublishMode,
    /// `proxy-protocol=v2`: the routing mesh starts each connection to a
    /// task with a PROXY protocol v2 header naming the client (TCP only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

impl std::fmt::Display for PortConfig {
    /// Docker's `service ls` form: `*:5000->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.published {
            Some(p) => write!(f, "*:{p}->{}/{}", self.target, self.protocol),
            None => write!(f, "*:0->{}/{}", self.target, self.protocol),
        }
    }
}

fn parse_port_number(what: &str, s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid {what} port {s:?} in --publish {whole:?}: use a number from 1 to 65535"
        )),
    }
}

impl std::str::FromStr for PortConfig {
    type Err = String;
    /// Docker's two syntaxes: `[PUBLISHED:]TARGET[/PROTOCOL]` and
    /// `published=P,target=T,protocol=tcp|udp,mode=ingress|host`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains('=') {
            let mut port = PortConfig {
                protocol: Protocol::Tcp,
                target: 0,
                published: None,
                mode: PublishMode::Ingress,
                proxy_protocol: false,
            };
            for field in s.split(',') {
                let (k, v) = field.split_once('=').ok_or_else(|| {
                    format!("invalid field {field:?} in --publish {s:?}: fields are key=value")
                })?;
                match k.trim() {
                    "published" => port.published = Some(parse_port_number("published", v, s)?),
                    "target" => port.target = parse_port_number("target", v, s)?,
                    "protocol" => {
                        port.protocol = v.parse().map_err(|e| format!("{e} in --publish {s:?}"))?
                    }
                    "mode" => {
                        port.mode = v.parse().map_err(|e| format!("{e} in --publish {s:?}"))?
                    }
                    "proxy-protocol" => {
                        port.proxy_protocol = match v.trim() {
                            "v2" => true,
                            "none" => false,
                            other => {
                                return Err(format!(
                                    "invalid proxy-protocol {other:?} in --publish {s:?}: use v2 or none"
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "invalid field {other:?} in --publish {s:?}: use published, target, protocol, mode and proxy-protocol"
                        ))
                    }
                }
            }
            if port.target == 0 {
                return Err(format!("--publish {s:?} has no target port (target=80)"));
            }
            if port.proxy_protocol && port.protocol != Protocol::Tcp {
                return Err(format!(
                    "--publish {s:?}: proxy-protocol=v2 is for TCP ports only"
                ));
            }
            if port.proxy_protocol && port.mode != PublishMode::Ingress {
                return Err(format!(
                    "--publish {s:?}: proxy-protocol=v2 is for ports published through the routing mesh (mode=ingress)"
                ));
            }
            return Ok(port);
        }
        let (ports, protocol) = match s.split_once('/') {
            Some((ports, proto)) => (
                ports,
                proto.parse().map_err(|e| format!("{e} in -p {s:?}"))?,
            ),
            None => (s, Protocol::Tcp),
        };
        if ports.contains('-') {
            return Err(format!(
                "port ranges are not supported yet in -p {s:?}: publish each port on its own"
            ));
        }
        let (published, target) = match ports.rsplit_once(':') {
            Some((published, target)) => {
                if published.contains(':') {
                    return Err(format!(
                        "-p {s:?}: a swarm publishes on every address; give PUBLISHED:TARGET without a host address"
                    ));
                }
                let published = if published.is_empty() {
                    None
                } else {
                    Some(parse_port_number("published", published, s)?)
                };
                (published, parse_port_number("target", target, s)?)
            }
            None => (None, parse_port_number("target", ports, s)?),
        };
        Ok(PortConfig {
            protocol,
            target,
            published,
            mode: PublishMode::Ingress,
            proxy_protocol: false,
        })
    }
}

/// When a task's process is restarted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never.
    None,
    /// When it exits with a non-zero code.
    OnFailure,
    /// Whenever it exits.
    #[default]
    Any,
}

impl std::str::FromStr for RestartCondition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(RestartCondition::None),
            "on-failure" => Ok(RestartCondition::OnFailure),
            "any" => Ok(RestartCondition::Any),
            other => Err(format!(
                "invalid restart condition {other:?}: use none, on-failure or any"
            )),
        }
    }
}

/// `--restart-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When.
    pub condition: RestartCondition,
    /// How long to wait between restarts, in nanoseconds (Docker's unit).
    pub delay_ns: u64,
    /// How many restarts before giving up (0: no limit).
    pub max_attempts: u64,
}

impl Default for RestartPolicy {
    /// Docker's: any, 5 s, no limit.
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ns: 5_000_000_000,
            max_attempts: 0,
        }
    }
}

/// Which goes first in a rolling update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The old task stops before the new one starts.
    #[default]
    StopFirst,
    /// The new task starts before the old one stops.
    StartFirst,
}

impl std::str::FromStr for UpdateOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop-first" => Ok(UpdateOrder::StopFirst),
            "start-first" => Ok(UpdateOrder::StartFirst),
            other => Err(format!(
                "invalid update order {other:?}: use stop-first or start-first"
            )),
        }
    }
}

/// What a failing rolling update does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating.
    #[default]
    Pause,
    /// Carry on.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

impl std::str::FromStr for FailureAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pause" => Ok(FailureAction::Pause),
            "continue" => Ok(FailureAction::Continue),
            "rollback" => Ok(FailureAction::Rollback),
            other => Err(format!(
                "invalid update failure action {other:?}: use pause, continue or rollback"
            )),
        }
    }
}

/// `--update-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// How many tasks are replaced at once (0: all).
    pub parallelism: u64,
    /// How long to wait between batches, in nanoseconds.
    pub delay_ns: u64,
    /// Stop-first or start-first.
    pub order: UpdateOrder,
    /// What to do when an update fails.
    pub failure_action: FailureAction,
    /// How long a new task must run before it counts as updated
    /// (`--update-monitor`), in nanoseconds; failing within it fails the
    /// update.
    #[serde(default = "default_monitor_ns")]
    pub monitor_ns: u64,
}

fn default_monitor_ns() -> u64 {
    5_000_000_000
}

impl Default for UpdateConfig {
    /// Docker's: one at a time, no delay, stop-first, pause, 5 s monitor.
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ns: 0,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor_ns: default_monitor_ns(),
        }
    }
}

/// How other tasks find the service's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual IP, load-balanced.
    #[default]
    Vip,
    /// DNS round robin over the tasks' addresses.
    Dnsrr,
}

impl std::str::FromStr for EndpointMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vip" => Ok(EndpointMode::Vip),
            "dnsrr" => Ok(EndpointMode::Dnsrr),
            other => Err(format!("invalid endpoint mode {other:?}: use vip or dnsrr")),
        }
    }
}

impl std::fmt::Display for EndpointMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        })
    }
}

/// What `service create` asks for. The name lives in the spec, as in
/// Docker's API, so that `service inspect` shows `Spec.Name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// `--name`.
    pub name: String,
    /// Replicated or global.
    #[serde(default)]
    pub mode: ServiceMode,
    /// `--image`: the tasks run as containers of this (local) image on
    /// nodes with a Docker engine; without it a task is a process of the
    /// node's filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The command and its arguments (for an image, empty means the
    /// image's own entrypoint and command).
    pub command: Vec<String>,
    /// `--env K=V`.
    #[serde(default)]
    pub env: Vec<String>,
    /// `--network`: network ids once planned (names or id prefixes as the
    /// user wrote them before).
    #[serde(default)]
    pub networks: Vec<String>,
    /// `--publish`.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// `--constraint`.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// `--replicas-max-per-node` (`None`: no limit).
    #[serde(default)]
    pub max_replicas_per_node: Option<u64>,
    /// `--restart-*`.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--update-*`.
    #[serde(default)]
    pub update: UpdateConfig,
    /// `--endpoint-mode`.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// `--label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--limit-cpu`, `--limit-memory`.
    #[serde(default)]
    pub limits: Limits,
}

/// A task's resource limits (cgroup v2 on its node, where present).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPUs in billionths (`--limit-cpu 0.5` is 500 000 000).
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    /// Bytes of memory.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

/// Parses Docker's `--limit-cpu` (a decimal number of CPUs, e.g. `0.5`).
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid CPU limit {s:?}: give a number of CPUs above 0, e.g. 0.5 or 2");
    let v: f64 = s.parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v > 1e6 {
        return Err(bad());
    }
    Ok((v * 1e9).round() as u64)
}

/// Parses Docker's memory sizes: bytes, or a number with b, k, m or g
/// (powers of 1024), e.g. `64m`; at least 6 MiB, as Docker asks.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid memory limit {s:?}: give a size like 64m, 1g or 536870912");
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|r| r.ends_with(['k', 'm', 'g']))
        .unwrap_or(&lower);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('b') => (&lower[..lower.len() - 1], 1),
        _ => (lower, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(format!(
            "invalid memory limit {s:?}: the minimum is 6m (6291456 bytes)"
        ));
    }
    Ok(bytes)
}

impl ServiceSpec {
    /// The ingress-mode ports that have a published port.
    pub fn ingress_ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress)
            .filter_map(|p| Some((p.protocol, p.published?)))
    }

    /// The host-mode ports with a fixed published port: two tasks that
    /// publish the same one cannot share a node.
    pub fn host_ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.mode == PublishMode::Host)
            .filter_map(|p| Some((p.protocol, p.published?)))
    }
}

/// A service of the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its id: 25 lower-case base-36 characters.
    pub id: String,
    /// What is asked for now.
    pub spec: ServiceSpec,
    /// Bumped on every change of the spec; tasks remember the version they
    /// were made from.
    pub version: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its spec last changed.
    pub updated_at: Timestamp,
    /// The spec before the last change (for `service rollback`).
    pub previous_spec: Option<ServiceSpec>,
    /// The version every task must come from: the last one that changed
    /// what tasks run (see [`super::update`]).
    #[serde(default)]
    pub redeploy_version: u64,
    /// Where the last rolling update stands.
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
    /// Its virtual IPs (endpoint mode `vip`): one per network it is on, the
    /// ingress network's first when it publishes through the routing mesh.
    /// Given by [`ClusterState::assign_vips`] when the state changes.
    #[serde(default)]
    pub vips: Vec<TaskNetwork>,
}

impl Service {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its virtual IP on network `network_id`, if it has one.
    pub fn vip(&self, network_id: &str) -> Option<std::net::Ipv4Addr> {
        self.vips
            .iter()
            .find(|v| v.network_id == network_id)
            .map(|v| v.ip)
    }
}

/// Swarm's task states, in the order a task goes through them. A task only
/// ever moves forward; everything after `Running` is an end.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Made by the orchestrator.
    #[default]
    New,
    /// Waiting for a node that can take it.
    Pending,
    /// Placed on a node by the scheduler.
    Assigned,
    /// The node took it.
    Accepted,
    /// The node is setting it up (namespaces, endpoints).
    Preparing,
    /// Set up, not started.
    Ready,
    /// Being started.
    Starting,
    /// Its process runs.
    Running,
    /// It exited with 0.
    Complete,
    /// It was stopped.
    Shutdown,
    /// It exited with an error or could not start.
    Failed,
    /// The node refused it.
    Rejected,
    /// It is being removed (its service is gone or scaled down).
    Remove,
    /// Its node is gone and it cannot be reached.
    Orphaned,
}

impl TaskState {
    /// Docker's name with a capital, as `service ps` prints states.
    pub fn title(&self) -> &'static str {
        match self {
            TaskState::New => "New",
            TaskState::Pending => "Pending",
            TaskState::Assigned => "Assigned",
            TaskState::Accepted => "Accepted",
            TaskState::Preparing => "Preparing",
            TaskState::Ready => "Ready",
            TaskState::Starting => "Starting",
            TaskState::Running => "Running",
            TaskState::Complete => "Complete",
            TaskState::Shutdown => "Shutdown",
            TaskState::Failed => "Failed",
            TaskState::Rejected => "Rejected",
            TaskState::Remove => "Remove",
            TaskState::Orphaned => "Orphaned",
        }
    }
}

/// Where a task is, as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// What happened ("scheduler assigned task to node").
    pub message: String,
    /// What went wrong, if anything ("no suitable node (...)").
    #[serde(default)]
    pub err: Option<String>,
    /// The process's exit code, once it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When the state was reached.
    pub timestamp: Timestamp,
}

/// One replica of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its service.
    pub service_id: String,
    /// Its slot (replicated services; `None` for global ones, whose tasks
    /// are known by their node).
    pub slot: Option<u64>,
    /// The node it is placed on (global tasks have it from the start).
    pub node_id: Option<NodeId>,
    /// What the managers want it to be: `Running`, or an end state.
    pub desired_state: TaskState,
    /// What it is.
    pub status: TaskStatus,
    /// The service version it was made from.
    pub spec_version: u64,
    /// When it was made.
    pub created_at: Timestamp,
    /// Its address on each of its networks, in the service's order (the
    /// ingress network first when the service publishes through it).
    #[serde(default)]
    pub networks: Vec<TaskNetwork>,
    /// How many tasks ran in its slot (or on its node) before it since the
    /// last spec change: the restart policy's attempts.
    #[serde(default)]
    pub restarts: u64,
}

impl Task {
    /// Whether the managers still want it to run (it counts for its slot or
    /// node, and for spread).
    pub fn is_live(&self) -> bool {
        self.desired_state <= TaskState::Running
    }

    /// Docker's task name without the id: `web.1` or `web.<node id>`.
    pub fn name(&self, service: &str) -> String {
        match (self.slot, &self.node_id) {
            (Some(slot), _) => format!("{service}.{slot}"),
            (None, Some(node)) => format!("{service}.{node}"),
            (None, None) => service.to_string(),
        }
    }
}

/// Parses a duration the way Docker's CLI does (Go's `time.ParseDuration`:
/// `5s`, `1m30s`, `250ms`, `1h`; a bare `0` is zero) into nanoseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid duration {s:?}: use a number with a unit (ns, us, ms, s, m, h), e.g. 5s or 1m30s")
    };
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number * scale;
        if !part.is_finite() || part > u64::MAX as f64 {
            return Err(bad());
        }
        total = total.checked_add(part as u64).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Nanoseconds the way Go prints a duration (`5s`, `1m30s`, `250ms`, `0s`).
pub fn format_duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        return if ns.is_multiple_of(1_000_000) {
            format!("{}ms", ns / 1_000_000)
        } else if ns.is_multiple_of(1000) {
            format!("{}µs", ns / 1000)
        } else {
            format!("{ns}ns")
        };
    }
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let f = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", f.trim_end_matches('0')));
    }
    out
}

/// Docker's rule for service names: letters and digits, with `-` or `_`
/// inside, at most 63 characters (they become DNS names).
fn valid_service_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

impl ClusterState {
    /// Turns a user's spec into a service: network names become ids, and
    /// ingress ports without a published port get the lowest free one of
    /// [`DYNAMIC_PORTS`]. The leader supplies the id and the time.
    pub fn plan_service(
        &self,
        spec: &ServiceSpec,
        id: String,
        at: Timestamp,
    ) -> Result<Service, Refusal> {
        self.cluster.as_ref().ok_or(Refusal::NoCluster)?;
        let spec = self.plan_spec(spec, Some(&id))?;
        let service = Service {
            id,
            spec,
            version: 1,
            created_at: at,
            updated_at: at,
            previous_spec: None,
            redeploy_version: 1,
            update_status: None,
            vips: Vec::new(),
        };
        self.check_service(&service)?;
        Ok(service)
    }

    /// Resolves networks and allocates ports of a spec for service `id`
    /// (whose own ports do not count as taken; `None` when no service is
    /// being changed).
    pub fn plan_spec(&self, spec: &ServiceSpec, id: Option<&str>) -> Result<ServiceSpec, Refusal> {
        let mut spec = spec.clone();
        let mut networks = Vec::new();
        for key in &spec.networks {
            let network = self
                .find_network(key)
                .map_err(|_| Refusal::NoSuchNetwork(key.clone()))?;
            if network.ingress {
                return Err(Refusal::IngressAttach(network.name.clone()));
            }
            if !networks.contains(&network.id) {
                networks.push(network.id.clone());
            }
        }
        spec.networks = networks;
        let mut used: BTreeSet<(Protocol, u16)> = self
            .services
            .values()
            .filter(|s| Some(s.id.as_str()) != id)
            .flat_map(|s| s.spec.ingress_ports().chain(s.spec.host_ports()))
            .chain(spec.ingress_ports())
            .chain(spec.host_ports())
            .collect();
        for port in spec
            .ports
            .iter_mut()
            .filter(|p| p.mode == PublishMode::Ingress && p.published.is_none())
        {
            let free = DYNAMIC_PORTS
                .clone()
                .find(|p| !used.contains(&(port.protocol, *p)))
                .ok_or(Refusal::PortsExhausted)?;
            port.published = Some(free);
            used.insert((port.protocol, free));
        }
        Ok(spec)
    }

    /// Whether `service` may join the state as it is.
    pub fn check_service(&self, service: &Service) -> Result<(), Refusal> {
        if self.services.contains_key(&service.id) {
            return Err(Refusal::ServiceIdInUse(service.id.clone()));
        }
        let name = service.name();
        if self.services.values().any(|s| s.name() == name) {
            return Err(Refusal::ServiceNameInUse(name.to_string()));
        }
        self.check_spec(&service.spec, &service.id)
    }

    /// Whether a spec is valid for service `id` against the other services.
    pub fn check_spec(&self, spec: &ServiceSpec, id: &str) -> Result<(), Refusal> {
        if !valid_service_name(&spec.name) {
            return Err(Refusal::BadServiceName(spec.name.clone()));
        }
        let bad = |why: String| Err(Refusal::BadServiceSpec(why));
        match &spec.image {
            Some(image) => {
                if let Err(why) = check_image(image) {
                    return bad(why);
                }
                if spec.command.first().is_some_and(String::is_empty) {
                    return bad("the command's first word is empty".into());
                }
            }
            None if spec.command.is_empty() || spec.command[0].is_empty() => {
                return bad("a service needs a command to run (after --) or an --image".into());
            }
            None => {}
        }
        if let Some(e) = spec
            .env
            .iter()
            .find(|e| e.split('=').next().is_none_or(str::is_empty))
        {
            return bad(format!("invalid --env {e:?}: use KEY=VALUE"));
        }
        if spec.max_replicas_per_node == Some(0) {
            return bad(
                "--replicas-max-per-node must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if let Some(bad_key) = spec.labels.keys().find(|k| !super::valid_label_key(k)) {
            return Err(Refusal::BadLabel(bad_key.clone()));
        }
        for net in &spec.networks {
            let network = self
                .networks
                .get(net)
                .ok_or_else(|| Refusal::NoSuchNetwork(net.clone()))?;
            if network.ingress {
                return Err(Refusal::IngressAttach(network.name.clone()));
            }
        }
        let mut seen = BTreeSet::new();
        for port in &spec.ports {
            if port.target == 0 {
                return bad("a published port needs a target port".into());
            }
            if port.mode == PublishMode::Ingress && spec.endpoint_mode == EndpointMode::Dnsrr {
                return Err(Refusal::DnsrrWithIngress);
            }
            let Some(published) = port.published else {
                if port.mode == PublishMode::Ingress {
                    return bad(format!(
                        "ingress port {} has no published port",
                        port.target
                    ));
                }
                // Docker's engine picks a free port per task; a node here
                // does not, so the user says which.
                return bad(format!(
                    "host-mode port {}/{} needs a published port: use published=PORT,target={},mode=host",
                    port.target, port.protocol, port.target
                ));
            };
            if !seen.insert((port.protocol, published)) {
                return Err(Refusal::PortPublishedTwice(published));
            }
            // Every node listens on an ingress port: no other service may
            // publish its number, through the mesh or in host mode.
            if let Some(other) = self.services.values().find(|s| {
                s.id != id
                    && s.spec
                        .ingress_ports()
                        .any(|p| p == (port.protocol, published))
            }) {
                return Err(Refusal::PortInUse {
                    port: published,
                    service: other.name().to_string(),
                    id: other.id.clone(),
                });
            }
            if port.mode == PublishMode::Ingress {
                if let Some(other) = self.services.values().find(|s| {
                    s.id != id && s.spec.host_ports().any(|p| p == (port.protocol, published))
                }) {
                    return bad(format!(
                        "port {published}/{} is published in host mode by service {} ({}); it cannot be an ingress port too",
                        port.protocol,
                        other.name(),
                        other.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Finds a service by full id, name or unique id prefix.
    pub fn find_service(&self, key: &str) -> Result<&Service, String> {
        super::find_by_key("service", key, &self.services, |s| &s.spec.name)
    }

    /// Applies the orchestrator's decisions, refusing the whole batch when
    /// it no longer fits the state: a task of a service that is gone, on a
    /// node that is gone, or a second live task in one slot (or on one node,
    /// for a global service), which a plan made before a failover could
    /// otherwise add.
    pub(super) fn set_tasks(&mut self, tasks: &[Task], removed: &[TaskId]) -> Result<(), Refusal> {
        for task in tasks {
            if !self.services.contains_key(&task.service_id) {
                return Err(Refusal::StaleTasks(format!(
                    "task {} belongs to service {}, which is gone",
                    task.id, task.service_id
                )));
            }
            if let Some(node) = &task.node_id {
                if !self.nodes.contains_key(node) {
                    return Err(Refusal::StaleTasks(format!(
                        "task {} is on node {node}, which is gone",
                        task.id
                    )));
                }
            }
        }
        let mut next = self.tasks.clone();
        for id in removed {
            next.remove(id);
        }
        for task in tasks {
            let mut task = task.clone();
            // The plan was made from an older copy: a status a node reported
            // since (always further along) wins over the plan's.
            if let Some(now) = self.tasks.get(&task.id) {
                if now.status.state > task.status.state {
                    task.status = now.status.clone();
                }
            }
            next.insert(task.id.clone(), task);
        }
        let touched: BTreeSet<&str> = tasks.iter().map(|t| t.service_id.as_str()).collect();
        let mut holders: BTreeSet<(&str, Option<u64>, Option<&str>, u64)> = BTreeSet::new();
        for task in next.values() {
            if !task.is_live() || !touched.contains(task.service_id.as_str()) {
                continue;
            }
            // One live task per slot (or node) and spec version: a
            // start-first update runs the new one beside the old for a while.
            let key = match task.slot {
                Some(slot) => (
                    task.service_id.as_str(),
                    Some(slot),
                    None,
                    task.spec_version,
                ),
                None => (
                    task.service_id.as_str(),
                    None,
                    task.node_id.as_deref(),
                    task.spec_version,
                ),
            };
            if !holders.insert(key) {
                return Err(Refusal::StaleTasks(format!(
                    "task {} would be a second live task of service {} in its {}",
                    task.id,
                    task.service_id,
                    if task.slot.is_some() { "slot" } else { "node" }
                )));
            }
        }
        self.tasks = next;
        Ok(())
    }

    /// The names of the services attached to network `id`; for the ingress
    /// network, those that publish a port through the routing mesh.
    pub(super) fn services_on_network(&self, id: &str) -> Vec<String> {
        let ingress = self.networks.get(id).is_some_and(|n| n.ingress);
        self.services
            .values()
            .filter(|s| {
                if ingress {
                    s.spec.ports.iter().any(|p| p.mode == PublishMode::Ingress)
                } else {
                    s.spec.networks.iter().any(|n| n == id)
                }
            })
            .map(|s| s.spec.name.clone())
            .collect()
    }

    /// The tasks of service `id`, by slot (or node) and then newest first.
    pub fn service_tasks(&self, id: &str) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self.tasks.values().filter(|t| t.service_id == id).collect();
        tasks.sort_by(|a, b| {
            (a.slot, &a.node_id)
                .cmp(&(b.slot, &b.node_id))
                .then(b.created_at.cmp(&a.created_at))
                .then(a.id.cmp(&b.id))
        });
        tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_in_both_syntaxes() {
        let p: PortConfig = "5000:80".parse().unwrap();
        assert_eq!(
            p,
            PortConfig {
                protocol: Protocol::Tcp,
                target: 80,
                published: Some(5000),
                mode: PublishMode::Ingress,
                proxy_protocol: false,
            }
        );
        let p: PortConfig = "53:53/udp".parse().unwrap();
        assert_eq!((p.protocol, p.published), (Protocol::Udp, Some(53)));
        let p: PortConfig = "80".parse().unwrap();
        assert_eq!((p.target, p.published), (80, None));
        let p: PortConfig = "published=8080,target=80,protocol=udp,mode=host"
            .parse()
            .unwrap();
        assert_eq!(
            p,
            PortConfig {
                protocol: Protocol::Udp,
                target: 80,
                published: Some(8080),
                mode: PublishMode::Host,
                proxy_protocol: false,
            }
        );
        assert_eq!(p.to_string(), "*:8080->80/udp");
        let p: PortConfig = "published=5000,target=80,proxy-protocol=v2"
            .parse()
            .unwrap();
        assert!(p.proxy_protocol && p.mode == PublishMode::Ingress);
        for (bad, words) in [
            (
                "published=53,target=53,protocol=udp,proxy-protocol=v2",
                "TCP ports only",
            ),
            (
                "published=5000,target=80,mode=host,proxy-protocol=v2",
                "routing mesh",
            ),
            (
                "published=5000,target=80,proxy-protocol=v1",
                "use v2 or none",
            ),
            ("5000:http", "invalid target port \"http\""),
            ("5000:80/sctp", "invalid protocol \"sctp\""),
            ("0:80", "invalid published port \"0\""),
            ("target=80,mode=bridge", "invalid publish mode \"bridge\""),
            ("published=80", "has no target port"),
            ("target=80,color=red", "invalid field \"color\""),
            ("5000-5001:80-81", "port ranges"),
            ("127.0.0.1:5000:80", "without a host address"),
        ] {
            let e = bad.parse::<PortConfig>().unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_parse_and_print_like_go() {
        for (text, ns) in [
            ("0", 0),
            ("5s", 5_000_000_000),
            ("1m30s", 90_000_000_000),
            ("250ms", 250_000_000),
            ("1.5s", 1_500_000_000),
            ("1h", 3_600_000_000_000),
        ] {
            assert_eq!(parse_duration(text), Ok(ns), "{text}");
        }
        for bad in ["", "5", "5x", "s", "1..2s", "-1s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(5_000_000_000), "5s");
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(250_000_000), "250ms");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
    }

    #[test]
    fn task_states_are_ordered_like_swarms() {
        use TaskState::*;
        let order = [
            New, Pending, Assigned, Accepted, Preparing, Ready, Starting, Running, Complete,
            Shutdown, Failed, Rejected, Remove, Orphaned,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        for s in order {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.title().to_lowercase()));
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn cpu_and_memory_limits_parse_like_docker() {
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert!(parse_cpus("0").unwrap_err().contains("\"0\""));
        assert!(parse_cpus("lots").is_err());
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_memory("8388608").unwrap(), 8 << 20);
        assert!(parse_memory("1m").unwrap_err().contains("minimum"));
        assert!(parse_memory("12x").is_err());
    }
}

/// Checks an `--image` reference: Docker's `[registry/]name[:tag][@digest]`
/// characters, no spaces, at most 255 bytes. Whether the image exists is
/// the node's business (shoal never pulls).
pub fn check_image(image: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    if image.is_empty() {
        return Err("invalid --image \"\": give an image name".into());
    }
    if image.len() > 255
        || !image.chars().all(ok_char)
        || image.starts_with(['-', '.', '/', ':', '@'])
    {
        return Err(format!(
            "invalid --image {image:?}: use [registry/]name[:tag][@digest] (letters, digits, . _ - / : @)"
        ));
    }
    if image.chars().any(|c| c.is_ascii_uppercase()) && !image.contains(['/', ':', '@']) {
        return Err(format!(
            "invalid --image {image:?}: repository names must be lowercase"
        ));
    }
    Ok(())
}
