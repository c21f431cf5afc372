//! The embedded DNS server against dnsmasq, both serving the same swarm records
//! from loopback, measured with dnsperf in one run.
//!
//! Records: `services` services of `tasks` tasks each; for service `i`, `svc<i>`
//! (its VIP), `tasks.svc<i>` (the task IPs) and each task's name. dnsmasq gets
//! them as an `--addn-hosts` file (several lines per name give several A
//! records, like `tasks.<svc>`), with `--local-ttl` set to our TTL so both answer
//! alike. The query file asks every name once, in order; dnsperf loops over it.
//! Both servers answer from memory with no upstream. Shoal runs in-process on a
//! one-worker tokio runtime: dnsmasq is single-threaded too.
//!
//! dnsmasq comes from Debian's `dnsmasq-base` (the binary without the system
//! service, which would start a second resolver on port 53 of the host).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shoal_dns::query::build_query;
use shoal_dns::{DnsServer, Endpoint, Forwarder, ForwarderConfig, RecordType, Zone, DEFAULT_TTL};

/// What to run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seconds of dnsperf per server.
    pub seconds: u32,
    /// dnsperf clients (`-c`).
    pub clients: u32,
    /// Services in the zone.
    pub services: u32,
    /// Tasks per service.
    pub tasks: u32,
    /// Where dns.json goes.
    pub out_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seconds: 10,
            clients: 4,
            services: 100,
            tasks: 3,
            out_dir: PathBuf::from("target/bench"),
        }
    }
}

/// One server's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Which server.
    pub server: String,
    /// Queries per second answered.
    pub qps: f64,
    /// Mean latency in milliseconds.
    pub avg_latency_ms: f64,
    /// Queries sent with no answer.
    pub lost: u64,
    /// The dnsperf command line.
    pub command: String,
}

const SHOAL_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    Ipv4Addr::new(127, 0, 0, 61),
    5391,
));
const DNSMASQ_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    Ipv4Addr::new(127, 0, 0, 62),
    5391,
));

fn endpoints(s: &Settings) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for i in 0..s.services {
        let (hi, lo) = ((i / 250) as u8, (i % 250) as u8);
        for slot in 1..=s.tasks {
            out.push(Endpoint {
                network_id: "bench".into(),
                service_name: format!("svc{i}"),
                service_id: format!("id{i}"),
                task_name: format!("svc{i}.{slot}.task{i}x{slot}"),
                task_id: format!("task{i}x{slot}"),
                ip: Ipv4Addr::new(10, 100 + hi, lo, 10 + slot as u8),
                vip: Some(Ipv4Addr::new(10, 100 + hi, lo, 2)),
                dnsrr: false,
                aliases: vec![],
                healthy: true,
            });
        }
    }
    out
}

/// The same records as a hosts file for dnsmasq.
fn hosts_file(eps: &[Endpoint]) -> String {
    let mut out = String::new();
    let mut last_service = None;
    for e in eps {
        if last_service != Some(&e.service_name) {
            if let Some(vip) = e.vip {
                let _ = writeln!(out, "{vip} {}", e.service_name);
            }
            last_service = Some(&e.service_name);
        }
        let _ = writeln!(out, "{} tasks.{}", e.ip, e.service_name);
        let _ = writeln!(out, "{} {}", e.ip, e.task_name);
    }
    out
}

fn query_file(eps: &[Endpoint]) -> String {
    let mut out = String::new();
    let mut last_service = None;
    for e in eps {
        if last_service != Some(&e.service_name) {
            let _ = writeln!(out, "{} A\ntasks.{} A", e.service_name, e.service_name);
            last_service = Some(&e.service_name);
        }
        let _ = writeln!(out, "{} A", e.task_name);
    }
    out
}

fn ensure_tools() -> Result<()> {
    if crate::installed("dnsperf") && crate::installed("dnsmasq") {
        return Ok(());
    }
    eprintln!("installing dnsperf and dnsmasq-base (apt-get) ...");
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsperf dnsmasq-base >/dev/null"])
        .status()?
        .success();
    if !ok {
        bail!("cannot install dnsperf and dnsmasq-base with apt-get");
    }
    Ok(())
}

