//! The Docker runtime against the real Docker Engine of this machine.
//!
//! Needs root and a running engine; `scripts/test-images` builds the image.
//! Every test has its own node id, task ids and network names (the process
//! id and a counter), and a [`Cleanup`] that removes what it made, also
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shoal_docker::runtime::{DockerConfig, DockerRuntime, RuntimeRouter, NODE_LABEL, TASK_LABEL};
use shoal_runtime::{
    Limits, ProcessRuntime, Runtime, RuntimeError, Stream, TaskExit, TaskNetwork, TaskSpec,
};

#[path = "runtime/fake_plugin.rs"]
mod fake_plugin;

use fake_plugin::FakePlugin;

const IMAGE: &str = "shoal-test/busybox:latest";
const WAIT: Duration = Duration::from_secs(30);

fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds the test image once per test binary.
fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-images");
        let status = Command::new(&script)
            .status()
            .expect("run scripts/test-images");
        assert!(status.success(), "scripts/test-images failed");
    });
}

/// Removes containers and networks by name when dropped; never panics.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for n in &self.networks {
            let _ = Command::new("docker").args(["network", "rm", n]).output();
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), text)
}

fn connect(node: &str) -> DockerRuntime {
    images();
    DockerRuntime::connect(DockerConfig::new("shoal", node)).expect("connect to Docker")
}

/// A task spec with the test image; the container's name is registered
/// for cleanup.
fn spec(cleanup: &mut Cleanup, command: &[&str]) -> TaskSpec {
    let id = unique("t");
    let name = format!("web.1.{id}");
    cleanup.containers.push(name.clone());
    TaskSpec {
        name,
        hostname: id.chars().take(12).collect(),
        id,
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hi".into())],
        image: Some(IMAGE.into()),
        labels: [(
            "com.docker.swarm.service.name".to_string(),
            "web".to_string(),
        )]
        .into(),
        ..Default::default()
    }
}

