//! What the APIs answer, and how the CLI prints it the way Docker does.
//!
//! The JSON shapes are shared by the manager API (2377), the daemon's local
//! API and the CLI; the renderers are pure so their output is tested here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::state::network::{OPT_ENCRYPTED, OPT_VXLANID_LIST};

mod service;
use crate::state::{Availability, Network, Node, NodeStatus, Role, Secret};
pub use service::{render_service_ls, render_task_ps, service_inspect, ServiceView, TaskView};

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
    /// The container engine it runs `--image` tasks with.
    #[serde(default)]
    pub engine: Option<String>,
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
            engine: node.engine.clone(),
        }
    }

    /// `node inspect`'s JSON in Docker's shape (`ID`, `Version`, `Spec`,
    /// `Description`, `Status`, `ManagerStatus`), so scripts written against
    /// `docker node inspect --format` find the same fields.
    pub fn docker_inspect(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ID": self.id,
            "Version": { "Index": self.version },
            "CreatedAt": rfc3339(self.created_at),
            "UpdatedAt": rfc3339(self.updated_at),
            "Spec": {
                "Labels": self.labels,
                "Role": self.role,
                "Availability": self.availability,
            },
            "Description": {
                "Hostname": self.hostname,
                "Platform": { "Architecture": std::env::consts::ARCH, "OS": std::env::consts::OS },
                "Engine": { "EngineVersion": self.engine.as_deref().unwrap_or("") },
            },
            "Status": {
                "State": self.status,
                "Message": self.status_message,
                "Addr": self.addr.to_string(),
            },
        });
        if let Some(m) = self.manager_status {
            v["ManagerStatus"] = serde_json::json!({
                "Leader": m == ManagerStatus::Leader,
                "Reachability": if m == ManagerStatus::Unreachable { "unreachable" } else { "reachable" },
                "Addr": self.api_addr.map(|a| a.to_string()).unwrap_or_default(),
            });
        }
        v
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

/// `network ls`: sorted by name, ids cut to 12 characters unless `no_trunc`.
pub fn render_network_ls(networks: &[Network], no_trunc: bool) -> String {
    let mut sorted: Vec<&Network> = networks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let mut rows = vec![vec![
        "NETWORK ID".to_string(),
        "NAME".into(),
        "DRIVER".into(),
        "SCOPE".into(),
    ]];
    for n in sorted {
        rows.push(vec![
            short_id(&n.id, no_trunc).to_string(),
            n.name.clone(),
            n.driver.to_string(),
            "swarm".into(),
        ]);
    }
    columns(&rows)
}

/// Docker's short form of an id: its first 12 characters.
pub fn short_id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        id.get(..12).unwrap_or(id)
    }
}

/// A network as `docker network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// Name.
    pub name: String,
    /// Full id.
    pub id: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// Always "swarm".
    pub scope: String,
    /// Always "overlay".
    pub driver: String,
    /// Always false: IPv6 is not supported yet.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Addressing.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// Always false: every network routes.
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    /// The routing-mesh network.
    pub ingress: bool,
    /// Driver options: the VNI, and `encrypted` when set.
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

/// The `IPAM` part of [`NetworkInspect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// Always "default".
    pub driver: String,
    /// One entry: the subnet and its gateway.
    pub config: Vec<IpamConfig>,
}

/// One subnet of [`Ipam`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// CIDR.
    pub subnet: String,
    /// Address.
    pub gateway: String,
}

impl NetworkInspect {
    /// Docker's view of `n`.
    pub fn of(n: &Network) -> Self {
        let mut options = BTreeMap::from([(OPT_VXLANID_LIST.to_string(), n.vni.to_string())]);
        if n.encrypted {
            options.insert(OPT_ENCRYPTED.into(), String::new());
        }
        NetworkInspect {
            name: n.name.clone(),
            id: n.id.clone(),
            created: rfc3339(n.created_at),
            scope: "swarm".into(),
            driver: n.driver.to_string(),
            enable_ipv6: false,
            ipam: Ipam {
                driver: "default".into(),
                config: vec![IpamConfig {
                    subnet: n.subnet.to_string(),
                    gateway: n.gateway.to_string(),
                }],
            },
            internal: false,
            attachable: n.attachable,
            ingress: n.ingress,
            options,
            labels: n.labels.clone(),
        }
    }
}

/// A secret without its data: all that the API ever says about one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Created at (Unix seconds).
    pub created_at: u64,
    /// Last change (Unix seconds).
    pub updated_at: u64,
}

