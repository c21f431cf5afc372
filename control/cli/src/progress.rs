//! Docker's convergence progress for `service create` and `service scale`
//! (and `service update`): the command returns once every task of the
//! service runs and stays up for [`STABLE_FOR`], showing each task's state
//! as a bar on the way.
//!
//! The pure part ([`frame`], [`Watch`], [`Screen`]) turns the polled views
//! and the time elapsed into lines and bytes, so the tests need no swarm
//! and no clock; [`wait_converged`] only polls, sleeps and writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::{ServiceMode, Task, TaskState};
use shoal_manager::views::{short_id, ServiceView, TaskView};

use crate::swarm::op;

/// How often the driver asks for the service and its tasks.
pub const POLL_EVERY: Duration = Duration::from_millis(300);
/// How long every task must stay running before the service counts as
/// converged (Docker waits 5 s; a shorter wait keeps the CLI quick).
pub const STABLE_FOR: Duration = Duration::from_secs(1);
/// After this long without converging, the lines say why (status messages)
/// and a note says the command keeps waiting.
pub const STALLED_AFTER: Duration = Duration::from_secs(120);
/// The bar's width, in `=`, of a running task (Docker's).
pub const BAR_WIDTH: usize = 50;
/// Above this many replicas only the overall line is shown (Docker's).
pub const MAX_BARS: u64 = 100;
/// The longest state shown with a bar ("preparing"): the bars line up.
const STATE_WIDTH: usize = 9;
/// Errors are cut to this many characters so a line fits a terminal.
const MAX_ERR: usize = 75;

/// Which tasks are the service's present ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// Only tasks made from the service's present version (`create`,
    /// `update`): older ones are history or being replaced.
    Version,
    /// Tasks of any version (`scale`): a new replica count does not make
    /// the running tasks stale, but the manager still bumps the version.
    AnyVersion,
}

/// What one poll shows: the overall line and one line per slot or node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `overall progress: 2 out of 3 tasks`.
    pub overall: String,
    /// `1/3: running   [===...>]` or `abcdef012345: pending   [======> ...]`.
    pub tasks: Vec<String>,
    /// Slots (or nodes) whose task runs.
    pub running: u64,
    /// Slots (or nodes) that should have a running task.
    pub expected: u64,
}

impl Frame {
    /// Whether every expected task runs.
    pub fn all_running(&self) -> bool {
        self.running >= self.expected
    }
}

/// How far along `state` is, out of 8 (running), in Swarm's order.
fn step(state: TaskState) -> usize {
    match state {
        TaskState::New => 1,
        TaskState::Pending => 2,
        TaskState::Assigned => 3,
        TaskState::Accepted => 4,
        TaskState::Preparing => 5,
        TaskState::Ready => 6,
        TaskState::Starting => 7,
        _ => 8,
    }
}

/// How many `=` the bar of a task in `state` has (Docker's arithmetic:
/// percent, halved).
pub fn bar_width(state: TaskState) -> usize {
    step(state) * 100 / 8 * BAR_WIDTH / 100
}

/// `running   [=====>]`: the state, padded, and its bar.
pub fn progress(state: TaskState) -> String {
    let n = bar_width(state);
    format!(
        "{:<STATE_WIDTH$} [{}>{}]",
        word(state),
        "=".repeat(n),
        " ".repeat(BAR_WIDTH - n)
    )
}

fn word(state: TaskState) -> String {
    state.title().to_lowercase()
}

/// An error on one line, cut to [`MAX_ERR`] characters.
fn one_line(err: &str) -> String {
    let err = err.replace('\n', " ");
    if err.chars().count() > MAX_ERR {
        let mut cut: String = err.chars().take(MAX_ERR - 1).collect();
        cut.push('…');
        cut
    } else {
        err
    }
}

/// The text after `key: ` for one slot (or node), and whether it runs.
fn slot_text(tasks: &[&Task], stalled: bool) -> (String, bool) {
    // The task that should run: a running one if any, else the newest.
    let wanted = tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running)
        .max_by_key(|t| (t.status.state == TaskState::Running, t.created_at));
    // Without one (its restart policy gave up), the newest says why.
    let Some(t) = wanted.or_else(|| tasks.iter().max_by_key(|t| t.created_at)) else {
        return (progress(TaskState::New), false);
    };
    let running = wanted.is_some() && t.status.state == TaskState::Running;
    let text = if running {
        progress(TaskState::Running)
    } else if let Some(err) = t.status.err.as_deref().filter(|e| !e.is_empty()) {
        one_line(err)
    } else if t.status.state.is_terminal() {
        match t.status.exit_code {
            Some(code) => format!("{} (exit code {code})", word(t.status.state)),
            None => word(t.status.state),
        }
    } else if stalled && !t.status.message.is_empty() {
        format!(
            "{} {}",
            progress(t.status.state),
            one_line(&t.status.message)
        )
    } else {
        progress(t.status.state)
    };
    (text, running)
}

