//! VIPs on a running data plane: a client and two backends in network
//! namespaces on one node (root), real TCP through the switch.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_overlay::lb::vip::{VipBackend, VipService};
use shoal_overlay::mac::MacAddr;
use shoal_overlay::vxlan::Vni;
use shoal_topology::{Namespace, Topology};

use crate::config::{DataPlaneConfig, LocalEndpointConfig, NetworkConfig};
use crate::DataPlane;

const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// Bytes each backend sends after its name: several TSO super-frames.
const BULK: usize = 300_000;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn data_plane() -> DataPlane {
    let mut config = DataPlaneConfig::new(NODE);
    config.listen = SocketAddr::new(NODE, 0);
    config.workers = 2;
    let dp = DataPlane::start(config).expect("an empty data plane starts");
    dp.add_network(NetworkConfig {
        name: "blue".into(),
        vni: Vni::new(4096).unwrap(),
        subnet: "10.0.0.0/24".parse().unwrap(),
        encryption: None,
        peers: Vec::new(),
        remotes: Vec::new(),
    })
    .unwrap();
    dp
}

fn attach(dp: &DataPlane, ns: &Namespace, last: u8) {
    dp.add_endpoint(LocalEndpointConfig {
        network: "blue".into(),
        netns: ns.path().to_path_buf(),
        ifname: "eth0".into(),
        ip: ip(last),
        mac: MacAddr::from_ipv4(ip(last)),
        handover: false,
    })
    .unwrap();
}

fn service(backends: &[(u8, bool)]) -> Vec<VipService> {
    vec![VipService {
        vip: VIP,
        backends: backends
            .iter()
            .map(|&(last, active)| VipBackend {
                ip: ip(last),
                active,
            })
            .collect(),
    }]
}

/// A backend on `port` inside `ns`: each connection gets `name`, the peer
/// address it sees and [`BULK`] bytes, then is held until the client closes.
fn serve(ns: &Namespace, name: &'static str, port: u16, stop: Arc<AtomicBool>) {
    let listener = ns
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).unwrap();
                        let _ = s.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
                        let _ = s.write_all(&vec![b'x'; BULK]);
                        let mut sink = [0u8; 1024];
                        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
    });
}

/// A UDP backend on `port` inside `ns`: answers each datagram with `name`.
fn serve_udp(ns: &Namespace, name: &'static str, port: u16, stop: Arc<AtomicBool>) {
    let sock = ns
        .run(move || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        }
    });
}

/// One datagram from `ns` to `VIP:port` (a connected socket, so an ICMP
/// error comes back as an error); the answer and who sent it.
fn udp_ask(ns: &Namespace, port: u16) -> std::io::Result<(String, SocketAddr)> {
    let sock = ns.run(|| UdpSocket::bind(("0.0.0.0", 0))).unwrap()?;
    sock.connect(SocketAddrV4::new(VIP, port))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.send(b"who?")?;
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// Connects from `ns` to `VIP:port`.
fn connect(ns: &Namespace, port: u16) -> std::io::Result<TcpStream> {
    ns.run(move || {
        TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(VIP, port)),
            Duration::from_secs(2),
        )
    })
    .unwrap()
}

