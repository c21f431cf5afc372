//! Committed writes per second: shoal's managers against etcd, in one run.
//!
//! Every system gets the same writes, one small key/value each, sent by the
//! same client code over HTTP/1.1 keep-alive connections: shoal's through a
//! manager's local API socket (what `shoal node update --label-add` uses, a
//! Raft write of the label on the leader), etcd's through its JSON gateway
//! (`/v3/kv/put`, which is its Raft write too). Keys cycle over a fixed set so
//! the state stays the same size through the run. A write counts when its
//! answer says it is committed; both systems fsync before answering.
//!
//! Shoal runs with 1 and 3 managers, etcd with 1 and 3 members (the issue asks
//! for 3; the single member shows the cost of replication on each side). The
//! members are network namespaces of one topology, so replication crosses
//! veths and a bridge rather than loopback. Clients run on the leader's node
//! and talk to the leader, so neither side pays for forwarding.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use shoal_topology::{ManagedChild, Topology};

use crate::http::Http;

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Writes per measurement.
    pub writes: u32,
    /// Client counts to measure (each client is one connection writing in a loop).
    pub clients: Vec<u32>,
    /// Where the members keep their data (on disk: fsync must cost what it costs).
    pub data_dir: PathBuf,
    /// Where the results go.
    pub out_dir: PathBuf,
    /// Leave etcd out (when it is not installed).
    pub etcd: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            writes: 2000,
            clients: vec![1, 16],
            data_dir: PathBuf::from("target/bench/raft-data"),
            out_dir: PathBuf::from("target/bench"),
            etcd: true,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `shoal` or `etcd`.
    pub system: String,
    /// Voting members.
    pub members: u32,
    /// Concurrent clients.
    pub clients: u32,
    /// Writes committed.
    pub writes: u32,
    /// Committed writes per second.
    pub writes_per_sec: f64,
    /// Median write latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile write latency, microseconds.
    pub p99_us: u64,
}

/// Keys cycle over this many names.
const KEYS: u32 = 1000;

/// Runs every system at every client count.
pub fn run(settings: &Settings) -> Result<Vec<Row>> {
    ensure!(settings.writes > 0, "--writes must be at least 1");
    if settings.etcd && !crate::installed("etcd") {
        bail!(
            "etcd is not installed (scripts/install-deps installs etcd-server); or pass --no-etcd"
        );
    }
    let mut rows = Vec::new();
    for members in [1u32, 3] {
        rows.extend(measure("shoal", members, settings, |topo, dir| {
            ShoalCluster::start(topo, dir, members)
        })?);
        if settings.etcd {
            rows.extend(measure("etcd", members, settings, |topo, dir| {
                EtcdCluster::start(topo, dir, members)
            })?);
        }
    }
    Ok(rows)
}

/// A cluster under test: where the writing clients connect and how they write.
trait Cluster: Sync {
    /// A new client connection to the leader.
    fn connect(&self) -> Result<Box<dyn Writer>>;
}

/// One client's connection.
trait Writer: Send {
    /// Writes `key = value`, returning once it is committed.
    fn put(&mut self, key: &str, value: &str) -> Result<()>;
}

