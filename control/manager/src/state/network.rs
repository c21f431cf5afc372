//! Overlay networks in the cluster state, and the address management (IPAM)
//! that gives each one a subnet and a VXLAN id.
//!
//! Allocation is pure and reads nothing but the state: the leader turns a
//! user's [`NetworkSpec`] into a [`Network`] with [`ClusterState::plan_network`]
//! (the lowest free subnet of the cluster's [`AddressPool`] unless the user
//! gave one, the lowest free VNI from [`FIRST_VNI`] up) and proposes it. Every
//! manager checks it again when the command is applied
//! ([`ClusterState::check_network`]), against the state at that point of the
//! log: two creations that raced on a leader, or on two leaders across a
//! failover, cannot both take the same name, subnet or VNI. The second is
//! refused, never applied twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{valid_label_key, Cluster, ClusterState, Refusal, Timestamp};

/// The first VXLAN id handed out. Docker's swarm allocator starts here too,
/// which leaves the ids below it to networks made by hand on the hosts.
pub const FIRST_VNI: u32 = 4096;

/// The largest VXLAN id (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The name of the routing-mesh network `swarm init` creates.
pub const INGRESS_NAME: &str = "ingress";

/// The driver option that asks for an encrypted network (`--opt encrypted`).
pub const OPT_ENCRYPTED: &str = "encrypted";

/// The option under which Docker shows a network's VNI (`network inspect`).
pub const OPT_VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// The smallest subnet an overlay network may have: a /30 holds the gateway
/// and one task address.
pub const SMALLEST_PREFIX: u8 = 30;

/// The only network driver there is: shoal rebuilds Docker's overlay driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    /// VXLAN between nodes, optionally sealed.
    Overlay,
}

impl std::str::FromStr for NetworkDriver {
    type Err = Refusal;
    fn from_str(s: &str) -> Result<Self, Refusal> {
        match s {
            "overlay" => Ok(NetworkDriver::Overlay),
            other => Err(Refusal::UnsupportedDriver(other.to_string())),
        }
    }
}

impl std::fmt::Display for NetworkDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("overlay")
    }
}

/// Where networks without `--subnet` get their subnets: `swarm init
/// --default-addr-pool` carved into `--default-addr-pool-mask-length` blocks.
///
/// Fields are private so that every pool is a valid one: built by
/// [`AddressPool::new`] or read back from the replicated state through the
/// same checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PoolRepr", into = "PoolRepr")]
pub struct AddressPool {
    pool: Ipv4Net,
    subnet_size: u8,
}

#[derive(Serialize, Deserialize)]
struct PoolRepr {
    pool: Ipv4Net,
    subnet_size: u8,
}

impl TryFrom<PoolRepr> for AddressPool {
    type Error = PoolError;
    fn try_from(r: PoolRepr) -> Result<Self, PoolError> {
        AddressPool::new(r.pool, r.subnet_size)
    }
}

impl From<AddressPool> for PoolRepr {
    fn from(p: AddressPool) -> Self {
        PoolRepr {
            pool: p.pool,
            subnet_size: p.subnet_size,
        }
    }
}

/// Why `swarm init` refused an address pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `10.0.0.1/8`: not the network's own address.
    #[error("invalid --default-addr-pool {given}: host bits are set; the network is {network}")]
    HostBits {
        /// What was given.
        given: Ipv4Net,
        /// What was probably meant.
        network: Ipv4Net,
    },
    /// The subnet size does not fit the pool.
    #[error("invalid --default-addr-pool-mask-length {size}: it must be between {min} (the size of the pool {pool}) and {SMALLEST_PREFIX} (a gateway and one address)")]
    SubnetSize {
        /// What was given.
        size: u8,
        /// The pool's own prefix length.
        min: u8,
        /// The pool.
        pool: Ipv4Net,
    },
}

impl Default for AddressPool {
    /// Docker's: 10.0.0.0/8 in /24s.
    fn default() -> Self {
        AddressPool {
            pool: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("/8 is a valid prefix"),
            subnet_size: 24,
        }
    }
}

