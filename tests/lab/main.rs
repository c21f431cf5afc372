//! The lab suite: `shoal lab up`, a whole Docker-tutorial session through
//! `shoal lab exec`, a leader failover, and `lab down` leaving nothing behind.
//! Only the `shoal` binary is driven, as a person would.
//!
//! Needs root (namespaces); without it the tests say so and pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Skips the test, saying why, unless we are root.
macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the lab suite needs root (network namespaces); run it through scripts/test");
            return;
        }
    };
}

/// The labs of this process live under their own root, so a developer's own
/// `lab` is never touched.
fn lab_root() -> PathBuf {
    std::env::temp_dir().join(format!("shoal-labtest-{}", std::process::id()))
}

fn shoal(args: &[&str]) -> Output {
    Command::new(SHOAL)
        .args(args)
        .env("SHOAL_LAB_ROOT", lab_root())
        .env_remove("SHOAL_CONTROL")
        .output()
        .expect("run shoal")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A lab that is taken down when dropped, also when a test fails.
struct Lab {
    name: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = shoal(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!("lab down {} failed: {}", self.name, text(&out));
        }
    }
}

impl Lab {
    /// `lab up` with `flags`; returns the lab and what `up` printed.
    fn up(suffix: &str, flags: &[&str]) -> (Lab, String) {
        let name = format!("t{}{suffix}", std::process::id());
        let lab = Lab { name };
        let mut args = vec!["lab", "up", "--name", &lab.name];
        args.extend_from_slice(flags);
        let out = shoal(&args);
        assert!(out.status.success(), "lab up: {}", text(&out));
        (lab, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn dir(&self) -> PathBuf {
        lab_root().join(&self.name)
    }

    fn json(&self) -> Value {
        let raw = std::fs::read_to_string(self.dir().join("lab.json")).expect("lab.json");
        serde_json::from_str(&raw).expect("lab.json is JSON")
    }

    /// `lab exec NODE -- shoal ARGS`.
    fn shoal(&self, node: &str, args: &[&str]) -> Output {
        let mut all = vec!["lab", "exec", "--name", &self.name, node, "--", SHOAL];
        all.extend_from_slice(args);
        shoal(&all)
    }

    /// Like [`Lab::shoal`], insisting on success; returns stdout.
    fn shoal_ok(&self, node: &str, args: &[&str]) -> String {
        let out = self.shoal(node, args);
        assert!(
            out.status.success(),
            "shoal {args:?} on {node}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `node ls` row of `host`.
fn node_row<'a>(ls: &'a str, host: &str) -> Option<&'a str> {
    ls.lines().find(|l| l.split_whitespace().any(|w| w == host))
}

/// The hostname of the node `node ls` calls Leader.
fn leader(ls: &str) -> Option<String> {
    let row = ls.lines().find(|l| l.contains("Leader"))?;
    row.split_whitespace()
        .find(|w| w.starts_with("node"))
        .map(str::to_string)
}

/// Whether the service's row in `service ls` shows `replicas`.
fn replicas(lab: &Lab, service: &str, replicas: &str) -> bool {
    let ls = lab.shoal_ok("node1", &["service", "ls"]);
    ls.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&service) && cols.get(3) == Some(&replicas)
    })
}

