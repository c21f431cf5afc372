//! In-place address and port rewriting of IPv4 TCP/UDP packets, with
//! incremental checksum updates (RFC 1624).
//!
//! [`Ipv4L4`] is a checked view over a buffer that starts at the IPv4 header
//! (smoltcp style: after [`Ipv4L4::new_checked`] no accessor or setter can
//! panic). Only what NAT needs is checked: version 4, a sane header length,
//! a total length inside the buffer, TCP or UDP, a whole L4 header, and not a
//! non-first fragment (those carry no ports, so they cannot be matched to a
//! flow or rewritten; the balancer refuses them with a typed reason). Bytes
//! after the IPv4 total length (Ethernet padding) are left alone.
//!
//! Checksums are updated, never recomputed, so a packet is touched only in the
//! words that change and a corrupt checksum stays corrupt (the receiver still
//! detects it). Two checksum states exist for the L4 header:
//! - [`L4Checksum::Complete`]: the field holds the real checksum;
//!   `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3) over the changed address and
//!   port words. A UDP checksum of 0 ("none") stays 0, and a computed 0 is
//!   sent as 0xffff (RFC 768).
//! - [`L4Checksum::Partial`]: the field holds only the folded pseudo-header sum,
//!   not inverted, and the device (or `offload::complete_checksum`) will sum
//!   the L4 header and payload later; this is the state of a frame read from a
//!   TAP with `VIRTIO_NET_HDR_F_NEEDS_CSUM`. Only the address change is added
//!   to it: the port bytes are summed when the checksum is completed.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::lb::flow::{FlowKey, Proto, TcpFlags};

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER: usize = 20;
const TCP_MIN_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FRAG: usize = 6;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    // Offsets inside the L4 header.
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const TCP_OFF: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CHECKSUM: usize = 16;
    pub const UDP_CHECKSUM: usize = 6;
}

/// Why a packet cannot be parsed or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// The buffer ends before the headers do.
    #[error("packet truncated: its headers need more bytes than the buffer holds")]
    Truncated,
    /// The version nibble is not 4.
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    /// The IHL is below 5 or points past the total length.
    #[error("IPv4 header length {0} is invalid")]
    BadHeaderLength(usize),
    /// The total length is below the header length or past the buffer.
    #[error("IPv4 total length {0} does not fit the header or the buffer")]
    BadTotalLength(usize),
    /// A fragment other than the first: it carries no ports.
    #[error("non-first IPv4 fragment: it carries no ports and is not rewritten")]
    Fragment,
    /// Neither TCP nor UDP.
    #[error("IP protocol {0} is neither TCP nor UDP")]
    UnsupportedProtocol(u8),
    /// A TCP data offset below 5 or past the packet.
    #[error("TCP header length is invalid")]
    BadL4Header,
}

/// What the L4 checksum field holds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Checksum {
    /// The full checksum.
    #[default]
    Complete,
    /// The pseudo-header sum only, to be completed by offload.
    Partial,
}

/// A checked IPv4 + TCP/UDP packet over a buffer starting at the IPv4 header.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4L4<T: AsRef<[u8]>> {
    buffer: T,
    ihl: usize,
    total: usize,
    proto: Proto,
}

impl<T: AsRef<[u8]>> Ipv4L4<T> {
    /// Checks the headers; after this no accessor or setter can panic.
    pub fn new_checked(buffer: T) -> Result<Self, NatError> {
        let b = buffer.as_ref();
        if b.len() < IPV4_MIN_HEADER {
            return Err(NatError::Truncated);
        }
        let version = b[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(NatError::NotIpv4(version));
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([
            b[field::TOTAL_LEN],
            b[field::TOTAL_LEN + 1],
        ]));
        if ihl < IPV4_MIN_HEADER {
            return Err(NatError::BadHeaderLength(ihl));
        }
        if total > b.len() {
            return Err(NatError::BadTotalLength(total));
        }
        if ihl > total {
            return Err(NatError::BadHeaderLength(ihl));
        }
        let frag = u16::from_be_bytes([b[field::FRAG], b[field::FRAG + 1]]);
        if frag & 0x1fff != 0 {
            return Err(NatError::Fragment);
        }
        let proto = Proto::from_number(b[field::PROTO])
            .ok_or(NatError::UnsupportedProtocol(b[field::PROTO]))?;
        let l4 = total - ihl;
        match proto {
            Proto::Udp if l4 < UDP_HEADER => return Err(NatError::Truncated),
            Proto::Tcp if l4 < TCP_MIN_HEADER => return Err(NatError::Truncated),
            Proto::Tcp => {
                let off = usize::from(b[ihl + field::TCP_OFF] >> 4) * 4;
                if off < TCP_MIN_HEADER || off > l4 {
                    return Err(NatError::BadL4Header);
                }
            }
            Proto::Udp => {}
        }
        Ok(Ipv4L4 {
            buffer,
            ihl,
            total,
            proto,
        })
    }

