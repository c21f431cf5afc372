//! The tokio driver: moves bytes between sockets and the pure [`Gossip`]
//! core, runs its timer, and publishes views. Nothing protocol-related
//! happens here.
//!
//! One task owns the core. UDP datagrams, accepted and opened TCP
//! connections (each in its own small task that only frames bytes) and
//! commands from [`GossipHandle`] all reach it through `select!`.
//!
//! Handle methods are plain (non-async) functions that send a command, so
//! the daemon can call them from sync code; only [`GossipHandle::start`]
//! needs to run inside a tokio runtime (it spawns the task), and
//! [`GossipHandle::wait`] is async because it awaits the task.

use crate::core::{ConfigError, CoreConfig, Event, Gossip, Member, SyncOpen, TableView, Timings};
use crate::record::EndpointRecord;
use crate::seal::{KeyRing, KeyRingError};
use crate::stats::{Counters, DropReason, Stats};
use crate::wire;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How long a stream read, write or connect may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything [`GossipHandle::start`] needs.
#[derive(Clone)]
pub struct GossipConfig {
    /// Stable node id (the swarm node id).
    pub node_id: String,
    /// Address to bind UDP and TCP on (port 7946 in production). Port 0
    /// picks a free port (UDP first, TCP on the same number).
    pub bind: SocketAddr,
    /// Address other nodes reach us at; port 0 means "the bound port".
    pub advertise: SocketAddr,
    /// Gossip keys: `(id, 32-byte secret)`.
    pub keys: Vec<(u8, [u8; 32])>,
    /// Key id used to seal outgoing traffic.
    pub tx_key: u8,
    /// Protocol timings.
    pub timings: Timings,
}

impl std::fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("GossipConfig")
            .field("node_id", &self.node_id)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("key_ids", &ids)
            .field("tx_key", &self.tx_key)
            .field("timings", &self.timings)
            .finish()
    }
}

/// Errors at the crate boundary.
#[derive(Debug, Error)]
pub enum GossipError {
    /// Invalid config field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Invalid key ring.
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    /// A socket could not be bound.
    #[error(
        "gossip: cannot bind {proto} {addr}: {source} (is another node or Docker using the port?)"
    )]
    Bind {
        /// "UDP" or "TCP".
        proto: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// `start` was called outside a tokio runtime.
    #[error("gossip: GossipHandle::start must be called inside a tokio runtime")]
    NoRuntime,
    /// The gossip task has stopped.
    #[error("gossip: the gossip task has stopped (shutdown was called or it failed)")]
    Stopped,
}

enum Command {
    Join(Vec<SocketAddr>),
    JoinNetwork(String),
    LeaveNetwork(String),
    Publish(String, Box<EndpointRecord>),
    Withdraw(String, String),
    SetDisabled(String, String, bool),
    SetKeys(Vec<(u8, [u8; 32])>, u8),
    Shutdown,
}

struct StreamInput {
    from: SocketAddr,
    frame: Vec<u8>,
    reply: oneshot::Sender<Option<Vec<u8>>>,
}

