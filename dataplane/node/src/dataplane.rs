//! The running data plane: one thread per TAP endpoint, one for the VXLAN socket,
//! and one for housekeeping (rekeying).
//!
//! Each thread blocks in `poll(2)` on its descriptor with a short timeout, then
//! drains it without blocking. The decisions come from the pure core
//! ([`Switch`], [`Sealer`], [`Opener`]); this module only moves bytes between
//! descriptors and counts what it drops.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_overlay::counters::{DropCounters, DropReason};
use shoal_overlay::keys::KeyRing;
use shoal_overlay::mac::MacAddr;
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer, SEAL_HEADER_LEN, TAG_LEN};
use shoal_overlay::switch::{
    EndpointId, EndpointRecord, Location, NetworkId, NetworkSpec, Switch, TableError, Verdict,
};
use shoal_overlay::vxlan::{Vni, VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};
use shoal_sys::poll::wait_readable;
use shoal_sys::tap::Tap;

use crate::config::{ConfigError, DataPlaneConfig, RemoteEndpoint};
use crate::endpoint;

/// How long a thread waits in `poll` before checking for shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Buffer size: the largest frame a TAP can hand us, plus headers and tag.
const BUF_LEN: usize = 65536 + VXLAN_HEADER_LEN + SEAL_HEADER_LEN + TAG_LEN;

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

struct NetCrypto {
    sealer: RwLock<Sealer>,
    opener: Mutex<Opener>,
}

struct Shared {
    node_addr: IpAddr,
    peer_port: u16,
    switch: RwLock<Switch>,
    /// Indexed by `NetworkId`; `None` for plain networks.
    crypto: Vec<Option<NetCrypto>>,
    /// Indexed by `EndpointId`.
    taps: Vec<Tap>,
    udp: UdpSocket,
    drops: DropCounters,
    stats: FrameStats,
    stop: AtomicBool,
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

fn lock_poisoned<T>(r: std::sync::LockResult<T>) -> T {
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
                endpoint_loop(&s, EndpointId(i as u32))
            })?;
        }
        let s = shared.clone();
        dp.spawn("vxlan-rx".into(), move || underlay_loop(&s))?;
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

/// Reads frames from one TAP device until shutdown.
fn endpoint_loop(s: &Shared, ep: EndpointId) {
    let tap = &s.taps[ep.0 as usize];
    let mut buf = vec![0u8; BUF_LEN];
    let mut out = vec![0u8; BUF_LEN];
    while !s.stop.load(Ordering::Relaxed) {
        match wait_readable(tap.as_fd(), POLL_INTERVAL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                s.drops.record(DropReason::IoError);
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        }
        // Drain: the TAP is non-blocking, so a read that would block ends the burst.
        loop {
            let n = match tap.read(&mut buf[VXLAN_HEADER_LEN..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    break;
                }
            };
            s.stats.endpoint_rx.fetch_add(1, Ordering::Relaxed);
            handle_endpoint_frame(s, ep, &mut buf[..VXLAN_HEADER_LEN + n], &mut out);
        }
    }
}

/// `buf` holds the frame at offset `VXLAN_HEADER_LEN`, with the header room free.
fn handle_endpoint_frame(s: &Shared, ep: EndpointId, buf: &mut [u8], out: &mut [u8]) {
    let verdict = {
        let sw = lock_poisoned(s.switch.read());
        sw.from_endpoint(ep, &buf[VXLAN_HEADER_LEN..], out)
    };
    match verdict {
        Verdict::Deliver(to) => write_endpoint(s, to, &buf[VXLAN_HEADER_LEN..]),
        Verdict::Reply(n) => {
            s.stats.arp_replies.fetch_add(1, Ordering::Relaxed);
            write_endpoint(s, ep, &out[..n]);
        }
        Verdict::Forward { peer, vni } => send_to_peer(s, peer, vni, buf, out),
        Verdict::Drop(reason) => s.drops.record(reason),
    }
}

