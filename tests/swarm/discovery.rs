//! Service discovery for real: nodes gossip their tasks' endpoints on 7946,
//! each node's data plane and each task's DNS server at 127.0.0.11 follow
//! what gossip says, a dead node's endpoints leave everywhere within the
//! detection window, and a healed partition converges with nothing stale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::http::http;
use crate::tasks::{full_name, pid_of, running, tasks};
use crate::Swarm;

/// The available endpoints node `i` knows through gossip: network name ->
/// addresses.
pub(crate) fn gossip_view(s: &Swarm, i: usize) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>> {
    let (code, body) = http(&s.sock(i), "GET", "/v1/discovery", None)?;
    if code != 200 {
        bail!("node {i}: GET /v1/discovery: HTTP {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    let mut out = BTreeMap::new();
    for n in v["networks"].as_array().context("no networks")? {
        let ips = n["endpoints"]
            .as_array()
            .context("no endpoints")?
            .iter()
            .filter_map(|e| e["ip"].as_str()?.parse().ok())
            .collect();
        out.insert(n["name"].as_str().unwrap_or("").to_string(), ips);
    }
    Ok(out)
}

/// The addresses node `i`'s data plane forwards to on any network (its own
/// tasks and the remote ones).
fn forwarding(s: &Swarm, i: usize) -> Result<BTreeSet<Ipv4Addr>> {
    let (code, body) = http(&s.sock(i), "GET", "/v1/dataplane", None)?;
    if code == 503 {
        return Ok(BTreeSet::new());
    }
    if code != 200 {
        bail!("node {i}: GET /v1/dataplane: HTTP {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["networks"]
        .as_array()
        .context("no networks")?
        .iter()
        .flat_map(|n| n["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["ip"].as_str()?.parse().ok())
        .collect())
}

/// IPv4 addresses of `name` as resolved inside the task whose process is
/// `pid` (its network and mount namespaces, so its resolv.conf: the
/// embedded DNS). Empty when the name does not resolve.
pub(crate) fn resolve_in(pid: u32, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let out = std::process::Command::new("timeout")
        .args(["10", "nsenter", "-t", &pid.to_string(), "-n", "-m"])
        .args(["getent", "ahostsv4", name])
        .output()?;
    // getent: 2 = not found.
    if out.status.code() == Some(2) {
        return Ok(BTreeSet::new());
    }
    if !out.status.success() {
        bail!(
            "getent ahostsv4 {name} in pid {pid}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

/// The name the embedded DNS gives address `ip` (PTR), inside task `pid`.
fn reverse_in(pid: u32, ip: Ipv4Addr) -> Result<String> {
    let out = std::process::Command::new("timeout")
        .args(["10", "nsenter", "-t", &pid.to_string(), "-n", "-m"])
        .args(["getent", "hosts", &ip.to_string()])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string())
}

/// The first address of each running task of `service` (network order).
pub(crate) fn task_ips(s: &Swarm, service: &str) -> Result<BTreeMap<String, Ipv4Addr>> {
    Ok(tasks(s, 0, service)?
        .iter()
        .filter(|t| {
            t["task"]["desired_state"] == "running" && t["task"]["status"]["state"] == "running"
        })
        .filter_map(|t| {
            Some((
                full_name(t),
                t["task"]["networks"][0]["ip"].as_str()?.parse().ok()?,
            ))
        })
        .collect())
}

/// The node hostname of each running task of `service`, by full name.
fn task_nodes(s: &Swarm, service: &str) -> Result<BTreeMap<String, String>> {
    Ok(tasks(s, 0, service)?
        .iter()
        .filter(|t| t["task"]["status"]["state"] == "running")
        .map(|t| (full_name(t), t["node"].as_str().unwrap_or("").to_string()))
        .collect())
}

pub(crate) fn create(s: &Swarm, args: &[&str]) {
    let mut all = vec!["service", "create", "--detach"];
    all.extend_from_slice(args);
    s.shoal_ok(0, &all);
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns how long
/// it took.
fn time_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// The done-when of the gossip issue on 5 nodes: a new endpoint reaches
/// every node's gossip view, and a killed node's endpoints leave every
/// other node's view, forwarding tables and DNS answers.
#[test]
fn endpoints_spread_in_a_second_and_leave_with_a_dead_node() {
    let mut s = Swarm::new(5).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "backend"]);
    create(
        &s,
        &[
            "--name",
            "web",
            "--mode",
            "global",
            "--network",
            "backend",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "5 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 5)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let web = task_ips(&s, "web").unwrap();
    let all: BTreeSet<Ipv4Addr> = web.values().copied().collect();
    s.wait_for(
        Duration::from_secs(10),
        "every node knows 5 endpoints",
        || Ok((0..5).all(|i| gossip_view(&s, i).is_ok_and(|v| v.get("backend") == Some(&all)))),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));

    // One more task, on node 3: from the moment its node publishes it to
    // the moment every node has it.
    create(
        &s,
        &[
            "--name",
            "extra",
            "--network",
            "backend",
            "--constraint",
            "node.hostname==node3",
            "--",
            "sleep",
            "3000",
        ],
    );
    let seen_on_3 = time_until(Duration::from_secs(30), "node3 to publish extra", || {
        gossip_view(&s, 3).is_ok_and(|v| v.get("backend").is_some_and(|e| e.len() == 6))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let spread = time_until(Duration::from_secs(10), "every node to know extra", || {
        (0..5).all(|i| gossip_view(&s, i).is_ok_and(|v| v["backend"].len() == 6))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!(
        "a new endpoint was on every node {:.3} s after its node had it ({:.2} s after create)",
        spread.as_secs_f64(),
        (seen_on_3 + spread).as_secs_f64()
    );
    let extra = task_ips(&s, "extra").unwrap();
    let all: BTreeSet<Ipv4Addr> = all
        .union(&extra.values().copied().collect())
        .copied()
        .collect();

    // Crash node 4's daemon (SIGKILL: it says goodbye to no one): its task
    // dies with it, and the others drop its endpoint from gossip,
    // forwarding and DNS once gossip declares the node down.
    let nodes = task_nodes(&s, "web").unwrap();
    let (dead_name, _) = nodes.iter().find(|(_, n)| *n == "node4").unwrap();
    let dead_ip = web[dead_name];
    let (asker, _) = nodes.iter().find(|(_, n)| *n == "node0").unwrap();
    let asker = pid_of(asker).unwrap();
    let before = resolve_in(asker, "tasks.web").unwrap();
    assert!(before.contains(&dead_ip), "tasks.web = {before:?}");
    assert!(forwarding(&s, 0).unwrap().contains(&dead_ip));
    let killed = Instant::now();
    s.crash(4);
    let gone = time_until(Duration::from_secs(10), "node4's endpoint to leave", || {
        (0..4).all(|i| {
            gossip_view(&s, i).is_ok_and(|v| !v["backend"].contains(&dead_ip))
                && forwarding(&s, i).is_ok_and(|f| !f.contains(&dead_ip))
        }) && resolve_in(asker, "tasks.web").is_ok_and(|r| !r.contains(&dead_ip))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!(
        "node4's endpoint left gossip, forwarding and DNS on every node {:.2} s after its daemon was killed",
        gone.as_secs_f64()
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    let left: BTreeSet<Ipv4Addr> = all.iter().copied().filter(|ip| *ip != dead_ip).collect();
    // On a slow run the managers may already have marked node4 Down (5 s)
    // and started a replacement, which is then rightly in the views too.
    let running_now: BTreeSet<Ipv4Addr> = task_ips(&s, "web").unwrap().into_values().collect();
    for i in 0..4 {
        let view = &gossip_view(&s, i).unwrap()["backend"];
        assert!(!view.contains(&dead_ip), "node {i}: {view:?}");
        assert!(
            left.is_subset(view),
            "node {i}: {view:?} lacks some of {left:?}"
        );
        for ip in view.difference(&left) {
            assert!(
                running_now.contains(ip),
                "node {i}: {ip} is no running task"
            );
        }
    }
}

/// Cuts the underlay between the node sets `a` and `b` (both ways) with
/// blackhole routes, or heals it.
fn partition(s: &Swarm, a: &[usize], b: &[usize], cut: bool) {
    for (from, to) in [(a, b), (b, a)] {
        for &i in from {
            for &j in to {
                let verb = if cut { "add" } else { "del" };
                let out = s
                    .topo
                    .node(i)
                    .ns()
                    .output([
                        "ip",
                        "route",
                        verb,
                        "blackhole",
                        &format!("{}/32", s.addr(j)),
                    ])
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
            }
        }
    }
}

/// A partition (nodes 0-2 with the manager, nodes 3-4 alone) during which
/// tasks come and go on both sides heals into one view on every node that
/// equals the tasks that run: nothing stale survives.
#[test]
fn a_healed_partition_converges_with_nothing_stale() {
    let s = Swarm::new(5).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "backend"]);
    create(
        &s,
        &[
            "--name",
            "web",
            "--replicas",
            "5",
            "--network",
            "backend",
            "--restart-delay",
            "1s",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "5 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 5)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    s.wait_for(
        Duration::from_secs(10),
        "every node knows 5 endpoints",
        || Ok((0..5).all(|i| gossip_view(&s, i).is_ok_and(|v| v["backend"].len() == 5))),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));

    partition(&s, &[0, 1, 2], &[3, 4], true);
    // The manager's side replaces the tasks of nodes 3 and 4 (Down after
    // 5 s); on the other side a task dies and its node withdraws it.
    let nodes = task_nodes(&s, "web").unwrap();
    let (on3, _) = nodes.iter().find(|(_, n)| *n == "node3").unwrap();
    let pid = pid_of(on3).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    s.wait_for(
        Duration::from_secs(30),
        "5 tasks running on nodes 0-2",
        || {
            let n = task_nodes(&s, "web")?;
            Ok(n.values()
                .filter(|n| ["node0", "node1", "node2"].contains(&n.as_str()))
                .count()
                == 5)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let healed = Instant::now();
    partition(&s, &[0, 1, 2], &[3, 4], false);

    // Once nodes 3 and 4 are back and have stopped their old tasks, every
    // node's view is the set of running tasks' addresses.
    let mut last = String::new();
    let converged = time_until(Duration::from_secs(60), "one view everywhere", || {
        let Ok(truth) = task_ips(&s, "web") else {
            return false;
        };
        let truth: BTreeSet<Ipv4Addr> = truth.values().copied().collect();
        let views: Vec<_> = (0..5)
            .map(|i| {
                gossip_view(&s, i)
                    .ok()
                    .and_then(|mut v| v.remove("backend"))
            })
            .collect();
        last = format!("truth {truth:?}, views {views:?}");
        truth.len() == 5
            && views
                .iter()
                .all(|v| v.as_ref() == Some(&truth) || v.is_none())
            && views[..3].iter().all(|v| v.as_ref() == Some(&truth))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{last}\n{}", s.logs()));
    println!(
        "after the partition healed, every view matched the running tasks in {:.2} s",
        converged.as_secs_f64()
    );
    assert!(healed.elapsed() < Duration::from_secs(90));
}

/// A minimal DNS upstream for the test: answers A queries for names under
/// `external.test.` with 192.0.2.7 and everything else with NXDOMAIN.
fn fake_upstream(sock: UdpSocket, stop: Arc<AtomicBool>) {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let q = &buf[..n];
        if n < 12 {
            continue;
        }
        // The question: labels until the zero byte, then type and class.
        let mut at = 12;
        let mut name = Vec::new();
        while at < n && q[at] != 0 {
            let len = q[at] as usize;
            if at + 1 + len > n {
                break;
            }
            name.push(String::from_utf8_lossy(&q[at + 1..at + 1 + len]).to_lowercase());
            at += 1 + len;
        }
        let end = at + 5;
        if end > n {
            continue;
        }
        let known = name.ends_with(&["external".to_string(), "test".to_string()]);
        let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
        let mut r = Vec::with_capacity(end + 16);
        r.extend_from_slice(&q[..2]);
        r.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
        r.extend_from_slice(&[0, 1, 0, u8::from(known && qtype == 1), 0, 0, 0, 0]);
        r.extend_from_slice(&q[12..end]);
        if known && qtype == 1 {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        }
        let _ = sock.send_to(&r, from);
    }
}

/// From inside a task: `<service>`, `tasks.<service>`, a task name and an
/// external name resolve, a task's address resolves back to its name, and
/// a service on a network the task is not attached to does not resolve.
#[test]
fn names_resolve_inside_tasks_per_network() {
    // The upstream resolver lives in the client namespace.
    let upstream_addr = shoal_topology::plan::client_addr(0).unwrap();
    let upstream = format!("{upstream_addr}:53");
    let s = Swarm::new_with(3, 1, &[("SHOAL_DNS_UPSTREAMS", upstream.as_str())]).unwrap();
    let sock = s
        .topo
        .client(0)
        .ns()
        .run(move || UdpSocket::bind((upstream_addr, 53)))
        .unwrap()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || fake_upstream(sock, stop))
    };
    struct StopOnDrop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            if let Some(t) = self.1.take() {
                let _ = t.join();
            }
        }
    }
    let _server = StopOnDrop(stop, Some(server));
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "front"]);
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "back"]);
    let shoal = env!("CARGO_BIN_EXE_shoal");
    create(
        &s,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "front",
            "--",
            shoal,
            "whoami",
            "--port",
            "80",
        ],
    );
    create(
        &s,
        &[
            "--name",
            "db",
            "--replicas",
            "1",
            "--network",
            "back",
            "--",
            "sleep",
            "3000",
        ],
    );
    create(
        &s,
        &[
            "--name",
            "client",
            "--replicas",
            "1",
            "--network",
            "front",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "5 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 3
            && running(&s, 0, "db")?.len() == 1
            && running(&s, 0, "client")?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let web = task_ips(&s, "web").unwrap();
    let web_ips: BTreeSet<Ipv4Addr> = web.values().copied().collect();
    let (client_name, _) = task_ips(&s, "client").unwrap().into_iter().next().unwrap();
    let pid = pid_of(&client_name).unwrap();

    s.wait_for(Duration::from_secs(10), "tasks.web to list 3 tasks", || {
        Ok(resolve_in(pid, "tasks.web")? == web_ips)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    // The service name gives its virtual IP, which no task holds.
    let vip = crate::vip::service_vip(&s, "web").unwrap();
    assert!(!web_ips.contains(&vip));
    assert_eq!(resolve_in(pid, "web").unwrap(), BTreeSet::from([vip]));
    assert_eq!(resolve_in(pid, "WEB.").unwrap(), BTreeSet::from([vip]));
    for (name, ip) in &web {
        assert_eq!(
            resolve_in(pid, name).unwrap(),
            BTreeSet::from([*ip]),
            "{name}"
        );
        assert_eq!(&reverse_in(pid, *ip).unwrap(), name);
    }
    assert_eq!(
        resolve_in(pid, "www.external.test").unwrap(),
        BTreeSet::from([Ipv4Addr::new(192, 0, 2, 7)])
    );
    // `db` is on `back`, which the client is not attached to: the name is
    // not ours to answer, and the upstream does not know it either.
    assert!(resolve_in(pid, "db").unwrap().is_empty());
    assert!(resolve_in(pid, "tasks.db").unwrap().is_empty());
    // And the names lead somewhere: HTTP by service name.
    let body = crate::tasks::curl_from(pid, "web").unwrap();
    assert!(body.contains("Task: web."), "{body}");
}

/// A task asked to stop leaves the rotation first: every node's view drops
/// it while its process still runs (the drain grace, 3 s here), and only
/// then is it stopped.
#[test]
fn a_stopping_task_leaves_the_rotation_before_it_stops() {
    let s = Swarm::new_with(2, 0, &[("SHOAL_DRAIN_GRACE_MS", "3000")]).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "backend"]);
    create(
        &s,
        &[
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "backend",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "2 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    s.wait_for(
        Duration::from_secs(10),
        "both nodes know 2 endpoints",
        || {
            Ok((0..2).all(|i| {
                gossip_view(&s, i).is_ok_and(|v| v.get("backend").is_some_and(|e| e.len() == 2))
            }))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let before = task_ips(&s, "web").unwrap();
    s.shoal_ok(0, &["service", "scale", "--detach", "web=1"]);
    time_until(
        Duration::from_secs(10),
        "one endpoint left in every view",
        || {
            (0..2).all(|i| {
                gossip_view(&s, i).is_ok_and(|v| v.get("backend").is_some_and(|e| e.len() == 1))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let left = gossip_view(&s, 0).unwrap()["backend"].clone();
    let (gone, _) = before
        .iter()
        .find(|(_, ip)| !left.contains(ip))
        .expect("the removed task");
    assert!(
        pid_of(gone).is_ok(),
        "{gone} left the rotation only after it stopped"
    );
    // And it does stop, after the grace.
    time_until(Duration::from_secs(20), "the removed task to stop", || {
        pid_of(gone).is_err()
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
}
