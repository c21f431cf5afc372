//! Key rotation under load, in Docker's order: every node first accepts the new
//! key, then every node sends with it, then the old key is retired.

use std::time::Duration;

use crate::cluster::{uniform_tasks, Cluster, NetDef, KEY1, KEY2};
use crate::traffic::transfer;

#[test]
fn rotating_keys_during_a_transfer_loses_nothing() {
    let cluster = Cluster::start(2, &[NetDef::blue(true)], &uniform_tasks(2, 1), &[]).unwrap();
    let (a, b) = (&cluster.tasks[0], &cluster.tasks[1]);
    let step = Duration::from_millis(300);
    let report = transfer(&b.ns, b.ip, &a.ns, 400 << 20, 5002, || {
        cluster.set_keys("blue", &[(1, KEY1), (2, KEY2)], 1)?;
        std::thread::sleep(step);
        cluster.set_keys("blue", &[(1, KEY1), (2, KEY2)], 2)?;
        std::thread::sleep(step);
        cluster.set_keys("blue", &[(2, KEY2)], 2)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(report.bytes, 400 << 20);

    // Only key 2 is left: traffic still flows, so it is what the nodes send with.
    assert!(cluster.ping(0, b.ip) && cluster.ping(1, a.ip));
    for node in 0..2 {
        let drops = cluster.drops(node).unwrap();
        for reason in ["auth_failure", "unknown_key", "replay", "stale_session"] {
            assert_eq!(drops[reason], 0, "node {node} counted {reason}: {drops:?}");
        }
    }
}

#[test]
fn a_node_that_lost_the_key_cannot_read_the_network() {
    let cluster = Cluster::start(2, &[NetDef::blue(true)], &uniform_tasks(2, 1), &[]).unwrap();
    let b_ip = cluster.tasks[1].ip;
    assert!(cluster.ping(0, b_ip));
    // Node 0 alone jumps to key 2, skipping the "accept first" step, with the CLI.
    let sock = cluster.sockets[0].as_ref().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "dataplane",
            "keys",
            "blue",
            "--key",
            &format!("2:{KEY2}"),
            "--tx",
            "2",
        ])
        .arg("--control")
        .arg(sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cluster.ping(0, b_ip));
    // Node 1's counters, read with the CLI as an operator would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["dataplane", "status", "--control"])
        .arg(cluster.sockets[1].as_ref().unwrap())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let unknown_key: u64 = table
        .lines()
        .find_map(|l| l.strip_prefix("unknown_key"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no unknown_key row in:\n{table}"));
    assert!(unknown_key > 0, "{table}");
    assert_eq!(cluster.drops(1).unwrap()["unknown_key"], unknown_key);
}
