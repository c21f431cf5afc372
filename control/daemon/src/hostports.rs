//! Host-mode published ports (`--publish published=P,target=T,mode=host`):
//! a node that runs a task of the service answers on port P, and a
//! connection there goes to *that* task, no routing mesh and no balancing
//! across nodes. Nodes without a task do not listen on P.
//!
//! Docker does this with a DNAT rule to the container's address. Shoal
//! keeps its userspace path: shoald listens on `0.0.0.0:P` (TCP or UDP, as
//! the port says) in the node's namespace while the task is attached, and
//! relays each connection or UDP flow from inside the task's own namespace
//! (a [`SocketFactory`] thread entered it) to the task's first address on
//! its first network, or to 127.0.0.1 for a task on no network, port T. A
//! port already taken on the node (another service's, the routing mesh's
//! or a program's) fails the attach, naming the port and the task, so the
//! task fails and the orchestrator replaces it, like Docker's "host-mode
//! port already in use".
//!
//! [`plan`] is pure; [`HostPorts`] binds and relays (with [`crate::relay`],
//! the routing mesh's code).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_manager::dispatch::AssignedTask;
use shoal_manager::state::service::{Protocol, PublishMode};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::relay::{self, ConnectError, SocketFactory, UdpRoutes};

/// How long the task may take to accept a relayed connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP sockets made ahead in a task's namespace (a task's host port takes
/// fewer connections than the mesh, and each spare holds a descriptor).
const SPARE_SOCKETS: usize = 8;

/// One host-mode port of a task: where shoald listens and where it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port on the node (all its addresses).
    pub published: u16,
    /// Where the task answers, as seen from inside its namespace.
    pub to: SocketAddr,
}

/// The host-mode ports `task` needs, each relayed to its target port on the
/// task's first address (a server bound to its `eth0` address only would
/// not answer on loopback), or on 127.0.0.1 when it has no network. An
/// error names a host-mode port without a published port (the managers
/// refuse those; a node does not pick one).
pub fn plan(task: &AssignedTask) -> Result<Vec<HostPort>, String> {
    let ip = task.networks.first().map_or(Ipv4Addr::LOCALHOST, |n| n.ip);
    task.ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host)
        .map(|p| {
            let published = p.published.ok_or_else(|| {
                format!(
                    "task {}: host-mode port {}/{} has no published port",
                    task.name, p.target, p.protocol
                )
            })?;
            Ok(HostPort {
                protocol: p.protocol,
                published,
                to: SocketAddr::from((ip, p.target)),
            })
        })
        .collect()
}

/// Whether `task` publishes host-mode ports.
pub fn wants_host_ports(task: &AssignedTask) -> bool {
    task.ports.iter().any(|p| p.mode == PublishMode::Host)
}

/// Logs that a container task's host-mode ports are not published: its
/// namespace is Docker's and only exists once Docker has started it.
/// A container task's host-mode ports are opened once Docker has made its
/// namespace (the network plugin's DNS set-up does it); one on no shoal
/// network never comes through the plugin, so it runs without them.
pub fn warn_container(task: &AssignedTask) {
    if wants_host_ports(task) && task.networks.is_empty() {
        tracing::warn!(
            task = %task.name,
            "host-mode ports of an --image task on no network are not published: the task runs without them"
        );
    }
}

/// A task's listeners; dropping it closes them.
struct TaskPorts {
    listeners: Vec<JoinHandle<()>>,
}

