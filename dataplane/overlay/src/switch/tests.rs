use super::*;

const NODE_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 99));

fn vni(n: u32) -> Vni {
    Vni::new(n).unwrap()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn mac(last: u8) -> MacAddr {
    MacAddr::from_ipv4(ip(last))
}

/// Network "blue" (VNI 4096) with local endpoints 1 (.2) and 2 (.3) and a remote
/// endpoint .4 on node B.
fn blue() -> (Switch, NetworkId) {
    let mut sw = Switch::new();
    let net = sw
        .add_network(NetworkSpec {
            name: "blue".into(),
            vni: vni(4096),
            mtu: 1450,
            encrypted: false,
        })
        .unwrap();
    for (ep, last) in [(1, 2), (2, 3)] {
        sw.upsert_endpoint(
            net,
            EndpointRecord {
                ip: ip(last),
                mac: mac(last),
                location: Location::Local(EndpointId(ep)),
            },
        )
        .unwrap();
    }
    sw.upsert_endpoint(
        net,
        EndpointRecord {
            ip: ip(4),
            mac: mac(4),
            location: Location::Remote(NODE_B),
        },
    )
    .unwrap();
    (sw, net)
}

fn ipv4_frame(src: MacAddr, dst: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    f
}

fn arp_request_frame(src_mac: MacAddr, src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: src_mac.0,
        destination: MacAddr::BROADCAST.0,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: src_mac.0,
        sender_ipv4: src_ip.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    };
    let mut f = eth.to_bytes().to_vec();
    f.extend_from_slice(&arp.to_bytes());
    f
}

fn parse_reply(reply: &[u8]) -> (MacAddr, ArpEthIpv4Packet) {
    let eth = Ethernet2HeaderSlice::from_slice(reply).unwrap();
    assert_eq!(eth.ether_type(), EtherType::ARP);
    let arp = ArpPacketSlice::from_slice(&reply[ETHERNET_HEADER_LEN..])
        .unwrap()
        .to_packet()
        .try_eth_ipv4()
        .unwrap();
    (MacAddr(eth.destination()), arp)
}

#[test]
fn unicast_goes_to_local_or_remote_owner() {
    let (sw, _) = blue();
    let mut reply = [0u8; 64];
    let f = ipv4_frame(mac(2), mac(3), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Deliver(EndpointId(2))
    );
    let f = ipv4_frame(mac(2), mac(4), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Forward {
            peer: NODE_B,
            vni: vni(4096)
        }
    );
}

#[test]
fn unknown_destination_spoofing_and_oversize_are_dropped() {
    let (sw, _) = blue();
    let mut reply = [0u8; 64];
    let f = ipv4_frame(mac(2), mac(77), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
    let f = ipv4_frame(mac(9), mac(3), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Drop(DropReason::SpoofedSource)
    );
    let ok = ipv4_frame(mac(2), mac(3), 1450 + 14);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &ok, &mut reply),
        Verdict::Deliver(EndpointId(2))
    );
    let big = ipv4_frame(mac(2), mac(3), 1450 + 15);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &big, &mut reply),
        Verdict::Drop(DropReason::Oversize)
    );
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &[0u8; 10], &mut reply),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn arp_is_answered_from_the_table_and_nothing_floods() {
    let (sw, _) = blue();
    let mut reply = [0u8; 64];
    // A local endpoint asks for the remote one: answered here, nothing sent.
    let req = arp_request_frame(mac(2), ip(2), ip(4));
    let Verdict::Reply(n) = sw.from_endpoint(EndpointId(1), &req, &mut reply) else {
        panic!("expected an ARP reply");
    };
    let (dst, arp) = parse_reply(&reply[..n]);
    assert_eq!(dst, mac(2));
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(arp.sender_mac, mac(4).0);
    assert_eq!(arp.sender_ipv4_addr(), ip(4));
    assert_eq!(arp.target_ipv4_addr(), ip(2));

    let req = arp_request_frame(mac(2), ip(2), ip(200));
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &req, &mut reply),
        Verdict::Drop(DropReason::ArpUnknownTarget)
    );
    let gratuitous = arp_request_frame(mac(2), ip(2), ip(2));
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &gratuitous, &mut reply),
        Verdict::Drop(DropReason::Flood)
    );
    let other_broadcast = ipv4_frame(mac(2), MacAddr::BROADCAST, 60);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &other_broadcast, &mut reply),
        Verdict::Drop(DropReason::Flood)
    );
}

