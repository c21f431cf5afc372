//! Shoal alongside the Docker Engine of this machine: `--image` services run
//! as Docker containers on the node with `--docker`, the routing mesh
//! reaches them from every node (nodes without Docker too), a plain `docker
//! run --network NET` container reaches a shoal task on another node by its
//! service name, and the orchestrator replaces a killed container and
//! removes the containers of a removed service.
//!
//! Needs the engine at /var/run/docker.sock and the image that
//! `scripts/test-images` builds (the test runs it; it does nothing when the
//! image is there).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::mesh::raw_get_from_client;
use crate::tasks::{running, tasks};
use crate::Swarm;

const IMAGE: &str = "shoal-test/busybox:latest";

/// Runs the docker CLI; its stdout, or an error with its stderr.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("run the docker CLI (is Docker installed?)")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes, while the daemons still run (it is declared after the swarm,
/// so it is dropped first), every container and Docker network this test's
/// shoald made: Docker asks the plugin to delete them, and a network whose
/// plugin is gone can only be removed slowly.
struct DockerCleanup {
    node_label: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.shoal.node={}", self.node_label);
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        if let Ok(ids) = docker(&["ps", "-aq", "--filter", "label=shoal-test-plain"]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        if let Ok(ids) = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            "label=io.shoal.network.id",
        ]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["network", "rm", id]);
            }
        }
    }
}

