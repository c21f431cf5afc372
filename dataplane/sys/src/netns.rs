//! Network namespaces: open one by name or path and run code inside it.
//!
//! `setns(2)` changes the namespace of the calling *thread*. Doing that on a thread
//! of a shared pool (tokio's, the test harness's) would leak the namespace into
//! unrelated work, so [`NetNs::run`] always spawns a dedicated thread, enters the
//! namespace there, runs the closure and lets the thread end with it. Sockets and
//! TAP devices opened inside keep the namespace they were created in for their
//! whole life, so they can be handed back and used from any thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Errors from namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source} (does it exist? `ip netns list` shows named ones)")]
    Open {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `setns(2)` refused to enter the namespace.
    #[error(
        "cannot enter network namespace {path}: {source} (entering needs root or CAP_SYS_ADMIN)"
    )]
    Enter {
        /// The namespace's path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The dedicated thread could not be started.
    #[error("cannot start a thread to enter network namespace {path}: {source}")]
    Thread {
        /// The namespace's path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace bound at `path` (for example `/var/run/netns/node1` or
    /// `/proc/1234/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetNsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// Opens a namespace created by `ip netns add NAME`.
    pub fn named(name: &str) -> Result<Self, NetNsError> {
        Self::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Opens the namespace of the calling thread.
    pub fn current() -> Result<Self, NetNsError> {
        Self::open("/proc/thread-self/ns/net")
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling thread into this namespace.
    ///
    /// Only for threads that belong to the caller alone (a daemon's main thread
    /// before it starts any other, or a dedicated thread); see [`NetNs::run`].
    pub fn enter_current_thread(&self) -> Result<(), NetNsError> {
        // SAFETY: setns takes a valid, open namespace fd (owned by `self.file` for
        // the duration of the call) and a namespace type constant; it has no
        // memory-safety preconditions.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(NetNsError::Enter {
                path: self.path.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Runs `f` on a dedicated thread inside this namespace and returns its result.
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> Result<R, NetNsError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, || {
                    self.enter_current_thread()?;
                    Ok(f())
                })
                .map_err(|source| NetNsError::Thread {
                    path: self.path.clone(),
                    source,
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_names_the_path() {
        let err = NetNs::named("shoal-no-such-namespace").unwrap_err();
        assert!(err.to_string().contains("shoal-no-such-namespace"), "{err}");
    }

    #[test]
    fn run_in_own_namespace_returns_value() {
        let ns = NetNs::current().expect("own namespace");
        assert_eq!(ns.run(|| 41 + 1).expect("run"), 42);
    }
}
