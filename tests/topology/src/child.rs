//! Processes started in a topology's namespaces, and how they are stopped.
//!
//! A daemon left running after a test keeps its namespace alive (removing the
//! name only unmounts it), keeps its sockets bound and may outlive the test run.
//! So every process started through [`crate::Namespace::spawn`] is stopped twice
//! over: when its [`ManagedChild`] is dropped, and, for handles that are still
//! alive then, when the topology is dropped, before the namespaces go.
//!
//! Stopping is SIGTERM, a bounded grace period for the process to flush and exit
//! (tcpdump writing its capture, a daemon removing its socket), then SIGKILL.
//! The child is reaped by us in every case, so its pid cannot be reused while we
//! still signal it. The crate forbids `unsafe`, so SIGTERM is sent with the
//! `kill` program (procps); without it, children get SIGKILL straight away.

use std::io::Write;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::command::{run_bounded, wait_until};
use crate::TopologyError;

/// How long a child has to exit after SIGTERM before it gets SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// How long we wait for a child to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Locks a mutex even if a panicking thread poisoned it: the state behind our
/// mutexes stays consistent at every point a panic could happen.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a line to stderr without ever panicking (`eprintln!` panics when
/// stderr is closed, which must not happen inside `Drop`).
pub(crate) fn log(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "shoal-topology: {message}");
}

/// Where a child stands.
#[derive(Debug)]
enum State {
    /// Started and not reaped yet (it may have exited).
    Running(Child),
    /// Reaped, with this status.
    Exited(ExitStatus),
    /// Waiting for it failed; the error, as text (`io::Error` is not `Clone`).
    Lost(String),
}

/// One child, shared between its [`ManagedChild`] and the topology's registry.
#[derive(Debug)]
pub(crate) struct Slot {
    command: String,
    state: Mutex<State>,
}

/// The children started in one topology's namespaces.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    closed: bool,
    slots: Vec<Weak<Slot>>,
}

impl Registry {
    /// Starts `cmd` and tracks it; refused once the topology is being removed.
    pub(crate) fn spawn(
        &self,
        mut cmd: Command,
        namespace: &str,
    ) -> Result<ManagedChild, TopologyError> {
        let command = crate::command::describe(&cmd);
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Err(TopologyError::Removed {
                name: namespace.to_string(),
            });
        }
        let mut child = cmd.spawn().map_err(|source| TopologyError::Spawn {
            command: command.clone(),
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        let pid = child.id();
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let slot = Arc::new(Slot {
            command,
            state: Mutex::new(State::Running(child)),
        });
        inner.slots.retain(|weak| weak.strong_count() > 0);
        inner.slots.push(Arc::downgrade(&slot));
        Ok(ManagedChild {
            slot,
            pid,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Whether the topology is being, or has been, removed.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.inner).closed
    }

    /// Refuses further spawns and stops every child still running.
    pub(crate) fn close_and_terminate(&self) {
        let slots: Vec<Arc<Slot>> = {
            let mut inner = lock(&self.inner);
            inner.closed = true;
            inner
                .slots
                .drain(..)
                .filter_map(|weak| weak.upgrade())
                .collect()
        };
        terminate(&slots);
    }
}

/// A process started in a namespace of a topology.
///
/// Dropping it stops the process: SIGTERM, up to [`TERMINATE_GRACE`] to exit,
/// then SIGKILL; it is reaped either way. If the topology is dropped first, the
/// topology stops it and this handle only reports what happened.
#[derive(Debug)]
pub struct ManagedChild {
    slot: Arc<Slot>,
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl ManagedChild {
    /// The process id (of the program itself: `ip netns exec` execs it).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.slot.command
    }

    /// Its stdin, if the command asked for a pipe; can be taken once.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Its stdout, if the command asked for a pipe; can be taken once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Its stderr, if the command asked for a pipe; can be taken once.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, TopologyError> {
        self.wait_timeout(Duration::ZERO)
    }

    /// Waits up to `limit` for it to exit; `None` if it is still running then.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>, TopologyError> {
        // Drop our end of stdin first, as `Child::wait` does, so a child reading
        // it to the end can finish.
        self.stdin = None;
        let mut state = lock(&self.slot.state);
        match &mut *state {
            State::Exited(status) => Ok(Some(*status)),
            State::Lost(error) => Err(self.lost(error)),
            State::Running(child) => match wait_until(child, Instant::now() + limit) {
                Ok(Some(status)) => {
                    *state = State::Exited(status);
                    Ok(Some(status))
                }
                Ok(None) => Ok(None),
                Err(source) => {
                    *state = State::Lost(source.to_string());
                    Err(TopologyError::Wait {
                        command: self.slot.command.clone(),
                        source,
                    })
                }
            },
        }
    }