fn wait_exit(rt: &dyn Runtime, id: &str) -> TaskExit {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(exit) = rt.try_wait(id).expect("try_wait") {
            return exit;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not exit in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `n` log lines (the engine writes them as it reads them).
fn wait_logs(rt: &dyn Runtime, id: &str, n: usize) -> Vec<(Stream, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let chunk = rt.logs(id, 0, 1000).expect("logs");
        if chunk.lines.len() >= n || Instant::now() >= deadline {
            return chunk
                .lines
                .into_iter()
                .map(|l| (l.stream, l.line))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_task_runs_logs_and_exits() {
    let mut cleanup = Cleanup::default();
    let rt = connect(&unique("node"));
    let spec = spec(
        &mut cleanup,
        &["sh", "-c", "echo hello; echo err >&2; exit 3"],
    );
    assert_eq!(rt.prepare(&spec).unwrap(), PathBuf::new());
    assert_eq!(rt.prepare(&spec).unwrap(), PathBuf::new(), "idempotent");
    assert!(!rt.plugin_networking(&spec.id));
    assert_eq!(rt.tasks(), vec![spec.id.clone()]);

    // The container is named like Swarm's task, labelled, on no network.
    let (_, names) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={TASK_LABEL}={}", spec.id),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(names, spec.name);
    let (_, config) = docker(&[
        "inspect",
        "--format",
        "{{.Config.Hostname}} {{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}} \
         {{.HostConfig.LogConfig.Type}} {{index .Config.Labels \"com.docker.swarm.service.name\"}}",
        &spec.name,
    ]);
    assert_eq!(config, format!("{} none no json-file web", spec.hostname));

    rt.start(&spec.id).expect("start");
    let exit = wait_exit(&rt, &spec.id);
    assert_eq!(
        exit,
        TaskExit {
            code: 3,
            signal: None,
            oom_killed: false
        }
    );
    assert_eq!(rt.stop(&spec.id, Duration::from_secs(1)).unwrap(), exit);
    assert!(matches!(
        rt.start(&spec.id),
        Err(RuntimeError::AlreadyStarted { .. })
    ));

    let mut lines = wait_logs(&rt, &spec.id, 2);
    lines.sort_by_key(|(_, l)| l.clone());
    assert_eq!(
        lines,
        [
            (Stream::Stderr, "err".to_string()),
            (Stream::Stdout, "hello".to_string())
        ]
    );
    // The cursor: line numbers, at most `max` at a time.
    let all = rt.logs(&spec.id, 0, 10).unwrap();
    assert_eq!(all.next, 2);
    assert!(all
        .lines
        .iter()
        .all(|l| l.time_ns > 1_600_000_000_000_000_000));
    let first = rt.logs(&spec.id, 0, 1).unwrap();
    assert_eq!((first.lines.len(), first.next), (1, 1));
    let second = rt.logs(&spec.id, first.next, 10).unwrap();
    assert_eq!(second.lines, all.lines[1..]);
    assert_eq!(second.next, 2);
    let none = rt.logs(&spec.id, 2, 10).unwrap();
    assert_eq!((none.lines.len(), none.next), (0, 2));

    assert!(matches!(
        rt.remove_logs(&spec.id),
        Err(RuntimeError::StillHeld { .. })
    ));
    rt.remove(&spec.id).expect("remove");
    rt.remove(&spec.id).expect("remove again");
    rt.remove_logs(&spec.id).expect("remove_logs");
    let (_, names) = docker(&["ps", "-a", "--filter", &format!("name={}", spec.name), "-q"]);
    assert_eq!(names, "");
    assert!(rt.tasks().is_empty());
    assert!(matches!(
        rt.logs(&spec.id, 0, 10),
        Err(RuntimeError::UnknownTask { .. })
    ));
    rt.remove("neverseen").expect("an unknown id is removed");
}

#[test]
fn stop_ends_a_running_task_after_its_grace() {
    let mut cleanup = Cleanup::default();
    let rt = connect(&unique("node"));
    let mut spec = spec(&mut cleanup, &["sleep", "1000"]);
    spec.limits = Limits {
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 << 20),
    };
    rt.prepare(&spec).unwrap();
    let (_, limits) = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
        &spec.name,
    ]);
    assert_eq!(limits, "500000000 67108864");
    assert!(matches!(
        rt.try_wait(&spec.id),
        Err(RuntimeError::NotStarted { .. })
    ));
    assert!(matches!(
        rt.stop(&spec.id, Duration::from_secs(1)),
        Err(RuntimeError::NotStarted { .. })
    ));
    let pid = rt.start(&spec.id).unwrap();
    assert!(pid > 0);
    assert_eq!(rt.container_pid(&spec.id), Some(pid));
    let key = rt
        .sandbox_key(&spec.id)
        .expect("a started container has a sandbox");
    assert!(key.exists(), "{}", key.display());
    assert_eq!(rt.try_wait(&spec.id).unwrap(), None);

    // sleep is pid 1 of its container and ignores SIGTERM: killed after the grace.
    let started = Instant::now();
    let exit = rt.stop(&spec.id, Duration::from_millis(300)).unwrap();
    assert!(started.elapsed() < WAIT);
    assert_eq!(exit.code, 137);
    assert_eq!(rt.stop(&spec.id, Duration::from_secs(1)).unwrap(), exit);
    assert_eq!(rt.try_wait(&spec.id).unwrap(), Some(exit));
    assert_eq!(rt.container_pid(&spec.id), None);
    rt.remove(&spec.id).unwrap();
}

#[test]
fn a_container_removed_outside_counts_as_killed() {
    let mut cleanup = Cleanup::default();
    let rt = connect(&unique("node"));
    let spec = spec(&mut cleanup, &["sleep", "1000"]);
    rt.prepare(&spec).unwrap();
    rt.start(&spec.id).unwrap();
    let (ok, _) = docker(&["rm", "-f", &spec.name]);
    assert!(ok);
    assert_eq!(rt.try_wait(&spec.id).unwrap().map(|e| e.code), Some(137));
    assert_eq!(rt.stop(&spec.id, Duration::ZERO).unwrap().code, 137);
    rt.remove(&spec.id).unwrap();
}

#[test]
fn connect_removes_what_an_earlier_daemon_left() {
    let mut cleanup = Cleanup::default();
    let node = unique("node");
    let earlier = connect(&node);
    let running = spec(&mut cleanup, &["sleep", "1000"]);
    let created = spec(&mut cleanup, &["true"]);
    earlier.prepare(&running).unwrap();
    earlier.start(&running.id).unwrap();
    earlier.prepare(&created).unwrap();
    // Another node's container on the same engine is not ours to remove.
    let other = connect(&unique("node"));
    let theirs = spec(&mut cleanup, &["true"]);
    other.prepare(&theirs).unwrap();
    drop(earlier);

    let exists = |name: &str| docker(&["inspect", "--format", "{{.Name}}", name]).0;
    assert!(exists(&running.name) && exists(&created.name));
    let later = connect(&node);
    assert!(!exists(&running.name));
    assert!(!exists(&created.name));
    assert!(exists(&theirs.name));
    assert!(later.tasks().is_empty());
    assert_eq!(other.tasks(), vec![theirs.id.clone()]);
    other.remove(&theirs.id).unwrap();
    // The labels say whose a container is.
    assert_eq!(NODE_LABEL, "io.shoal.node");
}

#[test]
fn an_image_not_on_the_node_is_refused_clearly() {
    let mut cleanup = Cleanup::default();
    let rt = connect(&unique("node"));
    let mut spec = spec(&mut cleanup, &["true"]);
    let image = format!("shoal-test/{}:latest", unique("absent"));
    spec.image = Some(image.clone());
    let err = rt.prepare(&spec).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "image {image} is not on this node (shoal does not pull)"
        )),
        "{err}"
    );
    spec.image = None;
    let err = rt.prepare(&spec).unwrap_err().to_string();
    assert!(err.contains("image") && err.contains("--image"), "{err}");
    assert!(rt.tasks().is_empty());
    assert!(!docker(&["inspect", &spec.name]).0, "no container made");
}

