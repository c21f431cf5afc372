//! The process runtime that runs swarm tasks.
//!
//! A task of a swarm service is a command run as a process in a sandbox of its
//! own: a network namespace the data plane puts the task's TAP devices in, a
//! UTS namespace with the task's hostname, a mount namespace where
//! `/etc/resolv.conf` points at the embedded DNS server, a process group that
//! is stopped as a whole, and a cgroup v2 for limits where the host has one.
//! No image and no root filesystem: the command runs from the host's
//! filesystem, which is what Shoal's workloads need to exercise the network.
//!
//! The API is blocking (the node agent calls it from `spawn_blocking`) and is
//! the [`Runtime`] trait, so the agent can be tested against a fake. The only
//! implementation here is [`ProcessRuntime`]; the system calls it needs live
//! in `shoal_sys::sandbox`.

#![forbid(unsafe_code)]

mod cgroup;
mod error;
mod log;
mod process;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::RuntimeError;
pub use process::{ProcessRuntime, RuntimeConfig};

/// The `PATH` a task gets when its spec has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run for one task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskSpec {
    /// The task id (25 lower-case base36 characters in Swarm); the runtime
    /// accepts `[a-z0-9]{1,64}` and uses it in file and cgroup names.
    pub id: String,
    /// Docker's task name, `web.1.<id>`; used in messages.
    pub name: String,
    /// The UTS hostname inside the task.
    pub hostname: String,
    /// The argv; `argv[0]` is looked up in the task's `PATH` unless it has a `/`.
    pub command: Vec<String>,
    /// The whole environment (nothing is inherited from the daemon);
    /// `PATH` ([`DEFAULT_PATH`]) and `HOSTNAME` are added when absent.
    pub env: Vec<(String, String)>,
    /// `/etc/resolv.conf` as the task sees it.
    pub resolv_conf: String,
    /// Resource limits (cgroup v2).
    pub limits: Limits,
    /// The image of a service created with `--image`: such a task runs as a
    /// Docker container from this image. `None` for a host process (the
    /// process runtime ignores this and the next two fields).
    pub image: Option<String>,
    /// Swarm's container labels (`com.docker.swarm.service.id`,
    /// `com.docker.swarm.task.name`, ...), for runtimes that label what
    /// they run.
    pub labels: BTreeMap<String, String>,
    /// The task's networks in interface order, for runtimes whose interfaces
    /// come from a network plugin ([`Runtime::plugin_networking`]).
    pub networks: Vec<TaskNetwork>,
}

/// One network of a task, as a runtime that attaches it through a network
/// plugin needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNetwork {
    /// The Docker network's name, which is the shoal network's name.
    pub docker_network: String,
    /// The task's address on the network.
    pub ip: Ipv4Addr,
    /// The prefix length of the network's subnet.
    pub prefix_len: u8,
    /// The shoal network id, which the plugin resolves.
    pub shoal_network_id: String,
}

/// Resource limits of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// CPU in billionths of a CPU (`1_000_000_000` is one CPU), as `--limit-cpu`.
    pub nano_cpus: Option<u64>,
    /// Memory in bytes, as `--limit-memory`.
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// True when any limit is asked for.
    pub fn any(&self) -> bool {
        self.nano_cpus.is_some() || self.memory_bytes.is_some()
    }
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskExit {
    /// The exit code, or 128 + the signal that killed it (137 for SIGKILL),
    /// as Docker reports it.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the task's cgroup.
    pub oom_killed: bool,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime read it, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The stream it came from.
    pub stream: Stream,
    /// The line without its newline (lines over 16 KiB are cut in pieces;
    /// bytes that are not UTF-8 are replaced).
    pub line: String,
}

/// A page of log lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogChunk {
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
    /// The cursor to pass as `since` for the lines after these.
    pub next: u64,
}

/// Runs tasks as processes in sandboxes. All methods block only briefly,
/// except [`Runtime::stop`], which takes up to its grace period and a bit.
pub trait Runtime: Send + Sync + 'static {
    /// Creates the task's sandbox (a network namespace with `lo` up, held by
    /// the runtime) and returns a path through which other code can open the
    /// namespace (`/proc/<daemon pid>/fd/<n>`). Idempotent per id.
    ///
    /// A runtime whose interfaces come from a network plugin
    /// ([`Runtime::plugin_networking`] is true for the task) returns an empty
    /// path: its sandbox does not exist before `start`, and the caller makes
    /// no TAP devices for it.
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError>;
    /// Starts the prepared task's command in its sandbox; returns its pid.
    fn start(&self, id: &str) -> Result<u32, RuntimeError>;
    /// The exit, once the process ended (non-blocking; reaps it). A task
    /// that was never started is an error ([`RuntimeError::NotStarted`]).
    fn try_wait(&self, id: &str) -> Result<Option<TaskExit>, RuntimeError>;
    /// SIGTERM to the task's process group, SIGKILL after `grace`; returns the
    /// exit. Stopping a task that already exited returns its exit; one that
    /// was never started is [`RuntimeError::NotStarted`] (just `remove` it).
    fn stop(&self, id: &str, grace: Duration) -> Result<TaskExit, RuntimeError>;
    /// Frees the sandbox (namespace, cgroup, resolv.conf file), killing the
    /// process if it still runs; the log stays until [`Runtime::remove_logs`].
    /// Removing an id the runtime does not hold succeeds, so retries are safe.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Deletes the task's log files; refused ([`RuntimeError::StillHeld`])
    /// until the task was removed.
    fn remove_logs(&self, id: &str) -> Result<(), RuntimeError>;
    /// Log lines from cursor `since` (0 = the oldest kept), at most `max`.
    fn logs(&self, id: &str, since: u64, max: usize) -> Result<LogChunk, RuntimeError>;
    /// The ids the runtime holds (prepared or running).
    fn tasks(&self) -> Vec<String>;
    /// What the runtime could not do as asked for this task without failing
    /// it (limits that could not be applied, for example). Empty by default.
    fn warnings(&self, id: &str) -> Vec<String> {
        let _ = id;
        Vec::new()
    }
    /// True when the task's interfaces come from a network plugin when it
    /// starts (a Docker container on a shoal network), so the caller must
    /// not make TAP devices for it. False by default.
    fn plugin_networking(&self, id: &str) -> bool {
        let _ = id;
        false
    }
}

/// Checks a task id is `[a-z0-9]{1,64}`, so it is safe in paths.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc123").is_ok());
        assert!(validate_id(&"a".repeat(64)).is_ok());
        for bad in ["", "../x", "ABC", "a b", "a/b", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}
