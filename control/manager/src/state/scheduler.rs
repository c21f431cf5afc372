//! The scheduler: which node a task goes to. Pure: it reads the state and
//! the tasks to place, and returns them placed (or pending, with the reason).
//!
//! Like swarmkit's, it runs every node through a pipeline of filters, the
//! first failing one counting against the node: the node must be Ready and
//! Active, satisfy the service's constraints, have the task's host-mode
//! published ports free, and hold fewer of the service's tasks than
//! `--replicas-max-per-node`. Of the nodes that pass, it takes the one with
//! the fewest tasks of this service, then the fewest tasks overall, then the
//! lowest node id, so that every manager would choose the same. When no node
//! passes, the task stays pending and its error says why, in Docker's words:
//! "no suitable node (scheduling constraints not satisfied on 3 nodes)".

use std::collections::{BTreeMap, BTreeSet};

use super::constraint::all_match;
use super::service::{Protocol, Service, Task, TaskState, TaskStatus};
use super::{Availability, ClusterState, Node, NodeStatus, Timestamp};

/// The message of a task the scheduler placed (swarmkit's).
pub const ASSIGNED: &str = "scheduler assigned task to node";
/// The message of a task waiting for a node (swarmkit's).
pub const PENDING: &str = "pending task scheduling";

/// The filters, in the order swarmkit runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Filter {
    Ready,
    Engine,
    Constraints,
    HostPorts,
    MaxReplicas,
}

impl Filter {
    /// swarmkit's explanation for `n` nodes failing this filter.
    fn explain(self, n: usize) -> String {
        let nodes = if n == 1 {
            "1 node".to_string()
        } else {
            format!("{n} nodes")
        };
        match self {
            Filter::Ready => format!("{nodes} not available for new tasks"),
            Filter::Engine => format!("no container engine for the image on {nodes}"),
            Filter::Constraints => format!("scheduling constraints not satisfied on {nodes}"),
            Filter::HostPorts => format!("host-mode port already in use on {nodes}"),
            Filter::MaxReplicas => "max replicas per node limit exceed".into(),
        }
    }
}

/// The load the scheduler sees: live tasks per node, per service and in all,
/// and the host-mode ports taken on each node. Updated as it places tasks,
/// so one batch spreads like tasks placed one by one.
pub struct Scheduler<'a> {
    state: &'a ClusterState,
    per_service: BTreeMap<(&'a str, &'a str), usize>,
    total: BTreeMap<&'a str, usize>,
    host_ports: BTreeMap<&'a str, BTreeSet<(Protocol, u16)>>,
}

impl<'a> Scheduler<'a> {
    /// The load of `state`, leaving out the tasks in `leaving` (those the
    /// orchestrator is stopping or replacing in the same batch).
    pub fn new(state: &'a ClusterState, leaving: &BTreeSet<&str>) -> Self {
        let mut s = Scheduler {
            state,
            per_service: BTreeMap::new(),
            total: BTreeMap::new(),
            host_ports: BTreeMap::new(),
        };
        for task in state.tasks.values() {
            if !task.is_live() || leaving.contains(task.id.as_str()) {
                continue;
            }
            // Only a placed task weighs on a node.
            if task.status.state < TaskState::Assigned {
                continue;
            }
            let (Some(node), Some(service)) = (
                task.node_id.as_deref(),
                state.services.get(&task.service_id),
            ) else {
                continue;
            };
            s.add(node, service);
        }
        s
    }

    fn add(&mut self, node: &str, service: &Service) {
        // Keys borrow from the state; look the node id up there.
        let state = self.state;
        let Some((node, _)) = state.nodes.get_key_value(node) else {
            return;
        };
        let service_key = state
            .services
            .get_key_value(&service.id)
            .map(|(k, _)| k.as_str())
            .unwrap_or_default();
        *self.per_service.entry((node, service_key)).or_default() += 1;
        *self.total.entry(node).or_default() += 1;
        self.host_ports
            .entry(node)
            .or_default()
            .extend(service.spec.host_ports());
    }

    /// The first filter `node` fails for a task of `service`, if any.
    fn fails(&self, node: &Node, service: &Service) -> Option<Filter> {
        if node.status != NodeStatus::Ready || node.availability != Availability::Active {
            return Some(Filter::Ready);
        }
        if service.spec.image.is_some() && node.engine.is_none() {
            return Some(Filter::Engine);
        }
        if !all_match(&service.spec.constraints, node) {
            return Some(Filter::Constraints);
        }
        let taken = self.host_ports.get(node.id.as_str());
        if service
            .spec
            .host_ports()
            .any(|p| taken.is_some_and(|t| t.contains(&p)))
        {
            return Some(Filter::HostPorts);
        }
        if let Some(max) = service.spec.max_replicas_per_node {
            let here = self.count(node, service);
            if here as u64 >= max {
                return Some(Filter::MaxReplicas);
            }
        }
        None
    }

    fn count(&self, node: &Node, service: &Service) -> usize {
        self.per_service
            .get(&(node.id.as_str(), service.id.as_str()))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `node` could take a new task of `service` now.
    pub fn fits(&self, node: &Node, service: &Service) -> bool {
        self.fails(node, service).is_none()
    }

    /// Places `task` (of `service`): on its own node for a global task, on
    /// the best node that fits for a replicated one. Returns the task as it
    /// should be: assigned, or pending with the reason.
    pub fn place(&mut self, task: &Task, service: &Service, now: Timestamp) -> Task {
        let candidates: Vec<&'a Node> = match (&task.slot, &task.node_id) {
            (None, Some(node)) => self.state.nodes.get(node).into_iter().collect(),
            _ => self.state.nodes.values().collect(),
        };
        let mut failures: BTreeMap<Filter, usize> = BTreeMap::new();
        let mut best: Option<(&'a Node, (usize, usize))> = None;
        for node in candidates {
            if let Some(f) = self.fails(node, service) {
                *failures.entry(f).or_default() += 1;
                continue;
            }
            let load = (
                self.count(node, service),
                self.total.get(node.id.as_str()).copied().unwrap_or(0),
            );
            // Nodes come in id order, so on a tie the lowest id stays.
            if best.is_none_or(|(_, b)| load < b) {
                best = Some((node, load));
            }
        }
        let mut placed = task.clone();
        match best {
            Some((node, _)) => {
                placed.node_id = Some(node.id.clone());
                placed.status = TaskStatus {
                    state: TaskState::Assigned,
                    message: ASSIGNED.into(),
                    err: None,
                    exit_code: None,
                    timestamp: now,
                };
                self.add(&node.id, service);
            }
            None => {
                let mut reasons: Vec<(Filter, usize)> = failures.into_iter().collect();
                // Most failures first; the filter order breaks ties.
                reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let explanation: Vec<String> = reasons.iter().map(|(f, n)| f.explain(*n)).collect();
                let err = if explanation.is_empty() {
                    "no suitable node".to_string()
                } else {
                    format!("no suitable node ({})", explanation.join("; "))
                };
                placed.status = TaskStatus {
                    state: TaskState::Pending,
                    message: PENDING.into(),
                    err: Some(err),
                    exit_code: None,
                    timestamp: now,
                };
            }
        }
        placed
    }
}
