use super::*;
use crate::lb::testutil::{assert_checksums, sa, tcp, udp};
use crate::offload::{complete_checksum, VnetHdr, VNET_F_NEEDS_CSUM};
use etherparse::{Icmpv4Header, Icmpv4Type, Ipv4Header, TcpHeader};
use std::collections::HashSet;

const VIP: [u8; 4] = [10, 0, 0, 100];
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const B1: [u8; 4] = [10, 0, 0, 3];
const B2: [u8; 4] = [10, 0, 0, 4];
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

fn t(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mac(ip: [u8; 4]) -> MacAddr {
    MacAddr::from_ipv4(Ipv4Addr::from(ip))
}

/// An Ethernet frame around an IPv4 packet.
fn eth(dst: MacAddr, src: MacAddr, packet: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH + packet.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE_IPV4);
    f.extend_from_slice(packet);
    f
}

/// A client's frame to the VIP (its MAC, as ARP gave it).
fn to_vip(packet: &[u8]) -> Vec<u8> {
    eth(vip_mac(Ipv4Addr::from(VIP)), mac(CLIENT), packet)
}

fn service(backends: &[([u8; 4], bool)]) -> VipService {
    VipService {
        vip: Ipv4Addr::from(VIP),
        backends: backends
            .iter()
            .map(|&(ip, active)| VipBackend {
                ip: Ipv4Addr::from(ip),
                active,
            })
            .collect(),
    }
}

fn table(backends: &[([u8; 4], bool)]) -> VipTable {
    let mut v = VipTable::new(BalancerConfig::default()).unwrap();
    assert!(v.set_services(&[service(backends)]));
    v
}

fn ipv4(frame: &[u8]) -> (Ipv4Header, TcpHeader) {
    assert_checksums(&frame[ETH..]);
    let (ip, rest) = Ipv4Header::from_slice(&frame[ETH..]).unwrap();
    (ip, TcpHeader::from_slice(rest).unwrap().0)
}

fn forwarded(a: VipAction) -> Ipv4Addr {
    match a {
        VipAction::Forward { backend } => backend,
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn arp_for_a_vip_is_answered_with_its_mac_and_other_arp_passes() {
    let v = &mut table(&[(B1, true)]);
    let request = |target: [u8; 4]| {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac(CLIENT).0);
        f.extend_from_slice(&ETHERTYPE_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac(CLIENT).0);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    };
    let mut reply = [0u8; 128];
    let n = match v.from_endpoint(t(0), &mut request(VIP), L4Checksum::Complete, &mut reply) {
        VipAction::Reply(n) => n,
        other => panic!("{other:?}"),
    };
    let (eth, rest) = etherparse::Ethernet2Header::from_slice(&reply[..n]).unwrap();
    assert_eq!(eth.destination, mac(CLIENT).0);
    assert_eq!(eth.source, vip_mac(Ipv4Addr::from(VIP)).0);
    let arp = etherparse::ArpPacket::from_slice(rest).unwrap();
    assert_eq!(arp.operation, etherparse::ArpOperation::REPLY);
    assert_eq!(arp.sender_hw_addr(), &vip_mac(Ipv4Addr::from(VIP)).0);
    assert_eq!(arp.sender_protocol_addr(), &VIP);
    assert_eq!(arp.target_hw_addr(), &mac(CLIENT).0);
    assert_eq!(arp.target_protocol_addr(), &CLIENT);
    assert_eq!(
        v.from_endpoint(t(0), &mut request(B1), L4Checksum::Complete, &mut reply),
        VipAction::Pass,
        "a task's address is the switch's to answer"
    );
}

#[test]
fn every_port_is_balanced_and_keeps_its_number_and_the_answer_comes_from_the_vip() {
    let v = &mut table(&[(B1, true), (B2, true)]);
    let mut reply = [0u8; 256];
    for port in [80, 22, 8080, 65535] {
        let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, port), SYN, b""));
        let backend = forwarded(v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply));
        let (ip, tcp_h) = ipv4(&f);
        assert_eq!(ip.destination, backend.octets());
        assert_eq!(
            ip.source, CLIENT,
            "no source NAT: the backend sees the client"
        );
        assert_eq!(tcp_h.destination_port, port, "the port addressed is kept");

        // The backend's answer, on its way to the client's device.
        let mut answer = eth(
            mac(CLIENT),
            mac(backend.octets()),
            &tcp(sa(backend.octets(), port), sa(CLIENT, 40000), SYN_ACK, b""),
        );
        assert!(v.to_endpoint(t(0), &mut answer, L4Checksum::Complete));
        let (ip, tcp_h) = ipv4(&answer);
        assert_eq!((ip.source, tcp_h.source_port), (VIP, port));
        assert_eq!(ip.destination, CLIENT);
        assert_eq!(&answer[6..12], &vip_mac(Ipv4Addr::from(VIP)).0);
    }
    let mut udp_f = to_vip(&udp(sa(CLIENT, 5353), sa(VIP, 53), b"q"));
    forwarded(v.from_endpoint(t(0), &mut udp_f, L4Checksum::Complete, &mut reply));
    assert_checksums(&udp_f[ETH..]);
}

