//! The driver: UDP and TCP sockets on 127.0.0.11:53 inside a task's namespace.
//!
//! Sockets are created on a short-lived thread that entered the namespace
//! ([`NetNs::run`]); a socket keeps its namespace for life, so they are then handed
//! to the caller's tokio runtime and served from its ordinary worker threads. No
//! `IP_FREEBIND` is needed: in a fresh namespace whose `lo` is up, the kernel's
//! `local 127.0.0.0/8 dev lo` route makes every 127/8 address bindable although
//! only 127.0.0.1 is configured (the namespace test checks this).
//!
//! The serving loops are our own, not hickory-server's `ServerFuture`: the pure
//! [`handle_query`] already turns bytes into reply bytes, and routing each message
//! through it (rather than through hickory-server's own decoding, FORMERR handling
//! and response builder) keeps one code path for the fuzz target, the tests and
//! production, keeps the counters exact, and saves a dependency. What remains here
//! is moving bytes: one UDP loop, one TCP accept loop with a connection cap and an
//! idle timeout per connection (RFC 7766 two-byte length framing), and a task per
//! forward so a slow upstream never stalls local answers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use shoal_sys::netns::NetNs;

use crate::error::DnsError;
use crate::forward::Forwarder;
use crate::query::{handle_query, QueryOutcome, Reply, ReplyKind};
use crate::zone::Zone;

/// Where Docker's embedded DNS server listens in every container.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    crate::forward::EMBEDDED_DNS,
    53,
));

/// Limits of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// A TCP connection with no complete message for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// TCP connections served at once; more are closed on accept (counted).
    pub max_tcp_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 128,
        }
    }
}