    /// TCP or UDP.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The IPv4 header length in bytes.
    pub fn header_len(&self) -> usize {
        self.ihl
    }

    /// The IPv4 total length.
    pub fn total_len(&self) -> usize {
        self.total
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.b()[at], self.b()[at + 1]])
    }

    fn ip_at(&self, at: usize) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
    }

    /// Source address and port.
    pub fn src(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.ip_at(field::SRC),
            self.u16_at(self.ihl + field::SRC_PORT),
        )
    }

    /// Destination address and port.
    pub fn dst(&self) -> SocketAddrV4 {
        SocketAddrV4::new(
            self.ip_at(field::DST),
            self.u16_at(self.ihl + field::DST_PORT),
        )
    }

    /// The packet's 5-tuple.
    pub fn flow_key(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.src(),
            dst: self.dst(),
        }
    }

    /// The TCP flags, for a TCP segment.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        (self.proto == Proto::Tcp).then(|| TcpFlags(self.b()[self.ihl + field::TCP_FLAGS]))
    }

    /// The L4 checksum field.
    pub fn l4_checksum(&self) -> u16 {
        self.u16_at(self.ihl + self.l4_checksum_at())
    }

    fn l4_checksum_at(&self) -> usize {
        match self.proto {
            Proto::Tcp => field::TCP_CHECKSUM,
            Proto::Udp => field::UDP_CHECKSUM,
        }
    }

    /// The packet bytes (up to the total length).
    pub fn as_bytes(&self) -> &[u8] {
        &self.b()[..self.total]
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4L4<T> {
    /// Rewrites the destination address and port (DNAT).
    pub fn set_dst(&mut self, to: SocketAddrV4, csum: L4Checksum) {
        self.rewrite(field::DST, field::DST_PORT, to, csum);
    }

    /// Rewrites the source address and port (reverse NAT of a reply, or SNAT).
    pub fn set_src(&mut self, to: SocketAddrV4, csum: L4Checksum) {
        self.rewrite(field::SRC, field::SRC_PORT, to, csum);
    }

    fn rewrite(&mut self, addr_at: usize, port_at: usize, to: SocketAddrV4, csum: L4Checksum) {
        let (ihl, proto) = (self.ihl, self.proto);
        let l4_csum_at = ihl + self.l4_checksum_at();
        let b = self.buffer.as_mut();
        let old_addr = [b[addr_at], b[addr_at + 1], b[addr_at + 2], b[addr_at + 3]];
        let new_addr = to.ip().octets();
        let old_port = [b[ihl + port_at], b[ihl + port_at + 1]];
        let new_port = to.port().to_be_bytes();

        // The IPv4 header checksum covers the address only.
        let ip_sum = sum_delta(&old_addr, &new_addr);
        let hc = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&update(hc, ip_sum).to_be_bytes());

        let l4 = u16::from_be_bytes([b[l4_csum_at], b[l4_csum_at + 1]]);
        let l4 = match csum {
            L4Checksum::Complete if proto == Proto::Udp && l4 == 0 => 0,
            L4Checksum::Complete => {
                let c = update(l4, ip_sum + sum_delta(&old_port, &new_port));
                if proto == Proto::Udp && c == 0 {
                    0xffff
                } else {
                    c
                }
            }
            // The partial field is a plain (not inverted) sum: add the delta.
            L4Checksum::Partial => fold(u32::from(l4) + ip_sum),
        };
        b[l4_csum_at..l4_csum_at + 2].copy_from_slice(&l4.to_be_bytes());
        b[addr_at..addr_at + 4].copy_from_slice(&new_addr);
        b[ihl + port_at..ihl + port_at + 2].copy_from_slice(&new_port);
    }
}

/// `~m + m'` over 16-bit words, unfolded.
fn sum_delta(old: &[u8], new: &[u8]) -> u32 {
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .map(|(o, n)| {
            u32::from(!u16::from_be_bytes([o[0], o[1]]))
                + u32::from(u16::from_be_bytes([n[0], n[1]]))
        })
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`.
fn update(hc: u16, delta: u32) -> u16 {
    !fold(u32::from(!hc) + delta)
}

/// Rewrites the destination of the IPv4 packet at the start of `packet`;
/// returns the 5-tuple it had before.
pub fn dnat(packet: &mut [u8], to: SocketAddrV4, csum: L4Checksum) -> Result<FlowKey, NatError> {
    let mut p = Ipv4L4::new_checked(packet)?;
    let key = p.flow_key();
    p.set_dst(to, csum);
    Ok(key)
}

/// Rewrites the source of the IPv4 packet at the start of `packet` (the
/// reverse NAT of a reply); returns the 5-tuple it had before.
pub fn reverse_nat(
    packet: &mut [u8],
    from: SocketAddrV4,
    csum: L4Checksum,
) -> Result<FlowKey, NatError> {
    let mut p = Ipv4L4::new_checked(packet)?;
    let key = p.flow_key();
    p.set_src(from, csum);
    Ok(key)
}

#[cfg(test)]
mod tests;
