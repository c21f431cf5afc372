//! The driver on 127.0.0.1 with port 0 and no namespace: runs without root and
//! reaches every counter (dropped, NOTIMP, FORMERR, over the forward cap, TCP
//! refused and idle).

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use shoal_dns::query::build_query;
use shoal_dns::{DnsServer, Forwarder, ForwarderConfig, RecordType, ServerConfig, Zone};
use tokio::sync::watch;

struct Local {
    server: DnsServer,
    _rt: tokio::runtime::Runtime,
}

fn start(fwd: ForwarderConfig, config: ServerConfig) -> Local {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_tx, rx) = watch::channel(Arc::new(Zone::default()));
    let server = rt.block_on(async {
        let fwd = Arc::new(Forwarder::new(fwd, None).unwrap());
        DnsServer::start_with(None, "127.0.0.1:0".parse().unwrap(), rx, fwd, config).unwrap()
    });
    Local { server, _rt: rt }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn ask(c: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Option<Message> {
    c.send_to(bytes, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = c.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// A UDP socket that swallows queries: an upstream that never answers.
fn black_hole() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[test]
fn every_counter_can_be_reached() {
    let (_hole, hole) = black_hole();
    let fwd = ForwarderConfig {
        upstreams: vec![hole],
        timeout: Duration::from_millis(400),
        max_concurrent: 1,
    };
    let config = ServerConfig {
        tcp_idle_timeout: Duration::from_millis(200),
        max_tcp_connections: 1,
    };
    let l = start(fwd, config);
    let addr = l.server.udp_addr();
    let c = client();

    // Dropped: a response, and a runt.
    let mut resp = build_query(1, "x.", RecordType::A).unwrap();
    resp[2] |= 0x80;
    c.send_to(&resp, addr).unwrap();
    c.send_to(&[1, 2, 3], addr).unwrap();
    // NOTIMP: opcode STATUS.
    let mut status = build_query(2, "x.", RecordType::A).unwrap();
    status[2] = (status[2] & 0x87) | (2 << 3);
    let m = ask(&c, addr, &status).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // FORMERR: two questions.
    let mut two = Message::from_vec(&build_query(3, "a.", RecordType::A).unwrap()).unwrap();
    two.queries.push(two.queries[0].clone());
    let m = ask(&c, addr, &two.to_vec().unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

    // Over the forward cap: the first forward holds the only permit until its
    // timeout; the second is answered SERVFAIL at once.
    let c2 = client();
    c2.send_to(
        &build_query(4, "slow.example.", RecordType::A).unwrap(),
        addr,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let m = ask(
        &c,
        addr,
        &build_query(5, "fast.example.", RecordType::A).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (5, ResponseCode::ServFail)
    );
    let mut buf = [0u8; 512];
    let (n, _) = c2.recv_from(&mut buf).unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (4, ResponseCode::ServFail)
    );

    // TCP: one connection is served, a second at the same time is closed, and the
    // first is closed once idle.
    let mut first = TcpStream::connect(l.server.tcp_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut second = TcpStream::connect(l.server.tcp_addr()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        second.read(&mut [0u8; 4]).unwrap_or(0),
        0,
        "second not closed"
    );
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(first.read(&mut [0u8; 4]).unwrap_or(0), 0, "idle not closed");

    let st = l.server.stats();
    assert_eq!(st.dropped, 2, "{st:?}");
    assert_eq!(st.notimp, 1, "{st:?}");
    assert_eq!(st.formerr, 1, "{st:?}");
    assert_eq!(st.forwarded, 2, "{st:?}");
    assert_eq!(st.servfail, 2, "{st:?}");
    assert_eq!((st.tcp_connections, st.tcp_refused), (1, 1), "{st:?}");
    let fs = l.server.forwarder().stats();
    assert_eq!(
        (fs.forwarded, fs.over_cap, fs.timeouts, fs.servfail),
        (1, 1, 1, 1),
        "{fs:?}"
    );
    assert_eq!(st.queries, 6, "{st:?}");
}

#[test]
fn shutdown_closes_the_sockets() {
    let l = start(ForwarderConfig::default(), ServerConfig::default());
    let addr = l.server.udp_addr();
    let c = client();
    let m = ask(
        &c,
        addr,
        &build_query(1, "nothing.example.", RecordType::A).unwrap(),
    )
    .unwrap();
    // No upstream configured: SERVFAIL.
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    l.server.shutdown();
    // The port is free again once the tasks are gone (bounded wait).
    let mut rebound = false;
    for _ in 0..50 {
        if UdpSocket::bind(addr).is_ok() {
            rebound = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rebound, "{addr} still bound after shutdown");
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let err = Forwarder::new(ForwarderConfig::default(), None).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
