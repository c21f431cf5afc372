//! The lab's daemons as processes: is this pid still our daemon, what did it
//! start, and stopping them, through `/proc` and `kill(2)`.
//!
//! The daemons are not our children (`lab up` has exited by the time `lab
//! down` runs), so a recorded pid may have been reused. A pid is only
//! signalled while its command line still names the node's API socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_sys::sandbox;

/// What `/proc/<pid>/stat` says that we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid.
    pub ppid: u32,
    /// The state letter (`Z` for a zombie).
    pub state: char,
    /// The process group.
    pub pgrp: u32,
    /// When it started (clock ticks since boot): tells a reused pid apart.
    pub start: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... starttime(22).
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is alive and is the daemon serving `control`.
pub fn is_daemon(pid: u32, control: &Path) -> bool {
    if stat(pid).is_none_or(|s| s.state == 'Z') {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let control = control.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == control)
}

/// Every process descending from `roots` (not the roots), with its stat.
pub fn descendants(roots: &[u32]) -> Vec<(u32, Stat)> {
    let mut children: BTreeMap<u32, Vec<(u32, Stat)>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(s) = stat(pid) {
                children.entry(s.ppid).or_default().push((pid, s));
            }
        }
    }
    let mut out = Vec::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(parent) = todo.pop() {
        for &(pid, s) in children.get(&parent).map_or(&[][..], Vec::as_slice) {
            out.push((pid, s));
            todo.push(pid);
        }
    }
    out
}

/// SIGTERM to every daemon, up to `grace` for them to exit, then SIGKILL to
/// those left. Returns the pids that had to be killed.
pub fn stop_daemons(daemons: &[(u32, &Path)], grace: Duration) -> Vec<u32> {
    let running = |&&(pid, control): &&(u32, &Path)| is_daemon(pid, control);
    for &(pid, _) in daemons.iter().filter(running) {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while daemons.iter().any(|d| running(&d)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stubborn: Vec<u32> = daemons.iter().filter(running).map(|d| d.0).collect();
    for &pid in &stubborn {
        signal(pid, libc::SIGKILL);
    }
    stubborn
}

/// SIGKILL to each process (and to its group when it leads one: a task's
/// group holds what it started) that is still the one recorded.
pub fn kill_all(procs: &[(u32, Stat)]) {
    for &(pid, recorded) in procs {
        if stat(pid).is_some_and(|s| s.start == recorded.start && s.state != 'Z') {
            if recorded.pgrp == pid {
                let _ = sandbox::kill_group(pid_i32(pid), libc::SIGKILL);
            } else {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: i32) {
    let _ = sandbox::kill(pid_i32(pid), sig);
}

fn pid_i32(pid: u32) -> i32 {
    // Linux pids fit in 22 bits; an impossible one is refused by kill's checks.
    i32::try_from(pid).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let text =
            "4242 (shoald (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 1,
                state: 'S',
                pgrp: 4242,
                start: 987654
            })
        );
        assert_eq!(parse_stat("1 (init) S"), None);
    }

    #[test]
    fn we_are_not_a_daemon_but_our_stat_reads() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(!is_daemon(me, Path::new("/nonexistent/shoald.sock")));
    }
}
