//! An attacker on the underlay: captured sealed frames replayed, tampered
//! copies, and plain VXLAN aimed at the encrypted VNI. Every one is dropped and
//! counted, while a transfer between the tasks carries on unharmed.

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::{uniform_tasks, Cluster, NetDef};
use crate::traffic::transfer;

/// UDP payloads of an Ethernet pcap file (IPv4, UDP).
fn udp_payloads(pcap: &[u8]) -> Result<Vec<Vec<u8>>> {
    if pcap.len() < 24 || u32::from_le_bytes(pcap[0..4].try_into()?) != 0xa1b2_c3d4 {
        bail!("not a little-endian microsecond pcap file");
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into()?) as usize;
        let pkt = pcap
            .get(at + 16..at + 16 + incl)
            .context("truncated pcap record")?;
        at += 16 + incl;
        if pkt.len() < 14 + 20 + 8 || pkt[12..14] != [0x08, 0x00] {
            continue;
        }
        let ihl = (pkt[14] & 0x0f) as usize * 4;
        let udp = 14 + ihl;
        if pkt[14 + 9] != 17 || pkt.len() < udp + 8 {
            continue;
        }
        out.push(pkt[udp + 8..].to_vec());
    }
    Ok(out)
}

/// Captures up to `count` VXLAN datagrams from `src` arriving at node 1, while
/// task 0 pings task 1.
fn capture(cluster: &Cluster, count: usize) -> Result<Vec<Vec<u8>>> {
    let file = cluster.dir.join("capture.pcap");
    let src = cluster.topo.node(0).addr();
    let node1 = cluster.topo.node(1).ns();
    let mut cmd = node1.command("tcpdump");
    cmd.args([
        "-i",
        "eth0",
        "-U",
        "-n",
        "-Z",
        "root",
        "-c",
        &count.to_string(),
        "-w",
    ])
    .arg(&file)
    .args([
        "udp",
        "dst",
        "port",
        "4789",
        "and",
        "src",
        "host",
        &src.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut tcpdump = node1
        .spawn(cmd)
        .context("tcpdump (apt-get install tcpdump)")?;
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cluster.ping(0, cluster.tasks[1].ip);
        let got = std::fs::read(&file)
            .ok()
            .map(|b| udp_payloads(&b))
            .transpose()?;
        if got.as_ref().is_some_and(|g| g.len() >= count) || Instant::now() > deadline {
            drop(tcpdump.kill());
            let frames = udp_payloads(&std::fs::read(&file)?)?;
            if frames.is_empty() {
                bail!("captured no VXLAN frame from {src}");
            }
            return Ok(frames);
        }
    }
}

/// Plain frames sent per attack.
const PLAIN: u64 = 5;

/// Replays every captured frame, sends a tampered copy of each, and plain VXLAN
/// for the encrypted VNI, all from `from` (node 0's own underlay address, so
/// they look genuine), paced so the attack itself does not overflow a buffer.
fn send_attack(from: std::net::Ipv4Addr, target: SocketAddr, frames: &[Vec<u8>]) -> Result<()> {
    let sock = UdpSocket::bind((from, 0))?;
    let pace = || std::thread::sleep(Duration::from_millis(1));
    for f in frames {
        sock.send_to(f, target)?;
        pace();
        // A copy of a seen frame would be caught as a replay before any crypto,
        // so move its counter (bytes 16..24) far ahead and flip a ciphertext
        // bit: only the tag can reject it now.
        let mut tampered = f.clone();
        tampered[18] ^= 0x01;
        let last = tampered.len() - 20;
        tampered[last] ^= 0x01;
        sock.send_to(&tampered, target)?;
        pace();
    }
    // Plain VXLAN for the encrypted VNI (4096), a broadcast ARP inside.
    let mut plain = vec![0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0];
    plain.extend_from_slice(&[0xff; 6]);
    plain.extend_from_slice(&[0x02, 0x42, 10, 0, 0, 10, 0x08, 0x06]);
    plain.extend_from_slice(&[0u8; 28]);
    for _ in 0..PLAIN {
        sock.send_to(&plain, target)?;
        pace();
    }
    Ok(())
}

/// UDP datagrams the kernel of `ns` dropped for a full receive buffer.
fn udp_rcvbuf_errors(ns: &shoal_topology::Namespace) -> Result<u64> {
    let out = ns.output(["cat", "/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        udp.next().context("no Udp header")?,
        udp.next().context("no Udp values")?,
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .context("no RcvbufErrors")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("short Udp line")?
        .parse()?)
}

/// Waits (at most 3 s) until node 1's counters reach `expected` over `before`.
fn settle(
    cluster: &Cluster,
    before: &std::collections::BTreeMap<String, u64>,
    expected: &[(&str, u64)],
) -> std::collections::BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = cluster.drops(1).unwrap();
        let done = expected
            .iter()
            .all(|(r, want)| now[*r] - before[*r] >= *want);
        if done || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn replayed_tampered_and_plain_frames_are_dropped_and_counted() {
    let cluster = Cluster::start(2, &[NetDef::blue(true)], &uniform_tasks(2, 1), &[]).unwrap();
    let frames = capture(&cluster, 6).unwrap();
    // Sealed frames: I and E flags set, key id 1.
    assert!(
        frames
            .iter()
            .all(|f| f.len() > 40 && f[0] == 0x48 && f[1] == 1),
        "not sealed frames"
    );

    let node0 = cluster.topo.node(0);
    let node1 = cluster.topo.node(1);
    let target = SocketAddr::from((node1.addr(), 4789));
    let (a, b) = (&cluster.tasks[0], &cluster.tasks[1]);
    let n = frames.len() as u64;
    let expected = [
        ("replay", n),
        ("auth_failure", n),
        ("plain_on_encrypted", PLAIN),
    ];
    let attack = || -> Result<()> {
        node0
            .ns()
            .run(|| send_attack(node0.addr(), target, &frames))??;
        Ok(())
    };

    // During a transfer. A datagram the kernel drops for a full socket buffer
    // never reaches shoald, so exact counts are asserted only when node 1's
    // kernel dropped nothing (UDP RcvbufErrors); the transfer must be intact
    // either way.
    let before = cluster.drops(1).unwrap();
    let kernel_before = udp_rcvbuf_errors(node1.ns()).unwrap();
    let report = transfer(&b.ns, b.ip, &a.ns, 100 << 20, 5005, attack).unwrap();
    assert_eq!(report.bytes, 100 << 20);
    let after = settle(&cluster, &before, &expected);
    let kernel_dropped = udp_rcvbuf_errors(node1.ns()).unwrap() - kernel_before;
    for (reason, want) in expected {
        let got = after[reason] - before[reason];
        if kernel_dropped == 0 {
            assert_eq!(got, want, "{reason} during the transfer: {after:?}");
        } else {
            assert!(got <= want, "{reason}: {got} > {want}");
        }
    }

    // Quiet: the same attack again, every frame counted exactly.
    let before = cluster.drops(1).unwrap();
    attack().unwrap();
    let after = settle(&cluster, &before, &expected);
    for (reason, want) in expected {
        assert_eq!(
            after[reason] - before[reason],
            want,
            "{reason} when quiet: {after:?}"
        );
    }
    assert!(cluster.ping(0, b.ip), "task traffic harmed");
}
