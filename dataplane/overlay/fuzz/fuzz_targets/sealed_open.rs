//! Any datagram through the opener of an encrypted network: never a panic, and
//! nothing forged is ever accepted. The first byte picks the claimed sender.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer};
use shoal_overlay::vxlan::Vni;

fuzz_target!(|data: &[u8]| {
    let Some((&who, rest)) = data.split_first() else { return };
    let ring = KeyRing::new(vec![NetworkKey::new(1, [7; 32]), NetworkKey::new(2, [9; 32])], 1).unwrap();
    let sender = IpAddr::V4(Ipv4Addr::new(10, 99, 0, who));
    let mut opener = Opener::new(Cipher::Aes256Gcm, &ring);
    // One genuine frame first, so the fuzzed one also meets an existing session.
    let sealer = Sealer::new(Cipher::Aes256Gcm, sender, &ring, Duration::from_secs(1 << 30), RekeyPolicy::default());
    let mut genuine = [0u8; 128];
    let n = sealer.seal(Vni::new(4096).unwrap(), &[0x42; 60], &mut genuine).unwrap();
    assert!(opener.open(sender, &mut genuine[..n]).is_ok());
    let mut forged = rest.to_vec();
    assert!(opener.open(sender, &mut forged).is_err(), "a forged frame was accepted");
});
