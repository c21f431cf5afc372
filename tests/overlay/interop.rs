//! Wire compatibility with the Linux kernel's own VXLAN: node 2 runs a vxlan
//! device on a bridge with static FDB entries, the others run shoald.

use crate::cluster::{Cluster, NetDef, TaskDef};
use crate::traffic::transfer;

#[test]
fn kernel_vxlan_node_and_shoal_nodes_talk_both_ways() {
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
        TaskDef {
            node: 2,
            net: 0,
            host: 30,
        }, // behind the kernel's vxlan
    ];
    let cluster = Cluster::start(3, &[NetDef::blue(false)], &tasks, &[2]).unwrap();
    let ip = |i: usize| cluster.tasks[i].ip;
    // ARP + ping, both directions, each shoal node with the kernel node.
    for shoal in [0, 1] {
        assert!(
            cluster.ping(shoal, ip(2)),
            "shoal task {shoal} -> kernel task"
        );
        assert!(
            cluster.ping(2, ip(shoal)),
            "kernel task -> shoal task {shoal}"
        );
    }
    // TCP both ways, checked by digest.
    let (k, s) = (&cluster.tasks[2], &cluster.tasks[0]);
    transfer(&s.ns, s.ip, &k.ns, 20 << 20, 5003, || Ok(())).unwrap();
    transfer(&k.ns, k.ip, &s.ns, 20 << 20, 5004, || Ok(())).unwrap();
    // The kernel node's ARP requests were answered by shoal, not flooded.
    let status = cluster.status(0).unwrap();
    assert!(status["frames"]["arp_replies"].as_u64().unwrap() > 0);
}