impl SecretView {
    /// The view of `s`, leaving its data behind.
    pub fn of(s: &Secret) -> Self {
        SecretView {
            id: s.id.clone(),
            name: s.name.clone(),
            labels: s.labels.clone(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A secret as `docker secret inspect` shows it (Docker never shows the data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretInspect {
    /// Id.
    #[serde(rename = "ID")]
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// Name and labels.
    pub spec: SecretInspectSpec,
}

/// The `Spec` part of [`SecretInspect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretInspectSpec {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl SecretInspect {
    /// Docker's view of `s`.
    pub fn of(s: &SecretView) -> Self {
        SecretInspect {
            id: s.id.clone(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            spec: SecretInspectSpec {
                name: s.name.clone(),
                labels: s.labels.clone(),
            },
        }
    }
}

/// `secret ls`: sorted by name; `now` (Unix seconds) dates the CREATED column.
pub fn render_secret_ls(secrets: &[SecretView], now: u64) -> String {
    let mut sorted: Vec<&SecretView> = secrets.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let mut rows = vec![vec!["ID".to_string(), "NAME".into(), "CREATED".into()]];
    for s in sorted {
        rows.push(vec![
            s.id.clone(),
            s.name.clone(),
            format!("{} ago", human_duration(now.saturating_sub(s.created_at))),
        ]);
    }
    columns(&rows)
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds, as `docker
/// service logs --timestamps` prints them.
pub fn rfc3339_nanos(ns: u64) -> String {
    let secs = rfc3339(ns / 1_000_000_000);
    format!("{}.{:09}Z", secs.trim_end_matches('Z'), ns % 1_000_000_000)
}

/// Unix seconds as RFC 3339 in UTC, the way Docker prints times.
pub fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A duration the way Docker's CLI says it ("About a minute", "3 hours"),
/// after go-units' `HumanDuration`.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    // go-units rounds hours to the nearest one.
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
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

    #[test]
    fn node_inspect_has_dockers_shape() {
        let view = NodeView {
            id: "abc".into(),
            hostname: "node1".into(),
            role: Role::Manager,
            status: NodeStatus::Ready,
            status_message: String::new(),
            availability: Availability::Drain,
            manager_status: Some(ManagerStatus::Leader),
            addr: "10.0.0.1".parse().unwrap(),
            api_addr: Some("10.0.0.1:2377".parse().unwrap()),
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            raft_id: Some(7),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            version: 4,
            engine: None,
        };
        let v = view.docker_inspect();
        assert_eq!(v["ID"], "abc");
        assert_eq!(v["Version"]["Index"], 4);
        assert_eq!(v["Spec"]["Role"], "manager");
        assert_eq!(v["Spec"]["Availability"], "drain");
        assert_eq!(v["Spec"]["Labels"]["zone"], "a");
        assert_eq!(v["Description"]["Hostname"], "node1");
        assert_eq!(v["Status"]["State"], "ready");
        assert_eq!(v["Status"]["Addr"], "10.0.0.1");
        assert_eq!(v["ManagerStatus"]["Leader"], true);
        assert_eq!(v["ManagerStatus"]["Reachability"], "reachable");
        assert_eq!(v["ManagerStatus"]["Addr"], "10.0.0.1:2377");
        assert_eq!(v["CreatedAt"], "2023-11-14T22:13:20Z");
        let worker = NodeView {
            role: Role::Worker,
            manager_status: None,
            ..view
        };
        assert!(worker.docker_inspect().get("ManagerStatus").is_none());
    }

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
            ingress_ip: None,
            engine: None,
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

    fn network(name: &str, id: &str, vni: u32, encrypted: bool) -> Network {
        Network {
            id: id.into(),
            name: name.into(),
            driver: crate::state::NetworkDriver::Overlay,
            subnet: "10.0.1.0/24".parse().unwrap(),
            gateway: "10.0.1.1".parse().unwrap(),
            vni,
            encrypted,
            attachable: true,
            ingress: false,
            labels: BTreeMap::from([("tier".into(), "front".into())]),
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn network_ls_looks_like_dockers() {
        let networks = vec![
            network("front", "qwertyuiopasdfghjklzxcvbn", 4097, false),
            network("ingress", "abcdefghijklmnopqrstuvwxy", 4096, false),
        ];
        let expected = "\
NETWORK ID     NAME      DRIVER    SCOPE
qwertyuiopas   front     overlay   swarm
abcdefghijkl   ingress   overlay   swarm
";
        assert_eq!(render_network_ls(&networks, false), expected);
        assert!(render_network_ls(&networks, true).contains("qwertyuiopasdfghjklzxcvbn"));
    }

    #[test]
    fn network_inspect_has_dockers_fields_and_the_vni() {
        let v =
            serde_json::to_value(NetworkInspect::of(&network("front", "x", 4097, true))).unwrap();
        assert_eq!(v["Name"], "front");
        assert_eq!(v["Id"], "x");
        assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
        assert_eq!(v["Scope"], "swarm");
        assert_eq!(v["Driver"], "overlay");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
        assert_eq!(v["Options"][OPT_VXLANID_LIST], "4097");
        assert_eq!(v["Options"]["encrypted"], "");
        assert_eq!(v["Attachable"], true);
        assert_eq!(v["Ingress"], false);
        assert_eq!(v["Labels"]["tier"], "front");
        let plain =
            serde_json::to_value(NetworkInspect::of(&network("b", "y", 4098, false))).unwrap();
        assert!(plain["Options"].get("encrypted").is_none());
    }

    #[test]
    fn secrets_are_shown_without_their_data() {
        let secret = Secret {
            id: "s1".into(),
            name: "db_password".into(),
            data: crate::state::SecretData::new(b"hunter2".to_vec()),
            labels: BTreeMap::new(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
        };
        let view = SecretView::of(&secret);
        let json = serde_json::to_string(&view).unwrap();
        let inspect = serde_json::to_string(&SecretInspect::of(&view)).unwrap();
        for text in [&json, &inspect, &format!("{secret:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
                "{text}"
            );
        }
        assert!(
            inspect.contains("\"Spec\":{\"Name\":\"db_password\""),
            "{inspect}"
        );
        let out = render_secret_ls(&[view], 1_700_000_090);
        assert_eq!(
            out,
            "ID   NAME          CREATED\ns1   db_password   About a minute ago\n"
        );
    }

    #[test]
    fn durations_read_like_dockers() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (730 * 86400, "2 years"),
        ];
        for (secs, words) in cases {
            assert_eq!(human_duration(secs), words, "{secs} s");
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn init_prints_the_join_command() {
        let out = render_init("abc", "SWMTKN-1-x-y", "10.0.0.1:2377".parse().unwrap());
        assert!(out.starts_with("Swarm initialized: current node (abc) is now a manager.\n"));
        assert!(out.contains("    shoal swarm join --token SWMTKN-1-x-y 10.0.0.1:2377\n"));
        assert!(out.contains("run 'shoal swarm join-token manager'"));
    }
}
