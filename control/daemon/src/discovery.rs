//! What a swarm node learns from gossip, and where it goes.
//!
//! Each node publishes its tasks' endpoints into `shoal-gossip`'s replicated
//! tables, one table per network, and reads every node's endpoints back as a
//! [`TableView`]. That view is the one source the node's consumers follow:
//!
//! - the data plane's remote endpoints and peers of each network
//!   ([`remote_plan`]), so a dead node's tasks leave the forwarding tables as
//!   soon as gossip declares it down;
//! - each task's DNS zone ([`zone_endpoints`]), built from the networks that
//!   task is attached to and no other, served at 127.0.0.11 in its namespace;
//! - the virtual IPs the data plane balances on each network and their
//!   backends ([`vip_services`]), so a drained task takes no new flows and a
//!   gone one none at all, on every node, as soon as gossip says so.
//!
//! These functions are pure; the attacher applies their results.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use shoal_gossip::{EndpointRecord, TableView};
use shoal_manager::dispatch::AssignedTask;
use shoal_manager::state::ClusterKey;
use shoal_node::config::{RemoteEndpoint, VipBackend, VipService};
use shoal_overlay::mac::MacAddr;

/// UDP and TCP port of gossip (Docker's).
pub const GOSSIP_PORT: u16 = 7946;

/// What the data plane should hold for one network: the nodes that have
/// endpoints on it and those endpoints, this node's own left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePlan {
    /// The peer nodes' underlay addresses.
    pub peers: Vec<IpAddr>,
    /// The other nodes' endpoints.
    pub remotes: Vec<RemoteEndpoint>,
}

/// The remote endpoints and peers of `network` in `view`, for the node whose
/// underlay address is `own`. An address claimed twice (a task moving
/// between nodes, both copies briefly alive) goes to the record with the
/// higher node address, so every node picks the same one.
pub fn remote_plan(view: &TableView, network: &str, own: IpAddr) -> RemotePlan {
    let mut by_ip: BTreeMap<Ipv4Addr, &EndpointRecord> = BTreeMap::new();
    for r in view.endpoints(network) {
        if r.node_addr == own {
            continue;
        }
        let keep = by_ip
            .get(&r.ip)
            .is_none_or(|old| r.node_addr > old.node_addr);
        if keep {
            by_ip.insert(r.ip, r);
        }
    }
    let peers: BTreeSet<IpAddr> = by_ip.values().map(|r| r.node_addr).collect();
    RemotePlan {
        peers: peers.into_iter().collect(),
        remotes: by_ip
            .values()
            .map(|r| RemoteEndpoint {
                ip: r.ip,
                mac: MacAddr(r.mac),
                node: r.node_addr,
            })
            .collect(),
    }
}

/// The VIP services of `network` in `view`: each VIP the records carry
/// (services in endpoint mode `vip`), with the tasks that carry it as
/// backends, active unless disabled (draining). A task listed twice (moving
/// between nodes) is active if either copy is. A VIP that is also a task's
/// address is left out (the data plane would refuse the whole network's
/// list), and so is a backend whose address is a VIP.
pub fn vip_services(view: &TableView, network: &str) -> Vec<VipService> {
    let records = view.endpoints(network);
    let task_ips: BTreeSet<Ipv4Addr> = records.iter().map(|r| r.ip).collect();
    let mut by_vip: BTreeMap<Ipv4Addr, BTreeMap<Ipv4Addr, bool>> = BTreeMap::new();
    for r in records {
        let Some(vip) = r.vip.filter(|_| !r.dnsrr) else {
            continue;
        };
        if task_ips.contains(&vip) {
            continue;
        }
        *by_vip.entry(vip).or_default().entry(r.ip).or_default() |= !r.disabled;
    }
    let vips: BTreeSet<Ipv4Addr> = by_vip.keys().copied().collect();
    by_vip
        .into_iter()
        .map(|(vip, backends)| VipService {
            vip,
            backends: backends
                .into_iter()
                .filter(|(ip, _)| !vips.contains(ip))
                .map(|(ip, active)| VipBackend { ip, active })
                .collect(),
        })
        .collect()
}

