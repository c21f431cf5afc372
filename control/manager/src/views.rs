//! What the APIs answer, and how the CLI prints it the way Docker does.
//!
//! The JSON shapes are shared by the manager API (2377), the daemon's local
//! API and the CLI; the renderers are pure so their output is tested here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::state::{Availability, Node, NodeStatus, Role};

/// A manager's standing in the Raft group, as `node ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerStatus {
    /// The current leader.
    Leader,
    /// A manager that heartbeats.
    Reachable,
    /// A manager that does not.
    Unreachable,
}

impl std::fmt::Display for ManagerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ManagerStatus::Leader => "Leader",
            ManagerStatus::Reachable => "Reachable",
            ManagerStatus::Unreachable => "Unreachable",
        })
    }
}

/// One node as `node ls` and `node inspect` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Hostname.
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Health.
    pub status: NodeStatus,
    /// Why.
    pub status_message: String,
    /// Scheduling availability.
    pub availability: Availability,
    /// For managers.
    pub manager_status: Option<ManagerStatus>,
    /// Advertised address.
    pub addr: IpAddr,
    /// Manager API address (managers).
    pub api_addr: Option<SocketAddr>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Raft member id (managers).
    pub raft_id: Option<u64>,
    /// Joined at (Unix seconds).
    pub created_at: u64,
    /// Last change (Unix seconds).
    pub updated_at: u64,
    /// Change counter.
    pub version: u64,
}

impl NodeView {
    /// The view of `node`; `leader` is the Raft id of the current leader.
    pub fn of(node: &Node, leader: Option<u64>) -> Self {
        let manager_status = (node.role == Role::Manager).then(|| {
            if node.raft_id.is_some() && node.raft_id == leader {
                ManagerStatus::Leader
            } else if node.status == NodeStatus::Down {
                ManagerStatus::Unreachable
            } else {
                ManagerStatus::Reachable
            }
        });
        NodeView {
            id: node.id.clone(),
            hostname: node.hostname.clone(),
            role: node.role,
            status: node.status,
            status_message: node.status_message.clone(),
            availability: node.availability,
            manager_status,
            addr: node.addr,
            api_addr: node.api_addr,
            labels: node.labels.clone(),
            raft_id: node.raft_id,
            created_at: node.created_at,
            updated_at: node.updated_at,
            version: node.version,
        }
    }
}

/// Lays out rows in columns separated by three spaces, like Go's tabwriter
/// as Docker's CLI uses it. The last column is not padded.
pub fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `node ls`: sorted by hostname, `*` after the id of the node asked.
pub fn render_node_ls(nodes: &[NodeView], self_id: &str) -> String {
    let mut sorted: Vec<&NodeView> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    let mut rows = vec![vec![
        "ID".to_string(),
        "HOSTNAME".into(),
        "STATUS".into(),
        "AVAILABILITY".into(),
        "MANAGER STATUS".into(),
    ]];
    for n in sorted {
        let id = if n.id == self_id {
            format!("{} *", n.id)
        } else {
            n.id.clone()
        };
        rows.push(vec![
            id,
            n.hostname.clone(),
            n.status.to_string(),
            n.availability.to_string(),
            n.manager_status.map(|m| m.to_string()).unwrap_or_default(),
        ]);
    }
    columns(&rows)
}

/// The join instructions `swarm init` and `swarm join-token` print.
pub fn render_join_instructions(role: Role, token: &str, manager: SocketAddr) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {manager}\n\n"
    )
}

/// What `swarm init` prints.
pub fn render_init(node_id: &str, worker_token: &str, manager: SocketAddr) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
        render_join_instructions(Role::Worker, worker_token, manager)
    )
}

/// What a worker answers to commands that read or change cluster state.
pub const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";

/// What a node outside any swarm answers.
pub const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect this node to swarm and try again.";

/// What a manager answers without a Raft quorum.
pub const NO_LEADER: &str = "The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, host: &str, role: Role, raft: Option<u64>, status: NodeStatus) -> NodeView {
        let node = Node {
            id: id.into(),
            hostname: host.into(),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            addr: "10.0.0.1".parse().unwrap(),
            api_addr: None,
            raft_id: raft,
            status,
            status_message: String::new(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        };
        NodeView::of(&node, Some(1))
    }

    #[test]
    fn node_ls_looks_like_dockers() {
        let nodes = vec![
            view("bbbb", "worker1", Role::Worker, None, NodeStatus::Ready),
            view(
                "aaaa",
                "manager1",
                Role::Manager,
                Some(1),
                NodeStatus::Ready,
            ),
            view(
                "cccc",
                "manager2",
                Role::Manager,
                Some(2),
                NodeStatus::Ready,
            ),
            view("dddd", "manager3", Role::Manager, Some(3), NodeStatus::Down),
        ];
        let out = render_node_ls(&nodes, "cccc");
        let expected = "\
ID       HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS
aaaa     manager1   Ready    Active         Leader
cccc *   manager2   Ready    Active         Reachable
dddd     manager3   Down     Active         Unreachable
bbbb     worker1    Ready    Active
";
        assert_eq!(out, expected);
    }

    #[test]
    fn init_prints_the_join_command() {
        let out = render_init("abc", "SWMTKN-1-x-y", "10.0.0.1:2377".parse().unwrap());
        assert!(out.starts_with("Swarm initialized: current node (abc) is now a manager.\n"));
        assert!(out.contains("    shoal swarm join --token SWMTKN-1-x-y 10.0.0.1:2377\n"));
        assert!(out.contains("run 'shoal swarm join-token manager'"));
    }
}
