//! The virtual switch: forwarding and ARP tables per overlay network, and the
//! decision for every frame.
//!
//! The switch never floods. Docker's overlay learns nothing from the wire either:
//! every endpoint is announced through the control plane, so the tables are
//! complete, and a frame for an address they do not hold is dropped and counted.
//! ARP requests are answered here from the tables (ARP suppression), so no
//! broadcast ever crosses the underlay.
//!
//! The tables are fed through [`Switch::upsert_endpoint`] and friends: today by
//! the daemon's static configuration file and its local API, later by gossip and
//! the manager. Decisions are pure: [`Switch::from_endpoint`] and
//! [`Switch::from_underlay`] look at a frame and return a [`Verdict`] for the
//! driver to carry out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header,
    Ethernet2HeaderSlice,
};

use crate::counters::DropReason;
use crate::mac::MacAddr;
use crate::vxlan::Vni;

/// Length of an Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of an Ethernet frame carrying an ARP request or reply for IPv4.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ArpEthIpv4Packet::LEN;

/// A local endpoint (a TAP device the driver holds), numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u32);

/// An overlay network's slot in the switch. The switch gives a removed
/// network's id to the next network it adds (the lowest free one), so an id is
/// only meaningful while the caller holds the switch: drivers resolve names to
/// ids under the same lock as the change they make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkId(pub u32);

/// Where an endpoint lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// On this node, behind the given TAP device.
    Local(EndpointId),
    /// On another node, reached by VXLAN to its underlay address.
    Remote(IpAddr),
}

/// One endpoint of a network: the forwarding (MAC) and ARP (IP) facts about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The endpoint's overlay IPv4 address.
    pub ip: Ipv4Addr,
    /// The endpoint's MAC address.
    pub mac: MacAddr,
    /// Where it lives.
    pub location: Location,
}

/// What the driver must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the frame, unchanged, to this local endpoint.
    Deliver(EndpointId),
    /// Encapsulate the frame with the network's VNI (sealing it if the network is
    /// encrypted) and send it to this peer's underlay address.
    Forward {
        /// The peer node's underlay address.
        peer: IpAddr,
        /// The network's VNI.
        vni: Vni,
    },
    /// A reply of this many bytes was written into the reply buffer: send it back
    /// where the frame came from (to the endpoint, or over VXLAN to the sender).
    Reply(usize),
    /// Drop the frame and count it.
    Drop(DropReason),
}

/// A refused change to the switch tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Two networks were given the same VNI.
    #[error("VNI {0} is already used by network {1:?}; every network needs its own VNI")]
    DuplicateVni(Vni, String),
    /// Two networks were given the same name.
    #[error("network {0:?} already exists")]
    DuplicateNetwork(String),
    /// A network id that the switch does not hold.
    #[error("no network with id {0:?}")]
    UnknownNetwork(NetworkId),
    /// An IP address announced with a second MAC on the same network.
    #[error("IP {ip} on network {network:?} already belongs to MAC {existing}; remove that endpoint first")]
    IpInUse {
        /// The network's name.
        network: String,
        /// The contested address.
        ip: Ipv4Addr,
        /// The MAC that holds it.
        existing: MacAddr,
    },
    /// A local endpoint id already attached elsewhere.
    #[error("local endpoint {0:?} is already attached to a network")]
    EndpointInUse(EndpointId),
    /// A network still has local endpoints (TAP devices) attached.
    #[error(
        "network {network:?} still has {endpoints} local endpoint(s) attached; remove them first"
    )]
    NetworkInUse {
        /// The network's name.
        network: String,
        /// How many local endpoints are attached.
        endpoints: usize,
    },
    /// A MTU that leaves no room for an IPv4 packet.
    #[error("MTU {0} is below the IPv4 minimum of 576")]
    MtuTooSmall(u32),
}

/// Static facts about a network, given when it is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The network's name, for errors and metrics.
    pub name: String,
    /// Its VXLAN network identifier.
    pub vni: Vni,
    /// The endpoint MTU (IP packet size), already reduced by the encapsulation
    /// overhead; frames above `mtu + 14` bytes are dropped as oversize.
    pub mtu: u32,
    /// Whether frames on this network are sealed.
    pub encrypted: bool,
}

