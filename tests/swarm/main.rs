//! The manager suite: real `shoald` daemons in network namespaces forming a
//! swarm over mutual TLS on 2377, driven through their local API sockets
//! (what the `shoal` CLI uses) and, for the CLI's own words, through `shoal`.
//!
//! Needs root (namespaces); `scripts/test` runs it.

#[path = "../common/http.rs"]
mod http;

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
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.daemons.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Swarm {
    fn new(nodes: usize) -> Result<Swarm> {
        let topo = Topology::builder().nodes(nodes).build()?;
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
        };
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
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            );
        self.daemons[i] = Some(self.topo.node(i).ns().spawn(cmd)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http(&sock, "GET", "/v1/dataplane", None), Ok((503, _))) {
            if Instant::now() > deadline {
                bail!("shoald on node {i} did not come up; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills node `i`'s daemon (SIGKILL: nothing is flushed on the way out).
    fn kill(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
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
        let a0 = self.addr(0).to_string();
        self.shoal_ok(0, &["swarm", "init", "--advertise-addr", &a0]);
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
    for i in 0..4 {
        s.kill(i);
    }
    for i in 0..4 {
        s.start(i).unwrap();
    }
    s.wait_for(
        Duration::from_secs(20),
        "a leader after the restart",
        || Ok(s.op(1, &json!({"op": "nodes"}))?.0 == 200),
    )
    .unwrap();
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
    // The recovered swarm takes writes.
    assert_eq!(s.op(0, &label_op("node3", "after")).unwrap().0, 200);
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
    s.shoal_ok(2, &["swarm", "init", "--advertise-addr", &a2]);
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
