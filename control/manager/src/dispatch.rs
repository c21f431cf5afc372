//! What the managers hand each node's agent, and what agents send back.
//!
//! Swarm's dispatcher streams assignments to agents; here an agent asks for
//! its [`Assignments`] every half second (`POST /v1/assignments`), and posts
//! status reports and log lines as they happen. [`assignments`] is pure: it
//! reads the committed state and lists the tasks placed on the node that
//! concern it (wanted, or perhaps still running), with what running them
//! needs: the command, the environment with its placeholders, the task's
//! addresses and its networks. Where the other tasks on those networks are
//! is not here: nodes tell each other through gossip (`shoal-gossip`), which
//! notices a dead node in seconds rather than the managers' five.

use std::collections::{BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::state::service::{EndpointMode, Limits, PortConfig, PublishMode};
use crate::state::{ClusterState, TaskNetwork, TaskState};

/// A task as its node must run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedTask {
    /// Its id.
    pub id: String,
    /// Docker's full task name: `web.1.<id>` (or `web.<node id>.<id>`).
    pub name: String,
    /// Its service's id.
    pub service_id: String,
    /// Its service's name.
    pub service_name: String,
    /// Its slot (replicated services).
    pub slot: Option<u64>,
    /// What the managers want.
    pub desired_state: TaskState,
    /// What the managers last heard it is.
    pub state: TaskState,
    /// The image its container runs (`--image`); `None`: a process.
    #[serde(default)]
    pub image: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `K=V` pairs, placeholders not yet expanded.
    pub env: Vec<String>,
    /// Its addresses, in interface order (`eth0` first).
    pub networks: Vec<TaskNetwork>,
    /// Its resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Its service resolves to its tasks' addresses (`--endpoint-mode
    /// dnsrr`) rather than to a virtual IP.
    #[serde(default)]
    pub dnsrr: bool,
    /// Its service's virtual IPs, one per network (endpoint mode `vip`).
    #[serde(default)]
    pub vips: Vec<TaskNetwork>,
    /// Its service's published ports.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

/// One of the networks a node's tasks are attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAssignment {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its VXLAN id.
    pub vni: u32,
    /// Its subnet.
    pub subnet: Ipv4Net,
    /// Whether frames are sealed with the cluster's network keys.
    pub encrypted: bool,
    /// Whether it is the routing mesh's ingress network (no service
    /// discovery on it, like Docker's).
    #[serde(default)]
    pub ingress: bool,
}

impl NetworkAssignment {
    fn of(n: &crate::state::network::Network) -> Self {
        NetworkAssignment {
            id: n.id.clone(),
            name: n.name.clone(),
            vni: n.vni,
            subnet: n.subnet,
            encrypted: n.encrypted,
            ingress: n.ingress,
        }
    }
}

/// What every node needs for the routing mesh: the ingress network, its
/// own address on it, and the ports every service publishes through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressAssignment {
    /// The ingress network.
    pub network: NetworkAssignment,
    /// This node's address on it (its ingress sandbox's).
    pub ip: Ipv4Addr,
    /// The services that publish ports through the mesh.
    pub services: Vec<IngressService>,
}

/// A service that publishes ports through the routing mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressService {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its ingress-mode ports, each with its published port.
    pub ports: Vec<PortConfig>,
}

/// Everything a node needs to run its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// The node's tasks that are wanted or may still run.
    pub tasks: Vec<AssignedTask>,
    /// The networks those tasks are attached to (and the ingress network
    /// when the routing mesh is in use).
    pub networks: Vec<NetworkAssignment>,
    /// The routing mesh, when a service publishes ports through it.
    #[serde(default)]
    pub ingress: Option<IngressAssignment>,
    /// The attachable networks, for a node with a container engine: they
    /// become Docker networks that `docker run --network NET` can use.
    #[serde(default)]
    pub attachable: Vec<NetworkAssignment>,
}

