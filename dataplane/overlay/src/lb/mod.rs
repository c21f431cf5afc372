//! The L4 virtual-IP load balancer: the pure core.
//!
//! Every Swarm service gets a VIP; a task that opens a flow to `VIP:port` is
//! balanced *on its own node*, in the userspace switch, before the frame is
//! switched: the balancer picks a backend task with Maglev ([`maglev`]),
//! remembers the choice in a connection table keyed by the 5-tuple in both
//! directions ([`conntrack`]), and rewrites the packet's destination in place
//! ([`nat`]); replies from the backend get the VIP back as their source. There
//! is no per-flow coordination between nodes: Maglev gives every node the same
//! table for the same backend set, so a flow keeps its backend even when the
//! table that pinned it is lost.
//!
//! Backend lifecycle, as the control plane reports it through
//! [`Balancer::set_service`]:
//! - [`BackendState::Active`]: in the Maglev table, takes new flows.
//! - [`BackendState::Draining`]: out of the table (new flows never pick it);
//!   flows already pinned to it keep going until they end or time out.
//! - [`BackendState::Dead`], or absent from the set: out of the table; the next
//!   packet of a TCP flow pinned to it gets [`LbVerdict::Reset`] (the caller
//!   answers with [`reply::tcp_rst_for`]) so the client fails fast instead of
//!   retransmitting into the void; a UDP flow is re-balanced to a live backend.
//!   Entries are dropped lazily, on that next packet or at their timeout.
//!
//! Like the switch, the balancer only decides and rewrites: it takes `now`
//! (a [`Duration`] since any fixed epoch) and the packet, and returns a
//! verdict. Drops are [`DropReason`]s, counted with the switch's counters.
//! All packets start at the IPv4 header; the caller strips and restores the
//! Ethernet header (and rewrites the destination MAC to the backend's);
//! [`vip`] does that for a network's frames.
//!
//! Ports. A service is either one port (`vip:port/proto` to `backend:port`)
//! or, like a Swarm VIP (an IPVS firewall mark per VIP), every port of a
//! protocol: [`ANY_PORT`] as the service port, and backends with port
//! [`ANY_PORT`], which keep the port the client addressed. A packet is matched
//! to its exact port first, then to the VIP's [`ANY_PORT`] service.
//!
//! Hairpin. A client picked as its own backend cannot get a DNATed packet
//! back with its own address as the source: the kernel drops it as a martian
//! (a local source on a non-loopback device), and its answer would go
//! through `lo`, never back through the balancer. So such a flow is also
//! source-NATed to the VIP (the client port kept): the task talks to
//! `VIP:cport` as the server and answers through the switch, where the reply
//! is translated back ([`LbVerdict::Hairpin`]), the way kube-proxy masquerades
//! hairpin traffic.

pub mod conntrack;
pub mod flow;
pub mod maglev;
pub mod nat;
pub mod proxy;
pub mod reply;
#[cfg(test)]
mod testutil;
pub mod vip;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::counters::DropReason;
use conntrack::{ConfigError, Conntrack, ConntrackConfig, ConntrackError, Direction, Seen};
use flow::{FlowKey, Proto};
use maglev::{BackendId, Maglev, TableSize};
use nat::{Ipv4L4, L4Checksum, NatError};

/// The service port, and the backend port, that stand for every port (see
/// the module docs). Port 0 is never a TCP or UDP destination.
pub const ANY_PORT: u16 = 0;

/// A service's virtual address: VIP, port ([`ANY_PORT`]: all) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

/// Whether a backend takes flows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Takes new flows.
    Active,
    /// Takes no new flows; existing ones continue.
    Draining,
    /// Gone: existing TCP flows are reset, UDP flows re-balanced.
    Dead,
}

/// One backend task of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The task's overlay address and target port.
    pub addr: SocketAddrV4,
    /// Its state.
    pub state: BackendState,
}

/// The balancer's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalancerConfig {
    /// The connection table.
    pub conntrack: ConntrackConfig,
    /// Maglev table size of every service.
    pub table_size: TableSize,
}