impl AddressPool {
    /// A pool of `subnet_size` subnets carved from `pool`.
    pub fn new(pool: Ipv4Net, subnet_size: u8) -> Result<Self, PoolError> {
        if pool.trunc() != pool {
            return Err(PoolError::HostBits {
                given: pool,
                network: pool.trunc(),
            });
        }
        if subnet_size < pool.prefix_len() || subnet_size > SMALLEST_PREFIX {
            return Err(PoolError::SubnetSize {
                size: subnet_size,
                min: pool.prefix_len(),
                pool,
            });
        }
        Ok(AddressPool { pool, subnet_size })
    }

    /// The pool.
    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    /// The prefix length of the subnets it hands out.
    pub fn subnet_size(&self) -> u8 {
        self.subnet_size
    }

    /// The lowest `subnet_size` block of the pool that overlaps none of
    /// `taken`, or `None` when the pool is full.
    pub fn first_free<'a>(&self, taken: impl IntoIterator<Item = &'a Ipv4Net>) -> Option<Ipv4Net> {
        let (start, end) = span(&self.pool);
        let (start, end) = (u64::from(start), u64::from(end));
        let step = 1u64 << (32 - self.subnet_size);
        let taken: Vec<(u64, u64)> = taken
            .into_iter()
            .map(|n| {
                let (a, b) = span(n);
                (u64::from(a), u64::from(b))
            })
            .filter(|&(a, b)| a <= end && b >= start)
            .collect();
        // The pool's address is a multiple of `step` (no host bits, and the
        // blocks are no larger than the pool), so aligning to `step` from 0
        // stays on the pool's grid.
        let mut candidate = start;
        while candidate + step - 1 <= end {
            let last = candidate + step - 1;
            let blocker = taken
                .iter()
                .filter(|&&(a, b)| a <= last && b >= candidate)
                .map(|&(_, b)| b)
                .max();
            match blocker {
                None => {
                    let addr = Ipv4Addr::from(u32::try_from(candidate).ok()?);
                    return Ipv4Net::new(addr, self.subnet_size).ok();
                }
                // Skip every block the blocking network covers.
                Some(b) => candidate = (b + 1).div_ceil(step) * step,
            }
        }
        None
    }
}

/// First and last address of a subnet.
fn span(n: &Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

/// Whether two subnets share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    let (a0, a1) = span(a);
    let (b0, b1) = span(b);
    a0 <= b1 && b0 <= a1
}

/// The lowest number in `first..=last` that is not in `used`.
pub fn lowest_free(used: &BTreeSet<u32>, first: u32, last: u32) -> Option<u32> {
    let mut candidate = first;
    for &u in used.range(first..) {
        if u > candidate {
            break;
        }
        candidate = u.checked_add(1)?;
    }
    (candidate <= last).then_some(candidate)
}

/// An overlay network of the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its id: 25 lower-case base-36 characters, like Docker's swarm networks.
    pub id: String,
    /// Its name, unique in the swarm.
    pub name: String,
    /// Always overlay.
    pub driver: NetworkDriver,
    /// Its IPv4 subnet.
    pub subnet: Ipv4Net,
    /// The gateway address (by default the subnet's first host).
    pub gateway: Ipv4Addr,
    /// Its VXLAN id.
    pub vni: u32,
    /// Frames between nodes are sealed with the cluster's network keys.
    pub encrypted: bool,
    /// Standalone containers may attach, not only services' tasks.
    pub attachable: bool,
    /// The routing-mesh network.
    pub ingress: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// What `network create` asks for, before the leader allocates anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The name.
    pub name: String,
    /// The driver as the user wrote it (`-d`); only `overlay` is accepted.
    pub driver: String,
    /// `--subnet`: taken as given (it must overlap no other network).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`: needs `--subnet`.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Driver options (`--opt KEY[=VALUE]`); shoal knows `encrypted`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// `--attachable`.
    #[serde(default)]
    pub attachable: bool,
    /// `--ingress`: the routing-mesh network (there is at most one).
    #[serde(default)]
    pub ingress: bool,
    /// `--label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NetworkSpec {
    /// The ingress network `swarm init` creates.
    pub fn ingress() -> Self {
        NetworkSpec {
            name: INGRESS_NAME.into(),
            driver: "overlay".into(),
            ingress: true,
            ..Default::default()
        }
    }
}

