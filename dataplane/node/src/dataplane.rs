//! The running data plane: `workers` lanes, each with one queue of every TAP
//! endpoint and one VXLAN socket, plus one thread for housekeeping (rekeying).
//!
//! Lanes spread flows over cores without sharing a descriptor: the kernel picks
//! a TAP queue per flow (multi-queue TAP) and a receiving socket per underlay
//! flow (`SO_REUSEPORT`). Each lane sends from its own socket, the lanes from a
//! block of consecutive source ports, and the receiving group hands a datagram
//! to the lane its source port names modulo the lane count: lane w of one node
//! lands on one lane of its peer, and replies written into a TAP queue pin the
//! flow there, so flows stay spread end to end. A kernel VXLAN peer's per-flow
//! source ports (RFC 7348) spread the same way. With one worker the node sends
//! from the listening socket itself (source port 4789).
//!
//! Each thread blocks in `poll(2)` on its descriptor with a short timeout, then
//! drains it without blocking ([`crate::forward`] holds the loops and the
//! offload fast path). The decisions come from the pure core ([`Switch`],
//! [`Sealer`], [`Opener`]); the driver only moves bytes between descriptors and
//! counts what it drops. This module owns start-up, shutdown and the calls that
//! change tables and keys.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_overlay::counters::DropCounters;
use shoal_overlay::keys::KeyRing;
use shoal_overlay::mac::MacAddr;
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer};
use shoal_overlay::switch::{
    EndpointId, EndpointRecord, Location, NetworkId, NetworkSpec, Switch, TableError,
};
use shoal_sys::tap::Tap;
use shoal_sys::udp;

use crate::config::{ConfigError, DataPlaneConfig, RemoteEndpoint};
use crate::endpoint;
use crate::forward::{self, POLL_INTERVAL};

/// Socket buffers: room for a few GSO/GRO batches in flight.
const SOCKET_BUFFER: usize = 4 << 20;

/// A failure to start or to change the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The configuration is inconsistent.
    #[error("invalid data-plane configuration: {0}")]
    Config(#[from] ConfigError),
    /// The tables refused a change.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The VXLAN socket could not be opened.
    #[error("cannot listen for VXLAN on {addr}: {source} (is another shoald or a kernel vxlan device using the port?)")]
    Listen {
        /// The address tried.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// A local endpoint could not be created.
    #[error("cannot create endpoint {ip} in {netns}: {reason}")]
    Endpoint {
        /// The endpoint's overlay address.
        ip: std::net::Ipv4Addr,
        /// The namespace.
        netns: String,
        /// What failed.
        reason: String,
    },
    /// A network name the data plane does not know.
    #[error("no network named {0:?} on this node")]
    UnknownNetwork(String),
    /// A key change for a network that is not encrypted.
    #[error("network {0:?} is not encrypted; it has no keys to change")]
    NotEncrypted(String),
    /// A thread could not be started.
    #[error("cannot start data-plane thread: {0}")]
    Thread(io::Error),
}

/// Frame counters of one lane (drops are counted in [`DropCounters`]). Each
/// lane has its own, on its own cache line, so cores do not contend on them.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct FrameStats {
    /// Frames read from local endpoints.
    pub endpoint_rx: AtomicU64,
    /// Frames written to local endpoints.
    pub endpoint_tx: AtomicU64,
    /// VXLAN datagrams sent to peers.
    pub underlay_tx: AtomicU64,
    /// VXLAN datagrams received from peers.
    pub underlay_rx: AtomicU64,
    /// ARP requests answered from the tables.
    pub arp_replies: AtomicU64,
}

/// A snapshot of frame counters, by direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameCounts {
    /// Frames read from local endpoints.
    pub endpoint_rx: u64,
    /// Frames written to local endpoints.
    pub endpoint_tx: u64,
    /// VXLAN datagrams sent to peers.
    pub underlay_tx: u64,
    /// VXLAN datagrams received from peers.
    pub underlay_rx: u64,
    /// ARP requests answered from the tables.
    pub arp_replies: u64,
}

