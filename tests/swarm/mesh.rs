//! The routing mesh for real: a published port answers on every node, for
//! a client outside the swarm, whether or not the node runs a task, and
//! connections spread over the service's tasks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::discovery::gossip_view;
use crate::tasks::running;
use crate::Swarm;

/// One HTTP GET to `addr` from inside the client namespace; the `Task:`
/// line of the answer (`shoal whoami`).
fn get_from_client(s: &Swarm, addr: SocketAddr) -> Result<String> {
    let body = raw_get_from_client(s, addr)?;
    body.lines()
        .find_map(|l| l.strip_prefix("Task: "))
        .map(str::to_string)
        .with_context(|| format!("no Task line from {addr}: {body:?}"))
}

/// The done-when of the mesh issue, first part: `web` has 2 tasks on nodes
/// 1 and 2; a client outside the swarm reaches it through port 5000 of
/// every node, node 0 included, which runs none; 300 requests spread over
/// the nodes reach both tasks, each at least 30% of the time.
#[test]
fn a_published_port_answers_on_every_node_and_spreads_over_the_tasks() {
    let s = Swarm::new_with(3, 1, &[]).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=node0",
            "-p",
            "5000:80",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
        ],
    );
    s.wait_for(Duration::from_secs(30), "2 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from((s.addr(i), 5000)))
        .collect();
    let node = |i: usize| addrs[i];
    s.wait_for(Duration::from_secs(20), "port 5000 on every node", || {
        for i in 0..3 {
            get_from_client(&s, node(i))?;
        }
        Ok(true)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    // Spread is measured once every node's mesh knows both tasks (a port
    // answers as soon as its node knows one): on the ingress network, the
    // 2 tasks and the 3 nodes' ingress sandboxes.
    let known = std::time::Instant::now();
    s.wait_for(
        Duration::from_secs(20),
        "both tasks in every node's view",
        || {
            Ok((0..3).all(|i| {
                gossip_view(&s, i).is_ok_and(|v| v.get("ingress").is_some_and(|ips| ips.len() == 5))
            }))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!(
        "every node knew both tasks {:.2} s after port 5000 answered everywhere",
        known.elapsed().as_secs_f64()
    );

    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_node_task: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for n in 0..300 {
        let i = n % 3;
        let task = get_from_client(&s, node(i))
            .unwrap_or_else(|e| panic!("request {n} via node {i}: {e:#}\n{}", s.logs()));
        *per_task.entry(task.clone()).or_default() += 1;
        *per_node_task.entry((i, task)).or_default() += 1;
    }
    println!("300 requests over 3 nodes: {per_task:?}; by node: {per_node_task:?}");
    assert_eq!(per_task.len(), 2, "{per_task:?}");
    for (task, n) in &per_task {
        assert!(*n >= 90, "{task} answered {n} of 300: {per_task:?}");
        assert!(task.starts_with("web."), "{task}");
    }
    // Node 0 runs no task and still reached both.
    let via0: Vec<_> = per_node_task.keys().filter(|(i, _)| *i == 0).collect();
    assert_eq!(via0.len(), 2, "{per_node_task:?}");
}

/// Scaling down takes the task out of the rotation: no request fails after
/// it has left; a node whose daemon crashes: failures only while gossip has
/// not yet declared it down, none after.
#[test]
fn the_mesh_follows_scaling_and_a_crashed_node() {
    let mut s = Swarm::new_with(3, 1, &[]).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "5000:80",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
        ],
    );
    s.wait_for(Duration::from_secs(30), "3 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 3)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| SocketAddr::from((s.addr(i), 5000)))
        .collect();
    let node = |i: usize| addrs[i];
    s.wait_for(Duration::from_secs(20), "port 5000 on node 0", || {
        get_from_client(&s, node(0)).map(|_| true)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));

    s.shoal_ok(0, &["service", "scale", "--detach", "web=2"]);
    s.wait_for(Duration::from_secs(20), "2 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    // Once the task is gone every request succeeds, through every node.
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..60 {
        get_from_client(&s, node(n % 3))
            .unwrap_or_else(|e| panic!("request {n} after scale down: {e:#}\n{}", s.logs()));
    }

    // Crash node 2 (SIGKILL): requests through nodes 0 and 1 may fail only
    // until gossip has declared it down.
    s.crash(2);
    let crashed = std::time::Instant::now();
    let mut last_failure = None;
    let mut n = 0;
    while crashed.elapsed() < Duration::from_secs(8) {
        n += 1;
        if get_from_client(&s, node(n % 2)).is_err() {
            last_failure = Some(crashed.elapsed());
        }
    }
    println!("after node 2 crashed, the last failed request was at {last_failure:?}");
    if let Some(t) = last_failure {
        assert!(t < Duration::from_secs(4), "failures went on until {t:?}");
    }
    for n in 0..40 {
        get_from_client(&s, node(n % 2))
            .unwrap_or_else(|e| panic!("request {n} after the crash: {e:#}\n{}", s.logs()));
    }
}

/// One datagram to `addr` from inside the client namespace; the answer.
fn udp_from_client(s: &Swarm, addr: SocketAddr) -> Result<String> {
    s.topo
        .client(0)
        .ns()
        .run(move || -> Result<String> {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_secs(2)))?;
            sock.send_to(b"who?", addr)?;
            let mut buf = [0u8; 2048];
            let (n, _) = sock.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .context("enter the client namespace")?
}

/// A UDP port published through the mesh answers from every node; a TCP
/// port published with `proxy-protocol=v2` hands the task the client's
/// real address (Docker's mesh cannot: moby #25526).
#[test]
fn udp_ports_and_the_proxy_protocol_through_the_mesh() {
    let s = Swarm::new_with(3, 1, &[]).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "echo",
            "--replicas",
            "2",
            "--constraint",
            "node.hostname!=node0",
            "-p",
            "5353:5353/udp",
            "-p",
            "published=5080,target=80,proxy-protocol=v2",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
            "--udp-port",
            "5353",
            "--proxy-protocol",
        ],
    );
    s.wait_for(Duration::from_secs(30), "2 running tasks", || {
        Ok(running(&s, 0, "echo")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let client = s.topo.client(0).addr();
    for i in 0..3 {
        let udp = SocketAddr::from((s.addr(i), 5353));
        let mut last = String::new();
        let answered = (0..50).any(|_| match udp_from_client(&s, udp) {
            Ok(a) => {
                last = a;
                true
            }
            Err(e) => {
                last = format!("{e:#}");
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        });
        assert!(
            answered && last.contains("Task: echo."),
            "UDP via node {i}: {last}\n{}",
            s.logs()
        );
        assert!(last.contains("RemoteAddr: 10."), "{last}");

        let tcp = SocketAddr::from((s.addr(i), 5080));
        s.wait_for(Duration::from_secs(10), "the proxied port", || {
            get_from_client(&s, tcp).map(|_| true)
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
        let body = raw_get_from_client(&s, tcp).unwrap();
        assert!(
            body.contains(&format!("RemoteAddr: {client}:")),
            "via node {i}, the task should see the client {client}: {body}"
        );
    }
}

/// The whole answer of one HTTP GET from the client namespace.
pub(crate) fn raw_get_from_client(s: &Swarm, addr: SocketAddr) -> Result<String> {
    s.topo
        .client(0)
        .ns()
        .run(move || -> Result<String> {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET / HTTP/1.0\r\nHost: mesh\r\n\r\n")?;
            let mut out = String::new();
            c.read_to_string(&mut out)?;
            Ok(out)
        })
        .context("enter the client namespace")?
}