/// The lines for `view` and its `tasks`. `stalled`: the service has not
/// converged for [`STALLED_AFTER`], so waiting tasks show their status
/// message too.
pub fn frame(view: &ServiceView, tasks: &[TaskView], current: Current, stalled: bool) -> Frame {
    let service = &view.service;
    let ours = tasks.iter().map(|t| &t.task).filter(|t| {
        t.service_id == service.id && (current == Current::AnyVersion || !service.is_outdated(t))
    });
    let (mut running, mut lines) = (0, Vec::new());
    let expected = match service.spec.mode {
        ServiceMode::Replicated { replicas } => {
            let mut by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
            for t in ours {
                if let Some(slot) = t.slot.filter(|s| (1..=replicas).contains(s)) {
                    by_slot.entry(slot).or_default().push(t);
                }
            }
            for tasks in by_slot.values() {
                running += u64::from(slot_text(tasks, stalled).1);
            }
            if replicas <= MAX_BARS {
                for slot in 1..=replicas {
                    let tasks = by_slot.get(&slot).map_or(&[][..], Vec::as_slice);
                    let (text, _) = slot_text(tasks, stalled);
                    lines.push(format!("{slot}/{replicas}: {text}"));
                }
            }
            replicas
        }
        ServiceMode::Global => {
            // A node counts while it has a task that should run, or one
            // that finished for good (it will not run again, and says why).
            let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
            for t in ours.filter(|t| {
                t.slot.is_none()
                    && matches!(t.desired_state, TaskState::Running | TaskState::Complete)
            }) {
                if let Some(node) = t.node_id.as_deref() {
                    by_node.entry(node).or_default().push(t);
                }
            }
            let show = by_node.len() as u64 <= MAX_BARS;
            for (node, tasks) in &by_node {
                let (text, up) = slot_text(tasks, stalled);
                running += u64::from(up);
                if show {
                    lines.push(format!("{}: {text}", short_id(node, false)));
                }
            }
            by_node.len() as u64
        }
    };
    Frame {
        overall: format!("overall progress: {running} out of {expected} tasks"),
        tasks: lines,
        running,
        expected,
    }
}

fn seconds(d: Duration) -> String {
    match d.as_secs() {
        1 => "1 second".into(),
        n => format!("{n} seconds"),
    }
}

/// What one poll gives: the lines to show, and whether the wait is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The overall line, the task lines and perhaps a `verify:` line.
    pub lines: Vec<String>,
    /// The service converged.
    pub done: bool,
}

/// The wait for one service: when every task ran since, and whether one
/// failed while being verified.
#[derive(Debug, Clone)]
pub struct Watch {
    current: Current,
    stable_since: Option<Duration>,
    failed: bool,
}

impl Watch {
    /// A wait that counts the `current` tasks.
    pub fn new(current: Current) -> Self {
        Watch {
            current,
            stable_since: None,
            failed: false,
        }
    }

    /// One poll, `elapsed` after the wait began.
    pub fn step(&mut self, view: &ServiceView, tasks: &[TaskView], elapsed: Duration) -> Step {
        let stalled = elapsed >= STALLED_AFTER;
        let f = frame(view, tasks, self.current, stalled);
        // A rolling update is over when the managers say so: each new task
        // must also outlive the update's monitor period.
        let update = view.service.update_status.as_ref();
        let updating = update.is_some_and(|u| u.state.in_progress());
        let paused = update.filter(|u| u.state.is_paused());
        let all_running = f.all_running() && !updating;
        let mut lines = vec![f.overall];
        lines.extend(f.tasks);
        let mut done = false;
        if let Some(u) = paused {
            lines.push(format!("verify: {}", u.message));
            done = true;
        } else if all_running {
            let since = *self.stable_since.get_or_insert(elapsed);
            if elapsed.saturating_sub(since) >= STABLE_FOR {
                lines.push("verify: Service converged".into());
                done = true;
            } else {
                lines.push(format!(
                    "verify: Waiting {} to verify that tasks are stable...",
                    seconds(STABLE_FOR)
                ));
            }
        } else {
            self.failed |= self.stable_since.take().is_some();
            if stalled {
                lines.push(format!(
                    "verify: Not converged after {}; still waiting (Ctrl-C leaves the service as it is)",
                    seconds(STALLED_AFTER)
                ));
            } else if self.failed {
                lines.push("verify: Detected task failure".into());
            }
        }
        Step { lines, done }
    }
}

