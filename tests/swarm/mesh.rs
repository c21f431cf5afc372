//! The routing mesh for real: a published port answers on every node, for
//! a client outside the swarm, whether or not the node runs a task, and
//! connections spread over the service's tasks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::discovery::gossip_view;
use crate::http::http;
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
/// the nodes reach both tasks, each at least 30% of the time. Node 0's
/// data plane runs one forwarding worker (`--dataplane-workers`), the
/// others one per core: the overlay works between the two.
#[test]
fn a_published_port_answers_on_every_node_and_spreads_over_the_tasks() {
    let s = Swarm::new_full(3, 1, &[], &[(0, "SHOAL_DATAPLANE_WORKERS", "1")]).unwrap();
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
    // ... through a data plane of one lane, as it was told.
    let (code, body) = http(&s.sock(0), "GET", "/v1/dataplane", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["lanes"].as_array().map(Vec::len), Some(1), "{body}");
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

/// The first answer to a datagram to `addr`, trying up to `tries` times
/// 0.2 s apart (the port may not be open yet); the last error otherwise.
fn udp_answer(s: &Swarm, addr: SocketAddr, tries: usize) -> Result<String> {
    let mut last = Err(anyhow::anyhow!("no try"));
    for _ in 0..tries {
        last = udp_from_client(s, addr);
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
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
        let last = udp_answer(&s, udp, 50).unwrap_or_else(|e| format!("{e:#}"));
        assert!(
            last.contains("Task: echo."),
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

/// Host-mode publishing (`mode=host`): port 6000 (TCP) and 6053 (UDP)
/// answer only on the nodes that run a task of the service, each with its
/// own task (reached at its address on its overlay network), not through
/// the mesh; a node without a task refuses; after a scale down, the node
/// whose task left stops answering. A task on no network is reached on its
/// loopback.
#[test]
fn host_mode_ports_answer_with_the_local_task_only() {
    let s = Swarm::new_with(3, 1, &[]).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "front"]);
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "bare",
            "--constraint",
            "node.hostname==node0",
            "-p",
            "published=6100,target=8080,mode=host",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "8080",
        ],
    );
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
            "--replicas-max-per-node",
            "1",
            "--constraint",
            "node.hostname!=node0",
            "--network",
            "front",
            "-p",
            "published=6000,target=80,mode=host",
            "-p",
            "published=6053,target=5353,protocol=udp,mode=host",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
            "--udp-port",
            "5353",
        ],
    );
    s.wait_for(Duration::from_secs(30), "2 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let tcp = |i: usize| SocketAddr::from((s.addr(i), 6000));
    let udp = |i: usize| SocketAddr::from((s.addr(i), 6053));
    for i in [1, 2] {
        s.wait_for(Duration::from_secs(20), "host port 6000", || {
            raw_get_from_client(&s, tcp(i)).map(|_| true)
        })
        .unwrap_or_else(|e| panic!("node {i}: {e:#}\n{}", s.logs()));
        // Every answer, however many, is the node's own task.
        for _ in 0..10 {
            let body = raw_get_from_client(&s, tcp(i)).unwrap();
            assert!(
                body.contains(&format!("Node: node{i}\n")) && body.contains("Task: web."),
                "node {i} answered for another node: {body}"
            );
        }
        let last = udp_answer(&s, udp(i), 25).unwrap_or_else(|e| format!("{e:#}"));
        assert!(
            last.contains(&format!("Node: node{i}\n")),
            "UDP via node {i}: {last}\n{}",
            s.logs()
        );
    }
    // Node 0 runs no task of web: nothing listens there on its ports.
    let refused = raw_get_from_client(&s, tcp(0)).unwrap_err();
    assert!(format!("{refused:#}").contains("refused"), "{refused:#}");
    assert!(udp_from_client(&s, udp(0)).is_err());
    // bare's task on node 0 has no network: its port reaches its loopback.
    let bare = SocketAddr::from((s.addr(0), 6100));
    s.wait_for(Duration::from_secs(20), "host port 6100", || {
        raw_get_from_client(&s, bare).map(|_| true)
    })
    .unwrap_or_else(|e| panic!("bare: {e:#}\n{}", s.logs()));
    let body = raw_get_from_client(&s, bare).unwrap();
    assert!(
        body.contains("Node: node0\n") && body.contains("Task: bare."),
        "{body}"
    );
    assert!(raw_get_from_client(&s, SocketAddr::from((s.addr(1), 6100))).is_err());

    s.shoal_ok(0, &["service", "scale", "--detach", "web=1"]);
    s.wait_for(Duration::from_secs(20), "1 running task", || {
        Ok(running(&s, 0, "web")?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let kept = running(&s, 0, "web").unwrap().remove(0);
    let (stays, left) = if kept == "node1" { (1, 2) } else { (2, 1) };
    s.wait_for(
        Duration::from_secs(10),
        "the port closed where the task left",
        || {
            Ok(raw_get_from_client(&s, tcp(left))
                .is_err_and(|e| format!("{e:#}").contains("refused")))
        },
    )
    .unwrap_or_else(|e| panic!("node {left}: {e:#}\n{}", s.logs()));
    let body = raw_get_from_client(&s, tcp(stays)).unwrap();
    assert!(body.contains(&format!("Node: node{stays}\n")), "{body}");
}

/// A host-mode port something else holds on the node fails the task with
/// an error naming port and task (Docker's "host-mode port already in
/// use"); once the port is free, the replacement task runs and answers.
#[test]
fn a_host_mode_port_taken_on_the_node_fails_the_task_until_it_is_free() {
    let s = Swarm::new_with(2, 1, &[]).unwrap();
    s.form(1).unwrap();
    let blocker = s
        .topo
        .node(1)
        .ns()
        .run(|| std::net::TcpListener::bind("0.0.0.0:6200"))
        .unwrap()
        .unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--constraint",
            "node.hostname==node1",
            "-p",
            "published=6200,target=80,mode=host",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
        ],
    );
    s.wait_for(Duration::from_secs(30), "a task failed on the port", || {
        Ok(crate::tasks::tasks(&s, 0, "web")?.iter().any(|t| {
            t["task"]["status"]["err"].as_str().is_some_and(|e| {
                e.contains("host-mode port 6200/tcp already in use on this node (task web.1.")
            })
        }))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    assert!(running(&s, 0, "web").unwrap().is_empty());

    drop(blocker);
    let port = SocketAddr::from((s.addr(1), 6200));
    s.wait_for(Duration::from_secs(30), "a replacement answers", || {
        Ok(get_from_client(&s, port).is_ok_and(|t| t.starts_with("web.1.")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
}