    /// Stops it now (SIGTERM, up to [`TERMINATE_GRACE`], SIGKILL) and returns how
    /// it ended. Stopping one that has already exited just reports its status.
    pub fn kill(&mut self) -> Result<ExitStatus, TopologyError> {
        self.stdin = None;
        terminate(std::slice::from_ref(&self.slot));
        match &*lock(&self.slot.state) {
            State::Exited(status) => Ok(*status),
            State::Lost(error) => Err(self.lost(error)),
            State::Running(_) => Err(TopologyError::Unkillable {
                command: self.slot.command.clone(),
                pid: self.pid,
            }),
        }
    }

    fn lost(&self, error: &str) -> TopologyError {
        TopologyError::Wait {
            command: self.slot.command.clone(),
            source: std::io::Error::other(error.to_string()),
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        // Failures were already written to stderr by `terminate`.
        let _ = self.kill();
    }
}

/// Stops every child in `slots` at once, so that several slow ones share one
/// grace period. Never panics; problems go to stderr.
fn terminate(slots: &[Arc<Slot>]) {
    let mut states: Vec<(&Slot, MutexGuard<'_, State>)> = slots
        .iter()
        .map(|slot| (&**slot, lock(&slot.state)))
        .collect();
    reap_exited(&mut states);
    let pids: Vec<String> = running(&mut states)
        .map(|(_, child)| child.id().to_string())
        .collect();
    if pids.is_empty() {
        return;
    }
    // Every pid here belongs to a child we have not reaped, so none can have been
    // reused by another process.
    let mut kill = Command::new("kill");
    kill.arg("-TERM").arg("--").args(&pids);
    let sent = run_bounded(&mut kill, "kill -TERM", None, Duration::from_secs(5))
        .map(|out| out.status.success())
        .unwrap_or(false);
    if sent {
        let deadline = Instant::now() + TERMINATE_GRACE;
        let mut pause = Duration::from_millis(1);
        while Instant::now() < deadline {
            reap_exited(&mut states);
            if running(&mut states).next().is_none() {
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        reap_exited(&mut states);
    }
    for (slot, child) in running(&mut states) {
        if let Err(e) = child.kill() {
            log(format_args!(
                "cannot SIGKILL `{}` (pid {}): {e}",
                slot.command,
                child.id()
            ));
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    for (slot, state) in &mut states {
        if let State::Running(child) = &mut **state {
            match wait_until(child, deadline) {
                Ok(Some(status)) => **state = State::Exited(status),
                Ok(None) => log(format_args!(
                    "`{}` (pid {}) did not exit within {KILL_WAIT:?} of SIGKILL",
                    slot.command,
                    child.id()
                )),
                Err(e) => {
                    log(format_args!("cannot reap `{}`: {e}", slot.command));
                    **state = State::Lost(e.to_string());
                }
            }
        }
    }
}

/// Reaps the children that have exited.
fn reap_exited(states: &mut [(&Slot, MutexGuard<'_, State>)]) {
    for (slot, state) in states.iter_mut() {
        if let State::Running(child) = &mut **state {
            match child.try_wait() {
                Ok(Some(status)) => **state = State::Exited(status),
                Ok(None) => {}
                Err(e) => {
                    log(format_args!("cannot reap `{}`: {e}", slot.command));
                    **state = State::Lost(e.to_string());
                }
            }
        }
    }
}

/// The children not reaped yet.
fn running<'a, 'g>(
    states: &'a mut [(&'g Slot, MutexGuard<'g, State>)],
) -> impl Iterator<Item = (&'g Slot, &'a mut Child)> + 'a {
    states
        .iter_mut()
        .filter_map(|(slot, state)| match &mut **state {
            State::Running(child) => Some((*slot, child)),
            State::Exited(_) | State::Lost(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn dropping_a_handle_terminates_and_reaps() {
        let registry = Registry::default();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = registry.spawn(cmd, "host").unwrap();
        assert_eq!(child.try_wait().unwrap(), None);
        let status = child.kill().unwrap();
        assert_eq!(status.signal(), Some(15), "{status:?}");
        // Reaped, so asking again gives the same answer.
        assert_eq!(child.try_wait().unwrap(), Some(status));
    }

    #[test]
    fn a_child_ignoring_sigterm_gets_sigkill() {
        let registry = Registry::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; exec sleep 30"]);
        let mut child = registry.spawn(cmd, "host").unwrap();
        // The trap is in place once the shell has exec'd sleep.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(Instant::now() < deadline, "the shell never exec'd sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = child.kill().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[test]
    fn closing_the_registry_stops_live_children_and_refuses_new_ones() {
        let registry = Registry::default();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = registry.spawn(cmd, "host").unwrap();
        registry.close_and_terminate();
        assert!(child.try_wait().unwrap().is_some());
        let mut again = Command::new("sleep");
        again.arg("30");
        let err = registry.spawn(again, "shl1x0n0").unwrap_err();
        assert!(err.to_string().contains("shl1x0n0"), "{err}");
    }

    #[test]
    fn a_finished_child_reports_its_status() {
        let registry = Registry::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 7"]);
        let mut child = registry.spawn(cmd, "host").unwrap();
        let status = child
            .wait_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("exited");
        assert_eq!(status.code(), Some(7));
    }
}
