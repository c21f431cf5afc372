//! The per-frame loops: TAP to underlay and underlay to TAP, with offloads.
//!
//! Every TAP runs with `IFF_VNET_HDR` and TSO: one read may return a TCP
//! super-frame of up to 64 KiB behind a `virtio_net_hdr`. Towards a peer it is
//! cut into MTU-sized segments ([`TsoPlan`]), each encapsulated (or sealed in
//! place) at a fixed stride in one buffer, and the buffer leaves in one UDP GSO
//! `sendmsg`. The VXLAN socket runs with UDP GRO: one `recvmsg` returns a run of
//! datagrams; their inner TCP segments are merged again ([`TcpCoalescer`]) and
//! reach the task's TAP in one `write`. A super-frame for an endpoint on the same
//! node is written to its TAP untouched.
//!
//! Buffer layout. Endpoint side: `[HEADROOM-10 .. HEADROOM)` holds the virtio
//! header and the frame starts at `HEADROOM` (= 24, room for a VXLAN or sealed
//! header in front). Underlay side: datagrams land at `RX_HEADROOM`, so the 10
//! bytes before any inner frame are free for a virtio header.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_overlay::counters::DropReason;
use shoal_overlay::lb::nat::L4Checksum;
use shoal_overlay::lb::vip::VipAction;
use shoal_overlay::offload::{
    complete_checksum, ipv4_tcp_checksum_valid, Push, TcpCoalescer, TsoPlan, VnetHdr,
    VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
};
use shoal_overlay::seal::{SEALED_PAYLOAD_AT, TAG_LEN};
use shoal_overlay::switch::{EndpointId, Verdict, ARP_FRAME_LEN};
use shoal_overlay::vxlan::{Vni, VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};
use shoal_sys::poll::wait_readable;
use shoal_sys::tap::Tap;
use shoal_sys::udp::{recv_gro, send_gso, MAX_GSO_SEGMENTS};

use crate::dataplane::{lock_poisoned, Shared};
use crate::tables::{LocalEndpoint, NetCrypto, Tables};
use crate::vips::monotonic_now;

/// How long a thread waits in `poll` before checking for shutdown.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Room in front of a frame read from a TAP: enough for a sealed header.
const HEADROOM: usize = SEALED_PAYLOAD_AT;
/// Room in front of a received datagram, for a virtio header before its inner frame.
const RX_HEADROOM: usize = 16;
/// The largest frame a TAP hands over, plus its virtio header.
const MAX_READ: usize = VNET_HDR_LEN + 65535 + 14;
/// The largest UDP payload one (GSO) send may carry over IPv4.
const MAX_UDP_PAYLOAD: usize = 65507;

/// Per-thread scratch buffers, allocated once.
struct Buffers {
    frame: Vec<u8>,
    out: Vec<u8>,
}

impl Buffers {
    fn new() -> Self {
        Buffers {
            frame: vec![0u8; HEADROOM + MAX_READ + TAG_LEN],
            // Enough for one GSO batch: 64 segments of at most 64 KiB in all, plus
            // per-segment headers and tags.
            out: vec![0u8; 2 * 65536 + MAX_GSO_SEGMENTS * (SEALED_PAYLOAD_AT + TAG_LEN + 80)],
        }
    }
}

/// Waits up to [`POLL_INTERVAL`] for `fd` to have input; false means "check
/// for shutdown and wait again". A failing poll is counted and slowed down.
fn wait_for_input(s: &Shared, fd: std::os::fd::BorrowedFd<'_>) -> bool {
    match wait_readable(fd, POLL_INTERVAL) {
        Ok(ready) => ready,
        Err(_) => {
            s.drops.record(DropReason::IoError);
            std::thread::sleep(POLL_INTERVAL);
            false
        }
    }
}

/// Reads frames from queue `w` of endpoint `ep` until shutdown or its removal.
pub(crate) fn endpoint_loop(s: &Shared, ep: EndpointId, own: &LocalEndpoint, w: usize) {
    let tap = own.queue(w);
    let mut b = Buffers::new();
    while !s.stop.load(Ordering::Relaxed) && !own.stop.load(Ordering::Relaxed) {
        match wait_readable(tap.as_fd(), POLL_INTERVAL) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                // The device is gone (its namespace was deleted: the task died).
                // Frames for it are counted as io_error where they are written.
                tracing::warn!(tap = tap.name(), endpoint = ep.0, error = %e, "endpoint device is gone; its reader stops");
                s.drops.record(DropReason::IoError);
                return;
            }
        }
        // Drain: the TAP is non-blocking, so a read that would block ends the burst.
        loop {
            let start = HEADROOM - VNET_HDR_LEN;
            let n = match tap.read(&mut b.frame[start..start + MAX_READ]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    break;
                }
            };
            s.stats[w].endpoint_rx.fetch_add(1, Ordering::Relaxed);
            if n < VNET_HDR_LEN {
                s.drops.record(DropReason::Malformed);
                continue;
            }
            if let Err(reason) = handle_endpoint_frame(s, w, ep, tap, &mut b, n - VNET_HDR_LEN) {
                s.drops.record(reason);
            }
        }
    }
}

