use super::*;
use crate::lb::testutil::{assert_checksums, sa, tcp, udp};
use crate::offload::{checksum_add, checksum_fold};
use proptest::prelude::*;

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const VIP: [u8; 4] = [10, 0, 0, 100];
const BACKEND: [u8; 4] = [10, 0, 1, 7];

#[test]
fn dnat_then_reverse_tcp() {
    let mut p = tcp(sa(CLIENT, 40000), sa(VIP, 80), 0x02, b"");
    let before = dnat(&mut p, sa(BACKEND, 8080), L4Checksum::Complete).unwrap();
    assert_eq!(before.dst, sa(VIP, 80));
    assert_checksums(&p);
    let v = Ipv4L4::new_checked(&p[..]).unwrap();
    assert_eq!(v.dst(), sa(BACKEND, 8080));
    assert_eq!(v.src(), sa(CLIENT, 40000));
    assert_eq!(v.tcp_flags().map(|f| f.syn()), Some(true));

    let mut r = tcp(sa(BACKEND, 8080), sa(CLIENT, 40000), 0x12, b"hello");
    reverse_nat(&mut r, sa(VIP, 80), L4Checksum::Complete).unwrap();
    assert_checksums(&r);
    assert_eq!(Ipv4L4::new_checked(&r[..]).unwrap().src(), sa(VIP, 80));
}

#[test]
fn udp_checksum_zero_stays_zero() {
    let mut p = udp(sa(CLIENT, 5353), sa(VIP, 53), b"query");
    dnat(&mut p, sa(BACKEND, 53), L4Checksum::Complete).unwrap();
    assert_checksums(&p);
    assert_ne!(Ipv4L4::new_checked(&p[..]).unwrap().l4_checksum(), 0);

    let mut p = udp(sa(CLIENT, 5353), sa(VIP, 53), b"query");
    p[26..28].copy_from_slice(&[0, 0]);
    dnat(&mut p, sa(BACKEND, 53), L4Checksum::Complete).unwrap();
    assert_eq!(Ipv4L4::new_checked(&p[..]).unwrap().l4_checksum(), 0);
    assert_checksums(&p);
}

/// The pseudo-header sum of a packet, as virtio's NEEDS_CSUM leaves it.
fn partial(p: &mut [u8], at: usize) {
    let l4_len = (p.len() - 20) as u64;
    let sum = checksum_add(0, &p[12..20]) + u64::from(p[9]) + l4_len;
    p[at..at + 2].copy_from_slice(&checksum_fold(sum).to_be_bytes());
}

#[test]
fn partial_checksum_tracks_addresses_only() {
    for (mut p, at) in [
        (tcp(sa(CLIENT, 40000), sa(VIP, 80), 0x10, b"data!"), 36),
        (udp(sa(CLIENT, 40000), sa(VIP, 80), b"data!"), 26),
    ] {
        let mut want = p.clone();
        partial(&mut p, at);
        dnat(&mut p, sa(BACKEND, 8080), L4Checksum::Partial).unwrap();
        // What the checksum would be if the partial sum had been taken after NAT.
        want[16..20].copy_from_slice(&BACKEND);
        want[22..24].copy_from_slice(&8080u16.to_be_bytes());
        partial(&mut want, at);
        assert_eq!(p[at..at + 2], want[at..at + 2]);
        assert_eq!(p[20..24], want[20..24]);
    }
}

#[test]
fn refusals_are_typed() {
    let good = tcp(sa(CLIENT, 1), sa(VIP, 80), 0x02, b"");
    let check = |b: &[u8]| Ipv4L4::new_checked(b).map(|_| ());
    assert_eq!(check(&good[..10]), Err(NatError::Truncated));
    let mut v6 = good.clone();
    v6[0] = 0x65;
    assert_eq!(check(&v6), Err(NatError::NotIpv4(6)));
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    assert_eq!(check(&ihl), Err(NatError::BadHeaderLength(16)));
    assert_eq!(
        check(&good[..good.len() - 1]),
        Err(NatError::BadTotalLength(40))
    );
    let mut frag = good.clone();
    frag[7] = 1;
    assert_eq!(check(&frag), Err(NatError::Fragment));
    // A first fragment (MF set, offset 0) still carries the ports.
    let mut first = good.clone();
    first[6] = 0x20;
    assert!(check(&first).is_ok());
    let mut icmp = good.clone();
    icmp[9] = 1;
    assert_eq!(check(&icmp), Err(NatError::UnsupportedProtocol(1)));
    let mut off = good.clone();
    off[32] = 0x40;
    assert_eq!(check(&off), Err(NatError::BadL4Header));
    let mut short = good.clone();
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(check(&short), Err(NatError::Truncated));
}

#[test]
fn padding_after_total_length_is_untouched() {
    let mut p = udp(sa(CLIENT, 1), sa(VIP, 53), b"x");
    p.extend_from_slice(&[0xee; 10]);
    dnat(&mut p, sa(BACKEND, 53), L4Checksum::Complete).unwrap();
    assert_eq!(&p[p.len() - 10..], &[0xee; 10]);
    assert_checksums(&p[..p.len() - 10]);
}

proptest! {
    /// Incremental updates equal a full recomputation for any addresses,
    /// ports, flags and payload.
    #[test]
    fn incremental_equals_recomputed(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), to in any::<[u8; 4]>(),
        sp in any::<u16>(), dp in any::<u16>(), tp in any::<u16>(),
        flags in any::<u8>(), is_tcp in any::<bool>(), reverse in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut p = if is_tcp {
            tcp(sa(src, sp), sa(dst, dp), flags & 0x17, &payload)
        } else {
            udp(sa(src, sp), sa(dst, dp), &payload)
        };
        if reverse {
            reverse_nat(&mut p, sa(to, tp), L4Checksum::Complete).unwrap();
        } else {
            dnat(&mut p, sa(to, tp), L4Checksum::Complete).unwrap();
        }
        assert_checksums(&p);
    }

    /// Garbage never panics; whatever parses can be rewritten.
    #[test]
    fn garbage_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..80), v4 in any::<bool>()) {
        if v4 && !b.is_empty() {
            b[0] = 0x45;
        }
        if b.len() >= 4 && v4 {
            let n = b.len() as u16;
            b[2..4].copy_from_slice(&n.to_be_bytes());
        }
        let to = sa([1, 2, 3, 4], 5);
        let _ = dnat(&mut b, to, L4Checksum::Complete);
        let _ = reverse_nat(&mut b, to, L4Checksum::Partial);
    }
}
