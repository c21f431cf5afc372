//! Shoal networks for Docker containers: the libnetwork remote network and
//! IPAM driver behind [`shoal_docker::plugin::PluginServer`].
//!
//! Two kinds of containers come through it:
//! - **tasks of `--image` services**, which the Docker runtime creates on
//!   the Docker networks named like their shoal networks, each with the
//!   task's address. [`DataPlaneAttacher::attach`] only announces them
//!   ([`NodeNet::expect_docker_task`]); their interfaces are made when
//!   Docker starts the container and asks the plugin;
//! - **plain containers** (`docker run --network NET`) on an attachable
//!   network: the managers give each an address (a network attachment,
//!   [`Swarm::attach_container`]) when Docker asks the IPAM driver.
//!
//! What Docker does, and when (recorded against Docker 20.10, see the
//! `plugin` module of `shoal-docker`): addresses are asked for before the
//! endpoint is created; at `Join` the container's namespace does not exist
//! yet, so the interface is a TAP made in Docker's own namespace, left down
//! and unaddressed ([`LocalEndpointConfig::handover`]), that Docker moves
//! into the container, renames `ethN` and addresses. When the container
//! stops, Docker moves it back and deletes the endpoint, and the TAP goes.
//!
//! DNS: Docker gives every container on a user-defined network its own
//! resolver at 127.0.0.11, reached through a DNAT rule in the container's
//! namespace. That resolver knows nothing of the swarm, so once the
//! namespace appears (a bounded wait, on a thread of its own) shoal's
//! server for that container binds 127.0.0.11:53 in it and an `iptables`
//! rule ahead of Docker's lets queries reach it. A query the container
//! makes before that (a few milliseconds after its namespace appears)
//! still goes to Docker's resolver.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_docker::plugin::protocol::{
    CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInterface,
    InterfaceName, JoinRequest, JoinResponse, Options, RequestAddressRequest,
    RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
};
use shoal_docker::plugin::{Backend, ADDRESS_SPACE};
use shoal_manager::dispatch::{AssignedTask, NetworkAssignment};
use shoal_manager::swarm::Swarm;
use shoal_node::config::LocalEndpointConfig;
use shoal_overlay::mac::MacAddr;

use super::{NodeNet, EMBEDDED_DNS};
use crate::discovery;

/// How long the DNS set-up waits for a container's namespace to appear
/// after `Join` (Docker makes it when the container starts).
const SANDBOX_WAIT: Duration = Duration::from_secs(30);

/// How long the DNS set-up waits for Docker's own resolver rules in a new
/// container's namespace.
const DOCKER_RULES_WAIT: Duration = Duration::from_secs(10);

/// The IPAM option naming the shoal network (id or name) of a Docker network.
pub const NETWORK_OPTION: &str = "network";

/// What the node knows about Docker's containers on shoal networks.
#[derive(Default)]
pub(super) struct DockerState {
    /// The networks of the node's assignments, by id.
    pub(super) networks: BTreeMap<String, NetworkAssignment>,
    /// The attachable networks, by id.
    pub(super) attachable: BTreeMap<String, NetworkAssignment>,
    /// Docker tasks attached but not started, by (network id, address).
    pending: BTreeMap<(String, Ipv4Addr), AssignedTask>,
    /// Addresses given to plain containers: (network id, address) to the
    /// attachment's id.
    attachments: BTreeMap<(String, Ipv4Addr), String>,
    /// Docker network id to shoal network id.
    docker_networks: BTreeMap<String, String>,
    /// Docker endpoint id to what it is.
    endpoints: BTreeMap<String, Endpoint>,
}

#[derive(Clone)]
struct Endpoint {
    network: String,
    ip: Ipv4Addr,
    mac: MacAddr,
    ifname: String,
    owner: Owner,
    sandbox: Option<PathBuf>,
}

#[derive(Clone)]
enum Owner {
    Task(Box<AssignedTask>),
    Container,
}

