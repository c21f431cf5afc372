//! The topology: a bridge namespace, node and client namespaces on it, and bare
//! task namespaces, all removed on drop.
//!
//! The underlay bridge lives in a namespace of its own rather than on the host,
//! so building a topology changes nothing in the host's network (no links, no
//! addresses, no firewall interplay with Docker or a VPN), and two topologies
//! with the same address plan can exist side by side.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::child::{lock, log, Registry};
use crate::name::{bridge_port_name, check_prefix, fixed_name, NsName, Role};
use crate::namespace::{self, Namespace};
use crate::plan::{self, MAX_CLIENTS, MAX_MTU, MAX_NODES, MIN_MTU, UNDERLAY_PREFIX_LEN};
use crate::sweep::sweep_stale;
use crate::TopologyError;

/// The underlay bridge's name, inside the bridge namespace.
pub const BRIDGE_IFACE: &str = "br0";
/// The underlay interface's name inside every node and client namespace.
pub const UNDERLAY_IFACE: &str = "eth0";
/// The underlay MTU unless [`TopologyBuilder::underlay_mtu`] says otherwise.
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// Topologies made by this process so far: the counter in namespace names.
static TOPOLOGIES: AtomicU64 = AtomicU64::new(0);

/// Settings of a topology to build; see [`Topology::builder`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    nodes: usize,
    clients: usize,
    underlay_mtu: u32,
    fixed_prefix: Option<String>,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            nodes: 0,
            clients: 0,
            underlay_mtu: DEFAULT_UNDERLAY_MTU,
            fixed_prefix: None,
        }
    }
}

impl TopologyBuilder {
    /// How many swarm nodes (0 to [`MAX_NODES`]; default 0).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// How many clients (0 to [`MAX_CLIENTS`]; default 0).
    pub fn clients(mut self, clients: usize) -> Self {
        self.clients = clients;
        self
    }

    /// The MTU of every underlay link ([`MIN_MTU`] to [`MAX_MTU`]; default 1500).
    pub fn underlay_mtu(mut self, mtu: u32) -> Self {
        self.underlay_mtu = mtu;
        self
    }

    /// Names the namespaces `<prefix>-br`, `<prefix>-n1`, ... (see
    /// [`fixed_name`]) instead of after this process, so that a later process
    /// can find them: for topologies meant to outlive this one through
    /// [`Topology::persist`]. The build fails with [`TopologyError::Exists`]
    /// when one of the names is taken; nothing existing is replaced.
    pub fn fixed_names(mut self, prefix: &str) -> Self {
        self.fixed_prefix = Some(prefix.to_string());
        self
    }

