//! The 5-tuple of a TCP or UDP flow, its hash, and TCP flags.
//!
//! The flow hash picks a backend from a Maglev table, so it must give the same
//! answer on every node and in every process: it is a fixed-seed mix (the
//! finaliser of MurmurHash3, applied to two 64-bit words), not `std`'s randomly
//! keyed SipHash. It is not meant to resist an attacker who wants to pile flows
//! onto one backend (they can already pick their source ports); the connection
//! table, which an attacker could flood with collisions, uses `std`'s keyed
//! hasher instead.

use std::fmt;
use std::net::SocketAddrV4;

/// Seed of the flow hash. Changing it moves every flow to another backend on
/// the next build, so it is part of the wire contract between nodes.
const FLOW_SEED: u64 = 0x5348_4f41_4c5f_4c42; // "SHOAL_LB"

/// The finaliser of MurmurHash3 (`fmix64`): a bijection on `u64` in which every
/// input bit flips each output bit with probability close to 1/2.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A transport protocol the balancer handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// The protocol with this IP protocol number, if the balancer handles it.
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// The 5-tuple of one direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// TCP or UDP.
    pub proto: Proto,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

impl FlowKey {
    /// The key of the other direction (source and destination swapped).
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }

    /// A deterministic 64-bit hash of the 5-tuple, identical on every node and
    /// every run. Not symmetric: `k.hash() != k.reversed().hash()` in general.
    pub fn hash(&self) -> u64 {
        let addrs =
            (u64::from(u32::from(*self.src.ip())) << 32) | u64::from(u32::from(*self.dst.ip()));
        let rest = (u64::from(self.src.port()) << 32)
            | (u64::from(self.dst.port()) << 16)
            | u64::from(self.proto.number());
        mix64(mix64(addrs ^ FLOW_SEED) ^ rest)
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

/// The flags byte of a TCP header (byte 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;

    /// FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN is set.
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST is set.
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK is set.
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn key(sp: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Tcp,
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), sp),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 80),
        }
    }

    #[test]
    fn hash_is_pinned() {
        // Every node must compute the same hash: a change here moves flows
        // between backends across a mixed-version cluster.
        assert_eq!(key(40000).hash(), key(40000).hash());
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0xb456_bcfc_34c2_cb2c);
        let h = key(40000).hash();
        assert_eq!(h, 0x4462_cea8_f194_8767, "flow hash changed: {h:#018x}");
    }

    #[test]
    fn protocols_and_reversal() {
        assert_eq!(Proto::from_number(6), Some(Proto::Tcp));
        assert_eq!(Proto::from_number(17), Some(Proto::Udp));
        assert_eq!(Proto::from_number(1), None);
        let k = key(1);
        assert_eq!(k.reversed().reversed(), k);
        assert_ne!(
            k.hash(),
            FlowKey {
                proto: Proto::Udp,
                ..k
            }
            .hash()
        );
        assert_eq!(k.to_string(), "tcp 10.0.0.2:1 -> 10.0.0.100:80");
    }

    proptest! {
        /// Source ports alone spread evenly over 16 buckets (a weak hash that
        /// ignored the low bits of the port would fail this).
        #[test]
        fn source_ports_spread(start in 1024u16..30000) {
            let mut buckets = [0u32; 16];
            for p in start..start + 16_000 {
                buckets[(key(p).hash() % 16) as usize] += 1;
            }
            for b in buckets {
                prop_assert!((800..1200).contains(&b), "{buckets:?}");
            }
        }
    }
}
