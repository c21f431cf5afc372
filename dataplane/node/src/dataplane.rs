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
//! counts what it drops. This module owns start-up, shutdown and status;
//! [`crate::control`] holds the calls that add and remove networks, endpoints,
//! peers and keys while the lanes run.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_overlay::counters::DropCounters;
use shoal_overlay::switch::{EndpointRecord, NetworkSpec, TableError};
use shoal_sys::udp;

use crate::config::{ConfigError, DataPlaneConfig};
use crate::control::Control;
use crate::forward::{self, POLL_INTERVAL};
use crate::tables::Tables;

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
        ip: Ipv4Addr,
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
    /// A network of that name exists with different settings.
    #[error("network {name:?} already exists with {existing}, not {wanted}; remove it first or use another name")]
    NetworkClash {
        /// The network's name.
        name: String,
        /// The running network's setting (`VNI 4096`, `subnet 10.0.0.0/24`, ...).
        existing: String,
        /// The setting asked for.
        wanted: String,
    },
    /// A network cannot be removed while local endpoints are attached.
    #[error("network {name:?} still has local endpoints {}; remove them first", ips(.endpoints))]
    NetworkInUse {
        /// The network's name.
        name: String,
        /// The attached endpoints' addresses.
        endpoints: Vec<Ipv4Addr>,
    },
    /// A local endpoint with that address or MAC already exists.
    #[error("network {network:?} already has a local endpoint with {what}; remove it first")]
    EndpointExists {
        /// The network's name.
        network: String,
        /// The clashing address or MAC, e.g. `IP 10.0.0.2`.
        what: String,
    },
    /// The node serves as many endpoints as it can.
    #[error("this node already serves {0} endpoints; remove one first")]
    TooManyEndpoints(usize),
}

fn ips(list: &[Ipv4Addr]) -> String {
    list.iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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

pub(crate) struct Shared {
    pub(crate) node_addr: IpAddr,
    pub(crate) peer_port: u16,
    /// Lanes: TAP queues per endpoint and VXLAN sockets.
    pub(crate) workers: usize,
    pub(crate) underlay_mtu: u32,
    /// The switch, network crypto and endpoint TAPs; read-locked once per
    /// frame, write-locked only by the control calls (see [`crate::tables`]).
    pub(crate) tables: RwLock<Tables>,
    /// The listening VXLAN sockets, one per worker.
    pub(crate) rx: Vec<UdpSocket>,
    /// The sending sockets, one per worker.
    pub(crate) tx: Vec<UdpSocket>,
    pub(crate) drops: DropCounters,
    /// Indexed by lane.
    pub(crate) stats: Vec<FrameStats>,
    pub(crate) stop: AtomicBool,
}

impl Shared {
    /// The socket lane `w` sends from.
    pub(crate) fn tx(&self, w: usize) -> &UdpSocket {
        &self.tx[w % self.tx.len()]
    }
}

/// A running data plane. Dropping it stops its threads and removes its TAP
/// devices (they vanish when their descriptors close).
///
/// Every call takes `&self` and may come from any thread: the node agent
/// keeps it in an `Arc` and adds and removes networks and endpoints as tasks
/// come and go ([`crate::control`]).
pub struct DataPlane {
    pub(crate) shared: Arc<Shared>,
    /// What the control calls keep beside the tables; its mutex also makes
    /// those calls one at a time.
    pub(crate) control: Mutex<Control>,
    /// The socket lanes and the rekeying thread.
    threads: Vec<JoinHandle<()>>,
}

pub(crate) fn now_since_epoch() -> Duration {
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
    /// Validates `config`, binds the VXLAN sockets, starts the socket lanes,
    /// then adds its networks and endpoints as [`DataPlane::add_network`] and
    /// [`DataPlane::add_endpoint`] do. A config without networks or endpoints
    /// is fine: they can all be added later.
    pub fn start(config: DataPlaneConfig) -> Result<Self, DataPlaneError> {
        config.validate()?;
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
            workers: config.workers,
            underlay_mtu: config.underlay_mtu,
            tables: RwLock::new(Tables::new()),
            rx,
            tx,
            drops: DropCounters::default(),
            stats: (0..config.workers).map(|_| FrameStats::default()).collect(),
            stop: AtomicBool::new(false),
        });

        // From here on, an early return drops `dp`, which stops what started.
        let mut dp = DataPlane {
            shared: shared.clone(),
            control: Mutex::new(Control::default()),
            threads: Vec::new(),
        };
        for w in 0..config.workers {
            let s = shared.clone();
            dp.threads.push(spawn(format!("vxlan-rx{w}"), move || {
                forward::underlay_loop(&s, w)
            })?);
        }
        let s = shared;
        dp.threads
            .push(spawn("rekey".into(), move || housekeeping_loop(&s))?);
        for net in config.networks {
            dp.add_network(net)?;
        }
        for ep in config.endpoints {
            dp.add_endpoint(ep)?;
        }
        Ok(dp)
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

    /// This node's underlay address.
    pub fn node_addr(&self) -> IpAddr {
        self.shared.node_addr
    }

    /// The address the VXLAN socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.rx[0].local_addr()
    }

    /// A copy of every network's table, for the API and the CLI.
    pub fn networks(&self) -> Vec<(NetworkSpec, Vec<EndpointRecord>)> {
        let t = lock_poisoned(self.shared.tables.read());
        t.switch
            .network_ids()
            .filter_map(|id| {
                t.switch
                    .spec(id)
                    .map(|spec| (spec.clone(), t.switch.endpoints(id)))
            })
            .collect()
    }
}

/// Starts a data-plane thread.
pub(crate) fn spawn(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, DataPlaneError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(DataPlaneError::Thread)
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The endpoints' lanes saw the same flag; once they are joined, the
        // last references to the TAP queues go with `shared` and `control`.
        let control = self.control.get_mut().unwrap_or_else(|e| e.into_inner());
        for ep in control.endpoints.drain(..) {
            ep.stop_and_join();
        }
    }
}

/// Rekeys sealers whose session is due and reaps expired VIP flows, once a
/// second.
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
        let t = lock_poisoned(s.tables.read());
        for c in t.all_crypto() {
            for sealer in &c.sealers {
                if lock_poisoned(sealer.read()).needs_rekey(now) {
                    lock_poisoned(sealer.write()).rekey(now);
                }
            }
        }
        let now = crate::vips::monotonic_now();
        for vips in t.all_vips() {
            lock_poisoned(vips.lock()).expire(now);
        }
    }
}