impl Drop for TaskPorts {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

/// The host-mode listeners of the node's attached tasks.
#[derive(Default)]
pub struct HostPorts {
    tasks: Mutex<BTreeMap<String, TaskPorts>>,
}

impl HostPorts {
    /// Listens on `task`'s host-mode ports and relays them into its
    /// namespace `netns`; all or none, once per task (a task attached
    /// again keeps its listeners). Must run inside the tokio runtime.
    pub fn open(&self, task: &AssignedTask, netns: &Path) -> Result<(), String> {
        let ports = plan(task)?;
        let open = self
            .tasks
            .lock()
            .expect("host ports lock")
            .contains_key(&task.id);
        if ports.is_empty() || open {
            return Ok(());
        }
        let factory = Arc::new(SocketFactory::start(
            netns,
            "hostport-sockets",
            SPARE_SOCKETS,
        )?);
        let mut made = TaskPorts {
            listeners: Vec::new(),
        };
        for p in ports {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, p.published));
            let factory = factory.clone();
            let listener = match p.protocol {
                Protocol::Tcp => relay::listen_tcp(addr, "host port", move |c, _| {
                    forward(c, p.to, factory.clone())
                }),
                Protocol::Udp => relay::listen_udp(addr, Arc::new(TaskUdp { to: p.to, factory })),
            };
            match listener {
                Ok(l) => made.listeners.push(l),
                // `made` closes the ports opened so far.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(format!(
                        "host-mode port {}/{} already in use on this node (task {})",
                        p.published, p.protocol, task.name
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "cannot listen on host-mode port {}/{} for task {}: {e}",
                        p.published, p.protocol, task.name
                    ));
                }
            }
            tracing::info!(task = %task.name, port = p.published, protocol = %p.protocol, to = %p.to, "host port: listening");
        }
        self.tasks
            .lock()
            .expect("host ports lock")
            .insert(task.id.clone(), made);
        Ok(())
    }

    /// Closes the listeners of task `id`, if it has any.
    pub fn close(&self, id: &str) {
        let gone = self.tasks.lock().expect("host ports lock").remove(id);
        if gone.is_some() {
            tracing::info!(task = id, "host port: closed");
        }
    }
}

/// Relays one connection to the task.
async fn forward(mut client: TcpStream, to: SocketAddr, factory: Arc<SocketFactory>) {
    let opening = relay::early_bytes(&client);
    match relay::connect(&factory, to, CONNECT_TIMEOUT, &opening).await {
        Ok(mut task) => {
            drop(factory);
            relay::pipe(&mut client, &mut task).await;
        }
        Err(ConnectError::Socket(e)) => {
            tracing::warn!(error = %e, "host port: cannot make a socket in the task's namespace")
        }
        Err(ConnectError::Refused(e)) => {
            tracing::debug!(%to, error = %e, "host port: the task refused the connection")
        }
        Err(ConnectError::Timeout) => tracing::debug!(%to, "host port: the task did not answer"),
    }
}

/// A host-mode UDP port: every client's session goes to the one task.
struct TaskUdp {
    to: SocketAddr,
    factory: Arc<SocketFactory>,
}

impl UdpRoutes for TaskUdp {
    fn pick(&self, _client: SocketAddr) -> Option<SocketAddr> {
        Some(self.to)
    }

    fn keeps(&self, _to: SocketAddr) -> bool {
        true
    }

    fn factory(&self) -> &SocketFactory {
        &self.factory
    }

    fn what(&self) -> &'static str {
        "host port"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_manager::state::service::PortConfig;
    use shoal_manager::state::service::TaskState;
    use shoal_manager::state::task::TaskNetwork;

    fn task(networks: &[[u8; 4]], ports: &[&str]) -> AssignedTask {
        let mut t: AssignedTask = serde_json::from_value(serde_json::json!({
            "id": "t1",
            "name": "web.1.t1",
            "service_id": "s1",
            "service_name": "web",
            "slot": 1,
            "desired_state": TaskState::Running,
            "state": TaskState::Running,
            "command": ["true"],
            "env": [],
            "networks": [],
        }))
        .unwrap();
        t.networks = networks
            .iter()
            .enumerate()
            .map(|(i, ip)| TaskNetwork {
                network_id: format!("net{i}"),
                ip: Ipv4Addr::from(*ip),
            })
            .collect();
        t.ports = ports
            .iter()
            .map(|p| p.parse::<PortConfig>().unwrap())
            .collect();
        t
    }