impl ServerConfig {
    /// Refuses values that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), DnsError> {
        if self.tcp_idle_timeout.is_zero() {
            return Err(DnsError::Config {
                field: "tcp_idle_timeout",
                reason: "must be more than zero".into(),
            });
        }
        if self.max_tcp_connections == 0 {
            return Err(DnsError::Config {
                field: "max_tcp_connections",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Counters of one server, a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Messages received (UDP datagrams and TCP messages).
    pub queries: u64,
    /// Answered from the zone (records or NODATA).
    pub answered_locally: u64,
    /// Handed to the forwarder.
    pub forwarded: u64,
    /// SERVFAIL sent (forwarding failed or over its cap).
    pub servfail: u64,
    /// FORMERR sent.
    pub formerr: u64,
    /// NOTIMP sent.
    pub notimp: u64,
    /// Messages not answered at all (no header, or a response).
    pub dropped: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections closed at once because `max_tcp_connections` were open.
    pub tcp_refused: u64,
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    answered_locally: AtomicU64,
    forwarded: AtomicU64,
    servfail: AtomicU64,
    formerr: AtomicU64,
    notimp: AtomicU64,
    dropped: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_refused: AtomicU64,
    rotate: AtomicU64,
}

impl Counters {
    fn count_reply(&self, kind: ReplyKind) {
        let c = match kind {
            ReplyKind::Local => &self.answered_locally,
            ReplyKind::FormErr => &self.formerr,
            ReplyKind::NotImp => &self.notimp,
            ReplyKind::ServFail => &self.servfail,
            ReplyKind::Forwarded => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the serving tasks share.
struct Shared {
    zone: watch::Receiver<Arc<Zone>>,
    forwarder: Arc<Forwarder>,
    counters: Counters,
    config: ServerConfig,
}

impl Shared {
    /// Runs the pure core on one message; `None` means answer nothing.
    async fn answer(&self, bytes: &[u8]) -> Option<Reply> {
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let rotate = self.counters.rotate.fetch_add(1, Ordering::Relaxed);
        let zone = self.zone.borrow().clone();
        match handle_query(&zone, bytes, rotate) {
            QueryOutcome::Reply(reply) => {
                self.counters.count_reply(reply.kind);
                Some(reply)
            }
            QueryOutcome::Drop(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
            QueryOutcome::Forward(q) => {
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                let reply = self.forwarder.forward(&q).await;
                self.counters.count_reply(reply.kind);
                Some(reply)
            }
        }
    }
}

/// A running DNS server. Stops on [`DnsServer::shutdown`] or drop.
pub struct DnsServer {
    shared: Arc<Shared>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` inside the namespace at `netns` (None: the
    /// caller's) and serves `zone` (swapped whenever the channel changes), sending
    /// other names to `forwarder`. Must be called inside a tokio runtime, which
    /// then runs the server.
    pub fn start(
        netns: Option<&Path>,
        listen: SocketAddr,
        zone: watch::Receiver<Arc<Zone>>,
        forwarder: Arc<Forwarder>,
    ) -> Result<Self, DnsError> {
        Self::start_with(netns, listen, zone, forwarder, ServerConfig::default())
    }

    /// [`DnsServer::start`] with explicit limits.
    pub fn start_with(
        netns: Option<&Path>,
        listen: SocketAddr,
        zone: watch::Receiver<Arc<Zone>>,
        forwarder: Arc<Forwarder>,
        config: ServerConfig,
    ) -> Result<Self, DnsError> {
        config.validate()?;
        tokio::runtime::Handle::try_current()
            .map_err(|_| DnsError::NoRuntime("DnsServer::start"))?;
        let bind = move || -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
            let udp = std::net::UdpSocket::bind(listen).map_err(|source| DnsError::Bind {
                proto: "UDP",
                addr: listen,
                source,
            })?;
            // Port 0: take the same port for TCP as UDP got.
            let tcp_addr = udp.local_addr().unwrap_or(listen);
            let tcp = std::net::TcpListener::bind(tcp_addr).map_err(|source| DnsError::Bind {
                proto: "TCP",
                addr: tcp_addr,
                source,
            })?;
            Ok((udp, tcp))
        };
        let (udp, tcp) = match netns {
            Some(path) => NetNs::open(path)?.run(bind)??,
            None => bind()?,
        };
        let sock_err = |what| move |source| DnsError::Socket { what, source };
        udp.set_nonblocking(true).map_err(sock_err("UDP"))?;
        tcp.set_nonblocking(true).map_err(sock_err("TCP"))?;
        let udp = UdpSocket::from_std(udp).map_err(sock_err("UDP"))?;
        let tcp = TcpListener::from_std(tcp).map_err(sock_err("TCP"))?;
        let udp_addr = udp.local_addr().map_err(sock_err("UDP"))?;
        let tcp_addr = tcp.local_addr().map_err(sock_err("TCP"))?;
        let shared = Arc::new(Shared {
            zone,
            forwarder,
            counters: Counters::default(),
            config,
        });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), shared.clone())),
            tokio::spawn(serve_tcp(tcp, shared.clone())),
        ];
        tracing::debug!(%udp_addr, netns = ?netns, "embedded DNS server started");
        Ok(Self {
            shared,
            udp_addr,
            tcp_addr,
            tasks,
        })
    }

    /// The UDP address bound (useful with port 0).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The TCP address bound.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            queries: c.queries.load(Ordering::Relaxed),
            answered_locally: c.answered_locally.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            servfail: c.servfail.load(Ordering::Relaxed),
            formerr: c.formerr.load(Ordering::Relaxed),
            notimp: c.notimp.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            tcp_connections: c.tcp_connections.load(Ordering::Relaxed),
            tcp_refused: c.tcp_refused.load(Ordering::Relaxed),
        }
    }

    /// The forwarder this server uses.
    pub fn forwarder(&self) -> &Arc<Forwarder> {
        &self.shared.forwarder
    }

    /// Stops serving: the sockets close and in-flight forwards are abandoned.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The UDP loop. Local answers are sent inline (they are cheap and never block);
/// forwards run in their own task, owned by a JoinSet so that aborting this loop
/// aborts them too.
async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    let mut forwards = JoinSet::new();
    loop {
        let (len, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP port unreachable from an earlier reply, and the like.
                Err(_) => continue,
            },
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let bytes = &buf[..len];
        shared.counters.queries.fetch_add(1, Ordering::Relaxed);
        let rotate = shared.counters.rotate.fetch_add(1, Ordering::Relaxed);
        let zone = shared.zone.borrow().clone();
        match handle_query(&zone, bytes, rotate) {
            QueryOutcome::Reply(reply) => {
                shared.counters.count_reply(reply.kind);
                let _ = socket.send_to(reply.for_udp(), from).await;
            }
            QueryOutcome::Drop(_) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            QueryOutcome::Forward(q) => {
                shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                let socket = socket.clone();
                forwards.spawn(async move {
                    let reply = shared.forwarder.forward(&q).await;
                    shared.counters.count_reply(reply.kind);
                    let _ = socket.send_to(reply.for_udp(), from).await;
                });
            }
        }
    }
}

/// The TCP accept loop, with a cap on connections served at once.
async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(shared.config.max_tcp_connections));
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    // Out of fds or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shared.counters.tcp_refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        shared
            .counters
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        conns.spawn(async move {
            serve_tcp_conn(stream, &shared).await;
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed messages answered in order until the
/// client closes, sends garbage we must not answer, or idles too long.
async fn serve_tcp_conn(mut stream: TcpStream, shared: &Shared) {
    let idle = shared.config.tcp_idle_timeout;
    let mut msg = Vec::new();
    loop {
        let read = async {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            msg.resize(usize::from(u16::from_be_bytes(len)), 0);
            stream.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(idle, read).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let Some(reply) = shared.answer(&msg).await else {
            return;
        };
        let out = reply.for_tcp();
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(out);
        if tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
    }
}
