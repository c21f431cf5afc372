//! The routing mesh: every node answers on every port a service publishes
//! in ingress mode (`-p 5000:80`), whether or not it runs a task of it.
//!
//! Like Docker's ingress sandbox, each node has a network namespace of its
//! own attached to the ingress overlay network at the node's ingress address
//! (given by the managers). shoald listens on the published port on all the
//! node's addresses; for each connection it picks a task of the service with
//! Maglev consistent hashing over the service's available endpoints on the
//! ingress network (from the gossip view, so a dead node's tasks leave the
//! rotation within the detection window), connects to it *from the sandbox*
//! (the socket is made by a thread that lives in that namespace, so the
//! connection crosses the overlay like any task's), and relays bytes both
//! ways. A connection that cannot reach its first pick (a task that just
//! died) tries the next ones.
//!
//! [`pick_order`] and [`Backends`] are pure; the rest moves bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use shoal_gossip::TableView;
use shoal_overlay::lb::flow::{FlowKey, Proto};
use shoal_overlay::lb::maglev::{BackendId, Maglev, TableSize};
use shoal_overlay::lb::proxy::{ProxyHeader, Transport};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::relay::{self, ConnectError, SocketFactory, UdpRoutes};

/// How long a connection to one task may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many tasks a connection tries.
const ATTEMPTS: usize = 3;
/// TCP sockets made ahead in the sandbox: a burst of this many new
/// connections finds its sockets ready.
const SPARE_SOCKETS: usize = 64;

/// One published port: which service and which port in its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The service's id.
    pub service_id: String,
    /// The service's name (for logs).
    pub service_name: String,
    /// The port inside its tasks.
    pub target: u16,
    /// Start each TCP connection with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
}

/// Each service's available tasks on the ingress network and their Maglev
/// table, rebuilt when the set changes.
#[derive(Debug, Default)]
pub struct Backends {
    services: BTreeMap<String, (Vec<Ipv4Addr>, Arc<Maglev>)>,
}

impl Backends {
    /// Follows `view`'s endpoints on the ingress network `network`.
    pub fn update(&mut self, view: &TableView, network: &str) {
        let mut now: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        for r in view.endpoints(network) {
            if !r.disabled && !r.service_id.is_empty() {
                now.entry(r.service_id.clone()).or_default().push(r.ip);
            }
        }
        self.services.retain(|id, _| now.contains_key(id));
        for (id, mut ips) in now {
            ips.sort();
            ips.dedup();
            if self.services.get(&id).is_some_and(|(old, _)| *old == ips) {
                continue;
            }
            let ids: Vec<BackendId> = ips
                .iter()
                .map(|ip| BackendId::from(SocketAddrV4::new(*ip, 0)))
                .collect();
            let table = Arc::new(Maglev::build(&ids, TableSize::DEFAULT));
            self.services.insert(id, (ips, table));
        }
    }

    /// Whether `ip` is an available task of `service`.
    pub fn contains(&self, service: &str, ip: Ipv4Addr) -> bool {
        self.services
            .get(service)
            .is_some_and(|(ips, _)| ips.binary_search(&ip).is_ok())
    }

    /// The tasks to try for a flow, best first (see [`pick_order`]).
    pub fn pick(&self, service: &str, flow: &FlowKey) -> Vec<Ipv4Addr> {
        match self.services.get(service) {
            Some((ips, table)) => pick_order(ips, table, flow.hash()),
            None => Vec::new(),
        }
    }
}

/// The Maglev pick for `hash` first, then the other tasks in a stable
/// order that depends on the hash, so retries spread too.
pub fn pick_order(ips: &[Ipv4Addr], table: &Maglev, hash: u64) -> Vec<Ipv4Addr> {
    let Some(first) = table.lookup(hash).map(|b| *b.addr().ip()) else {
        return Vec::new();
    };
    let mut rest: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| *ip != first).collect();
    if !rest.is_empty() {
        let k = (hash % rest.len() as u64) as usize;
        rest.rotate_left(k);
    }
    let mut out = vec![first];
    out.extend(rest);
    out
}

/// What the listeners share.
struct Shared {
    routes: RwLock<BTreeMap<(Proto, u16), Route>>,
    backends: RwLock<Backends>,
    factory: SocketFactory,
}