/// A running gossip node. Dropping it shuts the node down.
pub struct GossipHandle {
    cmd: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<Arc<TableView>>,
    members: Arc<Mutex<Vec<Member>>>,
    counters: Arc<Counters>,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GossipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl GossipHandle {
    /// Bind UDP and TCP on `config.bind` and start the node (it knows nobody
    /// until [`GossipHandle::join`]). Must run inside a tokio runtime.
    pub fn start(config: GossipConfig) -> Result<GossipHandle, GossipError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| GossipError::NoRuntime)?;
        let keys = KeyRing::new(&config.keys, config.tx_key)?;
        config.timings.validate()?;
        let _guard = rt.enter();
        let udp_std =
            std::net::UdpSocket::bind(config.bind).map_err(|source| GossipError::Bind {
                proto: "UDP",
                addr: config.bind,
                source,
            })?;
        let bound = udp_std.local_addr().map_err(|source| GossipError::Bind {
            proto: "UDP",
            addr: config.bind,
            source,
        })?;
        let tcp_std = std::net::TcpListener::bind(bound).map_err(|source| GossipError::Bind {
            proto: "TCP",
            addr: bound,
            source,
        })?;
        let bind_err = |proto, source| GossipError::Bind {
            proto,
            addr: bound,
            source,
        };
        udp_std
            .set_nonblocking(true)
            .map_err(|e| bind_err("UDP", e))?;
        tcp_std
            .set_nonblocking(true)
            .map_err(|e| bind_err("TCP", e))?;
        let udp = UdpSocket::from_std(udp_std).map_err(|e| bind_err("UDP", e))?;
        let listener = TcpListener::from_std(tcp_std).map_err(|e| bind_err("TCP", e))?;
        let mut advertise = config.advertise;
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let core = Gossip::new(
            Instant::now(),
            CoreConfig {
                node_id: config.node_id.clone(),
                advertise,
                generation,
                timings: config.timings.clone(),
                rng_seed: u64::from_le_bytes(seed),
                os_nonces: true,
            },
            keys,
        )?;
        let counters = core.counters();
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (view_tx, view) = watch::channel(Arc::new(core.view()));
        let members = Arc::new(Mutex::new(Vec::new()));
        let span = tracing::info_span!("gossip", node = %config.node_id, addr = %advertise);
        let driver = Driver {
            core,
            udp,
            listener,
            cmd_rx,
            view_tx,
            members: Arc::clone(&members),
            counters: Arc::clone(&counters),
            last_version: u64::MAX,
        };
        let task = rt.spawn(driver.run().instrument(span));
        Ok(GossipHandle {
            cmd,
            view,
            members,
            counters,
            local_addr: bound,
            task: Some(task),
        })
    }

    fn send(&self, c: Command) -> Result<(), GossipError> {
        self.cmd.send(c).map_err(|_| GossipError::Stopped)
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Announce to seeds now and keep announcing to those that are not
    /// alive members (call again with fresh manager addresses at will).
    pub fn join(&self, seeds: Vec<SocketAddr>) -> Result<(), GossipError> {
        self.send(Command::Join(seeds))
    }

    /// Take part in a network's table.
    pub fn join_network(&self, net: &str) -> Result<(), GossipError> {
        self.send(Command::JoinNetwork(net.to_owned()))
    }

    /// Withdraw our endpoints from a network and stop taking part.
    pub fn leave_network(&self, net: &str) -> Result<(), GossipError> {
        self.send(Command::LeaveNetwork(net.to_owned()))
    }

    /// Publish a local endpoint (joins the network if needed; `node_id` is
    /// overwritten with this node's id).
    pub fn publish(&self, net: &str, record: EndpointRecord) -> Result<(), GossipError> {
        self.send(Command::Publish(net.to_owned(), Box::new(record)))
    }

    /// Withdraw a local endpoint.
    pub fn withdraw(&self, net: &str, task_id: &str) -> Result<(), GossipError> {
        self.send(Command::Withdraw(net.to_owned(), task_id.to_owned()))
    }

    /// Enable or disable a local endpoint.
    pub fn set_disabled(
        &self,
        net: &str,
        task_id: &str,
        disabled: bool,
    ) -> Result<(), GossipError> {
        self.send(Command::SetDisabled(
            net.to_owned(),
            task_id.to_owned(),
            disabled,
        ))
    }

    /// Replace the key ring; validated here, applied by the task at once.
    pub fn set_keys(&self, keys: Vec<(u8, [u8; 32])>, tx_key: u8) -> Result<(), GossipError> {
        KeyRing::new(&keys, tx_key)?;
        self.send(Command::SetKeys(keys, tx_key))
    }

    /// Cluster members other than this node (refreshed by the task).
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Current view of every network's available endpoints.
    pub fn snapshot(&self) -> Arc<TableView> {
        Arc::clone(&self.view.borrow())
    }

    /// A receiver that wakes when the view changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TableView>> {
        self.view.clone()
    }

    /// Traffic and drop counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Leave the cluster gracefully and stop the task (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }

    /// Shut down and wait for the task to finish.
    pub async fn wait(mut self) {
        self.shutdown();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}

struct Driver {
    core: Gossip,
    udp: UdpSocket,
    listener: TcpListener,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    view_tx: watch::Sender<Arc<TableView>>,
    members: Arc<Mutex<Vec<Member>>>,
    counters: Arc<Counters>,
    last_version: u64,
}

