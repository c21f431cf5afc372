//! The control calls on a running data plane. The network tests only bind a
//! UDP socket on loopback; the endpoint tests create TAP devices in network
//! namespaces (root, `ip` and `ping`, like the integration suites).

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_overlay::keys::NetworkKey;
use shoal_topology::{Namespace, Topology};

use super::*;
use crate::config::{DataPlaneConfig, Encryption};

const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12));

fn empty(workers: usize) -> DataPlane {
    let mut config = DataPlaneConfig::new(NODE);
    config.listen = SocketAddr::new(NODE, 0);
    config.workers = workers;
    DataPlane::start(config).expect("an empty data plane starts")
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn net(name: &str, vni: u32, encrypted: bool) -> NetworkConfig {
    NetworkConfig {
        name: name.into(),
        vni: Vni::new(vni).unwrap(),
        subnet: "10.0.0.0/24".parse().unwrap(),
        encryption: encrypted.then(|| Encryption {
            cipher: Cipher::default(),
            keys: KeyRing::new(vec![NetworkKey::new(1, [7; 32])], 1).unwrap(),
        }),
        peers: vec![PEER],
        remotes: Vec::new(),
    }
}

fn remote(last: u8) -> RemoteEndpoint {
    RemoteEndpoint {
        ip: ip(last),
        mac: MacAddr::from_ipv4(ip(last)),
        node: PEER,
    }
}

fn names(dp: &DataPlane) -> Vec<String> {
    dp.networks()
        .into_iter()
        .map(|(spec, _)| spec.name)
        .collect()
}

#[test]
fn a_data_plane_without_networks_or_endpoints_runs_and_reports() {
    let dp = empty(2);
    assert!(dp.networks().is_empty());
    assert_eq!(dp.lane_stats().len(), 2);
    assert_eq!(dp.stats(), crate::FrameCounts::default());
    assert_ne!(dp.local_addr().unwrap().port(), 0);
}

#[test]
fn adding_a_network_twice_is_idempotent_and_applies_the_updates() {
    let dp = empty(1);
    dp.add_network(net("blue", 4096, true)).unwrap();
    let mut again = net("blue", 4096, true);
    again.remotes = vec![remote(9)];
    dp.add_network(again).unwrap();
    let nets = dp.networks();
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].0.mtu, 1418);
    assert!(nets[0].0.encrypted);
    assert_eq!(nets[0].1.len(), 1, "the remote was added: {:?}", nets[0].1);
    assert_eq!(nets[0].1[0].location, Location::Remote(PEER));
}

#[test]
fn a_network_clash_names_the_setting() {
    let dp = empty(1);
    dp.add_network(net("blue", 4096, false)).unwrap();
    let err = |n: NetworkConfig| dp.add_network(n).unwrap_err().to_string();

    let e = err(net("blue", 4097, false));
    assert!(
        e.contains("\"blue\"") && e.contains("VNI 4096") && e.contains("VNI 4097"),
        "{e}"
    );
    let mut other_subnet = net("blue", 4096, false);
    other_subnet.subnet = "10.1.0.0/24".parse().unwrap();
    let e = err(other_subnet);
    assert!(e.contains("subnet 10.0.0.0/24"), "{e}");
    let e = err(net("blue", 4096, true));
    assert!(e.contains("no encryption"), "{e}");
    let e = err(net("red", 4096, false));
    assert!(e.contains("VNI 4096") && e.contains("blue"), "{e}");
    let mut own_peer = net("red", 4097, false);
    own_peer.peers = vec![NODE];
    let e = err(own_peer);
    assert!(e.contains("network[red].peers"), "{e}");
    assert_eq!(names(&dp), ["blue"], "refusals changed nothing");
}