#[test]
fn underlay_frames_reach_only_local_endpoints_of_known_peers() {
    let (sw, _) = blue();
    let mut reply = [0u8; 64];
    let f = ipv4_frame(mac(4), mac(2), 100);
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Deliver(EndpointId(1))
    );
    assert_eq!(
        sw.from_underlay(vni(4096), STRANGER, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownPeer)
    );
    assert_eq!(
        sw.from_underlay(vni(5000), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownVni)
    );
    // A frame for a MAC that lives on another node is never bounced onwards.
    let f = ipv4_frame(mac(2), mac(4), 100);
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
}

#[test]
fn underlay_arp_is_answered_only_for_local_targets() {
    let (sw, _) = blue();
    let mut reply = [0u8; 64];
    let req = arp_request_frame(mac(4), ip(4), ip(3));
    let Verdict::Reply(n) = sw.from_underlay(vni(4096), NODE_B, &req, &mut reply) else {
        panic!("expected an ARP reply");
    };
    let (dst, arp) = parse_reply(&reply[..n]);
    assert_eq!((dst, MacAddr(arp.sender_mac)), (mac(4), mac(3)));
    // The target lives on node B itself: another node answers, not us.
    let req = arp_request_frame(mac(4), ip(4), ip(4));
    assert!(matches!(
        sw.from_underlay(vni(4096), NODE_B, &req, &mut reply),
        Verdict::Drop(_)
    ));
}

#[test]
fn peers_come_and_go_with_their_endpoints() {
    let (mut sw, net) = blue();
    let mut reply = [0u8; 64];
    let f = ipv4_frame(mac(4), mac(2), 100);
    assert!(sw.remove_endpoint(net, mac(4)).unwrap());
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownPeer)
    );
    sw.add_peer(net, NODE_B).unwrap();
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Deliver(EndpointId(1))
    );
    assert_eq!(sw.endpoints(net).len(), 2);
}

#[test]
fn moving_an_endpoint_updates_both_tables() {
    let (mut sw, net) = blue();
    let mut reply = [0u8; 64];
    let moved = EndpointRecord {
        ip: ip(4),
        mac: mac(4),
        location: Location::Remote(STRANGER),
    };
    sw.upsert_endpoint(net, moved).unwrap();
    let f = ipv4_frame(mac(2), mac(4), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Forward {
            peer: STRANGER,
            vni: vni(4096)
        }
    );
    // Node B held only that endpoint, so it is no longer a peer.
    let back = ipv4_frame(mac(4), mac(2), 100);
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &back, &mut reply),
        Verdict::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn conflicting_tables_are_refused_with_a_reason() {
    let (mut sw, net) = blue();
    let err = sw
        .upsert_endpoint(
            net,
            EndpointRecord {
                ip: ip(2),
                mac: mac(99),
                location: Location::Remote(NODE_B),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.2"), "{err}");
    let err = sw
        .add_network(NetworkSpec {
            name: "red".into(),
            vni: vni(4096),
            mtu: 1450,
            encrypted: true,
        })
        .unwrap_err();
    assert!(err.to_string().contains("blue"), "{err}");
    let err = sw
        .upsert_endpoint(
            net,
            EndpointRecord {
                ip: ip(50),
                mac: mac(50),
                location: Location::Local(EndpointId(1)),
            },
        )
        .unwrap_err();
    assert_eq!(err, TableError::EndpointInUse(EndpointId(1)));
}

#[test]
fn two_networks_are_isolated() {
    let (mut sw, _) = blue();
    let red = sw
        .add_network(NetworkSpec {
            name: "red".into(),
            vni: vni(4097),
            mtu: 1418,
            encrypted: true,
        })
        .unwrap();
    sw.upsert_endpoint(
        red,
        EndpointRecord {
            ip: ip(5),
            mac: mac(5),
            location: Location::Local(EndpointId(3)),
        },
    )
    .unwrap();
    let mut reply = [0u8; 64];
    // Blue's endpoint 1 cannot address red's endpoint, by MAC or by ARP.
    let f = ipv4_frame(mac(2), mac(5), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &f, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
    let req = arp_request_frame(mac(2), ip(2), ip(5));
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &req, &mut reply),
        Verdict::Drop(DropReason::ArpUnknownTarget)
    );
    // A frame for red's endpoint arriving on blue's VNI is not delivered.
    let f = ipv4_frame(mac(4), mac(5), 100);
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
}

fn spec(name: &str, n: u32) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        vni: vni(n),
        mtu: 1450,
        encrypted: false,
    }
}

