//! The runtime's errors: each names the task and the step that failed.

use std::io;
use std::path::PathBuf;

/// A runtime operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The id is not `[a-z0-9]{1,64}`.
    #[error("task id {id:?} is not valid: expected 1 to 64 lower-case letters and digits")]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// The spec is refused before anything is created.
    #[error("task {task}: invalid spec: {field}: {reason}")]
    InvalidSpec {
        /// The task's name.
        task: String,
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No task with this id was prepared (or it was removed).
    #[error("task {id}: not known to the runtime (prepare it first)")]
    UnknownTask {
        /// The id given.
        id: String,
    },
    /// `start` on a task that was already started.
    #[error("task {task}: already started (a task runs once; the orchestrator makes a new one)")]
    AlreadyStarted {
        /// The task's name.
        task: String,
    },
    /// An operation that needs a started task.
    #[error("task {task}: not started")]
    NotStarted {
        /// The task's name.
        task: String,
    },
    /// `remove_logs` while the task is still held.
    #[error("task {task}: still held by the runtime; remove it before removing its logs")]
    StillHeld {
        /// The task's name.
        task: String,
    },
    /// The command's program is not in the task's `PATH` (Docker's words).
    #[error("task {task}: starting container failed: exec: {program:?}: executable file not found in $PATH")]
    NotFound {
        /// The task's name.
        task: String,
        /// `argv[0]`.
        program: String,
    },
    /// A step of preparing, starting, stopping or cleaning up failed.
    #[error("task {task}: cannot {step}: {source}")]
    Step {
        /// The task's name (or id when the name is not known).
        task: String,
        /// What was attempted ("create network namespace").
        step: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The state directory cannot be used.
    #[error("runtime state directory {path}: cannot {step}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What was attempted.
        step: &'static str,
        /// The underlying error.
        source: io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn step(task: &str, step: impl Into<String>, source: io::Error) -> Self {
        Self::Step {
            task: task.to_string(),
            step: step.into(),
            source,
        }
    }
}
