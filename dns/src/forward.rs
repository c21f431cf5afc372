//! Asks the host's resolvers for the names that are not ours.
//!
//! This is a small stub forwarder over hickory-proto, not hickory-resolver. The
//! resolver is a full client: it caches, retries with its own policy, turns
//! NXDOMAIN and NODATA into errors and hands back records without the upstream's
//! header, authority section (the SOA that clients use for negative caching) or
//! EDNS. Docker's embedded server, like dnsmasq, passes the upstream's answer
//! through as it came, so we do too: the client's message goes upstream unchanged
//! but for its id, and the upstream's response comes back unchanged but for the
//! client's id (checked to be an answer to the same question from the address we
//! asked).
//!
//! Upstreams are tried in order, each with its own timeout; a SERVFAIL or REFUSED
//! from one moves on to the next (the last such answer is returned if nobody does
//! better); a truncated UDP answer is asked again over TCP. At most
//! `max_concurrent` forwards run at once; beyond that the client gets SERVFAIL at
//! once, counted, rather than queueing behind a slow upstream.
//!
//! Sockets: one unconnected UDP socket per address family, created in the
//! namespace given to [`Forwarder::new`] (the task's, like Docker, or none for the
//! caller's), shared by all forwards. A receive task hands each datagram to the
//! forward waiting for that (upstream, id); ids are unpredictable (SipHash of a
//! counter under a random key). The rare TCP fallback opens its connection on a
//! short-lived thread in that namespace.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use shoal_sys::netns::NetNs;

use crate::error::DnsError;
use crate::query::{ForwardQuery, Reply};

/// The address of Docker's embedded server, never used as an upstream.
pub const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// At most this many upstreams are used, like glibc's resolver (MAXNS).
pub const MAX_UPSTREAMS: usize = 3;
/// Default time to wait for one upstream.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cap on forwards in flight.
pub const DEFAULT_MAX_CONCURRENT: usize = 100;

/// Where and how to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Upstream resolvers, tried in order (at most [`MAX_UPSTREAMS`]). Empty: every
    /// forward is answered SERVFAIL (logged once).
    pub upstreams: Vec<SocketAddr>,
    /// Time to wait for each upstream.
    pub timeout: Duration,
    /// Forwards in flight at most; more get SERVFAIL at once.
    pub max_concurrent: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

impl ForwarderConfig {
    /// The defaults with `upstreams` from a resolv.conf text.
    pub fn from_resolv_conf(text: &str) -> Self {
        Self {
            upstreams: parse_resolv_conf(text),
            ..Self::default()
        }
    }

    /// The defaults with the upstreams of the file at `path` (usually
    /// `/etc/resolv.conf` of the host).
    pub fn from_resolv_conf_file(path: &Path) -> Result<Self, DnsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DnsError::ResolvConf {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::from_resolv_conf(&text))
    }

    /// The defaults with the upstreams of the host's `/etc/resolv.conf`.
    pub fn from_host() -> Result<Self, DnsError> {
        Self::from_resolv_conf_file(Path::new("/etc/resolv.conf"))
    }

    /// Refuses values that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), DnsError> {
        if self.upstreams.len() > MAX_UPSTREAMS {
            return Err(DnsError::Config {
                field: "upstreams",
                reason: format!(
                    "{} given, at most {MAX_UPSTREAMS} are used",
                    self.upstreams.len()
                ),
            });
        }
        if let Some(bad) = self.upstreams.iter().find(|a| a.ip() == EMBEDDED_DNS) {
            return Err(DnsError::Config {
                field: "upstreams",
                reason: format!("{bad} is the embedded server itself"),
            });
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(30) {
            return Err(DnsError::Config {
                field: "timeout",
                reason: format!("{:?} is outside 1 ms..=30 s", self.timeout),
            });
        }
        if self.max_concurrent == 0 || self.max_concurrent > 65_536 {
            return Err(DnsError::Config {
                field: "max_concurrent",
                reason: format!("{} is outside 1..=65536", self.max_concurrent),
            });
        }
        Ok(())
    }
}

/// The `nameserver` addresses of a resolv.conf, port 53, in order, without the
/// embedded server's own address and without link-local IPv6 (a scope id cannot
/// be carried over), at most [`MAX_UPSTREAMS`].
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let skip = match ip {
            IpAddr::V4(v4) => v4 == EMBEDDED_DNS || v4.is_unspecified(),
            IpAddr::V6(v6) => v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        let addr = SocketAddr::new(ip, 53);
        if !skip && !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_UPSTREAMS {
            break;
        }
    }
    out
}

