//! Waiting for a descriptor to become readable, with a timeout.
//!
//! The data-plane threads block in `poll(2)` with a short timeout so they can
//! notice a shutdown request without a signal or an extra wake-up descriptor.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// Waits until `fd` is readable or `timeout` passes; true when readable.
///
/// An interrupted wait (EINTR) reports "not readable" so the caller's loop can
/// check its stop flag and call again.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call,
    // and we pass a count of exactly one entry; `fd` is borrowed, so it stays open.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::other(format!(
            "descriptor {} reported an error while polling (revents {:#x})",
            pfd.fd, pfd.revents
        )));
    }
    Ok(rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn readable_only_after_a_datagram_arrives() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!wait_readable(rx.as_fd(), Duration::from_millis(10)).unwrap());
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        assert!(wait_readable(rx.as_fd(), Duration::from_secs(2)).unwrap());
    }
}
