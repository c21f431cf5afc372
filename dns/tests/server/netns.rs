//! The server in a real network namespace, on 127.0.0.11:53, as a task sees it.
//! Skips (with a message) when not root.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{a_records, can_run, Client, FakeUpstream, TestNs, DEAD_UPSTREAM, UPSTREAM};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use shoal_dns::{
    DnsServer, Endpoint, Forwarder, ForwarderConfig, Zone, DEFAULT_LISTEN, DEFAULT_TTL,
};
use tokio::sync::watch;

fn endpoint(service: &str, slot: u8, ip: [u8; 4], vip: Option<[u8; 4]>, dnsrr: bool) -> Endpoint {
    Endpoint {
        network_id: "net".into(),
        service_name: service.into(),
        service_id: format!("{service}-id"),
        task_name: format!("{service}.{slot}.t{slot}{service}"),
        task_id: format!("t{slot}{service}"),
        ip: Ipv4Addr::from(ip),
        vip: vip.map(Ipv4Addr::from),
        dnsrr,
        aliases: vec![],
        healthy: true,
    }
}

fn zone_v1() -> Zone {
    let vip = Some([10, 0, 1, 2]);
    Zone::new(
        [
            endpoint("web", 1, [10, 0, 1, 10], vip, false),
            endpoint("web", 2, [10, 0, 1, 11], vip, false),
            endpoint("rr", 1, [10, 0, 1, 20], None, true),
            endpoint("rr", 2, [10, 0, 1, 21], None, true),
        ],
        DEFAULT_TTL,
    )
}

struct Setup {
    // Field order is drop order: server and runtime before the namespace.
    server: DnsServer,
    zone_tx: watch::Sender<Arc<Zone>>,
    client: Client,
    _upstream: FakeUpstream,
    _rt: tokio::runtime::Runtime,
    _ns: TestNs,
}

fn setup(upstreams: Vec<std::net::SocketAddr>) -> Setup {
    let ns = TestNs::new();
    let upstream = FakeUpstream::start(&ns);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (zone_tx, zone_rx) = watch::channel(Arc::new(zone_v1()));
    let path = ns.path();
    let server = rt.block_on(async {
        let config = ForwarderConfig {
            upstreams,
            timeout: Duration::from_millis(300),
            ..ForwarderConfig::default()
        };
        let fwd = Arc::new(Forwarder::new(config, Some(&path)).unwrap());
        DnsServer::start(Some(&path), DEFAULT_LISTEN, zone_rx, fwd).unwrap()
    });
    let client = Client::new(&ns, DEFAULT_LISTEN);
    Setup {
        server,
        zone_tx,
        client,
        _upstream: upstream,
        _rt: rt,
        _ns: ns,
    }
}

#[test]
fn answers_swarm_names_on_127_0_0_11() {
    if !can_run("answers_swarm_names_on_127_0_0_11") {
        return;
    }
    let s = setup(vec![UPSTREAM]);
    let c = &s.client;
    let m = c.udp("web", RecordType::A);
    assert!(m.metadata.authoritative);
    assert_eq!(a_records(&m), [Ipv4Addr::new(10, 0, 1, 2)]);
    assert_eq!(m.answers[0].ttl, DEFAULT_TTL);
    assert_eq!(
        a_records(&c.udp("rr.", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 20), Ipv4Addr::new(10, 0, 1, 21)]
    );
    assert_eq!(
        a_records(&c.udp("tasks.web", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(10, 0, 1, 11)]
    );
    assert_eq!(
        a_records(&c.udp("web.2.t2web", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 11)]
    );
    let ptr = c.udp("10.1.0.10.in-addr.arpa", RecordType::PTR);
    match &ptr.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.1.t1web."),
        other => panic!("{other:?}"),
    }
    let aaaa = c.udp("web", RecordType::AAAA);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    // TCP, same answers.
    assert_eq!(
        a_records(&s.client.tcp("tasks.rr", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 20), Ipv4Addr::new(10, 0, 1, 21)]
    );
    // Malformed: a header announcing a question that is not there.
    let formerr = c
        .raw(&[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7])
        .unwrap();
    let formerr = hickory_proto::op::Message::from_vec(&formerr).unwrap();
    assert_eq!(formerr.metadata.id, 0xabcd);
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    let st = s.server.stats();
    assert_eq!(st.formerr, 1, "{st:?}");
    assert_eq!(st.answered_locally, 7, "{st:?}");
    assert_eq!(st.tcp_connections, 1, "{st:?}");
}

#[test]
fn forwards_unknown_names_to_the_upstream() {
    if !can_run("forwards_unknown_names_to_the_upstream") {
        return;
    }
    let s = setup(vec![UPSTREAM]);
    let c = &s.client;
    let m = c.udp("example.test", RecordType::A);
    assert_eq!(a_records(&m), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert!(!m.metadata.authoritative);
    let nx = c.udp("nx.test", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    // Truncated upstream answer: asked again over TCP, and too big for the
    // client's 512-byte UDP so it comes back truncated; over TCP it is whole.
    let big = c.udp("big.test", RecordType::A);
    assert!(big.metadata.truncation);
    assert_eq!(c.tcp("big.test", RecordType::A).answers.len(), 40);
    let fs = s.server.forwarder().stats();
    assert!(fs.tcp_fallbacks >= 2, "{fs:?}");
    assert_eq!(s.server.stats().forwarded, 4);
}

#[test]
fn upstream_down_is_servfail() {
    if !can_run("upstream_down_is_servfail") {
        return;
    }
    let s = setup(vec![DEAD_UPSTREAM]);
    let m = s.client.udp("example.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // Local names do not depend on the upstream.
    assert_eq!(a_records(&s.client.udp("web", RecordType::A)).len(), 1);
    assert_eq!(s.server.stats().servfail, 1);
    assert_eq!(s.server.forwarder().stats().servfail, 1);
}

#[test]
fn no_upstream_is_servfail() {
    if !can_run("no_upstream_is_servfail") {
        return;
    }
    let s = setup(vec![]);
    let m = s.client.udp("example.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn zone_updates_take_effect() {
    if !can_run("zone_updates_take_effect") {
        return;
    }
    let s = setup(vec![UPSTREAM]);
    assert_eq!(
        a_records(&s.client.udp("tasks.web", RecordType::A)).len(),
        2
    );
    let mut sick = endpoint("web", 1, [10, 0, 1, 10], Some([10, 0, 1, 2]), false);
    sick.healthy = false;
    let newcomer = endpoint("db", 1, [10, 0, 1, 30], Some([10, 0, 1, 3]), false);
    s.zone_tx
        .send(Arc::new(Zone::new(
            [
                sick,
                endpoint("web", 2, [10, 0, 1, 11], Some([10, 0, 1, 2]), false),
                newcomer,
            ],
            DEFAULT_TTL,
        )))
        .unwrap();
    assert_eq!(
        a_records(&s.client.udp("tasks.web", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 11)]
    );
    assert_eq!(
        a_records(&s.client.udp("db", RecordType::A)),
        [Ipv4Addr::new(10, 0, 1, 3)]
    );
    // rr is gone from the zone: now forwarded, and the fake upstream refuses it.
    let rr = s.client.udp("rr", RecordType::A);
    assert_eq!(rr.metadata.response_code, ResponseCode::Refused);
}