/// Encapsulates the frame at `buf[VXLAN_HEADER_LEN..]` and sends it to `peer`.
/// `scratch` receives the sealed frame on encrypted networks.
fn send_to_peer(s: &Shared, peer: IpAddr, vni: Vni, buf: &mut [u8], scratch: &mut [u8]) {
    let net = lock_poisoned(s.switch.read()).network_by_vni(vni);
    let Some(net) = net else {
        s.drops.record(DropReason::UnknownVni);
        return;
    };
    let dst = SocketAddr::new(peer, s.peer_port);
    let datagram: &[u8] = match &s.crypto[net.0 as usize] {
        None => {
            let mut pkt = VxlanPacket::new_unchecked(&mut buf[..]);
            VxlanRepr { vni, sealed: None }.emit(&mut pkt);
            buf
        }
        Some(c) => {
            let sealer = lock_poisoned(c.sealer.read());
            match sealer.seal(vni, &buf[VXLAN_HEADER_LEN..], scratch) {
                Ok(n) => &scratch[..n],
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    return;
                }
            }
        }
    };
    match s.udp.send_to(datagram, dst) {
        Ok(_) => {
            s.stats.underlay_tx.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => s.drops.record(DropReason::IoError),
    }
}

fn write_endpoint(s: &Shared, ep: EndpointId, frame: &[u8]) {
    match s.taps[ep.0 as usize].write(frame) {
        Ok(_) => {
            s.stats.endpoint_tx.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => s.drops.record(DropReason::IoError),
    }
}

/// Receives VXLAN datagrams until shutdown.
fn underlay_loop(s: &Shared) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut reply = vec![0u8; BUF_LEN];
    while !s.stop.load(Ordering::Relaxed) {
        match wait_readable(s.udp.as_fd(), POLL_INTERVAL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => {
                s.drops.record(DropReason::IoError);
                std::thread::sleep(POLL_INTERVAL);
                continue;
            }
        }
        loop {
            let (n, from) = match s.udp.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    break;
                }
            };
            s.stats.underlay_rx.fetch_add(1, Ordering::Relaxed);
            if let Err(reason) = handle_datagram(s, from.ip(), &mut buf[..n], &mut reply) {
                s.drops.record(reason);
            }
        }
    }
}

fn handle_datagram(
    s: &Shared,
    sender: IpAddr,
    datagram: &mut [u8],
    reply: &mut [u8],
) -> Result<(), DropReason> {
    let repr = {
        let pkt = VxlanPacket::new_checked(&datagram[..]).map_err(|_| DropReason::Malformed)?;
        VxlanRepr::parse(&pkt)?
    };
    let net = lock_poisoned(s.switch.read())
        .network_by_vni(repr.vni)
        .ok_or(DropReason::UnknownVni)?;
    let inner: &[u8] = match (&s.crypto[net.0 as usize], repr.sealed) {
        (Some(_), None) => return Err(DropReason::PlainOnEncrypted),
        (None, Some(_)) => return Err(DropReason::SealedOnPlain),
        (None, None) => &datagram[VXLAN_HEADER_LEN..],
        (Some(c), Some(_)) => lock_poisoned(c.opener.lock()).open(sender, datagram)?,
    };
    let verdict = lock_poisoned(s.switch.read()).from_underlay(
        repr.vni,
        sender,
        inner,
        &mut reply[VXLAN_HEADER_LEN..],
    );
    match verdict {
        Verdict::Deliver(to) => write_endpoint(s, to, inner),
        Verdict::Reply(n) => {
            s.stats.arp_replies.fetch_add(1, Ordering::Relaxed);
            // The received datagram is spent: reuse it as the sealing scratch space.
            send_to_peer(
                s,
                sender,
                repr.vni,
                &mut reply[..VXLAN_HEADER_LEN + n],
                datagram,
            );
        }
        Verdict::Forward { .. } => return Err(DropReason::UnknownDestination),
        Verdict::Drop(reason) => return Err(reason),
    }
    Ok(())
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
