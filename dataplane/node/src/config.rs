//! Typed, validated data-plane configuration.
//!
//! The daemon parses its file (or, later, the manager's messages) into these
//! types; everything here is already checked, so the data plane never meets an
//! inconsistent setting at run time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use shoal_overlay::keys::{Cipher, KeyRing};
use shoal_overlay::mac::MacAddr;
use shoal_overlay::seal::SEAL_OVERHEAD;
use shoal_overlay::vxlan::{Vni, PLAIN_OVERHEAD, VXLAN_PORT};

pub use shoal_overlay::lb::vip::{VipBackend, VipService};

/// Everything the data plane of one node needs.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// This node's underlay address, as its peers see it (the source of its
    /// VXLAN frames, bound into the traffic keys of encrypted networks).
    pub node_addr: IpAddr,
    /// Where the VXLAN socket listens.
    pub listen: SocketAddr,
    /// The UDP port peers listen on (4789, the IANA VXLAN port).
    pub peer_port: u16,
    /// The MTU of the underlay links; endpoint MTUs are derived from it.
    pub underlay_mtu: u32,
    /// Forwarding workers: queues per TAP device and VXLAN sockets
    /// (`SO_REUSEPORT`), so flows spread over cores. 1 disables multi-queue.
    pub workers: usize,
    /// The overlay networks this node takes part in at start (none is fine:
    /// [`crate::DataPlane::add_network`] adds them later).
    pub networks: Vec<NetworkConfig>,
    /// The endpoints (TAP devices) this node serves at start (none is fine:
    /// [`crate::DataPlane::add_endpoint`] adds them later).
    pub endpoints: Vec<LocalEndpointConfig>,
}

/// The most forwarding workers (and TAP queues) a node may ask for.
pub const MAX_WORKERS: usize = 16;

/// One worker per core, at most 8: beyond that the TAP queue and socket
/// fan-out costs more than it spreads.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8)
}

/// Encryption settings of a network.
#[derive(Debug, Clone)]
pub struct Encryption {
    /// The AEAD in use.
    pub cipher: Cipher,
    /// The accepted keys and the one used for sending.
    pub keys: KeyRing,
}

/// One overlay network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// Unique VXLAN network identifier.
    pub vni: Vni,
    /// The overlay subnet; endpoint addresses must lie inside it.
    pub subnet: Ipv4Net,
    /// Present when the network is encrypted.
    pub encryption: Option<Encryption>,
    /// Underlay addresses of the other nodes taking part.
    pub peers: Vec<IpAddr>,
    /// Endpoints living on other nodes.
    pub remotes: Vec<RemoteEndpoint>,
}

