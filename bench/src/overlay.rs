//! The overlay comparison: the same two-node topology, the same traffic, one
//! overlay after another, in one run, so every figure is a ratio against peers
//! measured on the same noisy machine at the same time.
//!
//! For each path: iperf3 single-stream and 4-stream TCP throughput, ping RTT p50
//! and p99, and CPU seconds (all cores, from /proc/stat) per GB moved.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shoal_topology::{ManagedChild, Namespace, Topology};

/// One measured path.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub path: String,
    /// Single-stream TCP, Gbit/s.
    pub gbps_1: f64,
    /// Four-stream TCP, Gbit/s.
    pub gbps_4: f64,
    /// RTT median, microseconds.
    pub rtt_p50_us: f64,
    /// RTT 99th percentile, microseconds.
    pub rtt_p99_us: f64,
    /// CPU seconds (all cores) per GB during the single-stream run.
    pub cpu_s_per_gb: f64,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Pings per RTT measurement.
    pub pings: u32,
    /// Where JSON and CSV go.
    pub out_dir: PathBuf,
    /// Forwarding lanes per shoald (`None`: its default, one per core).
    pub workers: Option<u32>,
    /// Also measure Nebula, wireguard-go and boringtun.
    pub peers: bool,
}

const KEY: &str = "6b65792d6f6e652d6b65792d6f6e652d6b65792d6f6e652d6b65792d6f6e6531";

