//! PROXY protocol version 2 headers (haproxy's `proxy-protocol.txt`, section
//! 2.2): the binary preamble that tells a backend who the real client was when
//! a proxy (the ingress routing mesh, later) terminates or rewrites the flow.
//!
//! ```text
//! 12 bytes  signature  \r\n\r\n\0\r\nQUIT\n
//!  1 byte   version (high nibble, 2) | command (low: 0 LOCAL, 1 PROXY)
//!  1 byte   family (high: 0 UNSPEC, 1 INET, 2 INET6) | transport (low: 1 STREAM, 2 DGRAM)
//!  2 bytes  length of what follows, big endian
//!  INET:  src addr (4) dst addr (4) src port (2) dst port (2)   = 12 bytes
//!  INET6: src addr (16) dst addr (16) src port (2) dst port (2) = 36 bytes
//!  then TLVs up to the length (skipped by this parser)
//! ```
//!
//! The encoder is what the balancer side needs; the parser is for tests and
//! the test backend. UNIX-socket addresses (family 3) are not supported.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// The 12-byte signature that starts every v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of the fixed part (signature, version/command, family, length).
pub const FIXED_LEN: usize = 16;

/// LOCAL (health checks from the proxy itself) or PROXY (a relayed client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// The connection is the proxy's own; the receiver uses the real endpoints.
    Local,
    /// The connection was relayed for the client in the address block.
    Proxy,
}

/// Stream (TCP) or datagram (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `SOCK_STREAM` (TCP).
    Stream,
    /// `SOCK_DGRAM` (UDP).
    Datagram,
}

/// The address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addresses {
    /// Unknown or not given (family byte 0x00).
    Unspec,
    /// IPv4 (family 0x11 TCP4 or 0x12 UDP4).
    V4 {
        /// Stream or datagram.
        transport: Transport,
        /// The client.
        src: SocketAddrV4,
        /// The address the client connected to.
        dst: SocketAddrV4,
    },
    /// IPv6 (family 0x21 TCP6 or 0x22 UDP6). Flow info and scope are not carried.
    V6 {
        /// Stream or datagram.
        transport: Transport,
        /// The client.
        src: SocketAddrV6,
        /// The address the client connected to.
        dst: SocketAddrV6,
    },
}

/// A PROXY protocol v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    /// LOCAL or PROXY.
    pub command: Command,
    /// The addresses (to be ignored by the receiver for LOCAL).
    pub addresses: Addresses,
}

/// Why bytes are not a PROXY v2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyParseError {
    /// More bytes are needed: at least this many in all.
    #[error("incomplete PROXY v2 header: {0} bytes needed")]
    Incomplete(usize),
    /// The first 12 bytes are not the v2 signature.
    #[error("not a PROXY protocol v2 header (bad signature)")]
    BadSignature,
    /// The version nibble is not 2.
    #[error("PROXY protocol version {0} is not supported (only 2)")]
    BadVersion(u8),
    /// The command nibble is neither LOCAL nor PROXY.
    #[error("unknown PROXY v2 command {0}")]
    BadCommand(u8),
    /// A family/transport byte this parser does not handle, on a PROXY header.
    #[error("unsupported PROXY v2 address family/transport {0:#04x}")]
    UnsupportedFamily(u8),
    /// The length is smaller than the family's address block.
    #[error("PROXY v2 length {len} is too short for family {family:#04x}")]
    ShortAddresses {
        /// The family/transport byte.
        family: u8,
        /// The declared length.
        len: usize,
    },
}

fn transport_nibble(t: Transport) -> u8 {
    match t {
        Transport::Stream => 1,
        Transport::Datagram => 2,
    }
}

impl ProxyHeader {
    /// A PROXY header for a relayed TCP or UDP IPv4 flow.
    pub fn v4(transport: Transport, src: SocketAddrV4, dst: SocketAddrV4) -> ProxyHeader {
        ProxyHeader {
            command: Command::Proxy,
            addresses: Addresses::V4 {
                transport,
                src,
                dst,
            },
        }
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        FIXED_LEN
            + match self.addresses {
                Addresses::Unspec => 0,
                Addresses::V4 { .. } => 12,
                Addresses::V6 { .. } => 36,
            }
    }