#[test]
fn networks_are_made_with_the_plugin_as_driver_and_ipam() {
    let mut cleanup = Cleanup::default();
    images();
    let plugin = unique("shoalabsent");
    let rt = DockerRuntime::connect(DockerConfig::new(plugin.clone(), unique("node"))).unwrap();
    let network = unique("net");
    cleanup.networks.push(network.clone());
    let mut spec = spec(&mut cleanup, &["true"]);
    spec.networks = vec![TaskNetwork {
        docker_network: network.clone(),
        ip: "10.9.8.7".parse().unwrap(),
        prefix_len: 24,
        shoal_network_id: unique("n"),
    }];

    // No plugin of that name: the engine refuses the network's driver.
    let err = rt.prepare(&spec).unwrap_err().to_string();
    assert!(
        err.contains(&format!("create Docker network {network}")) && err.contains(&plugin),
        "{err}"
    );
    assert!(!docker(&["network", "inspect", &network]).0);

    // A network of that name with another driver is not taken over.
    let (ok, _) = docker(&["network", "create", "--driver", "bridge", &network]);
    assert!(ok);
    let err = rt.prepare(&spec).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "Docker network {network:?} exists with driver \"bridge\""
        )),
        "{err}"
    );
    assert!(!docker(&["inspect", &spec.name]).0, "no container made");
}

#[test]
fn connect_names_the_socket_when_the_engine_does_not_answer() {
    let socket = std::env::temp_dir().join(format!("{}.sock", unique("nodocker")));
    let mut config = DockerConfig::new("shoal", "n1");
    config.socket = socket.clone();
    let err = DockerRuntime::connect(config)
        .err()
        .expect("no engine there");
    assert!(
        err.to_string().contains(&socket.display().to_string()),
        "{err}"
    );
}

