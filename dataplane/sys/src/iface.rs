//! Interface setup with the classic `SIOC*` ioctls, in the calling thread's
//! network namespace.
//!
//! Each call opens a throwaway `AF_INET` datagram socket as its ioctl handle; a
//! socket belongs to the namespace of the thread that created it, so these
//! functions configure whatever namespace the caller runs in (see
//! [`crate::netns::NetNs::run`]). The few operations used to bring up a task's
//! TAP (name, MAC, MTU, one IPv4 address, up, a route) need no netlink.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A failed interface operation, naming the interface and what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} on interface {name:?}: {source}")]
pub struct IfaceError {
    /// What was attempted.
    pub op: &'static str,
    /// The interface.
    pub name: String,
    /// The kernel's answer.
    pub source: io::Error,
}

fn err(op: &'static str, name: &str, source: io::Error) -> IfaceError {
    IfaceError {
        op,
        name: name.to_string(),
        source,
    }
}

/// A zeroed `ifreq` carrying `name`; refuses names that do not fit.
pub(crate) fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name (1 to 15 bytes, no '/', space or NUL)"),
        ));
    }
    // SAFETY: ifreq is a plain C struct (a name array and a union of plain
    // fields) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the returned descriptor is
    // checked and then owned by the OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs one ioctl that reads or writes `req`.
fn ioctl(request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call; every
    // request used in this module reads or writes at most one ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr has no invalid bit patterns; this is the standard reinterpretation
    // the kernel expects for AF_INET addresses in ifreq.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn prefix_mask(prefix_len: u8) -> Ipv4Addr {
    match prefix_len {
        0 => Ipv4Addr::UNSPECIFIED,
        n => Ipv4Addr::from(u32::MAX << (32 - u32::from(n.min(32)))),
    }
}

/// The interface's index.
pub fn index(name: &str) -> Result<u32, IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("look up", name, e))?;
    ioctl(libc::SIOCGIFINDEX, &mut req).map_err(|e| err("look up", name, e))?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// Sets the MAC address.
pub fn set_mac(name: &str, mac: [u8; 6]) -> Result<(), IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("set the MAC", name, e))?;
    let mut sa: libc::sockaddr = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    sa.sa_family = libc::ARPHRD_ETHER;
    for (dst, src) in sa.sa_data.iter_mut().zip(mac) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = sa;
    ioctl(libc::SIOCSIFHWADDR, &mut req).map_err(|e| err("set the MAC", name, e))
}

/// The MAC address.
pub fn mac(name: &str) -> Result<[u8; 6], IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("read the MAC", name, e))?;
    ioctl(libc::SIOCGIFHWADDR, &mut req).map_err(|e| err("read the MAC", name, e))?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data) {
        *dst = src as u8;
    }
    Ok(mac)
}

/// Sets the MTU.
pub fn set_mtu(name: &str, mtu: u32) -> Result<(), IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("set the MTU", name, e))?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(libc::SIOCSIFMTU, &mut req).map_err(|e| err("set the MTU", name, e))
}

/// The MTU.
pub fn mtu(name: &str) -> Result<u32, IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("read the MTU", name, e))?;
    ioctl(libc::SIOCGIFMTU, &mut req).map_err(|e| err("read the MTU", name, e))?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Sets the interface's IPv4 address and prefix length.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix_len: u8) -> Result<(), IfaceError> {
    if prefix_len > 32 {
        return Err(err(
            "set the address",
            name,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefix length {prefix_len} exceeds 32"),
            ),
        ));
    }
    let mut req = ifreq(name).map_err(|e| err("set the address", name, e))?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(libc::SIOCSIFADDR, &mut req).map_err(|e| err("set the address", name, e))?;
    let mut req = ifreq(name).map_err(|e| err("set the netmask", name, e))?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(prefix_mask(prefix_len));
    ioctl(libc::SIOCSIFNETMASK, &mut req).map_err(|e| err("set the netmask", name, e))
}

fn flags(name: &str) -> Result<libc::c_short, IfaceError> {
    let mut req = ifreq(name).map_err(|e| err("read the flags", name, e))?;
    ioctl(libc::SIOCGIFFLAGS, &mut req).map_err(|e| err("read the flags", name, e))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

fn set_flags(
    name: &str,
    op: &'static str,
    f: impl Fn(libc::c_short) -> libc::c_short,
) -> Result<(), IfaceError> {
    let current = flags(name)?;
    let mut req = ifreq(name).map_err(|e| err(op, name, e))?;
    req.ifr_ifru.ifru_flags = f(current);
    ioctl(libc::SIOCSIFFLAGS, &mut req).map_err(|e| err(op, name, e))
}

/// Brings the interface up.
pub fn set_up(name: &str) -> Result<(), IfaceError> {
    set_flags(name, "bring up", |f| f | libc::IFF_UP as libc::c_short)
}

/// Takes the interface down.
pub fn set_down(name: &str) -> Result<(), IfaceError> {
    set_flags(name, "take down", |f| f & !(libc::IFF_UP as libc::c_short))
}

/// True when the interface is up.
pub fn is_up(name: &str) -> Result<bool, IfaceError> {
    Ok(flags(name)? & libc::IFF_UP as libc::c_short != 0)
}

/// Renames a (down) interface.
pub fn rename(old: &str, new: &str) -> Result<(), IfaceError> {
    let mut req = ifreq(old).map_err(|e| err("rename", old, e))?;
    let target = ifreq(new).map_err(|e| err("rename", old, e))?;
    req.ifr_ifru.ifru_newname = target.ifr_name;
    ioctl(libc::SIOCSIFNAME, &mut req).map_err(|e| err("rename", old, e))
}

/// Adds an IPv4 route to `dest/prefix_len` via `gateway` (or on-link) out of `dev`.
pub fn add_ipv4_route(
    dest: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    dev: &str,
) -> Result<(), IfaceError> {
    let op = "add a route";
    let devname = std::ffi::CString::new(dev)
        .map_err(|_| err(op, dev, io::Error::from(io::ErrorKind::InvalidInput)))?;
    // SAFETY: rtentry is a plain C struct for which all-zero bytes are valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(dest);
    rt.rt_genmask = sockaddr_in(prefix_mask(prefix_len));
    rt.rt_flags = libc::RTF_UP;
    if let Some(gw) = gateway {
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags |= libc::RTF_GATEWAY;
    }
    rt.rt_dev = devname.as_ptr() as *mut libc::c_char;
    let sock = control_socket().map_err(|e| err(op, dev, e))?;
    // SAFETY: `rt` is a valid rtentry whose rt_dev points at `devname`, which
    // outlives the call; SIOCADDRT only reads it.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCADDRT,
            &mut rt as *mut libc::rtentry,
        )
    };
    if rc < 0 {
        return Err(err(op, dev, io::Error::last_os_error()));
    }
    Ok(())
}

/// Turns IPv6 off on the interface; a kernel without IPv6 is not an error.
pub fn disable_ipv6(name: &str) -> Result<(), IfaceError> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("disable IPv6", name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_ioctl() {
        for bad in ["", "a-name-that-is-too-long", "eth/0", "eth 0"] {
            assert!(ifreq(bad).is_err(), "{bad:?}");
        }
        assert!(ifreq("eth0").is_ok());
        let e = set_mtu("no such if", 1400).unwrap_err();
        assert!(e.to_string().contains("no such if"), "{e}");
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
    }
}
