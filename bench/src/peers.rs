//! Other userspace overlays for the comparison: Nebula and wireguard-go, from
//! Debian's packages, set up between node 0 and node 1 of a topology.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_topology::{ManagedChild, Namespace, Topology};

/// Sets up an overlay between node 0 and node 1 and returns the processes to
/// keep alive and node 1's overlay address.
pub type PeerSetup = fn(&Topology) -> Result<(Vec<ManagedChild>, Ipv4Addr)>;

/// The peers, by the name their row gets.
pub const PEERS: [(&str, PeerSetup); 3] = [
    ("nebula 1.6.1", nebula),
    ("wireguard-go 0.0.20220316", wireguard_go),
    ("boringtun 0.7.1", boringtun),
];

fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sh(ns: &Namespace, cmd: &str) -> Result<()> {
    run_ok(ns.command("sh").args(["-c", cmd])).map(drop)
}

/// Waits until `addr` answers a ping from `ns` (the peer's handshake is done).
fn wait_reachable(ns: &Namespace, addr: Ipv4Addr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = ns
            .command("ping")
            .args(["-c", "1", "-W", "1", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if ok.is_ok_and(|s| s.success()) {
            return Ok(());
        }
    }
    bail!("{addr} not reachable from {} within 20 s", ns.name())
}

/// Nebula: a CA, two host certificates, a static host map, no lighthouse, an
/// allow-all firewall.
fn nebula(topo: &Topology) -> Result<(Vec<ManagedChild>, Ipv4Addr)> {
    let dir = scratch_dir("nebula")?;
    let d = |f: &str| dir.join(f).display().to_string();
    run_ok(Command::new("nebula-cert").args([
        "ca",
        "-name",
        "bench",
        "-out-crt",
        &d("ca.crt"),
        "-out-key",
        &d("ca.key"),
    ]))?;
    let mut procs = Vec::new();
    for i in 0..2 {
        let other = 1 - i;
        run_ok(Command::new("nebula-cert").args([
            "sign",
            "-ca-crt",
            &d("ca.crt"),
            "-ca-key",
            &d("ca.key"),
            "-name",
            &format!("n{i}"),
            "-ip",
            &format!("10.1.0.{}/24", i + 1),
            "-out-crt",
            &d(&format!("n{i}.crt")),
            "-out-key",
            &d(&format!("n{i}.key")),
        ]))?;
        let config = format!(
            "pki:\n  ca: {ca}\n  cert: {crt}\n  key: {key}\n\
             static_host_map:\n  \"10.1.0.{peer}\": [\"{addr}:4242\"]\n\
             lighthouse:\n  am_lighthouse: false\n  hosts: []\n\
             listen:\n  host: 0.0.0.0\n  port: 4242\n\
             punchy:\n  punch: false\n\
             tun:\n  dev: nebula{i}\n\
             logging:\n  level: warning\n\
             firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  \
             inbound:\n    - port: any\n      proto: any\n      host: any\n",
            ca = d("ca.crt"),
            crt = d(&format!("n{i}.crt")),
            key = d(&format!("n{i}.key")),
            peer = other + 1,
            addr = topo.node(other).addr(),
        );
        let path = d(&format!("n{i}.yml"));
        std::fs::write(&path, config)?;
        let ns = topo.node(i).ns();
        let mut cmd = ns.command("nebula");
        cmd.args(["-config", &path])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procs.push(ns.spawn(cmd)?);
    }
    wait_reachable(topo.node(0).ns(), Ipv4Addr::new(10, 1, 0, 2))?;
    Ok((procs, Ipv4Addr::new(10, 1, 0, 2)))
}

/// wireguard-go in the foreground.
fn wireguard_go(topo: &Topology) -> Result<(Vec<ManagedChild>, Ipv4Addr)> {
    userspace_wireguard(topo, "wg", |ns, dev| {
        let mut cmd = ns.command("wireguard-go");
        cmd.args(["-f", dev])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1");
        cmd
    })
}

/// boringtun (`cargo install boringtun-cli`) in the foreground, as root.
fn boringtun(topo: &Topology) -> Result<(Vec<ManagedChild>, Ipv4Addr)> {
    userspace_wireguard(topo, "bt", |ns, dev| {
        let mut cmd = ns.command("boringtun-cli");
        cmd.args(["--foreground", "--disable-drop-privileges", dev])
            .env("WG_SUDO", "1");
        cmd
    })
}

/// A userspace WireGuard that serves `wg`'s control socket, one peer each way.
fn userspace_wireguard(
    topo: &Topology,
    tag: &str,
    command: impl Fn(&Namespace, &str) -> Command,
) -> Result<(Vec<ManagedChild>, Ipv4Addr)> {
    let dir = scratch_dir(tag)?;
    let mut keys = Vec::new();
    for i in 0..2 {
        let private = run_ok(Command::new("wg").arg("genkey"))?.trim().to_string();
        let path = dir.join(format!("wg{i}.key"));
        std::fs::write(&path, &private)?;
        let mut pubkey = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        pubkey
            .stdin
            .take()
            .context("wg pubkey stdin")?
            .write_all(private.as_bytes())?;
        let public = String::from_utf8(pubkey.wait_with_output()?.stdout)?
            .trim()
            .to_string();
        keys.push((path, public));
    }
    let mut procs = Vec::new();
    for i in 0..2 {
        let other = 1 - i;
        let ns = topo.node(i).ns();
        // Distinct device names: the control sockets share /var/run/wireguard.
        let dev = format!("{tag}{}x{i}", std::process::id() % 10000);
        let mut cmd = command(ns, &dev);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        procs.push(ns.spawn(cmd)?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&format!("/var/run/wireguard/{dev}.sock")).exists() {
            if Instant::now() > deadline {
                bail!("{tag}: {dev}'s control socket did not appear");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        sh(
            ns,
            &format!(
                "wg set {dev} listen-port 51820 private-key {} peer {} endpoint {}:51820 allowed-ips 10.2.0.{}/32 && \
                 ip addr add 10.2.0.{}/24 dev {dev} && ip link set {dev} up",
                keys[i].0.display(),
                keys[other].1,
                topo.node(other).addr(),
                other + 1,
                i + 1
            ),
        )?;
    }
    wait_reachable(topo.node(0).ns(), Ipv4Addr::new(10, 2, 0, 2))?;
    Ok((procs, Ipv4Addr::new(10, 2, 0, 2)))
}
