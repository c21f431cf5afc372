//! Tasks run for real: the node agents start services' processes, report
//! them running, replace the ones that die, and move them off a node whose
//! daemon stopped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::Swarm;

/// The tasks of `service` as node `via` reports them.
pub(crate) fn tasks(s: &Swarm, via: usize, service: &str) -> Result<Vec<Value>> {
    let (code, v) = s.op(
        via,
        &json!({"op": "tasks", "service": service, "node": null}),
    )?;
    if code != 200 {
        bail!("service ps {service}: HTTP {code}: {v}");
    }
    Ok(v["value"].as_array().context("no tasks")?.clone())
}

/// Node hostname of each running task that is wanted running.
pub(crate) fn running(s: &Swarm, via: usize, service: &str) -> Result<Vec<String>> {
    Ok(tasks(s, via, service)?
        .iter()
        .filter(|t| {
            t["task"]["desired_state"] == "running" && t["task"]["status"]["state"] == "running"
        })
        .map(|t| t["node"].as_str().unwrap_or("").to_string())
        .collect())
}

/// The pids of processes whose environment names task `name` (`web.1.<id>`).
fn pids_of_task(name: &str) -> Vec<u32> {
    let needle = format!("SHOAL_TASK_NAME={name}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

pub(crate) fn full_name(t: &Value) -> String {
    format!(
        "{}.{}",
        t["name"].as_str().unwrap_or(""),
        t["task"]["id"].as_str().unwrap_or("")
    )
}

/// The done-when of the services issue: 3 replicas land one per node and
/// run (3/3); a killed process is replaced and its task shows the exit code;
/// a node whose daemon stops has its task running elsewhere within 10 s.
#[test]
fn tasks_run_are_replaced_when_killed_and_leave_a_dead_node() {
    let mut s = Swarm::new(3).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--restart-delay",
            "1s",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(20), "3 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 3)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let mut nodes = running(&s, 0, "web").unwrap();
    nodes.sort();
    assert_eq!(nodes, ["node0", "node1", "node2"]);
    let ls = s.shoal_ok(0, &["service", "ls"]);
    let row = ls.lines().find(|l| l.contains(" web ")).expect("web row");
    assert!(row.contains(" 3/3 "), "{ls}");
    // Each task is a real process, with its own hostname and resolv.conf.
    let all = tasks(&s, 0, "web").unwrap();
    for t in &all {
        let pids = pids_of_task(&full_name(t));
        assert_eq!(
            pids.len(),
            1,
            "task {} has processes {pids:?}",
            full_name(t)
        );
    }

    // Kill slot 1's process: a replacement runs, and the dead one is listed
    // as failed with the exit code.
    let slot1 = all
        .iter()
        .find(|t| t["task"]["slot"] == 1)
        .expect("slot 1")
        .clone();
    let pid = pids_of_task(&full_name(&slot1))[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    s.wait_for(Duration::from_secs(20), "slot 1 replaced", || {
        let ts = tasks(&s, 0, "web")?;
        let failed = ts.iter().any(|t| {
            t["task"]["id"] == slot1["task"]["id"]
                && t["task"]["status"]["state"] == "failed"
                && t["task"]["status"]["exit_code"] == 137
        });
        let replaced = ts.iter().any(|t| {
            t["task"]["slot"] == 1
                && t["task"]["id"] != slot1["task"]["id"]
                && t["task"]["status"]["state"] == "running"
        });
        Ok(failed && replaced)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let ps = s.shoal_ok(0, &["service", "ps", "web"]);
    assert!(ps.contains("\"task: non-zero exit (137)\""), "{ps}");
    assert!(ps.contains(r" \_ web.1 "), "{ps}");

    // Stop node 2's daemon: its task dies with it and runs elsewhere soon.
    let on2: Vec<String> = tasks(&s, 0, "web")
        .unwrap()
        .iter()
        .filter(|t| t["node"] == "node2" && t["task"]["desired_state"] == "running")
        .map(full_name)
        .collect();
    assert_eq!(on2.len(), 1, "{on2:?}");
    let stopped = Instant::now();
    s.kill(2);
    s.wait_for(Duration::from_secs(10), "3 running tasks off node2", || {
        let r = running(&s, 0, "web")?;
        Ok(r.len() == 3 && !r.iter().any(|n| n == "node2"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!(
        "node2's task ran elsewhere {:.2} s after its daemon was killed",
        stopped.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids_of_task(&on2[0]).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        pids_of_task(&on2[0]).is_empty(),
        "the task of the dead daemon still runs"
    );
    let per_node: BTreeMap<String, usize> =
        running(&s, 0, "web")
            .unwrap()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, n| {
                *m.entry(n).or_default() += 1;
                m
            });
    assert_eq!(per_node.values().sum::<usize>(), 3, "{per_node:?}");
}

/// Placeholders in the environment, the task's own hostname and resolver,
/// output in `service logs`, and a task that ends with 0 under
/// `--restart-condition none` stays complete.
#[test]
fn task_environment_hostname_and_logs() {
    let s = Swarm::new(2).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hello",
            "--replicas",
            "2",
            "--restart-condition",
            "none",
            "--limit-cpu",
            "0.5",
            "--limit-memory",
            "64m",
            "-e",
            "GREETING=hi-{{.Task.Slot}}-{{.Service.Name}}@{{.Node.Hostname}}",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING host=$(hostname)\"; grep nameserver /etc/resolv.conf; echo oops >&2",
        ],
    );
    s.wait_for(Duration::from_secs(20), "2 complete tasks", || {
        let ts = tasks(&s, 0, "hello")?;
        Ok(ts.len() == 2
            && ts
                .iter()
                .all(|t| t["task"]["status"]["state"] == "complete"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let mut out = String::new();
    s.wait_for(Duration::from_secs(10), "6 log lines", || {
        out = s.shoal_ok(0, &["service", "logs", "hello"]);
        Ok(out.lines().count() == 6)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{out}"));
    let ts = tasks(&s, 0, "hello").unwrap();
    for t in &ts {
        let slot = t["task"]["slot"].as_u64().unwrap();
        let node = t["node"].as_str().unwrap();
        let id = t["task"]["id"].as_str().unwrap();
        let prefix = format!("{}@{node}    | ", full_name(t));
        assert!(
            out.contains(&format!(
                "{prefix}hi-{slot}-hello@{node} host={}",
                &id[..12]
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("{prefix}nameserver 127.0.0.11")),
            "{out}"
        );
        assert!(out.contains(&format!("{prefix}oops")), "{out}");
    }
    // Nothing restarts: the tasks stay complete, and no third one appears.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tasks(&s, 0, "hello").unwrap().len(), 2);
    let raw = s.shoal_ok(0, &["service", "logs", "--raw", "hello"]);
    assert_eq!(raw.lines().filter(|l| *l == "oops").count(), 2, "{raw}");
    // Limits are kept (and applied where the node has cgroup v2 controllers).
    let v: Value = serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "hello"])).unwrap();
    let limits = &v[0]["Spec"]["TaskTemplate"]["Resources"]["Limits"];
    assert_eq!(limits["NanoCPUs"], 500_000_000u64, "{v}");
    assert_eq!(limits["MemoryBytes"], 64u64 << 20, "{v}");
    let err = s.shoal_err(
        0,
        &[
            "service",
            "create",
            "--name",
            "x",
            "--limit-memory",
            "1k",
            "--",
            "true",
        ],
    );
    assert!(err.contains("minimum is 6m"), "{err}");
    let err = s.shoal_err(0, &["service", "logs", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
}

/// The pid of the one process of the task with this full name.
pub(crate) fn pid_of(name: &str) -> Result<u32> {
    let pids = pids_of_task(name);
    match pids.as_slice() {
        [pid] => Ok(*pid),
        other => bail!("task {name} has processes {other:?}"),
    }
}

/// `curl http://host/` from inside the network and mount namespaces of
/// process `pid` (so names go to its resolver, the embedded DNS).
pub(crate) fn curl_from(pid: u32, ip: &str) -> Result<String> {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "-m"])
        .args(["curl", "-sS", "--max-time", "3", &format!("http://{ip}/")])
        .output()?;
    if !out.status.success() {
        bail!(
            "curl {ip} from pid {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Tasks attached to a plain and an encrypted overlay network reach each
/// other across nodes on both, through the nodes' data planes; a task's
/// interfaces follow the service's network order (eth0, eth1).
#[test]
fn tasks_reach_each_other_over_plain_and_encrypted_networks() {
    let s = Swarm::new(3).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "backend"]);
    s.shoal_ok(
        0,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--opt",
            "encrypted",
            "secure",
        ],
    );
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "3",
            "--network",
            "backend",
            "--network",
            "secure",
            "--",
            env!("CARGO_BIN_EXE_shoal"),
            "whoami",
            "--port",
            "80",
        ],
    );
    s.wait_for(Duration::from_secs(20), "3 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 3)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let all: Vec<Value> = tasks(&s, 0, "web")
        .unwrap()
        .into_iter()
        .filter(|t| t["task"]["status"]["state"] == "running")
        .collect();
    let mut nodes: Vec<&str> = all.iter().map(|t| t["node"].as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["node0", "node1", "node2"]);
    for a in &all {
        let pid = pid_of(&full_name(a)).unwrap();
        for b in &all {
            if a["task"]["id"] == b["task"]["id"] {
                continue;
            }
            for (i, net) in ["backend", "secure"].iter().enumerate() {
                let ip = b["task"]["networks"][i]["ip"].as_str().unwrap();
                let mut last = String::new();
                let answered = (0..30).any(|_| match curl_from(pid, ip) {
                    Ok(body) => {
                        last = body;
                        true
                    }
                    Err(e) => {
                        last = format!("{e:#}");
                        std::thread::sleep(Duration::from_millis(200));
                        false
                    }
                });
                assert!(
                    answered && last.contains(&format!("Task: {}", full_name(b))),
                    "{} -> {} on {net} ({ip}): {last}\n{}",
                    full_name(a),
                    full_name(b),
                    s.logs()
                );
            }
        }
    }
}

/// The environment of the one process of task `name`, as `K=V` strings.
fn environ_of(name: &str) -> Vec<String> {
    let Ok(pid) = pid_of(name) else {
        return Vec::new();
    };
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// Full names of the running tasks of `service` that the managers want.
fn running_names(s: &Swarm, service: &str) -> Vec<String> {
    tasks(s, 0, service)
        .unwrap()
        .iter()
        .filter(|t| {
            t["task"]["desired_state"] == "running" && t["task"]["status"]["state"] == "running"
        })
        .map(full_name)
        .collect()
}

/// `service create` and `service update` wait for convergence and show it;
/// an update replaces every task with one that runs the new environment,
/// `rollback` brings the old one back, and an update whose tasks fail
/// pauses with Docker's message while the old tasks keep running.
#[test]
fn updates_roll_over_the_tasks_roll_back_and_pause_on_failure() {
    let s = Swarm::new(2).unwrap();
    s.form(1).unwrap();
    let out = s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--restart-delay",
            "1s",
            "-e",
            "V=1",
            "--",
            "sleep",
            "3000",
        ],
    );
    assert!(out.contains("overall progress: 3 out of 3 tasks"), "{out}");
    assert!(out.contains("verify: Service converged"), "{out}");
    let before = running_names(&s, "web");
    assert_eq!(before.len(), 3);
    assert!(before
        .iter()
        .all(|n| environ_of(n).contains(&"V=1".to_string())));

    // Scaling replaces nothing.
    s.shoal_ok(0, &["service", "scale", "web=3"]);
    let mut same = running_names(&s, "web");
    same.sort();
    let mut sorted = before.clone();
    sorted.sort();
    assert_eq!(same, sorted);

    let out = s.shoal_ok(
        0,
        &[
            "service",
            "update",
            "--env-add",
            "V=2",
            "--update-parallelism",
            "2",
            "web",
        ],
    );
    assert!(out.contains("verify: Service converged"), "{out}");
    let after = running_names(&s, "web");
    assert_eq!(after.len(), 3, "{after:?}");
    for n in &after {
        assert!(!before.contains(n), "{n} was not replaced");
        assert!(environ_of(n).contains(&"V=2".to_string()), "{n}");
    }
    let inspect: Value =
        serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "web"])).unwrap();
    assert_eq!(
        inspect[0]["UpdateStatus"]["State"], "completed",
        "{inspect}"
    );

    let out = s.shoal_ok(0, &["service", "rollback", "web"]);
    assert!(out.contains("verify: Service converged"), "{out}");
    let rolled = running_names(&s, "web");
    assert_eq!(rolled.len(), 3);
    for n in &rolled {
        assert!(environ_of(n).contains(&"V=1".to_string()), "{n}");
    }

    // A command that fails at once: the update pauses, the rest stay.
    s.shoal_ok(
        0,
        &[
            "service",
            "update",
            "--detach",
            "--args",
            "false",
            "--update-failure-action",
            "pause",
            "web",
        ],
    );
    s.wait_for(Duration::from_secs(20), "the update paused", || {
        let v: Value = serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "web"]))?;
        Ok(v[0]["UpdateStatus"]["State"] == "paused")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let v: Value = serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", "web"])).unwrap();
    let message = v[0]["UpdateStatus"]["Message"].as_str().unwrap();
    assert!(
        message.starts_with("update paused due to failure or early termination of task"),
        "{message}"
    );
    let still: Vec<String> = running_names(&s, "web")
        .into_iter()
        .filter(|n| rolled.contains(n))
        .collect();
    assert_eq!(still.len(), 2, "the two tasks not yet updated keep running");
    let err = s.shoal_err(0, &["service", "update", "--publish-rm", "443", "web"]);
    assert!(err.contains("443"), "{err}");
    let err = s.shoal_err(0, &["service", "rollback", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
}