    /// Checks the settings against the address plan, without touching the system.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if let Some(prefix) = &self.fixed_prefix {
            check_prefix(prefix).map_err(|problem| TopologyError::InvalidConfig {
                field: "fixed_names",
                problem,
            })?;
        }
        if self.nodes > MAX_NODES {
            return Err(TopologyError::InvalidConfig {
                field: "nodes",
                problem: format!(
                    "is {}; the address plan holds at most {MAX_NODES}",
                    self.nodes
                ),
            });
        }
        if self.clients > MAX_CLIENTS {
            return Err(TopologyError::InvalidConfig {
                field: "clients",
                problem: format!(
                    "is {}; the address plan holds at most {MAX_CLIENTS}",
                    self.clients
                ),
            });
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.underlay_mtu) {
            return Err(TopologyError::InvalidConfig {
                field: "underlay_mtu",
                problem: format!(
                    "is {}; it must be between {MIN_MTU} and {MAX_MTU}",
                    self.underlay_mtu
                ),
            });
        }
        Ok(())
    }

    /// Sweeps namespaces left by crashed runs (see [`sweep_stale`]), then builds
    /// the topology. On failure everything made so far is removed again.
    pub fn build(self) -> Result<Topology, TopologyError> {
        self.validate()?;
        sweep_stale();
        let owned = Owned {
            naming: match self.fixed_prefix.clone() {
                Some(prefix) => Naming::Fixed(prefix),
                None => Naming::Process {
                    pid: std::process::id(),
                    topology: TOPOLOGIES.fetch_add(1, Ordering::Relaxed),
                },
            },
            children: Arc::default(),
            names: Mutex::default(),
        };
        let bridge = owned.create(Role::Bridge, 0, "bridge".into())?;
        let mut lines =
            format!("link add {BRIDGE_IFACE} type bridge\nlink set {BRIDGE_IFACE} up\n");
        let mut hosts = Vec::new();
        for (role, count) in [(Role::Node, self.nodes), (Role::Client, self.clients)] {
            for index in 0..count {
                let (addr, label) = match role {
                    Role::Node => (plan::node_addr(index), format!("node{index}")),
                    _ => (plan::client_addr(index), format!("client{index}")),
                };
                // Validated above, so the plan has an address for every host.
                let (Some(addr), Ok(index32)) = (addr, u32::try_from(index)) else {
                    return Err(TopologyError::InvalidConfig {
                        field: if role == Role::Node {
                            "nodes"
                        } else {
                            "clients"
                        },
                        problem: format!("reaches index {index}, past the address plan"),
                    });
                };
                let ns = owned.create(role, index32, label)?;
                let port = bridge_port_name(role, index32);
                let mtu = self.underlay_mtu;
                lines += &format!(
                    "link add {port} mtu {mtu} type veth peer name {UNDERLAY_IFACE} mtu {mtu} netns {}\n\
                     link set {port} master {BRIDGE_IFACE} up\n",
                    ns.name()
                );
                hosts.push(Host { ns, addr, index });
            }
        }
        namespace::ip_batch(bridge.name(), &lines)?;
        for host in &hosts {
            namespace::ip_batch(
                host.name(),
                &format!(
                    "addr add {}/{UNDERLAY_PREFIX_LEN} dev {UNDERLAY_IFACE}\nlink set {UNDERLAY_IFACE} up\n",
                    host.addr
                ),
            )?;
        }
        let clients = hosts.split_off(self.nodes);
        Ok(Topology {
            bridge,
            nodes: hosts,
            clients,
            underlay_mtu: self.underlay_mtu,
            tasks: AtomicU32::new(0),
            owned,
        })
    }
}

/// A node or client: a namespace with `eth0` on the underlay.
///
/// It does not deref to its [`Namespace`]; [`Host::ns`] gives it, so that code
/// says when it acts inside the namespace.
#[derive(Debug, Clone)]
pub struct Host {
    ns: Namespace,
    addr: Ipv4Addr,
    index: usize,
}

impl Host {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// The underlay address of `eth0` (the prefix is [`UNDERLAY_PREFIX_LEN`]).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its index among the nodes, or among the clients.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The namespace, to run closures and programs in.
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }
}

/// Network namespaces wired as a swarm's underlay.
///
/// One namespace holds a Linux bridge [`BRIDGE_IFACE`]; every node and client
/// namespace has a veth [`UNDERLAY_IFACE`] on it with its address from
/// [`crate::plan`], `lo` up and IPv6 off. Dropping the topology stops every
/// process started through its namespaces, SIGKILLs any other process left in
/// them, then removes every namespace it made (which removes the veths and the
/// bridge). Drop never panics, also while unwinding from a failed test;
/// failures are written to stderr.
#[derive(Debug)]
pub struct Topology {
    bridge: Namespace,
    nodes: Vec<Host>,
    clients: Vec<Host>,
    underlay_mtu: u32,
    tasks: AtomicU32,
    // Last, so it is dropped after the handles above (which do not need it).
    owned: Owned,
}

impl Topology {
    /// Starts describing a topology.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The swarm nodes, addressed from 10.99.0.11 up.
    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    /// Node `index`. Panics, naming the node count, when there is no such node.
    pub fn node(&self, index: usize) -> &Host {
        self.nodes.get(index).unwrap_or_else(|| {
            panic!(
                "no node {index}: the topology has {} nodes",
                self.nodes.len()
            )
        })
    }

