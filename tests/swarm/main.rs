//! The manager suite: real `shoald` daemons in network namespaces forming a
//! swarm over mutual TLS on 2377, driven through their local API sockets
//! (what the `shoal` CLI uses) and, for the CLI's own words, through `shoal`.
//!
//! Needs root (namespaces); `scripts/test` runs it.

mod discovery;
mod docker;
#[path = "../common/http.rs"]
mod http;
mod lifecycle;
mod mesh;
mod tasks;
mod vip;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use shoal_manager::identity::NodeFile;
use shoal_topology::{ManagedChild, Topology};

use crate::http::http;

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// N node namespaces, a `shoald` in each, each with its own state directory
/// and API socket. Dropping it kills the daemons and removes the namespaces.
struct Swarm {
    dir: PathBuf,
    daemons: Vec<Option<ManagedChild>>,
    topo: Topology,
    /// Extra environment of every daemon.
    env: Vec<(String, String)>,
    /// Extra environment of one daemon, by node.
    node_env: BTreeMap<usize, Vec<(String, String)>>,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.daemons.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Swarm {
    fn new(nodes: usize) -> Result<Swarm> {
        Swarm::new_with(nodes, 0, &[])
    }

    /// N nodes, `clients` client namespaces, and `env` in every daemon's
    /// environment.
    fn new_with(nodes: usize, clients: usize, env: &[(&str, &str)]) -> Result<Swarm> {
        Swarm::new_full(nodes, clients, env, &[])
    }

    /// Like [`Swarm::new_with`], with `node_env` (node, key, value) in one
    /// daemon's environment only.
    fn new_full(
        nodes: usize,
        clients: usize,
        env: &[(&str, &str)],
        node_env: &[(usize, &str, &str)],
    ) -> Result<Swarm> {
        let topo = Topology::builder().nodes(nodes).clients(clients).build()?;
        let dir = std::env::temp_dir().join(format!(
            "shoal-swarm-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut s = Swarm {
            dir,
            daemons: (0..nodes).map(|_| None).collect(),
            topo,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node_env: BTreeMap::new(),
        };
        for (i, k, v) in node_env {
            s.node_env
                .entry(*i)
                .or_default()
                .push((k.to_string(), v.to_string()));
        }
        for i in 0..nodes {
            s.start(i)?;
        }
        Ok(s)
    }

    fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("state{i}"))
    }