impl FrameStats {
    fn snapshot(&self) -> FrameCounts {
        FrameCounts {
            endpoint_rx: self.endpoint_rx.load(Ordering::Relaxed),
            endpoint_tx: self.endpoint_tx.load(Ordering::Relaxed),
            underlay_tx: self.underlay_tx.load(Ordering::Relaxed),
            underlay_rx: self.underlay_rx.load(Ordering::Relaxed),
            arp_replies: self.arp_replies.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Add for FrameCounts {
    type Output = FrameCounts;
    fn add(self, o: FrameCounts) -> FrameCounts {
        FrameCounts {
            endpoint_rx: self.endpoint_rx + o.endpoint_rx,
            endpoint_tx: self.endpoint_tx + o.endpoint_tx,
            underlay_tx: self.underlay_tx + o.underlay_tx,
            underlay_rx: self.underlay_rx + o.underlay_rx,
            arp_replies: self.arp_replies + o.arp_replies,
        }
    }
}

pub(crate) struct NetCrypto {
    /// One per lane: each lane seals its own sequence (see `shoal_overlay::seal`).
    pub(crate) sealers: Vec<RwLock<Sealer>>,
    pub(crate) opener: Mutex<Opener>,
}

impl NetCrypto {
    /// The sealer of lane `w`.
    pub(crate) fn sealer(&self, w: usize) -> &RwLock<Sealer> {
        &self.sealers[w % self.sealers.len()]
    }
}

impl Shared {
    /// The socket lane `w` sends from.
    pub(crate) fn tx(&self, w: usize) -> &UdpSocket {
        &self.tx[w % self.tx.len()]
    }

    /// The queue of endpoint `ep` that lane `w` reads and writes.
    pub(crate) fn tap(&self, ep: EndpointId, w: usize) -> &Tap {
        let queues = &self.taps[ep.0 as usize];
        &queues[w % queues.len()]
    }
}

pub(crate) struct Shared {
    pub(crate) node_addr: IpAddr,
    pub(crate) peer_port: u16,
    pub(crate) switch: RwLock<Switch>,
    /// Indexed by `NetworkId`; `None` for plain networks.
    pub(crate) crypto: Vec<Option<NetCrypto>>,
    /// Indexed by `EndpointId`, then by queue (one per worker).
    pub(crate) taps: Vec<Vec<Tap>>,
    /// The listening VXLAN sockets, one per worker.
    pub(crate) rx: Vec<UdpSocket>,
    /// The sending sockets, one per worker.
    pub(crate) tx: Vec<UdpSocket>,
    pub(crate) drops: DropCounters,
    /// Indexed by lane.
    pub(crate) stats: Vec<FrameStats>,
    pub(crate) stop: AtomicBool,
}

/// A running data plane. Dropping it stops its threads and removes its TAP
/// devices (they vanish when their descriptors close).
pub struct DataPlane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub(crate) fn lock_poisoned<T>(r: std::sync::LockResult<T>) -> T {
    // A panicking data-plane thread leaves tables that are still consistent
    // (every update is a single insert/remove), so carry on with them.
    r.unwrap_or_else(|e| e.into_inner())
}

impl DataPlane {
    /// Validates `config`, creates every endpoint's TAP device, binds the VXLAN
    /// socket and starts the threads.
    pub fn start(config: DataPlaneConfig) -> Result<Self, DataPlaneError> {
        config.validate()?;
        let mut switch = Switch::new();
        let mut crypto = Vec::new();
        let now = now_since_epoch();
        for net in &config.networks {
            let id = switch.add_network(NetworkSpec {
                name: net.name.clone(),
                vni: net.vni,
                mtu: net.endpoint_mtu(config.underlay_mtu),
                encrypted: net.encryption.is_some(),
            })?;
            debug_assert_eq!(id.0 as usize, crypto.len());
            for &peer in &net.peers {
                switch.add_peer(id, peer)?;
            }
            for r in &net.remotes {
                switch.upsert_endpoint(id, remote_record(r))?;
            }
            crypto.push(net.encryption.as_ref().map(|enc| {
                NetCrypto {
                    sealers: (0..config.workers)
                        .map(|lane| {
                            RwLock::new(Sealer::for_lane(
                                enc.cipher,
                                config.node_addr,
                                &enc.keys,
                                now,
                                RekeyPolicy::default(),
                                lane as u8,
                            ))
                        })
                        .collect(),
                    opener: Mutex::new(Opener::new(enc.cipher, &enc.keys)),
                }
            }));
        }

        let mut taps = Vec::new();
        for ep in &config.endpoints {
            let net = config.network(&ep.network).expect("validated");
            let mtu = net.endpoint_mtu(config.underlay_mtu);
            let queues = endpoint::create(ep, net.subnet.prefix_len(), mtu, config.workers)
                .map_err(|reason| DataPlaneError::Endpoint {
                    ip: ep.ip,
                    netns: ep.netns.display().to_string(),
                    reason,
                })?;
            let id = EndpointId(taps.len() as u32);
            let net_id = switch.network_by_name(&ep.network).expect("added above");
            switch.upsert_endpoint(
                net_id,
                EndpointRecord {
                    ip: ep.ip,
                    mac: ep.mac,
                    location: Location::Local(id),
                },
            )?;
            taps.push(queues);
        }

        let listen_err = |source| DataPlaneError::Listen {
            addr: config.listen,
            source,
        };
        let mut rx = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let sock = if config.workers == 1 {
                UdpSocket::bind(config.listen).and_then(|u| u.set_nonblocking(true).map(|()| u))
            } else {
                udp::bind_reuseport(config.listen)
            }
            .map_err(listen_err)?;
            // GRO hands over runs of datagrams in one read; without it (old
            // kernels) the loop simply sees one datagram at a time.
            if let Err(e) = udp::set_udp_gro(sock.as_fd(), true) {
                tracing::warn!(error = %e, "UDP GRO unavailable; receiving datagram by datagram");
            }
            let _ = udp::set_recv_buffer(sock.as_fd(), SOCKET_BUFFER);
            let _ = udp::set_send_buffer(sock.as_fd(), SOCKET_BUFFER);
            rx.push(sock);
        }
        let tx = if config.workers == 1 {
            vec![rx[0].try_clone().map_err(listen_err)?]
        } else {
            // Lane w receives what a peer's lane sent from a port that is w
            // modulo our lane count, and sends from the w-th of a block of
            // consecutive ports: lanes map one to one across nodes.
            if let Err(e) = udp::steer_reuseport_by_source_port(rx[0].as_fd(), rx.len() as u32) {
                tracing::warn!(error = %e, "cannot steer VXLAN by source port; the kernel's hash spreads lanes");
            }
            let tx = udp::bind_consecutive(config.listen.ip(), config.workers, 64)
                .map_err(listen_err)?;
            for s in &tx {
                let _ = udp::set_send_buffer(s.as_fd(), SOCKET_BUFFER);
            }
            tx
        };

        let shared = Arc::new(Shared {
            node_addr: config.node_addr,
            peer_port: config.peer_port,
            switch: RwLock::new(switch),
            crypto,
            taps,
            rx,
            tx,
            drops: DropCounters::default(),
            stats: (0..config.workers).map(|_| FrameStats::default()).collect(),
            stop: AtomicBool::new(false),
        });

        let mut dp = DataPlane {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for w in 0..config.workers {
            for i in 0..shared.taps.len() {
                let s = shared.clone();
                dp.spawn(format!("tap{i}q{w}"), move || {
                    forward::endpoint_loop(&s, EndpointId(i as u32), w)
                })?;
            }
            let s = shared.clone();
            dp.spawn(format!("vxlan-rx{w}"), move || {
                forward::underlay_loop(&s, w)
            })?;
        }
        let s = shared;
        dp.spawn("rekey".into(), move || housekeeping_loop(&s))?;
        Ok(dp)
    }

    fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<(), DataPlaneError> {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(DataPlaneError::Thread)?;
        self.threads.push(handle);
        Ok(())
    }

    /// The drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.shared.drops
    }

    /// The frame counters, summed over lanes.
    pub fn stats(&self) -> FrameCounts {
        self.lane_stats()
            .into_iter()
            .fold(FrameCounts::default(), |a, b| a + b)
    }

    /// The frame counters of each lane (worker).
    pub fn lane_stats(&self) -> Vec<FrameCounts> {
        self.shared.stats.iter().map(FrameStats::snapshot).collect()
    }

    /// The address the VXLAN socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.rx[0].local_addr()
    }

    /// A copy of every network's table, for the API and the CLI.
    pub fn networks(&self) -> Vec<(NetworkSpec, Vec<EndpointRecord>)> {
        let sw = lock_poisoned(self.shared.switch.read());
        (0..self.shared.crypto.len())
            .filter_map(|i| {
                let id = NetworkId(i as u32);
                sw.spec(id).map(|spec| (spec.clone(), sw.endpoints(id)))
            })
            .collect()
    }

    fn network_id(&self, name: &str) -> Result<NetworkId, DataPlaneError> {
        lock_poisoned(self.shared.switch.read())
            .network_by_name(name)
            .ok_or_else(|| DataPlaneError::UnknownNetwork(name.to_string()))
    }

    /// Adds or moves an endpoint that lives on another node.
    pub fn upsert_remote(
        &self,
        network: &str,
        remote: RemoteEndpoint,
    ) -> Result<(), DataPlaneError> {
        let id = self.network_id(network)?;
        if remote.node == self.shared.node_addr {
            return Err(ConfigError::Invalid {
                field: "node".into(),
                reason: format!("{} is this node's own address", remote.node),
            }
            .into());
        }
        lock_poisoned(self.shared.switch.write()).upsert_endpoint(id, remote_record(&remote))?;
        Ok(())
    }

    /// Removes a remote endpoint by MAC; true if it was known.
    pub fn remove_remote(&self, network: &str, mac: MacAddr) -> Result<bool, DataPlaneError> {
        let id = self.network_id(network)?;
        let mut sw = lock_poisoned(self.shared.switch.write());
        let local = sw
            .endpoints(id)
            .iter()
            .any(|r| r.mac == mac && matches!(r.location, Location::Local(_)));
        if local {
            return Err(ConfigError::Invalid {
                field: "mac".into(),
                reason: format!("{mac} is a local endpoint of this node, not a remote one"),
            }
            .into());
        }
        Ok(sw.remove_endpoint(id, mac)?)
    }

    /// Replaces an encrypted network's key ring (rotation).
    pub fn set_keys(&self, network: &str, keys: &KeyRing) -> Result<(), DataPlaneError> {
        let id = self.network_id(network)?;
        let crypto = self.shared.crypto[id.0 as usize]
            .as_ref()
            .ok_or_else(|| DataPlaneError::NotEncrypted(network.to_string()))?;
        // Receivers first: a frame sealed under the new key must never arrive
        // before this node accepts it.
        lock_poisoned(crypto.opener.lock()).set_keys(keys);
        let now = now_since_epoch();
        for sealer in &crypto.sealers {
            lock_poisoned(sealer.write()).set_keys(keys, now);
        }
        Ok(())
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn remote_record(r: &RemoteEndpoint) -> EndpointRecord {
    EndpointRecord {
        ip: r.ip,
        mac: r.mac,
        location: Location::Remote(r.node),
    }
}

/// Rekeys sealers whose session is due, once a second.
fn housekeeping_loop(s: &Shared) {
    let mut since = Duration::ZERO;
    while !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL_INTERVAL);
        since += POLL_INTERVAL;
        if since < Duration::from_secs(1) {
            continue;
        }
        since = Duration::ZERO;
        let now = now_since_epoch();
        for c in s.crypto.iter().flatten() {
            for sealer in &c.sealers {
                if lock_poisoned(sealer.read()).needs_rekey(now) {
                    lock_poisoned(sealer.write()).rekey(now);
                }
            }
        }
    }
}
