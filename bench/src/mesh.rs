//! The routing mesh against a direct connection and HAProxy, in one run.
//!
//! Two swarm nodes (node1 manager, node2 worker, real `shoald` daemons in
//! namespaces of the topology crate) and a client namespace on the same
//! underlay. Each server program runs twice on node2: as a task of a service
//! published through the mesh, and as a plain process in node2's namespace.
//! From the client, one path after another:
//!
//! - **direct**: node2's plain processes on its underlay address: no proxy,
//!   no overlay, the floor every other path is compared with;
//! - **mesh**: node1's published ports. node1 runs no task, so shoald on
//!   node1 accepts, picks node2's task with Maglev and connects from its
//!   ingress sandbox, over the VXLAN overlay: one userspace proxy hop plus
//!   the overlay;
//! - **HAProxy**, on the same path: Debian's haproxy in tcp mode listening
//!   in node1's namespace and connecting from node1's ingress sandbox (its
//!   `namespace` server option, the sandbox bound to a name under
//!   /run/netns) to the same task on its ingress address: the mesh's path
//!   with HAProxy in place of shoald's relay;
//! - **HAProxy without the overlay**: the same HAProxy forwarding to node2's
//!   plain processes on the underlay: one proxy hop and nothing else, the
//!   cost of a userspace hop alone on this machine.
//!
//! Connection rate: our own load generator ([`hammer`]), `concurrency`
//! threads in the client namespace, each doing connect, `GET / HTTP/1.0`,
//! read to EOF, close, against `shoal whoami`. Throughput: iperf3, one
//! stream, against `iperf3 -s`. The CPU time of the processes on the path
//! (the proxy on node1, node2's shoald) is read from /proc around each run.
//!
//! Nothing here asserts a speed: the figures are printed and written to
//! `mesh.json`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shoal_topology::{ManagedChild, Namespace, Topology};

use crate::http::Http;

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds of load per path and per measurement.
    pub seconds: u32,
    /// Connections in flight in the load generator (one thread each).
    pub concurrency: u32,
    /// Where mesh.json goes.
    pub out_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seconds: 5,
            concurrency: 32,
            out_dir: PathBuf::from("target/bench"),
        }
    }
}

/// One measured path.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `direct`, `haproxy` or `mesh`.
    pub path: String,
    /// Where the load generator connected.
    pub conn_target: String,
    /// Where iperf3 connected.
    pub iperf_target: String,
    /// Completed requests (connect, GET, read to EOF) per second.
    pub conns_per_s: f64,
    /// Completed requests.
    pub ok: u64,
    /// Failed requests (connect, write, read, or an answer that is not 200).
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Latency of one request, median, milliseconds.
    pub latency_p50_ms: f64,
    /// Latency of one request, 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
    /// CPU seconds of the proxy process on node1 (haproxy or node1's shoald)
    /// during the connection run, per 10 000 requests; 0 for direct.
    pub proxy_cpu_s_per_10k: f64,
    /// CPU seconds of node1's shoald during the connection run, per 10 000
    /// requests (for the mesh the relay and the overlay, for HAProxy on the
    /// same path the overlay alone; near 0 off the overlay).
    pub node1_shoald_cpu_s_per_10k: f64,
    /// CPU seconds of node2's shoald during the connection run, per 10 000
    /// requests (the overlay's receiving end; near 0 off the overlay).
    pub node2_shoald_cpu_s_per_10k: f64,
    /// iperf3, one stream, Gbit/s received.
    pub gbps: f64,
    /// CPU seconds of the proxy process on node1 per GB moved by iperf3.
    pub proxy_cpu_s_per_gb: f64,
}

/// The whole run, as written to mesh.json.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds per measurement.
    pub seconds: u32,
    /// Load generator threads.
    pub concurrency: u32,
    /// One row per path: direct, haproxy-underlay, haproxy, mesh.
    pub rows: Vec<Row>,
    /// mesh / direct, connections per second.
    pub mesh_vs_direct_conns: f64,
    /// mesh / haproxy on the same path, connections per second.
    pub mesh_vs_haproxy_conns: f64,
    /// mesh / haproxy without the overlay, connections per second.
    pub mesh_vs_haproxy_underlay_conns: f64,
    /// mesh / direct, Gbit/s.
    pub mesh_vs_direct_gbps: f64,
    /// mesh / haproxy on the same path, Gbit/s.
    pub mesh_vs_haproxy_gbps: f64,
    /// mesh / haproxy without the overlay, Gbit/s.
    pub mesh_vs_haproxy_underlay_gbps: f64,
}

