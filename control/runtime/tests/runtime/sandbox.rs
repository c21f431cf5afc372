//! What a task sees: hostname, resolv.conf, its own network namespace, its
//! environment, and how a command that cannot run is reported.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use shoal_runtime::{Runtime, Stream, DEFAULT_PATH};

use crate::fixture::Fixture;

#[test]
fn task_sees_its_hostname_resolv_conf_and_only_lo() {
    let f = Fixture::new();
    let spec = f.spec(&[
        "sh",
        "-c",
        "hostname; cat /etc/resolv.conf; ip -o link; echo err >&2; exit 3",
    ]);
    f.run(&spec);
    let exit = f.wait(&spec.id);
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);

    let lines = f.lines(&spec.id);
    let out = f.stdout(&spec.id);
    assert_eq!(out[0], spec.hostname, "{lines:?}");
    assert_eq!(
        out[1..3],
        ["nameserver 127.0.0.11", "options ndots:0"],
        "{lines:?}"
    );
    let links = &out[3..];
    assert_eq!(links.len(), 1, "only lo in the task's namespace: {links:?}");
    assert!(links[0].starts_with("1: lo:"), "{links:?}");
    assert!(links[0].contains("UP"), "lo is up: {links:?}");
    let err: Vec<_> = lines
        .iter()
        .filter(|l| l.stream == Stream::Stderr)
        .collect();
    assert_eq!(err.len(), 1, "{lines:?}");
    assert_eq!(err[0].line, "err");
    assert!(err[0].time_ns > 1_600_000_000_000_000_000);

    // The daemon's own hostname and resolv.conf are untouched.
    let ours = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(ours.trim(), spec.hostname);
}

#[test]
fn environment_is_the_specs_alone() {
    let f = Fixture::new();
    let mut spec = f.spec(&["env"]);
    spec.env = vec![
        ("TASK_NAME".into(), spec.name.clone()),
        ("SLOT".into(), "1".into()),
        ("SPACED".into(), "a b  c".into()),
    ];
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);
    let got: BTreeSet<String> = f.stdout(&spec.id).into_iter().collect();
    let want: BTreeSet<String> = [
        format!("TASK_NAME={}", spec.name),
        "SLOT=1".into(),
        "SPACED=a b  c".into(),
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", spec.hostname),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "nothing of the daemon's environment leaks in");
}

#[test]
fn spec_path_and_hostname_are_kept() {
    let f = Fixture::new();
    let mut spec = f.spec(&["env"]);
    spec.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("HOSTNAME".into(), "given".into()),
    ];
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);
    let mut got = f.stdout(&spec.id);
    got.sort();
    assert_eq!(got, ["HOSTNAME=given", "PATH=/usr/bin:/bin"]);
}

#[test]
fn missing_executable_is_an_error_naming_it() {
    let f = Fixture::new();
    let spec = f.spec(&["shoal-no-such-command", "x"]);
    f.rt().prepare(&spec).expect("prepare");
    let err = f.rt().start(&spec.id).unwrap_err().to_string();
    assert!(err.contains("shoal-no-such-command"), "{err}");
    assert!(err.contains("executable file not found in $PATH"), "{err}");
    assert!(err.contains(&spec.name), "{err}");

    // A file that exists but is not executable: exec's own answer, named.
    let plain = f.dir.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let spec = f.spec(&[plain.to_str().unwrap()]);
    f.rt().prepare(&spec).expect("prepare");
    let err = f.rt().start(&spec.id).unwrap_err().to_string();
    assert!(err.contains("not-executable"), "{err}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
}

#[test]
fn invalid_specs_are_refused_naming_the_field() {
    let f = Fixture::new();
    let mut spec = f.spec(&[]);
    let err = f.rt().prepare(&spec).unwrap_err().to_string();
    assert!(err.contains("command"), "{err}");
    spec.command = vec!["true".into()];
    spec.id = "../etc".into();
    let err = f.rt().prepare(&spec).unwrap_err().to_string();
    assert!(err.contains("not valid"), "{err}");
    assert!(f.rt().tasks().is_empty());
}
