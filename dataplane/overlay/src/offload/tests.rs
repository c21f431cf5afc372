use super::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;

const SRC: [u8; 4] = [10, 0, 0, 10];
const DST: [u8; 4] = [10, 0, 0, 20];

/// A TCP/IPv4 frame with timestamps, built by etherparse (valid checksums).
fn tcp_frame(seq: u32, payload: &[u8], psh: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 10], [2, 0x42, 10, 0, 0, 20])
        .ipv4(SRC, DST, 64)
        .tcp(40000, 5001, seq, 501)
        .ack(777)
        .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
        .unwrap();
    if psh {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Checks IPv4 and TCP checksums and returns (seq, payload, psh).
fn check_segment(frame: &[u8]) -> (u32, Vec<u8>, bool) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let hdr = ip.header().to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IPv4 checksum"
    );
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("not TCP")
    };
    let expected = tcp
        .to_header()
        .calc_checksum_ipv4(&hdr, tcp.payload())
        .unwrap();
    assert_eq!(tcp.checksum(), expected, "TCP checksum");
    (tcp.sequence_number(), tcp.payload().to_vec(), tcp.psh())
}

fn gso_hdr(mss: u16) -> VnetHdr {
    VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn cut(frame: &[u8], mss: u16) -> Vec<Vec<u8>> {
    let plan = TsoPlan::new(frame, &gso_hdr(mss)).unwrap();
    (0..plan.count)
        .map(|i| {
            let mut out = vec![0u8; plan.segment_len(i)];
            let n = plan.write_segment(frame, i, &mut out);
            assert_eq!(n, out.len());
            out
        })
        .collect()
}

#[test]
fn vnet_header_round_trips() {
    let h = gso_hdr(1398);
    let mut b = [0u8; VNET_HDR_LEN];
    h.emit(&mut b);
    assert_eq!(VnetHdr::parse(&b).unwrap(), h);
    assert!(h.is_gso());
    assert_eq!(VnetHdr::parse(&b[..9]), Err(DropReason::Malformed));
}

#[test]
fn a_super_frame_is_cut_into_valid_segments() {
    let data = pattern(10_000);
    let frame = tcp_frame(1000, &data, true);
    let segs = cut(&frame, 1388);
    assert_eq!(segs.len(), 8);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let (seq, payload, psh) = check_segment(s);
        assert_eq!(seq, 1000 + (i * 1388) as u32);
        assert_eq!(psh, i == 7, "PSH only on the last segment");
        joined.extend(payload);
    }
    assert_eq!(joined, data);
}

#[test]
fn segments_merge_back_into_one_super_frame() {
    let data = pattern(20_000);
    let segs = cut(&tcp_frame(5, &data, true), 1388);
    let mut gro = TcpCoalescer::new();
    for s in &segs {
        assert_eq!(gro.push(s), Push::Merged);
    }
    let out = gro.take().unwrap().to_vec();
    let hdr = VnetHdr::parse(&out).unwrap();
    assert_eq!(
        (hdr.gso_type, hdr.gso_size, hdr.flags),
        (GSO_TCPV4, 1388, VNET_F_NEEDS_CSUM)
    );
    let frame = &out[VNET_HDR_LEN..];
    // Re-cutting the merged frame (as the kernel would) gives the same segments.
    let mut complete = frame.to_vec();
    complete_checksum(&mut complete, &hdr).unwrap();
    let again = cut(&complete, 1388);
    assert_eq!(again.len(), segs.len());
    for (a, b) in again.iter().zip(&segs) {
        assert_eq!(check_segment(a).1, check_segment(b).1);
    }
    assert!(!gro.is_pending());
}

#[test]
fn gaps_other_flows_and_control_segments_flush() {
    let data = pattern(1388 * 3);
    let segs = cut(&tcp_frame(0, &data, false), 1388);
    let mut gro = TcpCoalescer::new();
    assert_eq!(gro.push(&segs[0]), Push::Merged);
    // Out of order: segment 2 before 1.
    assert_eq!(gro.push(&segs[2]), Push::Flush);
    let single = gro.take().unwrap();
    assert_eq!(VnetHdr::parse(single).unwrap().gso_type, GSO_NONE);
    // A SYN is never merged.
    let mut syn = tcp_frame(0, b"", false);
    syn[14 + 20 + 13] |= 0x02;
    assert_eq!(gro.push(&syn), Push::Alone);
    // ARP is never merged.
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(gro.push(&arp), Push::Alone);
}

