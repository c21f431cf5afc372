//! UDP segmentation (GSO) and receive coalescing (GRO) for the VXLAN socket.
//!
//! With GSO one `sendmsg` hands the kernel a buffer of many equal-sized
//! datagrams (the last may be shorter) and a `UDP_SEGMENT` size; the kernel cuts
//! it late, after routing and netfilter, once per buffer instead of once per
//! datagram. With GRO the kernel merges consecutive datagrams of one flow into
//! one buffer and reports the datagram size in a `UDP_GRO` control message.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};

/// `SOL_UDP` option: GSO segment size (Linux 4.18+).
pub const UDP_SEGMENT: libc::c_int = 103;
/// `SOL_UDP` option: GRO on receive (Linux 5.0+).
pub const UDP_GRO: libc::c_int = 104;
/// The most segments one GSO send may carry (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int that lives across the call, and the
    // length passed is its size; the descriptor is borrowed, so it is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a default GSO segment size for every send on the socket (0 turns it off).
pub fn set_udp_segment(fd: BorrowedFd<'_>, gso_size: u16) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_SEGMENT, gso_size as libc::c_int)
}

/// Turns UDP GRO on or off for the socket.
pub fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, on as libc::c_int)
}

/// Sets the receive buffer, beyond `rmem_max` when the process may (root).
pub fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v))
}

/// Sets the send buffer, beyond `wmem_max` when the process may (root).
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, v))
}

/// Binds a non-blocking UDP socket with `SO_REUSEPORT`, so several sockets
/// (one per worker) share `addr` and the kernel spreads incoming flows over
/// them by a hash of the addresses and ports.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(fd))
}

