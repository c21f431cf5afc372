//! The VXLAN header (RFC 7348), with Shoal's sealed-frame flag.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|E|R|R|I|R|R|R|    key id     |          Reserved             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! `I` (0x08) is RFC 7348's "VNI valid" flag. `E` (0x40) is Shoal's: the payload
//! is a sealed frame (see [`crate::seal`]) and byte 1 names the key. A plain frame
//! is exactly RFC 7348, so the Linux kernel's VXLAN interoperates with it; the
//! kernel drops frames carrying flags it does not know, so it ignores sealed
//! frames rather than misreading them. Reserved fields of plain frames are
//! ignored on receipt, as the RFC requires.

use std::fmt;

use crate::counters::DropReason;

/// The IANA-assigned VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// Bytes a plain VXLAN frame adds on the underlay: outer IPv4 (20) + UDP (8) +
/// VXLAN (8) + the inner Ethernet header (14). The endpoint MTU on a 1500-byte
/// underlay is therefore 1450.
pub const PLAIN_OVERHEAD: usize = 50;

/// The "VNI valid" flag.
pub const FLAG_I: u8 = 0x08;
/// Shoal's "payload is sealed" flag.
pub const FLAG_E: u8 = 0x40;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const KEY_ID: usize = 1;
    pub const VNI: Range<usize> = 4..7;
}

/// A 24-bit VXLAN network identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

/// A number that does not fit in 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range: a VXLAN network identifier has 24 bits (0 to 16777215)")]
pub struct VniError(pub u32);

impl Vni {
    /// The largest VNI.
    pub const MAX: u32 = 0x00ff_ffff;

    /// A VNI, if `n` fits in 24 bits.
    pub fn new(n: u32) -> Result<Vni, VniError> {
        if n > Self::MAX {
            return Err(VniError(n));
        }
        Ok(Vni(n))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A VXLAN header over a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking its length; accessors may panic.
    pub fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    /// Wraps a buffer of at least [`VXLAN_HEADER_LEN`] bytes; after this no
    /// accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < VXLAN_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        Ok(VxlanPacket { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// True when the `E` flag says the payload is sealed.
    pub fn is_sealed(&self) -> bool {
        self.flags() & FLAG_E != 0
    }

    /// The key id (meaningful only on sealed frames).
    pub fn key_id(&self) -> u8 {
        self.buffer.as_ref()[field::KEY_ID]
    }

    /// The VNI field.
    pub fn vni(&self) -> Vni {
        let b = &self.buffer.as_ref()[field::VNI];
        Vni(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[VXLAN_HEADER_LEN..]
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Writes the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Writes the key id byte.
    pub fn set_key_id(&mut self, id: u8) {
        self.buffer.as_mut()[field::KEY_ID] = id;
    }

    /// Writes the VNI field.
    pub fn set_vni(&mut self, vni: Vni) {
        let b = vni.0.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&b[1..]);
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[2] = 0;
        b[3] = 0;
        b[7] = 0;
    }
}

/// The meaning of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The network.
    pub vni: Vni,
    /// `Some(key id)` when the payload is sealed.
    pub sealed: Option<u8>,
}

impl VxlanRepr {
    /// Reads a header: `I` must be set; `E` marks a sealed payload; any other
    /// flag bit is ignored, as RFC 7348 asks of reserved bits.
    pub fn parse<T: AsRef<[u8]>>(pkt: &VxlanPacket<T>) -> Result<VxlanRepr, DropReason> {
        if pkt.flags() & FLAG_I == 0 {
            return Err(DropReason::BadVxlanFlags);
        }
        Ok(VxlanRepr {
            vni: pkt.vni(),
            sealed: pkt.is_sealed().then(|| pkt.key_id()),
        })
    }

    /// Writes the header; reserved fields become zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, pkt: &mut VxlanPacket<T>) {
        pkt.clear_reserved();
        match self.sealed {
            Some(id) => {
                pkt.set_flags(FLAG_I | FLAG_E);
                pkt.set_key_id(id);
            }
            None => {
                pkt.set_flags(FLAG_I);
                pkt.set_key_id(0);
            }
        }
        pkt.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_kernel_style_header() {
        // What `ip link add type vxlan id 4096` puts on the wire.
        let bytes = [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0, 0xaa];
        let pkt = VxlanPacket::new_checked(&bytes[..]).unwrap();
        let repr = VxlanRepr::parse(&pkt).unwrap();
        assert_eq!(
            repr,
            VxlanRepr {
                vni: Vni::new(4096).unwrap(),
                sealed: None
            }
        );
        assert_eq!(pkt.payload(), &[0xaa]);
    }

    #[test]
    fn refuses_short_and_flagless_headers() {
        assert_eq!(
            VxlanPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            DropReason::Malformed
        );
        let pkt = VxlanPacket::new_checked(&[0u8; 8][..]).unwrap();
        assert_eq!(VxlanRepr::parse(&pkt), Err(DropReason::BadVxlanFlags));
    }

    #[test]
    fn reserved_bits_are_ignored_on_plain_frames() {
        let bytes = [0x08 | 0x01, 0xff, 0xff, 0xff, 0, 0, 1, 0xff];
        let repr = VxlanRepr::parse(&VxlanPacket::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(repr.vni.get(), 1);
        assert_eq!(repr.sealed, None);
    }

    #[test]
    fn vni_range() {
        assert!(Vni::new(Vni::MAX).is_ok());
        let err = Vni::new(Vni::MAX + 1).unwrap_err();
        assert!(err.to_string().contains("16777216"));
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(vni in 0u32..=Vni::MAX, sealed in proptest::option::of(any::<u8>())) {
            let repr = VxlanRepr { vni: Vni::new(vni).unwrap(), sealed };
            let mut buf = [0xffu8; VXLAN_HEADER_LEN];
            repr.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
            let back = VxlanRepr::parse(&VxlanPacket::new_checked(&buf[..]).unwrap()).unwrap();
            prop_assert_eq!(back, repr);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(pkt) = VxlanPacket::new_checked(&bytes[..]) {
                let _ = VxlanRepr::parse(&pkt);
            }
        }
    }
}