#[test]
fn flows_spread_over_both_backends() {
    let v = &mut table(&[(B1, true), (B2, true)]);
    let mut reply = [0u8; 256];
    let mut seen = HashSet::new();
    for port in 30000..30064 {
        let mut f = to_vip(&tcp(sa(CLIENT, port), sa(VIP, 80), SYN, b""));
        seen.insert(forwarded(v.from_endpoint(
            t(0),
            &mut f,
            L4Checksum::Complete,
            &mut reply,
        )));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn other_frames_pass_untouched() {
    let v = &mut table(&[(B1, true)]);
    let mut reply = [0u8; 256];
    for mut f in [
        eth(
            mac(B1),
            mac(CLIENT),
            &tcp(sa(CLIENT, 1), sa(B1, 80), SYN, b""),
        ),
        vec![0u8; 10],
        {
            let mut f = to_vip(&tcp(sa(CLIENT, 1), sa(VIP, 80), SYN, b""));
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f
        },
    ] {
        let before = f.clone();
        assert_eq!(
            v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply),
            VipAction::Pass
        );
        assert!(!v.to_endpoint(t(0), &mut f, L4Checksum::Complete));
        assert_eq!(f, before);
    }
}

#[test]
fn a_draining_backend_keeps_its_flows_and_gets_no_new_ones() {
    let v = &mut table(&[(B1, true), (B2, true)]);
    let mut reply = [0u8; 256];
    // A flow on each backend.
    let mut pinned = std::collections::HashMap::new();
    for port in 30000..30064 {
        let mut f = to_vip(&tcp(sa(CLIENT, port), sa(VIP, 80), SYN, b""));
        let b = forwarded(v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply));
        pinned.entry(b).or_insert(port);
    }
    assert!(v.set_services(&[service(&[(B1, false), (B2, true)])]));
    let mut old = to_vip(&tcp(
        sa(CLIENT, pinned[&Ipv4Addr::from(B1)]),
        sa(VIP, 80),
        ACK,
        b"",
    ));
    assert_eq!(
        forwarded(v.from_endpoint(t(1), &mut old, L4Checksum::Complete, &mut reply)),
        Ipv4Addr::from(B1)
    );
    for port in 40000..40064 {
        let mut f = to_vip(&tcp(sa(CLIENT, port), sa(VIP, 80), SYN, b""));
        assert_eq!(
            forwarded(v.from_endpoint(t(1), &mut f, L4Checksum::Complete, &mut reply)),
            Ipv4Addr::from(B2)
        );
    }
}

#[test]
fn a_removed_backend_s_flow_is_reset_from_the_vip() {
    let v = &mut table(&[(B1, true)]);
    let mut reply = [0u8; 256];
    let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 80), SYN, b""));
    forwarded(v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply));
    assert!(v.set_services(&[service(&[(B2, true)])]));
    let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 80), ACK, b"GET /"));
    let n = match v.from_endpoint(t(1), &mut f, L4Checksum::Complete, &mut reply) {
        VipAction::Reply(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(&reply[..6], &mac(CLIENT).0);
    let (ip, tcp_h) = ipv4(&reply[..n]);
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    assert!(tcp_h.rst);
    assert_eq!((tcp_h.source_port, tcp_h.destination_port), (80, 40000));
}

#[test]
fn no_backend_answers_rst_for_tcp_and_port_unreachable_for_udp() {
    let v = &mut table(&[]);
    let mut reply = [0u8; 256];
    let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 443), SYN, b""));
    let VipAction::Reply(n) = v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply)
    else {
        panic!("no RST")
    };
    assert!(ipv4(&reply[..n]).1.rst);

    let mut f = to_vip(&udp(sa(CLIENT, 5353), sa(VIP, 53), b"q"));
    let VipAction::Reply(n) = v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply)
    else {
        panic!("no ICMP")
    };
    let (ip, rest) = Ipv4Header::from_slice(&reply[ETH..n]).unwrap();
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    let (icmp, _) = Icmpv4Header::from_slice(rest).unwrap();
    assert!(matches!(
        icmp.icmp_type,
        Icmpv4Type::DestinationUnreachable(_)
    ));
}

