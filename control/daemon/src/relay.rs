//! Relaying a node's published ports into another network namespace: the
//! routing mesh's ingress sandbox ([`crate::ingress`]) and a task's own
//! namespace for host-mode ports ([`crate::hostports`]) both listen in the
//! node's namespace and reach their backends from a namespace the daemon
//! does not live in.
//!
//! A socket belongs to the namespace it was made in, whichever thread uses
//! it later, so a [`SocketFactory`] thread enters the other namespace once
//! and makes every outgoing socket there; the async code then connects and
//! moves bytes on the daemon's runtime. One implementation of the TCP relay
//! and of UDP sessions serves both callers; they differ only in where a
//! flow goes ([`UdpRoutes`], and the caller's own choice for TCP).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A socket the factory makes.
enum Made {
    Tcp(std::io::Result<TcpSocket>),
    Udp(std::io::Result<std::net::UdpSocket>),
}

/// A thread that lives in another network namespace and makes sockets
/// there. The thread (and its hold on the namespace) ends when the factory
/// is dropped.
pub(crate) struct SocketFactory {
    tx: std::sync::mpsc::Sender<(bool, oneshot::Sender<Made>)>,
}

impl SocketFactory {
    /// Starts the thread `name` in the namespace at `netns`.
    pub(crate) fn start(netns: &Path, name: &str) -> Result<SocketFactory, String> {
        let ns = shoal_sys::netns::NetNs::open(netns)
            .map_err(|e| format!("cannot open the namespace {}: {e}", netns.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<(bool, oneshot::Sender<Made>)>();
        let thread = name.to_string();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(e) = ns.enter_current_thread() {
                    tracing::error!(thread, error = %e, "a socket thread cannot enter its namespace");
                    return;
                }
                // Ends when the factory (the sender) is dropped.
                while let Ok((udp, reply)) = rx.recv() {
                    let made = if udp {
                        Made::Udp(std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                    } else {
                        Made::Tcp(TcpSocket::new_v4())
                    };
                    let _ = reply.send(made);
                }
            })
            .map_err(|e| format!("cannot start the socket thread {name}: {e}"))?;
        Ok(SocketFactory { tx })
    }

    async fn make(&self, udp: bool) -> std::io::Result<Made> {
        let gone = || std::io::Error::other("the namespace's socket thread ended");
        let (reply, rx) = oneshot::channel();
        self.tx.send((udp, reply)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// A new TCP socket in the namespace.
    pub(crate) async fn tcp(&self) -> std::io::Result<TcpSocket> {
        match self.make(false).await? {
            Made::Tcp(s) => s,
            Made::Udp(_) => Err(std::io::Error::other("the socket thread made a UDP socket")),
        }
    }

    /// A new UDP socket in the namespace, bound to an ephemeral port.
    pub(crate) async fn udp(&self) -> std::io::Result<UdpSocket> {
        match self.make(true).await? {
            Made::Udp(s) => {
                let s = s?;
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            }
            Made::Tcp(_) => Err(std::io::Error::other("the socket thread made a TCP socket")),
        }
    }
}

/// Why a connection to a backend was not made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// No socket could be made in the namespace: trying another backend
    /// will not help.
    Socket(std::io::Error),
    /// The backend refused or was unreachable.
    Refused(std::io::Error),
    /// The backend did not answer in time.
    Timeout,
}

/// Connects to `to` from the factory's namespace, within `timeout`.
pub(crate) async fn connect(
    factory: &SocketFactory,
    to: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = factory.tcp().await.map_err(ConnectError::Socket)?;
    match tokio::time::timeout(timeout, socket.connect(to)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ConnectError::Refused(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// Moves bytes both ways until both sides are done.
pub(crate) async fn pipe(client: &mut TcpStream, backend: &mut TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(client, backend).await;
}

/// A TCP listener on `addr` in the daemon's namespace (`SO_REUSEADDR`, so a
/// port closed a moment ago can be listened on again).
pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// A UDP socket on `addr` in the daemon's namespace.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let u = std::net::UdpSocket::bind(addr)?;
    u.set_nonblocking(true)?;
    UdpSocket::from_std(u)
}

/// Accepts connections on `listener` for ever, each handed to `handle` on a
/// task of its own. `what` names the listener in logs.
pub(crate) async fn accept<F, Fut>(listener: TcpListener, what: &'static str, port: u16, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(handle(client, peer));
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "{what}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the datagrams of a published UDP port go.
pub(crate) trait UdpRoutes: Send + Sync + 'static {
    /// The backend of a new session for `client`; `None` drops the
    /// datagram.
    fn pick(&self, client: SocketAddr) -> Option<SocketAddr>;
    /// Whether a session's backend `to` still takes datagrams (otherwise
    /// the client's next datagram picks again).
    fn keeps(&self, to: SocketAddr) -> bool;
    /// Makes the sessions' sockets.
    fn factory(&self) -> &SocketFactory;
    /// Names the port in logs.
    fn what(&self) -> &'static str;
}

/// A UDP client's session: its socket in the other namespace, connected to
/// the backend that serves it, and the task sending the replies back.
struct UdpSession {
    to_backend: Arc<UdpSocket>,
    to: SocketAddr,
    last: Instant,
    replies: JoinHandle<()>,
}

impl Drop for UdpSession {
    /// The reply task holds the published socket: it ends with its session,
    /// so a port that is closed is free at once.
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// How long a UDP client's session lives without datagrams (Linux
/// conntrack's UDP stream timeout is 120 s, its unreplied one 30 s).
pub(crate) const UDP_IDLE: Duration = Duration::from_secs(30);

/// Serves a published UDP port: each client (address and port) gets a
/// session with one backend, picked by `routes`; replies go back from the
/// published port. A session whose backend `routes` no longer keeps is
/// dropped, so the client's next datagram picks another.
pub(crate) async fn serve_udp<R: UdpRoutes>(socket: UdpSocket, routes: Arc<R>) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SocketAddr, UdpSession> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, peer)) = got else { continue };
                if !sessions.get(&peer).is_some_and(|s| routes.keeps(s.to)) {
                    sessions.remove(&peer);
                    match open_udp_session(&*routes, peer, socket.clone()).await {
                        Some(s) => {
                            sessions.insert(peer, s);
                        }
                        None => continue,
                    }
                }
                if let Some(s) = sessions.get_mut(&peer) {
                    s.last = Instant::now();
                    let _ = s.to_backend.send(&buf[..n]).await;
                }
            }
            _ = sweep.tick() => sessions.retain(|_, s| s.last.elapsed() < UDP_IDLE),
        }
    }
}

async fn open_udp_session<R: UdpRoutes>(
    routes: &R,
    peer: SocketAddr,
    published: Arc<UdpSocket>,
) -> Option<UdpSession> {
    let to = routes.pick(peer)?;
    let to_backend = match routes.factory().udp().await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::warn!(error = %e, "{}: cannot make a UDP socket in the namespace", routes.what());
            return None;
        }
    };
    to_backend.connect(to).await.ok()?;
    let from_backend = to_backend.clone();
    let replies = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, from_backend.recv(&mut buf)).await {
            let _ = published.send_to(&buf[..n], peer).await;
        }
    });
    Some(UdpSession {
        to_backend,
        to,
        last: Instant::now(),
        replies,
    })
}