/// Docker's rule for network names (they are DNS name components): letters
/// and digits, with `-` or `_` inside, at most 63 characters.
fn valid_network_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Reads the driver options: whether the network is encrypted.
fn parse_options(options: &BTreeMap<String, String>) -> Result<bool, Refusal> {
    let mut encrypted = false;
    for (k, v) in options {
        match (k.as_str(), v.as_str()) {
            (OPT_ENCRYPTED, "" | "true") => encrypted = true,
            (OPT_ENCRYPTED, "false") => encrypted = false,
            (OPT_ENCRYPTED, other) => {
                return Err(Refusal::BadNetworkOption(format!(
                    "{OPT_ENCRYPTED}={other} (use --opt {OPT_ENCRYPTED} or --opt {OPT_ENCRYPTED}=false)"
                )))
            }
            (other, _) => {
                return Err(Refusal::BadNetworkOption(format!(
                    "{other} (shoal's overlay driver knows only {OPT_ENCRYPTED})"
                )))
            }
        }
    }
    Ok(encrypted)
}

/// The first host of a subnet: the default gateway.
fn first_host(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// Checks a subnet on its own: no host bits, room for a gateway and a task.
fn check_subnet(subnet: &Ipv4Net) -> Result<(), Refusal> {
    if subnet.trunc() != *subnet {
        return Err(Refusal::BadSubnet {
            subnet: *subnet,
            why: format!("host bits are set; the network is {}", subnet.trunc()),
        });
    }
    if subnet.prefix_len() > SMALLEST_PREFIX {
        return Err(Refusal::BadSubnet {
            subnet: *subnet,
            why: format!(
                "it is too small; an overlay network needs at least a /{SMALLEST_PREFIX} (a gateway and one address)"
            ),
        });
    }
    Ok(())
}

/// Checks that a gateway is a usable host address of its subnet.
fn check_gateway(gateway: Ipv4Addr, subnet: &Ipv4Net) -> Result<(), Refusal> {
    let why = if !subnet.contains(&gateway) {
        "it is outside the subnet"
    } else if gateway == subnet.network() {
        "it is the subnet's network address"
    } else if gateway == subnet.broadcast() {
        "it is the subnet's broadcast address"
    } else {
        return Ok(());
    };
    Err(Refusal::BadGateway {
        gateway,
        subnet: *subnet,
        why: why.into(),
    })
}

impl ClusterState {
    /// Turns a user's request into a network, allocating what it leaves
    /// open: the subnet (lowest free block of the pool), the gateway (the
    /// subnet's first host) and the VNI (lowest free from [`FIRST_VNI`]).
    /// The leader supplies the id and the time; the result is what it
    /// proposes, and what [`ClusterState::check_network`] accepts.
    pub fn plan_network(
        &self,
        spec: &NetworkSpec,
        id: String,
        at: Timestamp,
    ) -> Result<Network, Refusal> {
        let cluster = self.cluster.as_ref().ok_or(Refusal::NoCluster)?;
        // What the user can fix comes before what the pool can't give.
        self.check_name_and_kind(&spec.name, spec.ingress)?;
        let driver: NetworkDriver = spec.driver.parse()?;
        let encrypted = parse_options(&spec.options)?;
        let subnet = match spec.subnet {
            Some(subnet) => subnet,
            None => {
                if spec.gateway.is_some() {
                    return Err(Refusal::GatewayWithoutSubnet);
                }
                let pool = cluster.address_pool;
                pool.first_free(self.networks.values().map(|n| &n.subnet))
                    .ok_or(Refusal::PoolExhausted {
                        pool: pool.pool(),
                        size: pool.subnet_size(),
                    })?
            }
        };
        let used: BTreeSet<u32> = self.networks.values().map(|n| n.vni).collect();
        let vni = lowest_free(&used, FIRST_VNI, MAX_VNI).ok_or(Refusal::VniExhausted)?;
        let network = Network {
            id,
            name: spec.name.clone(),
            driver,
            subnet,
            gateway: spec.gateway.unwrap_or_else(|| first_host(&subnet)),
            vni,
            encrypted,
            attachable: spec.attachable,
            ingress: spec.ingress,
            labels: spec.labels.clone(),
            created_at: at,
        };
        self.check_network(&network)?;
        Ok(network)
    }

    /// Whether `network` may join the state as it is: a valid name no other
    /// network has, at most one ingress network, valid label keys, a valid
    /// subnet that overlaps no other network's, a usable gateway, a VNI in
    /// range that no other network uses, a fresh id.
    pub fn check_network(&self, network: &Network) -> Result<(), Refusal> {
        self.check_name_and_kind(&network.name, network.ingress)?;
        if let Some(bad) = network.labels.keys().find(|k| !valid_label_key(k)) {
            return Err(Refusal::BadLabel(bad.clone()));
        }
        check_subnet(&network.subnet)?;
        check_gateway(network.gateway, &network.subnet)?;
        if let Some(other) = self
            .networks
            .values()
            .find(|o| overlaps(&o.subnet, &network.subnet))
        {
            return Err(Refusal::SubnetOverlap {
                subnet: network.subnet,
                network: other.name.clone(),
                other: other.subnet,
            });
        }
        if !(FIRST_VNI..=MAX_VNI).contains(&network.vni) {
            return Err(Refusal::VniOutOfRange(network.vni));
        }
        if let Some(other) = self.networks.values().find(|o| o.vni == network.vni) {
            return Err(Refusal::VniInUse {
                vni: network.vni,
                network: other.name.clone(),
            });
        }
        if self.networks.contains_key(&network.id) {
            return Err(Refusal::NetworkIdInUse(network.id.clone()));
        }
        Ok(())
    }

    /// A valid name that no network has, and no second ingress network.
    fn check_name_and_kind(&self, name: &str, ingress: bool) -> Result<(), Refusal> {
        if !valid_network_name(name) {
            return Err(Refusal::BadNetworkName(name.to_string()));
        }
        if self.networks.values().any(|n| n.name == name) {
            return Err(Refusal::NetworkNameInUse(name.to_string()));
        }
        if ingress {
            if let Some(other) = self.networks.values().find(|n| n.ingress) {
                return Err(Refusal::IngressExists(other.name.clone()));
            }
        }
        Ok(())
    }

    /// Finds a network by full id, name or unique id prefix, in Docker's order.
    pub fn find_network(&self, key: &str) -> Result<&Network, String> {
        super::find_by_key("network", key, &self.networks, |n| &n.name)
    }

    /// What uses network `id`: the names of the services attached to it
    /// (for the ingress network, the services that publish ports through
    /// the routing mesh). [`Command::RemoveNetwork`](super::Command::RemoveNetwork)
    /// refuses to remove a network while the list is not empty, with
    /// Docker's words: "network X is in use by service Y", and for ingress
    /// "ingress network cannot be removed because service Y depends on it".
    pub fn network_users(&self, id: &str) -> Vec<String> {
        self.services_on_network(id)
    }
}

/// The ingress network of a new swarm: the first block of its pool, VNI
/// [`FIRST_VNI`] (10.0.0.0/24 and 4096 with the default pool).
pub fn initial_ingress(cluster: &Cluster, id: String, at: Timestamp) -> Result<Network, Refusal> {
    let empty = ClusterState {
        cluster: Some(cluster.clone()),
        ..Default::default()
    };
    empty.plan_network(&NetworkSpec::ingress(), id, at)
}
