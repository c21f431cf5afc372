//! Segmentation and coalescing of TCP super-frames: the pure half of the fast path.
//!
//! With `IFF_VNET_HDR` and TSO enabled on a TAP device, the kernel hands the data
//! plane TCP "super-frames" of up to 64 KiB, each behind a `virtio_net_hdr` that
//! says how to cut it (`gso_size`). The data plane cuts them itself
//! ([`TsoPlan`], [`TsoPlan::write_segment`]) into MTU-sized frames, each one a
//! VXLAN datagram, and sends the lot with a single UDP GSO send. On the other
//! side, datagrams arrive GRO-coalesced from the UDP socket; their inner TCP
//! segments are merged back into one super-frame ([`TcpCoalescer`]) and written to
//! the TAP with one `write`. Per-frame costs (system calls, wake-ups, the
//! receiving TCP stack's work) are paid per 64 KiB instead of per 1.4 KiB.
//!
//! Only IPv4 TCP is cut or merged; everything else travels frame by frame.
//! Checksums follow Linux's conventions: frames cut here carry complete TCP and
//! IPv4 checksums (so a kernel VXLAN peer accepts them), and merged super-frames
//! are handed to the kernel with `NEEDS_CSUM` and the pseudo-header sum in the
//! TCP checksum field, as its own GRO does.

use crate::counters::DropReason;

/// Length of `struct virtio_net_hdr` (without the `num_buffers` field).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const VNET_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on `gso_type`).
pub const GSO_ECN: u8 = 0x80;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
/// The largest IPv4 packet.
const IP_MAX: usize = 65535;

/// `struct virtio_net_hdr`, little-endian as on every architecture Linux TAP
/// uses with `TUNSETVNETLE` unset on little-endian hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VNET_F_*` flags.
    pub flags: u8,
    /// `GSO_*` type, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to repeat in every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, DropReason> {
        let b = b.get(..VNET_HDR_LEN).ok_or(DropReason::Malformed)?;
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// True when the frame is a super-frame to be cut.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Adds `data` to a ones'-complement running sum (RFC 1071), 16 bits at a time.
pub fn checksum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Four 16-bit words per step; the u64 has room for ~2^32 of them.
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u16::from_be_bytes([p[0], p[1]]) as u64;
    }
    if let [last] = pairs.remainder() {
        sum += (*last as u64) << 8;
    }
    sum
}

/// Folds a running sum to 16 bits (not inverted).
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 pseudo-header sum for a TCP segment of `l4_len` bytes.
fn pseudo_header_sum(ip: &[u8], l4_len: usize) -> u64 {
    checksum_add(0, &ip[12..20]) + 6 + l4_len as u64
}

fn ipv4_header_checksum(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = !checksum_fold(checksum_add(0, &ip[..IPV4_LEN]));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Completes a partial checksum (`NEEDS_CSUM`) of a frame that is not cut.
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), DropReason> {
    if hdr.flags & VNET_F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = hdr.csum_start as usize;
    let at = start + hdr.csum_offset as usize;
    if at + 2 > frame.len() {
        return Err(DropReason::Malformed);
    }
    let mut c = !checksum_fold(checksum_add(0, &frame[start..]));
    // UDP (checksum at offset 6) sends a computed zero as 0xffff: zero means
    // "no checksum" there (RFC 768).
    if c == 0 && hdr.csum_offset == 6 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// True when `frame` is an IPv4 TCP segment whose IPv4 and TCP checksums verify.
pub fn ipv4_tcp_checksum_valid(frame: &[u8]) -> bool {
    let Some((key, _, payload, _)) = parse_segment(frame) else {
        return false;
    };
    let ip = &frame[ETH_LEN..];
    if checksum_fold(checksum_add(0, &ip[..IPV4_LEN])) != 0xffff {
        return false;
    }
    let l4_len = key.tcp_len + payload.len();
    let tcp = &ip[IPV4_LEN..IPV4_LEN + l4_len];
    checksum_fold(pseudo_header_sum(ip, l4_len) + checksum_add(0, tcp)) == 0xffff
}

/// How a TCP/IPv4 super-frame is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsoPlan {
    /// Ethernet + IPv4 + TCP header bytes, repeated in every segment.
    pub headers_len: usize,
    /// Offset of the TCP header.
    pub tcp_at: usize,
    /// Payload bytes per segment (the last may be shorter).
    pub mss: usize,
    /// Payload bytes in all.
    pub payload_len: usize,
    /// Number of segments.
    pub count: usize,
}