    #[test]
    fn host_ports_go_to_the_first_address_of_the_task() {
        let t = task(
            &[[10, 0, 1, 5], [10, 0, 2, 7]],
            &[
                "published=6000,target=80,mode=host",
                "published=6053,target=53,protocol=udp,mode=host",
                // Ingress ports are the routing mesh's.
                "5000:80",
            ],
        );
        assert_eq!(
            plan(&t).unwrap(),
            [
                HostPort {
                    protocol: Protocol::Tcp,
                    published: 6000,
                    to: "10.0.1.5:80".parse().unwrap(),
                },
                HostPort {
                    protocol: Protocol::Udp,
                    published: 6053,
                    to: "10.0.1.5:53".parse().unwrap(),
                },
            ]
        );
        assert!(wants_host_ports(&t));
    }

    #[test]
    fn a_task_on_no_network_is_reached_on_loopback() {
        let t = task(&[], &["published=6000,target=8080,mode=host"]);
        assert_eq!(plan(&t).unwrap()[0].to, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn no_host_ports_no_listeners_and_a_missing_published_port_is_named() {
        let t = task(&[[10, 0, 1, 5]], &["5000:80"]);
        assert!(plan(&t).unwrap().is_empty());
        assert!(!wants_host_ports(&t));
        let t = task(&[], &["target=80,mode=host"]);
        assert_eq!(
            plan(&t).unwrap_err(),
            "task web.1.t1: host-mode port 80/tcp has no published port"
        );
    }

    /// The driver for real, with a namespace of its own standing in for
    /// the task's: its servers listen on its loopback only, so an answer
    /// proves the relay went through that namespace (needs root).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ports_relay_into_the_task_namespace_and_close_with_the_task() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        use tokio::io::AsyncReadExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
            eprintln!("SKIPPED: needs root to make a network namespace");
            return;
        }
        let ns = shoal_sys::sandbox::new_netns().unwrap();
        let path = std::path::PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        ));
        let inside = path.clone();
        let (tcp, udp) = std::thread::spawn(move || {
            shoal_sys::netns::NetNs::open(&inside)
                .unwrap()
                .enter_current_thread()
                .unwrap();
            (
                std::net::TcpListener::bind("127.0.0.1:8080").unwrap(),
                std::net::UdpSocket::bind("127.0.0.1:8080").unwrap(),
            )
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            for c in tcp.incoming() {
                let _ = std::io::Write::write_all(&mut c.unwrap(), b"the task");
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        let published = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = task(
            &[],
            &[
                &format!("published={published},target=8080,mode=host"),
                &format!("published={published},target=8080,protocol=udp,mode=host"),
            ],
        );
        let ports = HostPorts::default();
        ports.open(&t, &path).unwrap();
        let node = SocketAddr::from((Ipv4Addr::LOCALHOST, published));

        let mut answer = Vec::new();
        let mut c = TcpStream::connect(node).await.unwrap();
        c.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"the task");
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", node).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], node));

        // Another task wanting the port fails, naming port and task.
        let mut other = t.clone();
        other.id = "t2".into();
        other.name = "web.2.t2".into();
        assert_eq!(
            ports.open(&other, &path).unwrap_err(),
            format!("host-mode port {published}/tcp already in use on this node (task web.2.t2)")
        );
        // Its failure closed nothing of the first task's, nor does
        // opening the first task's again.
        ports.open(&t, &path).unwrap();
        assert!(TcpStream::connect(node).await.is_ok());

        ports.close(&t.id);
        let closed = async {
            while TcpStream::connect(node).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .expect("the port closes with its task");
        // Both ports are free again, UDP included (no UDP session keeps
        // the published socket: it would for 30 s).
        std::net::TcpListener::bind(("0.0.0.0", published)).unwrap();
        let freed = async {
            while std::net::UdpSocket::bind(("0.0.0.0", published)).is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), freed)
            .await
            .expect("the UDP port is free once closed");
    }
}