#[test]
fn the_router_sends_image_tasks_to_docker() {
    let mut cleanup = Cleanup::default();
    let state = std::env::temp_dir().join(unique("shoal-router-"));
    cleanup.dirs.push(state.clone());
    let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(state).unwrap());
    let docker_rt = Arc::new(connect(&unique("node")));
    let router = RuntimeRouter::new(process.clone(), Some(docker_rt.clone()));

    let in_docker = spec(&mut cleanup, &["sh", "-c", "echo from docker"]);
    let mut on_host = spec(&mut cleanup, &["sh", "-c", "echo from host"]);
    on_host.image = None;
    let netns = router.prepare(&on_host).unwrap();
    assert!(netns.exists(), "the process runtime gives a namespace");
    assert_eq!(router.prepare(&in_docker).unwrap(), PathBuf::new());
    let mut both = vec![in_docker.id.clone(), on_host.id.clone()];
    both.sort();
    assert_eq!(router.tasks(), both);
    assert_eq!(process.tasks(), vec![on_host.id.clone()]);
    assert_eq!(docker_rt.tasks(), vec![in_docker.id.clone()]);

    for spec in [&in_docker, &on_host] {
        router.start(&spec.id).unwrap();
        assert_eq!(wait_exit(&router, &spec.id).code, 0);
    }
    assert_eq!(
        wait_logs(&router, &in_docker.id, 1),
        [(Stream::Stdout, "from docker".to_string())]
    );
    assert_eq!(
        wait_logs(&router, &on_host.id, 1),
        [(Stream::Stdout, "from host".to_string())]
    );

    // A router that did not prepare the task finds it in Docker.
    let fresh = RuntimeRouter::new(process.clone(), Some(docker_rt.clone()));
    assert_eq!(
        fresh.try_wait(&in_docker.id).unwrap().map(|e| e.code),
        Some(0)
    );

    for spec in [&in_docker, &on_host] {
        router.remove(&spec.id).unwrap();
        router.remove_logs(&spec.id).unwrap();
    }
    assert!(router.tasks().is_empty());

    // Without Docker, an image task is refused and says what to do.
    let no_docker = RuntimeRouter::new(process, None);
    let err = no_docker.prepare(&in_docker).unwrap_err().to_string();
    assert!(err.contains("start shoald with --docker"), "{err}");
}

#[test]
fn the_runtime_works_from_spawn_blocking() {
    let mut cleanup = Cleanup::default();
    let spec = spec(&mut cleanup, &["sh", "-c", "echo $GREETING"]);
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio_rt.block_on(async move {
        let node = unique("node");
        let rt = tokio::task::spawn_blocking(move || Arc::new(connect(&node)))
            .await
            .unwrap();
        let blocking = |f: Box<dyn FnOnce(&DockerRuntime) + Send>| {
            let rt = rt.clone();
            tokio::task::spawn_blocking(move || f(&rt))
        };
        let s = spec.clone();
        blocking(Box::new(move |rt| {
            rt.prepare(&s).unwrap();
            rt.start(&s.id).unwrap();
        }))
        .await
        .unwrap();
        let id = spec.id.clone();
        blocking(Box::new(move |rt| {
            assert_eq!(wait_exit(rt, &id).code, 0);
            assert_eq!(wait_logs(rt, &id, 1), [(Stream::Stdout, "hi".to_string())]);
            rt.remove(&id).unwrap();
        }))
        .await
        .unwrap();
        // Calls that do not reach the engine are fine in async code, and so
        // is dropping the runtime there.
        assert!(rt.warnings(&spec.id).is_empty());
        assert!(!rt.plugin_networking(&spec.id));
        drop(rt);
    });
}