impl TsoPlan {
    /// Checks a super-frame and plans its cut. Only IPv4 TCP without IP options
    /// is accepted; the caller drops anything else as malformed.
    pub fn new(frame: &[u8], hdr: &VnetHdr) -> Result<TsoPlan, DropReason> {
        if hdr.gso_type & !GSO_ECN != GSO_TCPV4 || hdr.gso_size == 0 {
            return Err(DropReason::Malformed);
        }
        if frame.len() < ETH_LEN + IPV4_LEN + TCP_MIN_LEN || frame[12..14] != [0x08, 0x00] {
            return Err(DropReason::Malformed);
        }
        let ip = &frame[ETH_LEN..];
        if ip[0] != 0x45 || ip[9] != 6 {
            return Err(DropReason::Malformed);
        }
        let tcp_at = ETH_LEN + IPV4_LEN;
        let tcp_len = ((frame[tcp_at + 12] >> 4) as usize) * 4;
        if tcp_len < TCP_MIN_LEN || frame.len() < tcp_at + tcp_len {
            return Err(DropReason::Malformed);
        }
        let headers_len = tcp_at + tcp_len;
        let payload_len = frame.len() - headers_len;
        let mss = hdr.gso_size as usize;
        Ok(TsoPlan {
            headers_len,
            tcp_at,
            mss,
            payload_len,
            count: payload_len.div_ceil(mss).max(1),
        })
    }

    /// Length of segment `i` (headers included).
    pub fn segment_len(&self, i: usize) -> usize {
        let start = i * self.mss;
        self.headers_len + self.mss.min(self.payload_len - start.min(self.payload_len))
    }

