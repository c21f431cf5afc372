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
    let out = Command::new(env!("CARGO_BIN_EXE_shoald"))
        .args(["--dataplane-workers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dataplane-workers") && err.contains("1..=16"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_shoald"))
        .args(["--config", "/nonexistent.toml", "--dataplane-workers", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set `workers` under [node]"), "{err}");
}

/// `shoal whoami` answers with who served the request, then the request.
#[test]
fn whoami_names_the_task_node_and_client_it_served() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    use std::time::Duration;

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args([
                "whoami",
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--name",
                "probe",
            ])
            .env("SHOAL_TASK_NAME", "web.1.t1")
            .env("SHOAL_NODE_HOSTNAME", "node9")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr: std::net::SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /hello?x=1 HTTP/1.1\r\nHost: web\r\nUser-Agent: probe/1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    let local = s.local_addr().unwrap();
    for line in [
        "Name: probe\n",
        "Task: web.1.t1\n",
        "Node: node9\n",
        "Hostname: ",
        "IP: 127.0.0.1\n",
        &format!("RemoteAddr: {local}\n"),
        "GET /hello?x=1 HTTP/1.1\n",
        "User-Agent: probe/1\n",
    ] {
        assert!(answer.contains(line), "no {line:?} in:\n{answer}");
    }

    // A port that cannot be had is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "whoami",
            "--port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