/// Counters of the forwarder, a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// Forwards started (within the cap).
    pub forwarded: u64,
    /// Forwards that got an upstream's answer.
    pub answered: u64,
    /// Forwards that no upstream answered (or none is configured): SERVFAIL.
    pub servfail: u64,
    /// Forwards refused because `max_concurrent` were in flight: SERVFAIL.
    pub over_cap: u64,
    /// Single upstream attempts that timed out.
    pub timeouts: u64,
    /// Answers asked again over TCP because the UDP one was truncated.
    pub tcp_fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    answered: AtomicU64,
    servfail: AtomicU64,
    over_cap: AtomicU64,
    timeouts: AtomicU64,
    tcp_fallbacks: AtomicU64,
}

type Pending = Arc<Mutex<HashMap<(SocketAddr, u16), oneshot::Sender<Vec<u8>>>>>;

/// One shared UDP socket and the forwards waiting on it.
struct Channel {
    socket: Arc<UdpSocket>,
    pending: Pending,
    receiver: JoinHandle<()>,
}

/// Forwards questions to the upstream resolvers. Cheap to share (`Arc`).
pub struct Forwarder {
    config: ForwarderConfig,
    netns: Option<Arc<NetNs>>,
    v4: Option<Channel>,
    v6: Option<Channel>,
    permits: Arc<Semaphore>,
    counters: Counters,
    warned_no_upstream: AtomicBool,
    id_key: RandomState,
    id_counter: AtomicU64,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.config)
            .field(
                "netns",
                &self.netns.as_ref().map(|n| n.path().to_path_buf()),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for ch in [&self.v4, &self.v6].into_iter().flatten() {
            ch.receiver.abort();
        }
    }
}

impl Forwarder {
    /// A forwarder sending from the network namespace at `netns` (None: the
    /// caller's). Must be called inside a tokio runtime: it starts the receive
    /// task(s) there.
    pub fn new(config: ForwarderConfig, netns: Option<&Path>) -> Result<Self, DnsError> {
        config.validate()?;
        tokio::runtime::Handle::try_current().map_err(|_| DnsError::NoRuntime("Forwarder::new"))?;
        let netns = netns.map(NetNs::open).transpose()?.map(Arc::new);
        let want_v4 = config.upstreams.iter().any(SocketAddr::is_ipv4);
        let want_v6 = config.upstreams.iter().any(SocketAddr::is_ipv6);
        let bind = |addr: SocketAddr| -> Result<std::net::UdpSocket, DnsError> {
            let make = move || {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            };
            let made = match &netns {
                Some(ns) => ns.run(make)?,
                None => make(),
            };
            made.map_err(|source| DnsError::Socket {
                what: "forwarding UDP",
                source,
            })
        };
        let channel = |std: std::net::UdpSocket| -> Result<Channel, DnsError> {
            let socket = Arc::new(UdpSocket::from_std(std).map_err(|source| DnsError::Socket {
                what: "forwarding UDP",
                source,
            })?);
            let pending: Pending = Arc::default();
            let receiver = tokio::spawn(receive(socket.clone(), pending.clone()));
            Ok(Channel {
                socket,
                pending,
                receiver,
            })
        };
        let v4 = if want_v4 {
            Some(channel(bind(SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                0,
            )))?)?)
        } else {
            None
        };
        let v6 = if want_v6 {
            Some(channel(bind(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                0,
            )))?)?)
        } else {
            None
        };
        Ok(Self {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            netns,
            v4,
            v6,
            counters: Counters::default(),
            warned_no_upstream: AtomicBool::new(false),
            id_key: RandomState::new(),
            id_counter: AtomicU64::new(0),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ForwarderConfig {
        &self.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.counters;
        ForwarderStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            servfail: c.servfail.load(Ordering::Relaxed),
            over_cap: c.over_cap.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            tcp_fallbacks: c.tcp_fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Asks the upstreams and returns the client's reply: the upstream's answer
    /// (any rcode but SERVFAIL/REFUSED preferred), or SERVFAIL.
    pub async fn forward(&self, query: &ForwardQuery) -> Reply {
        if self.config.upstreams.is_empty() {
            if !self.warned_no_upstream.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "no upstream DNS server configured: names outside the swarm get SERVFAIL"
                );
            }
            self.counters.servfail.fetch_add(1, Ordering::Relaxed);
            return query.servfail();
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.counters.over_cap.fetch_add(1, Ordering::Relaxed);
            return query.servfail();
        };
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut fallback: Option<Reply> = None;
        for &upstream in &self.config.upstreams {
            match self.ask(upstream, query).await {
                Some((reply, rcode)) => {
                    if matches!(rcode, ResponseCode::ServFail | ResponseCode::Refused) {
                        fallback = Some(reply);
                        continue;
                    }
                    self.counters.answered.fetch_add(1, Ordering::Relaxed);
                    return reply;
                }
                None => continue,
            }
        }
        if let Some(reply) = fallback {
            self.counters.answered.fetch_add(1, Ordering::Relaxed);
            return reply;
        }
        self.counters.servfail.fetch_add(1, Ordering::Relaxed);
        query.servfail()
    }

    fn next_id(&self) -> u16 {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        self.id_key.hash_one(n) as u16
    }

    /// One upstream, UDP then TCP if truncated; `None` on timeout or error.
    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &ForwardQuery,
    ) -> Option<(Reply, ResponseCode)> {
        let channel = if upstream.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        }
        .as_ref()?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = channel.pending.lock().ok()?;
            let mut id = self.next_id();
            // Bounded: at most max_concurrent ids are taken out of 65536.
            for _ in 0..64 {
                if !pending.contains_key(&(upstream, id)) {
                    break;
                }
                id = self.next_id();
            }
            if pending.contains_key(&(upstream, id)) {
                return None;
            }
            pending.insert((upstream, id), tx);
            id
        };
        let _unregister = Unregister {
            pending: &channel.pending,
            key: (upstream, id),
        };
        let bytes = query.upstream_bytes(id)?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        channel.socket.send_to(&bytes, upstream).await.ok()?;
        let mut rx = rx;
        loop {
            let answer = match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => return None,
                Err(_) => {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            };
            if ForwardQuery::is_truncated(&answer) {
                self.counters.tcp_fallbacks.fetch_add(1, Ordering::Relaxed);
                return self.ask_tcp(upstream, query, deadline).await;
            }
            if let Some(reply) = query.accept_upstream(&answer, id) {
                let rcode = response_code(&answer);
                return Some((reply, rcode));
            }
            // Not an answer to our question (spoofed or stale): keep waiting.
            let (tx, new_rx) = oneshot::channel();
            channel.pending.lock().ok()?.insert((upstream, id), tx);
            rx = new_rx;
        }
    }

    async fn ask_tcp(
        &self,
        upstream: SocketAddr,
        query: &ForwardQuery,
        deadline: tokio::time::Instant,
    ) -> Option<(Reply, ResponseCode)> {
        let id = self.next_id();
        let bytes = query.upstream_bytes(id)?;
        let work = async {
            let mut stream = self.connect_tcp(upstream).await?;
            let len = u16::try_from(bytes.len()).ok()?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.ok()?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.ok()?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut answer).await.ok()?;
            let reply = query.accept_upstream(&answer, id)?;
            Some((reply, response_code(&answer)))
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn connect_tcp(&self, upstream: SocketAddr) -> Option<TcpStream> {
        match &self.netns {
            None => TcpStream::connect(upstream).await.ok(),
            Some(ns) => {
                // The socket must be made inside the namespace; connecting it there
                // on a throwaway thread is simplest, and TC answers are rare.
                let ns = ns.clone();
                let timeout = self.config.timeout;
                let std = tokio::task::spawn_blocking(move || {
                    ns.run(|| std::net::TcpStream::connect_timeout(&upstream, timeout))
                })
                .await
                .ok()?
                .ok()?
                .ok()?;
                std.set_nonblocking(true).ok()?;
                TcpStream::from_std(std).ok()
            }
        }
    }

    /// The namespace forwards are sent from, if not the caller's.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_ref().map(|n| n.path().to_path_buf())
    }
}