/// A node's ingress sandbox and its listeners.
pub struct Ingress {
    /// Keeps the sandbox's namespace alive.
    _netns: OwnedFd,
    netns_path: PathBuf,
    /// Its address on the ingress network.
    pub ip: Ipv4Addr,
    /// The ingress network's id.
    pub network: String,
    shared: Arc<Shared>,
    listeners: Mutex<BTreeMap<(Proto, u16), JoinHandle<()>>>,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        for (_, l) in std::mem::take(&mut *self.listeners.lock().expect("listeners lock")) {
            l.abort();
        }
    }
}

impl Ingress {
    /// Makes the sandbox (a new network namespace) for address `ip` on the
    /// ingress network `network`; the caller attaches its interface.
    pub fn new(network: String, ip: Ipv4Addr) -> Result<Ingress, String> {
        let netns = shoal_sys::sandbox::new_netns()
            .map_err(|e| format!("cannot make the ingress sandbox: {e}"))?;
        let netns_path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            netns.as_raw_fd()
        ));
        let factory = SocketFactory::start(&netns_path, "ingress-sockets", SPARE_SOCKETS)?;
        Ok(Ingress {
            _netns: netns,
            netns_path,
            ip,
            network,
            shared: Arc::new(Shared {
                routes: RwLock::new(BTreeMap::new()),
                backends: RwLock::new(Backends::default()),
                factory,
            }),
            listeners: Mutex::new(BTreeMap::new()),
        })
    }

    /// The sandbox's namespace, for the data plane's interface.
    pub fn netns(&self) -> &std::path::Path {
        &self.netns_path
    }

    /// Follows the gossip view: each service's tasks on the ingress network.
    pub fn set_view(&self, view: &TableView) {
        self.shared
            .backends
            .write()
            .expect("backends lock")
            .update(view, &self.network);
    }

    /// Listens on exactly the published ports of `routes` (TCP and UDP, on
    /// all the node's addresses). Must run inside the tokio runtime.
    pub fn set_routes(&self, routes: BTreeMap<(Proto, u16), Route>) -> Result<(), String> {
        let mut listeners = self.listeners.lock().expect("listeners lock");
        listeners.retain(|key, task| {
            let keep = routes.contains_key(key);
            if !keep {
                task.abort();
                tracing::info!(port = key.1, "routing mesh: port no longer published");
            }
            keep
        });
        let mut errors = Vec::new();
        for (&(proto, port), route) in &routes {
            if listeners.contains_key(&(proto, port)) {
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let shared = self.shared.clone();
            let task = match proto {
                Proto::Tcp => relay::listen_tcp(addr, "routing mesh", move |c, p| {
                    forward(c, p, port, shared.clone())
                }),
                Proto::Udp => relay::listen_udp(addr, Arc::new(IngressUdp { port, shared })),
            };
            match task {
                Ok(task) => {
                    tracing::info!(port, ?proto, service = %route.service_name, target = route.target, "routing mesh: listening");
                    listeners.insert((proto, port), task);
                }
                Err(e) => errors.push(format!("cannot listen on {proto:?} port {port}: {e}")),
            }
        }
        *self.shared.routes.write().expect("routes lock") = routes;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

async fn forward(mut client: TcpStream, peer: SocketAddr, port: u16, shared: Arc<Shared>) {
    let Some(route) = shared.route(Proto::Tcp, port) else {
        return;
    };
    let src = v4(peer);
    let flow = FlowKey {
        proto: Proto::Tcp,
        src,
        dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port),
    };
    let order = shared
        .backends
        .read()
        .expect("backends lock")
        .pick(&route.service_id, &flow);
    // What the task gets before the relay starts: the PROXY header if the
    // port asks for one, and whatever the client has sent already.
    let mut opening = Vec::new();
    if route.proxy_protocol {
        // The address the client reached: this node's, on the published port.
        let dst = client.local_addr().map(v4).unwrap_or(flow.dst);
        opening = ProxyHeader::v4(Transport::Stream, src, dst).to_vec();
    }
    opening.extend(relay::early_bytes(&client));
    for ip in order.into_iter().take(ATTEMPTS) {
        let to = SocketAddr::from((ip, route.target));
        match relay::connect(&shared.factory, to, CONNECT_TIMEOUT, &opening).await {
            Ok(mut task) => {
                relay::pipe(&mut client, &mut task).await;
                return;
            }
            Err(ConnectError::Socket(e)) => {
                tracing::warn!(error = %e, "routing mesh: cannot make a socket in the sandbox");
                return;
            }
            Err(ConnectError::Refused(e)) => {
                tracing::debug!(%to, error = %e, "routing mesh: task refused, trying the next")
            }
            Err(ConnectError::Timeout) => {
                tracing::debug!(%to, "routing mesh: task did not answer, trying the next")
            }
        }
    }
    tracing::debug!(port, service = %route.service_name, "routing mesh: no task to take the connection");
}

impl Shared {
    fn route(&self, proto: Proto, port: u16) -> Option<Route> {
        self.routes
            .read()
            .expect("routes lock")
            .get(&(proto, port))
            .cloned()
    }
}

/// An IPv4 socket address (IPv4-mapped IPv6 ones unmapped).
fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(
            a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            a.port(),
        ),
    }
}

