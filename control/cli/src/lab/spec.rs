//! What a lab is, as pure data: the validated flags of `lab up`, and
//! `lab.json`, the record that later commands (`ls`, `exec`, `down`) and
//! tests read.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_topology::plan::{MAX_CLIENTS, MAX_NODES};

/// The most bytes a lab name may have: it goes into namespace names and into
/// socket paths, which Linux caps at 108 bytes.
pub const MAX_NAME_LEN: usize = 32;

/// The flags of `lab up`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The lab's name.
    pub name: String,
    /// How many nodes.
    pub nodes: usize,
    /// How many of them are managers (the first ones).
    pub managers: usize,
    /// How many client namespaces beside the swarm (outside it, on the same
    /// underlay bridge), to reach published ports from.
    pub clients: usize,
}

impl LabSpec {
    /// Checks the flags; the error names the flag at fault.
    pub fn new(
        name: &str,
        nodes: usize,
        managers: usize,
        clients: usize,
    ) -> Result<LabSpec, String> {
        check_name(name)?;
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(format!(
                "--nodes is {nodes}; a lab has 1 to {MAX_NODES} nodes"
            ));
        }
        if ![1, 3, 5].contains(&managers) {
            return Err(format!(
                "--managers is {managers}; use 1, 3 or 5 (an odd number keeps a Raft quorum)"
            ));
        }
        if managers > nodes {
            return Err(format!(
                "--managers is {managers} but --nodes is {nodes}; managers are nodes too"
            ));
        }
        if clients > MAX_CLIENTS {
            return Err(format!(
                "--clients is {clients}; a lab has 0 to {MAX_CLIENTS} clients"
            ));
        }
        Ok(LabSpec {
            name: name.to_string(),
            nodes,
            managers,
            clients,
        })
    }
}

/// Checks a lab name (`--name`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--name is {name:?}; use 1 to {MAX_NAME_LEN} ASCII letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// The prefix of the lab's namespace names: `shoal-lab-<name>` (nodes are
/// `shoal-lab-<name>-n1`...).
pub fn namespace_prefix(name: &str) -> String {
    format!("shoal-lab-{name}")
}

/// The node's hostname, which is also its name in `lab exec` and `node ls`:
/// `node1` for index 0.
pub fn node_name(index: usize) -> String {
    format!("node{}", index + 1)
}

/// A client's name in `lab exec` and `lab ls`: `client1` for index 0.
pub fn client_name(index: usize) -> String {
    format!("client{}", index + 1)
}

/// `lab.json`: everything about a lab that outlives `lab up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabFile {
    /// The lab's name.
    pub name: String,
    /// Every namespace it made (bridge first).
    pub namespaces: Vec<String>,
    /// The nodes, node1 first.
    pub nodes: Vec<LabNode>,
    /// The clients, client1 first (absent from labs made before clients
    /// existed).
    #[serde(default)]
    pub clients: Vec<LabClient>,
}

/// A client of a lab: a namespace on the lab's bridge with no daemon, the
/// outside world from the swarm's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabClient {
    /// `client1`...
    pub name: String,
    /// Its network namespace.
    pub namespace: String,
    /// Its underlay address.
    pub addr: Ipv4Addr,
}

/// One node of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    /// `node1`...: its hostname in the swarm.
    pub name: String,
    /// Its network namespace.
    pub namespace: String,
    /// Its underlay address (what it advertises).
    pub addr: Ipv4Addr,
    /// `manager` or `worker`, as `lab up` made it (the swarm may have changed
    /// it since; `lab ls` asks).
    pub role: String,
    /// The daemon's process id, once started.
    pub pid: Option<u32>,
    /// The daemon's API socket (`SHOAL_CONTROL`).
    pub control: PathBuf,
    /// The daemon's `--state-dir`.
    pub state_dir: PathBuf,
    /// Where the daemon's output goes.
    pub log: PathBuf,
}

impl LabNode {
    /// The node's files, under the lab's directory.
    pub fn new(lab_dir: &Path, index: usize, namespace: String, addr: Ipv4Addr) -> LabNode {
        let name = node_name(index);
        let dir = lab_dir.join(&name);
        LabNode {
            namespace,
            addr,
            role: String::new(),
            pid: None,
            control: dir.join("shoald.sock"),
            state_dir: dir.join("state"),
            log: dir.join("shoald.log"),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_named() {
        assert_eq!(
            LabSpec::new("lab", 3, 1, 1),
            Ok(LabSpec {
                name: "lab".into(),
                nodes: 3,
                managers: 1,
                clients: 1,
            })
        );
        LabSpec::new("a-b_9", 5, 5, 0).unwrap();
        LabSpec::new("x", MAX_NODES, 3, MAX_CLIENTS).unwrap();
        for (name, nodes, managers, clients, flag) in [
            ("lab", 0, 1, 1, "--nodes"),
            ("lab", MAX_NODES + 1, 1, 1, "--nodes"),
            ("lab", 3, 2, 1, "--managers"),
            ("lab", 3, 0, 1, "--managers"),
            ("lab", 3, 5, 1, "--managers"),
            ("lab", 3, 1, MAX_CLIENTS + 1, "--clients"),
            ("", 3, 1, 1, "--name"),
            ("-x", 3, 1, 1, "--name"),
            ("a/b", 3, 1, 1, "--name"),
            ("a.b", 3, 1, 1, "--name"),
            (&"x".repeat(MAX_NAME_LEN + 1), 3, 1, 1, "--name"),
        ] {
            let e = LabSpec::new(name, nodes, managers, clients).unwrap_err();
            assert!(e.starts_with(flag), "{name:?} {nodes} {managers}: {e}");
        }
    }

    #[test]
    fn names_fit_namespaces_and_sockets() {
        let name = "x".repeat(MAX_NAME_LEN);
        let prefix = namespace_prefix(&name);
        shoal_topology::name::check_prefix(&prefix).unwrap();
        let node = LabNode::new(
            &Path::new("/run/shoal/lab").join(&name),
            MAX_NODES - 1,
            String::new(),
            Ipv4Addr::LOCALHOST,
        );
        assert!(node.control.as_os_str().len() < 108, "{node:?}");
        assert_eq!(node_name(0), "node1");
        assert_eq!(client_name(0), "client1");
    }

    #[test]
    fn a_lab_file_from_before_clients_still_reads() {
        let old = r#"{"name":"lab","namespaces":["shoal-lab-lab-br"],"nodes":[]}"#;
        let lab: LabFile = serde_json::from_str(old).unwrap();
        assert!(lab.clients.is_empty());
    }
}