    fn sock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.sock"))
    }

    fn addr(&self, i: usize) -> std::net::Ipv4Addr {
        self.topo.node(i).addr()
    }

    fn api(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.addr(i), 2377))
    }

    /// Starts node `i`'s daemon on its own state directory.
    fn start(&mut self, i: usize) -> Result<()> {
        let state = self.state_dir(i);
        self.start_on(i, &state)
    }

    /// Starts node `i`'s daemon on `state` and waits for its API socket.
    fn start_on(&mut self, i: usize, state: &Path) -> Result<()> {
        let sock = self.sock(i);
        let log = self.dir.join(format!("node{i}.log"));
        let mut cmd = self.topo.node(i).ns().command(env!("CARGO_BIN_EXE_shoald"));
        cmd.arg("--state-dir")
            .arg(state)
            .arg("--control")
            .arg(&sock)
            .arg("--hostname")
            .arg(format!("node{i}"))
            .arg("--log")
            .arg("info,openraft=warn")
            // Test-only: lets `swarm init --cert-expiry` go down to 10 s so
            // that certificate renewal can be watched (Docker's minimum is 1h).
            .env("SHOAL_TEST_MIN_CERT_SECS", "10")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(
                self.node_env
                    .get(&i)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, v)),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            );
        self.daemons[i] = Some(self.topo.node(i).ns().spawn(cmd)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(&sock, "GET", "/v1/swarm", None).is_err() {
            if Instant::now() > deadline {
                bail!("shoald on node {i} did not come up; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops node `i`'s daemon (SIGTERM, so it may leave gossip and stop its
    /// tasks on the way out; SIGKILL after a grace period).
    fn kill(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            let _ = d.kill();
        }
    }

    /// Crashes node `i`'s daemon: SIGKILL at once, nothing said or flushed
    /// on the way out (its tasks die with it, by their parent-death signal).
    fn crash(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            let _ = Command::new("kill")
                .args(["-KILL", &d.id().to_string()])
                .status();
            let _ = d.kill();
        }
    }

    /// Runs the `shoal` CLI against node `i`'s daemon, inside node `i`.
    fn shoal(&self, i: usize, args: &[&str]) -> Output {
        self.topo
            .node(i)
            .ns()
            .command(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_CONTROL", self.sock(i))
            .output()
            .expect("run shoal")
    }

    /// Like [`Swarm::shoal`], insisting on success; returns stdout.
    fn shoal_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.shoal(i, args);
        assert!(
            out.status.success(),
            "shoal {args:?} on node {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Swarm::shoal`], with `input` on standard input.
    fn shoal_stdin(&self, i: usize, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .topo
            .node(i)
            .ns()
            .command(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_CONTROL", self.sock(i))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait for shoal")
    }

    /// Like [`Swarm::shoal`], insisting on failure; returns stderr.
    fn shoal_err(&self, i: usize, args: &[&str]) -> String {
        let out = self.shoal(i, args);
        assert!(
            !out.status.success(),
            "shoal {args:?} on node {i} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Kills every daemon, starts them all again and waits until node `via`
    /// is served by a leader.
    fn restart_all(&mut self, via: usize) {
        for i in 0..self.daemons.len() {
            self.kill(i);
        }
        for i in 0..self.daemons.len() {
            self.start(i).unwrap();
        }
        self.wait_for(
            Duration::from_secs(20),
            "a leader after the restart",
            || Ok(self.op(via, &json!({"op": "nodes"}))?.0 == 200),
        )
        .unwrap();
    }

    /// Everything the daemons logged.
    fn logs(&self) -> String {
        (0..self.daemons.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default()
            })
            .collect()
    }

    /// A cluster op through node `i`'s local API: (HTTP status, JSON).
    fn op(&self, i: usize, op: &Value) -> Result<(u16, Value)> {
        let (code, body) = http(&self.sock(i), "POST", "/v1/swarm/op", Some(&op.to_string()))?;
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((code, v))
    }

    fn info(&self, i: usize) -> Result<Value> {
        let (code, body) = http(&self.sock(i), "GET", "/v1/swarm", None)?;
        if code != 200 {
            bail!("node {i}: HTTP {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `swarm init` on node 0, then `managers - 1` managers and the rest workers.
    fn form(&self, managers: usize) -> Result<()> {
        self.form_with(managers, &[])
    }

    /// Like [`Swarm::form`], with more `swarm init` flags.
    fn form_with(&self, managers: usize, init_flags: &[&str]) -> Result<()> {
        let a0 = self.addr(0).to_string();
        let mut init = vec!["swarm", "init", "--advertise-addr", &a0];
        init.extend_from_slice(init_flags);
        self.shoal_ok(0, &init);
        let mt = self.shoal_ok(0, &["swarm", "join-token", "-q", "manager"]);
        let wt = self.shoal_ok(0, &["swarm", "join-token", "-q", "worker"]);
        let remote = self.api(0).to_string();
        for i in 1..self.daemons.len() {
            let token = if i < managers { mt.trim() } else { wt.trim() };
            let out = self.shoal_ok(i, &["swarm", "join", "--token", token, &remote]);
            let role = if i < managers { "manager" } else { "worker" };
            assert_eq!(out, format!("This node joined a swarm as a {role}.\n"));
        }
        // Every manager a voter, every node Ready.
        self.wait_for(
            Duration::from_secs(20),
            "all managers voting and all nodes ready",
            || {
                let voters = self.info(0)?["raft_voters"].as_array().map_or(0, Vec::len);
                let (code, nodes) = self.op(0, &json!({"op": "nodes"}))?;
                let ready = nodes["value"]
                    .as_array()
                    .map_or(0, |n| n.iter().filter(|n| n["status"] == "ready").count());
                Ok(code == 200 && voters == managers && ready == self.daemons.len())
            },
        )
    }

    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            match f() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("timed out after {limit:?} waiting for {what} (last error: {last})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the manager that leads, as node `asking` sees it.
    fn leader(&self, asking: usize) -> Result<usize> {
        let info = self.info(asking)?;
        let leader = info["raft_leader"].as_u64().context("no leader")?;
        (0..self.daemons.len())
            .find(|&i| {
                self.daemons[i].is_some()
                    && self.info(i).ok().and_then(|v| v["raft_id"].as_u64()) == Some(leader)
            })
            .context("leader is not one of the running nodes")
    }

    /// The labels of node `host` (a hostname), read through node `via`.
    fn labels(&self, via: usize, host: &str) -> Result<BTreeMap<String, String>> {
        let (code, v) = self.op(via, &json!({"op": "node", "key": host}))?;
        if code != 200 {
            bail!("node inspect {host} via node {via}: HTTP {code}: {v}");
        }
        Ok(serde_json::from_value(v["value"]["labels"].clone())?)
    }
}

/// The live tasks (desired running) of `service`, as seen through node
/// `via`: (hostname or "" when unplaced, slot).
fn live_tasks(s: &Swarm, via: usize, service: &str) -> Result<Vec<(String, u64)>> {
    let (code, v) = s.op(
        via,
        &json!({"op": "tasks", "service": service, "node": null}),
    )?;
    if code != 200 {
        bail!("service ps {service}: HTTP {code}: {v}");
    }
    Ok(v["value"]
        .as_array()
        .context("no tasks array")?
        .iter()
        .filter(|t| t["task"]["desired_state"] == "running")
        .map(|t| {
            (
                t["node"].as_str().unwrap_or("").to_string(),
                t["task"]["slot"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// How many live tasks of `service` each node holds.
fn per_node(tasks: &[(String, u64)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (node, _) in tasks {
        *out.entry(node.clone()).or_default() += 1;
    }
    out
}

fn label_op(host: &str, key: &str) -> Value {
    json!({"op": "update_node", "key": host, "availability": null,
           "label_add": {key: "v"}, "label_rm": []})
}

/// 3 managers and 2 workers: the leader's daemon is killed while a client
/// writes labels through another manager. A new leader serves within 3 s, and
/// every write that was acknowledged is there afterwards.
#[test]
fn leader_failover_keeps_every_acknowledged_write() {
    let mut s = Swarm::new(5).unwrap();
    s.form(3).unwrap();
    let leader = s.leader(0).unwrap();
    let via = (0..3).find(|&i| i != leader).unwrap();
    let mut acked = Vec::new();
    let mut killed_at = None;
    let mut served_after = None;
    for n in 0..1000 {
        if n == 200 {
            s.kill(leader);
            killed_at = Some(Instant::now());
        }
        let key = format!("l{n}");
        let (code, _) = s.op(via, &label_op("node4", &key)).unwrap();
        if code == 200 {
            acked.push(key);
            if let (Some(t), None) = (killed_at, served_after) {
                served_after = Some(t.elapsed());
            }
        }
    }
    let served_after = served_after.expect("no write succeeded after the kill");
    eprintln!(
        "new leader served a write {served_after:?} after the kill; {} of 1000 writes acknowledged",
        acked.len()
    );
    assert!(
        served_after <= Duration::from_secs(3),
        "the API came back only after {served_after:?}"
    );
    assert_ne!(s.leader(via).unwrap(), leader);
    let labels = s.labels(via, "node4").unwrap();
    let missing: Vec<&String> = acked.iter().filter(|k| !labels.contains_key(*k)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Nothing unacknowledged was invented either.
    assert!(labels.keys().all(|k| k.starts_with('l')));
    assert!(
        acked.len() >= 900,
        "only {} writes acknowledged",
        acked.len()
    );

    // The dead manager shows up as such.
    s.wait_for(
        Duration::from_secs(15),
        "the old leader marked down",
        || {
            let out = s.shoal_ok(via, &["node", "ls"]);
            Ok(out.lines().any(|l| {
                l.contains(&format!("node{leader} "))
                    && l.contains("Down")
                    && l.contains("Unreachable")
            }))
        },
    )
    .unwrap();
}

/// One manager and two workers: a service's replicas spread one per node,
/// scale up and down, follow constraints and drains, say why they are
/// pending, and clashing ports and networks in use are refused with
/// Docker's words.
#[test]
fn services_spread_scale_follow_drains_and_refuse_clashes() {
    let s = Swarm::new(3).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "backend"]);
    let web = s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "backend",
            "-p",
            "5000:80",
            "--",
            "sleep",
            "1000",
        ],
    );
    let web = web.trim().to_string();
    assert_eq!(web.len(), 25, "{web}");
    let spread3 = BTreeMap::from([
        ("node0".to_string(), 1),
        ("node1".to_string(), 1),
        ("node2".to_string(), 1),
    ]);
    s.wait_for(Duration::from_secs(10), "3 tasks, one per node", || {
        Ok(per_node(&live_tasks(&s, 0, "web")?) == spread3)
    })
    .unwrap();
    // The nodes start them: each on its node, attached to ingress and backend.
    s.wait_for(Duration::from_secs(20), "3 running tasks", || {
        let ls = s.shoal_ok(0, &["service", "ls"]);
        Ok(ls
            .lines()
            .any(|l| l.contains(" web ") && l.contains(" 3/3 ")))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let ps = s.shoal_ok(0, &["service", "ps", "web"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("DESIRED STATE   CURRENT STATE"),
        "{ps}"
    );
    assert_eq!(lines.len(), 4, "{ps}");
    for (line, slot) in lines[1..].iter().zip(1..) {
        assert!(line.contains(&format!(" web.{slot} ")), "{ps}");
        assert!(line.contains("sleep 1000"), "{ps}");
        assert!(line.matches("Running").count() == 2, "{ps}");
    }
    let ls = s.shoal_ok(0, &["service", "ls"]);
    let row = ls.lines().find(|l| l.contains(" web ")).expect("web row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], &web[..12], "{ls}");
    assert_eq!(cols[1..4], ["web", "replicated", "3/3"], "{ls}");
    assert_eq!(cols.last(), Some(&"*:5000->80/tcp"), "{ls}");
    let inspect: Value =
        serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["ID"], web.as_str());
    assert_eq!(inspect[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 3);

    // Scale up and down.
    assert_eq!(
        s.shoal_ok(0, &["service", "scale", "--detach", "web=5"]),
        "web scaled to 5\n"
    );
    s.wait_for(Duration::from_secs(10), "5 tasks spread", || {
        let t = live_tasks(&s, 0, "web")?;
        let counts: Vec<usize> = per_node(&t).into_values().collect();
        Ok(t.len() == 5 && counts.len() == 3 && counts.iter().all(|&c| c == 1 || c == 2))
    })
    .unwrap();
    s.shoal_ok(0, &["service", "scale", "--detach", "web=2"]);
    s.wait_for(Duration::from_secs(10), "slots 1 and 2 only", || {
        let mut slots: Vec<u64> = live_tasks(&s, 0, "web")?.into_iter().map(|t| t.1).collect();
        slots.sort();
        Ok(slots == [1, 2])
    })
    .unwrap();

    // A constraint that no node meets: pending, with Docker's reason.
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "nowhere",
            "--constraint",
            "node.labels.zone==mars",
            "--",
            "sleep",
            "1",
        ],
    );
    s.wait_for(Duration::from_secs(10), "the pending reason", || {
        let ps = s.shoal_ok(0, &["service", "ps", "nowhere"]);
        Ok(ps.contains("Pending")
            && ps
                .contains("\"no suitable node (scheduling constraints not satisfied on 3 nodes)\""))
    })
    .unwrap();
    // The manager-only service lands on the manager only.
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "admin",
            "--replicas",
            "3",
            "--constraint",
            "node.role==manager",
            "--",
            "sleep",
            "1",
        ],
    );
    s.wait_for(Duration::from_secs(10), "admin on the manager", || {
        Ok(per_node(&live_tasks(&s, 0, "admin")?) == BTreeMap::from([("node0".to_string(), 3)]))
    })
    .unwrap();

    // Drain: node2's task moves elsewhere; node ps node2 keeps its history.
    s.shoal_ok(0, &["service", "scale", "--detach", "web=3"]);
    s.wait_for(
        Duration::from_secs(10),
        "3 tasks, one per node again",
        || Ok(per_node(&live_tasks(&s, 0, "web")?) == spread3),
    )
    .unwrap();
    s.shoal_ok(0, &["node", "update", "--availability", "drain", "node2"]);
    s.wait_for(Duration::from_secs(10), "node2's task moved", || {
        let t = per_node(&live_tasks(&s, 0, "web")?);
        Ok(!t.contains_key("node2") && t.values().sum::<usize>() == 3 && !t.contains_key(""))
    })
    .unwrap();
    // A task removed by the scale-down goes once node2 says it stopped.
    let mut node_ps = String::new();
    s.wait_for(
        Duration::from_secs(10),
        "node2's history all shut down",
        || {
            node_ps = s.shoal_ok(0, &["node", "ps", "node2"]);
            Ok(node_ps.lines().skip(1).all(|l| l.contains(" Shutdown "))
                && node_ps.lines().count() >= 2)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{node_ps}"));
    let mine = s.shoal_ok(0, &["node", "ps"]);
    assert!(mine.contains("admin.1") && mine.contains("node0"), "{mine}");

    // Clashes, refused with Docker's words.
    let err = s.shoal_err(
        0,
        &[
            "service",
            "create",
            "--name",
            "api",
            "-p",
            "5000:8080",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(
        err.contains(&format!(
            "port '5000' is already in use by service 'web' ({web}) as an ingress port"
        )),
        "{err}"
    );
    let err = s.shoal_err(0, &["network", "rm", "backend"]);
    assert!(
        err.contains("network backend is in use by service web"),
        "{err}"
    );
    let err = s.shoal_err(
        0,
        &[
            "service", "create", "--name", "w2", "--bogus", "--", "sleep", "1",
        ],
    );
    assert!(err.contains("--bogus"), "{err}");
    let err = s.shoal_err(
        0,
        &[
            "service",
            "create",
            "--name",
            "w2",
            "-p",
            "5000:http",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(err.contains("invalid target port \"http\""), "{err}");

    // Removing the service frees its network and its port.
    assert_eq!(s.shoal_ok(0, &["service", "rm", "web"]), "web\n");
    assert_eq!(s.shoal_ok(0, &["network", "rm", "backend"]), "backend\n");
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "api",
            "-p",
            "5000:8080",
            "--",
            "sleep",
            "1",
        ],
    );
}

/// Every daemon killed and restarted: the swarm comes back with its state.
/// Then the state directory of one manager, copied elsewhere, becomes a
/// one-manager swarm with `--force-new-cluster`, keeping every node and label.
#[test]
fn restart_and_force_new_cluster_keep_the_state() {
    let mut s = Swarm::new(4).unwrap();
    s.form(3).unwrap();
    for n in 0..20 {
        let (code, v) = s.op(0, &label_op("node3", &format!("k{n}"))).unwrap();
        assert_eq!(code, 200, "{v}");
    }
    let keep = s.shoal_ok(
        0,
        &["network", "create", "--subnet", "10.77.0.0/16", "keep"],
    );
    let out = s.shoal_stdin(1, &["secret", "create", "keep_secret", "-"], b"kept");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep_secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let kept = s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "kept",
            "--replicas",
            "2",
            "--network",
            "keep",
            "-p",
            "6000:80",
            "--",
            "sleep",
            "1000",
        ],
    );
    let kept = kept.trim().to_string();
    s.restart_all(1);
    assert_eq!(s.labels(1, "node3").unwrap().len(), 20);
    let (_, nodes) = s.op(2, &json!({"op": "nodes"})).unwrap();
    assert_eq!(nodes["value"].as_array().unwrap().len(), 4);

    // Disaster: every manager gone; one manager's directory survives as a copy.
    for i in 0..4 {
        s.kill(i);
    }
    let copy = s.dir.join("restored");
    let status = Command::new("cp")
        .arg("-a")
        .arg(s.state_dir(1))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    s.start_on(0, &copy).unwrap();
    let a0 = s.addr(0).to_string();
    let out = s.shoal_ok(
        0,
        &[
            "swarm",
            "init",
            "--force-new-cluster",
            "--advertise-addr",
            &a0,
        ],
    );
    assert!(out.starts_with("Swarm initialized"), "{out}");
    s.wait_for(
        Duration::from_secs(15),
        "the recovered manager to lead",
        || Ok(s.op(0, &json!({"op": "nodes"}))?.0 == 200),
    )
    .unwrap();
    assert_eq!(s.labels(0, "node3").unwrap().len(), 20);
    let ls = s.shoal_ok(0, &["node", "ls"]);
    assert_eq!(ls.lines().count(), 5, "{ls}");
    let managers: Vec<&str> = ls
        .lines()
        .filter(|l| l.contains("Leader") || l.contains("Reachable"))
        .collect();
    assert_eq!(managers.len(), 1, "{ls}");
    assert!(
        managers[0].contains("node1") && managers[0].contains(" * "),
        "{ls}"
    );
    // The networks and the secret came through the disaster.
    let nets: Value =
        serde_json::from_str(&s.shoal_ok(0, &["network", "inspect", "keep", "ingress"])).unwrap();
    assert_eq!(nets[0]["Id"], keep.trim());
    assert_eq!(nets[0]["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/16");
    assert_eq!(nets[1]["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
    let secrets = s.shoal_ok(0, &["secret", "ls", "-q"]);
    assert_eq!(secrets.trim(), keep_secret, "{secrets}");
    // So did the service; its tasks leave the managers that are gone and
    // land on the one node left.
    let svc: Value = serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "kept"])).unwrap();
    assert_eq!(svc[0]["ID"], kept.as_str());
    assert_eq!(svc[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(svc[0]["Endpoint"]["Ports"][0]["PublishedPort"], 6000);
    s.wait_for(Duration::from_secs(20), "kept's tasks on node1", || {
        Ok(per_node(&live_tasks(&s, 0, "kept")?) == BTreeMap::from([("node1".to_string(), 2)]))
    })
    .unwrap();
    // The recovered swarm takes writes.
    assert_eq!(s.op(0, &label_op("node3", "after")).unwrap().0, 200);
    let next = s.shoal_ok(0, &["network", "create", "next"]);
    let next: Value =
        serde_json::from_str(&s.shoal_ok(0, &["network", "inspect", next.trim()])).unwrap();
    assert_eq!(next[0]["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(
        next[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4098"
    );
}

/// Networks and secrets made through one manager are seen through the
/// others (with Docker's output), refused with Docker's words when they
/// clash, refused on a worker, and still there after every daemon was
/// killed and restarted. No secret value shows up in any answer or log.
#[test]
fn networks_and_secrets_are_replicated_and_survive_a_restart() {
    let mut s = Swarm::new(4).unwrap();
    s.form(3).unwrap(); // node0..2 managers, node3 a worker
    let vxlanid = "com.docker.network.driver.overlay.vxlanid_list";

    let front = s.shoal_ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.50.0.0/24",
            "--opt",
            "encrypted",
            "--attachable",
            "--label",
            "tier=front",
            "front",
        ],
    );
    let front = front.trim().to_string();
    assert_eq!(front.len(), 25, "{front}");
    let back = s.shoal_ok(1, &["network", "create", "-d", "overlay", "back"]);
    let back = back.trim().to_string();
    let gone = s.shoal_ok(2, &["network", "create", "gone"]);
    assert_eq!(s.shoal_ok(0, &["network", "rm", "gone"]), "gone\n");
    let _ = gone;

    for (args, words) in [
        (
            vec!["network", "create", "front"],
            "Error response from daemon: network with name front already exists",
        ),
        (
            vec!["network", "create", "-d", "bridge", "x"],
            "network driver \"bridge\" is not supported by shoal; use overlay",
        ),
        (
            vec!["network", "create", "--subnet", "10.50.0.128/25", "x"],
            "subnet 10.50.0.128/25 overlaps network front (10.50.0.0/24)",
        ),
        (
            vec!["network", "create", "--subnet", "10.50.0/25", "x"],
            "\"10.50.0/25\" is not a network in CIDR notation",
        ),
        (vec!["network", "inspect", "nope"], "network nope not found"),
        (vec!["network", "rm", "nope"], "network nope not found"),
    ] {
        let err = s.shoal_err(2, &args);
        assert!(err.contains(words), "{args:?}: {err}");
    }

    let file = s.dir.join("db_password");
    std::fs::write(&file, "hunter2-file-value").unwrap();
    let db = s.shoal_ok(
        0,
        &["secret", "create", "db_password", file.to_str().unwrap()],
    );
    let out = s.shoal_stdin(
        2,
        &["secret", "create", "--label", "env=prod", "api_key", "-"],
        b"stdin-s3cr3t-value",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = s.shoal_err(
        1,
        &["secret", "create", "db_password", file.to_str().unwrap()],
    );
    assert!(err.contains("secret db_password already exists"), "{err}");

    // Another manager shows them the way Docker does.
    let ls = s.shoal_ok(1, &["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    assert!(lines[0].starts_with("NETWORK ID     NAME"), "{ls}");
    for (line, name) in lines[1..].iter().zip(["back", "front", "ingress"]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1..], [name, "overlay", "swarm"], "{ls}");
        assert_eq!(cols[0].len(), 12, "{ls}");
    }
    assert!(lines[2].starts_with(&front[..12]), "{ls}");
    let inspect = s.shoal_ok(1, &["network", "inspect", "front", &back[..8]]);
    let nets: Value = serde_json::from_str(&inspect).unwrap();
    let f = &nets[0];
    assert_eq!(f["Name"], "front");
    assert_eq!(f["Id"], front.as_str());
    assert_eq!(f["Scope"], "swarm");
    assert_eq!(f["Driver"], "overlay");
    assert_eq!(f["IPAM"]["Config"][0]["Subnet"], "10.50.0.0/24");
    assert_eq!(f["IPAM"]["Config"][0]["Gateway"], "10.50.0.1");
    assert_eq!(f["Options"][vxlanid], "4097");
    assert_eq!(f["Options"]["encrypted"], "");
    assert_eq!(f["Attachable"], true);
    assert_eq!(f["Ingress"], false);
    assert_eq!(f["Labels"]["tier"], "front");
    let b = &nets[1];
    assert_eq!(b["Id"], back.as_str());
    assert_eq!(b["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
    assert_eq!(b["Options"][vxlanid], "4098");
    assert!(b["Options"].get("encrypted").is_none());

    let secrets = s.shoal_ok(1, &["secret", "ls"]);
    assert!(secrets.starts_with("ID "), "{secrets}");
    assert!(
        secrets.contains(" api_key ") && secrets.contains(db.trim()),
        "{secrets}"
    );
    let api: Value =
        serde_json::from_str(&s.shoal_ok(1, &["secret", "inspect", "api_key"])).unwrap();
    assert_eq!(api[0]["Spec"]["Name"], "api_key");
    assert_eq!(api[0]["Spec"]["Labels"]["env"], "prod");

    // A worker cannot see them.
    for args in [["network", "ls"], ["secret", "ls"]] {
        let err = s.shoal_err(3, &args);
        assert!(
            err.contains(shoal_manager::views::NOT_A_MANAGER),
            "{args:?}: {err}"
        );
    }

    // Everything killed and restarted.
    let nets_before = s.shoal_ok(0, &["network", "inspect", "ingress", "front", "back"]);
    let secrets_before = s.shoal_ok(0, &["secret", "inspect", "db_password", "api_key"]);
    s.restart_all(2);
    assert_eq!(
        s.shoal_ok(2, &["network", "inspect", "ingress", "front", "back"]),
        nets_before
    );
    assert_eq!(
        s.shoal_ok(2, &["secret", "inspect", "db_password", "api_key"]),
        secrets_before
    );
    let ls = s.shoal_ok(1, &["network", "ls"]);
    assert_eq!(ls.lines().count(), 4, "{ls}");
    // The VNI and the subnet that `gone` gave back are handed out again.
    let again = s.shoal_ok(1, &["network", "create", "again"]);
    let again: Value =
        serde_json::from_str(&s.shoal_ok(1, &["network", "inspect", again.trim()])).unwrap();
    assert_eq!(again[0]["IPAM"]["Config"][0]["Subnet"], "10.0.2.0/24");
    assert_eq!(again[0]["Options"][vxlanid], "4099");

    // No secret value in anything the CLI printed or the daemons logged.
    let printed = format!("{secrets}{secrets_before}{nets_before}{ls}");
    let logs = s.logs();
    for value in ["hunter2-file-value", "stdin-s3cr3t-value"] {
        assert!(
            !printed.contains(value) && !logs.contains(value),
            "{value} leaked"
        );
    }
    // Nor in any file the managers keep: the Raft store is sealed at rest.
    let files: Vec<PathBuf> = (0..4).flat_map(|i| files_under(&s.state_dir(i))).collect();
    let stores = files
        .iter()
        .filter(|f| f.ends_with("raft/raft.redb"))
        .count();
    assert_eq!(stores, 3, "one Raft store per manager: {files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for value in [
            "hunter2-file-value",
            "stdin-s3cr3t-value",
            "aHVudGVyMi1maWxlLXZhbHVl",
        ] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} readable in {}",
                file.display()
            );
        }
    }
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Raft entries that carry large secrets reach a manager that was down
/// while they were written: it catches up (several of them in one append)
/// and the swarm keeps its quorum through it.
#[test]
fn a_manager_that_missed_large_secrets_catches_up() {
    let mut s = Swarm::new(3).unwrap();
    s.form(3).unwrap();
    let leader = s.leader(0).unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (late, other) = (followers[0], followers[1]);
    s.kill(late);
    let big: Vec<u8> = (0..450 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let file = s.dir.join("big");
    std::fs::write(&file, &big).unwrap();
    for n in 0..6 {
        s.shoal_ok(
            leader,
            &[
                "secret",
                "create",
                &format!("big{n}"),
                file.to_str().unwrap(),
            ],
        );
    }
    s.start(late).unwrap();
    // Without `other`, every write needs `late` to have taken the secrets.
    std::thread::sleep(Duration::from_secs(2));
    s.kill(other);
    s.wait_for(
        Duration::from_secs(30),
        "a write with the late manager in the quorum",
        || {
            // An attempt that timed out may still commit: then the name is taken.
            let out = s.shoal(leader, &["network", "create", "after"]);
            Ok(out.status.success()
                || String::from_utf8_lossy(&out.stderr).contains("already exists"))
        },
    )
    .unwrap();
    let ls = s.shoal_ok(late, &["secret", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 6, "{ls}");
}

/// A wrong token, a token for another swarm's CA, and a worker certificate on
/// a manager-only endpoint are each refused with a clear error; nothing changes.
#[test]
fn bad_tokens_and_worker_certificates_are_refused() {
    let s = Swarm::new(4).unwrap();
    s.form(1).unwrap(); // node0 manager, node1..3 workers
    let nodes_before = s.op(0, &json!({"op": "nodes"})).unwrap().1["value"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(nodes_before, 4);
    let inspect: Value =
        serde_json::from_str(&s.shoal_ok(0, &["node", "inspect", "node0", "node1"])).unwrap();
    assert_eq!(inspect[0]["Description"]["Hostname"], "node0");
    assert_eq!(inspect[0]["Spec"]["Role"], "manager");
    assert_eq!(inspect[0]["ManagerStatus"]["Leader"], true);
    assert_eq!(inspect[1]["Spec"]["Role"], "worker");
    assert_eq!(inspect[1]["Status"]["State"], "ready");
    assert!(inspect[1].get("ManagerStatus").is_none(), "{inspect}");

    // A worker cannot read or change cluster state.
    let out = s.shoal(1, &["node", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state."
    ));

    // Node 3 leaves, then tries to join back with bad tokens.
    s.shoal_ok(3, &["swarm", "leave"]);
    let good = s.shoal_ok(0, &["swarm", "join-token", "-q", "worker"]);
    let good = good.trim();
    let remote = s.api(0).to_string();
    let wrong = format!("{}{}", &good[..good.len() - 25], "0".repeat(25));
    let out = s.shoal(3, &["swarm", "join", "--token", &wrong, &remote]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid join token"), "{err}");

    // Node 2 leaves and starts a swarm of its own; its token names its CA.
    s.shoal_ok(2, &["swarm", "leave"]);
    let a2 = s.addr(2).to_string();
    let out = s.shoal(
        2,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &a2,
            "--dispatcher-heartbeat",
            "2s",
            "--node-down-timeout",
            "3s",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "invalid --node-down-timeout 3s: it must be at least two heartbeat periods (4s)"
        ),
        "{err}"
    );
    s.shoal_ok(
        2,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &a2,
            "--dispatcher-heartbeat",
            "2s",
            "--node-down-timeout",
            "4s",
            "--key-rotation-interval",
            "1h",
        ],
    );
    let foreign = s.shoal_ok(2, &["swarm", "join-token", "-q", "worker"]);
    let out = s.shoal(3, &["swarm", "join", "--token", foreign.trim(), &remote]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the join token"), "{err}");

    // A worker's own certificate on the manager-only op endpoint.
    let worker = NodeFile::load(&s.state_dir(1)).unwrap().unwrap();
    let client = worker.client().unwrap();
    let api = s.api(0);
    let result = s
        .topo
        .node(1)
        .ns()
        .run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(client.post::<_, Value>(api, "/v1/op", &label_op("node1", "evil")))
        })
        .unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("presented a worker certificate"), "{err}");

    // Nothing changed: same nodes (node2 and node3 left, still listed), no label.
    let (_, nodes) = s.op(0, &json!({"op": "nodes"})).unwrap();
    assert_eq!(nodes["value"].as_array().unwrap().len(), nodes_before);
    assert!(s.labels(0, "node1").unwrap().is_empty());
}

/// Without a quorum a manager answers in Docker's words instead of hanging or
/// pretending; once the other managers are back, the swarm serves again with
/// its state intact.
#[test]
fn without_a_quorum_the_swarm_says_it_has_no_leader() {
    let mut s = Swarm::new(3).unwrap();
    s.form(3).unwrap();
    assert_eq!(s.op(0, &label_op("node2", "before")).unwrap().0, 200);
    let leader = s.leader(0).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        s.kill(i);
    }
    let started = Instant::now();
    let out = s.shoal(leader, &["node", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node ls without a quorum succeeded");
    assert!(
        err.contains(
            "The swarm does not have a leader. It's possible that too few managers are online."
        ),
        "{err}"
    );
    eprintln!("no-quorum answer after {:?}", started.elapsed());
    let out = s.shoal(
        leader,
        &["node", "update", "--label-add", "during=x", "node2"],
    );
    assert!(!out.status.success(), "a write without a quorum succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("The swarm does not have a leader"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for &i in &others {
        s.start(i).unwrap();
    }
    s.wait_for(Duration::from_secs(20), "the swarm to serve again", || {
        Ok(s.op(leader, &json!({"op": "nodes"}))?.0 == 200)
    })
    .unwrap();
    let labels = s.labels(leader, "node2").unwrap();
    assert!(labels.contains_key("before"), "{labels:?}");
}
