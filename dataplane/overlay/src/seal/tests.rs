use super::*;
use crate::keys::KEY_LEN;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12));
const NOW: Duration = Duration::from_secs(1_800_000_000);

fn key(id: u8) -> NetworkKey {
    NetworkKey::new(id, [id.wrapping_mul(17); KEY_LEN])
}

fn ring(ids: &[u8], tx: u8) -> KeyRing {
    KeyRing::new(ids.iter().map(|&i| key(i)).collect(), tx).unwrap()
}

fn vni() -> Vni {
    Vni::new(4096).unwrap()
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn seal(s: &Sealer, f: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; f.len() + SEAL_OVERHEAD + VXLAN_HEADER_LEN];
    let n = s.seal(vni(), f, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn round_trip_both_ciphers_and_sizes() {
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let r = ring(&[1], 1);
        let s = Sealer::new(cipher, A, &r, NOW, RekeyPolicy::default());
        let mut o = Opener::new(cipher, &r);
        for len in [14, 64, 512, 1418 + 14, 9000] {
            let f = frame(len, 3);
            let mut d = seal(&s, &f);
            assert_eq!(d.len(), len + SEAL_OVERHEAD + VXLAN_HEADER_LEN);
            assert_eq!((d[0], d[1]), (0x48, 1), "I|E flags and key id");
            assert_eq!(o.open(A, &mut d).unwrap(), &f[..], "{cipher} {len}");
        }
    }
}

#[test]
fn every_tampered_byte_is_refused() {
    let r = ring(&[1], 1);
    let s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let f = frame(100, 1);
    let good = seal(&s, &f);
    for i in 0..good.len() {
        let mut o = Opener::new(Cipher::Aes256Gcm, &r);
        let mut d = good.clone();
        d[i] ^= 0x01;
        let err = o.open(A, &mut d).unwrap_err();
        let expected = match i {
            1 => DropReason::UnknownKey, // key id 0 is not in the ring
            // Everything else, flags included, is authenticated.
            _ => DropReason::AuthFailure,
        };
        assert_eq!(err, expected, "byte {i}");
    }
    let mut d = good.clone();
    d[0] &= !0x08; // I flag cleared
    assert_eq!(
        Opener::new(Cipher::Aes256Gcm, &r).open(A, &mut d),
        Err(DropReason::BadVxlanFlags)
    );
    // Another sender's address: the derived key differs.
    let mut d = good.clone();
    assert_eq!(
        Opener::new(Cipher::Aes256Gcm, &r).open(B, &mut d),
        Err(DropReason::AuthFailure)
    );
}

#[test]
fn replays_plain_frames_and_unknown_keys() {
    let r = ring(&[1], 1);
    let s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let mut o = Opener::new(Cipher::Aes256Gcm, &r);
    let d = seal(&s, &frame(60, 0));
    assert!(o.open(A, &mut d.clone()).is_ok());
    assert_eq!(o.open(A, &mut d.clone()), Err(DropReason::Replay));
    let mut plain = vec![0x08, 0, 0, 0, 0, 0x10, 0, 0];
    plain.extend(frame(60, 0));
    plain.extend([0u8; 16]);
    assert_eq!(o.open(A, &mut plain), Err(DropReason::PlainOnEncrypted));
    let other = Sealer::new(
        Cipher::Aes256Gcm,
        A,
        &ring(&[2], 2),
        NOW,
        RekeyPolicy::default(),
    );
    assert_eq!(
        o.open(A, &mut seal(&other, &frame(60, 0))),
        Err(DropReason::UnknownKey)
    );
    assert_eq!(o.open(A, &mut [0x48; 30]), Err(DropReason::Malformed));
}

#[test]
fn reordered_frames_within_the_window_are_accepted_once() {
    let r = ring(&[1], 1);
    let s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let mut o = Opener::new(Cipher::Aes256Gcm, &r);
    let frames: Vec<_> = (0..3000).map(|i| seal(&s, &frame(40, i as u8))).collect();
    for d in frames.iter().rev() {
        assert!(o.open(A, &mut d.clone()).is_ok());
    }
    for d in &frames {
        assert_eq!(o.open(A, &mut d.clone()), Err(DropReason::Replay));
    }
}

#[test]
fn rotation_in_dockers_order_loses_nothing() {
    let one = ring(&[1], 1);
    let mut s = Sealer::new(Cipher::Aes256Gcm, A, &one, NOW, RekeyPolicy::default());
    let mut o = Opener::new(Cipher::Aes256Gcm, &one);
    let in_flight_1 = seal(&s, &frame(80, 1));
    // Step 1: every receiver accepts key 2; senders still use 1.
    o.set_keys(&ring(&[1, 2], 1));
    s.set_keys(&ring(&[1, 2], 1), NOW);
    assert_eq!(s.key_id(), 1);
    // Step 2: senders move to key 2.
    s.set_keys(&ring(&[1, 2], 2), NOW);
    assert_eq!(s.key_id(), 2);
    let under_2 = seal(&s, &frame(80, 2));
    assert!(o.open(A, &mut under_2.clone()).is_ok());
    assert!(
        o.open(A, &mut in_flight_1.clone()).is_ok(),
        "key-1 frame in flight"
    );
    // Step 3: key 1 retired.
    o.set_keys(&ring(&[2], 2));
    assert_eq!(
        o.open(A, &mut seal_with_old(&one)),
        Err(DropReason::UnknownKey)
    );
    assert!(o.open(A, &mut seal(&s, &frame(80, 3))).is_ok());
}

fn seal_with_old(r: &KeyRing) -> Vec<u8> {
    seal(
        &Sealer::new(Cipher::Aes256Gcm, A, r, NOW, RekeyPolicy::default()),
        &frame(80, 9),
    )
}

#[test]
fn rekey_keeps_in_flight_frames_and_stale_sessions_are_refused() {
    let r = ring(&[1], 1);
    let mut s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let mut o = Opener::new(Cipher::Aes256Gcm, &r);
    let first = seal(&s, &frame(50, 1));
    let first_late = seal(&s, &frame(50, 2));
    assert!(o.open(A, &mut first.clone()).is_ok());
    s.rekey(NOW);
    let second = seal(&s, &frame(50, 3));
    assert_ne!(first[8..16], second[8..16], "a new session");
    assert_eq!(first[16..24], [0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        second[16..24],
        [0, 0, 0, 0, 0, 0, 0, 0],
        "counters restart per session"
    );
    assert!(o.open(A, &mut second.clone()).is_ok());
    assert!(
        o.open(A, &mut first_late.clone()).is_ok(),
        "previous session still open"
    );
    s.rekey(NOW);
    assert!(o.open(A, &mut seal(&s, &frame(50, 4))).is_ok());
    // Two sessions later the first one is stale; its frames are refused early.
    let mut late = first.clone();
    late[23] = 9;
    assert_eq!(o.open(A, &mut late), Err(DropReason::StaleSession));
}

#[test]
fn rekey_is_due_by_count_or_age() {
    let r = ring(&[1], 1);
    let policy = RekeyPolicy {
        after_packets: 3,
        after: Duration::from_secs(60),
    };
    let mut s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, policy);
    assert!(!s.needs_rekey(NOW));
    for _ in 0..3 {
        seal(&s, &frame(20, 0));
    }
    assert!(s.needs_rekey(NOW));
    s.rekey(NOW);
    assert!(!s.needs_rekey(NOW + Duration::from_secs(59)));
    assert!(s.needs_rekey(NOW + Duration::from_secs(60)));
}

#[test]
fn senders_sharing_a_key_never_share_a_keystream() {
    let r = ring(&[1], 1);
    let a = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let b = Sealer::new(Cipher::Aes256Gcm, B, &r, NOW, RekeyPolicy::default());
    let f = frame(64, 0);
    let (da, db) = (seal(&a, &f), seal(&b, &f));
    assert_eq!(da[16..24], db[16..24], "same counter");
    assert_ne!(da[24..], db[24..], "different ciphertext");
}

#[test]
fn lanes_of_one_sender_are_tracked_apart_so_no_reordering_between_them_is_a_replay() {
    let r = ring(&[1], 1);
    let lane0 = Sealer::for_lane(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default(), 0);
    let lane1 = Sealer::for_lane(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default(), 1);
    let mut o = Opener::new(Cipher::Aes256Gcm, &r);
    // Lane 1's first frame is sealed early but arrives after 10000 of lane 0's:
    // with one shared window it would be far behind and refused.
    let mut late = seal(&lane1, &frame(64, 1));
    let f = frame(64, 0);
    for _ in 0..10_000 {
        assert!(o.open(A, &mut seal(&lane0, &f)).is_ok());
    }
    let copy = late.clone();
    assert_eq!(o.open(A, &mut late).unwrap(), &frame(64, 1)[..]);
    assert_eq!(o.tracked_senders(), 2);
    // Each lane still refuses its own replays.
    assert_eq!(o.open(A, &mut copy.clone()), Err(DropReason::Replay));
    // The lane byte is authenticated: moving a frame to another lane breaks it.
    let mut moved = seal(&lane0, &f);
    moved[12] = 7;
    assert_eq!(o.open(A, &mut moved), Err(DropReason::AuthFailure));
    assert_eq!(o.tracked_senders(), 2);
}

#[test]
fn small_buffers_are_refused() {
    let r = ring(&[1], 1);
    let s = Sealer::new(Cipher::Aes256Gcm, A, &r, NOW, RekeyPolicy::default());
    let mut out = [0u8; 50];
    assert!(matches!(
        s.seal(vni(), &frame(40, 0), &mut out),
        Err(SealError::BufferTooSmall { .. })
    ));
}

#[test]
fn the_sender_table_is_bounded() {
    let r = ring(&[1], 1);
    let mut o = Opener::new(Cipher::Aes256Gcm, &r);
    for i in 0..(MAX_SENDERS + 10) {
        let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
        let s = Sealer::new(Cipher::Aes256Gcm, addr, &r, NOW, RekeyPolicy::default());
        assert!(o.open(addr, &mut seal(&s, &frame(20, 0))).is_ok());
    }
    assert_eq!(o.tracked_senders(), MAX_SENDERS);
}

proptest! {
    #[test]
    fn any_frame_round_trips(f in proptest::collection::vec(any::<u8>(), 0..2000), chacha: bool) {
        let cipher = if chacha { Cipher::ChaCha20Poly1305 } else { Cipher::Aes256Gcm };
        let r = ring(&[1], 1);
        let s = Sealer::new(cipher, A, &r, NOW, RekeyPolicy::default());
        let mut o = Opener::new(cipher, &r);
        let mut d = seal(&s, &f);
        prop_assert_eq!(o.open(A, &mut d).unwrap(), &f[..]);
    }

    #[test]
    fn garbage_never_panics(mut d in proptest::collection::vec(any::<u8>(), 0..200)) {
        let r = ring(&[1], 1);
        let mut o = Opener::new(Cipher::Aes256Gcm, &r);
        let _ = o.open(A, &mut d);
    }
}