#[derive(Debug)]
struct NetworkTable {
    spec: NetworkSpec,
    fdb: HashMap<MacAddr, Location>,
    arp: HashMap<Ipv4Addr, MacAddr>,
    /// Peers named explicitly (nodes that take part without endpoints yet).
    static_peers: HashSet<IpAddr>,
    /// How many remote endpoints each peer holds; a peer with none is forgotten.
    endpoint_peers: HashMap<IpAddr, usize>,
}

impl NetworkTable {
    fn max_frame(&self) -> usize {
        self.spec.mtu as usize + ETHERNET_HEADER_LEN
    }

    fn is_peer(&self, addr: &IpAddr) -> bool {
        self.static_peers.contains(addr) || self.endpoint_peers.contains_key(addr)
    }
}

/// The forwarding state of every overlay network on this node.
#[derive(Debug, Default)]
pub struct Switch {
    /// Indexed by `NetworkId`; `None` for the slot of a removed network.
    networks: Vec<Option<NetworkTable>>,
    by_vni: HashMap<Vni, NetworkId>,
    local: HashMap<EndpointId, (NetworkId, MacAddr)>,
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a network; its VNI and name must be unused.
    pub fn add_network(&mut self, spec: NetworkSpec) -> Result<NetworkId, TableError> {
        if spec.mtu < 576 {
            return Err(TableError::MtuTooSmall(spec.mtu));
        }
        if let Some(&id) = self.by_vni.get(&spec.vni) {
            let other = self.table(id)?.spec.name.clone();
            return Err(TableError::DuplicateVni(spec.vni, other));
        }
        if self.network_by_name(&spec.name).is_some() {
            return Err(TableError::DuplicateNetwork(spec.name));
        }
        let table = NetworkTable {
            spec,
            fdb: HashMap::new(),
            arp: HashMap::new(),
            static_peers: HashSet::new(),
            endpoint_peers: HashMap::new(),
        };
        let slot = match self.networks.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.networks.push(None);
                self.networks.len() - 1
            }
        };
        let id = NetworkId(slot as u32);
        self.by_vni.insert(table.spec.vni, id);
        self.networks[slot] = Some(table);
        Ok(id)
    }

    /// Removes a network with all its records and peers, and returns its spec.
    /// Refused while local endpoints are attached to it: the driver holds their
    /// devices and must take them down first.
    pub fn remove_network(&mut self, id: NetworkId) -> Result<NetworkSpec, TableError> {
        let table = self.table(id)?;
        let attached = self.local.values().filter(|&&(net, _)| net == id).count();
        if attached > 0 {
            return Err(TableError::NetworkInUse {
                network: table.spec.name.clone(),
                endpoints: attached,
            });
        }
        let table = self.networks[id.0 as usize]
            .take()
            .ok_or(TableError::UnknownNetwork(id))?;
        self.by_vni.remove(&table.spec.vni);
        while self.networks.last().is_some_and(Option::is_none) {
            self.networks.pop();
        }
        Ok(table.spec)
    }

    /// Every network's id, in id order.
    pub fn network_ids(&self) -> impl Iterator<Item = NetworkId> + '_ {
        self.networks
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NetworkId(i as u32))
    }

    /// The network carried on `vni`, if any.
    pub fn network_by_vni(&self, vni: Vni) -> Option<NetworkId> {
        self.by_vni.get(&vni).copied()
    }

    /// The network called `name`, if any.
    pub fn network_by_name(&self, name: &str) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.spec.name == name))
            .map(|i| NetworkId(i as u32))
    }

    /// The static facts of a network.
    pub fn spec(&self, id: NetworkId) -> Option<&NetworkSpec> {
        self.table(id).ok().map(|n| &n.spec)
    }

    /// The network a local endpoint is attached to.
    pub fn endpoint_network(&self, ep: EndpointId) -> Option<NetworkId> {
        self.local.get(&ep).map(|&(net, _)| net)
    }

    /// The MAC of the endpoint (local or remote) at `ip` on network `id`.
    pub fn mac_of(&self, id: NetworkId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.table(id).ok()?.arp.get(&ip).copied()
    }

    /// Every endpoint record of a network, sorted by IP.
    pub fn endpoints(&self, id: NetworkId) -> Vec<EndpointRecord> {
        let Ok(table) = self.table(id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = table
            .arp
            .iter()
            .filter_map(|(&ip, &mac)| {
                table
                    .fdb
                    .get(&mac)
                    .map(|&location| EndpointRecord { ip, mac, location })
            })
            .collect();
        out.sort_by_key(|r| r.ip);
        out
    }

    /// Names a peer node of a network explicitly, so frames from it are accepted
    /// before it announces any endpoint.
    pub fn add_peer(&mut self, id: NetworkId, peer: IpAddr) -> Result<(), TableError> {
        self.table_mut(id)?.static_peers.insert(peer);
        Ok(())
    }

    /// Replaces the peers named explicitly. Nodes that hold remote endpoints
    /// of the network stay peers until their last endpoint is removed.
    pub fn set_peers(
        &mut self,
        id: NetworkId,
        peers: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), TableError> {
        self.table_mut(id)?.static_peers = peers.into_iter().collect();
        Ok(())
    }

    /// The peers named explicitly, sorted.
    pub fn peers(&self, id: NetworkId) -> Vec<IpAddr> {
        let Ok(table) = self.table(id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = table.static_peers.iter().copied().collect();
        out.sort();
        out
    }

    /// Adds an endpoint, or moves an existing one (same MAC) to a new IP or place.
    pub fn upsert_endpoint(
        &mut self,
        id: NetworkId,
        record: EndpointRecord,
    ) -> Result<(), TableError> {
        let table = self.table(id)?;
        if let Some(&existing) = table.arp.get(&record.ip) {
            if existing != record.mac {
                return Err(TableError::IpInUse {
                    network: table.spec.name.clone(),
                    ip: record.ip,
                    existing,
                });
            }
        }
        if let Location::Local(ep) = record.location {
            match self.local.get(&ep) {
                Some(&(net, mac)) if net != id || mac != record.mac => {
                    return Err(TableError::EndpointInUse(ep));
                }
                _ => {}
            }
        }
        self.remove_endpoint(id, record.mac)?;
        let table = self.table_mut(id)?;
        table.fdb.insert(record.mac, record.location);
        table.arp.insert(record.ip, record.mac);
        match record.location {
            Location::Remote(peer) => *table.endpoint_peers.entry(peer).or_default() += 1,
            Location::Local(ep) => {
                self.local.insert(ep, (id, record.mac));
            }
        }
        Ok(())
    }

    /// Removes the endpoint with this MAC from a network; true if it was there.
    pub fn remove_endpoint(&mut self, id: NetworkId, mac: MacAddr) -> Result<bool, TableError> {
        let table = self.table_mut(id)?;
        let Some(location) = table.fdb.remove(&mac) else {
            return Ok(false);
        };
        table.arp.retain(|_, m| *m != mac);
        match location {
            Location::Remote(peer) => {
                if let Some(n) = table.endpoint_peers.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        table.endpoint_peers.remove(&peer);
                    }
                }
            }
            Location::Local(ep) => {
                self.local.remove(&ep);
            }
        }
        Ok(true)
    }

    /// Removes a local endpoint from whatever network holds it; its record
    /// (MAC and IP) goes with it. True if it was attached.
    pub fn remove_local(&mut self, ep: EndpointId) -> bool {
        match self.local.get(&ep) {
            Some(&(net, mac)) => self.remove_endpoint(net, mac).unwrap_or(false),
            None => false,
        }
    }

    /// Decides what to do with a frame that a local endpoint sent.
    ///
    /// An ARP reply, when one is due, is written into `reply` (at least
    /// [`ARP_FRAME_LEN`] bytes).
    pub fn from_endpoint(&self, ep: EndpointId, frame: &[u8], reply: &mut [u8]) -> Verdict {
        let Some(&(net, own_mac)) = self.local.get(&ep) else {
            return Verdict::Drop(DropReason::UnknownDestination);
        };
        let Ok(table) = self.table(net) else {
            return Verdict::Drop(DropReason::UnknownDestination);
        };
        let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if frame.len() > table.max_frame() {
            return Verdict::Drop(DropReason::Oversize);
        }
        if MacAddr(eth.source()) != own_mac {
            return Verdict::Drop(DropReason::SpoofedSource);
        }
        let dst = MacAddr(eth.destination());
        if dst.is_multicast() {
            return match arp_request(&eth, frame) {
                Some(req) => answer_arp(table, &req, false, reply),
                None => Verdict::Drop(DropReason::Flood),
            };
        }
        match table.fdb.get(&dst) {
            Some(&Location::Local(to)) if to != ep => Verdict::Deliver(to),
            Some(&Location::Local(_)) => Verdict::Drop(DropReason::UnknownDestination),
            Some(&Location::Remote(peer)) => Verdict::Forward {
                peer,
                vni: table.spec.vni,
            },
            None => Verdict::Drop(DropReason::UnknownDestination),
        }
    }

    /// Decides what to do with a frame decapsulated from the underlay.
    ///
    /// `sender` is the outer source address. The driver has already checked the
    /// encryption policy of the VNI and opened sealed frames; `frame` is the inner
    /// Ethernet frame. An ARP reply for a local target is written into `reply`, to
    /// be sent back to `sender` over VXLAN.
    pub fn from_underlay(
        &self,
        vni: Vni,
        sender: IpAddr,
        frame: &[u8],
        reply: &mut [u8],
    ) -> Verdict {
        let Some(&net) = self.by_vni.get(&vni) else {
            return Verdict::Drop(DropReason::UnknownVni);
        };
        let Ok(table) = self.table(net) else {
            return Verdict::Drop(DropReason::UnknownVni);
        };
        if !table.is_peer(&sender) {
            return Verdict::Drop(DropReason::UnknownPeer);
        }
        let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if frame.len() > table.max_frame() {
            return Verdict::Drop(DropReason::Oversize);
        }
        let dst = MacAddr(eth.destination());
        if dst.is_multicast() {
            return match arp_request(&eth, frame) {
                Some(req) => answer_arp(table, &req, true, reply),
                None => Verdict::Drop(DropReason::Flood),
            };
        }
        match table.fdb.get(&dst) {
            Some(&Location::Local(to)) => Verdict::Deliver(to),
            // Never bounce a frame between nodes: a remote MAC arriving here means
            // the sender's tables disagree with ours.
            Some(&Location::Remote(_)) | None => Verdict::Drop(DropReason::UnknownDestination),
        }
    }

    fn table(&self, id: NetworkId) -> Result<&NetworkTable, TableError> {
        self.networks
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(TableError::UnknownNetwork(id))
    }

    fn table_mut(&mut self, id: NetworkId) -> Result<&mut NetworkTable, TableError> {
        self.networks
            .get_mut(id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(TableError::UnknownNetwork(id))
    }
}

