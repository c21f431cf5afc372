//! Running short commands with a time limit.
//!
//! The topology is made with `ip`, and tests run `ping` and friends through
//! [`crate::Namespace::output`]. A command that never ends (a ping without `-c`,
//! a program waiting on a peer that is gone) must fail the test, not hang the
//! suite, so every command run to completion here has a deadline and is killed
//! when it passes it.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::TopologyError;

/// How long a command run to completion may take unless the caller says
/// otherwise.
pub const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(30);

/// A command line as a person would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion within `limit`, feeding it `input` on stdin, and
/// fails with its stderr when it exits unsuccessfully.
pub(crate) fn run_checked(
    cmd: &mut Command,
    input: Option<&[u8]>,
    limit: Duration,
) -> Result<Output, TopologyError> {
    let mut command = describe(cmd);
    if let Some(input) = input {
        let lines = String::from_utf8_lossy(input);
        let lines: Vec<&str> = lines.lines().collect();
        command = format!("{command} <<< '{}'", lines.join("; "));
    }
    let output = run_bounded(cmd, &command, input, limit)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TopologyError::from_failure(
            command,
            output.status.to_string(),
            &output.stderr,
        ))
    }
}

/// Runs `cmd` to completion within `limit` and returns what it wrote, whatever
/// its exit status.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    command: &str,
    input: Option<&[u8]>,
    limit: Duration,
) -> Result<Output, TopologyError> {
    let deadline = Instant::now() + limit;
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| TopologyError::Spawn {
        command: command.to_string(),
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Our inputs are a few lines of `ip -batch`, far below a pipe's capacity,
        // so this write cannot block. A child that exits without reading makes it
        // fail with EPIPE, and its exit status tells the rest.
        let _ = stdin.write_all(input);
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_until(&mut child, deadline).map_err(|source| TopologyError::Wait {
        command: command.to_string(),
        source,
    })?
    else {
        let _ = child.kill();
        let _ = wait_until(&mut child, Instant::now() + Duration::from_secs(2));
        return Err(TopologyError::TimedOut {
            command: command.to_string(),
            limit,
        });
    };
    // A grandchild may still hold the pipes open; do not wait for it for long.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left.max(Duration::from_millis(200)))
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Reads a pipe to its end on a thread of its own; the bytes arrive on the
/// returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    match pipe {
        Some(mut pipe) => {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        None => {
            let _ = tx.send(Vec::new());
        }
    }
    rx
}

/// Polls `child` until it exits or `deadline` passes; `None` on the deadline.
pub(crate) fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_command_line() {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", "shl1x0b0", "link", "show"]);
        assert_eq!(describe(&cmd), "ip -n shl1x0b0 link show");
    }

    #[test]
    fn output_and_input_are_passed_through() {
        let out = run_checked(
            &mut Command::new("cat"),
            Some(b"hello\n"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, b"hello\n");
    }

    #[test]
    fn failure_carries_stderr() {
        let err = run_checked(
            Command::new("sh").args(["-c", "echo broken >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("broken"), "{msg}");
        assert!(msg.contains('3'), "{msg}");
    }

    #[test]
    fn a_command_past_its_limit_is_killed() {
        let start = Instant::now();
        let err = run_checked(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, TopologyError::TimedOut { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_says_so() {
        let err = run_checked(
            &mut Command::new("shoal-no-such-program"),
            None,
            Duration::from_secs(10),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("is `shoal-no-such-program` installed"),
            "{msg}"
        );
    }
}
