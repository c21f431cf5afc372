//! Any datagram through the VXLAN header parser: never a panic, and a parsed
//! header re-emits to bytes that parse the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_overlay::vxlan::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(pkt) = VxlanPacket::new_checked(data) else { return };
    let _ = pkt.payload();
    if let Ok(repr) = VxlanRepr::parse(&pkt) {
        let mut buf = [0u8; VXLAN_HEADER_LEN];
        repr.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
        let again = VxlanRepr::parse(&VxlanPacket::new_unchecked(&buf[..])).unwrap();
        assert_eq!(again, repr);
    }
});