#[test]
fn removing_a_local_endpoint_takes_its_records_with_it() {
    let (mut sw, net) = blue();
    let mut reply = [0u8; 64];
    assert!(sw.remove_local(EndpointId(2)));
    assert!(!sw.remove_local(EndpointId(2)), "removed twice");
    assert_eq!(sw.endpoint_network(EndpointId(2)), None);
    // Its frames are no longer accepted, and nothing reaches it any more.
    let from_gone = ipv4_frame(mac(3), mac(2), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(2), &from_gone, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
    let to_gone = ipv4_frame(mac(2), mac(3), 100);
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &to_gone, &mut reply),
        Verdict::Drop(DropReason::UnknownDestination)
    );
    let arp = arp_request_frame(mac(2), ip(2), ip(3));
    assert_eq!(
        sw.from_endpoint(EndpointId(1), &arp, &mut reply),
        Verdict::Drop(DropReason::ArpUnknownTarget)
    );
    assert_eq!(
        sw.endpoints(net).iter().map(|r| r.ip).collect::<Vec<_>>(),
        [ip(2), ip(4)]
    );
}

#[test]
fn a_network_with_local_endpoints_cannot_be_removed() {
    let (mut sw, net) = blue();
    let err = sw.remove_network(net).unwrap_err();
    assert_eq!(
        err,
        TableError::NetworkInUse {
            network: "blue".into(),
            endpoints: 2
        }
    );
    assert!(err.to_string().contains("blue"), "{err}");
    assert_eq!(
        sw.network_by_name("blue"),
        Some(net),
        "refusal changed nothing"
    );
    sw.remove_local(EndpointId(1));
    assert!(
        sw.remove_network(net).is_err(),
        "one endpoint is still attached"
    );
}

#[test]
fn a_removed_network_forgets_its_vni_records_and_peers() {
    let (mut sw, net) = blue();
    let mut reply = [0u8; 64];
    sw.add_peer(net, STRANGER).unwrap();
    sw.remove_local(EndpointId(1));
    sw.remove_local(EndpointId(2));
    assert_eq!(sw.remove_network(net).unwrap().name, "blue");
    assert_eq!(sw.network_by_name("blue"), None);
    assert_eq!(sw.network_by_vni(vni(4096)), None);
    assert_eq!(sw.spec(net), None);
    assert!(sw.endpoints(net).is_empty());
    assert_eq!(sw.network_ids().count(), 0);
    let f = ipv4_frame(mac(4), mac(2), 100);
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownVni)
    );
    assert_eq!(sw.remove_network(net), Err(TableError::UnknownNetwork(net)));
    // Name and VNI are free again; the new network starts empty, without the
    // old one's remote endpoint or peers.
    let again = sw.add_network(spec("blue", 4096)).unwrap();
    assert!(sw.endpoints(again).is_empty());
    assert!(sw.peers(again).is_empty());
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownPeer)
    );
}

#[test]
fn network_ids_are_reused_lowest_first_and_listed_in_order() {
    let mut sw = Switch::new();
    let a = sw.add_network(spec("a", 1)).unwrap();
    let b = sw.add_network(spec("b", 2)).unwrap();
    let c = sw.add_network(spec("c", 3)).unwrap();
    assert_eq!([a, b, c], [NetworkId(0), NetworkId(1), NetworkId(2)]);
    sw.remove_network(b).unwrap();
    assert_eq!(sw.network_ids().collect::<Vec<_>>(), [a, c]);
    assert_eq!(sw.network_by_name("c"), Some(c), "c kept its id");
    let d = sw.add_network(spec("d", 4)).unwrap();
    assert_eq!(d, b, "the free slot is reused");
    assert_eq!(sw.spec(d).unwrap().name, "d");
    sw.remove_network(c).unwrap();
    sw.remove_network(d).unwrap();
    assert_eq!(sw.add_network(spec("e", 5)).unwrap(), NetworkId(1));
}

#[test]
fn set_peers_replaces_named_peers_and_keeps_endpoint_owners() {
    let (mut sw, net) = blue();
    let mut reply = [0u8; 64];
    let f = ipv4_frame(mac(4), mac(2), 100);
    sw.set_peers(net, [STRANGER]).unwrap();
    assert_eq!(sw.peers(net), [STRANGER]);
    assert_eq!(
        sw.from_underlay(vni(4096), STRANGER, &f, &mut reply),
        Verdict::Deliver(EndpointId(1))
    );
    sw.set_peers(net, []).unwrap();
    assert_eq!(
        sw.from_underlay(vni(4096), STRANGER, &f, &mut reply),
        Verdict::Drop(DropReason::UnknownPeer)
    );
    // Node B still holds endpoint .4, so it stays a peer.
    assert_eq!(
        sw.from_underlay(vni(4096), NODE_B, &f, &mut reply),
        Verdict::Deliver(EndpointId(1))
    );
    assert_eq!(
        sw.set_peers(NetworkId(7), [NODE_B]),
        Err(TableError::UnknownNetwork(NetworkId(7)))
    );
}