#[test]
fn hairpin_is_source_natted_to_the_vip_both_ways() {
    // The client is the service's only backend.
    let v = &mut table(&[(CLIENT, true)]);
    let mut reply = [0u8; 256];
    let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 80), SYN, b""));
    assert_eq!(
        v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply),
        VipAction::Hairpin
    );
    let (ip, tcp_h) = ipv4(&f);
    assert_eq!((ip.source, tcp_h.source_port), (VIP, 40000));
    assert_eq!((ip.destination, tcp_h.destination_port), (CLIENT, 80));
    assert_eq!(&f[..6], &mac(CLIENT).0, "back to the sender");
    assert_eq!(&f[6..12], &vip_mac(Ipv4Addr::from(VIP)).0);

    // The task, as the server, answers VIP:40000 through the switch.
    let mut answer = to_vip(&tcp(sa(CLIENT, 80), sa(VIP, 40000), SYN_ACK, b""));
    assert_eq!(
        v.from_endpoint(t(0), &mut answer, L4Checksum::Complete, &mut reply),
        VipAction::Hairpin
    );
    let (ip, tcp_h) = ipv4(&answer);
    assert_eq!((ip.source, tcp_h.source_port), (VIP, 80));
    assert_eq!((ip.destination, tcp_h.destination_port), (CLIENT, 40000));

    // The client's next segment follows the same flow.
    let mut ack = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 80), ACK, b"hi"));
    assert_eq!(
        v.from_endpoint(t(0), &mut ack, L4Checksum::Complete, &mut reply),
        VipAction::Hairpin
    );
    assert_eq!(v.balancer().conntrack().len(), 1);
}

#[test]
fn a_partial_checksum_is_right_once_completed() {
    let v = &mut table(&[(B1, true)]);
    let mut reply = [0u8; 2048];
    let payload = vec![7u8; 1000];
    let mut f = to_vip(&tcp(sa(CLIENT, 40000), sa(VIP, 80), ACK, &payload));
    // What a TAP hands over with NEEDS_CSUM: the pseudo-header sum only.
    let l4_len = f.len() - ETH - 20;
    let pseudo = checksum_fold(checksum_add(0, &f[ETH + 12..ETH + 20]) + 6 + l4_len as u64);
    let at = ETH + 20 + 16;
    f[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    forwarded(v.from_endpoint(t(0), &mut f, L4Checksum::Partial, &mut reply));
    let hdr = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        csum_start: (ETH + 20) as u16,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    complete_checksum(&mut f, &hdr).unwrap();
    assert_checksums(&f[ETH..]);
    assert_eq!(&f[ETH + 16..ETH + 20], &B1);
}

#[test]
fn ping_to_a_vip_is_answered() {
    let v = &mut table(&[(B1, true)]);
    let mut reply = [0u8; 256];
    let mut packet = Vec::new();
    etherparse::PacketBuilder::ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut packet, b"ping!")
        .unwrap();
    let mut f = to_vip(&packet);
    let VipAction::Reply(n) = v.from_endpoint(t(0), &mut f, L4Checksum::Complete, &mut reply)
    else {
        panic!("no echo reply")
    };
    let (ip, rest) = Ipv4Header::from_slice(&reply[ETH..n]).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
    let (icmp, payload) = Icmpv4Header::from_slice(rest).unwrap();
    assert!(matches!(icmp.icmp_type, Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 1));
    assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(payload));
    assert_eq!(payload, b"ping!");
}

#[test]
fn setting_the_same_services_again_changes_nothing() {
    let mut v = table(&[(B1, true), (B2, true)]);
    assert!(!v.set_services(&[service(&[(B2, true), (B1, true)])]));
    assert!(v.set_services(&[]));
    assert!(v.is_empty());
    assert!(v.balancer().services().is_empty());
    assert!(!v.set_services(&[]));
}

proptest::proptest! {
    /// Any bytes after an Ethernet header for IPv4 or ARP, sent to the VIP or
    /// not, never panic either way, whatever the checksum state.
    #[test]
    fn garbage_never_panics(
        arp in proptest::bool::ANY,
        partial in proptest::bool::ANY,
        to_vip in proptest::bool::ANY,
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..96),
    ) {
        // The client is one of the backends: hairpin paths are reached too.
        let v = &mut table(&[(CLIENT, true), (B1, true)]);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(if arp { &ETHERTYPE_ARP } else { &ETHERTYPE_IPV4 });
        f.extend_from_slice(&body);
        if to_vip && f.len() >= ETH + 20 {
            f[ETH] = 0x45;
            f[ETH + 16..ETH + 20].copy_from_slice(&VIP);
        }
        let csum = if partial { L4Checksum::Partial } else { L4Checksum::Complete };
        let mut reply = [0u8; 256];
        let _ = v.from_endpoint(t(0), &mut f, csum, &mut reply);
        let _ = v.to_endpoint(t(0), &mut f, csum);
    }
}
