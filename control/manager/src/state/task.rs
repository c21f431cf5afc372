//! What nodes report about their tasks, and the tasks' network addresses.
//!
//! Agents report progress with [`Command::UpdateTaskStatus`](super::Command):
//! a node may only report on tasks placed on it, and a task's state only
//! moves forward (Swarm's order, `accepted` ... `orphaned`), so a late or
//! repeated report never undoes a newer one.
//!
//! Every task gets one address on each network it is attached to when the
//! orchestrator makes it: the lowest free host of the subnet that is neither
//! the gateway nor held by another task. A task holds its addresses while the
//! managers want it to run or while it may still be running (a task asked to
//! stop keeps them until its node says it stopped).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::network::Network;
use super::service::{EndpointMode, ServiceSpec, Task, TaskId, TaskState, TaskStatus};
use super::{ClusterState, NodeId, Refusal};

/// A task's attachment to one network: which network and its address there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    /// The network's id.
    pub network_id: String,
    /// The task's address on it.
    pub ip: Ipv4Addr,
}

impl TaskNetwork {
    /// The interface's MAC address ([`task_mac`] of its address).
    pub fn mac(&self) -> [u8; 6] {
        task_mac(self.ip)
    }
}

/// A task interface's MAC address, Docker's way: `02:42` then the IPv4
/// address, so it is unique wherever the address is.
pub fn task_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// One report from a node: a task's new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// The task.
    pub task_id: TaskId,
    /// What it is now.
    pub status: TaskStatus,
}

impl TaskState {
    /// Whether the task has ended: it runs no more and never will.
    pub fn is_terminal(self) -> bool {
        self > TaskState::Running
    }
}

impl Task {
    /// Whether the task keeps its addresses: wanted, or perhaps still running.
    pub fn holds_addresses(&self) -> bool {
        self.is_live() || !self.status.state.is_terminal()
    }
}

impl ClusterState {
    /// Applies a node's reports; all or nothing.
    pub(super) fn update_task_status(
        &mut self,
        node: &NodeId,
        updates: &[TaskUpdate],
    ) -> Result<(), Refusal> {
        for u in updates {
            let task = self
                .tasks
                .get(&u.task_id)
                .ok_or_else(|| Refusal::StaleTasks(format!("task {} is gone", u.task_id)))?;
            if task.node_id.as_ref() != Some(node) {
                return Err(Refusal::NotYourTask {
                    node: node.clone(),
                    task: u.task_id.clone(),
                });
            }
            if u.status.state < TaskState::Accepted {
                return Err(Refusal::BadTaskState(u.status.state.title().to_string()));
            }
        }
        for u in updates {
            let task = self.tasks.get_mut(&u.task_id).expect("checked above");
            // Only forward: a report that arrives after a newer one is old news.
            if u.status.state > task.status.state {
                task.status = u.status.clone();
            }
        }
        Ok(())
    }

    /// The addresses of `network` that tasks and services' virtual IPs
    /// hold, the gateway included.
    pub fn addresses_in_use(&self, network: &Network) -> BTreeSet<Ipv4Addr> {
        let mut used: BTreeSet<Ipv4Addr> = self
            .tasks
            .values()
            .filter(|t| t.holds_addresses())
            .flat_map(|t| t.networks.iter())
            .chain(self.services.values().flat_map(|s| s.vips.iter()))
            .filter(|a| a.network_id == network.id)
            .map(|a| a.ip)
            .chain(self.network_attachments(&network.id).map(|a| a.ip))
            .collect();
        if network.ingress {
            used.extend(self.nodes.values().filter_map(|n| n.ingress_ip));
        }
        used.insert(network.gateway);
        used
    }

    /// Gives every node without one an address on the ingress network,
    /// in node id order (the lowest free host). Part of `apply`, so every
    /// manager gives the same; a node's address is freed when it is removed.
    pub(crate) fn assign_ingress_ips(&mut self) {
        let Some(ingress) = self.networks.values().find(|n| n.ingress).cloned() else {
            return;
        };
        let missing: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.ingress_ip.is_none())
            .map(|n| n.id.clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut used = self.addresses_in_use(&ingress);
        for id in missing {
            let ip = allocate(&ingress, &mut used);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.ingress_ip = ip;
            }
        }
    }

    /// The networks a service's tasks attach to, in interface order: the
    /// ingress network first when it publishes through the routing mesh,
    /// then its own.
    pub fn service_networks(&self, spec: &ServiceSpec) -> Vec<String> {
        let mut ids = Vec::new();
        if spec.ingress_ports().next().is_some() {
            if let Some(ingress) = self.networks.values().find(|n| n.ingress) {
                ids.push(ingress.id.clone());
            }
        }
        ids.extend(spec.networks.iter().cloned());
        ids
    }

    /// Gives service `id` one virtual IP on each of its networks (endpoint
    /// mode `vip`; none for `dnsrr`), keeping the ones it has, freeing those
    /// of networks it left. Part of `apply`, so every manager gives the
    /// same addresses: the lowest free host of each network. A full
    /// network gives none, and names resolve to the tasks there.
    pub(crate) fn assign_vips(&mut self, id: &str) {
        let Some(service) = self.services.get(id) else {
            return;
        };
        let wanted = match service.spec.endpoint_mode {
            EndpointMode::Vip => self.service_networks(&service.spec),
            EndpointMode::Dnsrr => Vec::new(),
        };
        let mut vips: Vec<TaskNetwork> = service
            .vips
            .iter()
            .filter(|v| wanted.contains(&v.network_id))
            .cloned()
            .collect();
        self.services.get_mut(id).expect("looked up above").vips = vips.clone();
        for net in &wanted {
            if vips.iter().any(|v| &v.network_id == net) {
                continue;
            }
            let Some(network) = self.networks.get(net) else {
                continue;
            };
            let mut used = self.addresses_in_use(network);
            if let Some(ip) = allocate(network, &mut used) {
                vips.push(TaskNetwork {
                    network_id: net.clone(),
                    ip,
                });
            }
        }
        vips.sort_by_key(|v| wanted.iter().position(|n| *n == v.network_id));
        self.services.get_mut(id).expect("looked up above").vips = vips;
    }
}

/// The lowest host address of `network` not in `used`, which then holds it.
pub fn allocate(network: &Network, used: &mut BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let ip = network.subnet.hosts().find(|ip| !used.contains(ip))?;
    used.insert(ip);
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_docker_shaped() {
        let a = TaskNetwork {
            network_id: "n".into(),
            ip: Ipv4Addr::new(10, 0, 1, 7),
        };
        assert_eq!(a.mac(), [0x02, 0x42, 10, 0, 1, 7]);
    }

    #[test]
    fn terminal_states_are_those_after_running() {
        assert!(!TaskState::Running.is_terminal());
        assert!(!TaskState::Assigned.is_terminal());
        for s in [
            TaskState::Complete,
            TaskState::Shutdown,
            TaskState::Failed,
            TaskState::Rejected,
            TaskState::Remove,
            TaskState::Orphaned,
        ] {
            assert!(s.is_terminal(), "{s:?}");
        }
    }
}
