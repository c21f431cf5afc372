//! TAP devices: our own small ioctl layer over `/dev/net/tun`.
//!
//! A TAP is created in the calling thread's network namespace; callers create
//! a task's TAP from inside the task's namespace ([`crate::netns::NetNs::run`])
//! and then use the descriptor from any thread. With `vnet_hdr`, every frame is
//! preceded by a 10-byte `virtio_net_hdr`, and [`Tap::set_offload`] lets the
//! kernel hand over TCP super-frames of up to 64 KiB (see
//! `shoal_overlay::offload` for the header type and the cutting).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::iface::ifreq;

/// `TUN_F_CSUM`: the reader handles partial checksums.
pub const TUN_F_CSUM: u32 = 0x01;
/// `TUN_F_TSO4`: the reader handles TCPv4 super-frames.
pub const TUN_F_TSO4: u32 = 0x02;
/// `TUN_F_TSO6`: the reader handles TCPv6 super-frames.
pub const TUN_F_TSO6: u32 = 0x04;
/// `TUN_F_TSO_ECN`: super-frames may carry ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// `TUN_F_USO4`: UDPv4 segmentation offload.
pub const TUN_F_USO4: u32 = 0x20;
/// `TUN_F_USO6`: UDPv6 segmentation offload.
pub const TUN_F_USO6: u32 = 0x40;

/// How to open a TAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Prefix every frame with a `virtio_net_hdr` (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Allow several queues (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
}

/// A TAP device could not be created or configured.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is unusable.
    #[error("invalid TAP name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0} (is the tun module loaded? `modprobe tun`; root or CAP_NET_ADMIN needed)")]
    Open(io::Error),
    /// An ioctl failed.
    #[error("{op} failed for TAP {name:?}: {source}")]
    Ioctl {
        /// The operation.
        op: &'static str,
        /// The device.
        name: String,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// One queue of a TAP device. The device disappears when its last queue closes.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    opts: TapOptions,
}

impl Tap {
    /// Creates (or, for a multi-queue device, attaches to) TAP `name`.
    pub fn create(name: &str, opts: &TapOptions) -> Result<Tap, TapError> {
        let mut req = ifreq(name).map_err(|e| TapError::Name {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads (and updates the name of) the ifreq, which is
        // valid and outlives the call; the descriptor is open.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            return Err(TapError::Ioctl {
                op: "TUNSETIFF",
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: name.to_string(),
            opts: *opts,
        })
    }

    /// Opens another queue of this multi-queue TAP.
    pub fn open_queue(&self) -> Result<Tap, TapError> {
        if !self.opts.multi_queue {
            return Err(TapError::Name {
                name: self.name.clone(),
                reason: "was not created with multi_queue".into(),
            });
        }
        Tap::create(&self.name, &self.opts)
    }

    /// The device name (in the namespace it was created in).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frames carry a `virtio_net_hdr`.
    pub fn has_vnet_hdr(&self) -> bool {
        self.opts.vnet_hdr
    }

    fn ioctl_int(
        &self,
        op: &'static str,
        request: libc::Ioctl,
        value: libc::c_ulong,
    ) -> Result<(), TapError> {
        // SAFETY: these TUN ioctls take their integer argument by value; the
        // descriptor is open for the duration of the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request, value) };
        if rc < 0 {
            return Err(TapError::Ioctl {
                op,
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Tells the kernel which offloads the reader handles (`TUN_F_*`).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        self.ioctl_int("TUNSETOFFLOAD", libc::TUNSETOFFLOAD, flags as libc::c_ulong)
    }

    /// Sets the `virtio_net_hdr` size (10, or 12 with `num_buffers`).
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<(), TapError> {
        let mut size = size as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is
        // valid for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &mut size as *mut libc::c_int,
            )
        };
        if rc < 0 {
            return Err(TapError::Ioctl {
                op: "TUNSETVNETHDRSZ",
                name: self.name.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Switches non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an open descriptor, no pointers involved.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = if on {
                flags | libc::O_NONBLOCK
            } else {
                flags & !libc::O_NONBLOCK
            };
            if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Reads one frame.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Gives up the descriptor.
    pub fn into_owned_fd(self) -> OwnedFd {
        self.file.into()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_opening_anything() {
        let e = Tap::create("way-too-long-for-a-tap", &TapOptions::default()).unwrap_err();
        assert!(matches!(e, TapError::Name { .. }), "{e}");
        assert!(e.to_string().contains("way-too-long"), "{e}");
    }
}