fn measure<C: Cluster>(
    system: &str,
    members: u32,
    settings: &Settings,
    start: impl FnOnce(&Topology, &Path) -> Result<C>,
) -> Result<Vec<Row>> {
    let topo = Topology::builder().nodes(members as usize).build()?;
    let dir = settings
        .data_dir
        .join(format!("{system}-{members}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let result = (|| {
        let cluster =
            start(&topo, &dir).with_context(|| format!("starting {system} x{members}"))?;
        let mut rows = Vec::new();
        for &clients in &settings.clients {
            // The clients run inside the leader's node: etcd is reached over
            // its address there; shoal's socket is a path, reachable anywhere.
            let (elapsed, mut lat) = topo
                .node(0)
                .ns()
                .run(|| drive(&cluster, clients, settings.writes))??;
            lat.sort_unstable();
            let row = Row {
                system: system.to_owned(),
                members,
                clients,
                writes: settings.writes,
                writes_per_sec: f64::from(settings.writes) / elapsed.as_secs_f64(),
                p50_us: percentile(&lat, 50),
                p99_us: percentile(&lat, 99),
            };
            eprintln!(
                "{system} x{members}, {clients} clients: {:.0} writes/s, p50 {} us, p99 {} us",
                row.writes_per_sec, row.p50_us, row.p99_us
            );
            rows.push(row);
        }
        drop(cluster);
        Ok(rows)
    })();
    drop(topo);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `clients` connections writing `writes` keys between them; wall time and latencies.
fn drive(cluster: &dyn Cluster, clients: u32, writes: u32) -> Result<(Duration, Vec<u64>)> {
    let conns = (0..clients)
        .map(|_| cluster.connect())
        .collect::<Result<Vec<_>>>()?;
    let value = "v".repeat(16);
    let started = Instant::now();
    let per_client = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, mut conn)| {
                let value = &value;
                s.spawn(move || -> Result<Vec<u64>> {
                    let c = c as u32;
                    let mut lat = Vec::new();
                    // Client c writes n = c, c + clients, c + 2 clients, ...
                    for n in (c..writes).step_by(clients as usize) {
                        let t = Instant::now();
                        conn.put(&format!("k{}", n % KEYS), value)
                            .with_context(|| format!("write {n}"))?;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed();
    Ok((elapsed, per_client.into_iter().flatten().collect()))
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

// --- shoal -----------------------------------------------------------------

struct ShoalCluster {
    sock: PathBuf,
    host: String,
    _daemons: Vec<ManagedChild>,
}

impl ShoalCluster {
    /// `members` managers: init on node 0, the others join with the manager token.
    fn start(topo: &Topology, dir: &Path, members: u32) -> Result<ShoalCluster> {
        let exe = std::env::current_exe()?;
        let mut daemons = Vec::new();
        let socks: Vec<PathBuf> = (0..members)
            .map(|i| dir.join(format!("node{i}.sock")))
            .collect();
        for (i, sock) in socks.iter().enumerate() {
            let mut cmd = topo.node(i).ns().command(&exe);
            cmd.arg("shoald")
                .arg("--state-dir")
                .arg(dir.join(format!("state{i}")))
                .arg("--control")
                .arg(sock)
                .arg("--hostname")
                .arg(format!("node{i}"))
                .arg("--log")
                .arg("warn,openraft=error");
            daemons.push(topo.node(i).ns().spawn(cmd)?);
        }
        for s in &socks {
            crate::wait_for_socket(s)?;
        }
        let a0 = topo.node(0).addr();
        call(
            &socks[0],
            "/v1/swarm/init",
            &json!({ "advertise_addr": a0.to_string() }),
        )?;
        let token = call(
            &socks[0],
            "/v1/swarm/op",
            &json!({ "op": "join_token", "role": "manager", "rotate": false }),
        )?;
        let token = token["value"]["token"]
            .as_str()
            .with_context(|| format!("no token in {token}"))?
            .to_owned();
        for (i, s) in socks.iter().enumerate().skip(1) {
            call(
                s,
                "/v1/swarm/join",
                &json!({
                    "token": token,
                    "remote": SocketAddr::from((a0, 2377)).to_string(),
                    "advertise_addr": topo.node(i).addr().to_string(),
                }),
            )?;
        }
        wait_until(Duration::from_secs(30), "every manager voting", || {
            let mut conn = Http::new(UnixStream::connect(&socks[0])?)?;
            let (code, info) = conn.request("GET", "/v1/swarm", "")?;
            let info: Value = serde_json::from_str(&info).unwrap_or_default();
            Ok(code == 200
                && info["raft_voters"].as_array().map_or(0, Vec::len) == members as usize
                && info["raft_leader"] == info["raft_id"])
        })?;
        Ok(ShoalCluster {
            sock: socks[0].clone(),
            host: "node0".into(),
            _daemons: daemons,
        })
    }
}

/// One request on a fresh connection to a shoald socket, insisting on 200.
fn call(sock: &Path, path: &str, body: &Value) -> Result<Value> {
    let mut conn = Http::new(UnixStream::connect(sock)?)?;
    let (code, answer) = conn.request("POST", path, &body.to_string())?;
    ensure!(code == 200, "POST {path}: HTTP {code}: {answer}");
    Ok(serde_json::from_str(&answer).unwrap_or(Value::Null))
}

impl Cluster for ShoalCluster {
    fn connect(&self) -> Result<Box<dyn Writer>> {
        Ok(Box::new(ShoalWriter {
            http: Http::new(UnixStream::connect(&self.sock)?)?,
            host: self.host.clone(),
        }))
    }
}

struct ShoalWriter {
    http: Http<UnixStream>,
    host: String,
}

impl Writer for ShoalWriter {
    fn put(&mut self, key: &str, value: &str) -> Result<()> {
        let body = json!({
            "op": "update_node", "key": self.host, "availability": null,
            "label_add": { key: value }, "label_rm": [],
        });
        let (code, answer) = self
            .http
            .request("POST", "/v1/swarm/op", &body.to_string())?;
        ensure!(code == 200, "shoal: HTTP {code}: {answer}");
        Ok(())
    }
}

// --- etcd ------------------------------------------------------------------

struct EtcdCluster {
    leader: SocketAddr,
    _members: Vec<ManagedChild>,
}

impl EtcdCluster {
    /// `members` etcd members, one per node, a fresh cluster in `dir`.
    fn start(topo: &Topology, dir: &Path, members: u32) -> Result<EtcdCluster> {
        let addrs: Vec<Ipv4Addr> = (0..members as usize).map(|i| topo.node(i).addr()).collect();
        let initial = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("m{i}=http://{a}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let mut cmd = topo.node(i).ns().command("etcd");
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .arg("--listen-peer-urls")
                .arg(format!("http://{a}:2380"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{a}:2380"))
                .arg("--listen-client-urls")
                .arg(format!("http://{a}:2379"))
                .arg("--advertise-client-urls")
                .arg(format!("http://{a}:2379"))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("shoal-bench")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            children.push(topo.node(i).ns().spawn(cmd)?);
        }
        // The leader, as the members see it (the gateway prints ids as strings).
        let mut leader = None;
        let clients: Vec<SocketAddr> = addrs.iter().map(|a| SocketAddr::from((*a, 2379))).collect();
        wait_until(Duration::from_secs(30), "an etcd leader", || {
            for c in &clients {
                let status = topo.node(0).ns().run(|| -> Result<Value> {
                    let mut conn =
                        Http::new(TcpStream::connect_timeout(c, Duration::from_secs(1))?)?;
                    let (code, body) = conn.request("POST", "/v3/maintenance/status", "{}")?;
                    ensure!(code == 200, "status: HTTP {code}");
                    Ok(serde_json::from_str(&body)?)
                })??;
                let me = &status["header"]["member_id"];
                if !me.is_null() && status["leader"] == *me {
                    leader = Some(*c);
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        Ok(EtcdCluster {
            leader: leader.context("no etcd leader")?,
            _members: children,
        })
    }
}

impl Cluster for EtcdCluster {
    fn connect(&self) -> Result<Box<dyn Writer>> {
        let stream = TcpStream::connect_timeout(&self.leader, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        Ok(Box::new(EtcdWriter {
            http: Http::new(stream)?,
        }))
    }
}

struct EtcdWriter {
    http: Http<TcpStream>,
}

impl Writer for EtcdWriter {
    fn put(&mut self, key: &str, value: &str) -> Result<()> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = json!({ "key": b64.encode(key), "value": b64.encode(value) });
        let (code, answer) = self.http.request("POST", "/v3/kv/put", &body.to_string())?;
        ensure!(code == 200, "etcd: HTTP {code}: {answer}");
        // A committed put answers with the new revision in its header.
        ensure!(
            answer.contains("\"revision\""),
            "etcd: unexpected answer {answer}"
        );
        Ok(())
    }
}

// --- plumbing --------------------------------------------------------------

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {limit:?} waiting for {what} (last error: {last})")
}

/// The results as a Markdown table, with each shoal row's ratio to etcd's
/// row of the same members and clients.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| system | members | clients | writes/s | p50 | p99 | vs etcd |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let peer = rows
            .iter()
            .find(|p| p.system == "etcd" && p.members == r.members && p.clients == r.clients);
        let ratio = match peer {
            Some(p) if r.system == "shoal" => {
                format!("{:.2}x", r.writes_per_sec / p.writes_per_sec)
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} us | {} us | {ratio} |\n",
            r.system, r.members, r.clients, r.writes_per_sec, r.p50_us, r.p99_us
        ));
    }
    out
}

/// Writes `raft.json` and `raft.md` into `dir`.
pub fn write_files(rows: &[Row], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("raft.json"), serde_json::to_string_pretty(rows)?)?;
    std::fs::write(dir.join("raft.md"), render(rows))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_latencies() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 51);
        assert_eq!(percentile(&v, 99), 100);
        assert_eq!(percentile(&[], 99), 0);
    }

    #[test]
    fn ratio_is_against_etcd_with_the_same_shape() {
        let row = |system: &str, members, clients, wps| Row {
            system: system.into(),
            members,
            clients,
            writes: 10,
            writes_per_sec: wps,
            p50_us: 1,
            p99_us: 2,
        };
        let t = render(&[
            row("shoal", 3, 16, 500.0),
            row("etcd", 3, 1, 100.0),
            row("etcd", 3, 16, 1000.0),
        ]);
        assert!(
            t.contains("| shoal | 3 | 16 | 500 | 1 us | 2 us | 0.50x |"),
            "{t}"
        );
    }
}
