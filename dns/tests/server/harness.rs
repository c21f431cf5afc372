//! Namespaces, a fake upstream resolver and a blocking client, all inside
//! namespaces this test made and removes in `Drop`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use shoal_dns::query::build_query;
use shoal_sys::netns::NetNs;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether we may create namespaces; prints why not.
pub fn can_run(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("SKIPPED {test}: needs root to create network namespaces");
        return false;
    }
    let ip = Command::new("ip").arg("-V").stdout(Stdio::null()).status();
    if !ip.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED {test}: the `ip` command (iproute2) is missing");
        return false;
    }
    true
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new() -> Self {
        let name = format!(
            "shoal-dns-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Self { name };
        run(&["ip", "netns", "add", &ns.name]);
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(shoal_sys::netns::NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        NetNs::open(self.path()).unwrap().run(f).unwrap()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Never panic here: we may already be unwinding.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// The fake upstream's address inside the test namespace.
pub const UPSTREAM: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    Ipv4Addr::new(127, 0, 0, 53),
    53,
));
/// An address where nothing listens.
pub const DEAD_UPSTREAM: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    Ipv4Addr::new(127, 0, 0, 54),
    53,
));

/// What the fake upstream answers: `example.test` A 192.0.2.1, `nx.test` NXDOMAIN,
/// `big.test` truncated over UDP and 40 A records over TCP, anything else REFUSED.
fn upstream_answer(query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = q.queries.clone();
    let question = q.queries.first()?;
    let name = question.name().to_ascii().to_ascii_lowercase();
    match (name.as_str(), question.query_type()) {
        ("example.test.", RecordType::A) => {
            m.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
        }
        ("nx.test.", _) => m.metadata.response_code = ResponseCode::NXDomain,
        ("big.test.", _) if !tcp => m.metadata.truncation = true,
        ("big.test.", _) => {
            for i in 0..40 {
                m.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
                ));
            }
        }
        _ => m.metadata.response_code = ResponseCode::Refused,
    }
    debug_assert_eq!(m.metadata.message_type, MessageType::Response);
    m.to_vec().ok()
}

/// A tiny UDP+TCP DNS responder on [`UPSTREAM`] in a namespace, stopped on drop.
pub struct FakeUpstream {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start(ns: &TestNs) -> Self {
        let (udp, tcp) = ns.run(|| {
            (
                UdpSocket::bind(UPSTREAM).unwrap(),
                TcpListener::bind(UPSTREAM).unwrap(),
            )
        });
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s1 = stop.clone();
        let t_udp = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    if let Some(a) = upstream_answer(&buf[..n], false) {
                        let _ = udp.send_to(&a, from);
                    }
                }
            }
        });
        let s2 = stop.clone();
        let t_tcp = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if let Some(q) = read_framed(&mut s) {
                            if let Some(a) = upstream_answer(&q, true) {
                                let _ = write_framed(&mut s, &a);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            stop,
            threads: vec![t_udp, t_tcp],
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).ok()?;
    Some(msg)
}

pub fn write_framed(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out)
}

/// A blocking client whose sockets live in a namespace.
pub struct Client {
    udp: UdpSocket,
    server: SocketAddr,
    ns_path: PathBuf,
}

impl Client {
    pub fn new(ns: &TestNs, server: SocketAddr) -> Self {
        let udp = ns.run(|| UdpSocket::bind("127.0.0.1:0").unwrap());
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self {
            udp,
            server,
            ns_path: ns.path(),
        }
    }

    /// Sends raw bytes, returns the raw answer (None on timeout).
    pub fn raw(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.udp.send_to(bytes, self.server).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = self.udp.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    }

    pub fn udp(&self, name: &str, qtype: RecordType) -> Message {
        let q = build_query(0x1234, name, qtype).unwrap();
        let a = self
            .raw(&q)
            .unwrap_or_else(|| panic!("no UDP answer for {name}"));
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        m
    }

    pub fn tcp(&self, name: &str, qtype: RecordType) -> Message {
        let server = self.server;
        let mut s = NetNs::open(&self.ns_path)
            .unwrap()
            .run(|| TcpStream::connect_timeout(&server, Duration::from_secs(2)))
            .unwrap()
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let q = build_query(0x4321, name, qtype).unwrap();
        write_framed(&mut s, &q).unwrap();
        let a = read_framed(&mut s).expect("TCP answer");
        Message::from_vec(&a).unwrap()
    }
}

pub fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}
