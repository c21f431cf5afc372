//! Stopping, killing, exits, and freeing the sandbox.

use std::path::PathBuf;
use std::time::Duration;

use shoal_runtime::Runtime;

use crate::fixture::{exists, gone, Fixture};

#[test]
fn stop_ends_a_task_with_sigterm() {
    let f = Fixture::new();
    let spec = f.spec(&["sleep", "60"]);
    f.run(&spec);
    let exit = f
        .rt()
        .stop(&spec.id, Duration::from_secs(10))
        .expect("stop");
    assert_eq!(exit.code, 143);
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    // Stopping again, or waiting, returns the same exit.
    assert_eq!(f.rt().stop(&spec.id, Duration::ZERO).unwrap(), exit);
    assert_eq!(f.rt().try_wait(&spec.id).unwrap(), Some(exit));
}

#[test]
fn stop_kills_a_task_that_ignores_sigterm() {
    let f = Fixture::new();
    let spec = f.spec(&["sh", "-c", "trap '' TERM; echo ready; sleep 60"]);
    f.run(&spec);
    f.wait_for_line(&spec.id, "ready");
    let exit = f
        .rt()
        .stop(&spec.id, Duration::from_millis(200))
        .expect("stop");
    assert_eq!(exit.code, 137);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
}

#[test]
fn stop_kills_the_whole_process_group() {
    let f = Fixture::new();
    // Both shells and the sleep ignore TERM, so only the group SIGKILL ends them.
    let spec = f.spec(&[
        "sh",
        "-c",
        "trap '' TERM; sleep 60 & echo $!; echo ready; wait",
    ]);
    f.run(&spec);
    f.wait_for_line(&spec.id, "ready");
    let child: u32 = f.stdout(&spec.id)[0].parse().expect("child pid");
    assert!(crate::fixture::alive(child));
    let exit = f
        .rt()
        .stop(&spec.id, Duration::from_millis(200))
        .expect("stop");
    assert_eq!(exit.code, 137);
    assert!(gone(child), "the task's child {child} survived stop");
}

#[test]
fn children_die_when_the_task_exits() {
    let f = Fixture::new();
    let spec = f.spec(&["sh", "-c", "sleep 60 & echo $!; exit 0"]);
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);
    let child: u32 = f.stdout(&spec.id)[0].parse().expect("child pid");
    assert!(gone(child), "the task's child {child} outlived it");
}

#[test]
fn sigkill_from_outside_reports_137() {
    let f = Fixture::new();
    let spec = f.spec(&["sleep", "60"]);
    let pid = f.run(&spec);
    assert_eq!(f.rt().try_wait(&spec.id).unwrap(), None);
    assert!(shoal_sys::sandbox::kill(pid as i32, libc::SIGKILL).unwrap());
    let exit = f.wait(&spec.id);
    assert_eq!(exit.code, 137);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(!exit.oom_killed);
}

#[test]
fn prepare_is_idempotent_and_start_runs_once() {
    let f = Fixture::new();
    let spec = f.spec(&["true"]);
    let a = f.rt().prepare(&spec).unwrap();
    let b = f.rt().prepare(&spec).unwrap();
    assert_eq!(a, b);
    assert_eq!(f.rt().tasks(), vec![spec.id.clone()]);
    f.rt().start(&spec.id).unwrap();
    let err = f.rt().start(&spec.id).unwrap_err().to_string();
    assert!(err.contains("already started"), "{err}");
    assert_eq!(f.wait(&spec.id).code, 0);
}

fn netns_link(path: &PathBuf) -> Option<PathBuf> {
    std::fs::read_link(path).ok()
}

#[test]
fn remove_frees_the_namespace_and_the_task() {
    let f = Fixture::new();
    let spec = f.spec(&["sleep", "60"]);
    let path = f.rt().prepare(&spec).unwrap();
    let link = netns_link(&path).expect("namespace path resolves");
    assert!(link.to_string_lossy().starts_with("net:["), "{link:?}");
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(link, ours, "a namespace of its own");
    let pid = f.rt().start(&spec.id).unwrap();
    // The task runs in that namespace.
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(theirs, link);

    f.rt().remove(&spec.id).expect("remove");
    assert!(gone(pid), "remove kills a running task");
    assert_ne!(netns_link(&path), Some(link), "the namespace fd is closed");
    assert!(f.rt().tasks().is_empty());
    assert!(!exists(&f.dir.join(format!("run/{}.resolv.conf", spec.id))));
    // Removing again is fine; other calls say the task is unknown.
    f.rt().remove(&spec.id).expect("remove again");
    let err = f.rt().start(&spec.id).unwrap_err().to_string();
    assert!(err.contains("not known"), "{err}");
}

#[test]
fn dropping_the_runtime_frees_everything() {
    let mut f = Fixture::new();
    let spec = f.spec(&["sleep", "60"]);
    let path = f.rt().prepare(&spec).unwrap();
    let link = netns_link(&path).unwrap();
    let pid = f.rt().start(&spec.id).unwrap();
    drop(f.rt.take());
    assert!(gone(pid));
    assert_ne!(netns_link(&path), Some(link));
}

#[test]
fn a_new_runtime_removes_stale_files() {
    let f = Fixture::new();
    let stale = f.dir.join("run/old.resolv.conf");
    std::fs::write(&stale, "nameserver 1.1.1.1\n").unwrap();
    let again = shoal_runtime::ProcessRuntime::new(f.dir.clone()).unwrap();
    assert!(!exists(&stale));
    drop(again);
}
