//! The swarm agent's way onto the overlay: task interfaces and the networks
//! they need, made with the node's [`DataPlane`], and service discovery:
//! gossip and each task's embedded DNS.
//!
//! The data plane starts on the first network a task needs, on this node's
//! swarm address and UDP 4789 (or is the one `--config` started). Networks
//! are named by their swarm id inside it (names can be reused after `network
//! rm`, ids cannot). Each sync makes the data plane's networks equal to the
//! managers' assignments, removing what they no longer list, and gives
//! encrypted networks the cluster's key ring.
//!
//! Gossip (UDP and TCP 7946 on the swarm address, sealed with the cluster's
//! gossip keys) starts with the first sync that has keys; the managers are
//! its seeds. A task's endpoints are published when it is attached and
//! withdrawn when it is detached. Everything the data plane knows about
//! other nodes' tasks, and everything a task's DNS answers, comes from the
//! gossip view ([`crate::discovery`]), so a node gossip declares dead leaves
//! both within the detection window.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use shoal_dns::{DnsServer, Forwarder, ForwarderConfig, Zone};
use shoal_gossip::{EndpointRecord, GossipConfig, GossipHandle, TableView, Timings};
use shoal_manager::dispatch::{AssignedTask, IngressAssignment, NetworkAssignment};
use shoal_manager::state::ClusterKey;
use shoal_manager::worker::{NetworkAttacher, NodeNetworking};
use shoal_node::config::{DataPlaneConfig, Encryption, LocalEndpointConfig, NetworkConfig};
use shoal_node::{DataPlane, DataPlaneError};
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::mac::MacAddr;
use tokio::sync::watch;

use crate::discovery::{self, GOSSIP_PORT};

mod docker;
use crate::ingress::{Ingress, Route};
pub use docker::{DockerBackend, NETWORK_OPTION};
use shoal_manager::state::service::Protocol;
use shoal_overlay::lb::flow::Proto;

/// How old a new key must be before nodes send with it: every node has
/// heard of it by then (heartbeats), so none drops frames sealed with a key
/// it does not know yet. Until then the previous key sends.
pub const KEY_SETTLE_SECS: u64 = 15;

/// Where each task's DNS server listens, inside the task's namespace.
pub const EMBEDDED_DNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// How the embedded DNS answers and forwards.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Where names that are not the swarm's go (at most 3).
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the swarm's answers, in seconds.
    pub ttl: u32,
}

/// Attaches tasks through a data plane started on demand, and runs the
/// node's gossip and its tasks' DNS servers.
pub struct DataPlaneAttacher {
    node: Arc<NodeNet>,
}

struct NodeNet {
    dp: Mutex<Option<Arc<DataPlane>>>,
    /// The remote endpoints last given to each network (by id).
    remotes: Mutex<BTreeMap<String, BTreeSet<(Ipv4Addr, MacAddr)>>>,
    gossip: Mutex<Option<Gossip>>,
    /// The names of the networks of the last assignments, by id.
    names: Mutex<BTreeMap<String, String>>,
    /// The DNS server of each attached task, by task id.
    dns: Mutex<BTreeMap<String, TaskDns>>,
    /// This node's id and underlay address, from the last sync.
    identity: Mutex<Option<(String, IpAddr)>>,
    /// The endpoints of each attached task (network id, record), by task id:
    /// published now, or when gossip starts if it has not yet.
    records: Mutex<BTreeMap<String, Vec<(String, EndpointRecord)>>>,
    dns_settings: DnsSettings,
    /// Forwarding workers of the data plane started on demand (`None`:
    /// one per core).
    workers: Option<usize>,
    forwarder: Mutex<Option<Arc<Forwarder>>>,
    /// The routing mesh's sandbox and listeners, while a service publishes.
    ingress: Mutex<Option<Ingress>>,
    /// The host-mode ports of the attached tasks.
    host_ports: crate::hostports::HostPorts,
    /// The cluster's network keys from the last sync.
    network_keys: Mutex<Vec<ClusterKey>>,
    /// What each network was last given to the data plane with, by id:
    /// a sync skips networks whose settings and key ring did not change.
    applied: Mutex<BTreeMap<String, NetworkSettings>>,
    /// Docker's containers on shoal networks (the network plugin).
    docker: Mutex<docker::DockerState>,
    /// Told the attachable networks each round, when Docker is in use.
    on_attachable: Mutex<Option<AttachableHook>>,
}