    /// Never empty: the fixed part alone is 16 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&SIGNATURE);
        out.push(match self.command {
            Command::Local => 0x20,
            Command::Proxy => 0x21,
        });
        match self.addresses {
            Addresses::Unspec => out.extend_from_slice(&[0x00, 0, 0]),
            Addresses::V4 {
                transport,
                src,
                dst,
            } => {
                out.push(0x10 | transport_nibble(transport));
                out.extend_from_slice(&12u16.to_be_bytes());
                out.extend_from_slice(&src.ip().octets());
                out.extend_from_slice(&dst.ip().octets());
                out.extend_from_slice(&src.port().to_be_bytes());
                out.extend_from_slice(&dst.port().to_be_bytes());
            }
            Addresses::V6 {
                transport,
                src,
                dst,
            } => {
                out.push(0x20 | transport_nibble(transport));
                out.extend_from_slice(&36u16.to_be_bytes());
                out.extend_from_slice(&src.ip().octets());
                out.extend_from_slice(&dst.ip().octets());
                out.extend_from_slice(&src.port().to_be_bytes());
                out.extend_from_slice(&dst.port().to_be_bytes());
            }
        }
    }

    /// The encoded header.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.encode(&mut v);
        v
    }

    /// Parses a header at the start of `buf`; returns it and the bytes it
    /// takes (TLVs included), after which the payload starts.
    pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), ProxyParseError> {
        let sig_part = buf.len().min(SIGNATURE.len());
        if buf[..sig_part] != SIGNATURE[..sig_part] {
            return Err(ProxyParseError::BadSignature);
        }
        if buf.len() < FIXED_LEN {
            return Err(ProxyParseError::Incomplete(FIXED_LEN));
        }
        let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
        if version != 2 {
            return Err(ProxyParseError::BadVersion(version));
        }
        let command = match command {
            0 => Command::Local,
            1 => Command::Proxy,
            c => return Err(ProxyParseError::BadCommand(c)),
        };
        let family = buf[13];
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        let total = FIXED_LEN + len;
        if buf.len() < total {
            return Err(ProxyParseError::Incomplete(total));
        }
        let a = &buf[FIXED_LEN..total];
        let transport = match family & 0x0f {
            1 => Some(Transport::Stream),
            2 => Some(Transport::Datagram),
            _ => None,
        };
        let need = match family >> 4 {
            1 => 12,
            2 => 36,
            _ => 0,
        };
        let addresses = match (family, transport) {
            (0x00, _) => Addresses::Unspec,
            (_, Some(transport)) if need > 0 => {
                if len < need {
                    return Err(ProxyParseError::ShortAddresses { family, len });
                }
                let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
                if need == 12 {
                    Addresses::V4 {
                        transport,
                        src: SocketAddrV4::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), port(8)),
                        dst: SocketAddrV4::new(Ipv4Addr::new(a[4], a[5], a[6], a[7]), port(10)),
                    }
                } else {
                    let ip = |at: usize| {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(&a[at..at + 16]);
                        Ipv6Addr::from(o)
                    };
                    Addresses::V6 {
                        transport,
                        src: SocketAddrV6::new(ip(0), port(32), 0, 0),
                        dst: SocketAddrV6::new(ip(16), port(34), 0, 0),
                    }
                }
            }
            // LOCAL: the receiver must ignore the block, whatever its family.
            _ if command == Command::Local => Addresses::Unspec,
            _ => return Err(ProxyParseError::UnsupportedFamily(family)),
        };
        Ok((ProxyHeader { command, addresses }, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tcp4_bytes_match_the_spec() {
        let h = ProxyHeader::v4(
            Transport::Stream,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 80),
        );
        let b = h.to_vec();
        assert_eq!(b.len(), 28);
        assert_eq!(h.len(), 28);
        assert_eq!(
            &b[..12],
            b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
        );
        assert_eq!(&b[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&b[16..], &[192, 0, 2, 1, 10, 0, 0, 100, 0x9c, 0x40, 0, 80]);
        assert_eq!(ProxyHeader::parse(&b), Ok((h, 28)));
    }

    #[test]
    fn tlvs_are_skipped_and_payload_follows() {
        let h = ProxyHeader::v4(
            Transport::Datagram,
            SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5),
            SocketAddrV4::new(Ipv4Addr::new(6, 7, 8, 9), 10),
        );
        let mut b = h.to_vec();
        assert_eq!(b[13], 0x12);
        b[15] = 12 + 4; // one 4-byte TLV
        b.extend_from_slice(&[0x04, 0, 1, 0xaa, b'G', b'E', b'T']);
        let (got, used) = ProxyHeader::parse(&b).unwrap();
        assert_eq!((got, &b[used..]), (h, &b"GET"[..]));
    }

    #[test]
    fn errors_are_typed() {
        let h = ProxyHeader::v4(
            Transport::Stream,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2),
        )
        .to_vec();
        assert_eq!(
            ProxyHeader::parse(b"PROXY TCP4 "),
            Err(ProxyParseError::BadSignature)
        );
        assert_eq!(
            ProxyHeader::parse(&h[..5]),
            Err(ProxyParseError::Incomplete(16))
        );
        assert_eq!(
            ProxyHeader::parse(&h[..20]),
            Err(ProxyParseError::Incomplete(28))
        );
        let with = |i: usize, v: u8| {
            let mut b = h.clone();
            b[i] = v;
            ProxyHeader::parse(&b)
        };
        assert_eq!(with(12, 0x11), Err(ProxyParseError::BadVersion(1)));
        assert_eq!(with(12, 0x22), Err(ProxyParseError::BadCommand(2)));
        assert_eq!(
            with(13, 0x31),
            Err(ProxyParseError::UnsupportedFamily(0x31))
        );
        assert_eq!(
            with(15, 8).map(|_| ()),
            Err(ProxyParseError::ShortAddresses {
                family: 0x11,
                len: 8
            })
        );
        // LOCAL with any family parses, its addresses ignored.
        let mut local = h.clone();
        local[12] = 0x20;
        local[13] = 0x31;
        assert_eq!(
            ProxyHeader::parse(&local).map(|(h, _)| h),
            Ok(ProxyHeader {
                command: Command::Local,
                addresses: Addresses::Unspec
            })
        );
    }

    fn transport() -> impl Strategy<Value = Transport> {
        prop_oneof![Just(Transport::Stream), Just(Transport::Datagram)]
    }

    fn header() -> impl Strategy<Value = ProxyHeader> {
        let command = prop_oneof![Just(Command::Local), Just(Command::Proxy)];
        let v4 = (
            transport(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>(),
        )
            .prop_map(|(transport, s, sp, d, dp)| Addresses::V4 {
                transport,
                src: SocketAddrV4::new(s.into(), sp),
                dst: SocketAddrV4::new(d.into(), dp),
            });
        let v6 = (
            transport(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
        )
            .prop_map(|(transport, s, sp, d, dp)| Addresses::V6 {
                transport,
                src: SocketAddrV6::new(s.into(), sp, 0, 0),
                dst: SocketAddrV6::new(d.into(), dp, 0, 0),
            });
        let addresses = prop_oneof![Just(Addresses::Unspec), v4, v6];
        (command, addresses).prop_map(|(command, addresses)| ProxyHeader { command, addresses })
    }

    proptest! {
        #[test]
        fn parse_of_encode_is_identity(h in header(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut b = h.to_vec();
            prop_assert_eq!(b.len(), h.len());
            b.extend_from_slice(&tail);
            prop_assert_eq!(ProxyHeader::parse(&b), Ok((h, h.len())));
        }

        #[test]
        fn garbage_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..64), sig in any::<bool>()) {
            if sig && b.len() >= 12 {
                b[..12].copy_from_slice(&SIGNATURE);
            }
            let _ = ProxyHeader::parse(&b);
        }
    }
}
