//! The kernel side of a task's sandbox: a fresh network namespace held by a
//! descriptor, a process started inside it with its own UTS and mount
//! namespaces, and signals to whole process groups.
//!
//! Two rules shape this module. `unshare(CLONE_NEWNET)` and `setns` change the
//! calling *thread*, so a namespace is created on a short-lived thread of its
//! own and never on a thread someone else will reuse (see [`crate::netns`]).
//! And between `fork` and `exec` only async-signal-safe calls are allowed (the
//! parent may have held a lock in another thread, `malloc`'s among them), so
//! [`spawn`] prepares every string and descriptor before forking and the
//! pre-exec hook makes raw system calls only.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

/// A failed sandbox operation: the step and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct SandboxError {
    /// What was attempted, in words ("enter the network namespace").
    pub step: &'static str,
    /// The underlying error.
    pub source: io::Error,
}

fn step_err(step: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError { step, source }
}

/// Creates a new network namespace with `lo` up and returns a descriptor that
/// keeps it alive.
///
/// The `unshare` runs on a dedicated thread that ends right after, so no other
/// thread of the process changes namespace. Nothing is bind-mounted: once the
/// last descriptor (and the last process inside) is gone, the kernel frees it.
pub fn new_netns() -> Result<OwnedFd, SandboxError> {
    let handle = std::thread::Builder::new()
        .name("netns-new".into())
        .spawn(|| -> Result<OwnedFd, SandboxError> {
            // SAFETY: unshare takes a flag word and has no memory-safety
            // preconditions; it only moves this dedicated thread, which ends
            // when this closure returns.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(step_err("create a network namespace")(
                    io::Error::last_os_error(),
                ));
            }
            let ns = File::open("/proc/thread-self/ns/net")
                .map_err(step_err("open the new network namespace"))?;
            crate::iface::set_up("lo").map_err(|e| SandboxError {
                step: "bring lo up in the new network namespace",
                source: e.source,
            })?;
            Ok(OwnedFd::from(ns))
        })
        .map_err(step_err("start a thread to create a network namespace"))?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Sends `signal` to process `pid`; false when no such process exists.
pub fn kill(pid: i32, signal: i32) -> io::Result<bool> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}: only a positive pid names one process"),
        ));
    }
    send(pid, signal)
}

/// Sends `signal` to every process of process group `pgid`; false when the
/// group has no member left.
pub fn kill_group(pgid: i32, signal: i32) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    send(-pgid, signal)
}

fn send(target: i32, signal: i32) -> io::Result<bool> {
    // SAFETY: kill(2) takes two integers and has no memory-safety
    // preconditions; callers have checked `target` names one process or one
    // group, never "every process" (-1) or our own group (0).
    if unsafe { libc::kill(target, signal) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(false);
    }
    Err(err)
}

/// What [`spawn`] sets up in the child between `fork` and `exec`.
#[derive(Debug)]
pub struct SandboxSpec<'a> {
    /// The network namespace to join (from [`new_netns`]).
    pub netns: BorrowedFd<'a>,
    /// The UTS hostname inside the new UTS namespace.
    pub hostname: &'a str,
    /// A file bind-mounted over `/etc/resolv.conf` in the new mount namespace.
    pub resolv_conf: &'a Path,
    /// `cgroup.procs` of the cgroup to join, opened for writing; the child
    /// writes `0` (itself) to it before anything else.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
}

/// The steps of the pre-exec hook, by index; the child writes the index of the
/// one that failed to a close-on-exec pipe so the parent can name it.
const STEPS: [&str; 9] = [
    "start a new session",
    "set the parent-death signal",
    "find that the daemon already exited",
    "join the task's cgroup",
    "enter the task's network namespace",
    "create UTS and mount namespaces",
    "set the hostname",
    "make mount propagation private",
    "bind-mount resolv.conf over /etc/resolv.conf",
];

