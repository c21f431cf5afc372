//! Reachability, bulk transfer and isolation across three shoal nodes.

use crate::cluster::{uniform_tasks, Cluster, NetDef, TaskDef};
use crate::traffic::transfer;

const MB: u64 = 1 << 20;

fn all_pairs_ping(cluster: &Cluster) {
    let mut failed = Vec::new();
    for from in 0..cluster.tasks.len() {
        for to in 0..cluster.tasks.len() {
            if from != to && !cluster.ping(from, cluster.tasks[to].ip) {
                failed.push((cluster.tasks[from].ip, cluster.tasks[to].ip));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "pings that failed (from, to): {failed:?}"
    );
}

fn three_nodes_two_tasks_each(encrypted: bool) {
    let cluster = Cluster::start(3, &[NetDef::blue(encrypted)], &uniform_tasks(3, 2), &[]).unwrap();
    all_pairs_ping(&cluster);

    // 200 MB between tasks on different nodes (node 0 -> node 2), checked by digest.
    let (a, b) = (&cluster.tasks[0], &cluster.tasks[5]);
    assert_ne!(a.node, b.node);
    let report = transfer(&b.ns, b.ip, &a.ns, 200 * MB, 5001, || Ok(())).unwrap();
    assert_eq!(report.bytes, 200 * MB);
    eprintln!(
        "200 MB {} transfer in {:?}",
        if encrypted { "encrypted" } else { "plain" },
        report.elapsed
    );

    // ARP never crossed the underlay unanswered, and nothing was lost to auth.
    for node in 0..3 {
        let drops = cluster.drops(node).unwrap();
        assert_eq!(drops["auth_failure"], 0, "node {node}: {drops:?}");
        assert_eq!(drops["replay"], 0, "node {node}: {drops:?}");
        let status = cluster.status(node).unwrap();
        assert!(
            status["frames"]["arp_replies"].as_u64().unwrap() > 0,
            "node {node} answered no ARP"
        );
        let mtu = status["networks"][0]["mtu"].as_u64().unwrap();
        assert_eq!(mtu, if encrypted { 1418 } else { 1450 });
    }
}

#[test]
fn plain_three_nodes_every_pair_pings_and_200mb_arrives_intact() {
    three_nodes_two_tasks_each(false);
}

#[test]
fn encrypted_three_nodes_every_pair_pings_and_200mb_arrives_intact() {
    three_nodes_two_tasks_each(true);
}

#[test]
fn two_networks_on_the_same_nodes_are_isolated() {
    // Same subnet on purpose: only the VNI separates them.
    let red = NetDef {
        name: "red",
        vni: 4097,
        prefix: [10, 0, 0],
        encrypted: false,
    };
    let tasks = [
        TaskDef {
            node: 0,
            net: 0,
            host: 10,
        }, // blue on node 0
        TaskDef {
            node: 1,
            net: 0,
            host: 11,
        }, // blue on node 1
        TaskDef {
            node: 1,
            net: 1,
            host: 20,
        }, // red on node 1
        TaskDef {
            node: 0,
            net: 1,
            host: 21,
        }, // red on node 0
    ];
    let cluster = Cluster::start(2, &[NetDef::blue(false), red], &tasks, &[]).unwrap();
    assert!(
        cluster.ping(0, cluster.tasks[1].ip),
        "blue to blue across nodes"
    );
    assert!(
        cluster.ping(2, cluster.tasks[3].ip),
        "red to red across nodes"
    );
    assert!(
        !cluster.ping(2, cluster.tasks[0].ip),
        "red reached blue on another node"
    );
    assert!(
        !cluster.ping(3, cluster.tasks[0].ip),
        "red reached blue on the same node"
    );
    assert!(!cluster.ping(0, cluster.tasks[2].ip), "blue reached red");
    let drops = cluster.drops(0).unwrap();
    assert!(drops["arp_unknown_target"] > 0, "{drops:?}");
}

#[test]
fn sealed_frames_on_a_plain_network_and_writes_to_a_downed_endpoint_are_counted() {
    let cluster = Cluster::start(2, &[NetDef::blue(false)], &uniform_tasks(2, 1), &[]).unwrap();
    let t0 = &cluster.tasks[0];
    assert!(cluster.ping(1, t0.ip));

    // A sealed frame (I|E flags, key 1) for plain VNI 4096, from node 1's address.
    let before = cluster.drops(0).unwrap();
    let node1 = cluster.topo.node(1);
    let target = std::net::SocketAddr::from((cluster.topo.node(0).addr(), 4789));
    node1
        .ns()
        .run(|| {
            let sock = std::net::UdpSocket::bind((node1.addr(), 0)).unwrap();
            let mut d = vec![0x48, 1, 0, 0, 0x00, 0x10, 0x00, 0];
            d.extend([0u8; 16 + 60 + 16]);
            sock.send_to(&d, target).unwrap();
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while cluster.drops(0).unwrap()["sealed_on_plain"] == before["sealed_on_plain"]
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        cluster.drops(0).unwrap()["sealed_on_plain"],
        before["sealed_on_plain"] + 1
    );

    // The task on node 0 takes its interface down: shoald's writes to the TAP
    // fail (EIO), and frames still sent to it are counted, not lost silently.
    // (Deleting the task's namespace would not do it: the TAP's own socket
    // keeps the namespace alive while shoald holds it.)
    t0.ns.output(["ip", "link", "set", "eth0", "down"]).unwrap();
    assert!(!cluster.ping(1, t0.ip));
    let drops = cluster.drops(0).unwrap();
    assert!(drops["io_error"] > 0, "{drops:?}");
    assert!(cluster.status(0).is_ok(), "the daemon keeps serving");
}

/// With four lanes per node, sixteen parallel flows spread over several TAP
/// queues on the sending node and several sockets on the receiving one, and
/// every byte of every flow arrives in order.
#[test]
fn four_lanes_carry_parallel_flows_intact_and_spread_them() {
    let tasks = [
        TaskDef {
            node: 0,
            net: 0,
            host: 10,
        },
        TaskDef {
            node: 1,
            net: 0,
            host: 20,
        },
    ];
    let cluster =
        Cluster::start_with_workers(2, &[NetDef::blue(true)], &tasks, &[], Some(4)).unwrap();
    let (a, b) = (&cluster.tasks[0], &cluster.tasks[1]);
    assert!(cluster.ping(0, b.ip));
    std::thread::scope(|scope| {
        let flows: Vec<_> = (0..16u16)
            .map(|i| scope.spawn(move || transfer(&b.ns, b.ip, &a.ns, 8 * MB, 6000 + i, || Ok(()))))
            .collect();
        for (i, f) in flows.into_iter().enumerate() {
            let report = f
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("flow {i}: {e:#}"));
            assert_eq!(report.bytes, 8 * MB, "flow {i}");
        }
    });
    let busy = |node: usize, field: &str| -> usize {
        let lanes = cluster.status(node).unwrap()["lanes"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(lanes.len(), 4, "node {node}: {lanes:?}");
        lanes
            .iter()
            .filter(|l| l[field].as_u64().unwrap() > 20)
            .count()
    };
    // The kernel hashes 16 flows over 4 TAP queues, and the receiving group
    // maps the sending lanes one to one by source port: all on one lane would
    // mean the lanes are not spreading (odds of chance below 1e-8).
    assert!(
        busy(0, "endpoint_rx") >= 2,
        "sending node read from one TAP queue only"
    );
    assert!(
        busy(1, "underlay_rx") >= 2,
        "receiving node read from one socket only"
    );
    for node in 0..2 {
        let drops = cluster.drops(node).unwrap();
        assert_eq!(drops["auth_failure"], 0, "node {node}: {drops:?}");
        assert_eq!(drops["replay"], 0, "node {node}: {drops:?}");
    }
}