/// The assignments of `node` in `state`.
pub fn assignments(state: &ClusterState, node: &str) -> Assignments {
    let mut tasks = Vec::new();
    let mut wanted_networks: BTreeSet<&str> = BTreeSet::new();
    for task in state.tasks.values() {
        if task.node_id.as_deref() != Some(node) || !task.holds_addresses() {
            continue;
        }
        if task.status.state < TaskState::Assigned {
            continue;
        }
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        wanted_networks.extend(task.networks.iter().map(|n| n.network_id.as_str()));
        tasks.push(AssignedTask {
            id: task.id.clone(),
            name: format!("{}.{}", task.name(service.name()), task.id),
            service_id: service.id.clone(),
            service_name: service.name().to_string(),
            slot: task.slot,
            desired_state: task.desired_state,
            state: task.status.state,
            image: service.spec.image.clone(),
            command: service.spec.command.clone(),
            env: service.spec.env.clone(),
            networks: task.networks.clone(),
            limits: service.spec.limits,
            dnsrr: service.spec.endpoint_mode == EndpointMode::Dnsrr,
            vips: service.vips.clone(),
            ports: service.spec.ports.clone(),
        });
    }
    let ingress = ingress_assignment(state, node);
    if let Some(i) = &ingress {
        wanted_networks.insert(i.network.id.as_str());
    }
    // Networks with containers attached here stay in the data plane.
    wanted_networks.extend(
        state
            .attachments
            .values()
            .filter(|a| a.node_id == node)
            .map(|a| a.network_id.as_str()),
    );
    let has_engine = state.nodes.get(node).is_some_and(|n| n.engine.is_some());
    let attachable = state
        .networks
        .values()
        .filter(|n| has_engine && n.attachable && !n.ingress)
        .map(NetworkAssignment::of)
        .collect();
    let networks = wanted_networks
        .into_iter()
        .filter_map(|id| state.networks.get(id))
        .map(NetworkAssignment::of)
        .collect();
    Assignments {
        tasks,
        networks,
        ingress,
        attachable,
    }
}

/// The routing mesh of `node`: every node takes part once a service
/// publishes a port through it.
fn ingress_assignment(state: &ClusterState, node: &str) -> Option<IngressAssignment> {
    let ip = state.nodes.get(node)?.ingress_ip?;
    let network = state.networks.values().find(|n| n.ingress)?;
    let services: Vec<IngressService> = state
        .services
        .values()
        .filter(|s| s.spec.ingress_ports().next().is_some())
        .map(|s| IngressService {
            id: s.id.clone(),
            name: s.name().to_string(),
            ports: s
                .spec
                .ports
                .iter()
                .filter(|p| p.mode == PublishMode::Ingress && p.published.is_some())
                .cloned()
                .collect(),
        })
        .collect();
    (!services.is_empty()).then(|| IngressAssignment {
        network: NetworkAssignment::of(network),
        ip,
        services,
    })
}

/// One line a task wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogLine {
    /// The task.
    pub task_id: String,
    /// When, in nanoseconds since the epoch.
    pub time_ns: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
}

/// A log line as `service logs` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogLine {
    /// Its place in the leader's log store: ask for lines after it next time.
    pub seq: u64,
    /// The task's full name (`web.1.<id>`).
    pub task: String,
    /// The node's hostname.
    pub node: String,
    /// The line.
    #[serde(flatten)]
    pub line: TaskLogLine,
}

/// The leader's store of recent task output: agents push lines as their
/// tasks write them, `service logs` reads them. Bounded: the oldest lines go
/// first. It lives in the leader's memory only; a new leader starts empty,
/// while each node keeps its tasks' full logs on disk.
#[derive(Debug)]
pub struct LogStore {
    lines: VecDeque<(u64, String, TaskLogLine)>,
    next: u64,
    limit: usize,
}

impl LogStore {
    /// A store of at most `limit` lines.
    pub fn new(limit: usize) -> Self {
        LogStore {
            lines: VecDeque::new(),
            next: 1,
            limit: limit.max(1),
        }
    }

    /// Adds lines of `service_id`'s tasks.
    pub fn push(&mut self, service_id: &str, line: TaskLogLine) {
        self.lines
            .push_back((self.next, service_id.to_string(), line));
        self.next += 1;
        while self.lines.len() > self.limit {
            self.lines.pop_front();
        }
    }

    /// The lines of `service_id` after `since`, at most `max`, oldest first.
    pub fn read(&self, service_id: &str, since: u64, max: usize) -> Vec<(u64, TaskLogLine)> {
        self.lines
            .iter()
            .filter(|(seq, s, _)| *seq > since && s == service_id)
            .take(max)
            .map(|(seq, _, l)| (*seq, l.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, l: &str) -> TaskLogLine {
        TaskLogLine {
            task_id: t.into(),
            time_ns: 1,
            stream: "stdout".into(),
            line: l.into(),
        }
    }

    #[test]
    fn log_store_pages_by_service_and_forgets_the_oldest() {
        let mut store = LogStore::new(3);
        store.push("a", line("t1", "one"));
        store.push("b", line("t2", "other"));
        store.push("a", line("t1", "two"));
        let got = store.read("a", 0, 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.line, "two");
        assert!(store.read("a", got[1].0, 10).is_empty());
        store.push("a", line("t1", "three"));
        store.push("a", line("t1", "four"));
        let got: Vec<String> = store
            .read("a", 0, 10)
            .into_iter()
            .map(|l| l.1.line)
            .collect();
        assert_eq!(got, ["two", "three", "four"]);
        assert_eq!(store.read("a", 0, 1).len(), 1);
    }
}