/// Kills and reaps dnsmasq however the run ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks `server` for `tasks.svc0` until it answers with `want` records (10 s).
fn wait_answers(server: SocketAddr, want: u16) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let q = build_query(1, "tasks.svc0.", RecordType::A).context("query")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&q, server)?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let answers = (n >= 12).then(|| u16::from_be_bytes([buf[6], buf[7]]));
            if answers == Some(want) {
                return Ok(());
            }
            bail!("{server} answered tasks.svc0 with {answers:?} records, not {want}");
        }
    }
    bail!("{server} did not answer within 10 s")
}

fn dnsperf(name: &str, server: SocketAddr, queries: &Path, s: &Settings) -> Result<Row> {
    let args = [
        "-s".to_string(),
        server.ip().to_string(),
        "-p".into(),
        server.port().to_string(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        s.seconds.to_string(),
        "-c".into(),
        s.clients.to_string(),
        "-T".into(),
        "1".into(),
    ];
    let command = format!("dnsperf {}", args.join(" "));
    eprintln!("{name}: {command}");
    let out = Command::new("dnsperf")
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("dnsperf failed: {text}");
    }
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
    };
    let qps = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no 'Queries per second' in dnsperf's output:\n{text}"))?;
    let avg_latency_ms = field("Average Latency (s):")
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |s| s * 1000.0);
    let lost = field("Queries lost:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Row {
        server: name.into(),
        qps,
        avg_latency_ms,
        lost,
        command,
    })
}

/// Runs both servers and dnsperf against each.
pub fn run(s: &Settings) -> Result<Vec<Row>> {
    ensure_tools()?;
    let eps = endpoints(s);
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}-dns", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hosts = dir.join("hosts");
    let queries = dir.join("queries");
    std::fs::write(&hosts, hosts_file(&eps))?;
    std::fs::write(&queries, query_file(&eps))?;
    let tasks = u16::try_from(s.tasks).context("too many tasks")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let zone = Zone::new(eps, DEFAULT_TTL);
    let (_zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(zone));
    let server = rt.block_on(async {
        let fwd = Arc::new(Forwarder::new(ForwarderConfig::default(), None)?);
        DnsServer::start(None, SHOAL_ADDR, zone_rx, fwd)
    })?;
    let mut rows = Vec::new();
    wait_answers(SHOAL_ADDR, tasks)?;
    rows.push(dnsperf("shoal-dns", SHOAL_ADDR, &queries, s)?);
    let stats = server.stats();
    eprintln!("shoal-dns counters: {stats:?}");
    drop(server);
    drop(rt);

    let dnsmasq = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--listen-address={}", DNSMASQ_ADDR.ip()))
        .arg(format!("--port={}", DNSMASQ_ADDR.port()))
        .arg(format!("--local-ttl={DEFAULT_TTL}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start dnsmasq")?;
    let _dnsmasq = Reaped(dnsmasq);
    wait_answers(DNSMASQ_ADDR, tasks)?;
    rows.push(dnsperf("dnsmasq", DNSMASQ_ADDR, &queries, s)?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// The table printed after a run, with the ratio shoal/dnsmasq.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from("server       queries/s  avg latency ms  lost\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:>9.0}  {:>14.3}  {}",
            r.server, r.qps, r.avg_latency_ms, r.lost
        );
    }
    if let [shoal, dnsmasq] = rows {
        if dnsmasq.qps > 0.0 {
            let _ = writeln!(out, "shoal/dnsmasq: {:.2}", shoal.qps / dnsmasq.qps);
        }
    }
    out
}

/// Writes `dns.json` into `dir`.
pub fn write_files(rows: &[Row], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("dns.json"), serde_json::to_string_pretty(rows)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_queries_cover_every_name() {
        let s = Settings {
            services: 2,
            tasks: 3,
            ..Settings::default()
        };
        let eps = endpoints(&s);
        let hosts = hosts_file(&eps);
        assert_eq!(hosts.lines().count(), 2 * (1 + 3 * 2));
        assert!(hosts.contains("10.100.0.2 svc0\n"));
        assert!(hosts.contains("10.100.1.13 tasks.svc1\n"));
        let q = query_file(&eps);
        assert_eq!(q.lines().count(), 2 * (2 + 3));
        assert!(q.contains("svc1.3.task1x3 A\n"));
    }
}