/// Removes a pending entry when its forward ends, however it ends.
struct Unregister<'a> {
    pending: &'a Pending,
    key: (SocketAddr, u16),
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.key);
        }
    }
}

fn response_code(bytes: &[u8]) -> ResponseCode {
    ResponseCode::from_low(bytes.get(3).map_or(0, |b| b & 0x0f))
}

/// Hands each datagram to the forward waiting for its (source, id).
async fn receive(socket: Arc<UdpSocket>, pending: Pending) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            // ICMP errors surface here on Linux; the forward times out.
            continue;
        };
        if len < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let waiter = pending.lock().ok().and_then(|mut p| p.remove(&(from, id)));
        if let Some(tx) = waiter {
            let _ = tx.send(buf[..len].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_parsed_like_glibc() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.11\nnameserver 192.0.2.1\n\
                    nameserver   2001:db8::1 \nnameserver fe80::1%eth0\nnameserver fe80::1\n\
                    nameserver bogus\nnameserver 192.0.2.1\noptions ndots:0\n\
                    nameserver 192.0.2.2\nnameserver 192.0.2.3\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
            "192.0.2.2:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = ForwarderConfig::default();
        c.validate().unwrap();
        c.max_concurrent = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_concurrent"));
        c.max_concurrent = 1;
        c.timeout = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("timeout"));
        c.timeout = DEFAULT_TIMEOUT;
        c.upstreams = vec!["127.0.0.11:53".parse().unwrap()];
        assert!(c.validate().unwrap_err().to_string().contains("upstreams"));
    }
}
