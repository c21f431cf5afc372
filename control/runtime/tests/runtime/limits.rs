//! cgroup v2: the task's cgroup and its limits, where the host has them.

use std::path::{Path, PathBuf};

use shoal_runtime::Runtime;

use crate::fixture::{exists, Fixture};

/// The task's cgroup directory from `/proc/<pid>/cgroup`, on a cgroup2 or a
/// hybrid host.
fn cgroup_dir(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(Path::new)
        .find(|b| b.join("cgroup.controllers").exists())
        .map(|b| b.join(rel.trim_start_matches('/')))
}

#[test]
fn task_joins_its_own_cgroup() {
    let f = Fixture::new();
    if let Some(reason) = f.rt().cgroup_unavailable() {
        println!("skipped: no cgroup v2 for tasks here: {reason}");
        return;
    }
    let spec = f.spec(&["sleep", "60"]);
    let pid = f.run(&spec);
    let dir = cgroup_dir(pid).expect("task's cgroup");
    assert!(dir.ends_with(&spec.id), "{dir:?}");
    f.rt().remove(&spec.id).unwrap();
    assert!(!exists(&dir), "the cgroup is removed with the task");
}

#[test]
fn memory_limit_is_applied_with_cgroup_v2() {
    let f = Fixture::new();
    if let Some(reason) = f.rt().cgroup_unavailable() {
        println!("skipped: no cgroup v2 for tasks here: {reason}");
        return;
    }
    let mut spec = f.spec(&["sleep", "60"]);
    spec.limits.memory_bytes = Some(64 << 20);
    spec.limits.nano_cpus = Some(500_000_000);
    let pid = f.run(&spec);
    let warnings = f.rt().warnings(&spec.id);
    if warnings.iter().any(|w| w.contains("memory")) {
        println!("skipped: memory controller not usable here: {warnings:?}");
        return;
    }
    let dir = cgroup_dir(pid).expect("task's cgroup");
    let max = std::fs::read_to_string(dir.join("memory.max")).unwrap();
    assert_eq!(max.trim(), (64u64 << 20).to_string());
    if !warnings.iter().any(|w| w.contains("CPU")) {
        let cpu = std::fs::read_to_string(dir.join("cpu.max")).unwrap();
        assert_eq!(cpu.trim(), "50000 100000");
    }
}

#[test]
fn limits_that_cannot_apply_are_warnings_not_failures() {
    let f = Fixture::with(|c| c.cgroup_root = Some(std::env::temp_dir()));
    assert!(f.rt().cgroup_unavailable().is_some());
    let mut spec = f.spec(&["true"]);
    spec.limits.memory_bytes = Some(64 << 20);
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);
    let warnings = f.rt().warnings(&spec.id);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("limits not applied"), "{warnings:?}");

    // Without limits there is nothing to warn about.
    let spec = f.spec(&["true"]);
    f.run(&spec);
    assert!(f.rt().warnings(&spec.id).is_empty());
}