impl NetworkConfig {
    /// The endpoint MTU on an underlay of `underlay_mtu` bytes: the underlay
    /// minus the VXLAN overhead (50 bytes), minus the seal overhead (32 bytes)
    /// when encrypted. 1450 plain and 1418 encrypted on a 1500-byte underlay.
    pub fn endpoint_mtu(&self, underlay_mtu: u32) -> u32 {
        let seal = if self.encryption.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        };
        underlay_mtu.saturating_sub((PLAIN_OVERHEAD + seal) as u32)
    }

    /// Checks this network on its own, for a node at `node_addr` on an
    /// underlay of `underlay_mtu` bytes (uniqueness of name and VNI is the
    /// caller's: the config or the running data plane).
    pub fn validate(&self, node_addr: IpAddr, underlay_mtu: u32) -> Result<(), ConfigError> {
        let f = |x: &str| format!("network[{}].{x}", self.name);
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(invalid("network.name", "must be 1 to 64 characters"));
        }
        if self.subnet.prefix_len() > 30 {
            return Err(invalid(
                f("subnet"),
                format!(
                    "{} leaves no room for endpoints (use /30 or larger)",
                    self.subnet
                ),
            ));
        }
        if self.endpoint_mtu(underlay_mtu) < 576 {
            return Err(invalid(
                f("encrypted"),
                "the underlay MTU leaves less than 576 bytes for endpoints",
            ));
        }
        for peer in &self.peers {
            if *peer == node_addr {
                return Err(invalid(
                    f("peers"),
                    format!("{peer} is this node's own address"),
                ));
            }
        }
        for r in &self.remotes {
            if !self.subnet.contains(&r.ip) {
                return Err(invalid(
                    f("remote"),
                    format!("{} is outside the subnet {}", r.ip, self.subnet),
                ));
            }
            if r.node == node_addr {
                return Err(invalid(
                    f("remote"),
                    format!(
                        "{} is placed on this node's own address; declare it as a local endpoint",
                        r.ip
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An endpoint on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// MAC address.
    pub mac: MacAddr,
    /// The owning node's underlay address.
    pub node: IpAddr,
}

/// An endpoint this node serves: a TAP device created inside a network namespace.
#[derive(Debug, Clone)]
pub struct LocalEndpointConfig {
    /// The network it is attached to.
    pub network: String,
    /// The namespace the TAP device is created in (a task's namespace).
    pub netns: PathBuf,
    /// The interface name inside that namespace (`eth0` for a task's first network).
    pub ifname: String,
    /// Overlay address; the prefix length comes from the network's subnet.
    pub ip: Ipv4Addr,
    /// MAC address.
    pub mac: MacAddr,
    /// The device is handed over to another party that moves it into its
    /// own namespace and addresses it there (Docker, through the network
    /// plugin): it is made with its MAC and MTU but left down and without
    /// an address, so the namespace it is born in never routes the overlay.
    pub handover: bool,
}

impl LocalEndpointConfig {
    /// Checks this endpoint against the network it attaches to (`net` must be
    /// the network it names).
    pub fn validate(&self, net: &NetworkConfig) -> Result<(), ConfigError> {
        self.validate_in(&net.name, net.subnet)
    }

    /// Like [`LocalEndpointConfig::validate`], with the network given by its
    /// name and subnet.
    pub(crate) fn validate_in(&self, network: &str, subnet: Ipv4Net) -> Result<(), ConfigError> {
        let f = |x: &str| format!("endpoint[{}].{x}", self.ip);
        if !subnet.contains(&self.ip) {
            return Err(invalid(
                f("ip"),
                format!(
                    "{} is outside the subnet {} of network {:?}",
                    self.ip, subnet, network
                ),
            ));
        }
        if self.ip == subnet.network() || self.ip == subnet.broadcast() {
            return Err(invalid(
                f("ip"),
                format!(
                    "{} is the network or broadcast address of {}",
                    self.ip, subnet
                ),
            ));
        }
        if self.mac.is_multicast() {
            return Err(invalid(
                f("mac"),
                format!(
                    "{} is a group address; endpoints need a unicast MAC",
                    self.mac
                ),
            ));
        }
        if self.ifname.is_empty() || self.ifname.len() > 15 || self.ifname.contains(['/', ' ']) {
            return Err(invalid(
                f("ifname"),
                format!(
                    "{:?} is not a valid interface name (1 to 15 characters, no '/' or space)",
                    self.ifname
                ),
            ));
        }
        Ok(())
    }
}

/// A configuration that cannot work, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field's value is wrong; the message names the field and why.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the offending field, e.g. `network[blue].vni`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks the VIP services of network `network` (subnet `subnet`): every
/// VIP and backend inside the subnet and neither its network nor its
/// broadcast address, each VIP listed once and never a backend's address.
pub fn validate_vip_services(
    network: &str,
    subnet: Ipv4Net,
    services: &[VipService],
) -> Result<(), ConfigError> {
    let usable =
        |ip: &Ipv4Addr| subnet.contains(ip) && *ip != subnet.network() && *ip != subnet.broadcast();
    let mut vips = std::collections::HashSet::new();
    let backends: std::collections::HashSet<Ipv4Addr> = services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.ip))
        .collect();
    for s in services {
        let f = |x: &str| format!("network[{network}].vip[{}].{x}", s.vip);
        if !usable(&s.vip) {
            return Err(invalid(
                f("vip"),
                format!("{} is not a host address of the subnet {subnet}", s.vip),
            ));
        }
        if !vips.insert(s.vip) {
            return Err(invalid(f("vip"), "listed twice"));
        }
        if backends.contains(&s.vip) {
            return Err(invalid(
                f("vip"),
                format!(
                    "{} is also a backend's address; a VIP is never a task's",
                    s.vip
                ),
            ));
        }
        for b in &s.backends {
            if !usable(&b.ip) {
                return Err(invalid(
                    f("backends"),
                    format!("{} is not a host address of the subnet {subnet}", b.ip),
                ));
            }
        }
    }
    Ok(())
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl DataPlaneConfig {
    /// A config with no networks, listening on the VXLAN port on all addresses.
    pub fn new(node_addr: IpAddr) -> Self {
        Self {
            node_addr,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), VXLAN_PORT),
            peer_port: VXLAN_PORT,
            underlay_mtu: 1500,
            workers: default_workers(),
            networks: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkConfig> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// Checks every cross-field rule; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(invalid(
                "node.workers",
                format!("{} is outside 1..={MAX_WORKERS}", self.workers),
            ));
        }
        if !(1280..=65535).contains(&self.underlay_mtu) {
            return Err(invalid(
                "node.underlay_mtu",
                format!("{} is outside 1280..=65535", self.underlay_mtu),
            ));
        }
        if self.node_addr.is_unspecified() {
            return Err(invalid(
                "node.address",
                "must be this node's own underlay address, not 0.0.0.0",
            ));
        }
        let mut vnis = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for net in &self.networks {
            net.validate(self.node_addr, self.underlay_mtu)?;
            if !names.insert(net.name.as_str()) {
                return Err(invalid(
                    format!("network[{}].name", net.name),
                    "two networks have this name",
                ));
            }
            if !vnis.insert(net.vni) {
                return Err(invalid(
                    format!("network[{}].vni", net.name),
                    format!("VNI {} is used by another network", net.vni),
                ));
            }
        }
        let mut ifaces = std::collections::HashSet::new();
        let mut ips = std::collections::HashSet::new();
        for ep in &self.endpoints {
            let Some(net) = self.network(&ep.network) else {
                return Err(invalid(
                    format!("endpoint[{}].network", ep.ip),
                    format!("no network named {:?}", ep.network),
                ));
            };
            ep.validate(net)?;
            if !ifaces.insert((ep.netns.clone(), ep.ifname.clone())) {
                return Err(invalid(
                    format!("endpoint[{}].ifname", ep.ip),
                    format!("{} already exists in {}", ep.ifname, ep.netns.display()),
                ));
            }
            if !ips.insert((ep.network.as_str(), ep.ip)) {
                return Err(invalid(
                    format!("endpoint[{}].ip", ep.ip),
                    format!(
                        "two endpoints of network {:?} have this address",
                        ep.network
                    ),
                ));
            }
        }
        Ok(())
    }
}