/// The settings of a network as the data plane got them: VNI, subnet,
/// and for an encrypted one the key ids and the sending key.
type NetworkSettings = (u32, ipnet::Ipv4Net, Option<(Vec<u8>, Option<u8>)>);

fn settings_of(a: &NetworkAssignment, keys: &[ClusterKey], now: u64) -> NetworkSettings {
    let ring = a
        .encrypted
        .then(|| (keys.iter().map(|k| k.id).collect(), sending_key(keys, now)));
    (a.vni, a.subnet, ring)
}

/// What to do with the attachable networks (make them Docker networks).
pub type AttachableHook = Box<dyn Fn(&[NetworkAssignment]) + Send + Sync>;

/// The key of the ingress sandbox's endpoint among the attached ones.
const INGRESS_KEY: &str = "ingress-sbox";

struct Gossip {
    handle: GossipHandle,
    node_id: String,
    keys: Vec<ClusterKey>,
    seeds: Vec<SocketAddr>,
    /// The networks this node takes part in.
    joined: BTreeSet<String>,
}

struct TaskDns {
    networks: Vec<String>,
    zone: watch::Sender<std::sync::Arc<Zone>>,
    _server: DnsServer,
}

impl DataPlaneAttacher {
    /// `dp`: the data plane `--config` started, if any; `workers`: the
    /// forwarding workers of the one started on demand otherwise.
    pub fn new(
        dp: Option<Arc<DataPlane>>,
        dns_settings: DnsSettings,
        workers: Option<usize>,
    ) -> Self {
        DataPlaneAttacher {
            node: Arc::new(NodeNet {
                dp: Mutex::new(dp),
                remotes: Mutex::new(BTreeMap::new()),
                gossip: Mutex::new(None),
                names: Mutex::new(BTreeMap::new()),
                dns: Mutex::new(BTreeMap::new()),
                identity: Mutex::new(None),
                records: Mutex::new(BTreeMap::new()),
                dns_settings,
                workers,
                forwarder: Mutex::new(None),
                ingress: Mutex::new(None),
                host_ports: Default::default(),
                network_keys: Mutex::new(Vec::new()),
                applied: Mutex::new(BTreeMap::new()),
                docker: Mutex::new(docker::DockerState::default()),
                on_attachable: Mutex::new(None),
            }),
        }
    }

    /// Calls `hook` with the attachable networks every round (Docker's
    /// networks are made from them).
    pub fn on_attachable(&self, hook: AttachableHook) {
        *self.node.on_attachable.lock().expect("hook lock") = Some(hook);
    }

    /// The running data plane, if one was started.
    pub fn current(&self) -> Option<Arc<DataPlane>> {
        self.node.current()
    }

    /// What the node knows through gossip, for the local API: its members
    /// and each network's endpoints (named where the assignments name them).
    pub fn discovery(&self) -> Option<DiscoveryStatus> {
        let g = self.node.gossip.lock().expect("gossip lock");
        let g = g.as_ref()?;
        let view = g.handle.snapshot();
        let names = self.node.names.lock().expect("names lock").clone();
        let networks = view
            .networks
            .iter()
            .map(|(id, endpoints)| DiscoveryNetwork {
                name: names.get(id).cloned().unwrap_or_else(|| id.clone()),
                id: id.clone(),
                endpoints: endpoints.clone(),
            })
            .collect();
        Some(DiscoveryStatus {
            node_id: g.node_id.clone(),
            members: g
                .handle
                .members()
                .into_iter()
                .map(|m| {
                    serde_json::json!({
                        "node_id": m.node_id,
                        "addr": m.addr,
                        "state": format!("{:?}", m.state).to_lowercase(),
                    })
                })
                .collect(),
            networks,
            dns_servers: self.node.dns.lock().expect("dns lock").len(),
        })
    }
}

/// The answer of `GET /v1/discovery`.
#[derive(Debug, serde::Serialize)]
pub struct DiscoveryStatus {
    /// This node's id.
    pub node_id: String,
    /// The gossip members as this node sees them.
    pub members: Vec<serde_json::Value>,
    /// Each network's available endpoints.
    pub networks: Vec<DiscoveryNetwork>,
    /// How many task DNS servers run on this node.
    pub dns_servers: usize,
}

/// One network in [`DiscoveryStatus`].
#[derive(Debug, serde::Serialize)]
pub struct DiscoveryNetwork {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its available endpoints.
    pub endpoints: Vec<shoal_gossip::EndpointRecord>,
}

