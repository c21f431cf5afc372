//! Removing namespaces left behind by runs that crashed.
//!
//! `Drop` cleans up after a failing test, but not after a process that was
//! killed (SIGKILL, a timeout in CI, an abort). Its namespaces, veths and
//! bridges would pile up and its leftover daemons keep running. Our names start
//! with the creating pid, so a namespace whose pid no longer exists is certainly
//! an orphan; one whose pid is alive is left alone even if that pid now belongs
//! to an unrelated process, because a leftover is harmless and a wrong removal
//! is not. Names that do not parse exactly (see [`NsName::parse`]) are never
//! touched.
//!
//! Assumes `/proc` and `/var/run/netns` belong to the same pid namespace (a host,
//! or one container), as they do wherever the suites run.

use std::path::Path;

use shoal_sys::netns::NETNS_RUN_DIR;

use crate::child::log;
use crate::name::NsName;
use crate::namespace;

/// Removes every namespace named `shl<pid>x...` whose pid is no longer alive and
/// returns how many it removed. Never fails: problems are written to stderr.
///
/// [`crate::TopologyBuilder::build`] calls it first.
pub fn sweep_stale() -> usize {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        // Without /proc every pid would look dead; touch nothing.
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(parsed) = NsName::parse(name) else {
            continue;
        };
        if !is_stale(parsed, me, |pid| proc_root.join(pid.to_string()).exists()) {
            continue;
        }
        match namespace::remove(name) {
            Ok(()) => removed += 1,
            // Another process sweeping at the same time may have got there first.
            Err(_) if !entry.path().exists() => {}
            Err(e) => log(format_args!(
                "cannot remove stale network namespace {name}: {e}"
            )),
        }
    }
    removed
}

/// Whether a namespace of ours named `name` is an orphan: made by a process
/// other than `me` that `alive` says is gone. (Our own namespaces are never
/// swept; a name of ours that outlived an earlier process with our pid is taken
/// care of when the name comes up again.)
fn is_stale(name: NsName, me: u32, alive: impl Fn(u32) -> bool) -> bool {
    name.pid != me && !alive(name.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> NsName {
        NsName::parse(name).unwrap()
    }

    #[test]
    fn only_dead_pids_other_than_ours_are_stale() {
        let alive = |pid: u32| pid == 100 || pid == 200;
        assert!(is_stale(parse("shl300x0n0"), 200, alive));
        assert!(!is_stale(parse("shl100x4c1"), 200, alive));
        assert!(!is_stale(parse("shl200x0b0"), 200, alive));
        // Even if /proc claimed we were dead, our own names stay.
        assert!(!is_stale(parse("shl200x0b0"), 200, |_| false));
    }
}
