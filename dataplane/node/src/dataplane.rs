//! The running data plane: one thread per TAP endpoint, one for the VXLAN socket,
//! and one for housekeeping (rekeying).
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

/// Frame counters of the data plane (drops are counted in [`DropCounters`]).
#[derive(Debug, Default)]
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

pub(crate) struct NetCrypto {
    pub(crate) sealer: RwLock<Sealer>,
    pub(crate) opener: Mutex<Opener>,
}

pub(crate) struct Shared {
    pub(crate) node_addr: IpAddr,
    pub(crate) peer_port: u16,
    pub(crate) switch: RwLock<Switch>,
    /// Indexed by `NetworkId`; `None` for plain networks.
    pub(crate) crypto: Vec<Option<NetCrypto>>,
    /// Indexed by `EndpointId`.
    pub(crate) taps: Vec<Tap>,
    pub(crate) udp: UdpSocket,
    pub(crate) drops: DropCounters,
    pub(crate) stats: FrameStats,
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
            crypto.push(net.encryption.as_ref().map(|enc| NetCrypto {
                sealer: RwLock::new(Sealer::new(
                    enc.cipher,
                    config.node_addr,
                    &enc.keys,
                    now,
                    RekeyPolicy::default(),
                )),
                opener: Mutex::new(Opener::new(enc.cipher, &enc.keys)),
            }));
        }

        let mut taps = Vec::new();
        for ep in &config.endpoints {
            let net = config.network(&ep.network).expect("validated");
            let mtu = net.endpoint_mtu(config.underlay_mtu);
            let tap = endpoint::create(ep, net.subnet.prefix_len(), mtu).map_err(|reason| {
                DataPlaneError::Endpoint {
                    ip: ep.ip,
                    netns: ep.netns.display().to_string(),
                    reason,
                }
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
            taps.push(tap);
        }

        let udp = UdpSocket::bind(config.listen).map_err(|source| DataPlaneError::Listen {
            addr: config.listen,
            source,
        })?;
        udp.set_nonblocking(true)
            .map_err(|source| DataPlaneError::Listen {
                addr: config.listen,
                source,
            })?;
        // GRO hands over runs of datagrams in one read; without it (old kernels)
        // the loop simply sees one datagram at a time.
        if let Err(e) = udp::set_udp_gro(udp.as_fd(), true) {
            tracing::warn!(error = %e, "UDP GRO unavailable; receiving datagram by datagram");
        }
        let _ = udp::set_recv_buffer(udp.as_fd(), SOCKET_BUFFER);
        let _ = udp::set_send_buffer(udp.as_fd(), SOCKET_BUFFER);

        let shared = Arc::new(Shared {
            node_addr: config.node_addr,
            peer_port: config.peer_port,
            switch: RwLock::new(switch),
            crypto,
            taps,
            udp,
            drops: DropCounters::default(),
            stats: FrameStats::default(),
            stop: AtomicBool::new(false),
        });

        let mut dp = DataPlane {
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for i in 0..shared.taps.len() {
            let s = shared.clone();
            dp.spawn(format!("tap{i}"), move || {
                forward::endpoint_loop(&s, EndpointId(i as u32))
            })?;
        }
        let s = shared.clone();
        dp.spawn("vxlan-rx".into(), move || forward::underlay_loop(&s))?;
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

    /// The frame counters.
    pub fn stats(&self) -> &FrameStats {
        &self.shared.stats
    }

    /// The address the VXLAN socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.udp.local_addr()
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
        lock_poisoned(crypto.sealer.write()).set_keys(keys, now_since_epoch());
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
            if lock_poisoned(c.sealer.read()).needs_rekey(now) {
                lock_poisoned(c.sealer.write()).rekey(now);
            }
        }
    }
}