/// What to do with a packet a task sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbVerdict {
    /// Not addressed to a service VIP:port: switch it as it is (untouched).
    NotForVip,
    /// The destination was rewritten to `backend`: switch it there.
    Forward {
        /// The chosen backend.
        backend: SocketAddrV4,
    },
    /// A hairpin flow (the client is its own backend, see the module docs):
    /// the source was rewritten to the VIP and the destination to `to`, the
    /// sender's own address. Write it back to the sender.
    Hairpin {
        /// The new destination: the backend (a packet of the client), or the
        /// client (a packet of the backend's answer).
        to: SocketAddrV4,
    },
    /// The service has no active backend. The packet is untouched; answer the
    /// client with [`reply::tcp_rst_for`] or [`reply::icmp_port_unreachable_for`].
    NoBackend,
    /// The flow's backend is dead. The packet is untouched; answer with
    /// [`reply::tcp_rst_for`] (which sends nothing for an RST).
    Reset,
    /// Drop the packet and count the reason.
    Drop(DropReason),
}

/// What to do with a packet that may be a backend's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerdict {
    /// Not a reply of a tracked flow: untouched.
    NotTracked,
    /// The source was rewritten to the VIP: deliver to `client`.
    Translated {
        /// The VIP and port the client addressed (now the packet's source).
        vip: SocketAddrV4,
        /// The client (the packet's destination).
        client: SocketAddrV4,
    },
}

#[derive(Debug)]
struct Service {
    backends: HashMap<SocketAddrV4, BackendState>,
    maglev: Maglev,
}

impl Service {
    /// Whether `backend` (a flow's real target, port included) still takes
    /// the flows it has: listed as itself or as its address with [`ANY_PORT`].
    fn carries(&self, backend: SocketAddrV4) -> bool {
        let state = self.backends.get(&backend).or_else(|| {
            self.backends
                .get(&SocketAddrV4::new(*backend.ip(), ANY_PORT))
        });
        matches!(state, Some(BackendState::Active | BackendState::Draining))
    }

    /// The backend a new flow `key` gets, with the port it addressed when the
    /// backend is listed with [`ANY_PORT`].
    fn pick(&self, key: &FlowKey) -> Option<SocketAddrV4> {
        let b = self.maglev.lookup(key.hash()).map(BackendId::addr)?;
        Some(target(b, key.dst.port()))
    }
}

/// The service `dst/proto` belongs to: its own port's, else the VIP's
/// [`ANY_PORT`] service.
fn service_for(
    services: &HashMap<ServiceKey, Service>,
    dst: SocketAddrV4,
    proto: Proto,
) -> Option<&Service> {
    let key = ServiceKey {
        vip: *dst.ip(),
        port: dst.port(),
        proto,
    };
    services.get(&key).or_else(|| {
        services.get(&ServiceKey {
            port: ANY_PORT,
            ..key
        })
    })
}

/// `backend`, with `port` when it is listed with [`ANY_PORT`].
fn target(backend: SocketAddrV4, port: u16) -> SocketAddrV4 {
    if backend.port() == ANY_PORT {
        SocketAddrV4::new(*backend.ip(), port)
    } else {
        backend
    }
}

/// Services, their Maglev tables and the connection table of one node.
#[derive(Debug)]
pub struct Balancer {
    config: BalancerConfig,
    services: HashMap<ServiceKey, Service>,
    /// How many services each VIP has: a cheap first test for every packet.
    vips: HashMap<Ipv4Addr, usize>,
    conntrack: Conntrack,
}

impl Balancer {
    /// A balancer with no services.
    pub fn new(config: BalancerConfig) -> Result<Balancer, ConfigError> {
        Ok(Balancer {
            conntrack: Conntrack::new(config.conntrack)?,
            config,
            services: HashMap::new(),
            vips: HashMap::new(),
        })
    }