#[test]
fn a_removed_network_is_gone_and_its_name_and_vni_are_free() {
    let dp = empty(1);
    dp.add_network(net("blue", 4096, true)).unwrap();
    dp.upsert_remote("blue", remote(9)).unwrap();
    assert!(dp.remove_network("blue").unwrap());
    assert!(dp.networks().is_empty());
    assert!(
        !dp.remove_network("blue").unwrap(),
        "unknown the second time"
    );
    assert!(matches!(
        dp.upsert_remote("blue", remote(9)),
        Err(DataPlaneError::UnknownNetwork(_))
    ));
    assert!(matches!(
        dp.set_keys(
            "blue",
            &KeyRing::new(vec![NetworkKey::new(1, [7; 32])], 1).unwrap()
        ),
        Err(DataPlaneError::UnknownNetwork(_))
    ));
    // Back with other settings, and plain: no remote and no keys survive.
    dp.add_network(net("blue", 5000, false)).unwrap();
    let nets = dp.networks();
    assert_eq!(nets[0].0.vni.get(), 5000);
    assert!(nets[0].1.is_empty());
    assert!(matches!(
        dp.set_keys(
            "blue",
            &KeyRing::new(vec![NetworkKey::new(1, [7; 32])], 1).unwrap()
        ),
        Err(DataPlaneError::NotEncrypted(_))
    ));
    dp.add_network(net("red", 4096, false)).unwrap();
    assert_eq!(names(&dp), ["blue", "red"]);
}

#[test]
fn peers_and_remotes_are_checked() {
    let dp = empty(1);
    dp.add_network(net("blue", 4096, false)).unwrap();
    dp.set_peers("blue", &[PEER, "10.99.0.13".parse().unwrap()])
        .unwrap();
    let e = dp.set_peers("blue", &[NODE]).unwrap_err().to_string();
    assert!(e.contains("own address"), "{e}");
    assert!(matches!(
        dp.set_peers("red", &[PEER]),
        Err(DataPlaneError::UnknownNetwork(_))
    ));
    let mut outside = remote(9);
    outside.ip = Ipv4Addr::new(10, 1, 0, 9);
    let e = dp.upsert_remote("blue", outside).unwrap_err().to_string();
    assert!(e.contains("outside the subnet"), "{e}");
}