impl Endpoint {
    /// The key of its records and DNS server: the task, or the endpoint.
    fn key(&self, endpoint_id: &str) -> String {
        match &self.owner {
            Owner::Task(t) => t.id.clone(),
            Owner::Container => format!("ctr-{}", short(endpoint_id)),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The TAP's name in Docker's namespace before Docker renames it.
fn tap_name(endpoint_id: &str) -> String {
    format!("shl{}", &endpoint_id[..endpoint_id.len().min(11)])
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    let bare = s.split('/').next().unwrap_or_default();
    bare.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn first_host(a: &NetworkAssignment) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(a.subnet.network()) + 1)
}

impl NodeNet {
    /// A Docker task is about to start: its addresses are expected from
    /// Docker through the plugin.
    pub(super) fn expect_docker_task(&self, task: &AssignedTask) {
        let mut d = self.docker.lock().expect("docker lock");
        for n in &task.networks {
            d.pending.insert((n.network_id.clone(), n.ip), task.clone());
        }
    }

    /// Forgets a Docker task: nothing more is expected, and any interface
    /// Docker did not give back is removed.
    pub(super) fn forget_docker_task(&self, task: &AssignedTask) {
        let leftovers: Vec<Endpoint> = {
            let mut d = self.docker.lock().expect("docker lock");
            d.pending.retain(|_, t| t.id != task.id);
            let ids: Vec<String> = d
                .endpoints
                .iter()
                .filter(|(_, e)| matches!(&e.owner, Owner::Task(t) if t.id == task.id))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| d.endpoints.remove(id)).collect()
        };
        if let Some(dp) = self.current() {
            for e in leftovers {
                let _ = dp.remove_endpoint(&e.network, e.ip);
            }
        }
    }

    fn docker_network(&self, key: &str) -> Result<NetworkAssignment, String> {
        let d = self.docker.lock().expect("docker lock");
        let all = || d.networks.values().chain(d.attachable.values());
        d.networks
            .get(key)
            .or_else(|| d.attachable.get(key))
            .or_else(|| all().find(|n| n.name == key))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "shoal network {key:?} is not known on this node: create it with \
                     `shoal network create --attachable {key}` (or attach a service to it)"
                )
            })
    }
}

/// The plugin's decisions, on the node's networking.
pub struct DockerBackend {
    node: Arc<NodeNet>,
    swarm: Arc<Swarm>,
    rt: tokio::runtime::Handle,
    /// Docker's network namespace, where interfaces are made for it to move.
    docker_netns: PathBuf,
    /// Docker's root directory as seen from here (`/proc/<dockerd>/root`):
    /// its sandbox keys are bind mounts made in its mount namespace, which
    /// a daemon started in another one (`ip netns exec`) sees only there.
    engine_root: PathBuf,
}