/// Makes a `SO_REUSEPORT` group of `members` sockets (joined in order, the
/// first being `fd`) hand each datagram to member `source port % members`.
///
/// The kernel's default is a keyed hash of the 4-tuple. A shoal peer sends
/// each lane's flows from its own port (see [`bind_consecutive`]); with only a
/// handful of ports the hash often puts two lanes on one socket, and the
/// collapse feeds back through the TAP flow table until several flows share
/// one lane end to end. By port the mapping is a bijection when the peer's
/// ports are consecutive, and still spreads the per-flow ports of a kernel
/// VXLAN peer. Datagrams whose header cannot be read fall back to the hash.
pub fn steer_reuseport_by_source_port(fd: BorrowedFd<'_>, members: u32) -> io::Result<()> {
    if members == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a reuseport group has at least one member",
        ));
    }
    let net = libc::SKF_NET_OFF as u32;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // Classic BPF sees the datagram from its payload; the IP header is reached
    // through the negative SKF_NET_OFF base.
    let mut prog = [
        // A = IP version
        stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, net),
        stmt(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 4),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 4, 0, 3),
        // IPv4: X = header length, A = source port
        stmt(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, net),
        stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, net),
        jump(libc::BPF_JMP | libc::BPF_JA, 1, 0, 0),
        // IPv6 (no extension headers ahead of UDP): A = source port
        stmt(
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            net.wrapping_add(40),
        ),
        stmt(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, members),
        stmt(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, both live across the call, and the
    // length passed is the size of `fprog`; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds `count` (blocking) UDP sockets on `ip` to consecutive ports, so a
/// peer that steers by `source port % n` spreads them evenly for any `n`.
/// The first port is the kernel's ephemeral pick; a block with a taken port
/// is given up and another tried, up to `attempts` times.
pub fn bind_consecutive(
    ip: std::net::IpAddr,
    count: usize,
    attempts: usize,
) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no attempt made");
    for _ in 0..attempts.max(1) {
        let first = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let base = first.local_addr()?.port();
        if usize::from(base) + count > usize::from(u16::MAX) + 1 {
            continue;
        }
        let mut block = vec![first];
        for i in 1..count {
            match std::net::UdpSocket::bind(SocketAddr::new(ip, base + i as u16)) {
                Ok(s) => block.push(s),
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        if block.len() == count {
            return Ok(block);
        }
    }
    Err(io::Error::new(
        last.kind(),
        format!("no {count} consecutive free UDP ports on {ip}: {last}"),
    ))
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Control-message space, u64-aligned as `cmsghdr` requires.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends `buf` to `dst` as datagrams of `segment` bytes (the last may be
/// shorter) in one `sendmsg`. A `segment` of 0 or >= `buf.len()` sends one datagram.
pub fn send_gso(
    fd: BorrowedFd<'_>,
    dst: SocketAddr,
    buf: &[u8],
    segment: u16,
) -> io::Result<usize> {
    let (mut addr, addr_len) = to_sockaddr(dst);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid (no control, no name).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = addr_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if segment != 0 && (segment as usize) < buf.len() {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `cmsg`, 64 bytes and 8-aligned, which is
        // more than CMSG_SPACE(2); CMSG_FIRSTHDR therefore returns a header inside
        // it, and CMSG_DATA points at room for the u16 written.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_UDP;
            (*hdr).cmsg_type = UDP_SEGMENT;
            (*hdr).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr) as *mut u16, segment);
        }
    }
    // SAFETY: every pointer in `msg` (name, iov, control) refers to locals or
    // to `buf`, all alive across the call.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives one (possibly GRO-coalesced) buffer: its length, the sender, and
/// the size of the datagrams it holds when the kernel coalesced several.
pub fn recv_gro(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u16>)> {
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cmsg = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr() as *mut libc::c_void;
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.0.len() as _;
    // SAFETY: every pointer in `msg` refers to locals or to `buf`, alive across
    // the call; the lengths given are their sizes.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut segment = None;
    // SAFETY: the kernel filled `msg.msg_control`/`msg_controllen` with valid
    // control messages; CMSG_FIRSTHDR/NXTHDR walk them within those bounds.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_UDP && (*hdr).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(hdr) as *const libc::c_int);
                segment = Some(v as u16);
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    // SAFETY: recvmsg succeeded, so it wrote a socket address of the socket's
    // family into the zeroed storage (or left it zeroed).
    let storage = unsafe { addr.assume_init() };
    let from = from_sockaddr(&storage)
        .ok_or_else(|| io::Error::other("recvmsg returned no source address"))?;
    Ok((n as usize, from, segment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn reuseport_sockets_share_a_port_and_each_datagram_reaches_one() {
        let a = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind_reuseport(addr).unwrap();
        // A socket without SO_REUSEPORT cannot join the group.
        assert!(UdpSocket::bind(addr).is_err());
        let senders: Vec<UdpSocket> = (0..32)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, tx) in senders.iter().enumerate() {
            tx.send_to(&[i as u8], addr).unwrap();
        }
        let mut seen = Vec::new();
        let mut buf = [0u8; 16];
        for _ in 0..200 {
            for sock in [&a, &b] {
                while let Ok((1, _)) = sock.recv_from(&mut buf) {
                    seen.push(buf[0]);
                }
            }
            if seen.len() == senders.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..32u8).collect::<Vec<_>>());
    }

    #[test]
    fn steered_group_hands_each_source_port_to_its_residue() {
        for ip in ["127.0.0.1", "::1"] {
            let first = bind_reuseport(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
            let addr = first.local_addr().unwrap();
            let mut group = vec![first];
            for _ in 1..3 {
                group.push(bind_reuseport(addr).unwrap());
            }
            steer_reuseport_by_source_port(group[0].as_fd(), 3).unwrap();
            let senders = bind_consecutive(addr.ip(), 6, 16).unwrap();
            let ports: Vec<u16> = senders
                .iter()
                .map(|s| s.local_addr().unwrap().port())
                .collect();
            assert!(ports.windows(2).all(|w| w[1] == w[0] + 1), "{ports:?}");
            for (i, tx) in senders.iter().enumerate() {
                tx.send_to(&[i as u8], addr).unwrap();
            }
            let mut got = 0;
            let mut buf = [0u8; 16];
            for _ in 0..200 {
                for (member, sock) in group.iter().enumerate() {
                    while let Ok((1, from)) = sock.recv_from(&mut buf) {
                        assert_eq!(usize::from(from.port()) % 3, member, "{ip}: {from}");
                        got += 1;
                    }
                }
                if got == senders.len() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(got, senders.len(), "{ip}");
        }
    }

    #[test]
    fn a_group_of_no_members_is_refused() {
        let s = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(steer_reuseport_by_source_port(s.as_fd(), 0).is_err());
    }

    #[test]
    fn one_gso_send_arrives_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let buf: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let sent = send_gso(tx.as_fd(), rx.local_addr().unwrap(), &buf, 1000).unwrap();
        assert_eq!(sent, 2500);
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        for _ in 0..3 {
            let (n, from) = rx.recv_from(&mut b).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            got.push(b[..n].to_vec());
        }
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        assert_eq!(got.concat(), buf);
    }

    #[test]
    fn gro_receive_reports_the_datagram_size_when_coalesced() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_udp_gro(rx.as_fd(), true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let buf = vec![7u8; 1200 * 4];
        send_gso(tx.as_fd(), rx.local_addr().unwrap(), &buf, 1200).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut total = 0;
        let mut b = vec![0u8; 65536];
        while total < buf.len() {
            let (n, from, seg) = recv_gro(rx.as_fd(), &mut b).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            if let Some(seg) = seg {
                assert_eq!(seg, 1200, "GRO reports the datagram size");
            } else {
                assert_eq!(n, 1200);
            }
            total += n;
        }
        assert_eq!(total, buf.len());
    }

    #[test]
    fn socket_options_apply() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_udp_segment(s.as_fd(), 1400).unwrap();
        set_recv_buffer(s.as_fd(), 1 << 20).unwrap();
        set_send_buffer(s.as_fd(), 1 << 20).unwrap();
    }
}