    /// Sets (adds or replaces) the backends of `vip:port/proto` (`port`
    /// [`ANY_PORT`]: every port; a backend port [`ANY_PORT`]: the port the
    /// client addressed). The Maglev
    /// table of this service alone is rebuilt, and only when its set of active
    /// backends changed; returns whether it was. If an address is listed
    /// twice, the last entry wins.
    pub fn set_service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: Proto,
        backends: &[Backend],
    ) -> bool {
        let key = ServiceKey { vip, port, proto };
        let states: HashMap<SocketAddrV4, BackendState> =
            backends.iter().map(|b| (b.addr, b.state)).collect();
        let mut active: Vec<BackendId> = states
            .iter()
            .filter(|(_, &s)| s == BackendState::Active)
            .map(|(&a, _)| BackendId::from(a))
            .collect();
        active.sort_unstable();
        let size = self.config.table_size;
        match self.services.get_mut(&key) {
            Some(svc) => {
                svc.backends = states;
                if svc.maglev.backends() == active.as_slice() {
                    return false;
                }
                svc.maglev = Maglev::build(&active, size);
            }
            None => {
                *self.vips.entry(vip).or_default() += 1;
                self.services.insert(
                    key,
                    Service {
                        backends: states,
                        maglev: Maglev::build(&active, size),
                    },
                );
            }
        }
        true
    }

    /// Removes a service and forgets its flows; true if it existed.
    pub fn remove_service(&mut self, vip: Ipv4Addr, port: u16, proto: Proto) -> bool {
        let key = ServiceKey { vip, port, proto };
        if self.services.remove(&key).is_none() {
            return false;
        }
        if let Some(n) = self.vips.get_mut(&vip) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&vip);
            }
        }
        let dst = SocketAddrV4::new(vip, port);
        let services = &self.services;
        self.conntrack.retain(|e| {
            let o = &e.original;
            if o.proto != proto || o.dst.ip() != &vip {
                return true;
            }
            if port == ANY_PORT {
                // Flows of a port that has a service of its own stay.
                services.contains_key(&ServiceKey {
                    vip,
                    port: o.dst.port(),
                    proto,
                })
            } else {
                o.dst != dst
            }
        });
        true
    }

    /// Every service, sorted.
    pub fn services(&self) -> Vec<ServiceKey> {
        let mut out: Vec<_> = self.services.keys().copied().collect();
        out.sort_unstable();
        out
    }

    /// True if `ip` is the VIP of some service.
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains_key(&ip)
    }

    /// The backend a *new* flow `key` would get, if any.
    pub fn pick(&self, key: &FlowKey) -> Option<SocketAddrV4> {
        service_for(&self.services, key.dst, key.proto)?.pick(key)
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// Reaps expired flows; returns how many. Call it every second or so.
    pub fn expire(&mut self, now: Duration) -> usize {
        self.conntrack.expire(now)
    }

    /// Balances a packet a task sent (starting at its IPv4 header), whose L4
    /// checksum is complete. See [`LbVerdict`].
    pub fn handle_outbound(&mut self, now: Duration, packet: &mut [u8]) -> LbVerdict {
        self.handle_outbound_with(now, packet, L4Checksum::Complete)
    }

    /// [`Balancer::handle_outbound`] for a packet whose L4 checksum is in the
    /// state `csum` (partial for a TAP frame with `NEEDS_CSUM`).
    pub fn handle_outbound_with(
        &mut self,
        now: Duration,
        packet: &mut [u8],
        csum: L4Checksum,
    ) -> LbVerdict {
        // Cheap test first: almost every packet is not for a VIP.
        match packet.get(..20) {
            Some(h) if h[0] >> 4 == 4 => {
                if !self.is_vip(Ipv4Addr::new(h[16], h[17], h[18], h[19])) {
                    return LbVerdict::NotForVip;
                }
            }
            _ => return LbVerdict::NotForVip,
        }
        let mut p = match Ipv4L4::new_checked(&mut *packet) {
            Ok(p) => p,
            Err(NatError::UnsupportedProtocol(_)) => return LbVerdict::NotForVip,
            Err(NatError::Fragment) => return LbVerdict::Drop(DropReason::VipFragment),
            Err(_) => return LbVerdict::Drop(DropReason::Malformed),
        };
        let key = p.flow_key();
        let flags = p.tcp_flags();
        let seen = flags.map_or(Seen::Udp, Seen::Tcp);
        let opens = flags.is_some_and(|f| f.syn() && !f.ack());

        // One connection-table lookup serves both directions.
        let tracked = self
            .conntrack
            .get(now, &key)
            .map(|(dir, e)| (dir, e.backend, e.state, e.is_hairpin(), e.vip(), e.client()));
        // The answer of a hairpin flow's backend goes to the VIP too.
        if let Some((Direction::Reply, _, _, true, vip, client)) = tracked {
            self.conntrack.observe(now, &key, seen);
            p.set_src(vip, csum);
            p.set_dst(client, csum);
            return LbVerdict::Hairpin { to: client };
        }
        let Some(svc) = service_for(&self.services, key.dst, key.proto) else {
            return LbVerdict::NotForVip;
        };

        if let Some((Direction::Original, backend, state, ..)) = tracked {
            // A SYN on a closed flow is the client reusing its port: a new flow.
            let reopened = opens
                && matches!(
                    state,
                    conntrack::FlowState::Tcp(
                        conntrack::TcpState::TimeWait | conntrack::TcpState::Close
                    )
                );
            let alive = svc.carries(backend);
            if alive && !reopened {
                self.conntrack.observe(now, &key, seen);
                return rewrite(&mut p, &key, backend, csum);
            }
            self.conntrack.remove(&key);
            if !alive && !reopened && key.proto == Proto::Tcp {
                return LbVerdict::Reset;
            }
        }

        let Some(backend) = svc.pick(&key) else {
            return LbVerdict::NoBackend;
        };
        // An RST of an unknown flow is passed on, but not tracked.
        if !flags.is_some_and(|f| f.rst()) {
            match self.conntrack.insert(now, key, backend, seen) {
                Ok(_) => {}
                Err(ConntrackError::Full(_)) => return LbVerdict::Drop(DropReason::ConntrackFull),
                Err(ConntrackError::Clash(_)) => {
                    return LbVerdict::Drop(DropReason::ConntrackClash)
                }
            }
        }
        rewrite(&mut p, &key, backend, csum)
    }

    /// Reverse-NATs a packet (starting at its IPv4 header, L4 checksum
    /// complete) if it is a backend's reply in a tracked flow.
    pub fn handle_reply(&mut self, now: Duration, packet: &mut [u8]) -> ReplyVerdict {
        self.handle_reply_with(now, packet, L4Checksum::Complete)
    }

    /// [`Balancer::handle_reply`] for a packet whose L4 checksum is in the
    /// state `csum`.
    pub fn handle_reply_with(
        &mut self,
        now: Duration,
        packet: &mut [u8],
        csum: L4Checksum,
    ) -> ReplyVerdict {
        let Ok(mut p) = Ipv4L4::new_checked(packet) else {
            return ReplyVerdict::NotTracked;
        };
        let key = p.flow_key();
        if !matches!(self.conntrack.get(now, &key), Some((Direction::Reply, _))) {
            return ReplyVerdict::NotTracked;
        }
        let seen = p.tcp_flags().map_or(Seen::Udp, Seen::Tcp);
        let Some((_, e)) = self.conntrack.observe(now, &key, seen) else {
            return ReplyVerdict::NotTracked;
        };
        let (vip, client) = (e.vip(), e.client());
        p.set_src(vip, csum);
        ReplyVerdict::Translated { vip, client }
    }
}

/// DNATs `p` (flow `key`) to `backend`; a hairpin flow also gets the VIP as
/// its source.
fn rewrite(
    p: &mut Ipv4L4<&mut [u8]>,
    key: &FlowKey,
    backend: SocketAddrV4,
    csum: L4Checksum,
) -> LbVerdict {
    p.set_dst(backend, csum);
    if backend.ip() == key.src.ip() {
        p.set_src(SocketAddrV4::new(*key.dst.ip(), key.src.port()), csum);
        return LbVerdict::Hairpin { to: backend };
    }
    LbVerdict::Forward { backend }
}

#[cfg(test)]
mod tests;