impl NodeNet {
    fn current(&self) -> Option<Arc<DataPlane>> {
        self.dp.lock().expect("data plane lock").clone()
    }

    fn data_plane(&self, node: IpAddr) -> Result<Arc<DataPlane>, String> {
        let mut dp = self.dp.lock().expect("data plane lock");
        if let Some(dp) = dp.as_ref() {
            return Ok(dp.clone());
        }
        let mut config = DataPlaneConfig::new(node);
        if let Some(w) = self.workers {
            config.workers = w;
        }
        let workers = config.workers;
        let started = Arc::new(
            DataPlane::start(config).map_err(|e| format!("cannot start the data plane: {e}"))?,
        );
        tracing::info!(node = %node, workers, "data plane started for the swarm's tasks");
        *dp = Some(started.clone());
        Ok(started)
    }

    /// Starts gossip, or gives it new keys and seeds.
    fn sync_gossip(self: &Arc<Self>, node: &NodeNetworking) -> Result<(), String> {
        if node.gossip_keys.is_empty() {
            return Ok(());
        }
        let (ring, tx) = discovery::gossip_keys(&node.gossip_keys, now_secs())?;
        let seeds = discovery::seeds(&node.managers, node.addr);
        let mut g = self.gossip.lock().expect("gossip lock");
        if let Some(g) = g.as_mut() {
            if g.keys != node.gossip_keys {
                g.handle.set_keys(ring, tx).map_err(|e| e.to_string())?;
                g.keys = node.gossip_keys.clone();
            }
            if g.seeds != seeds {
                g.handle.join(seeds.clone()).map_err(|e| e.to_string())?;
                g.seeds = seeds;
            }
            return Ok(());
        }
        let addr = SocketAddr::new(node.addr, GOSSIP_PORT);
        let handle = GossipHandle::start(GossipConfig {
            node_id: node.node_id.clone(),
            bind: addr,
            advertise: addr,
            keys: ring,
            tx_key: tx,
            timings: Timings {
                // Nodes start gossip one after another: a seed that was
                // not up yet is tried again soon.
                seed_announce_interval: std::time::Duration::from_secs(1),
                ..Timings::default()
            },
        })
        .map_err(|e| format!("cannot start gossip on {addr}: {e}"))?;
        handle.join(seeds.clone()).map_err(|e| e.to_string())?;
        // Tasks attached before gossip ran (its keys come with the first
        // heartbeat) are published now.
        let mut joined = BTreeSet::new();
        for (net, record) in self
            .records
            .lock()
            .expect("records lock")
            .values()
            .flatten()
        {
            joined.insert(net.clone());
            handle
                .publish(net, record.clone())
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(%addr, "gossip started");
        let mut views = handle.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let view = views.borrow_and_update().clone();
                me.apply_view(&view);
                if views.changed().await.is_err() {
                    break;
                }
            }
        });
        *g = Some(Gossip {
            handle,
            node_id: node.node_id.clone(),
            keys: node.gossip_keys.clone(),
            seeds,
            joined,
        });
        Ok(())
    }

    /// Keeps `records` as the endpoints of `key` and publishes them when
    /// gossip runs (or later, when it starts).
    fn publish(&self, key: &str, records: Vec<(String, EndpointRecord)>) -> Result<(), String> {
        self.records
            .lock()
            .expect("records lock")
            .insert(key.to_string(), records.clone());
        if let Some(g) = self.gossip.lock().expect("gossip lock").as_mut() {
            for (net, record) in records {
                g.joined.insert(net.clone());
                g.handle
                    .publish(&net, record)
                    .map_err(|e| format!("cannot publish an endpoint: {e}"))?;
            }
        }
        Ok(())
    }

    /// Withdraws the endpoints of `key`.
    fn withdraw(&self, key: &str) {
        let Some(records) = self.records.lock().expect("records lock").remove(key) else {
            return;
        };
        if let Some(g) = self.gossip.lock().expect("gossip lock").as_ref() {
            for (net, r) in records {
                if let Err(e) = g.handle.withdraw(&net, &r.task_id) {
                    tracing::warn!(endpoint = %r.task_id, error = %e, "cannot withdraw an endpoint");
                }
            }
        }
    }

    /// Makes the routing mesh what `ingress` says: the sandbox attached to
    /// the ingress network at this node's address, published to gossip,
    /// and a listener per published TCP port.
    fn sync_ingress(
        &self,
        dp: &Arc<DataPlane>,
        ingress: Option<&IngressAssignment>,
    ) -> Result<(), String> {
        let mut current = self.ingress.lock().expect("ingress lock");
        let wanted = ingress.map(|a| (a.network.id.clone(), a.ip));
        let have = current.as_ref().map(|i| (i.network.clone(), i.ip));
        if have.is_some() && have != wanted {
            if let Some(old) = current.take() {
                self.withdraw(INGRESS_KEY);
                let _ = dp.remove_endpoint(&old.network, old.ip);
                tracing::info!("routing mesh: sandbox removed");
            }
        }
        let Some(a) = ingress else {
            return Ok(());
        };
        if current.is_none() {
            let sandbox = Ingress::new(a.network.id.clone(), a.ip)?;
            dp.add_endpoint(LocalEndpointConfig {
                network: a.network.id.clone(),
                netns: sandbox.netns().to_path_buf(),
                ifname: "eth0".into(),
                ip: a.ip,
                mac: MacAddr(shoal_manager::state::task::task_mac(a.ip)),
                handover: false,
            })
            .map_err(|e| format!("cannot attach the ingress sandbox: {e}"))?;
            let (node_id, node_addr) = self.swarm_identity()?;
            let record = discovery::sandbox_record(&node_id, node_addr, a.ip);
            self.publish(INGRESS_KEY, vec![(a.network.id.clone(), record)])?;
            if let Some(view) = self.view() {
                sandbox.set_view(&view);
            }
            tracing::info!(ip = %a.ip, "routing mesh: sandbox attached to the ingress network");
            *current = Some(sandbox);
        }
        let mut routes = BTreeMap::new();
        for service in &a.services {
            for p in &service.ports {
                let Some(published) = p.published else {
                    continue;
                };
                let proto = match p.protocol {
                    Protocol::Tcp => Proto::Tcp,
                    Protocol::Udp => Proto::Udp,
                };
                routes.insert(
                    (proto, published),
                    Route {
                        service_id: service.id.clone(),
                        service_name: service.name.clone(),
                        target: p.target,
                        proxy_protocol: p.proxy_protocol,
                    },
                );
            }
        }
        current.as_ref().expect("made above").set_routes(routes)
    }

    /// This node's id and underlay address, from the last sync.
    fn swarm_identity(&self) -> Result<(String, IpAddr), String> {
        self.identity
            .lock()
            .expect("identity lock")
            .clone()
            .ok_or_else(|| "this node does not know its swarm identity yet".to_string())
    }

    fn view(&self) -> Option<Arc<TableView>> {
        self.gossip
            .lock()
            .expect("gossip lock")
            .as_ref()
            .map(|g| g.handle.snapshot())
    }

    /// Makes the data plane's remote endpoints and every task's DNS zone
    /// what `view` says.
    fn apply_view(&self, view: &TableView) {
        if let Some(dp) = self.current() {
            let own = dp.node_addr();
            let mut last = self.remotes.lock().expect("remotes lock");
            for (spec, _) in dp.networks() {
                let plan = discovery::remote_plan(view, &spec.name, own);
                if let Err(e) = dp.set_peers(&spec.name, &plan.peers) {
                    tracing::warn!(network = %spec.name, error = %e, "cannot set the peers");
                }
                let now: BTreeSet<(Ipv4Addr, MacAddr)> =
                    plan.remotes.iter().map(|r| (r.ip, r.mac)).collect();
                let before = last.remove(&spec.name).unwrap_or_default();
                for gone in before.difference(&now) {
                    let _ = dp.remove_remote(&spec.name, gone.1);
                }
                for r in plan.remotes {
                    if !before.contains(&(r.ip, r.mac)) {
                        if let Err(e) = dp.upsert_remote(&spec.name, r) {
                            tracing::warn!(network = %spec.name, ip = %r.ip, error = %e, "cannot add a remote endpoint");
                        }
                    }
                }
                last.insert(spec.name.clone(), now);
                let vips = discovery::vip_services(view, &spec.name);
                if let Err(e) = dp.set_vip_services(&spec.name, &vips) {
                    tracing::warn!(network = %spec.name, error = %e, "cannot set the virtual IPs");
                }
            }
        }
        if let Some(i) = self.ingress.lock().expect("ingress lock").as_ref() {
            i.set_view(view);
        }
        for t in self.dns.lock().expect("dns lock").values() {
            let zone = Zone::new(
                discovery::zone_endpoints(view, &t.networks),
                self.dns_settings.ttl,
            );
            t.zone.send_replace(Arc::new(zone));
        }
    }

    fn forwarder(&self) -> Result<Arc<Forwarder>, String> {
        let mut f = self.forwarder.lock().expect("forwarder lock");
        if let Some(f) = f.as_ref() {
            return Ok(f.clone());
        }
        let config = ForwarderConfig {
            upstreams: self.dns_settings.upstreams.clone(),
            ..ForwarderConfig::default()
        };
        // Its sockets live in the node's namespace: tasks' lookups leave
        // through the node, like Docker's.
        let made = Arc::new(
            Forwarder::new(config, None)
                .map_err(|e| format!("cannot set up the DNS forwarder: {e}"))?,
        );
        *f = Some(made.clone());
        Ok(made)
    }

    /// Starts the DNS server of `key` (a task or a container) in `netns`,
    /// answering about `networks` (ids).
    fn start_dns_for(&self, key: &str, networks: Vec<String>, netns: &Path) -> Result<(), String> {
        let view = self.view().unwrap_or_default();
        let zone = Zone::new(
            discovery::zone_endpoints(&view, &networks),
            self.dns_settings.ttl,
        );
        let (tx, rx) = watch::channel(Arc::new(zone));
        let server = DnsServer::start(Some(netns), EMBEDDED_DNS, rx, self.forwarder()?)
            .map_err(|e| format!("cannot start the task's DNS server: {e}"))?;
        self.dns.lock().expect("dns lock").insert(
            key.to_string(),
            TaskDns {
                networks,
                zone: tx,
                _server: server,
            },
        );
        Ok(())
    }
}