/// The server programs' ports: plain processes on node2, HAProxy on node1,
/// the published ports of the two services.
const DIRECT_HTTP: u16 = 8080;
const DIRECT_IPERF: u16 = 8081;
const HAPROXY_HTTP: u16 = 6000;
const HAPROXY_IPERF: u16 = 6001;
const HAPROXY_UNDERLAY_HTTP: u16 = 6100;
const HAPROXY_UNDERLAY_IPERF: u16 = 6101;
const MESH_HTTP: u16 = 5000;
const MESH_IPERF: u16 = 5001;

/// Installs haproxy and iperf3 from Debian when missing.
pub fn ensure_tools() -> Result<()> {
    if ["haproxy", "iperf3"].iter().all(|t| crate::installed(t)) {
        return Ok(());
    }
    eprintln!("installing haproxy and iperf3 (apt-get) ...");
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy iperf3 >/dev/null"])
        .status()?
        .success();
    if !ok {
        bail!("cannot install haproxy and iperf3 with apt-get");
    }
    Ok(())
}

/// Where `program` is on the PATH.
fn which(program: &str) -> Result<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        bail!("{program} is not on the PATH");
    }
    Ok(PathBuf::from(path))
}

/// The `shoal` CLI built beside this binary (`cargo build --release -p shoal
/// --bins -p shoal-bench`): it forms the swarm, creates the services and is
/// the HTTP server (`shoal whoami`).
fn shoal_cli() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let cli = exe.with_file_name("shoal");
    if !cli.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p shoal --bins -p shoal-bench`",
            cli.display()
        );
    }
    Ok(cli)
}

/// Everything the run set up. Dropping it stops every process (HAProxy,
/// the plain servers, the daemons, which stop their tasks), then removes the
/// namespaces and the scratch directory, also when a step failed.
struct Lab {
    haproxy: Option<ManagedChild>,
    /// node1's ingress sandbox under /run/netns, for HAProxy.
    sandbox: Option<NamedNetns>,
    direct: Vec<ManagedChild>,
    daemons: Vec<ManagedChild>,
    cli: PathBuf,
    dir: PathBuf,
    // Last: its drop kills what is left in the namespaces and removes them.
    topo: Topology,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.haproxy = None;
        self.sandbox = None;
        self.direct.clear();
        self.daemons.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn node(&self, i: usize) -> &Namespace {
        self.topo.node(i).ns()
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        self.topo.node(i).addr()
    }

    fn client(&self) -> &Namespace {
        self.topo.client(0).ns()
    }

    fn sock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.sock", i + 1))
    }

    /// `shoal ARGS` against node `i`'s daemon, inside node `i`; its stdout.
    fn shoal(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self
            .node(i)
            .command(&self.cli)
            .args(args)
            .env("SHOAL_CONTROL", self.sock(i))
            .output()
            .with_context(|| format!("cannot run shoal {args:?}"))?;
        if !out.status.success() {
            bail!(
                "shoal {args:?} on node{} failed: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Two nodes, one client, a shoald per node; node1 inits the swarm and
    /// node2 joins it as a worker.
    fn up() -> Result<Lab> {
        let cli = shoal_cli()?;
        let topo = Topology::builder().nodes(2).clients(1).build()?;
        let dir = std::env::temp_dir().join(format!("shoal-bench-mesh-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            haproxy: None,
            sandbox: None,
            direct: Vec::new(),
            daemons: Vec::new(),
            cli,
            dir,
            topo,
        };
        // Room for a few seconds of short connections from one address.
        for ns in [lab.client(), lab.node(0)] {
            ns.output(["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])?;
        }
        let exe = std::env::current_exe()?;
        for i in 0..2 {
            let log = std::fs::File::create(lab.dir.join(format!("node{}.log", i + 1)))?;
            let mut cmd = lab.node(i).command(&exe);
            cmd.arg("shoald")
                .arg("--state-dir")
                .arg(lab.dir.join(format!("state{}", i + 1)))
                .arg("--control")
                .arg(lab.sock(i))
                .arg("--hostname")
                .arg(format!("node{}", i + 1))
                .arg("--log")
                .arg("warn,openraft=error")
                .stdout(Stdio::null())
                .stderr(log);
            let child = lab.node(i).spawn(cmd)?;
            lab.daemons.push(child);
            crate::wait_for_socket(&lab.sock(i))?;
        }
        let a1 = lab.addr(0).to_string();
        lab.shoal(0, &["swarm", "init", "--advertise-addr", &a1])?;
        let token = lab.shoal(0, &["swarm", "join-token", "-q", "worker"])?;
        lab.shoal(
            1,
            &[
                "swarm",
                "join",
                "--token",
                token.trim(),
                &format!("{a1}:2377"),
            ],
        )?;
        Ok(lab)
    }

    /// The last lines of the daemons' and HAProxy's logs, for an error
    /// message.
    fn logs(&self) -> String {
        ["node1.log", "node2.log", "haproxy.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {f} ---\n{}\n", tail.join("\n"))
            })
            .collect()
    }

    /// A service of one task on node2, `published`:80, running `command`;
    /// waits until its task runs.
    fn service(&self, name: &str, published: u16, command: &[&str]) -> Result<()> {
        let port = format!("{published}:80");
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            "1",
            "--constraint",
            "node.hostname==node2",
            "-p",
            &port,
            "--",
        ];
        args.extend_from_slice(command);
        self.shoal(0, &args)?;
        wait_for(
            Duration::from_secs(60),
            &format!("{name}'s task running"),
            || {
                Ok(self
                    .shoal(0, &["service", "ps", name])?
                    .to_lowercase()
                    .contains("running"))
            },
        )
        .with_context(|| self.logs())
    }

    /// `shoal whoami` and `iperf3 -s` as plain processes in node2's namespace.
    fn direct_servers(&mut self) -> Result<()> {
        let ns = self.node(1).clone();
        let mut whoami = ns.command(&self.cli);
        whoami
            .args(["whoami", "--port", &DIRECT_HTTP.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.direct.push(ns.spawn(whoami)?);
        let mut iperf = ns.command("iperf3");
        iperf
            .args(["-s", "-p", &DIRECT_IPERF.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.direct.push(ns.spawn(iperf)?);
        Ok(())
    }

    /// node1's ingress sandbox, bound under /run/netns for HAProxy's
    /// `namespace` option. shoald's thread that makes the sandbox's sockets
    /// lives in it, so its namespace is the sandbox's.
    fn bind_sandbox(&mut self) -> Result<String> {
        let pid = self.daemons[0].id();
        let thread = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(|t| t.ok())
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "ingress-sockets")
            })
            .with_context(|| format!("node1's shoald (pid {pid}) has no ingress-sockets thread"))?;
        let name = format!("shoal-bench-ingress-{}", std::process::id());
        let bound = NamedNetns::bind(&thread.path().join("ns/net"), &name)?;
        self.sandbox = Some(bound);
        Ok(name)
    }

    /// HAProxy in node1's namespace, tcp mode, two threads (one per core of
    /// the machine):
    /// - node1:6000 and :6001 to the tasks `web` and `tput` at their ingress
    ///   addresses `tasks`, connecting from the ingress sandbox `sandbox`:
    ///   the mesh's path;
    /// - node1:6100 and :6101 to node2's plain servers on the underlay.
    ///
    /// `option tcp-smart-connect` saves the handshake's last ACK towards the
    /// server as shoald's relay does, so the two send the same packets.
    /// maxconn is far above the load's concurrency but low enough that the
    /// two descriptors per connection fit under a 20 000 hard limit: HAProxy
    /// refuses to start when it cannot raise its limit to fit maxconn.
    fn haproxy(&mut self, sandbox: &str, tasks: [Ipv4Addr; 2]) -> Result<()> {
        let (n1, n2) = (self.addr(0), self.addr(1));
        let [web, tput] = tasks;
        let cfg = format!(
            "global\n  maxconn 8000\n  nbthread 2\n\n\
             defaults\n  mode tcp\n  option tcp-smart-connect\n  maxconn 8000\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\n\
             frontend http_in\n  bind {n1}:{HAPROXY_HTTP}\n  default_backend http_task\n\
             backend http_task\n  server web {web}:80 namespace {sandbox}\n\n\
             frontend iperf_in\n  bind {n1}:{HAPROXY_IPERF}\n  default_backend iperf_task\n\
             backend iperf_task\n  server tput {tput}:80 namespace {sandbox}\n\n\
             frontend http_underlay\n  bind {n1}:{HAPROXY_UNDERLAY_HTTP}\n  default_backend http_direct\n\
             backend http_direct\n  server node2 {n2}:{DIRECT_HTTP}\n\n\
             frontend iperf_underlay\n  bind {n1}:{HAPROXY_UNDERLAY_IPERF}\n  default_backend iperf_direct\n\
             backend iperf_direct\n  server node2 {n2}:{DIRECT_IPERF}\n"
        );
        let path = self.dir.join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let check = self
            .node(0)
            .command("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .output()?;
        if !check.status.success() {
            bail!(
                "haproxy refuses {}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::File::create(self.dir.join("haproxy.log"))?;
        let mut cmd = self.node(0).command("haproxy");
        cmd.arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(log);
        self.haproxy = Some(self.node(0).spawn(cmd)?);
        Ok(())
    }
}

/// A network namespace bound to /run/netns/NAME (as `ip netns` would name
/// it); unmounted and removed when dropped.
struct NamedNetns {
    path: PathBuf,
}

impl NamedNetns {
    fn bind(ns: &Path, name: &str) -> Result<NamedNetns> {
        let dir = Path::new("/run/netns");
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        std::fs::File::create(&path)?;
        let bound = NamedNetns { path };
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(ns)
            .arg(&bound.path)
            .status()?
            .success();
        if !ok {
            bail!("cannot bind {} to {}", ns.display(), bound.path.display());
        }
        Ok(bound)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The ingress address of the running task of each of `services`, from
/// gossip as node `i`'s daemon sees it (`GET /v1/discovery`).
fn ingress_addresses<const N: usize>(
    lab: &Lab,
    i: usize,
    services: [&str; N],
) -> Result<[Ipv4Addr; N]> {
    let sock = std::os::unix::net::UnixStream::connect(lab.sock(i))?;
    let (code, body) = Http::new(sock)?.request("GET", "/v1/discovery", "")?;
    if code != 200 {
        bail!("GET /v1/discovery: HTTP {code}: {body}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("GET /v1/discovery: {body}"))?;
    let ingress = v["networks"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "ingress"))
        .context("GET /v1/discovery: no ingress network")?;
    let endpoints = ingress["endpoints"].as_array().cloned().unwrap_or_default();
    let mut out = [Ipv4Addr::UNSPECIFIED; N];
    for (slot, service) in out.iter_mut().zip(services) {
        *slot = endpoints
            .iter()
            .find(|e| e["service_name"] == service)
            .and_then(|e| e["ip"].as_str()?.parse().ok())
            .with_context(|| format!("no endpoint of {service} on the ingress network yet"))?;
    }
    Ok(out)
}

fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
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
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What one load run measured.
#[derive(Debug, Default)]
pub struct Load {
    /// Completed requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Wall time from the start to the last worker's end.
    pub elapsed: Duration,
    /// Each completed request's latency, microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n";

/// One request on a new connection: connect, GET, read to EOF, close.
fn one_request(to: SocketAddr, buf: &mut [u8]) -> std::io::Result<()> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(REQUEST)?;
    let mut head = [0u8; 12];
    let mut got = 0;
    loop {
        let n = c.read(buf)?;
        if n == 0 {
            break;
        }
        let take = n.min(head.len() - got);
        head[got..got + take].copy_from_slice(&buf[..take]);
        got += take;
    }
    if !(head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200")) {
        return Err(std::io::Error::other(format!(
            "not a 200 answer: {:?}",
            String::from_utf8_lossy(&head[..got])
        )));
    }
    Ok(())
}

/// `concurrency` threads in `ns`, each doing one request after another to
/// `to` for `seconds`. Requests in flight at the end finish and count.
pub fn hammer(ns: &Namespace, to: SocketAddr, concurrency: u32, seconds: u32) -> Result<Load> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(u64::from(seconds));
    let per_thread: Vec<Load> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(move || {
                    ns.run(move || {
                        let mut load = Load::default();
                        let mut buf = vec![0u8; 16 * 1024];
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match one_request(to, &mut buf) {
                                Ok(()) => {
                                    load.ok += 1;
                                    let us = t.elapsed().as_micros();
                                    load.latencies_us
                                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                                }
                                Err(e) => {
                                    load.errors += 1;
                                    load.first_error.get_or_insert_with(|| e.to_string());
                                    // No busy loop on a refusing port.
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                            }
                        }
                        load
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| match w.join() {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect::<Result<Vec<Load>>>()
    })?;
    let mut total = Load {
        elapsed: start.elapsed(),
        ..Load::default()
    };
    for l in per_thread {
        total.ok += l.ok;
        total.errors += l.errors;
        if total.first_error.is_none() {
            total.first_error = l.first_error;
        }
        total.latencies_us.extend(l.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

/// iperf3 from `ns` to `to`, one stream: (Gbit/s received, bytes).
fn iperf(ns: &Namespace, to: SocketAddrV4, seconds: u32) -> Result<(f64, f64)> {
    let out = ns
        .command("iperf3")
        .args([
            "-c",
            &to.ip().to_string(),
            "-p",
            &to.port().to_string(),
            "-J",
            "-t",
            &seconds.to_string(),
            "-P",
            "1",
        ])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 to {to} gave no JSON"))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 to {to}: {e}");
    }
    let sum = &v["end"]["sum_received"];
    Ok((
        sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        sum["bytes"].as_f64().unwrap_or(0.0),
    ))
}

/// CPU seconds (user + system, all threads) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of `pids` (0: none) used while `f` ran, and its result.
fn with_cpu<R, const N: usize>(
    pids: [u32; N],
    f: impl FnOnce() -> Result<R>,
) -> Result<([f64; N], R)> {
    let cpu = |p: u32| if p == 0 { 0.0 } else { cpu_seconds(p) };
    let before = pids.map(cpu);
    let r = f()?;
    let after = pids.map(cpu);
    Ok((std::array::from_fn(|i| after[i] - before[i]), r))
}

/// One path: the load generator to `http`, iperf3 to `iperf`, with the CPU
/// time of `proxy` and of node2's shoald (pids, 0 for none).
fn measure(
    lab: &Lab,
    path: &str,
    http: SocketAddrV4,
    iperf_to: SocketAddrV4,
    proxy: u32,
    s: &Settings,
) -> Result<Row> {
    eprintln!("measuring {path}: connections to {http} ...");
    let (node1, node2) = (lab.daemons[0].id(), lab.daemons[1].id());
    let ([p_cpu, n1_cpu, n2_cpu], load) = with_cpu([proxy, node1, node2], || {
        hammer(lab.client(), SocketAddr::V4(http), s.concurrency, s.seconds)
    })?;
    eprintln!("measuring {path}: iperf3 to {iperf_to} ...");
    let ([p_cpu_tput, _], (gbps, bytes)) =
        with_cpu([proxy, node2], || iperf(lab.client(), iperf_to, s.seconds))?;
    let per_10k = |cpu: f64| {
        if load.ok > 0 {
            cpu / (load.ok as f64 / 10_000.0)
        } else {
            f64::NAN
        }
    };
    Ok(Row {
        path: path.to_string(),
        conn_target: http.to_string(),
        iperf_target: iperf_to.to_string(),
        conns_per_s: load.ok as f64 / load.elapsed.as_secs_f64(),
        ok: load.ok,
        errors: load.errors,
        first_error: load.first_error,
        latency_p50_ms: percentile_ms(&load.latencies_us, 0.5),
        latency_p99_ms: percentile_ms(&load.latencies_us, 0.99),
        proxy_cpu_s_per_10k: per_10k(p_cpu),
        node1_shoald_cpu_s_per_10k: per_10k(n1_cpu),
        node2_shoald_cpu_s_per_10k: per_10k(n2_cpu),
        gbps,
        proxy_cpu_s_per_gb: if bytes > 0.0 {
            p_cpu_tput / (bytes / 1e9)
        } else {
            f64::NAN
        },
    })
}

/// Sets everything up, measures direct, HAProxy and the mesh, tears down.
pub fn run(s: &Settings) -> Result<Report> {
    ensure_tools()?;
    let iperf3 = which("iperf3")?;
    eprintln!("starting two shoald nodes and a client ...");
    let mut lab = Lab::up()?;
    let cli = lab.cli.display().to_string();
    let iperf3 = iperf3.display().to_string();
    lab.service("web", MESH_HTTP, &[&cli, "whoami", "--port", "80"])?;
    lab.service("tput", MESH_IPERF, &[&iperf3, "-s", "-p", "80"])?;
    lab.direct_servers()?;
    let mut tasks = [Ipv4Addr::UNSPECIFIED; 2];
    wait_for(
        Duration::from_secs(30),
        "the tasks in node1's gossip view",
        || {
            tasks = ingress_addresses(&lab, 0, ["web", "tput"])?;
            Ok(true)
        },
    )
    .with_context(|| lab.logs())?;
    let sandbox = lab.bind_sandbox()?;
    lab.haproxy(&sandbox, tasks)?;

    let (n1, n2) = (lab.addr(0), lab.addr(1));
    let at = SocketAddrV4::new;
    // Every path answers before anything is measured: the mesh only once
    // gossip has told node1 where the tasks are.
    let client = lab.client().clone();
    for (what, http, iperf_to) in [
        ("direct", at(n2, DIRECT_HTTP), at(n2, DIRECT_IPERF)),
        (
            "haproxy-underlay",
            at(n1, HAPROXY_UNDERLAY_HTTP),
            at(n1, HAPROXY_UNDERLAY_IPERF),
        ),
        ("haproxy", at(n1, HAPROXY_HTTP), at(n1, HAPROXY_IPERF)),
        ("mesh", at(n1, MESH_HTTP), at(n1, MESH_IPERF)),
    ] {
        wait_for(
            Duration::from_secs(30),
            &format!("{what} to answer HTTP"),
            || {
                let mut buf = [0u8; 4096];
                client.run(|| one_request(SocketAddr::V4(http), &mut buf))??;
                Ok(true)
            },
        )
        .with_context(|| lab.logs())?;
        wait_for(
            Duration::from_secs(30),
            &format!("{what} to answer iperf3"),
            || iperf(&client, iperf_to, 1).map(|_| true),
        )
        .with_context(|| lab.logs())?;
    }

    let haproxy_pid = lab.haproxy.as_ref().map_or(0, ManagedChild::id);
    let node1_pid = lab.daemons[0].id();
    let rows = vec![
        measure(
            &lab,
            "direct",
            at(n2, DIRECT_HTTP),
            at(n2, DIRECT_IPERF),
            0,
            s,
        )?,
        measure(
            &lab,
            "haproxy-underlay",
            at(n1, HAPROXY_UNDERLAY_HTTP),
            at(n1, HAPROXY_UNDERLAY_IPERF),
            haproxy_pid,
            s,
        )?,
        measure(
            &lab,
            "haproxy",
            at(n1, HAPROXY_HTTP),
            at(n1, HAPROXY_IPERF),
            haproxy_pid,
            s,
        )?,
        measure(
            &lab,
            "mesh",
            at(n1, MESH_HTTP),
            at(n1, MESH_IPERF),
            node1_pid,
            s,
        )?,
    ];
    drop(lab);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let (d, u, h, m) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    Ok(Report {
        seconds: s.seconds,
        concurrency: s.concurrency,
        mesh_vs_direct_conns: ratio(m.conns_per_s, d.conns_per_s),
        mesh_vs_haproxy_conns: ratio(m.conns_per_s, h.conns_per_s),
        mesh_vs_haproxy_underlay_conns: ratio(m.conns_per_s, u.conns_per_s),
        mesh_vs_direct_gbps: ratio(m.gbps, d.gbps),
        mesh_vs_haproxy_gbps: ratio(m.gbps, h.gbps),
        mesh_vs_haproxy_underlay_gbps: ratio(m.gbps, u.gbps),
        rows,
    })
}

/// The table and the ratios.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "{:<16} {:>10} {:>8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>9} {:>10}\n",
        "PATH",
        "CONN/S",
        "ERRORS",
        "p50 ms",
        "p99 ms",
        "PROXY s/10k",
        "NODE1 s/10k",
        "NODE2 s/10k",
        "GBIT/S",
        "PROXY s/GB"
    );
    for row in &r.rows {
        out += &format!(
            "{:<16} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>11.2} {:>9.2} {:>10.2}\n",
            row.path,
            row.conns_per_s,
            row.errors,
            row.latency_p50_ms,
            row.latency_p99_ms,
            row.proxy_cpu_s_per_10k,
            row.node1_shoald_cpu_s_per_10k,
            row.node2_shoald_cpu_s_per_10k,
            row.gbps,
            row.proxy_cpu_s_per_gb
        );
        if let Some(e) = &row.first_error {
            out += &format!("                 first error: {e}\n");
        }
    }
    out += &format!(
        "mesh/direct: {:.2}x connections, {:.2}x throughput\n\
         mesh/haproxy (same path): {:.2}x connections, {:.2}x throughput\n\
         mesh/haproxy-underlay: {:.2}x connections, {:.2}x throughput\n",
        r.mesh_vs_direct_conns,
        r.mesh_vs_direct_gbps,
        r.mesh_vs_haproxy_conns,
        r.mesh_vs_haproxy_gbps,
        r.mesh_vs_haproxy_underlay_conns,
        r.mesh_vs_haproxy_underlay_gbps
    );
    out
}

/// Writes `mesh.json` under `dir`.
pub fn write_files(r: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("mesh.json"), serde_json::to_string_pretty(r)?)?;
    Ok(())
}