/// A published UDP port's sessions: each client (address and port) gets
/// one task, picked like a TCP connection, and keeps it while the task is
/// in the rotation.
struct IngressUdp {
    port: u16,
    shared: Arc<Shared>,
}

impl UdpRoutes for IngressUdp {
    fn pick(&self, client: SocketAddr) -> Option<SocketAddr> {
        let route = self.shared.route(Proto::Udp, self.port)?;
        let flow = FlowKey {
            proto: Proto::Udp,
            src: v4(client),
            dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.port),
        };
        let ip = *self
            .shared
            .backends
            .read()
            .expect("backends lock")
            .pick(&route.service_id, &flow)
            .first()?;
        Some(SocketAddr::from((ip, route.target)))
    }

    fn keeps(&self, to: SocketAddr) -> bool {
        let (Some(route), IpAddr::V4(ip)) = (self.shared.route(Proto::Udp, self.port), to.ip())
        else {
            return false;
        };
        self.shared
            .backends
            .read()
            .expect("backends lock")
            .contains(&route.service_id, ip)
    }

    fn factory(&self) -> &SocketFactory {
        &self.shared.factory
    }

    fn what(&self) -> &'static str {
        "routing mesh"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_gossip::EndpointRecord;

    fn record(task: &str, service: &str, ip: [u8; 4], disabled: bool) -> EndpointRecord {
        let ip = Ipv4Addr::from(ip);
        EndpointRecord {
            task_id: task.into(),
            task_name: format!("{service}.1.{task}"),
            service_name: service.into(),
            service_id: service.into(),
            vip: None,
            ip,
            mac: [
                2,
                0x42,
                ip.octets()[0],
                ip.octets()[1],
                ip.octets()[2],
                ip.octets()[3],
            ],
            node_id: "n".into(),
            node_addr: "10.99.0.11".parse().unwrap(),
            ports: vec![],
            aliases: vec![],
            dnsrr: false,
            disabled,
        }
    }

    fn flow(port: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Tcp,
            src: SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 200), port),
            dst: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5000),
        }
    }

    #[test]
    fn connections_spread_over_the_available_tasks_and_retry_the_others() {
        let view = TableView {
            version: 1,
            networks: [(
                "ingress".to_string(),
                vec![
                    record("a", "web", [10, 0, 0, 3], false),
                    record("b", "web", [10, 0, 0, 4], false),
                    record("c", "web", [10, 0, 0, 5], true),
                    record("sbox", "", [10, 0, 0, 9], false),
                    record("d", "db", [10, 0, 0, 6], false),
                ],
            )]
            .into(),
        };
        let mut b = Backends::default();
        b.update(&view, "ingress");
        let mut firsts = BTreeMap::new();
        for p in 40000..40400 {
            let order = b.pick("web", &flow(p));
            // Both live tasks, never the disabled one or another service's.
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)]
            );
            // The same flow always starts at the same task.
            assert_eq!(order, b.pick("web", &flow(p)));
            *firsts.entry(order[0]).or_insert(0) += 1;
        }
        assert!(firsts.values().all(|n| *n > 120), "{firsts:?}");
        assert!(b.pick("nope", &flow(1)).is_empty());
        // A task that leaves the view leaves the rotation.
        let mut fewer = view.clone();
        fewer.networks.get_mut("ingress").unwrap().remove(0);
        b.update(&fewer, "ingress");
        assert_eq!(b.pick("web", &flow(1)), [Ipv4Addr::new(10, 0, 0, 4)]);
    }
}