/// The data plane's configuration of network `a`; encrypted networks get
/// the cluster's key ring.
fn network_config(a: &NetworkAssignment, keys: &[ClusterKey]) -> Result<NetworkConfig, String> {
    let encryption = if a.encrypted {
        Some(Encryption {
            cipher: Cipher::default(),
            keys: key_ring(keys, now_secs())?,
        })
    } else {
        None
    };
    Ok(NetworkConfig {
        name: a.id.clone(),
        vni: shoal_overlay::vxlan::Vni::new(a.vni).map_err(|e| e.to_string())?,
        subnet: a.subnet,
        encryption,
        peers: Vec::new(),
        remotes: Vec::new(),
    })
}

impl NodeNet {
    /// The data plane, with network `a` in it (added if missing).
    fn ensure_network(&self, a: &NetworkAssignment) -> Result<Arc<DataPlane>, String> {
        let (_, addr) = self.swarm_identity()?;
        let dp = self.data_plane(addr)?;
        if dp.networks().iter().any(|(s, _)| s.name == a.id) {
            return Ok(dp);
        }
        let keys = self.network_keys.lock().expect("keys lock").clone();
        let config = network_config(a, &keys).map_err(|e| format!("network {}: {e}", a.name))?;
        dp.add_network(config)
            .map_err(|e| format!("network {}: {e}", a.name))?;
        if let Some(view) = self.view() {
            self.apply_view(&view);
        }
        Ok(dp)
    }
}