impl DockerBackend {
    /// A backend for `attacher`'s node; managers are asked through `swarm`
    /// on `rt`; interfaces are made in `docker_netns` (dockerd's namespace)
    /// and sandbox keys are read under `engine_root` (dockerd's root).
    pub fn new(
        attacher: &super::DataPlaneAttacher,
        swarm: Arc<Swarm>,
        rt: tokio::runtime::Handle,
        docker_netns: PathBuf,
        engine_root: PathBuf,
    ) -> Self {
        DockerBackend {
            node: attacher.node.clone(),
            swarm,
            rt,
            docker_netns,
            engine_root,
        }
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, String> {
        self.node
            .docker
            .lock()
            .expect("docker lock")
            .endpoints
            .get(id)
            .cloned()
            .ok_or_else(|| format!("endpoint {} is not shoal's", short(id)))
    }

    /// Publishes what is attached of `key` (a task or a container) to gossip.
    fn publish(&self, key: &str) -> Result<(), String> {
        let (node_id, node_addr) = self.node.swarm_identity()?;
        let records: Vec<(String, shoal_gossip::EndpointRecord)> = {
            let d = self.node.docker.lock().expect("docker lock");
            d.endpoints
                .iter()
                .filter(|(id, e)| e.key(id) == key && e.sandbox.is_some())
                .map(|(id, e)| {
                    let mut r = match &e.owner {
                        Owner::Task(t) => {
                            discovery::task_record(t, &e.network, e.ip, &node_id, node_addr)
                        }
                        Owner::Container => {
                            discovery::container_record(&e.key(id), e.ip, &node_id, node_addr)
                        }
                    };
                    r.mac = e.mac.0;
                    (e.network.clone(), r)
                })
                .collect()
        };
        if records.is_empty() {
            self.node.withdraw(key);
            Ok(())
        } else {
            self.node.publish(key, records)
        }
    }

    /// Waits on a thread of its own for `sandbox` to become a network
    /// namespace, then serves DNS for `key` in it and opens `task`'s
    /// host-mode ports into it.
    fn serve_dns_when_up(
        &self,
        key: String,
        sandbox: PathBuf,
        networks: Vec<String>,
        task: Option<AssignedTask>,
    ) {
        let node = self.node.clone();
        let rt = self.rt.clone();
        let spawned = std::thread::Builder::new()
            .name("shoal-docker-dns".into())
            .spawn(move || {
                let _guard = rt.enter();
                if let Err(e) = wait_for_netns(&sandbox, SANDBOX_WAIT) {
                    tracing::warn!(container = %key, error = %e, "no DNS for the container");
                    return;
                }
                let started = Instant::now();
                if let Some(task) = &task {
                    // The task already runs: a port that cannot open is
                    // logged, not a failed start.
                    if let Err(e) = node.host_ports.open(task, &sandbox) {
                        tracing::warn!(task = %task.name, error = %e, "host-mode ports not published");
                    }
                }
                if let Err(e) = node.start_dns_for(&key, networks, &sandbox) {
                    tracing::warn!(container = %key, error = %e, "no DNS for the container");
                    return;
                }
                match take_over_embedded_dns(&sandbox) {
                    Ok(()) => tracing::info!(
                        container = %key,
                        ms = started.elapsed().as_millis() as u64,
                        "the container's 127.0.0.11 is shoal's DNS"
                    ),
                    Err(e) => {
                        tracing::warn!(container = %key, error = %e, "DNS stays Docker's")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the container's DNS set-up");
        }
    }
}

/// `path` as the process whose root is `root` (`/proc/<pid>/root`) sees it:
/// symbolic links are followed by hand, because an absolute one (Docker's
/// `/var/run` -> `/run`) would otherwise restart at our own root.
fn resolve_under(root: &Path, path: &Path) -> Result<PathBuf, String> {
    use std::path::Component;
    let bad = || {
        format!(
            "sandbox key {} is not a plain absolute path",
            path.display()
        )
    };
    if !path.is_absolute() {
        return Err(bad());
    }
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n.to_os_string())),
            Component::RootDir | Component::CurDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(next) = todo.pop() {
        let candidate = done.join(&next);
        let seen = root.join(&candidate);
        match std::fs::symlink_metadata(&seen) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(format!("too many symbolic links in {}", path.display()));
                }
                let target = std::fs::read_link(&seen).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    done = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ if next == ".." => {
                done.pop();
            }
            _ => done = candidate,
        }
    }
    Ok(root.join(done))
}