/// The IPv4-over-Ethernet ARP request carried by `frame`, if it is one.
fn arp_request(eth: &Ethernet2HeaderSlice<'_>, frame: &[u8]) -> Option<ArpEthIpv4Packet> {
    if eth.ether_type() != EtherType::ARP {
        return None;
    }
    let arp = ArpPacketSlice::from_slice(&frame[ETHERNET_HEADER_LEN..]).ok()?;
    let arp = arp.to_packet().try_eth_ipv4().ok()?;
    (arp.operation == ArpOperation::REQUEST).then_some(arp)
}

/// Answers an ARP request from the tables. From the underlay, only targets local
/// to this node are answered, so that a peer flooding its request to every node
/// gets exactly one reply.
fn answer_arp(
    table: &NetworkTable,
    req: &ArpEthIpv4Packet,
    local_only: bool,
    reply: &mut [u8],
) -> Verdict {
    let target = req.target_ipv4_addr();
    if target == req.sender_ipv4_addr() {
        // Gratuitous ARP: an announcement, not a question; nothing to answer.
        return Verdict::Drop(DropReason::Flood);
    }
    let Some(&mac) = table.arp.get(&target) else {
        return Verdict::Drop(DropReason::ArpUnknownTarget);
    };
    if local_only && !matches!(table.fdb.get(&mac), Some(Location::Local(_))) {
        return Verdict::Drop(DropReason::Flood);
    }
    if reply.len() < ARP_FRAME_LEN {
        return Verdict::Drop(DropReason::IoError);
    }
    let eth = Ethernet2Header {
        source: mac.0,
        destination: req.sender_mac,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REPLY,
        sender_mac: mac.0,
        sender_ipv4: req.target_ipv4,
        target_mac: req.sender_mac,
        target_ipv4: req.sender_ipv4,
    };
    reply[..ETHERNET_HEADER_LEN].copy_from_slice(&eth.to_bytes());
    reply[ETHERNET_HEADER_LEN..ARP_FRAME_LEN].copy_from_slice(&arp.to_bytes());
    Verdict::Reply(ARP_FRAME_LEN)
}

#[cfg(test)]
mod tests;