/// Starts `cmd` in the sandbox described by `spec`.
///
/// In the child, before `exec`: a new session (so it leads its own process
/// group, which [`kill_group`] signals), `PR_SET_PDEATHSIG` SIGKILL (the child
/// dies when the *thread* that forked it ends: call this from a thread that
/// lives as long as the tasks should), the cgroup, `setns` into the network
/// namespace, new UTS and mount namespaces, the hostname, private mount
/// propagation and the resolv.conf bind mount. The caller sets the program,
/// arguments, environment and stdio on `cmd`; a failed step or `exec` comes
/// back as an error naming it.
pub fn spawn(mut cmd: Command, spec: &SandboxSpec<'_>) -> Result<Child, SandboxError> {
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    };
    let hostname = spec.hostname.as_bytes().to_vec();
    if hostname.contains(&0) {
        return Err(step_err("set the hostname")(invalid("the hostname")));
    }
    let resolv = CString::new(spec.resolv_conf.as_os_str().as_bytes())
        .map_err(|_| step_err("bind-mount resolv.conf")(invalid("the resolv.conf path")))?;
    let (report_r, report_w) = pipe_cloexec().map_err(step_err("create a pipe"))?;
    let netns = spec.netns.as_raw_fd();
    let cgroup_procs = spec.cgroup_procs.map(|fd| fd.as_raw_fd());
    let report = report_w.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls from here on: raw system calls on
        // descriptors and buffers prepared before the fork, no allocation.
        let fail = |step: u8| -> io::Error {
            let err = io::Error::last_os_error();
            // SAFETY: `report` is the write end of a pipe that stays open in the
            // child until exec; the buffer is one byte on the stack.
            unsafe { libc::write(report, [step].as_ptr().cast(), 1) };
            err
        };
        // SAFETY: for each call below, the arguments are integers, constant
        // C strings, or pointers to buffers (`hostname`, `resolv`) owned by
        // this closure, which lives until exec; descriptors were opened by
        // the parent and are kept open across the spawn call by the borrows
        // in `spec`. None of these calls allocates or takes a lock.
        unsafe {
            if libc::setsid() < 0 {
                return Err(fail(0));
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(fail(1));
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(fail(2));
            }
            if let Some(fd) = cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(fail(3));
                }
            }
            if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                return Err(fail(4));
            }
            if libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWNS) != 0 {
                return Err(fail(5));
            }
            if libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0 {
                return Err(fail(6));
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail(7));
            }
            if libc::mount(
                resolv.as_ptr(),
                c"/etc/resolv.conf".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(fail(8));
            }
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe system calls (see inside)
    // and touches no memory shared with other threads of the parent.
    unsafe { cmd.pre_exec(hook) };
    let result = cmd.spawn();
    // The child's copy closed on exec or exit; close ours so a read ends.
    drop(report_w);
    drop(cmd);
    match result {
        Ok(child) => Ok(child),
        Err(source) => {
            let mut byte = [0u8; 1];
            let mut reader = File::from(report_r);
            let step = match reader.read(&mut byte) {
                Ok(1) => STEPS.get(byte[0] as usize).copied().unwrap_or("start"),
                _ => "execute the command",
            };
            Err(SandboxError { step, source })
        }
    }
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a two-element array that pipe2 fills on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_signal_everyone() {
        assert!(kill(-1, 0).is_err());
        assert!(kill_group(0, 0).is_err());
        assert!(kill_group(1, 0).is_err());
    }

    #[test]
    fn new_netns_differs_from_ours_and_is_freed_on_drop() {
        let ours = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
        let fd = new_netns().expect("new netns (needs root)");
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let theirs = std::fs::read_link(&path).expect("read new netns link");
        assert!(theirs.to_string_lossy().starts_with("net:["), "{theirs:?}");
        assert_ne!(ours, theirs);
        // Our own thread was not moved.
        assert_eq!(
            ours,
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        );
        drop(fd);
        assert!(std::fs::read_link(&path)
            .map(|l| l != theirs)
            .unwrap_or(true));
    }

    #[test]
    fn signal_zero_to_self_group_member() {
        assert!(kill(std::process::id() as i32, 0).expect("signal 0 to self"));
    }
}