#[test]
fn tasks_attach_through_the_network_plugin() {
    images();
    // Declared before the cleanup, so it still answers when the networks go.
    let plugin = FakePlugin::start(&unique("shoalfake"));
    let mut cleanup = Cleanup::default();
    let rt =
        DockerRuntime::connect(DockerConfig::new(plugin.name.clone(), unique("node"))).unwrap();
    let (front, back) = (unique("front"), unique("back"));
    cleanup.networks.extend([front.clone(), back.clone()]);
    let (front_id, back_id) = (unique("nf"), unique("nb"));
    let net = |name: &str, ip: &str, id: &str| TaskNetwork {
        docker_network: name.to_string(),
        ip: ip.parse().unwrap(),
        prefix_len: 24,
        shoal_network_id: id.to_string(),
    };
    let mut task = spec(
        &mut cleanup,
        &["sh", "-c", "ip -4 -o addr show; sleep 1000"],
    );
    task.networks = vec![
        net(&front, "10.31.1.7", &front_id),
        net(&back, "10.31.2.9", &back_id),
    ];
    assert_eq!(rt.prepare(&task).unwrap(), PathBuf::new());
    assert!(rt.plugin_networking(&task.id));

    // Each network: the plugin as driver and IPAM driver, the shoal id in
    // the options and the label, the task's subnet.
    for (name, id, subnet) in [
        (&front, &front_id, "10.31.1.0/24"),
        (&back, &back_id, "10.31.2.0/24"),
    ] {
        let (ok, seen) = docker(&[
            "network",
            "inspect",
            "--format",
            "{{.Driver}} {{.IPAM.Driver}} {{index .IPAM.Options \"network\"}} \
             {{index .Options \"io.shoal.network\"}} {{index .Labels \"io.shoal.network.id\"}} \
             {{(index .IPAM.Config 0).Subnet}}",
            name,
        ]);
        assert!(ok, "network {name} exists");
        let p = &plugin.name;
        assert_eq!(seen, format!("{p} {p} {id} {id} {id} {subnet}"));
    }
    let pools = plugin.bodies("IpamDriver.RequestPool");
    assert_eq!(pools.len(), 2, "{pools:?}");
    assert_eq!(pools[0]["Options"]["network"], front_id.as_str());
    assert_eq!(pools[0]["Pool"], "10.31.1.0/24");

    // A second task on the same network does not make it again.
    let mut other = spec(&mut cleanup, &["true"]);
    other.networks = vec![net(&front, "10.31.1.8", &front_id)];
    rt.prepare(&other).unwrap();
    assert_eq!(plugin.bodies("NetworkDriver.CreateNetwork").len(), 2);
    // A network of that name made for another shoal network is not used.
    let mut stale = spec(&mut cleanup, &["true"]);
    stale.networks = vec![net(&front, "10.31.1.9", "anotherid")];
    let err = rt.prepare(&stale).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "belongs to shoal network {front_id}, not anotherid"
        )),
        "{err}"
    );

    // Started, the container has both addresses, from the plugin's endpoints
    // (in an order the engine picks: eth0 is not always the first network).
    rt.start(&task.id).expect("start on plugin networks");
    let lines = wait_logs(&rt, &task.id, 3);
    let text: Vec<_> = lines.iter().map(|(_, l)| l.as_str()).collect();
    eprintln!("addresses inside the container: {text:#?}");
    for ip in ["inet 10.31.1.7/24", "inet 10.31.2.9/24"] {
        assert!(text.iter().any(|l| l.contains(ip)), "{ip} in {text:?}");
    }
    let requested: Vec<_> = plugin
        .bodies("IpamDriver.RequestAddress")
        .into_iter()
        .filter_map(|b| b["Address"].as_str().map(str::to_string))
        .filter(|a| !a.is_empty())
        .collect();
    assert!(
        requested.contains(&"10.31.1.7".to_string()),
        "{requested:?}"
    );
    assert!(
        requested.contains(&"10.31.2.9".to_string()),
        "{requested:?}"
    );
    assert!(rt.sandbox_key(&task.id).is_some_and(|k| k.exists()));

    assert_eq!(rt.stop(&task.id, Duration::ZERO).unwrap().code, 137);
    for t in [&task, &other] {
        rt.remove(&t.id).unwrap();
    }
}