/// Runs every path and returns the rows, kernel VXLAN first among overlays.
pub fn run(settings: &Settings) -> Result<Vec<Row>> {
    ensure_tools()?;
    let mut rows = Vec::new();
    {
        let topo = Topology::builder().nodes(2).build()?;
        let (a, b) = (topo.node(0), topo.node(1));
        rows.push(measure(
            "veth (underlay, no overlay)",
            a.ns(),
            b.ns(),
            b.addr(),
            settings,
        )?);
        kernel_vxlan(&topo)?;
        rows.push(measure(
            "kernel VXLAN",
            a.ns(),
            b.ns(),
            Ipv4Addr::new(10, 0, 0, 2),
            settings,
        )?);
    }
    for encrypted in [false, true] {
        let topo = Topology::builder().nodes(2).build()?;
        let (_daemons, tasks) = shoal(&topo, encrypted, settings.workers)?;
        let name = if encrypted {
            "shoal encrypted (AES-256-GCM)"
        } else {
            "shoal plain"
        };
        rows.push(measure(
            name,
            &tasks[0],
            &tasks[1],
            Ipv4Addr::new(10, 0, 0, 20),
            settings,
        )?);
    }
    // Other userspace overlays: a failure to set one up is reported, not fatal.
    let peers: &[_] = if settings.peers {
        &crate::peers::PEERS
    } else {
        &[]
    };
    for &(name, setup) in peers {
        let result = (|| -> Result<Row> {
            let topo = Topology::builder().nodes(2).build()?;
            let (_procs, server_ip) = setup(&topo)?;
            measure(
                name,
                topo.node(0).ns(),
                topo.node(1).ns(),
                server_ip,
                settings,
            )
        })();
        match result {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{name}: not measured: {e:#}"),
        }
    }
    Ok(rows)
}

fn ensure_tools() -> Result<()> {
    let have = crate::installed;
    if !Path::new(crate::chart::FONT).exists()
        || !["iperf3", "ping", "nebula", "wireguard-go", "wg"]
            .iter()
            .all(|t| have(t))
    {
        eprintln!(
            "installing iperf3, ping, nebula, wireguard-go and wireguard-tools (apt-get) ..."
        );
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iperf3 iputils-ping nebula wireguard-go wireguard-tools fonts-dejavu-core >/dev/null"])
            .status()?
            .success();
        if !ok {
            bail!("cannot install the benchmark's peers with apt-get");
        }
    }
    if !have("boringtun-cli") {
        eprintln!("installing boringtun-cli (cargo install, a few minutes) ...");
        let ok = Command::new("cargo")
            .args(["install", "--locked", "boringtun-cli"])
            .status()?
            .success();
        if !ok {
            eprintln!("boringtun-cli could not be installed; its row will be missing");
        }
    }
    Ok(())
}

fn sh(ns: &Namespace, cmd: &str) -> Result<()> {
    let out = ns.command("sh").args(["-c", cmd]).output()?;
    if !out.status.success() {
        bail!(
            "`{cmd}` in {} failed: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A vxlan device in each node namespace with static FDB entries: the kernel's
/// own overlay, the reference the issue measures against.
fn kernel_vxlan(topo: &Topology) -> Result<()> {
    for (i, other) in [(0usize, 1usize), (1, 0)] {
        let me = topo.node(i);
        let peer = topo.node(other).addr();
        let mac = |n: usize| format!("02:42:0a:00:00:{:02x}", n + 1);
        sh(
            me.ns(),
            &format!(
                "ip link add vx0 type vxlan id 4096 local {} dstport 4789 nolearning && \
             ip link set vx0 address {} mtu 1450 up && ip addr add 10.0.0.{}/24 dev vx0 && \
             bridge fdb append 00:00:00:00:00:00 dev vx0 dst {peer} && \
             bridge fdb add {} dev vx0 dst {peer} && \
             ip neigh add 10.0.0.{} lladdr {} dev vx0 nud permanent",
                me.addr(),
                mac(i),
                i + 1,
                mac(other),
                other + 1,
                mac(other)
            ),
        )?;
    }
    Ok(())
}

/// A shoald per node (this very binary, in its `shoald` role) and one task each.
fn shoal(
    topo: &Topology,
    encrypted: bool,
    workers: Option<u32>,
) -> Result<(Vec<ManagedChild>, Vec<Namespace>)> {
    let dir = std::env::temp_dir().join(format!(
        "shoal-bench-{}-{}",
        std::process::id(),
        encrypted as u8
    ));
    std::fs::create_dir_all(&dir)?;
    let tasks = [topo.add_bare_namespace("a")?, topo.add_bare_namespace("b")?];
    let ips = [Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20)];
    let exe = std::env::current_exe()?;
    let mut daemons = Vec::new();
    for i in 0..2 {
        let other = 1 - i;
        let enc = if encrypted {
            format!("encrypted = true\nkeys = [{{ id = 1, secret = \"{KEY}\" }}]\n")
        } else {
            String::new()
        };
        let workers = workers.map_or(String::new(), |w| format!("workers = {w}\n"));
        let config = format!(
            "[node]\naddress = \"{}\"\n{workers}\n[[networks]]\nname = \"bench\"\nvni = 4096\nsubnet = \"10.0.0.0/24\"\n{enc}peers = [\"{}\"]\nremotes = [{{ ip = \"{}\", node = \"{}\" }}]\n\n[[endpoints]]\nnetwork = \"bench\"\nnetns = \"{}\"\nip = \"{}\"\n",
            topo.node(i).addr(), topo.node(other).addr(), ips[other], topo.node(other).addr(), tasks[i].name(), ips[i]
        );
        let path = dir.join(format!("node{i}.toml"));
        std::fs::write(&path, config)?;
        let sock = dir.join(format!("node{i}.sock"));
        let mut cmd = topo.node(i).ns().command(&exe);
        cmd.arg("shoald")
            .arg("--config")
            .arg(&path)
            .arg("--control")
            .arg(&sock)
            .arg("--log")
            .arg("warn");
        daemons.push(topo.node(i).ns().spawn(cmd)?);
        crate::wait_for_socket(&sock)?;
    }
    Ok((daemons, tasks.to_vec()))
}

fn cpu_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0.0);
    Ok(busy / 100.0)
}

/// iperf3 from `client` to `server_ip` (server in `server`): (Gbit/s, bytes, cpu s).
fn iperf(
    client: &Namespace,
    server: &Namespace,
    server_ip: Ipv4Addr,
    streams: u32,
    seconds: u32,
) -> Result<(f64, f64, f64)> {
    let mut srv = server.spawn({
        let mut c = server.command("iperf3");
        c.args(["-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = cpu_busy_seconds()?;
    let out = client
        .command("iperf3")
        .args([
            "-c",
            &server_ip.to_string(),
            "-p",
            "5201",
            "-J",
            "-t",
            &seconds.to_string(),
            "-P",
            &streams.to_string(),
        ])
        .output()?;
    let cpu = cpu_busy_seconds()? - cpu0;
    let _ = srv.wait_timeout(Duration::from_secs(5));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 gave no JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let sum = &v["end"]["sum_received"];
    Ok((
        sum["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        sum["bytes"].as_f64().unwrap_or(0.0),
        cpu,
    ))
}

/// Ping RTTs in microseconds, sorted.
fn rtts(client: &Namespace, to: Ipv4Addr, count: u32) -> Result<Vec<f64>> {
    let out = client
        .command("ping")
        .args([
            "-c",
            &count.to_string(),
            "-i",
            "0.005",
            "-W",
            "1",
            &to.to_string(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if v.is_empty() {
        bail!("no ping answered from {to}: {text}");
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn measure(
    path: &str,
    client: &Namespace,
    server: &Namespace,
    server_ip: Ipv4Addr,
    s: &Settings,
) -> Result<Row> {
    eprintln!("measuring {path} ...");
    let r = rtts(client, server_ip, s.pings).with_context(|| format!("{path}: ping"))?;
    let (gbps_1, bytes, cpu) = iperf(client, server, server_ip, 1, s.seconds)
        .with_context(|| format!("{path}: iperf3 -P 1"))?;
    let (gbps_4, _, _) = iperf(client, server, server_ip, 4, s.seconds)
        .with_context(|| format!("{path}: iperf3 -P 4"))?;
    Ok(Row {
        path: path.to_string(),
        gbps_1,
        gbps_4,
        rtt_p50_us: percentile(&r, 0.5),
        rtt_p99_us: percentile(&r, 0.99),
        cpu_s_per_gb: if bytes > 0.0 {
            cpu / (bytes / 1e9)
        } else {
            f64::NAN
        },
    })
}

/// The table, with each figure's ratio to kernel VXLAN.
pub fn render(rows: &[Row]) -> String {
    let base = rows.iter().find(|r| r.path == "kernel VXLAN");
    let ratio = |x: f64, b: Option<f64>| {
        b.filter(|b| *b > 0.0)
            .map(|b| format!("{:.2}x", x / b))
            .unwrap_or_default()
    };
    let mut out = format!(
        "{:<32} {:>9} {:>7} {:>9} {:>7} {:>9} {:>9} {:>8}\n",
        "PATH", "1-STREAM", "vs K", "4-STREAM", "vs K", "RTT p50", "RTT p99", "CPU s/GB"
    );
    for r in rows {
        out += &format!(
            "{:<32} {:>7.2}Gb {:>7} {:>7.2}Gb {:>7} {:>7.0}us {:>7.0}us {:>8.2}\n",
            r.path,
            r.gbps_1,
            ratio(r.gbps_1, base.map(|b| b.gbps_1)),
            r.gbps_4,
            ratio(r.gbps_4, base.map(|b| b.gbps_4)),
            r.rtt_p50_us,
            r.rtt_p99_us,
            r.cpu_s_per_gb
        );
    }
    out
}

/// Writes the rows as JSON and CSV under `dir`.
pub fn write_files(rows: &[Row], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("overlay.json"),
        serde_json::to_string_pretty(rows)?,
    )?;
    let mut csv = String::from("path,gbps_1,gbps_4,rtt_p50_us,rtt_p99_us,cpu_s_per_gb\n");
    for r in rows {
        csv += &format!(
            "{},{:.3},{:.3},{:.1},{:.1},{:.3}\n",
            r.path, r.gbps_1, r.gbps_4, r.rtt_p50_us, r.rtt_p99_us, r.cpu_s_per_gb
        );
    }
    std::fs::write(dir.join("overlay.csv"), csv)?;
    Ok(())
}