/// `b.frame` holds the virtio header at `HEADROOM - 10` and `len` frame bytes
/// at `HEADROOM`; `own` is the queue it was read from.
fn handle_endpoint_frame(
    s: &Shared,
    w: usize,
    ep: EndpointId,
    own: &Tap,
    b: &mut Buffers,
    len: usize,
) -> Result<(), DropReason> {
    let hdr = VnetHdr::parse(&b.frame[HEADROOM - VNET_HDR_LEN..])?;
    let frame_end = HEADROOM + len;
    // One read guard for the verdict and for carrying it out: the endpoint or
    // network it names cannot go away in between (see `crate::tables`).
    let t = lock_poisoned(s.tables.read());
    // Virtual IPs first (one test when no network has any): the balancer may
    // rewrite the headers that the switch and the TSO plan then read.
    let vips = if t.has_vips() {
        t.switch
            .endpoint_network(ep)
            .and_then(|net| Some((net, t.vips(net)?)))
    } else {
        None
    };
    let csum = if hdr.flags & VNET_F_NEEDS_CSUM != 0 {
        L4Checksum::Partial
    } else {
        L4Checksum::Complete
    };
    if let Some((net, table)) = vips {
        let action = lock_poisoned(table.lock()).from_endpoint(
            monotonic_now(),
            &mut b.frame[HEADROOM..frame_end],
            csum,
            &mut b.out[VNET_HDR_LEN..],
        );
        match action {
            VipAction::Pass => {}
            VipAction::Forward { backend } => {
                let mac = t
                    .switch
                    .mac_of(net, backend)
                    .ok_or(DropReason::UnknownDestination)?;
                b.frame[HEADROOM..HEADROOM + 6].copy_from_slice(&mac.0);
            }
            VipAction::Hairpin => {
                // Back to the sender, offloads intact.
                write_tap(s, w, own, &b.frame[HEADROOM - VNET_HDR_LEN..frame_end]);
                return Ok(());
            }
            VipAction::Reply(n) => {
                VnetHdr::default().emit(&mut b.out[..VNET_HDR_LEN]);
                write_tap(s, w, own, &b.out[..VNET_HDR_LEN + n]);
                return Ok(());
            }
            VipAction::Drop(reason) => return Err(reason),
        }
    }
    let plan = if hdr.is_gso() {
        Some(TsoPlan::new(&b.frame[HEADROOM..frame_end], &hdr)?)
    } else {
        None
    };
    // The switch judges a super-frame by its headers and the size of one segment.
    let judged = plan.map_or(len, |p| p.segment_len(0));
    let verdict = t.switch.from_endpoint(
        ep,
        &b.frame[HEADROOM..HEADROOM + judged],
        &mut b.out[VNET_HDR_LEN..],
    );
    match verdict {
        // Same node: the virtio header travels with the frame, offloads intact.
        Verdict::Deliver(to) => {
            // A local backend's answer to a local client of its VIP.
            if let Some((_, table)) = vips {
                lock_poisoned(table.lock()).to_endpoint(
                    monotonic_now(),
                    &mut b.frame[HEADROOM..frame_end],
                    csum,
                );
            }
            write_endpoint(s, &t, w, to, &b.frame[HEADROOM - VNET_HDR_LEN..frame_end])
        }
        Verdict::Reply(n) => {
            s.stats[w].arp_replies.fetch_add(1, Ordering::Relaxed);
            VnetHdr::default().emit(&mut b.out[..VNET_HDR_LEN]);
            write_tap(s, w, own, &b.out[..VNET_HDR_LEN + n]);
        }
        Verdict::Forward { peer, vni } => {
            let crypto = t.crypto_by_vni(vni)?;
            match plan {
                Some(plan) => send_segments(
                    s,
                    w,
                    crypto,
                    peer,
                    vni,
                    &b.frame[HEADROOM..frame_end],
                    &plan,
                    &mut b.out,
                ),
                None => {
                    complete_checksum(&mut b.frame[HEADROOM..frame_end], &hdr)?;
                    send_one(
                        s,
                        w,
                        crypto,
                        peer,
                        vni,
                        &mut b.frame[..frame_end + TAG_LEN],
                        len,
                    );
                }
            }
        }
        Verdict::Drop(reason) => return Err(reason),
    }
    Ok(())
}

