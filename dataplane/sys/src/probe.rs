//! Capability probes for `shoal doctor`: can this host run Shoal, and how fast?
//!
//! Each probe tries the real thing (create a TAP, a namespace, a veth, set a
//! socket option, set up an io_uring) rather than reading version numbers, and
//! undoes what it made. Probes that need a namespace make a throwaway one named
//! `shoal-doctor-<pid>-<n>` and delete it on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::netns::NetNs;
use crate::tap::{Tap, TapOptions, TUN_F_CSUM, TUN_F_TSO4};
use crate::udp;

/// The result of one probe: what was found, or what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Works; the text says what was found.
    Ok(String),
    /// Does not work; the text says what to do.
    Missing(String),
}

impl Outcome {
    /// True for [`Outcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

static THROWAWAY: AtomicUsize = AtomicUsize::new(0);

/// A namespace that exists for one probe.
struct Throwaway {
    name: String,
}

impl Throwaway {
    fn new() -> Result<Throwaway, String> {
        let name = format!(
            "shoal-doctor-{}-{}",
            std::process::id(),
            THROWAWAY.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        Ok(Throwaway { name })
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn needs_root(e: &str) -> String {
    if e.contains("Operation not permitted")
        || e.contains("EPERM")
        || e.contains("Permission denied")
    {
        format!("{e}; run as root or grant CAP_NET_ADMIN and CAP_SYS_ADMIN")
    } else {
        e.to_string()
    }
}

/// `/dev/net/tun` exists and a TAP with offloads can be created (in a throwaway
/// namespace, so nothing appears on the host).
pub fn tun() -> Outcome {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Outcome::Missing(
            "/dev/net/tun is absent: `modprobe tun` (or create it: mknod /dev/net/tun c 10 200)"
                .into(),
        );
    }
    let (_throwaway, ns) = match Throwaway::new().and_then(|t| {
        NetNs::named(&t.name)
            .map(|n| (t, n))
            .map_err(|e| e.to_string())
    }) {
        Ok(x) => x,
        Err(e) => return Outcome::Missing(needs_root(&e)),
    };
    let result = ns.run(|| -> Result<String, String> {
        let opts = TapOptions {
            vnet_hdr: true,
            multi_queue: false,
        };
        let tap = Tap::create("doctor0", &opts).map_err(|e| e.to_string())?;
        tap.set_vnet_hdr_size(10).map_err(|e| e.to_string())?;
        tap.set_offload(TUN_F_CSUM | TUN_F_TSO4)
            .map_err(|e| e.to_string())?;
        Ok("TAP created with vnet header and TSO offload".into())
    });
    match result {
        Ok(Ok(s)) => Outcome::Ok(s),
        Ok(Err(e)) => Outcome::Missing(needs_root(&e)),
        Err(e) => Outcome::Missing(needs_root(&e.to_string())),
    }
}

/// Network namespaces can be created and removed.
pub fn netns() -> Outcome {
    match Throwaway::new() {
        Ok(_) => Outcome::Ok("created and removed a namespace".into()),
        Err(e) => Outcome::Missing(needs_root(&e)),
    }
}

/// veth pairs and Linux bridges can be created (inside a throwaway namespace).
pub fn veth_and_bridge() -> Outcome {
    let t = match Throwaway::new() {
        Ok(t) => t,
        Err(e) => return Outcome::Missing(needs_root(&e)),
    };
    let r = t
        .ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        .and_then(|_| t.ip(&["link", "add", "dbr", "type", "bridge"]))
        .and_then(|_| t.ip(&["link", "set", "d0", "master", "dbr"]));
    match r {
        Ok(()) => Outcome::Ok("veth pair on a bridge".into()),
        Err(e) => Outcome::Missing(format!(
            "{} (kernel needs CONFIG_VETH and CONFIG_BRIDGE)",
            needs_root(&e)
        )),
    }
}

/// The kernel's own VXLAN works (used only for interop tests and comparisons).
pub fn kernel_vxlan() -> Outcome {
    let t = match Throwaway::new() {
        Ok(t) => t,
        Err(e) => return Outcome::Missing(needs_root(&e)),
    };
    match t.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "nolearning",
    ]) {
        Ok(()) => Outcome::Ok("vxlan device created (comparison and interop only)".into()),
        Err(e) => Outcome::Missing(format!(
            "{e} (`modprobe vxlan`; Shoal itself does not need it)"
        )),
    }
}

/// UDP GSO (`UDP_SEGMENT`) is available.
pub fn udp_gso() -> Outcome {
    match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| udp::set_udp_segment(s.as_fd(), 1400)) {
        Ok(()) => Outcome::Ok("UDP_SEGMENT accepted".into()),
        Err(e) => Outcome::Missing(format!("UDP_SEGMENT refused ({e}): needs Linux 4.18+; the data plane falls back to one send per datagram")),
    }
}

/// UDP GRO (`UDP_GRO`) is available.
pub fn udp_gro() -> Outcome {
    match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| udp::set_udp_gro(s.as_fd(), true))
    {
        Ok(()) => Outcome::Ok("UDP_GRO accepted".into()),
        Err(e) => Outcome::Missing(format!(
            "UDP_GRO refused ({e}): needs Linux 5.0+; receive runs datagram by datagram"
        )),
    }
}

/// io_uring can be set up (it may be disabled by `kernel.io_uring_disabled`).
pub fn io_uring() -> Outcome {
    // io_uring_params is 120 bytes; zeroed means "defaults".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes `params`, a 120-byte buffer
    // (sizeof(struct io_uring_params)) that outlives the call; the returned
    // descriptor, if any, is closed right after.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let what = match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no io_uring (CONFIG_IO_URING)".to_string(),
            Some(libc::EPERM) => {
                "io_uring is disabled: set sysctl kernel.io_uring_disabled=0".to_string()
            }
            _ => format!("io_uring_setup failed: {e}"),
        };
        return Outcome::Missing(format!(
            "{what}; the data plane uses plain system calls instead"
        ));
    }
    // SAFETY: `fd` is a descriptor io_uring_setup just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    Outcome::Ok("io_uring_setup works".into())
}

/// Which transport a port check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Whether `port` can be bound on all addresses in the current namespace.
pub fn port_free(proto: Proto, port: u16) -> Outcome {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let r = match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
    };
    let name = match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    match r {
        Ok(()) => Outcome::Ok(format!("{port}/{name} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Outcome::Missing(format!(
            "{port}/{name} is in use: stop the process holding it (another shoald, or Docker Swarm?); `ss -lunp`/`ss -ltnp` shows it"
        )),
        Err(e) => Outcome::Missing(format!("cannot bind {port}/{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_answer_on_this_host() {
        // The CI host is the reference machine: everything Shoal needs is there.
        for (name, outcome) in [
            ("tun", tun()),
            ("netns", netns()),
            ("veth", veth_and_bridge()),
            ("gso", udp_gso()),
            ("gro", udp_gro()),
        ] {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
        assert!(!std::path::Path::new(&format!(
            "/var/run/netns/shoal-doctor-{}-0",
            std::process::id()
        ))
        .exists());
    }

    #[test]
    fn a_bound_port_is_reported_in_use() {
        let held = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        match port_free(Proto::Udp, port) {
            Outcome::Missing(s) => assert!(s.contains("in use"), "{s}"),
            other => panic!("expected in use, got {other:?}"),
        }
    }
}