impl Driver {
    async fn run(mut self) {
        let (frame_tx, mut frame_rx) = mpsc::channel::<StreamInput>(256);
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush(&frame_tx).await;
            let deadline = tokio::time::Instant::from_std(self.core.poll_timeout());
            tokio::select! {
                c = self.cmd_rx.recv() => {
                    let now = Instant::now();
                    match c {
                        None | Some(Command::Shutdown) => {
                            self.core.leave_cluster(now);
                            self.flush(&frame_tx).await;
                            break;
                        }
                        Some(c) => self.command(now, c),
                    }
                }
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        // Refusals are counted by the core; nothing to log per packet.
                        let _ = self.core.handle_datagram(Instant::now(), from, &buf[..n]);
                    }
                }
                a = self.listener.accept() => {
                    if let Ok((s, from)) = a {
                        let tx = frame_tx.clone();
                        let counters = Arc::clone(&self.counters);
                        tokio::spawn(async move {
                            let _ = exchange(s, from, None, tx, counters).await;
                        }.in_current_span());
                    }
                }
                Some(inp) = frame_rx.recv() => {
                    let r = self.core.handle_stream_frame(Instant::now(), inp.from, &inp.frame);
                    let _ = inp.reply.send(r.ok().flatten());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.core.handle_timeout(Instant::now());
                    self.refresh_members();
                }
            }
        }
    }

    fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Join(seeds) => self.core.join(now, seeds),
            Command::JoinNetwork(n) => self.core.join_network(now, &n),
            Command::LeaveNetwork(n) => self.core.leave_network(now, &n),
            Command::Publish(n, r) => self.core.publish(now, &n, *r),
            Command::Withdraw(n, t) => self.core.withdraw(now, &n, &t),
            Command::SetDisabled(n, t, d) => self.core.set_disabled(now, &n, &t, d),
            Command::SetKeys(k, tx) => {
                if let Err(e) = self.core.set_keys(&k, tx) {
                    tracing::warn!(error = %e, "set_keys refused");
                }
            }
            Command::Shutdown => {}
        }
    }

    fn refresh_members(&self) {
        if let Ok(mut m) = self.members.lock() {
            *m = self.core.members();
        }
    }

    async fn flush(&mut self, frame_tx: &mpsc::Sender<StreamInput>) {
        while let Some(t) = self.core.poll_transmit() {
            let _ = self.udp.send_to(&t.payload, t.to).await;
        }
        while let Some(SyncOpen { to, frame }) = self.core.poll_sync() {
            let tx = frame_tx.clone();
            let counters = Arc::clone(&self.counters);
            tokio::spawn(
                async move {
                    let s = tokio::time::timeout(STREAM_TIMEOUT, TcpStream::connect(to)).await;
                    if let Ok(Ok(s)) = s {
                        let _ = exchange(s, to, Some(frame), tx, counters).await;
                    }
                }
                .in_current_span(),
            );
        }
        let mut membership = false;
        while let Some(e) = self.core.poll_event() {
            match &e {
                Event::MemberUp { node_id, addr } => {
                    membership = true;
                    tracing::info!(peer = %node_id, %addr, "member up");
                }
                Event::MemberDown { node_id, addr } => {
                    membership = true;
                    tracing::info!(peer = %node_id, %addr, "member down");
                }
                Event::TableChanged(_) => {}
            }
        }
        if membership {
            self.refresh_members();
        }
        let v = self.core.tables().version();
        if v != self.last_version {
            self.last_version = v;
            let _ = self.view_tx.send(Arc::new(self.core.view()));
        }
    }
}

/// One push-pull connection, either side: send `first` if we opened it,
/// then answer each frame through the core until it has nothing to say or
/// the peer closes.
async fn exchange(
    mut s: TcpStream,
    peer: SocketAddr,
    first: Option<Vec<u8>>,
    core: mpsc::Sender<StreamInput>,
    counters: Arc<Counters>,
) -> std::io::Result<()> {
    let timeout =
        |e: tokio::time::error::Elapsed| std::io::Error::new(std::io::ErrorKind::TimedOut, e);
    if let Some(f) = first {
        write_frame(&mut s, &f).await?;
    }
    loop {
        let mut prefix = [0u8; 4];
        match tokio::time::timeout(STREAM_TIMEOUT, s.read_exact(&mut prefix))
            .await
            .map_err(timeout)?
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = match wire::frame_len(prefix) {
            Ok(l) => l,
            Err(e) => {
                counters.dropped(DropReason::FrameTooLarge);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        };
        let mut frame = vec![0u8; len];
        tokio::time::timeout(STREAM_TIMEOUT, s.read_exact(&mut frame))
            .await
            .map_err(timeout)??;
        let (reply, rx) = oneshot::channel();
        if core
            .send(StreamInput {
                from: peer,
                frame,
                reply,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        match rx.await {
            Ok(Some(r)) => write_frame(&mut s, &r).await?,
            _ => return s.shutdown().await,
        }
    }
}

async fn write_frame(s: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let f = wire::frame(payload)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    tokio::time::timeout(STREAM_TIMEOUT, s.write_all(&f))
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e))?
}
