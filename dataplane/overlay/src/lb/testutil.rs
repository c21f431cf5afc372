//! Packet builders and checksum checks shared by the balancer's tests. They
//! lean on etherparse, so the code under test is judged by an independent
//! implementation.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{Ipv4Header, PacketBuilder, TcpHeader, UdpHeader};

/// `a.b.c.d:port`.
pub fn sa(ip: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// An IPv4 TCP segment with the given flags byte (FIN 1, SYN 2, RST 4, ACK 16).
pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64).tcp(
        src.port(),
        dst.port(),
        1000,
        65000,
    );
    if flags & 0x01 != 0 {
        b = b.fin();
    }
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    if flags & 0x10 != 0 {
        b = b.ack(5000);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// An IPv4 UDP datagram.
pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Asserts that the IPv4 header checksum and the TCP/UDP checksum equal a
/// full recomputation (a UDP checksum of 0 must stay 0).
pub fn assert_checksums(p: &[u8]) {
    let (ip, rest) = Ipv4Header::from_slice(p).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let l4 = &rest[..usize::from(ip.total_len) - ip.header_len()];
    match ip.protocol.0 {
        6 => {
            let (h, payload) = TcpHeader::from_slice(l4).unwrap();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv4(&ip, payload).unwrap(),
                "TCP checksum"
            );
        }
        17 => {
            let (h, payload) = UdpHeader::from_slice(l4).unwrap();
            if h.checksum != 0 {
                assert_eq!(
                    h.checksum,
                    h.calc_checksum_ipv4(&ip, payload).unwrap(),
                    "UDP checksum"
                );
            }
        }
        p => panic!("protocol {p}"),
    }
}