/// Waits (bounded) until `path` is a network namespace: a file on nsfs,
/// like our own `/proc/self/ns/net`, rather than the empty file Docker
/// makes first.
fn wait_for_netns(path: &Path, limit: Duration) -> Result<(), String> {
    let nsfs = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("cannot read /proc/self/ns/net: {e}"))?
        .dev();
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.dev() == nsfs) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not become a network namespace within {limit:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lets queries to 127.0.0.11:53 inside the namespace at `sandbox` reach
/// the socket bound there (shoal's) instead of Docker's DNAT to its own
/// resolver: an ACCEPT at the head of the nat table's OUTPUT chain. Docker
/// inserts its own jump at the head when it starts its resolver, so this
/// waits (bounded) for that jump first.
fn take_over_embedded_dns(sandbox: &Path) -> Result<(), String> {
    let dns = format!("{}/32", EMBEDDED_DNS.ip());
    let iptables = |args: &[&str]| {
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", sandbox.display()))
            .args(["iptables", "-w", "5", "-t", "nat"])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run nsenter/iptables: {e}"))
    };
    let deadline = Instant::now() + DOCKER_RULES_WAIT;
    loop {
        let docker_jump = iptables(&["-C", "OUTPUT", "-d", &dns, "-j", "DOCKER_OUTPUT"])?;
        if docker_jump.status.success() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Docker's resolver rules did not appear in {} within {DOCKER_RULES_WAIT:?}",
                sandbox.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for proto in ["udp", "tcp"] {
        let out = iptables(&[
            "-I", "OUTPUT", "1", "-d", &dns, "-p", proto, "--dport", "53", "-j", "ACCEPT",
        ])?;
        if !out.status.success() {
            return Err(format!(
                "iptables in {}: {}",
                sandbox.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

impl Backend for DockerBackend {
    fn create_network(&self, request: &CreateNetworkRequest) -> Result<(), String> {
        let data = request
            .ipv4_data
            .first()
            .ok_or("shoal networks need an IPv4 pool")?;
        if data.address_space != ADDRESS_SPACE {
            return Err(format!(
                "shoal networks take their addresses from shoal: create them with \
                 --ipam-driver set to this plugin and --ipam-opt {NETWORK_OPTION}=<shoal network> \
                 (shoald makes the Docker networks of attachable shoal networks by itself)"
            ));
        }
        let subnet: ipnet::Ipv4Net = data
            .pool
            .parse()
            .map_err(|_| format!("pool {:?} is not an IPv4 subnet", data.pool))?;
        let mut d = self.node.docker.lock().expect("docker lock");
        let id = d
            .networks
            .values()
            .chain(d.attachable.values())
            .find(|n| n.subnet == subnet)
            .map(|n| n.id.clone())
            .ok_or_else(|| format!("no shoal network on this node has the pool {subnet}"))?;
        d.docker_networks.insert(request.network_id.clone(), id);
        Ok(())
    }

    fn delete_network(&self, network_id: &str) -> Result<(), String> {
        let mut d = self.node.docker.lock().expect("docker lock");
        d.docker_networks.remove(network_id);
        Ok(())
    }

    fn create_endpoint(
        &self,
        request: &CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, String> {
        let ip = parse_ip(&request.interface.address)
            .map_err(|e| format!("endpoint address: {e} (use this plugin's IPAM driver)"))?;
        let (network, owner) = {
            let d = self.node.docker.lock().expect("docker lock");
            let network = d
                .docker_networks
                .get(&request.network_id)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "Docker network {} is not shoal's",
                        short(&request.network_id)
                    )
                })?;
            let owner = match d.pending.get(&(network.clone(), ip)) {
                Some(task) => Owner::Task(Box::new(task.clone())),
                None if d.attachments.contains_key(&(network.clone(), ip)) => Owner::Container,
                None => {
                    return Err(format!(
                        "address {ip} was not given by shoal on this node (use this plugin's IPAM driver)"
                    ))
                }
            };
            (network, owner)
        };
        let assignment = self.node.docker_network(&network)?;
        let given_mac = request.interface.mac_address.trim();
        let mac = if given_mac.is_empty() {
            MacAddr(shoal_manager::state::task::task_mac(ip))
        } else {
            given_mac
                .parse()
                .map_err(|_| format!("MAC address {given_mac:?} is not valid"))?
        };
        let dp = self.node.ensure_network(&assignment)?;
        let ifname = tap_name(&request.endpoint_id);
        dp.add_endpoint(LocalEndpointConfig {
            network: network.clone(),
            netns: self.docker_netns.clone(),
            ifname: ifname.clone(),
            ip,
            mac,
            handover: true,
        })
        .map_err(|e| {
            format!(
                "cannot make the interface on network {}: {e}",
                assignment.name
            )
        })?;
        self.node
            .docker
            .lock()
            .expect("docker lock")
            .endpoints
            .insert(
                request.endpoint_id.clone(),
                Endpoint {
                    network,
                    ip,
                    mac,
                    ifname,
                    owner,
                    sandbox: None,
                },
            );
        Ok(CreateEndpointResponse {
            interface: given_mac.is_empty().then(|| EndpointInterface {
                mac_address: mac.to_string(),
                ..Default::default()
            }),
        })
    }

    fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<(), String> {
        let _ = network_id;
        let gone = self
            .node
            .docker
            .lock()
            .expect("docker lock")
            .endpoints
            .remove(endpoint_id);
        if let (Some(e), Some(dp)) = (gone, self.node.current()) {
            dp.remove_endpoint(&e.network, e.ip)
                .map_err(|e| format!("cannot remove the interface: {e}"))?;
        }
        Ok(())
    }

    fn endpoint_info(&self, network_id: &str, endpoint_id: &str) -> Result<Options, String> {
        let _ = network_id;
        let e = self.endpoint(endpoint_id)?;
        let mut info = Options::new();
        info.insert("shoal.network".into(), e.network.into());
        info.insert("shoal.address".into(), e.ip.to_string().into());
        info.insert("shoal.mac".into(), e.mac.to_string().into());
        Ok(info)
    }

    fn join(&self, request: &JoinRequest) -> Result<JoinResponse, String> {
        let sandbox = resolve_under(&self.engine_root, Path::new(&request.sandbox_key))?;
        let (key, ifname, networks, first_of_sandbox, task) = {
            let mut d = self.node.docker.lock().expect("docker lock");
            let first = !d
                .endpoints
                .values()
                .any(|e| e.sandbox.as_deref() == Some(sandbox.as_path()));
            let e = d.endpoints.get_mut(&request.endpoint_id).ok_or_else(|| {
                format!("endpoint {} is not shoal's", short(&request.endpoint_id))
            })?;
            e.sandbox = Some(sandbox.clone());
            let key = e.key(&request.endpoint_id);
            let ifname = e.ifname.clone();
            let task = match &e.owner {
                Owner::Task(t) => Some((**t).clone()),
                Owner::Container => None,
            };
            let networks: Vec<String> = match &e.owner {
                Owner::Task(t) => t.networks.iter().map(|n| n.network_id.clone()).collect(),
                Owner::Container => vec![e.network.clone()],
            };
            let networks = networks
                .into_iter()
                .filter(|n| {
                    let a = d.networks.get(n).or_else(|| d.attachable.get(n));
                    a.is_some_and(|a| !a.ingress)
                })
                .collect();
            (key, ifname, networks, first, task)
        };
        self.publish(&key)?;
        if first_of_sandbox {
            self.serve_dns_when_up(key, sandbox, networks, task);
        }
        Ok(JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: ifname,
                dst_prefix: "eth".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), String> {
        let _ = network_id;
        let (key, sandbox) = {
            let mut d = self.node.docker.lock().expect("docker lock");
            let Some(e) = d.endpoints.get_mut(endpoint_id) else {
                return Ok(());
            };
            let key = e.key(endpoint_id);
            (key, e.sandbox.take())
        };
        self.publish(&key)?;
        let still_used = {
            let d = self.node.docker.lock().expect("docker lock");
            d.endpoints.values().any(|e| e.sandbox == sandbox)
        };
        if !still_used {
            self.node.dns.lock().expect("dns lock").remove(&key);
        }
        Ok(())
    }

    fn request_pool(&self, request: &RequestPoolRequest) -> Result<RequestPoolResponse, String> {
        let name = request.options.get(NETWORK_OPTION).ok_or_else(|| {
            format!(
                "name the shoal network with --ipam-opt {NETWORK_OPTION}=<name or id> \
                 (shoald makes the Docker networks of attachable shoal networks by itself)"
            )
        })?;
        let a = self.node.docker_network(name)?;
        if !request.pool.is_empty() && request.pool != a.subnet.to_string() {
            return Err(format!(
                "shoal network {} has the subnet {}, not {}",
                a.name, a.subnet, request.pool
            ));
        }
        Ok(RequestPoolResponse {
            pool_id: a.id.clone(),
            pool: a.subnet.to_string(),
            ..Default::default()
        })
    }

    fn release_pool(&self, pool_id: &str) -> Result<(), String> {
        let _ = pool_id;
        Ok(())
    }

    fn request_address(
        &self,
        request: &RequestAddressRequest,
    ) -> Result<RequestAddressResponse, String> {
        let a = self.node.docker_network(&request.pool_id)?;
        let prefix = a.subnet.prefix_len();
        let gateway = request
            .options
            .get("RequestAddressType")
            .is_some_and(|t| t == "com.docker.network.gateway");
        if gateway {
            return Ok(RequestAddressResponse {
                address: format!("{}/{prefix}", first_host(&a)),
                ..Default::default()
            });
        }
        if !request.address.is_empty() {
            let ip = parse_ip(&request.address)?;
            let d = self.node.docker.lock().expect("docker lock");
            if !d.pending.contains_key(&(a.id.clone(), ip)) {
                return Err(format!(
                    "address {ip} on network {} is not one of this node's tasks; \
                     leave --ip out and shoal gives one",
                    a.name
                ));
            }
            return Ok(RequestAddressResponse {
                address: format!("{ip}/{prefix}"),
                ..Default::default()
            });
        }
        let id = shoal_manager::swarm::random_id(25);
        let reply = self
            .rt
            .block_on(self.swarm.attach_container(&a.id, &id))
            .map_err(|e| format!("the managers gave no address on network {}: {e}", a.name))?;
        self.node
            .docker
            .lock()
            .expect("docker lock")
            .attachments
            .insert((a.id.clone(), reply.ip), id);
        Ok(RequestAddressResponse {
            address: format!("{}/{}", reply.ip, reply.prefix_len),
            ..Default::default()
        })
    }

    fn release_address(&self, pool_id: &str, address: &str) -> Result<(), String> {
        let ip = parse_ip(address)?;
        let id = self
            .node
            .docker
            .lock()
            .expect("docker lock")
            .attachments
            .remove(&(pool_id.to_string(), ip));
        if let Some(id) = id {
            self.rt
                .block_on(self.swarm.detach_container(&id))
                .map_err(|e| format!("cannot free {ip}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert_eq!(tap_name("0123456789abcdef0123"), "shl0123456789a");
        assert!(tap_name("0123456789abcdef0123").len() <= 15);
        assert_eq!(parse_ip("10.0.1.5/24").unwrap(), Ipv4Addr::new(10, 0, 1, 5));
        assert_eq!(parse_ip("10.0.1.5").unwrap(), Ipv4Addr::new(10, 0, 1, 5));
        assert!(parse_ip("fe80::1/64").is_err());
        assert_ne!(
            shoal_manager::swarm::random_id(25),
            shoal_manager::swarm::random_id(25)
        );
    }

    #[test]
    fn paths_resolve_under_another_root() {
        let root = std::env::temp_dir().join(format!("shoal-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run/docker/netns")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("var/rel")).unwrap();
        let got = resolve_under(&root, Path::new("/var/run/docker/netns/abc")).unwrap();
        assert_eq!(got, root.join("run/docker/netns/abc"));
        let got = resolve_under(&root, Path::new("/var/rel/docker/netns/abc")).unwrap();
        assert_eq!(got, root.join("run/docker/netns/abc"));
        assert!(resolve_under(&root, Path::new("relative/x")).is_err());
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_under(&root, Path::new("/loop/x"))
            .unwrap_err()
            .contains("too many"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_empty_file_is_not_a_namespace_and_ours_is() {
        let dir = std::env::temp_dir().join(format!("shoal-nswait-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let err = wait_for_netns(&dir, Duration::from_millis(20)).unwrap_err();
        assert!(err.contains("did not become a network namespace"), "{err}");
        std::fs::remove_file(&dir).unwrap();
        wait_for_netns(Path::new("/proc/self/ns/net"), Duration::from_millis(20)).unwrap();
    }
}
