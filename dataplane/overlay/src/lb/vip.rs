//! A network's virtual IPs, at the level of the Ethernet frames the switch
//! sees: the balancer ([`Balancer`]) wrapped with what a VIP needs besides
//! NAT.
//!
//! A Swarm VIP balances every TCP and UDP port (IPVS balances a firewall
//! mark per VIP, not a port), answers ARP and ping, and lives on the
//! client's node: the switch of the node where a task sends to a VIP picks
//! the backend, rewrites the destination (no source NAT, so the backend sees
//! the client's address), and translates the backend's answers back before
//! they reach the client. A VIP has a MAC of its own, Docker-style
//! `02:42` + its address ([`vip_mac`]); VIPs are never task addresses, so it
//! never clashes with a task's.
//!
//! Like the rest of the core this takes `now` and bytes and returns what to
//! do; the driver owns the devices and the backends' MACs (the switch's ARP
//! table).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::counters::DropReason;
use crate::lb::conntrack::ConfigError;
use crate::lb::flow::Proto;
use crate::lb::nat::L4Checksum;
use crate::lb::reply::{icmp_port_unreachable_for, tcp_rst_for};
use crate::lb::{
    Backend, BackendState, Balancer, BalancerConfig, LbVerdict, ReplyVerdict, ANY_PORT,
};
use crate::mac::MacAddr;
use crate::offload::{checksum_add, checksum_fold};

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
/// An Ethernet frame carrying an IPv4 ARP packet.
const ARP_FRAME: usize = ETH + 28;

/// One backend task of a VIP service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipBackend {
    /// The task's address on the network.
    pub ip: Ipv4Addr,
    /// False while the task drains (disabled in gossip): it keeps its flows
    /// and gets no new ones.
    pub active: bool,
}

/// A service in endpoint mode `vip` on one network: its VIP and backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipService {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// Its backend tasks; a task absent from the list has left: its TCP
    /// flows are reset.
    pub backends: Vec<VipBackend>,
}

/// The MAC a VIP answers ARP with: `02:42` + its address.
pub fn vip_mac(vip: Ipv4Addr) -> MacAddr {
    MacAddr::from_ipv4(vip)
}

/// What to do with a frame a local endpoint sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipAction {
    /// Not for a VIP: switch it as it is.
    Pass,
    /// An answer of this many bytes (ARP reply, ping reply, TCP RST or ICMP
    /// port unreachable, from the VIP) was written into the reply buffer:
    /// write it back to the sender. The frame itself goes nowhere.
    Reply(usize),
    /// The frame's IPv4 destination was rewritten to `backend`: set its
    /// destination MAC to the backend's and switch it.
    Forward {
        /// The backend task's address.
        backend: Ipv4Addr,
    },
    /// A hairpin frame, rewritten in place (addresses and MACs): write it
    /// back to the sender.
    Hairpin,
    /// Drop it and count the reason.
    Drop(DropReason),
}

/// The VIPs of one network and their connection table.
#[derive(Debug)]
pub struct VipTable {
    balancer: Balancer,
    services: BTreeMap<Ipv4Addr, Vec<VipBackend>>,
}

impl VipTable {
    /// A table with no VIP.
    pub fn new(config: BalancerConfig) -> Result<VipTable, ConfigError> {
        Ok(VipTable {
            balancer: Balancer::new(config)?,
            services: BTreeMap::new(),
        })
    }

    /// Makes the VIPs exactly `services` (each balancing all TCP and UDP
    /// ports); returns whether anything changed. A VIP's Maglev tables are
    /// rebuilt only when its set of active backends changed. Listing a VIP
    /// twice keeps the last entry.
    pub fn set_services(&mut self, services: &[VipService]) -> bool {
        let wanted: BTreeMap<Ipv4Addr, Vec<VipBackend>> = services
            .iter()
            .map(|s| {
                let mut b = s.backends.clone();
                b.sort_unstable();
                b.dedup();
                (s.vip, b)
            })
            .collect();
        if wanted == self.services {
            return false;
        }
        let gone: Vec<Ipv4Addr> = self
            .services
            .keys()
            .filter(|v| !wanted.contains_key(v))
            .copied()
            .collect();
        for vip in gone {
            for proto in [Proto::Tcp, Proto::Udp] {
                self.balancer.remove_service(vip, ANY_PORT, proto);
            }
        }
        for (vip, backends) in &wanted {
            if self.services.get(vip) == Some(backends) {
                continue;
            }
            let list: Vec<Backend> = backends
                .iter()
                .map(|b| Backend {
                    addr: SocketAddrV4::new(b.ip, ANY_PORT),
                    state: if b.active {
                        BackendState::Active
                    } else {
                        BackendState::Draining
                    },
                })
                .collect();
            for proto in [Proto::Tcp, Proto::Udp] {
                self.balancer.set_service(*vip, ANY_PORT, proto, &list);
            }
        }
        self.services = wanted;
        true
    }

    /// The VIPs held.
    pub fn vips(&self) -> BTreeSet<Ipv4Addr> {
        self.services.keys().copied().collect()
    }

    /// True when no VIP is held.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The balancer (services and connection table).
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Reaps expired flows; returns how many. Call it every second or so.
    pub fn expire(&mut self, now: Duration) -> usize {
        self.balancer.expire(now)
    }