    /// The clients, addressed from 10.99.0.101 up.
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// Client `index`. Panics, naming the client count, when there is no such
    /// client.
    pub fn client(&self, index: usize) -> &Host {
        self.clients.get(index).unwrap_or_else(|| {
            panic!(
                "no client {index}: the topology has {} clients",
                self.clients.len()
            )
        })
    }

    /// The namespace holding the bridge (capture on [`BRIDGE_IFACE`] there to see
    /// all underlay traffic).
    pub fn bridge(&self) -> &Namespace {
        &self.bridge
    }

    /// The MTU of the underlay links.
    pub fn underlay_mtu(&self) -> u32 {
        self.underlay_mtu
    }

    /// Makes a namespace with only `lo` up and no other link, standing in for a
    /// task; the data plane puts its TAP device there. `label` names it in
    /// [`Namespace::label`] and messages. Removed with the topology.
    pub fn add_bare_namespace(&self, label: &str) -> Result<Namespace, TopologyError> {
        let index = self.tasks.fetch_add(1, Ordering::Relaxed);
        self.owned.create(Role::Task, index, label.to_string())
    }

    /// The names of every namespace of the topology, in the order they were made.
    pub fn namespace_names(&self) -> Vec<String> {
        lock(&self.owned.names).clone()
    }

    /// Keeps the namespaces after this topology is gone and says what they
    /// are, for `shoal lab`, whose nodes outlive the command that made them.
    ///
    /// Processes started through [`Namespace::spawn`] are stopped as on drop
    /// (their handles would stop them anyway); start what must outlive the
    /// topology untracked, through [`Namespace::command`]. The namespaces are
    /// removed only by [`crate::teardown`] with
    /// [`PersistedTopology::namespace_names`]. Build with
    /// [`TopologyBuilder::fixed_names`] so that they can be found again even
    /// if that list is lost.
    pub fn persist(self) -> PersistedTopology {
        let names = std::mem::take(&mut *lock(&self.owned.names));
        let host = |h: &Host| PersistedHost {
            name: h.name().to_string(),
            addr: h.addr,
        };
        PersistedTopology {
            bridge: self.bridge.name().to_string(),
            nodes: self.nodes.iter().map(host).collect(),
            clients: self.clients.iter().map(host).collect(),
            names,
        }
        // `self` drops here with no names left to remove.
    }
}

/// A node or client of a persisted topology: its namespace's name and its
/// underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedHost {
    /// The namespace's name.
    pub name: String,
    /// The address of its `eth0`.
    pub addr: Ipv4Addr,
}

/// What is left of a [`Topology`] after [`Topology::persist`]: names and
/// addresses only. Dropping it removes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedTopology {
    /// The bridge namespace's name.
    pub bridge: String,
    /// The nodes, in order.
    pub nodes: Vec<PersistedHost>,
    /// The clients, in order.
    pub clients: Vec<PersistedHost>,
    names: Vec<String>,
}

impl PersistedTopology {
    /// Every namespace it made, in the order they were made (pass them to
    /// [`crate::teardown`]).
    pub fn namespace_names(&self) -> &[String] {
        &self.names
    }
}

/// How a topology names its namespaces.
#[derive(Debug)]
enum Naming {
    /// `shl<pid>x<topology>...`: unique per process, swept once it is dead.
    Process { pid: u32, topology: u64 },
    /// `<prefix>-n1`...: found again by a later process, never swept.
    Fixed(String),
}

/// What a topology owns: the namespaces it made and the children started in
/// them. Cleans up on drop, also for a topology whose build failed half way.
#[derive(Debug)]
struct Owned {
    naming: Naming,
    children: Arc<Registry>,
    names: Mutex<Vec<String>>,
}

