//! The crate's one error type.
//!
//! Topologies are built by shelling out to `ip`, so most failures are a command
//! that exited non-zero. The error names the command line and carries its stderr,
//! because that is what a person needs to reproduce it by hand; and since the most
//! common cause by far is running the suites without privileges, refusals are
//! told apart and say so.

use std::time::Duration;

use shoal_sys::netns::NetNsError;

/// What the suites need, said wherever a refusal is reported.
const NEEDS_ROOT: &str = "the namespace suites need root (CAP_NET_ADMIN, and \
CAP_SYS_ADMIN to create namespaces): run them as root, for example through scripts/test";

/// Errors from building, using and tearing down topologies.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended (exit code or signal).
        status: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A command was refused for lack of privileges (EPERM, EACCES).
    #[error("`{command}` was refused: {stderr}; {NEEDS_ROOT}")]
    PermissionDenied {
        /// The command line.
        command: String,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A program could not be started at all.
    #[error("cannot start `{command}`: {source} (is `{program}` installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The program that was looked up.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command ran past its time limit; it was killed.
    #[error("`{command}` did not finish within {limit:?} and was killed; is it waiting for input or on a peer that never answers?")]
    TimedOut {
        /// The command line.
        command: String,
        /// The limit it ran past.
        limit: Duration,
    },
    /// Waiting for a child process failed.
    #[error("cannot wait for `{command}`: {source}")]
    Wait {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A child did not exit even after SIGKILL.
    #[error("`{command}` (pid {pid}) did not exit even after SIGKILL; it may be stuck in the kernel (state D in /proc/{pid}/stat)")]
    Unkillable {
        /// The command line.
        command: String,
        /// Its process id.
        pid: u32,
    },
    /// Opening or entering a namespace failed.
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    /// The builder was given something the address plan cannot hold.
    #[error("invalid topology: `{field}` {problem}")]
    InvalidConfig {
        /// The builder setting at fault.
        field: &'static str,
        /// What is wrong with it and what is allowed.
        problem: String,
    },
    /// [`crate::Namespace::output`] was given no program.
    #[error("no program given to run in network namespace {name}: argv starts with the program")]
    EmptyCommand {
        /// The namespace's name.
        name: String,
    },
    /// A sysctl inside a namespace could not be set.
    #[error("cannot set a sysctl inside network namespace {namespace}: {source} (is /proc mounted and writable?)")]
    Sysctl {
        /// The namespace's path.
        namespace: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A namespace with a fixed name ([`crate::TopologyBuilder::fixed_names`])
    /// exists already.
    #[error("network namespace {name} exists already; remove what left it (for a lab: `shoal lab down`) or pick another name")]
    Exists {
        /// The namespace's name.
        name: String,
    },
    /// A namespace handle was used after its topology removed the namespace.
    #[error("network namespace {name} was removed with its topology; keep the Topology alive while its namespaces are in use")]
    Removed {
        /// The namespace's name.
        name: String,
    },
}

impl TopologyError {
    /// The error for a command that exited unsuccessfully: a refusal when stderr
    /// reads like EPERM or EACCES, a plain failure otherwise.
    pub(crate) fn from_failure(command: String, status: String, stderr: &[u8]) -> Self {
        let stderr = String::from_utf8_lossy(stderr).trim().to_string();
        if looks_like_refusal(&stderr) {
            TopologyError::PermissionDenied { command, stderr }
        } else {
            TopologyError::Command {
                command,
                status,
                stderr,
            }
        }
    }

    /// True when the error is a refusal for lack of privileges.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            TopologyError::PermissionDenied { .. } => true,
            TopologyError::Spawn { source, .. } | TopologyError::Sysctl { source, .. } => {
                source.kind() == std::io::ErrorKind::PermissionDenied
            }
            TopologyError::NetNs(NetNsError::Enter { source, .. }) => {
                source.kind() == std::io::ErrorKind::PermissionDenied
            }
            _ => false,
        }
    }
}

/// Whether a command's stderr reports EPERM or EACCES (as `ip` and the kernel
/// word them).
fn looks_like_refusal(stderr: &str) -> bool {
    let lower = stderr.to_ascii_lowercase();
    [
        "operation not permitted",
        "permission denied",
        "must be root",
        "are you root",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_says_what_the_suites_need() {
        let err = TopologyError::from_failure(
            "ip netns add shl1x0b0".into(),
            "exit status: 1".into(),
            b"mount --make-shared /run/netns failed: Operation not permitted\n",
        );
        assert!(err.is_permission_denied());
        let msg = err.to_string();
        for needle in [
            "ip netns add shl1x0b0",
            "Operation not permitted",
            "root",
            "CAP_NET_ADMIN",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[test]
    fn other_failures_carry_command_status_and_stderr() {
        let err = TopologyError::from_failure(
            "ip link set nosuch up".into(),
            "exit status: 1".into(),
            b"Cannot find device \"nosuch\"\n",
        );
        assert!(!err.is_permission_denied());
        let msg = err.to_string();
        assert!(msg.contains("ip link set nosuch up"), "{msg}");
        assert!(msg.contains("exit status: 1"), "{msg}");
        assert!(msg.ends_with("Cannot find device \"nosuch\""), "{msg}");
        assert!(!msg.contains("root"), "{msg}");
    }
}