/// The DNS endpoints a task attached to `networks` may see.
pub fn zone_endpoints(view: &TableView, networks: &[String]) -> Vec<shoal_dns::Endpoint> {
    networks
        .iter()
        .flat_map(|n| view.endpoints(n).iter().map(move |r| (n, r)))
        .map(|(n, r)| shoal_dns::Endpoint {
            network_id: n.clone(),
            service_name: r.service_name.clone(),
            service_id: r.service_id.clone(),
            task_name: r.task_name.clone(),
            task_id: r.task_id.clone(),
            ip: r.ip,
            vip: r.vip,
            dnsrr: r.dnsrr,
            aliases: r.aliases.clone(),
            healthy: !r.disabled,
        })
        .collect()
}

/// The record a node publishes for its task `task` on network `network`
/// (id) at `ip`, with its service's VIP there (none for `dnsrr`).
pub fn task_record(
    task: &AssignedTask,
    network: &str,
    ip: Ipv4Addr,
    node_id: &str,
    node_addr: IpAddr,
) -> EndpointRecord {
    EndpointRecord {
        task_id: task.id.clone(),
        task_name: task.name.clone(),
        service_name: task.service_name.clone(),
        service_id: task.service_id.clone(),
        vip: task
            .vips
            .iter()
            .find(|v| v.network_id == network && !task.dnsrr)
            .map(|v| v.ip),
        ip,
        mac: shoal_manager::state::task::task_mac(ip),
        node_id: node_id.to_string(),
        node_addr,
        ports: task
            .ports
            .iter()
            .filter_map(|p| {
                Some(shoal_gossip::PublishedPort {
                    protocol: p.protocol.to_string(),
                    target: p.target,
                    published: p.published?,
                })
            })
            .collect(),
        aliases: Vec::new(),
        dnsrr: task.dnsrr,
        disabled: false,
    }
}

/// The record of a node's ingress sandbox: no service, so no task set or
/// DNS name takes it, but every node learns where its address lives (the
/// tasks' answers to the routing mesh go back to it).
pub fn sandbox_record(node_id: &str, node_addr: IpAddr, ip: Ipv4Addr) -> EndpointRecord {
    container_record(&format!("ingress-sbox-{node_id}"), ip, node_id, node_addr)
}

/// The gossip record of an endpoint that belongs to no service (the
/// ingress sandbox, a plain Docker container): reachable at `ip`, but no
/// name of the zone's.
pub fn container_record(
    key: &str,
    ip: Ipv4Addr,
    node_id: &str,
    node_addr: IpAddr,
) -> EndpointRecord {
    EndpointRecord {
        task_id: key.to_string(),
        task_name: String::new(),
        service_name: String::new(),
        service_id: String::new(),
        vip: None,
        ip,
        mac: shoal_manager::state::task::task_mac(ip),
        node_id: node_id.to_string(),
        node_addr,
        ports: Vec::new(),
        aliases: Vec::new(),
        dnsrr: false,
        disabled: false,
    }
}

/// Gossip seeds: the managers' hosts on the gossip port, this node left out.
pub fn seeds(managers: &[SocketAddr], own: IpAddr) -> Vec<SocketAddr> {
    let set: BTreeSet<SocketAddr> = managers
        .iter()
        .filter(|m| m.ip() != own)
        .map(|m| SocketAddr::new(m.ip(), GOSSIP_PORT))
        .collect();
    set.into_iter().collect()
}

/// A gossip key ring: (id, secret) pairs.
pub type GossipKeys = Vec<(u8, [u8; 32])>;