/// The first line of an answer (the backend's name and the peer it saw),
/// after checking the bulk that follows arrived whole; the stream stays open.
fn answer(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.contains(&b'\n')
        || got.len() < got.iter().position(|&b| b == b'\n').unwrap() + 1 + BULK
    {
        let n = s.read(&mut buf).expect("the answer arrives");
        assert!(n > 0, "closed early after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let nl = got.iter().position(|&b| b == b'\n').unwrap();
    assert!(got[nl + 1..].iter().all(|&b| b == b'x'));
    String::from_utf8(got[..nl].to_vec()).unwrap()
}

fn ask(ns: &Namespace, port: u16) -> String {
    let mut s = connect(ns, port).expect("the VIP answers");
    answer(&mut s)
}

#[test]
fn bad_vip_services_are_refused_with_the_field_named() {
    let topo = Topology::builder().nodes(0).clients(0).build().unwrap();
    let a = topo.add_bare_namespace("a").unwrap();
    let dp = data_plane();
    attach(&dp, &a, 2);
    let e = dp
        .set_vip_services("red", &service(&[(3, true)]))
        .unwrap_err();
    assert!(e.to_string().contains("red"), "{e}");
    let outside = [VipService {
        vip: Ipv4Addr::new(10, 9, 0, 1),
        backends: Vec::new(),
    }];
    let e = dp
        .set_vip_services("blue", &outside)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vip[10.9.0.1]") && e.contains("10.0.0.0/24"),
        "{e}"
    );
    let on_endpoint = [VipService {
        vip: ip(2),
        backends: Vec::new(),
    }];
    let e = dp
        .set_vip_services("blue", &on_endpoint)
        .unwrap_err()
        .to_string();
    assert!(e.contains("endpoint's address"), "{e}");
    let mut twice = service(&[(3, true)]);
    twice.push(twice[0].clone());
    let e = dp.set_vip_services("blue", &twice).unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
    assert!(dp.vip_services("blue").is_empty(), "nothing was set");
}

#[test]
fn a_vip_balances_every_port_drains_resets_and_hairpins() {
    let topo = Topology::builder().nodes(0).clients(0).build().unwrap();
    let (a, b, c) = (
        topo.add_bare_namespace("a").unwrap(),
        topo.add_bare_namespace("b").unwrap(),
        topo.add_bare_namespace("c").unwrap(),
    );
    let dp = data_plane();
    attach(&dp, &a, 2);
    attach(&dp, &b, 3);
    attach(&dp, &c, 4);
    let stop = Arc::new(AtomicBool::new(false));
    for port in [7000, 9000] {
        serve(&b, "b", port, stop.clone());
        serve(&c, "c", port, stop.clone());
    }
    serve_udp(&b, "b", 5353, stop.clone());
    serve_udp(&c, "c", 5353, stop.clone());

    // Before any VIP, nobody answers for it.
    assert!(connect(&a, 7000).is_err());
    dp.set_vip_services("blue", &service(&[(3, true), (4, true)]))
        .unwrap();
    dp.set_vip_services("blue", &service(&[(4, true), (3, true)]))
        .unwrap();
    assert_eq!(dp.vip_services("blue"), service(&[(3, true), (4, true)]));
    // The switch answers ARP and ping for the VIP itself.
    let ping = a
        .output(["ping", "-c", "1", "-W", "2", &VIP.to_string()])
        .expect("ping (iputils) answers for the VIP");
    assert!(ping.status.success());

    // Both backends, on both ports; each sees the client's own address.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let port = if i % 2 == 0 { 7000 } else { 9000 };
        let got = ask(&a, port);
        assert!(got == "b 10.0.0.2" || got == "c 10.0.0.2", "{got}");
        seen.insert((got, port));
    }
    assert_eq!(seen.len(), 4, "both backends on both ports: {seen:?}");

    // UDP too, the answers coming from the VIP.
    let mut udp_seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let (who, from) = udp_ask(&a, 5353).expect("a UDP answer");
        assert_eq!(from, SocketAddr::V4(SocketAddrV4::new(VIP, 5353)));
        udp_seen.insert(who);
    }
    assert_eq!(udp_seen.len(), 2, "{udp_seen:?}");

    // A flow pinned to c, held open.
    let mut held = (0..64)
        .map(|_| {
            let mut s = connect(&a, 7000).unwrap();
            let who = answer(&mut s);
            (who, s)
        })
        .find(|(who, _)| who.starts_with('c'))
        .expect("some flow lands on c")
        .1;

    // c drains: no new flow reaches it, the held one still works.
    dp.set_vip_services("blue", &service(&[(3, true), (4, false)]))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(ask(&a, 7000), "b 10.0.0.2");
    }
    held.write_all(b"still there").unwrap();

    // c leaves: its flow is reset by the switch, new flows go to b.
    dp.set_vip_services("blue", &service(&[(3, true)])).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = held.write_all(b"hello?");
    let mut buf = [0u8; 16];
    let e = held.read(&mut buf).expect_err("the flow was reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert_eq!(ask(&a, 9000), "b 10.0.0.2");

    // Hairpin: b asks its own service's VIP and answers itself, seeing the
    // VIP as the peer (hairpin flows are source-NATed).
    assert_eq!(ask(&b, 7000), "b 10.0.0.100");

    // No backend: refused at once (TCP RST, ICMP port unreachable).
    dp.set_vip_services("blue", &service(&[])).unwrap();
    let e = connect(&a, 7000).expect_err("no backend");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    let e = udp_ask(&a, 5353).expect_err("no backend");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");

    // No VIP at all: the table goes and the address is unanswered again.
    dp.set_vip_services("blue", &[]).unwrap();
    assert!(dp.vip_services("blue").is_empty());
    assert!(!lock(&dp).has_vips());
    stop.store(true, Ordering::Relaxed);
}

fn lock(dp: &DataPlane) -> std::sync::RwLockReadGuard<'_, crate::tables::Tables> {
    dp.shared.tables.read().unwrap()
}
