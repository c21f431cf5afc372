//! The `shoal` binary as a user runs it.

use std::process::Command;

#[test]
fn doctor_prints_every_check_and_passes_on_this_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "/dev/net/tun and TAP creation",
        "network namespaces",
        "veth and bridge",
        "UDP GSO",
        "UDP GRO",
        "io_uring",
        "kernel VXLAN",
        "port 4789/udp",
        "port 7946/tcp",
        "port 7946/udp",
        "port 2377/tcp",
        "Docker Engine socket",
    ] {
        assert!(text.contains(row), "no row {row:?} in:\n{text}");
    }
    assert!(text.starts_with("CHECK"), "{text}");
    let doctor_ns = format!("shoal-doctor-{}", std::process::id());
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&doctor_ns));
}

#[test]
fn doctor_json_is_machine_readable() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v.as_array().unwrap();
    assert!(checks.len() >= 12);
    assert!(checks
        .iter()
        .all(|c| c["severity"] == "required" || c["severity"] == "optional"));
    let required_ok = checks
        .iter()
        .filter(|c| c["severity"] == "required")
        .all(|c| c["ok"] == true);
    assert_eq!(required_ok, out.status.success());
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "dataplane",
            "keys",
            "blue",
            "--key",
            "nocolon",
            "--tx",
            "1",
            "--control",
            "/nonexistent.sock",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ID:SECRET"));
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["dataplane", "status", "--control", "/nonexistent.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.sock"));
    let out = Command::new(env!("CARGO_BIN_EXE_shoald"))
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}