#[test]
fn ethernet_padding_is_not_merged_into_the_stream() {
    let segs = cut(&tcp_frame(0, &pattern(1388 * 2), false), 1388);
    let mut padded = segs[0].clone();
    padded.extend_from_slice(&[0xee; 6]);
    let mut gro = TcpCoalescer::new();
    assert_eq!(gro.push(&padded), Push::Merged);
    assert_eq!(gro.push(&segs[1]), Push::Merged);
    let merged = gro.take().unwrap();
    assert_eq!(&merged[VNET_HDR_LEN + 66..], &pattern(1388 * 2)[..]);
}

#[test]
fn a_short_segment_closes_the_run() {
    let segs = cut(&tcp_frame(0, &pattern(1388 + 100), false), 1388);
    let next = cut(&tcp_frame(1488, &pattern(1388), false), 1388);
    let mut gro = TcpCoalescer::new();
    assert_eq!(gro.push(&segs[0]), Push::Merged);
    assert_eq!(gro.push(&segs[1]), Push::Merged);
    assert_eq!(gro.push(&next[0]), Push::Flush);
}

#[test]
fn checksums_are_verified() {
    let mut frame = tcp_frame(1, &pattern(500), false);
    assert!(ipv4_tcp_checksum_valid(&frame));
    frame[100] ^= 1;
    assert!(!ipv4_tcp_checksum_valid(&frame));
    assert!(!ipv4_tcp_checksum_valid(&[0u8; 20]));
}

#[test]
fn partial_checksums_are_completed() {
    let mut frame = tcp_frame(9, &pattern(300), false);
    let good = frame.clone();
    // Replace the TCP checksum by the pseudo-header sum, as a TAP hands it over.
    let ip_len = frame.len() - 14;
    let psum = checksum_fold(pseudo_header_sum(&frame[14..], ip_len - 20));
    frame[50..52].copy_from_slice(&psum.to_be_bytes());
    complete_checksum(&mut frame, &gso_hdr(0)).unwrap();
    assert_eq!(frame, good);
}

#[test]
fn malformed_super_frames_are_refused() {
    let frame = tcp_frame(0, &pattern(100), false);
    assert!(TsoPlan::new(&frame[..40], &gso_hdr(1388)).is_err());
    assert!(TsoPlan::new(&frame, &gso_hdr(0)).is_err());
    let mut v6 = gso_hdr(1388);
    v6.gso_type = GSO_TCPV6;
    assert!(TsoPlan::new(&frame, &v6).is_err());
}

proptest! {
    #[test]
    fn cut_then_merge_preserves_the_stream(len in 1usize..30_000, mss in 500u16..1460, seq: u32) {
        let data = pattern(len);
        let segs = cut(&tcp_frame(seq, &data, true), mss);
        let mut gro = TcpCoalescer::new();
        let mut joined = Vec::new();
        for s in &segs {
            let (sseq, payload, _) = check_segment(s);
            prop_assert_eq!(sseq, seq.wrapping_add(joined.len() as u32));
            joined.extend(payload);
            prop_assert_eq!(gro.push(s), Push::Merged);
        }
        prop_assert_eq!(&joined, &data);
        let merged = gro.take().unwrap();
        prop_assert_eq!(merged.len(), VNET_HDR_LEN + 66 + len);
        prop_assert_eq!(&merged[VNET_HDR_LEN + 66..], &data[..]);
    }

    #[test]
    fn checksum_matches_a_bytewise_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut reference: u64 = 0;
        for pair in data.chunks(2) {
            reference += (u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])) as u64;
        }
        prop_assert_eq!(checksum_fold(checksum_add(0, &data)), checksum_fold(reference));
    }
}
