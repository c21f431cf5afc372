//! Relaying a node's published ports into another network namespace: the
//! routing mesh's ingress sandbox ([`crate::ingress`]) and a task's own
//! namespace for host-mode ports ([`crate::hostports`]) both listen in the
//! node's namespace and reach their backends from a namespace the daemon
//! does not live in.
//!
//! A socket belongs to the namespace it was made in, whichever thread uses
//! it later, so a [`SocketFactory`] thread enters the other namespace once
//! and makes every outgoing socket there, a few ahead of need; the async
//! code then connects and moves bytes on the relays' own thread. One
//! implementation of the TCP relay and of UDP sessions serves both callers;
//! they differ only in where a flow goes ([`UdpRoutes`], and the caller's
//! own choice for TCP).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A socket the factory makes on demand.
enum Made {
    Tcp(std::io::Result<TcpSocket>),
    Udp(std::io::Result<std::net::UdpSocket>),
}

/// What the factory thread is asked for.
enum Request {
    /// Top the spare TCP sockets up to the factory's `keep`.
    Refill,
    /// One socket now (UDP when true), sent back on the channel.
    Make(bool, oneshot::Sender<Made>),
}

/// Unconnected TCP sockets made ahead in the namespace. A socket belongs to
/// the namespace it was made in, so one made early is as good as one made on
/// demand, and taking it costs a lock instead of two cross-thread wake-ups
/// on the connection's path.
struct Spare {
    sockets: Mutex<Vec<TcpSocket>>,
    /// A refill is asked for and not yet done.
    refilling: AtomicBool,
    /// How many the thread keeps ready.
    keep: usize,
}

/// A thread that lives in another network namespace and makes sockets
/// there. The thread (and its hold on the namespace) ends when the factory
/// is dropped.
pub(crate) struct SocketFactory {
    tx: std::sync::mpsc::Sender<Request>,
    spare: Arc<Spare>,
}