/// Encapsulates (or, with `crypto`, seals) the frame at
/// `buf[HEADROOM..HEADROOM + len]` in place and sends it. `buf` has
/// [`TAG_LEN`] bytes of room after the frame.
pub(crate) fn send_one(
    s: &Shared,
    w: usize,
    crypto: Option<&NetCrypto>,
    peer: IpAddr,
    vni: Vni,
    buf: &mut [u8],
    len: usize,
) {
    let datagram: &[u8] = match crypto {
        None => {
            let at = HEADROOM - VXLAN_HEADER_LEN;
            let mut pkt = VxlanPacket::new_unchecked(&mut buf[at..HEADROOM]);
            VxlanRepr { vni, sealed: None }.emit(&mut pkt);
            &buf[at..HEADROOM + len]
        }
        Some(c) => {
            let sealer = lock_poisoned(c.sealer(w).read());
            match sealer.seal_in_place(vni, &mut buf[..HEADROOM + len + TAG_LEN], len) {
                Ok(n) => &buf[..n],
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    return;
                }
            }
        }
    };
    match s
        .tx(w)
        .send_to(datagram, SocketAddr::new(peer, s.peer_port))
    {
        Ok(_) => {
            s.stats[w].underlay_tx.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => s.drops.record(DropReason::IoError),
    }
}

/// Cuts a super-frame, encapsulates (or seals) every segment at a fixed
/// stride in `out`, and sends them with as few GSO sends as the UDP limits allow.
#[allow(clippy::too_many_arguments)]
fn send_segments(
    s: &Shared,
    w: usize,
    crypto: Option<&NetCrypto>,
    peer: IpAddr,
    vni: Vni,
    frame: &[u8],
    plan: &TsoPlan,
    out: &mut [u8],
) {
    let (prefix, suffix) = if crypto.is_some() {
        (SEALED_PAYLOAD_AT, TAG_LEN)
    } else {
        (VXLAN_HEADER_LEN, 0)
    };
    let stride = prefix + plan.headers_len + plan.mss + suffix;
    let per_send = (MAX_UDP_PAYLOAD / stride).clamp(1, MAX_GSO_SEGMENTS);
    let dst = SocketAddr::new(peer, s.peer_port);
    let sealer = crypto.map(|c| lock_poisoned(c.sealer(w).read()));
    let mut first = 0;
    while first < plan.count {
        let last = (first + per_send).min(plan.count);
        let mut used = 0;
        for i in first..last {
            let at = (i - first) * stride;
            let seg = plan.write_segment(frame, i, &mut out[at + prefix..]);
            used = match &sealer {
                Some(sealer) => {
                    match sealer.seal_in_place(vni, &mut out[at..at + prefix + seg + suffix], seg) {
                        Ok(n) => at + n,
                        Err(_) => return s.drops.record(DropReason::IoError),
                    }
                }
                None => {
                    let mut pkt = VxlanPacket::new_unchecked(&mut out[at..at + VXLAN_HEADER_LEN]);
                    VxlanRepr { vni, sealed: None }.emit(&mut pkt);
                    at + prefix + seg
                }
            };
        }
        let segments = (last - first) as u64;
        match send_gso(s.tx(w).as_fd(), dst, &out[..used], stride as u16) {
            Ok(_) => {
                s.stats[w]
                    .underlay_tx
                    .fetch_add(segments, Ordering::Relaxed);
            }
            Err(_) => s.drops.add(DropReason::IoError, segments),
        }
        first = last;
    }
}

/// Writes `bytes` (virtio header first) to queue `w` of local endpoint `ep`;
/// an endpoint removed since its id was taken counts `unknown_destination`.
fn write_endpoint(s: &Shared, t: &Tables, w: usize, ep: EndpointId, bytes: &[u8]) {
    match t.endpoints.get(ep) {
        Some(local) => write_tap(s, w, local.queue(w), bytes),
        None => s.drops.record(DropReason::UnknownDestination),
    }
}