/// The containers of `service` that Docker runs: (name, hostname).
fn containers(service: &str) -> Result<Vec<String>> {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let out = docker(&["ps", "--filter", &filter, "--format", "{{.Names}}"])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The answer body's last line from port `addr` (the answering container's
/// hostname), from the client namespace.
fn hostname_via(s: &Swarm, addr: SocketAddr) -> Result<String> {
    let answer = raw_get_from_client(s, addr)?;
    if !answer.starts_with("HTTP/1.0 200") && !answer.starts_with("HTTP/1.1 200") {
        bail!("{addr}: {answer:?}");
    }
    answer
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .with_context(|| format!("empty answer from {addr}"))
}

/// The done-when of the Docker issue, on this machine's engine.
#[test]
fn image_services_run_in_docker_and_plain_containers_join_shoal_networks() {
    let status = Command::new("scripts/test-images")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run scripts/test-images");
    assert!(status.success(), "scripts/test-images failed");
    // Leftovers of a crashed earlier run would clash with this run's names.
    drop(DockerCleanup {
        node_label: "node0".into(),
    });

    let plugin = format!("shoaltest{}", std::process::id());
    let s = Swarm::new_full(
        3,
        1,
        &[],
        &[
            (0, "SHOAL_DOCKER", "true"),
            (0, "SHOAL_DOCKER_PLUGIN", plugin.as_str()),
        ],
    )
    .unwrap();
    let _cleanup = DockerCleanup {
        node_label: "node0".into(),
    };
    s.form(1).unwrap();
    let net = format!("app{}", std::process::id());
    s.shoal_ok(0, &["network", "create", "--attachable", &net]);

    // Two containers; only node0 has an engine, so both go there.
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            &net,
            "-p",
            "5000:80",
            "--image",
            IMAGE,
            "--",
            "sh",
            "-c",
            "busybox mkdir -p /www && busybox hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let created = std::time::Instant::now();
    s.wait_for(Duration::from_secs(60), "2 running containers", || {
        Ok(running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!(
        "2 containers running {:.2} s after service create",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(running(&s, 0, "web").unwrap(), vec!["node0", "node0"]);
    let ids: BTreeSet<String> = tasks(&s, 0, "web")
        .unwrap()
        .iter()
        .filter(|t| t["task"]["desired_state"] == "running")
        .filter_map(|t| t["task"]["id"].as_str().map(str::to_string))
        .collect();
    let names: BTreeSet<String> = containers("web").unwrap().into_iter().collect();
    println!("docker ps: {names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
    for id in &ids {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("web.") && n.ends_with(&format!(".{id}"))),
            "no container named web.<slot>.{id}: {names:?}"
        );
    }
    let hostnames: BTreeSet<String> = ids.iter().map(|id| id[..12].to_string()).collect();

    // Port 5000 of every node, the two without Docker included, reaches both.
    let mut seen = BTreeSet::new();
    s.wait_for(Duration::from_secs(30), "port 5000 on every node", || {
        for i in 0..3 {
            seen.insert(hostname_via(&s, SocketAddr::from((s.addr(i), 5000)))?);
        }
        Ok(true)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    for n in 0..60 {
        let i = n % 3;
        let h = hostname_via(&s, SocketAddr::from((s.addr(i), 5000)))
            .unwrap_or_else(|e| panic!("request {n} via node{i}: {e:#}\n{}", s.logs()));
        seen.insert(h);
    }
    println!("answered by {seen:?}; tasks {hostnames:?}");
    assert_eq!(seen, hostnames);

    // A plain container on the attachable network pings a process task on
    // node1 by its service name and by `tasks.db` (shoal's DNS at
    // 127.0.0.11 answers).
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "db",
            "--network",
            &net,
            "--constraint",
            "node.hostname==node1",
            "--",
            "sleep",
            "1000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "db running", || {
        Ok(running(&s, 0, "db")?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    s.wait_for(Duration::from_secs(20), "the Docker network", || {
        Ok(docker(&["network", "inspect", &net]).is_ok())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let out = docker(&[
        "run",
        "--rm",
        "--label",
        "shoal-test-plain",
        "--network",
        &net,
        IMAGE,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do ping -c 1 -W 2 db && ping -c 1 -W 2 tasks.db && exit 0; sleep 0.3; done; \
         cat /etc/resolv.conf; nslookup db; ip addr; exit 1",
    ])
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    println!("{out}");
    // `db` is its VIP (answered by the switch on node0); `tasks.db` is the
    // task itself, on node1, across the overlay.
    assert_eq!(out.matches("1 packets received").count(), 2, "{out}");
    let tries = out.matches("PING db").count() + out.matches("bad address").count();
    println!("the plain container reached db on try {tries}");

    // A host-mode port of a container answers on its node only.
    s.shoal_ok(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "hw",
            "--network",
            &net,
            "-p",
            "published=5080,target=80,mode=host",
            "--image",
            IMAGE,
            "--",
            "sh",
            "-c",
            "busybox mkdir -p /www && busybox hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    s.wait_for(Duration::from_secs(60), "hw running", || {
        Ok(running(&s, 0, "hw")?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let hw_id = tasks(&s, 0, "hw").unwrap()[0]["task"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut answer = String::new();
    s.wait_for(Duration::from_secs(20), "port 5080 on node0", || {
        answer = hostname_via(&s, SocketAddr::from((s.addr(0), 5080)))?;
        Ok(true)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    assert_eq!(answer, hw_id[..12]);
    let elsewhere = raw_get_from_client(&s, SocketAddr::from((s.addr(1), 5080)));
    assert!(elsewhere.is_err(), "node1 answered on 5080: {elsewhere:?}");

    // A killed container is replaced by the orchestrator.
    let victim = containers("web").unwrap()[0].clone();
    docker(&["kill", &victim]).unwrap();
    s.wait_for(Duration::from_secs(60), "a replacement container", || {
        let now = containers("web")?;
        Ok(now.len() == 2 && !now.contains(&victim) && running(&s, 0, "web")?.len() == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));

    // Removing the service removes its containers.
    s.shoal_ok(0, &["service", "rm", "web"]);
    s.wait_for(Duration::from_secs(30), "no web container", || {
        let filter = "label=com.docker.swarm.service.name=web";
        Ok(docker(&["ps", "-aq", "--filter", filter])?
            .trim()
            .is_empty())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
}