#[test]
fn an_endpoint_on_an_unknown_network_or_outside_it_is_refused() {
    let dp = empty(1);
    let ep = LocalEndpointConfig {
        network: "blue".into(),
        netns: "/nonexistent".into(),
        ifname: "eth0".into(),
        ip: ip(2),
        mac: MacAddr::from_ipv4(ip(2)),
        handover: false,
    };
    assert!(matches!(
        dp.add_endpoint(ep.clone()),
        Err(DataPlaneError::UnknownNetwork(_))
    ));
    dp.add_network(net("blue", 4096, false)).unwrap();
    let e = dp
        .add_endpoint(LocalEndpointConfig {
            ip: Ipv4Addr::new(10, 0, 0, 255),
            ..ep.clone()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("broadcast"), "{e}");
    let e = dp.add_endpoint(ep).unwrap_err().to_string();
    assert!(e.contains("/nonexistent"), "{e}");
    assert!(dp.networks()[0].1.is_empty(), "nothing was left behind");
    assert!(!dp.remove_endpoint("blue", ip(2)).unwrap());
    assert!(!dp.remove_endpoint("red", ip(2)).unwrap());
}

// ---- with TAP devices in namespaces (root) ----

fn endpoint(ns: &Namespace, last: u8) -> LocalEndpointConfig {
    LocalEndpointConfig {
        network: "blue".into(),
        netns: ns.path().to_path_buf(),
        ifname: "eth0".into(),
        ip: ip(last),
        mac: MacAddr::from_ipv4(ip(last)),
        handover: false,
    }
}

fn ping(from: &Namespace, to: Ipv4Addr) -> bool {
    from.output(["ping", "-c", "1", "-W", "2", &to.to_string()])
        .is_ok_and(|o| o.status.success())
}

/// Whether `ifname` exists in `ns`; the kernel unregisters a closed TAP
/// shortly after its last queue closes, so a gone device is waited for.
fn has_link(ns: &Namespace, ifname: &str, expect: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let there = ns
            .output(["ip", "link", "show", ifname])
            .is_ok_and(|o| o.status.success());
        if there == expect || Instant::now() > deadline {
            return there;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn endpoints_come_and_go_while_the_data_plane_runs() {
    let topo = Topology::builder().nodes(0).clients(0).build().unwrap();
    let (a, b) = (
        topo.add_bare_namespace("a").unwrap(),
        topo.add_bare_namespace("b").unwrap(),
    );
    let dp = empty(2);
    dp.add_network(net("blue", 4096, false)).unwrap();
    dp.add_endpoint(endpoint(&a, 2)).unwrap();
    dp.add_endpoint(endpoint(&b, 3)).unwrap();
    assert!(ping(&a, ip(3)), "a reaches b on the same node");

    // Refusals leave the running endpoints and the namespace as they were.
    let e = dp.add_endpoint(endpoint(&b, 3)).unwrap_err().to_string();
    assert!(e.contains("IP 10.0.0.3"), "{e}");
    let mut same_name = endpoint(&b, 4);
    same_name.mac = MacAddr::from_ipv4(ip(4));
    let e = dp.add_endpoint(same_name).unwrap_err().to_string();
    assert!(e.contains("eth0 already exists"), "{e}");
    let e = dp.remove_network("blue").unwrap_err().to_string();
    assert!(e.contains("10.0.0.2") && e.contains("10.0.0.3"), "{e}");
    let e = dp.upsert_remote("blue", remote(3)).unwrap_err().to_string();
    assert!(e.contains("local endpoint"), "{e}");
    assert!(ping(&a, ip(3)), "still reachable after the refusals");

    assert!(dp.remove_endpoint("blue", ip(3)).unwrap());
    assert!(!has_link(&b, "eth0", false), "the TAP is gone from b");
    assert!(!ping(&a, ip(3)));
    assert!(!dp.remove_endpoint("blue", ip(3)).unwrap());
    assert_eq!(dp.networks()[0].1.len(), 1);

    dp.add_endpoint(endpoint(&b, 3)).unwrap();
    assert!(ping(&a, ip(3)), "b is back");
    assert!(ping(&b, ip(2)));

    drop(dp);
    assert!(
        !has_link(&a, "eth0", false),
        "dropping the data plane removes a's TAP"
    );
    assert!(!has_link(&b, "eth0", false), "and b's");
}

#[test]
fn an_endpoint_can_live_in_a_namespace_named_by_a_process() {
    let topo = Topology::builder().nodes(0).clients(0).build().unwrap();
    let (a, b) = (
        topo.add_bare_namespace("a").unwrap(),
        topo.add_bare_namespace("b").unwrap(),
    );
    // The task: a process in b, whose namespace is reached through /proc.
    let mut sleep = b.command("sleep");
    sleep.arg("60");
    let task = b.spawn(sleep).unwrap();
    let ino = std::fs::metadata(b.path()).unwrap().ino();
    let proc_ns = PathBuf::from(format!("/proc/{}/ns/net", task.id()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&proc_ns).map(|m| m.ino()).ok() != Some(ino) {
        assert!(Instant::now() < deadline, "the task never entered b");
        std::thread::sleep(Duration::from_millis(10));
    }

    let dp = empty(1);
    dp.add_network(net("blue", 4096, true)).unwrap();
    dp.add_endpoint(endpoint(&a, 2)).unwrap();
    dp.add_endpoint(LocalEndpointConfig {
        netns: proc_ns,
        ..endpoint(&b, 3)
    })
    .unwrap();
    assert!(
        has_link(&b, "eth0", true),
        "the TAP is in the task's namespace"
    );
    assert!(ping(&b, ip(2)));
    assert!(dp.remove_endpoint("blue", ip(3)).unwrap());
    assert!(!has_link(&b, "eth0", false));
    assert!(dp.remove_endpoint("blue", ip(2)).unwrap());
    assert!(
        dp.remove_network("blue").unwrap(),
        "no endpoint is attached any more"
    );
}
