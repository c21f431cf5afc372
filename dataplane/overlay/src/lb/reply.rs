//! Answers the balancer asks its caller to send: a TCP RST for a flow to a VIP
//! that has no backend (or lost it), an ICMP port unreachable for UDP.
//!
//! Both come *from the VIP*, so the client's stack matches them to the
//! connection it opened. They allocate (a 40- or 56-byte `Vec`): they are rare,
//! error-path packets, and the caller owns where they go.

use crate::lb::flow::Proto;
use crate::lb::nat::Ipv4L4;
use crate::offload::{checksum_add, checksum_fold};

const TTL: u8 = 64;

fn ipv4_header(out: &mut [u8], total: usize, proto: u8, src: [u8; 4], dst: [u8; 4]) {
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[6] = 0x40; // DF
    out[8] = TTL;
    out[9] = proto;
    out[12..16].copy_from_slice(&src);
    out[16..20].copy_from_slice(&dst);
    let c = !checksum_fold(checksum_add(0, &out[..20]));
    out[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 + TCP RST answering the segment `packet` (starting at its IPv4
/// header), from its destination to its source, as RFC 9293 (3.10.7.1) says:
/// if the segment has ACK, the RST takes its sequence number from that
/// acknowledgment; otherwise it is RST+ACK acknowledging everything the
/// segment occupied. `None` when `packet` is not a TCP segment, or is itself
/// an RST (never answer an RST).
pub fn tcp_rst_for(packet: &[u8]) -> Option<Vec<u8>> {
    let p = Ipv4L4::new_checked(packet).ok()?;
    let flags = p.tcp_flags()?;
    if flags.rst() {
        return None;
    }
    let b = p.as_bytes();
    let tcp = &b[p.header_len()..];
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let data = tcp.len() - usize::from(tcp[12] >> 4) * 4;
    let (src, dst) = (p.dst(), p.src());

    let mut out = vec![0u8; 40];
    ipv4_header(&mut out, 40, 6, src.ip().octets(), dst.ip().octets());
    let t = &mut out[20..];
    t[0..2].copy_from_slice(&src.port().to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    if flags.ack() {
        t[4..8].copy_from_slice(&ack.to_be_bytes());
        t[13] = 0x04; // RST
    } else {
        let len = data as u32 + u32::from(flags.syn()) + u32::from(flags.fin());
        t[8..12].copy_from_slice(&seq.wrapping_add(len).to_be_bytes());
        t[13] = 0x14; // RST + ACK
    }
    t[12] = 5 << 4;
    let sum = checksum_add(0, &out[12..20]) + 6 + 20 + checksum_add(0, &out[20..40]);
    let c = !checksum_fold(sum);
    out[36..38].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// An ICMP destination unreachable, port unreachable (type 3, code 3, RFC
/// 792) answering the UDP datagram `packet`, from its destination, quoting its
/// IPv4 header and first 8 bytes. `None` when `packet` is not UDP.
pub fn icmp_port_unreachable_for(packet: &[u8]) -> Option<Vec<u8>> {
    let p = Ipv4L4::new_checked(packet).ok()?;
    if p.proto() != Proto::Udp {
        return None;
    }
    let quoted = &p.as_bytes()[..p.header_len() + 8];
    let total = 20 + 8 + quoted.len();
    let mut out = vec![0u8; total];
    ipv4_header(
        &mut out,
        total,
        1,
        p.dst().ip().octets(),
        p.src().ip().octets(),
    );
    out[20] = 3;
    out[21] = 3;
    out[28..].copy_from_slice(quoted);
    let c = !checksum_fold(checksum_add(0, &out[20..]));
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::testutil::{assert_checksums, sa, tcp, udp};
    use etherparse::{Icmpv4Header, Icmpv4Type, Ipv4Header, TcpHeader};
    use proptest::prelude::*;

    const CLIENT: [u8; 4] = [10, 0, 0, 2];
    const VIP: [u8; 4] = [10, 0, 0, 100];

    fn parse(rst: &[u8]) -> (Ipv4Header, TcpHeader) {
        assert_checksums(rst);
        let (ip, rest) = Ipv4Header::from_slice(rst).unwrap();
        (ip, TcpHeader::from_slice(rest).unwrap().0)
    }

    #[test]
    fn rst_for_a_syn_acknowledges_it() {
        let syn = tcp(sa(CLIENT, 40000), sa(VIP, 80), 0x02, b"");
        let (ip, t) = parse(&tcp_rst_for(&syn).unwrap());
        assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
        assert_eq!((t.source_port, t.destination_port), (80, 40000));
        assert!(t.rst && t.ack && !t.syn);
        assert_eq!(t.acknowledgment_number, 1001, "builder's seq 1000 + SYN");
    }

    #[test]
    fn rst_for_data_with_ack_takes_its_ack_as_seq() {
        let seg = tcp(sa(CLIENT, 40000), sa(VIP, 80), 0x10, b"GET /");
        let (_, t) = parse(&tcp_rst_for(&seg).unwrap());
        assert!(t.rst && !t.ack);
        assert_eq!(t.sequence_number, 5000);
    }

    #[test]
    fn never_answers_rst_or_non_tcp() {
        assert!(tcp_rst_for(&tcp(sa(CLIENT, 1), sa(VIP, 80), 0x04, b"")).is_none());
        assert!(tcp_rst_for(&udp(sa(CLIENT, 1), sa(VIP, 80), b"")).is_none());
        assert!(icmp_port_unreachable_for(&tcp(sa(CLIENT, 1), sa(VIP, 80), 0x02, b"")).is_none());
    }

    #[test]
    fn port_unreachable_quotes_the_datagram() {
        let d = udp(sa(CLIENT, 5353), sa(VIP, 53), b"query");
        let out = icmp_port_unreachable_for(&d).unwrap();
        let (ip, rest) = Ipv4Header::from_slice(&out).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!((ip.source, ip.destination), (VIP, CLIENT));
        let (icmp, quoted) = Icmpv4Header::from_slice(rest).unwrap();
        assert!(matches!(
            icmp.icmp_type,
            Icmpv4Type::DestinationUnreachable(_)
        ));
        assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(quoted));
        assert_eq!(quoted, &d[..28]);
    }

    proptest! {
        #[test]
        fn rst_checksums_are_right(flags in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let seg = tcp(sa(CLIENT, 40000), sa(VIP, 80), flags & 0x17, &payload);
            if let Some(rst) = tcp_rst_for(&seg) {
                parse(&rst);
            }
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = tcp_rst_for(&b);
            let _ = icmp_port_unreachable_for(&b);
        }
    }
}