/// The key ring of an encrypted network: all the cluster's keys, the newest
/// that has settled sending.
pub fn key_ring(keys: &[ClusterKey], now: u64) -> Result<KeyRing, String> {
    let ring: Vec<NetworkKey> = keys
        .iter()
        .map(|k| NetworkKey::from_hex(k.id, &k.secret).map_err(|e| format!("key {}: {e}", k.id)))
        .collect::<Result<_, _>>()?;
    let tx = sending_key(keys, now).ok_or("the cluster has no network key yet")?;
    KeyRing::new(ring, tx).map_err(|e| e.to_string())
}

/// The id of the key to send with among `keys` (oldest first): the newest
/// that has settled ([`KEY_SETTLE_SECS`]), or the only one of a new swarm.
/// Network and gossip keys follow the same rule.
pub fn sending_key(keys: &[ClusterKey], now: u64) -> Option<u8> {
    keys.iter()
        .rev()
        .find(|k| k.created_at + KEY_SETTLE_SECS <= now)
        .or(keys.first())
        .map(|k| k.id)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NetworkAttacher for DataPlaneAttacher {
    fn sync(
        &self,
        node: &NodeNetworking,
        networks: &[NetworkAssignment],
        ingress: Option<&IngressAssignment>,
    ) -> Result<(), String> {
        let n = &self.node;
        *n.identity.lock().expect("identity lock") = Some((node.node_id.clone(), node.addr));
        *n.network_keys.lock().expect("keys lock") = node.network_keys.clone();
        {
            let mut d = n.docker.lock().expect("docker lock");
            d.networks = networks.iter().map(|a| (a.id.clone(), a.clone())).collect();
        }
        let mut errors = Vec::new();
        if let Err(e) = n.sync_gossip(node) {
            errors.push(e);
        }
        *n.names.lock().expect("names lock") = networks
            .iter()
            .map(|a| (a.id.clone(), a.name.clone()))
            .collect();
        let wanted: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
        if !networks.is_empty() || n.current().is_some() {
            let dp = n.data_plane(node.addr)?;
            let mut added = false;
            // One copy of the tables for the whole sync.
            let known: BTreeSet<String> = dp.networks().into_iter().map(|(s, _)| s.name).collect();
            let mut applied = n.applied.lock().expect("applied lock");
            applied.retain(|id, _| known.contains(id));
            for a in networks {
                let settings = settings_of(a, &node.network_keys, now_secs());
                if known.contains(&a.id) && applied.get(&a.id) == Some(&settings) {
                    continue;
                }
                let config = match network_config(a, &node.network_keys) {
                    Ok(config) => config,
                    // No keys yet (the first heartbeat brings them): the
                    // other networks go on, this one comes next round.
                    Err(e) => {
                        errors.push(format!("network {}: {e}", a.name));
                        continue;
                    }
                };
                // Idempotent: for a known network it only refreshes the keys.
                match dp.add_network(config) {
                    Ok(()) => {
                        added |= !known.contains(&a.id);
                        applied.insert(a.id.clone(), settings);
                    }
                    Err(e) => errors.push(format!("network {}: {e}", a.name)),
                }
            }
            drop(applied);
            for name in known.iter().filter(|k| !wanted.contains(k.as_str())) {
                match dp.remove_network(name) {
                    Ok(_) => {
                        n.remotes.lock().expect("remotes lock").remove(name);
                    }
                    // Its last task is still on its way out; next time.
                    Err(DataPlaneError::NetworkInUse { .. }) => {}
                    Err(e) => errors.push(format!("network {name}: {e}")),
                }
            }
            if added {
                if let Some(view) = n.view() {
                    n.apply_view(&view);
                }
            }
            if let Err(e) = n.sync_ingress(&dp, ingress) {
                errors.push(e);
            }
        }
        // Take part in the tables of the networks this node has tasks on.
        if let Some(g) = n.gossip.lock().expect("gossip lock").as_mut() {
            let want: BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
            for joined in want.difference(&g.joined) {
                if let Err(e) = g.handle.join_network(joined) {
                    errors.push(e.to_string());
                }
            }
            for left in g.joined.difference(&want) {
                if let Err(e) = g.handle.leave_network(left) {
                    errors.push(e.to_string());
                }
            }
            g.joined = want;
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn drain(&self, task: &AssignedTask) {
        let n = &self.node;
        // Marked in the kept records too, so a gossip restart publishes them
        // disabled. One lock at a time (publish takes them in this order).
        let endpoints: Vec<(String, String)> = {
            let mut records = n.records.lock().expect("records lock");
            let Some(mine) = records.get_mut(&task.id) else {
                return;
            };
            mine.iter_mut()
                .map(|(net, r)| {
                    r.disabled = true;
                    (net.clone(), r.task_id.clone())
                })
                .collect()
        };
        if let Some(g) = n.gossip.lock().expect("gossip lock").as_ref() {
            for (net, id) in endpoints {
                if let Err(e) = g.handle.set_disabled(&net, &id, true) {
                    tracing::warn!(task = %task.name, error = %e, "cannot take the task out of rotation");
                }
            }
        }
    }

    fn attachable(&self, networks: &[NetworkAssignment]) {
        let n = &self.node;
        n.docker.lock().expect("docker lock").attachable =
            networks.iter().map(|a| (a.id.clone(), a.clone())).collect();
        if let Some(hook) = n.on_attachable.lock().expect("hook lock").as_ref() {
            hook(networks);
        }
    }

    fn ready(&self, networks: &[NetworkAssignment]) -> bool {
        let Some(dp) = self.node.current() else {
            return networks.is_empty();
        };
        let have: BTreeSet<String> = dp.networks().into_iter().map(|(s, _)| s.name).collect();
        networks.iter().all(|n| have.contains(&n.id))
    }

    fn attach(
        &self,
        task: &AssignedTask,
        networks: &[NetworkAssignment],
        netns: &Path,
    ) -> Result<(), String> {
        let n = &self.node;
        if task.image.is_some() {
            // A container: Docker asks the network plugin for its
            // interfaces when it starts it.
            let _ = (networks, netns);
            crate::hostports::warn_container(task);
            n.expect_docker_task(task);
            return Ok(());
        }
        if task.networks.is_empty() {
            return n.host_ports.open(task, netns);
        }
        let dp = n
            .current()
            .ok_or("the data plane is not running (no network was set up)")?;
        let result = (|| {
            for (i, (a, net)) in task.networks.iter().zip(networks).enumerate() {
                dp.add_endpoint(LocalEndpointConfig {
                    network: net.id.clone(),
                    netns: netns.to_path_buf(),
                    ifname: format!("eth{i}"),
                    ip: a.ip,
                    mac: MacAddr(a.mac()),
                    handover: false,
                })
                .map_err(|e| format!("cannot attach to network {}: {e}", net.name))?;
            }
            // No service discovery on the ingress network, like Docker's.
            let named: Vec<String> = networks
                .iter()
                .filter(|n| !n.ingress)
                .map(|n| n.id.clone())
                .collect();
            n.start_dns_for(&task.id, named, netns)?;
            let (node_id, node_addr) = n.swarm_identity()?;
            let records: Vec<(String, EndpointRecord)> = task
                .networks
                .iter()
                .map(|a| {
                    let r = discovery::task_record(task, &a.network_id, a.ip, &node_id, node_addr);
                    (a.network_id.clone(), r)
                })
                .collect();
            n.publish(&task.id, records)?;
            n.host_ports.open(task, netns)
        })();
        if result.is_err() {
            self.detach(task);
        }
        result
    }

    fn detach(&self, task: &AssignedTask) {
        let n = &self.node;
        n.host_ports.close(&task.id);
        n.withdraw(&task.id);
        n.dns.lock().expect("dns lock").remove(&task.id);
        if task.image.is_some() {
            n.forget_docker_task(task);
            return;
        }
        let Some(dp) = n.current() else {
            return;
        };
        for a in &task.networks {
            if let Err(e) = dp.remove_endpoint(&a.network_id, a.ip) {
                tracing::warn!(task = %task.name, error = %e, "cannot detach the task");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8, at: u64) -> ClusterKey {
        ClusterKey {
            id,
            secret: format!("{id:064x}"),
            created_at: at,
        }
    }

    #[test]
    fn a_sync_skips_a_network_only_while_its_key_ring_stays_the_same() {
        let a = NetworkAssignment {
            id: "n1".into(),
            name: "blue".into(),
            vni: 4097,
            subnet: "10.0.1.0/24".parse().unwrap(),
            encrypted: true,
            ingress: false,
        };
        let keys = [key(1, 100), key(2, 1000)];
        let before = settings_of(&a, &keys, 1005);
        assert_eq!(before, settings_of(&a, &keys, 1010));
        // Key 2 settles: the ring is given again, now sending with 2.
        assert_ne!(before, settings_of(&a, &keys, 1015));
        // A new key arrives.
        assert_ne!(
            before,
            settings_of(&a, &[key(1, 100), key(2, 1000), key(3, 1006)], 1010)
        );
        // A plain network does not care about keys.
        let plain = NetworkAssignment {
            encrypted: false,
            ..a
        };
        assert_eq!(
            settings_of(&plain, &keys, 1005),
            settings_of(&plain, &[], 9999)
        );
    }

    #[test]
    fn the_newest_settled_key_sends() {
        let keys = [key(1, 100), key(2, 200), key(3, 1000)];
        assert_eq!(key_ring(&keys, 1005).unwrap().tx_key().id(), 2);
        assert_eq!(key_ring(&keys, 1015).unwrap().tx_key().id(), 3);
        // A brand-new swarm's only key sends at once.
        assert_eq!(key_ring(&[key(1, 1000)], 1000).unwrap().tx_key().id(), 1);
        assert!(key_ring(&[], 1000).is_err());
    }
}