    /// Judges (and for a VIP, rewrites or answers) `frame`, which a local
    /// endpoint sent. `csum` is the state of its L4 checksum (partial when
    /// the device left it to offload). Answers are written into `reply`,
    /// which must hold `frame.len()` + 36 bytes.
    pub fn from_endpoint(
        &mut self,
        now: Duration,
        frame: &mut [u8],
        csum: L4Checksum,
        reply: &mut [u8],
    ) -> VipAction {
        if frame.len() < ETH {
            return VipAction::Pass;
        }
        match [frame[12], frame[13]] {
            ETHERTYPE_IPV4 if frame.len() >= ETH + 20 => {}
            ETHERTYPE_ARP => {
                return match arp_reply(&self.balancer, frame, reply) {
                    Some(n) => VipAction::Reply(n),
                    None => VipAction::Pass,
                };
            }
            _ => return VipAction::Pass,
        }
        let ip = &frame[ETH..];
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if !self.balancer.is_vip(dst) {
            return VipAction::Pass;
        }
        if ip[9] == 1 {
            return match echo_reply(frame, reply) {
                Some(n) => VipAction::Reply(n),
                None => VipAction::Drop(DropReason::UnknownDestination),
            };
        }
        let verdict = self
            .balancer
            .handle_outbound_with(now, &mut frame[ETH..], csum);
        match verdict {
            LbVerdict::NotForVip => VipAction::Pass,
            LbVerdict::Forward { backend } => VipAction::Forward {
                backend: *backend.ip(),
            },
            LbVerdict::Hairpin { .. } => {
                // Back to the sender, from the VIP's MAC.
                let (dst_mac, src_mac) = frame.split_at_mut(6);
                dst_mac.copy_from_slice(&src_mac[..6]);
                src_mac[..6].copy_from_slice(&vip_mac(dst).0);
                VipAction::Hairpin
            }
            LbVerdict::NoBackend | LbVerdict::Reset => {
                let packet = &frame[ETH..];
                let answer = tcp_rst_for(packet).or_else(|| icmp_port_unreachable_for(packet));
                match answer {
                    Some(a) if reply.len() >= ETH + a.len() => {
                        ethernet(reply, frame, dst, ETHERTYPE_IPV4);
                        reply[ETH..ETH + a.len()].copy_from_slice(&a);
                        VipAction::Reply(ETH + a.len())
                    }
                    // Nothing to say to an RST, or no room: it goes nowhere.
                    _ => VipAction::Drop(DropReason::UnknownDestination),
                }
            }
            LbVerdict::Drop(reason) => VipAction::Drop(reason),
        }
    }

    /// Translates `frame`, bound for a local endpoint, back to come from the
    /// VIP (source address, port and MAC) if it is a backend's answer in a
    /// tracked flow; returns whether it was. Costs one emptiness test while no
    /// flow is tracked.
    pub fn to_endpoint(&mut self, now: Duration, frame: &mut [u8], csum: L4Checksum) -> bool {
        if self.balancer.conntrack().is_empty()
            || frame.len() < ETH + 20
            || frame[12..14] != ETHERTYPE_IPV4
        {
            return false;
        }
        match self
            .balancer
            .handle_reply_with(now, &mut frame[ETH..], csum)
        {
            ReplyVerdict::NotTracked => false,
            ReplyVerdict::Translated { vip, .. } => {
                frame[6..12].copy_from_slice(&vip_mac(*vip.ip()).0);
                true
            }
        }
    }
}

/// Writes an Ethernet header into `out` answering `frame`: to its sender,
/// from `vip`'s MAC.
fn ethernet(out: &mut [u8], frame: &[u8], vip: Ipv4Addr, ethertype: [u8; 2]) {
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&vip_mac(vip).0);
    out[12..14].copy_from_slice(&ethertype);
}

/// The ARP reply to `frame` when it is a request for one of the VIPs.
fn arp_reply(lb: &Balancer, frame: &[u8], out: &mut [u8]) -> Option<usize> {
    if frame.len() < ARP_FRAME || frame[12..14] != ETHERTYPE_ARP || out.len() < ARP_FRAME {
        return None;
    }
    let arp = &frame[ETH..ARP_FRAME];
    // Ethernet, IPv4, 6- and 4-byte addresses, a request.
    if arp[..8] != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    let target = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if !lb.is_vip(target) {
        return None;
    }
    let mac = vip_mac(target).0;
    ethernet(out, frame, target, ETHERTYPE_ARP);
    let o = &mut out[ETH..ARP_FRAME];
    o[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    o[8..14].copy_from_slice(&mac);
    o[14..18].copy_from_slice(&target.octets());
    o[18..28].copy_from_slice(&arp[8..18]); // the requester's MAC and IP
    Some(ARP_FRAME)
}

/// The echo reply to `frame` (Ethernet, IPv4, ICMP) when it is an echo
/// request, written into `out`: addresses swapped, type 0, checksum updated.
fn echo_reply(frame: &[u8], out: &mut [u8]) -> Option<usize> {
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[0] >> 4 != 4
        || ihl < 20
        || total < ihl + 8
        || total > ip.len()
        || frag & 0x3fff != 0
        || ip[ihl] != 8
        || out.len() < ETH + total
    {
        return None;
    }
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    ethernet(out, frame, dst, ETHERTYPE_IPV4);
    let o = &mut out[ETH..ETH + total];
    o.copy_from_slice(&ip[..total]);
    // Swapping the addresses leaves the header's sum as it is.
    o[12..16].copy_from_slice(&ip[16..20]);
    o[16..20].copy_from_slice(&ip[12..16]);
    o[8] = 64; // a fresh TTL
    o[10..12].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, &o[..ihl]));
    o[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut o[ihl..];
    icmp[0] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(ETH + total)
}

#[cfg(test)]
mod tests;