impl SocketFactory {
    /// Starts the thread `name` in the namespace at `netns`, keeping up to
    /// `keep` TCP sockets made ahead (0: each one made when asked for).
    pub(crate) fn start(netns: &Path, name: &str, keep: usize) -> Result<SocketFactory, String> {
        let ns = shoal_sys::netns::NetNs::open(netns)
            .map_err(|e| format!("cannot open the namespace {}: {e}", netns.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let spare = Arc::new(Spare {
            sockets: Mutex::new(Vec::with_capacity(keep)),
            refilling: AtomicBool::new(false),
            keep,
        });
        let thread = name.to_string();
        let filled = spare.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(e) = ns.enter_current_thread() {
                    tracing::error!(thread, error = %e, "a socket thread cannot enter its namespace");
                    return;
                }
                // Ends when the factory (the sender) is dropped.
                while let Ok(request) = rx.recv() {
                    match request {
                        Request::Refill => filled.refill(&thread),
                        Request::Make(udp, reply) => {
                            let made = if udp {
                                Made::Udp(std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
                            } else {
                                Made::Tcp(new_tcp())
                            };
                            let _ = reply.send(made);
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the socket thread {name}: {e}"))?;
        let factory = SocketFactory { tx, spare };
        factory.ask_refill();
        Ok(factory)
    }

    fn ask_refill(&self) {
        if self.spare.keep > 0 && !self.spare.refilling.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Request::Refill);
        }
    }

    async fn make(&self, udp: bool) -> std::io::Result<Made> {
        let gone = || std::io::Error::other("the namespace's socket thread ended");
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Make(udp, reply))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// A new TCP socket in the namespace: a spare one when there is one
    /// (asking for more once half are used), else one made now.
    pub(crate) async fn tcp(&self) -> std::io::Result<TcpSocket> {
        let (socket, low) = {
            let mut spare = lock(&self.spare.sockets);
            let socket = spare.pop();
            (socket, spare.len() <= self.spare.keep / 2)
        };
        if low {
            self.ask_refill();
        }
        if let Some(socket) = socket {
            return Ok(socket);
        }
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

impl Spare {
    /// On the factory's thread: makes sockets until `keep` are ready. A
    /// failure (out of descriptors) stops this refill; the next connection
    /// asks again, and one made on demand reports the error.
    fn refill(&self, thread: &str) {
        let missing = self.keep.saturating_sub(lock(&self.sockets).len());
        let mut made = Vec::with_capacity(missing);
        for _ in 0..missing {
            match new_tcp() {
                Ok(s) => made.push(s),
                Err(e) => {
                    tracing::warn!(thread, error = %e, "cannot make spare sockets");
                    break;
                }
            }
        }
        lock(&self.sockets).extend(made);
        self.refilling.store(false, Ordering::Release);
    }
}

/// A TCP socket set up for the relay before it connects: `TCP_NODELAY`
/// (the relay writes what it has at once) and delayed ACKs (see
/// [`connect`]). Set here, on the factory's thread, rather than per
/// connection on the relays' thread.
fn new_tcp() -> std::io::Result<TcpSocket> {
    let s = TcpSocket::new_v4()?;
    s.set_nodelay(true)?;
    socket2::SockRef::from(&s).set_tcp_quickack(false)?;
    Ok(s)
}

/// A mutex whose holder cannot leave it inconsistent (a push or a pop).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// The most of a client's first bytes [`early_bytes`] takes.
const EARLY_BYTES: usize = 4096;

/// What the client has sent already, taken without waiting: nothing when it
/// has sent nothing yet (or speaks only after the server).
pub(crate) fn early_bytes(client: &TcpStream) -> Vec<u8> {
    let mut buf = [0u8; EARLY_BYTES];
    match client.try_read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Connects to `to` from the factory's namespace, within `timeout`, and
/// sends `opening` first.
///
/// When there is an opening, the socket connects with delayed ACKs
/// (`TCP_QUICKACK` off, HAProxy's `tcp-smart-connect`): the last ACK of the
/// handshake then rides on the opening's first segment instead of going
/// alone, one packet less per connection over the overlay. Without one the
/// handshake is left alone, so a server that speaks first is not kept
/// waiting for that ACK.
pub(crate) async fn connect(
    factory: &SocketFactory,
    to: SocketAddr,
    timeout: Duration,
    opening: &[u8],
) -> Result<TcpStream, ConnectError> {
    let socket = factory.tcp().await.map_err(ConnectError::Socket)?;
    if opening.is_empty() {
        // Sockets are made with delayed ACKs; this one has nothing to carry
        // the handshake's last ACK.
        socket2::SockRef::from(&socket)
            .set_tcp_quickack(true)
            .map_err(ConnectError::Socket)?;
    }
    let mut stream = match tokio::time::timeout(timeout, socket.connect(to)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Refused(e)),
        Err(_) => return Err(ConnectError::Timeout),
    };
    if !opening.is_empty() {
        stream
            .write_all(opening)
            .await
            .map_err(ConnectError::Refused)?;
    }
    Ok(stream)
}

/// Each direction of [`pipe`] starts with a buffer of this size (HAProxy's
/// default `tune.bufsize`), enough for most requests and answers ...
const COPY_BUFFER_FIRST: usize = 16 << 10;
/// ... and moves to one of this size (a TSO super-frame) once a read fills
/// it, so a bulk transfer takes a quarter of the reads and writes.
const COPY_BUFFER_BULK: usize = 64 << 10;

/// Moves bytes both ways until both sides are done; a side that ends its
/// sending (EOF) has the other side's sending shut down in turn, and an
/// error on either side ends both. Both sockets are `TCP_NODELAY` already:
/// `client` from a [`listen_tcp`] listener, `backend` from [`connect`].
pub(crate) async fn pipe(client: &mut TcpStream, backend: &mut TcpStream) {
    let (from_client, to_client) = client.split();
    let (from_backend, to_backend) = backend.split();
    let [client_done, backend_done] = [AtomicBool::new(false), AtomicBool::new(false)];
    let _ = tokio::try_join!(
        one_way(from_client, to_backend, &client_done, &backend_done),
        one_way(from_backend, to_client, &backend_done, &client_done)
    );
}

/// Copies `from` to `to` until EOF, then shuts `to`'s sending down, unless
/// the other way has ended too (`other_done`): both sockets are closed at
/// once then, which sends the same FIN without the extra call. The buffer
/// is filled without being zeroed first (`read_buf` into spare capacity),
/// so a large one costs nothing for a short connection.
async fn one_way(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    done: &AtomicBool,
    other_done: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(COPY_BUFFER_FIRST);
    loop {
        buf.clear();
        if from.read_buf(&mut buf).await? == 0 {
            done.store(true, Ordering::Relaxed);
            if other_done.load(Ordering::Relaxed) {
                return Ok(());
            }
            return to.shutdown().await;
        }
        to.write_all(&buf).await?;
        if buf.len() == buf.capacity() && buf.capacity() < COPY_BUFFER_BULK {
            buf.reserve_exact(COPY_BUFFER_BULK - buf.len());
        }
    }
}

/// The runtime every relay runs on: one thread of its own with its own
/// event loop. A connection's accept, connect and copies then stay on one
/// thread, with no wake-ups across the daemon's worker threads; on a
/// two-core node that was a measurable share of a short connection's cost
/// (docs/PERFORMANCE.md, routing mesh).
fn runtime() -> std::io::Result<&'static tokio::runtime::Handle> {
    static RELAYS: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RELAYS
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot make the relays' runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("relays".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("cannot start the relays' thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))
}

/// Listens on TCP `addr` in the daemon's namespace (`SO_REUSEADDR`, so a
/// port closed a moment ago can be listened on again) and hands each
/// connection to `handle` on a task of its own, on the relays' runtime.
/// `what` names the listener in logs.
pub(crate) fn listen_tcp<F, Fut>(
    addr: SocketAddr,
    what: &'static str,
    handle: F,
) -> std::io::Result<JoinHandle<()>>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = runtime()?;
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    // Inherited by every accepted socket.
    socket2::SockRef::from(&l).set_tcp_nodelay(true)?;
    let listener = {
        let _in = rt.enter();
        TcpListener::from_std(l)?
    };
    Ok(rt.spawn(accept(listener, what, addr.port(), handle)))
}

/// Serves UDP `addr` in the daemon's namespace with [`serve_udp`], on the
/// relays' runtime.
pub(crate) fn listen_udp<R: UdpRoutes>(
    addr: SocketAddr,
    routes: Arc<R>,
) -> std::io::Result<JoinHandle<()>> {
    let rt = runtime()?;
    let u = std::net::UdpSocket::bind(addr)?;
    u.set_nonblocking(true)?;
    let socket = {
        let _in = rt.enter();
        UdpSocket::from_std(u)?
    };
    Ok(rt.spawn(serve_udp(socket, routes)))
}

/// Accepts connections on `listener` for ever, each handed to `handle` on a
/// task of its own.
async fn accept<F, Fut>(listener: TcpListener, what: &'static str, port: u16, handle: F)
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
async fn serve_udp<R: UdpRoutes>(socket: UdpSocket, routes: Arc<R>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::MetadataExt;
    use tokio::io::AsyncReadExt;

    /// A factory in the test's own namespace (entering a namespace needs
    /// root, as the daemon has).
    fn factory(keep: usize) -> Option<SocketFactory> {
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            eprintln!("SKIPPED: needs root to enter a network namespace");
            return None;
        }
        Some(SocketFactory::start(Path::new("/proc/self/ns/net"), "test-sockets", keep).unwrap())
    }

    /// A front listener whose one connection is relayed to `backend` with
    /// `header` and the client's early bytes first, as the mesh does: its
    /// address, and the relay's task.
    async fn relay_one(
        backend: SocketAddr,
        header: &'static [u8],
        f: SocketFactory,
    ) -> (SocketAddr, JoinHandle<()>) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = front.local_addr().unwrap();
        let relay = tokio::spawn(async move {
            let (mut client, _) = front.accept().await.unwrap();
            let mut opening = header.to_vec();
            opening.extend(early_bytes(&client));
            let mut task = connect(&f, backend, Duration::from_secs(2), &opening)
                .await
                .unwrap();
            pipe(&mut client, &mut task).await;
        });
        (at, relay)
    }

    #[tokio::test]
    async fn the_opening_comes_first_and_each_side_sees_the_others_end() {
        let Some(f) = factory(4) else { return };
        // The backend reads to EOF (the client's end passed on), keeps what
        // it read, answers and closes.
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = backend.local_addr().unwrap();
        let seen = std::thread::spawn(move || {
            let (mut c, _) = backend.accept().unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            c.write_all(b"answer").unwrap();
            got
        });
        let (at, relay) = relay_one(to, b"HEADER ", f).await;
        let mut c = TcpStream::connect(at).await.unwrap();
        c.write_all(b"request").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, b"answer");
        assert_eq!(seen.join().unwrap(), b"HEADER request");
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_server_that_speaks_first_is_heard_and_bulk_moves_intact_both_ways() {
        let Some(f) = factory(4) else { return };
        // Greets, then echoes everything until EOF.
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = backend.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = backend.accept().unwrap();
            c.write_all(b"220 hello\r\n").unwrap();
            let mut buf = [0u8; 32 << 10];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let (at, relay) = relay_one(to, b"", f).await;
        let c = TcpStream::connect(at).await.unwrap();
        let (mut rx, mut tx) = c.into_split();
        let mut greeting = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), rx.read_exact(&mut greeting))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&greeting, b"220 hello\r\n");
        // 4 MiB that is not one repeated byte, so a reordering would show.
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
            tx.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), rx.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
        tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn spare_sockets_are_refilled_and_run_out_gracefully() {
        let Some(f) = factory(8) else { return };
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = backend.local_addr().unwrap();
        // Four times the spares, faster than one refill could keep up with:
        // the ones made on demand fill the gap.
        let mut held = Vec::new();
        for _ in 0..32 {
            held.push(connect(&f, to, Duration::from_secs(2), b"").await.unwrap());
        }
        drop(held);
        // A refill is asked for whenever half or fewer are left.
        let refilled = async {
            while lock(&f.spare.sockets).len() <= 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refilled)
            .await
            .expect("the spare sockets are made again");
        // A socket of the factory's, unconnected, is a plain TCP socket.
        let s = f.tcp().await.unwrap();
        assert!(s.local_addr().is_ok());
    }
}