/// The gossip key ring from the cluster's keys, and the id to send with
/// (the newest that has settled, like the network keys).
pub fn gossip_keys(keys: &[ClusterKey], now: u64) -> Result<(GossipKeys, u8), String> {
    let ring = keys
        .iter()
        .map(|k| {
            shoal_overlay::keys::NetworkKey::from_hex(k.id, &k.secret)
                .map(|key| (k.id, *key.secret()))
                .map_err(|e| format!("gossip key {}: {e}", k.id))
        })
        .collect::<Result<GossipKeys, _>>()?;
    let tx = crate::attach::sending_key(keys, now).ok_or("the cluster has no gossip key yet")?;
    Ok((ring, tx))
}

/// The upstream resolvers of the embedded DNS: `SHOAL_DNS_UPSTREAMS`
/// (comma-separated `ip[:port]`) when given, else the nameservers of the
/// host's `/etc/resolv.conf`; at most 3, never 127.0.0.11 itself.
pub fn upstreams(env: Option<&str>, resolv_conf: &str) -> Result<Vec<SocketAddr>, String> {
    let Some(list) = env else {
        return Ok(shoal_dns::forward::parse_resolv_conf(resolv_conf));
    };
    let all = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("DNS upstream {s:?} is not an address (ip or ip:port)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if all.len() > shoal_dns::forward::MAX_UPSTREAMS {
        return Err(format!(
            "{} DNS upstreams given; at most {} are used",
            all.len(),
            shoal_dns::forward::MAX_UPSTREAMS
        ));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_the_environment_or_resolv_conf() {
        let conf = "# x\nnameserver 10.0.0.2\nnameserver 127.0.0.11\nsearch x\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver 9.9.9.9\n";
        assert_eq!(
            upstreams(None, conf).unwrap(),
            ["10.0.0.2:53", "1.1.1.1:53", "8.8.8.8:53"].map(|s| s.parse::<SocketAddr>().unwrap())
        );
        assert_eq!(
            upstreams(Some("10.1.0.9:5353, 10.1.0.8"), conf).unwrap(),
            ["10.1.0.9:5353", "10.1.0.8:53"].map(|s| s.parse::<SocketAddr>().unwrap())
        );
        let e = upstreams(Some("nope"), conf).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        let e = upstreams(Some("1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4"), conf).unwrap_err();
        assert!(e.contains("at most 3"), "{e}");
    }

    #[test]
    fn seeds_are_the_other_managers_on_the_gossip_port() {
        let managers: Vec<SocketAddr> = ["10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.1:2377"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let own: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            seeds(&managers, own),
            vec!["10.0.0.1:7946".parse::<SocketAddr>().unwrap()]
        );
    }

    fn record(task: &str, service: &str, ip: [u8; 4], node: [u8; 4]) -> EndpointRecord {
        let ip = Ipv4Addr::from(ip);
        EndpointRecord {
            task_id: task.into(),
            task_name: format!("{service}.1.{task}"),
            service_name: service.into(),
            service_id: format!("id-{service}"),
            vip: None,
            ip,
            mac: shoal_manager::state::task::task_mac(ip),
            node_id: format!("node-{}", node[3]),
            node_addr: IpAddr::from(node),
            ports: vec![],
            aliases: vec![],
            dnsrr: false,
            disabled: false,
        }
    }

    fn view(nets: &[(&str, Vec<EndpointRecord>)]) -> TableView {
        TableView {
            version: 1,
            networks: nets
                .iter()
                .map(|(n, r)| (n.to_string(), r.clone()))
                .collect(),
        }
    }

    #[test]
    fn the_data_plane_gets_the_other_nodes_endpoints_once_each() {
        let me: IpAddr = "10.99.0.11".parse().unwrap();
        let v = view(&[
            (
                "net1",
                vec![
                    record("a", "web", [10, 0, 1, 3], [10, 99, 0, 11]),
                    record("b", "web", [10, 0, 1, 4], [10, 99, 0, 12]),
                    // A task moving: both copies briefly alive; the higher
                    // node address wins on every node.
                    record("c", "web", [10, 0, 1, 5], [10, 99, 0, 13]),
                    record("d", "web", [10, 0, 1, 5], [10, 99, 0, 14]),
                ],
            ),
            (
                "net2",
                vec![record("e", "db", [10, 0, 2, 3], [10, 99, 0, 15])],
            ),
        ]);
        let plan = remote_plan(&v, "net1", me);
        let got: Vec<(Ipv4Addr, IpAddr)> = plan.remotes.iter().map(|r| (r.ip, r.node)).collect();
        assert_eq!(
            got,
            [
                ("10.0.1.4".parse().unwrap(), "10.99.0.12".parse().unwrap()),
                ("10.0.1.5".parse().unwrap(), "10.99.0.14".parse().unwrap()),
            ]
        );
        assert_eq!(plan.remotes[0].mac.0, [0x02, 0x42, 10, 0, 1, 4]);
        let peers: Vec<String> = plan.peers.iter().map(ToString::to_string).collect();
        assert_eq!(peers, ["10.99.0.12", "10.99.0.14"]);
        assert_eq!(remote_plan(&v, "net3", me), RemotePlan::default());
    }

    #[test]
    fn a_task_sees_only_the_networks_it_is_attached_to() {
        let mut down = record("x", "web", [10, 0, 1, 9], [10, 99, 0, 12]);
        down.disabled = true;
        let v = view(&[
            (
                "net1",
                vec![record("a", "web", [10, 0, 1, 3], [10, 99, 0, 11]), down],
            ),
            (
                "net2",
                vec![record("e", "db", [10, 0, 2, 3], [10, 99, 0, 15])],
            ),
        ]);
        let eps = zone_endpoints(&v, &["net1".to_string()]);
        assert_eq!(eps.len(), 2);
        assert!(eps
            .iter()
            .all(|e| e.network_id == "net1" && e.service_name == "web"));
        assert!(eps.iter().any(|e| e.task_id == "x" && !e.healthy));
        let both = zone_endpoints(&v, &["net1".to_string(), "net2".to_string()]);
        assert!(both.iter().any(|e| e.service_name == "db"));
    }

    fn with_vip(mut r: EndpointRecord, vip: [u8; 4]) -> EndpointRecord {
        r.vip = Some(Ipv4Addr::from(vip));
        r
    }

    fn backend(ip: [u8; 4], active: bool) -> VipBackend {
        VipBackend {
            ip: Ipv4Addr::from(ip),
            active,
        }
    }

    #[test]
    fn each_vip_gets_its_tasks_as_backends_and_a_drained_one_is_inactive() {
        let mut drained = with_vip(
            record("c", "web", [10, 0, 1, 5], [10, 99, 0, 13]),
            [10, 0, 1, 2],
        );
        drained.disabled = true;
        let mut rr = record("r", "rr", [10, 0, 1, 7], [10, 99, 0, 12]);
        rr.vip = Some(Ipv4Addr::new(10, 0, 1, 8));
        rr.dnsrr = true;
        let v = view(&[
            (
                "net1",
                vec![
                    with_vip(
                        record("a", "web", [10, 0, 1, 3], [10, 99, 0, 11]),
                        [10, 0, 1, 2],
                    ),
                    with_vip(
                        record("b", "web", [10, 0, 1, 4], [10, 99, 0, 12]),
                        [10, 0, 1, 2],
                    ),
                    drained,
                    with_vip(
                        record("d", "db", [10, 0, 1, 6], [10, 99, 0, 12]),
                        [10, 0, 1, 9],
                    ),
                    // No VIP (an ingress sandbox, or dnsrr): no service.
                    record("s", "", [10, 0, 1, 10], [10, 99, 0, 12]),
                    rr,
                ],
            ),
            (
                "net2",
                vec![with_vip(
                    record("e", "web", [10, 0, 2, 3], [10, 99, 0, 15]),
                    [10, 0, 2, 2],
                )],
            ),
        ]);
        assert_eq!(
            vip_services(&v, "net1"),
            vec![
                VipService {
                    vip: Ipv4Addr::new(10, 0, 1, 2),
                    backends: vec![
                        backend([10, 0, 1, 3], true),
                        backend([10, 0, 1, 4], true),
                        backend([10, 0, 1, 5], false),
                    ],
                },
                VipService {
                    vip: Ipv4Addr::new(10, 0, 1, 9),
                    backends: vec![backend([10, 0, 1, 6], true)],
                },
            ]
        );
        assert_eq!(vip_services(&v, "net2").len(), 1);
        assert!(vip_services(&v, "net3").is_empty());
    }

    #[test]
    fn a_moving_task_is_active_if_either_copy_is_and_clashing_vips_are_left_out() {
        let mut old = with_vip(
            record("a", "web", [10, 0, 1, 3], [10, 99, 0, 11]),
            [10, 0, 1, 2],
        );
        old.disabled = true;
        let new = with_vip(
            record("a2", "web", [10, 0, 1, 3], [10, 99, 0, 12]),
            [10, 0, 1, 2],
        );
        // A stale VIP that is now a task's address.
        let stale = with_vip(
            record("x", "old", [10, 0, 1, 4], [10, 99, 0, 12]),
            [10, 0, 1, 3],
        );
        let v = view(&[("net1", vec![old, new, stale])]);
        assert_eq!(
            vip_services(&v, "net1"),
            vec![VipService {
                vip: Ipv4Addr::new(10, 0, 1, 2),
                backends: vec![backend([10, 0, 1, 3], true)],
            }]
        );
    }

    #[test]
    fn a_task_record_carries_its_service_s_vip_on_that_network() {
        use shoal_manager::state::TaskNetwork;
        let net = |id: &str, ip: [u8; 4]| TaskNetwork {
            network_id: id.into(),
            ip: Ipv4Addr::from(ip),
        };
        let mut task: AssignedTask = serde_json::from_value(serde_json::json!({
            "id": "t1", "name": "web.1.t1", "service_id": "s1", "service_name": "web",
            "slot": 1, "desired_state": "running", "state": "running",
            "command": [], "env": [], "networks": [],
        }))
        .unwrap();
        task.vips = vec![net("net1", [10, 0, 1, 2]), net("net2", [10, 0, 2, 2])];
        let own: IpAddr = "10.99.0.11".parse().unwrap();
        let r = task_record(&task, "net2", Ipv4Addr::new(10, 0, 2, 5), "n1", own);
        assert_eq!(r.vip, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.ip, Ipv4Addr::new(10, 0, 2, 5));
        let r = task_record(&task, "net3", Ipv4Addr::new(10, 0, 3, 5), "n1", own);
        assert_eq!(r.vip, None, "no VIP on that network");
        task.dnsrr = true;
        let r = task_record(&task, "net1", Ipv4Addr::new(10, 0, 1, 5), "n1", own);
        assert_eq!(r.vip, None, "dnsrr services have no VIP");
    }

    fn key(id: u8, at: u64) -> ClusterKey {
        ClusterKey {
            id,
            secret: format!("{id:064x}"),
            created_at: at,
        }
    }

    #[test]
    fn gossip_keys_decode_and_the_settled_one_sends() {
        let (ring, tx) = gossip_keys(&[key(1, 100), key(2, 1000)], 1005).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring[1].1[31], 2);
        assert_eq!(tx, 1);
        let bad = ClusterKey {
            id: 3,
            secret: "zz".into(),
            created_at: 0,
        };
        assert!(gossip_keys(&[bad], 0).unwrap_err().contains("gossip key 3"));
        assert!(gossip_keys(&[], 0).is_err());
    }
}