impl Owned {
    /// Creates a namespace, records it for removal, and turns IPv6 off on the
    /// underlay ones.
    fn create(&self, role: Role, index: u32, label: String) -> Result<Namespace, TopologyError> {
        let (name, replace_stale) = match &self.naming {
            Naming::Process { pid, topology } => {
                let name = NsName {
                    pid: *pid,
                    topology: *topology,
                    role,
                    index,
                };
                (name.to_string(), true)
            }
            Naming::Fixed(prefix) => (fixed_name(prefix, role, index), false),
        };
        {
            // Recorded as soon as it exists, so that Drop removes it whatever
            // fails next.
            let mut names = lock(&self.names);
            namespace::create(&name, replace_stale)?;
            names.push(name.clone());
        }
        let ns = Namespace::new(name, label, role, Arc::clone(&self.children));
        if role != Role::Task {
            namespace::disable_ipv6(ns.path())?;
        }
        namespace::ip_batch(ns.name(), "link set lo up\n")?;
        Ok(ns)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.children.close_and_terminate();
        let names = std::mem::take(&mut *lock(&self.names));
        for name in names.iter().rev() {
            if let Err(e) = namespace::remove(name) {
                log(format_args!("cannot remove network namespace {name}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_outside_the_plan_are_refused_before_anything_is_made() {
        let cases = [
            (Topology::builder().nodes(MAX_NODES + 1), "nodes"),
            (Topology::builder().clients(MAX_CLIENTS + 1), "clients"),
            (Topology::builder().fixed_names("a/b"), "fixed_names"),
            (
                Topology::builder().underlay_mtu(MIN_MTU - 1),
                "underlay_mtu",
            ),
            (
                Topology::builder().underlay_mtu(MAX_MTU + 1),
                "underlay_mtu",
            ),
        ];
        for (builder, field) in cases {
            // build() validates first, so this touches nothing even without root.
            let err = builder.build().unwrap_err();
            match &err {
                TopologyError::InvalidConfig { field: f, .. } => assert_eq!(*f, field),
                other => panic!("expected InvalidConfig for {field}, got {other}"),
            }
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn a_persisted_topology_outlives_its_process_until_teardown() {
        let prefix = format!("shoal-topotest-{}", std::process::id());
        let topo = match Topology::builder().nodes(2).fixed_names(&prefix).build() {
            Ok(t) => t,
            Err(e) if e.is_permission_denied() => {
                eprintln!("skipped: needs root ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // A second build with the same names is refused, touching nothing.
        let again = Topology::builder().nodes(1).fixed_names(&prefix).build();
        assert!(
            matches!(again, Err(TopologyError::Exists { .. })),
            "{again:?}"
        );
        let kept = topo.persist();
        // Removes them again even if an assertion below fails.
        struct Guard(Vec<String>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = crate::teardown(&self.0);
            }
        }
        let _guard = Guard(kept.namespace_names().to_vec());
        assert_eq!(kept.bridge, format!("{prefix}-br"));
        assert_eq!(kept.nodes[1].name, format!("{prefix}-n2"));
        assert_eq!(kept.nodes[1].addr, plan::node_addr(1).unwrap());
        let exists = |n: &str| {
            std::path::Path::new(shoal_sys::netns::NETNS_RUN_DIR)
                .join(n)
                .exists()
        };
        assert!(kept.namespace_names().iter().all(|n| exists(n)));
        // The sweeper leaves them alone.
        sweep_stale();
        assert!(kept.namespace_names().iter().all(|n| exists(n)));
        // Still wired: node 2's eth0 holds its address (no ping needed).
        let addr = crate::netns_command(&kept.nodes[1].name, "ip")
            .args(["-4", "-o", "addr", "show", "dev", UNDERLAY_IFACE])
            .output()
            .unwrap();
        let addr = String::from_utf8_lossy(&addr.stdout);
        assert!(addr.contains(&format!("{}/", kept.nodes[1].addr)), "{addr}");
        crate::teardown(kept.namespace_names()).unwrap();
        assert!(kept.namespace_names().iter().all(|n| !exists(n)));
        // Idempotent.
        crate::teardown(kept.namespace_names()).unwrap();
    }

    #[test]
    fn the_largest_plan_is_accepted() {
        let builder = Topology::builder()
            .nodes(MAX_NODES)
            .clients(MAX_CLIENTS)
            .underlay_mtu(MAX_MTU);
        builder.validate().unwrap();
        assert_eq!(DEFAULT_UNDERLAY_MTU, Topology::builder().underlay_mtu);
    }
}
