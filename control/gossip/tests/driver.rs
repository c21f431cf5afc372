//! Five real drivers on loopback UDP/TCP. Bounded waits only; the strict
//! timing claims are checked in virtual time (tests/sim.rs).

use shoal_gossip::core::Timings;
use shoal_gossip::driver::{GossipConfig, GossipHandle};
use shoal_gossip::record::{EndpointRecord, PublishedPort};
use shoal_gossip::stats::DropReason;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [0x5a; 32];

fn start(i: usize, key: [u8; 32]) -> GossipHandle {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    GossipHandle::start(GossipConfig {
        node_id: format!("node-{i}"),
        bind: any,
        advertise: any,
        keys: vec![(1, key)],
        tx_key: 1,
        timings: Timings::default(),
    })
    .expect("start")
}

fn record(task: &str) -> EndpointRecord {
    EndpointRecord {
        task_id: task.into(),
        task_name: format!("web.1.{task}"),
        service_name: "web".into(),
        service_id: "svc".into(),
        vip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        ip: Ipv4Addr::new(10, 0, 0, 3),
        mac: [2, 66, 10, 0, 0, 3],
        node_id: String::new(),
        node_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ports: vec![PublishedPort {
            protocol: "tcp".into(),
            target: 80,
            published: 8080,
        }],
        aliases: vec!["www".into()],
        dnsrr: false,
        disabled: false,
    }
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

#[tokio::test]
async fn five_nodes_publish_fail_and_wrong_key() {
    let nodes: Vec<GossipHandle> = (0..5).map(|i| start(i, KEY)).collect();
    let seed = nodes[0].local_addr();
    for n in &nodes {
        n.join(vec![seed]).unwrap();
        n.join_network("net-a").unwrap();
    }
    wait_for("membership", Duration::from_secs(10), || {
        nodes.iter().all(|n| n.members().len() == 4)
    })
    .await;

    nodes[1].publish("net-a", record("t1")).unwrap();
    wait_for("publish seen by all", Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.snapshot()
                .endpoints("net-a")
                .iter()
                .any(|r| r.task_id == "t1")
        })
    })
    .await;
    let seen = nodes[3].snapshot();
    assert_eq!(seen.endpoints("net-a")[0].node_id, "node-1");

    // Shut one down: its endpoints leave everyone's view.
    let gone = nodes.into_iter().enumerate();
    let mut rest = Vec::new();
    for (i, n) in gone {
        if i == 1 {
            n.wait().await;
        } else {
            rest.push(n);
        }
    }
    wait_for(
        "endpoints of stopped node gone",
        Duration::from_secs(10),
        || {
            rest.iter()
                .all(|n| n.snapshot().endpoints("net-a").is_empty())
        },
    )
    .await;

    // A node with the wrong key cannot join, and its traffic is counted as refused.
    let intruder = start(9, [0x11; 32]);
    intruder.join(vec![seed]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        intruder.members().is_empty(),
        "intruder joined: {:?}",
        intruder.members()
    );
    assert!(rest
        .iter()
        .all(|n| n.members().iter().all(|m| m.node_id != "node-9")));
    let drops = rest[0].stats().drops[&DropReason::BadTag];
    assert!(drops > 0, "seed counted no bad tags");

    // An oversize frame is refused and counted.
    let mut s = tokio::net::TcpStream::connect(seed).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, &u32::MAX.to_be_bytes())
        .await
        .unwrap();
    wait_for("oversize frame counted", Duration::from_secs(10), || {
        rest[0].stats().drops[&DropReason::FrameTooLarge] > 0
    })
    .await;
    for n in rest {
        n.wait().await;
    }
    intruder.wait().await;
}