/// Namespaces of lab `name` still on the machine.
fn namespaces_of(name: &str) -> Vec<String> {
    let prefix = format!("shoal-lab-{name}-");
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes (not zombies) whose command line mentions `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = entry.path();
        let Ok(cmdline) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(p.join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        });
        if cmdline.contains(&needle) && !zombie {
            found.push(cmdline);
        }
    }
    found
}

/// Takes the lab down and checks nothing of it is left; and that a second
/// `down` is fine.
fn down_leaves_nothing(lab: Lab) {
    let name = lab.name.clone();
    let dir = lab.dir();
    drop(lab);
    assert_eq!(namespaces_of(&name), Vec::<String>::new());
    assert_eq!(processes_under(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{} is still there", dir.display());
    let again = shoal(&["lab", "down", "--name", &name]);
    assert!(again.status.success(), "second lab down: {}", text(&again));
}

/// Docker's swarm tutorial, on a 3-node lab with one manager.
#[test]
fn the_docker_tutorial_runs_on_a_lab() {
    need_root!();
    let (lab, up) = Lab::up("a", &["--nodes", "3", "--managers", "1"]);
    eprintln!("{up}");
    assert!(up.contains("up: 3 nodes (1 manager) in "), "{up}");
    for node in ["node1", "node2", "node3"] {
        assert!(
            node_row(&up, node).is_some_and(|r| r.contains(" running")),
            "{up}"
        );
    }
    // A second lab of the same name is refused, naming the way out.
    let again = shoal(&["lab", "up", "--name", &lab.name]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("shoal lab down"),
        "{}",
        text(&again)
    );
    // lab ls: every daemon runs; node1 leads.
    let ls =
        String::from_utf8_lossy(&shoal(&["lab", "ls", "--name", &lab.name]).stdout).into_owned();
    assert_eq!(
        ls.lines().filter(|l| l.ends_with("running")).count(),
        3,
        "{ls}"
    );
    assert!(
        node_row(&ls, "node1").is_some_and(|r| r.contains("Leader")),
        "{ls}"
    );
    // Exit codes come through.
    let code = shoal(&[
        "lab", "exec", "--name", &lab.name, "node2", "--", "sh", "-c", "exit 7",
    ]);
    assert_eq!(code.status.code(), Some(7), "{}", text(&code));
    // client1 (lab up's default) is on the underlay but outside the swarm:
    // listed, reachable, and its commands get no daemon socket.
    assert!(
        node_row(&ls, "client1").is_some_and(|r| r.contains("10.99.0.101") && r.contains("client")),
        "{ls}"
    );
    let client = Command::new(SHOAL)
        .args([
            "lab", "exec", "--name", &lab.name, "client1", "--", "sh", "-c",
        ])
        .arg("echo \"[$SHOAL_CONTROL]\"; ping -c 1 -W 2 10.99.0.11 >/dev/null && echo reached")
        .env("SHOAL_LAB_ROOT", lab_root())
        .env("SHOAL_CONTROL", "/nonexistent.sock")
        .output()
        .expect("run shoal");
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        "[]\nreached\n",
        "{}",
        text(&client)
    );

    let token = lab.shoal_ok("node1", &["swarm", "join-token", "worker"]);
    assert!(
        token.contains("shoal swarm join --token SWMTKN-"),
        "{token}"
    );
    let nodes = lab.shoal_ok("node1", &["node", "ls"]);
    assert_eq!(nodes.lines().count(), 4, "{nodes}");
    assert_eq!(leader(&nodes).as_deref(), Some("node1"), "{nodes}");

    lab.shoal_ok(
        "node1",
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--",
            "sleep",
            "3000",
        ],
    );
    wait_for(Duration::from_secs(20), "web 3/3", || {
        replicas(&lab, "web", "3/3")
    });
    let ps = lab.shoal_ok("node1", &["service", "ps", "web"]);
    assert_eq!(
        ps.lines().filter(|l| l.contains(" Running ")).count(),
        3,
        "{ps}"
    );

    lab.shoal_ok("node1", &["service", "scale", "--detach", "web=5"]);
    wait_for(Duration::from_secs(20), "web 5/5", || {
        replicas(&lab, "web", "5/5")
    });

    lab.shoal_ok(
        "node1",
        &["service", "update", "--detach", "--env-add", "A=1", "web"],
    );
    let inspect = lab.shoal_ok("node1", &["service", "inspect", "web"]);
    assert!(inspect.contains("A=1"), "{inspect}");
    wait_for(Duration::from_secs(30), "web 5/5 after the update", || {
        replicas(&lab, "web", "5/5")
    });

    lab.shoal_ok(
        "node1",
        &["node", "update", "--availability", "drain", "node3"],
    );
    wait_for(Duration::from_secs(30), "node3 drained", || {
        let ps = lab.shoal_ok("node1", &["node", "ps", "node3"]);
        ps.lines().skip(1).all(|l| !l.contains(" Running ")) && replicas(&lab, "web", "5/5")
    });

    lab.shoal_ok("node1", &["node", "promote", "node2"]);
    wait_for(Duration::from_secs(20), "node2 Reachable", || {
        let ls = lab.shoal_ok("node1", &["node", "ls"]);
        node_row(&ls, "node2").is_some_and(|r| r.contains("Reachable"))
    });
    lab.shoal_ok("node1", &["node", "demote", "node2"]);
    wait_for(Duration::from_secs(20), "node2 a worker again", || {
        let ls = lab.shoal_ok("node1", &["node", "ls"]);
        node_row(&ls, "node2").is_some_and(|r| !r.contains("Reachable"))
    });

    lab.shoal_ok("node1", &["service", "rm", "web"]);
    wait_for(Duration::from_secs(10), "web gone", || {
        !lab.shoal_ok("node1", &["service", "ls"]).contains(" web ")
    });

    let left = lab.shoal_ok("node3", &["swarm", "leave"]);
    assert_eq!(left, "Node left the swarm.\n");
    // A node that left is removed once the managers see it down.
    wait_for(Duration::from_secs(30), "node rm node3", || {
        lab.shoal("node1", &["node", "rm", "node3"])
            .status
            .success()
    });
    let nodes = lab.shoal_ok("node1", &["node", "ls"]);
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert!(node_row(&nodes, "node3").is_none(), "{nodes}");

    down_leaves_nothing(lab);
}

/// Three managers: the leader's daemon is killed and another manager leads.
#[test]
fn a_three_manager_lab_survives_its_leader() {
    need_root!();
    let (lab, up) = Lab::up("b", &["--nodes", "3", "--managers", "3"]);
    assert!(up.contains("up: 3 nodes (3 managers) in "), "{up}");
    let nodes = lab.shoal_ok("node1", &["node", "ls"]);
    assert_eq!(nodes.matches("Reachable").count(), 2, "{nodes}");
    let old = leader(&nodes).expect("a leader");
    let record = lab.json();
    let pid = record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == old.as_str())
        .and_then(|n| n["pid"].as_u64())
        .expect("the leader's pid in lab.json");
    let kill = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let via = ["node1", "node2", "node3"]
        .into_iter()
        .find(|n| *n != old)
        .unwrap();
    wait_for(Duration::from_secs(20), "a new leader", || {
        let out = lab.shoal(via, &["node", "ls"]);
        let ls = String::from_utf8_lossy(&out.stdout);
        out.status.success() && leader(&ls).is_some_and(|l| l != old)
    });
    // lab ls tells the dead daemon apart.
    let ls =
        String::from_utf8_lossy(&shoal(&["lab", "ls", "--name", &lab.name]).stdout).into_owned();
    assert!(
        node_row(&ls, &old).is_some_and(|r| r.ends_with("stopped")),
        "{ls}"
    );
    down_leaves_nothing(lab);
}

/// Bad flags are refused before anything is made, naming the flag; taking
/// down a lab that does not exist is fine.
#[test]
fn bad_flags_are_named_and_down_is_idempotent() {
    for (flags, flag) in [
        (&["--managers", "2"][..], "--managers"),
        (&["--nodes", "2", "--managers", "3"][..], "--managers"),
        (&["--nodes", "0"][..], "--nodes"),
        (&["--nodes", "1000"][..], "--nodes"),
        (&["--name", "no/slash"][..], "--name"),
    ] {
        let mut args = vec!["lab", "up"];
        args.extend_from_slice(flags);
        let out = shoal(&args);
        assert!(!out.status.success(), "{flags:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{flags:?}: {}",
            text(&out)
        );
    }
    let name = format!("t{}none", std::process::id());
    let out = shoal(&["lab", "down", "--name", &name]);
    assert!(out.status.success(), "{}", text(&out));
    let ls = shoal(&["lab", "ls", "--name", &name]);
    assert!(!ls.status.success());
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains("shoal lab up"),
        "{}",
        text(&ls)
    );
}

/// `shoal demo` end to end: every task answers through every node's port
/// 5000, from a client outside the swarm, and the demo's lab is gone after.
#[test]
fn demo_answers_from_every_task_through_every_node() {
    need_root!();
    let name = format!("t{}demo", std::process::id());
    let dir = lab_root().join(&name);
    // Taken down by the demo itself; this is for a demo that panics.
    let lab = Lab { name: name.clone() };
    let out = shoal(&["demo", "--name", &name, "--nodes", "3", "--requests", "6"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("all 3 tasks answered through all 3 nodes"),
        "{stdout}"
    );
    // One line per request: `node2 (10.99.0.12:5000) -> web.3.<id> on node3`.
    let answers: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| {
            let (asked, rest) = l.trim().split_once(" -> ")?;
            let task = rest.strip_prefix("web.")?.split_whitespace().next()?;
            Some((asked.split_whitespace().next()?, task))
        })
        .collect();
    for node in ["node1", "node2", "node3"] {
        assert!(
            answers.iter().filter(|(n, _)| *n == node).count() >= 6,
            "{node}: {stdout}"
        );
    }
    let mut tasks: Vec<&str> = answers.iter().map(|(_, t)| *t).collect();
    tasks.sort_unstable();
    tasks.dedup();
    assert_eq!(tasks.len(), 3, "{tasks:?}\n{stdout}");
    assert!(!stdout.contains("no answer:"), "{stdout}");
    // Nothing left: namespaces, processes, files.
    std::mem::forget(lab);
    assert_eq!(namespaces_of(&name), Vec::<String>::new());
    assert_eq!(processes_under(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{} is still there", dir.display());
}

/// The demo refuses to start over a lab of its name, says how to remove
/// it, and leaves it alone.
#[test]
fn demo_refuses_a_lab_of_its_name_and_leaves_it() {
    need_root!();
    let (lab, _) = Lab::up("c", &["--nodes", "1", "--clients", "0"]);
    let out = shoal(&["demo", "--name", &lab.name]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("shoal lab down --name {}", lab.name)),
        "{}",
        text(&out)
    );
    let ls = shoal(&["lab", "ls", "--name", &lab.name]);
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("running"),
        "{}",
        text(&ls)
    );
    down_leaves_nothing(lab);
}