    /// Writes segment `i` of `frame` into `out` with correct IPv4 length, id and
    /// checksum, TCP sequence number, flags and checksum; returns its length.
    ///
    /// Panics if `out` is shorter than [`TsoPlan::segment_len`].
    pub fn write_segment(&self, frame: &[u8], i: usize, out: &mut [u8]) -> usize {
        let len = self.segment_len(i);
        let start = i * self.mss;
        let data = len - self.headers_len;
        let out = &mut out[..len];
        out[..self.headers_len].copy_from_slice(&frame[..self.headers_len]);
        out[self.headers_len..].copy_from_slice(&frame[self.headers_len + start..][..data]);

        let ip = &mut out[ETH_LEN..];
        let total = (len - ETH_LEN) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(i as u16);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ipv4_header_checksum(ip);

        let t = self.tcp_at;
        let seq = u32::from_be_bytes([out[t + 4], out[t + 5], out[t + 6], out[t + 7]]);
        out[t + 4..t + 8].copy_from_slice(&seq.wrapping_add(start as u32).to_be_bytes());
        let last = i + 1 == self.count;
        if !last {
            out[t + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i != 0 {
            out[t + 13] &= !TCP_CWR;
        }
        out[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let sum = pseudo_header_sum(&out[ETH_LEN..], len - t) + checksum_add(0, &out[t..]);
        out[t + 16..t + 18].copy_from_slice(&(!checksum_fold(sum)).to_be_bytes());
        len
    }
}

/// The facts two TCP segments must share to be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    macs: [u8; 12],
    addrs: [u8; 8],
    ports: [u8; 4],
    tos_ttl: [u8; 2],
    ack: [u8; 4],
    tcp_len: usize,
}

/// Merges consecutive TCP/IPv4 segments of one flow into a super-frame.
///
/// Feed frames with [`TcpCoalescer::push`]; it says whether the frame was
/// absorbed or must be handled alone. Call [`TcpCoalescer::take`] to get the
/// pending super-frame (with its `virtio_net_hdr` in front) before handling a
/// frame alone and at the end of each receive batch.
#[derive(Debug)]
pub struct TcpCoalescer {
    /// `VNET_HDR_LEN` bytes of header room, then the frame being built.
    buf: Vec<u8>,
    key: Option<FlowKey>,
    next_seq: u32,
    gso_size: usize,
    segments: usize,
    /// A short or PSH segment ended the run: nothing more may join.
    closed: bool,
}

impl Default for TcpCoalescer {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`TcpCoalescer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// The frame joined (or started) the pending super-frame.
    Merged,
    /// The frame cannot join: take the pending super-frame, then handle this
    /// frame (push it again, it will start a new run if it can).
    Flush,
    /// The frame can never be merged (not plain TCP data): handle it alone.
    Alone,
}

impl TcpCoalescer {
    /// An empty coalescer with room for a 64 KiB super-frame.
    pub fn new() -> Self {
        TcpCoalescer {
            buf: Vec::with_capacity(VNET_HDR_LEN + ETH_LEN + IP_MAX),
            key: None,
            next_seq: 0,
            gso_size: 0,
            segments: 0,
            closed: false,
        }
    }

    /// True when a super-frame is pending.
    pub fn is_pending(&self) -> bool {
        self.key.is_some()
    }

    /// Offers one complete Ethernet frame (with valid checksums).
    pub fn push(&mut self, frame: &[u8]) -> Push {
        let Some((key, seq, payload, flags)) = parse_segment(frame) else {
            return Push::Alone;
        };
        let control = TCP_SYN | TCP_FIN | TCP_RST | TCP_URG | TCP_CWR | TCP_ECE;
        if payload.is_empty() || flags & control != 0 || flags & TCP_ACK == 0 {
            return if self.is_pending() {
                Push::Flush
            } else {
                Push::Alone
            };
        }
        // The frame without any Ethernet padding after the IP packet.
        let used = &frame[..ETH_LEN + IPV4_LEN + key.tcp_len + payload.len()];
        let Some(cur) = self.key else {
            self.start(used, key, seq, payload.len(), flags);
            return Push::Merged;
        };
        if self.closed || cur != key || seq != self.next_seq || payload.len() > self.gso_size {
            return Push::Flush;
        }
        let fits = self.buf.len() - VNET_HDR_LEN - ETH_LEN + payload.len() <= IP_MAX;
        // Same flow key means same TCP header length; the options (timestamps)
        // must match too, as Linux's GRO requires.
        let opts = ETH_LEN + IPV4_LEN + TCP_MIN_LEN..ETH_LEN + IPV4_LEN + key.tcp_len;
        if !fits || frame[opts.clone()] != self.buf[VNET_HDR_LEN..][opts] {
            return Push::Flush;
        }
        self.buf.extend_from_slice(payload);
        self.next_seq = seq.wrapping_add(payload.len() as u32);
        self.segments += 1;
        let t = VNET_HDR_LEN + ETH_LEN + IPV4_LEN;
        self.buf[t + 13] |= flags & TCP_PSH;
        if payload.len() < self.gso_size || flags & TCP_PSH != 0 {
            self.closed = true;
        }
        Push::Merged
    }

    fn start(&mut self, frame: &[u8], key: FlowKey, seq: u32, payload_len: usize, flags: u8) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        self.buf.extend_from_slice(frame);
        self.key = Some(key);
        self.next_seq = seq.wrapping_add(payload_len as u32);
        self.gso_size = payload_len;
        self.segments = 1;
        self.closed = flags & TCP_PSH != 0;
    }

    /// Finishes the pending super-frame and returns it, `virtio_net_hdr` first,
    /// ready for one write to a TAP with `IFF_VNET_HDR`. A run of one segment
    /// is returned as a plain frame (`GSO_NONE`, checksums as received).
    pub fn take(&mut self) -> Option<&[u8]> {
        let key = self.key.take()?;
        let t = ETH_LEN + IPV4_LEN;
        let hdr = if self.segments == 1 {
            VnetHdr {
                flags: VNET_F_DATA_VALID,
                ..VnetHdr::default()
            }
        } else {
            let frame = &mut self.buf[VNET_HDR_LEN..];
            let ip_len = frame.len() - ETH_LEN;
            frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ipv4_header_checksum(&mut frame[ETH_LEN..]);
            // Partial checksum: the pseudo-header sum, which the kernel completes
            // (or trusts, for local delivery), as after its own GRO.
            let psum = checksum_fold(pseudo_header_sum(&frame[ETH_LEN..], ip_len - IPV4_LEN));
            frame[t + 16..t + 18].copy_from_slice(&psum.to_be_bytes());
            VnetHdr {
                flags: VNET_F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: (t + key.tcp_len) as u16,
                gso_size: self.gso_size as u16,
                csum_start: t as u16,
                csum_offset: 16,
            }
        };
        hdr.emit(&mut self.buf[..VNET_HDR_LEN]);
        Some(&self.buf)
    }
}

/// Parses an IPv4 TCP segment: (flow key, sequence number, payload, flags).
/// Refuses IP options, fragments and anything that is not TCP.
fn parse_segment(frame: &[u8]) -> Option<(FlowKey, u32, &[u8], u8)> {
    if frame.len() < ETH_LEN + IPV4_LEN + TCP_MIN_LEN || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    // Version 4, no options, TCP, not a fragment (MF clear, offset 0).
    if ip[0] != 0x45 || ip[9] != 6 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff) != 0 {
        return None;
    }
    let ip_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip_len < IPV4_LEN + TCP_MIN_LEN || ip_len > ip.len() {
        return None;
    }
    let tcp = &ip[IPV4_LEN..ip_len];
    let tcp_len = ((tcp[12] >> 4) as usize) * 4;
    if tcp_len < TCP_MIN_LEN || tcp_len > tcp.len() {
        return None;
    }
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&frame[..12]);
    let key = FlowKey {
        macs,
        addrs: ip[12..20].try_into().ok()?,
        ports: tcp[0..4].try_into().ok()?,
        tos_ttl: [ip[1], ip[8]],
        ack: tcp[8..12].try_into().ok()?,
        tcp_len,
    };
    let seq = u32::from_be_bytes(tcp[4..8].try_into().ok()?);
    Some((key, seq, &tcp[tcp_len..], tcp[13]))
}

#[cfg(test)]
mod tests;