/// Draws the lines: on a terminal the block is redrawn in place; otherwise
/// each line is printed when it changes (keyed by what is before `: `).
#[derive(Debug, Clone, Default)]
pub struct Screen {
    tty: bool,
    drawn: Vec<String>,
}

impl Screen {
    /// A screen on a terminal (`tty`) or on a pipe or file.
    pub fn new(tty: bool) -> Self {
        Screen {
            tty,
            drawn: Vec::new(),
        }
    }

    /// Shows `lines`, writing only what changed since the last call.
    pub fn draw(&mut self, lines: &[String], out: &mut dyn Write) -> std::io::Result<()> {
        if self.tty {
            if lines == self.drawn.get(..lines.len()).unwrap_or_default()
                && self.drawn[lines.len()..].iter().all(String::is_empty)
            {
                return Ok(());
            }
            if !self.drawn.is_empty() {
                write!(out, "\x1b[{}A", self.drawn.len())?;
            }
            // Never fewer lines than before: a shorter block clears the rest.
            let n = lines.len().max(self.drawn.len());
            let mut now = lines.to_vec();
            now.resize(n, String::new());
            for line in &now {
                writeln!(out, "\x1b[2K{line}")?;
            }
            self.drawn = now;
        } else {
            let key = |l: &str| l.split_once(": ").map_or(l, |(k, _)| k).to_string();
            let before: BTreeMap<String, &String> =
                self.drawn.iter().map(|l| (key(l), l)).collect();
            for line in lines {
                if before.get(&key(line)) != Some(&line) {
                    writeln!(out, "{line}")?;
                }
            }
            self.drawn = lines.to_vec();
        }
        out.flush()
    }
}

/// Polls service `key` every [`POLL_EVERY`] and draws its progress on `out`
/// until it converges. Ctrl-C stops the wait and leaves the service as it is.
pub(crate) fn wait(
    control: &Path,
    key: &str,
    current: Current,
    out: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut watch = Watch::new(current);
    let mut screen = Screen::new(tty);
    let waiting = || {
        format!(
            "while waiting for service {key} to converge (it exists: `shoal service ps {key}` shows its tasks)"
        )
    };
    loop {
        let OpReply::Service(view) =
            op(control, &Op::Service { key: key.into() }).with_context(waiting)?
        else {
            bail!("shoald sent an unexpected answer {}", waiting());
        };
        let OpReply::Tasks(tasks) = op(
            control,
            &Op::Tasks {
                service: Some(view.service.id.clone()),
                node: None,
            },
        )
        .with_context(waiting)?
        else {
            bail!("shoald sent an unexpected answer {}", waiting());
        };
        let step = watch.step(&view, &tasks, start.elapsed());
        screen.draw(&step.lines, out)?;
        if step.done {
            if let Some(u) = view
                .service
                .update_status
                .as_ref()
                .filter(|u| u.state.is_paused())
            {
                bail!("service {key}: {}", u.message);
            }
            return Ok(());
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits, showing progress on `out`, until every task made from the present
/// version of service `service_id` (id, name or prefix) runs and stays up
/// for [`STABLE_FOR`].
pub(crate) fn wait_converged(
    control: &Path,
    service_id: &str,
    out: &mut dyn Write,
    tty: bool,
) -> anyhow::Result<()> {
    wait(control, service_id, Current::Version, out, tty)
}

/// [`wait_converged`] on stdout, redrawing in place when it is a terminal.
pub(crate) fn wait_on_stdout(control: &Path, key: &str, current: Current) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut out = std::io::stdout();
    let tty = out.is_terminal();
    match current {
        Current::Version => wait_converged(control, key, &mut out, tty),
        Current::AnyVersion => wait(control, key, current, &mut out, tty),
    }
}

#[cfg(test)]
mod tests;