/// Writes `bytes` (virtio header first) to a TAP queue.
fn write_tap(s: &Shared, w: usize, tap: &Tap, bytes: &[u8]) {
    match tap.write(bytes) {
        Ok(_) => {
            s.stats[w].endpoint_tx.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => s.drops.record(DropReason::IoError),
    }
}

/// Merges TCP segments bound for one endpoint.
struct Gro {
    /// The lane this state belongs to.
    lane: usize,
    coalescer: TcpCoalescer,
    /// Kept across datagrams of one receive batch, i.e. across read guards:
    /// the endpoint may be removed meanwhile, and its id then finds nothing.
    target: Option<EndpointId>,
}

impl Gro {
    fn flush(&mut self, s: &Shared, t: &Tables) {
        if let Some(to) = self.target.take() {
            if let Some(bytes) = self.coalescer.take() {
                write_endpoint(s, t, self.lane, to, bytes);
            }
        }
    }
}

/// Receives VXLAN datagrams until shutdown.
pub(crate) fn underlay_loop(s: &Shared, w: usize) {
    let rx = &s.rx[w];
    let mut buf = vec![0u8; RX_HEADROOM + 65536 + 1024];
    let mut reply = vec![0u8; HEADROOM + ARP_FRAME_LEN + TAG_LEN];
    let mut gro = Gro {
        lane: w,
        coalescer: TcpCoalescer::new(),
        target: None,
    };
    while !s.stop.load(Ordering::Relaxed) {
        if !wait_for_input(s, rx.as_fd()) {
            continue;
        }
        loop {
            let (n, from, segment) = match recv_gro(rx.as_fd(), &mut buf[RX_HEADROOM..]) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    s.drops.record(DropReason::IoError);
                    break;
                }
            };
            let size = segment.map_or(n, usize::from).max(1);
            let mut at = RX_HEADROOM;
            while at < RX_HEADROOM + n {
                let end = (at + size).min(RX_HEADROOM + n);
                s.stats[w].underlay_rx.fetch_add(1, Ordering::Relaxed);
                if let Err(reason) =
                    handle_datagram(s, from.ip(), &mut buf, at, end, &mut reply, &mut gro)
                {
                    s.drops.record(reason);
                }
                at = end;
            }
            if gro.target.is_some() {
                let t = lock_poisoned(s.tables.read());
                gro.flush(s, &t);
            }
        }
    }
}

/// Handles the datagram at `buf[at..end]`; `buf[at - 10..at]` may be overwritten.
fn handle_datagram(
    s: &Shared,
    sender: IpAddr,
    buf: &mut [u8],
    at: usize,
    end: usize,
    reply: &mut [u8],
    gro: &mut Gro,
) -> Result<(), DropReason> {
    let w = gro.lane;
    let repr = {
        let pkt = VxlanPacket::new_checked(&buf[at..end]).map_err(|_| DropReason::Malformed)?;
        VxlanRepr::parse(&pkt)?
    };
    // One read guard for the whole datagram, as on the endpoint side.
    let t = lock_poisoned(s.tables.read());
    let crypto = t.crypto_by_vni(repr.vni)?;
    let (inner_at, inner_len) = match (crypto, repr.sealed) {
        (Some(_), None) => return Err(DropReason::PlainOnEncrypted),
        (None, Some(_)) => return Err(DropReason::SealedOnPlain),
        (None, None) => (at + VXLAN_HEADER_LEN, end - at - VXLAN_HEADER_LEN),
        (Some(c), Some(_)) => {
            let inner = lock_poisoned(c.opener.lock()).open(sender, &mut buf[at..end])?;
            (at + SEALED_PAYLOAD_AT, inner.len())
        }
    };
    let inner_end = inner_at + inner_len;
    let verdict = t.switch.from_underlay(
        repr.vni,
        sender,
        &buf[inner_at..inner_end],
        &mut reply[HEADROOM..],
    );
    match verdict {
        Verdict::Deliver(to) => {
            // A remote backend's answer to a local client of its VIP; before
            // merging, so a merged super-frame is translated as a whole.
            if t.has_vips() {
                let table = t.switch.network_by_vni(repr.vni).and_then(|n| t.vips(n));
                if let Some(table) = table {
                    lock_poisoned(table.lock()).to_endpoint(
                        monotonic_now(),
                        &mut buf[inner_at..inner_end],
                        L4Checksum::Complete,
                    );
                }
            }
            let frame = &buf[inner_at..inner_end];
            // Sealed frames are authenticated end to end; plain ones may have
            // crossed a path without UDP checksums, so verify before merging.
            let mergeable = crypto.is_some() || ipv4_tcp_checksum_valid(frame);
            if gro.target.is_some_and(|target| target != to) {
                gro.flush(s, &t);
            }
            let push = if mergeable {
                gro.coalescer.push(frame)
            } else {
                Push::Alone
            };
            let push = match push {
                Push::Flush => {
                    gro.flush(s, &t);
                    gro.coalescer.push(frame)
                }
                other => other,
            };
            match push {
                Push::Merged => gro.target = Some(to),
                Push::Alone | Push::Flush => {
                    gro.flush(s, &t);
                    VnetHdr::default().emit(&mut buf[inner_at - VNET_HDR_LEN..inner_at]);
                    write_endpoint(s, &t, w, to, &buf[inner_at - VNET_HDR_LEN..inner_end]);
                }
            }
        }
        Verdict::Reply(n) => {
            s.stats[w].arp_replies.fetch_add(1, Ordering::Relaxed);
            send_one(
                s,
                w,
                crypto,
                sender,
                repr.vni,
                &mut reply[..HEADROOM + n + TAG_LEN],
                n,
            );
        }
        Verdict::Forward { .. } => return Err(DropReason::UnknownDestination),
        Verdict::Drop(reason) => return Err(reason),
    }
    Ok(())
}
