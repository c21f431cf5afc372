//! `shoal lab`: a multi-node swarm on one machine, in seconds.
//!
//! Each node is a network namespace on a bridge of its own (built with
//! `shoal-topology`, the crate the integration suites use) running a real
//! `shoald`, detached so that the lab outlives the terminal. The namespaces
//! have fixed names (`shoal-lab-<name>-n1`) and everything else lives under
//! `<root>/<name>/` with a `lab.json` describing it, so `lab ls`, `lab exec`
//! and `lab down` find the lab again from any shell, also after a crash.
//!
//! `up` is meant to take a few seconds: daemons start in parallel, sockets and
//! node states are polled every 20 ms, and nothing sleeps for a fixed time.

pub mod procs;
pub mod spec;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use hyper::Method;
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::{NodeStatus, Role};
use shoal_manager::swarm::{InitReply, InitRequest, JoinOptions, SwarmInfo};
use shoal_manager::views::NodeView;
use shoal_topology::{name::parse_fixed, Topology};

use self::spec::{client_name, namespace_prefix, LabClient, LabFile, LabNode, LabSpec};
use crate::swarm::{call, op};

/// How often `up` looks at sockets and node states.
const POLL: Duration = Duration::from_millis(20);
/// How long the daemons have to open their API sockets.
const SOCKET_LIMIT: Duration = Duration::from_secs(20);
/// How long the swarm has to show every node Ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long the daemons have to exit after SIGTERM in `down`.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long `ls` waits for a daemon's answer.
const ASK_LIMIT: Duration = Duration::from_secs(2);
/// The manager API port, as in Docker.
const MANAGER_PORT: u16 = 2377;

/// `shoal lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start a swarm of N nodes on this machine: namespaces, a shoald in each,
    /// swarm init and joins. Prints the nodes and how long it took.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How many of them are managers: 1, 3 or 5 (node1 first).
        #[arg(long, default_value_t = 1)]
        managers: usize,
        /// How many clients: namespaces on the same bridge but outside the
        /// swarm (no daemon), to reach published ports from like a user would.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// The lab's name, for running several side by side.
        #[arg(long, default_value = "lab")]
        name: String,
        /// The shoald binary (default: the one next to this shoal).
        #[arg(long, value_name = "PATH")]
        shoald: Option<PathBuf>,
    },
    /// List the lab's nodes: address, role, daemon pid and whether it runs.
    Ls {
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Run a command inside a node's namespace with SHOAL_CONTROL set to its
    /// daemon, e.g. `shoal lab exec node1 -- shoal node ls`, or inside a
    /// client's (no SHOAL_CONTROL there), e.g. `shoal lab exec client1 --
    /// curl 10.99.0.11:5000`. The directory of this shoal comes first on PATH,
    /// so `shoal` is this one. Its exit code is passed through.
    Exec {
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
        /// The node or client: node1, node2, ..., client1, ...
        node: String,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<OsString>,
    },
    /// Stop the daemons and their tasks and remove the namespaces and the lab
    /// directory. Safe to run twice, or after a crash.
    Down {
        /// The lab's name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

/// Runs a `lab` command with labs kept under `root`.
pub fn run(root: &Path, command: LabCommand) -> anyhow::Result<ExitCode> {
    match command {
        LabCommand::Up {
            nodes,
            managers,
            clients,
            name,
            shoald,
        } => {
            let spec = LabSpec::new(&name, nodes, managers, clients).map_err(anyhow::Error::msg)?;
            up(root, &spec, shoald)?;
            let lab = if name == "lab" {
                String::new()
            } else {
                format!("--name {name} ")
            };
            println!("Try: shoal lab exec {lab}node1 -- shoal node ls");
        }
        LabCommand::Ls { name } => ls(root, &name)?,
        LabCommand::Exec {
            name,
            node,
            command,
        } => return exec(root, &name, &node, &command),
        LabCommand::Down { name } => down(root, &name)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn lab_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

fn lab_file(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

/// Reads `lab.json`; `None` when there is no lab directory at all.
fn read_lab(root: &Path, name: &str) -> anyhow::Result<Option<LabFile>> {
    spec::check_name(name).map_err(anyhow::Error::msg)?;
    let path = lab_file(&lab_dir(root, name));
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a lab record; remove the lab with `shoal lab down --name {name}`",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn need_lab(root: &Path, name: &str) -> anyhow::Result<LabFile> {
    read_lab(root, name)?.with_context(|| {
        format!(
            "no lab named {name:?} (under {}); start one with `shoal lab up --name {name}`",
            root.display()
        )
    })
}

/// Writes `lab.json` whole or not at all (a reader never sees half of it).
fn write_lab(dir: &Path, lab: &LabFile) -> anyhow::Result<()> {
    let path = lab_file(dir);
    let tmp = dir.join("lab.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(lab)? + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// Whether anything of lab `name` is left: its record or its namespaces.
pub(crate) fn exists(root: &Path, name: &str) -> anyhow::Result<bool> {
    Ok(read_lab(root, name)?.is_some()
        || lab_dir(root, name).exists()
        || !lab_namespaces(name).is_empty())
}

/// Removes lab `name` under `root` as `lab down` does, quietly; returns what
/// went wrong.
pub(crate) fn remove(root: &Path, name: &str) -> Vec<String> {
    if let Err(e) = spec::check_name(name) {
        return vec![e];
    }
    remove_lab(&lab_dir(root, name), name)
}

/// The namespaces of lab `name` that exist on this machine, whatever lab.json says.
fn lab_namespaces(name: &str) -> Vec<String> {
    let prefix = namespace_prefix(name);
    shoal_topology::existing_namespaces()
        .into_iter()
        .filter(|n| parse_fixed(&prefix, n).is_some())
        .collect()
}

/// `lab up`: builds the lab, prints it and returns its record.
pub(crate) fn up(root: &Path, spec: &LabSpec, shoald: Option<PathBuf>) -> anyhow::Result<LabFile> {
    let started = Instant::now();
    let shoald = match shoald {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot tell where this shoal is; give --shoald PATH")?
            .with_file_name("shoald"),
    };
    if !shoald.is_file() {
        bail!(
            "no shoald at {}; build it (cargo build -p shoal --bins) or give --shoald PATH",
            shoald.display()
        );
    }
    let name = &spec.name;
    let exists =
        || format!("lab {name:?} exists; remove it first with `shoal lab down --name {name}`");
    let left = lab_namespaces(name);
    if !left.is_empty() {
        bail!("{} (namespaces {})", exists(), left.join(" "));
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let dir = lab_dir(root, name);
    // Creating the directory is what claims the name: two `up` at once cannot
    // both succeed.
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("{} ({} is there)", exists(), dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    match build(&dir, spec, &shoald) {
        Ok(lab) => {
            let views = node_views(&lab.nodes[0].control).unwrap_or_default();
            print!("{}", render_nodes(&lab, &views));
            println!(
                "lab {name:?} up: {} nodes ({} manager{}) in {:.2}s",
                lab.nodes.len(),
                spec.managers,
                if spec.managers == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            );
            Ok(lab)
        }
        Err(e) => {
            let logs = tail_logs(&dir);
            remove_lab(&dir, name);
            Err(e.context(format!(
                "lab {name:?} did not come up; it was removed{logs}"
            )))
        }
    }
}

/// The last lines of every node's log, for an error message.
fn tail_logs(dir: &Path) -> String {
    let Ok(lab) = fs::read_to_string(lab_file(dir)) else {
        return String::new();
    };
    let Ok(lab) = serde_json::from_str::<LabFile>(&lab) else {
        return String::new();
    };
    let mut out = String::new();
    for node in &lab.nodes {
        let text = fs::read_to_string(&node.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if !lines.is_empty() {
            out += &format!("\n--- {} log (last lines) ---\n", node.name);
            out += &lines[lines.len().saturating_sub(8)..].join("\n");
        }
    }
    out
}

/// Builds the namespaces, starts the daemons and forms the swarm.
fn build(dir: &Path, spec: &LabSpec, shoald: &Path) -> anyhow::Result<LabFile> {
    let topo = Topology::builder()
        .nodes(spec.nodes)
        .clients(spec.clients)
        .fixed_names(&namespace_prefix(&spec.name))
        .build()
        .context("cannot build the lab's namespaces")?
        .persist();
    let mut lab = LabFile {
        name: spec.name.clone(),
        namespaces: topo.namespace_names().to_vec(),
        nodes: topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, h)| LabNode::new(dir, i, h.name.clone(), h.addr))
            .collect(),
        clients: topo
            .clients
            .iter()
            .enumerate()
            .map(|(i, h)| LabClient {
                name: client_name(i),
                namespace: h.name.clone(),
                addr: h.addr,
            })
            .collect(),
    };
    for (i, node) in lab.nodes.iter_mut().enumerate() {
        node.role = if i < spec.managers {
            "manager"
        } else {
            "worker"
        }
        .into();
    }
    // Recorded before anything runs, so `down` finds all of it whatever fails.
    write_lab(dir, &lab)?;
    let mut children = Vec::new();
    for node in &mut lab.nodes {
        let child = start_daemon(node, shoald)?;
        node.pid = Some(child.id());
        children.push(child);
    }
    write_lab(dir, &lab)?;
    wait_for_sockets(&lab, &mut children)?;
    form(&lab, spec.managers)?;
    // The daemons now belong to init; `down` stops them through lab.json.
    drop(children);
    Ok(lab)
}

/// Starts `node`'s daemon in its namespace, in a session of its own (no
/// terminal to hang up on it), stdin null, output to its log.
fn start_daemon(node: &LabNode, shoald: &Path) -> anyhow::Result<Child> {
    fs::create_dir_all(&node.state_dir)
        .with_context(|| format!("cannot create {}", node.state_dir.display()))?;
    let log =
        File::create(&node.log).with_context(|| format!("cannot create {}", node.log.display()))?;
    // `ip netns exec` and `setsid` (not a group leader here, so it does not
    // fork) both exec: the pid we get is shoald's own.
    let mut cmd = shoal_topology::netns_command(&node.namespace, "setsid");
    cmd.arg(shoald)
        .arg("--state-dir")
        .arg(&node.state_dir)
        .arg("--control")
        .arg(&node.control)
        .arg("--hostname")
        .arg(&node.name)
        .env_remove("SHOAL_CONTROL")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().with_context(|| {
        format!(
            "cannot start shoald for {} (are `ip` and `setsid` installed?)",
            node.name
        )
    })
}

/// Waits until every daemon answers on its socket; fails early, naming the
/// node, when one exits.
fn wait_for_sockets(lab: &LabFile, children: &mut [Child]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SOCKET_LIMIT;
    let mut up = vec![false; lab.nodes.len()];
    while !up.iter().all(|&u| u) {
        for (i, node) in lab.nodes.iter().enumerate() {
            if up[i] {
                continue;
            }
            if let Some(status) = children[i].try_wait()? {
                bail!(
                    "shoald of {} exited ({status}); see {}",
                    node.name,
                    node.log.display()
                );
            }
            up[i] = answers(&node.control);
        }
        if Instant::now() > deadline {
            let late: Vec<&str> = lab
                .nodes
                .iter()
                .zip(&up)
                .filter(|(_, u)| !**u)
                .map(|(n, _)| n.name.as_str())
                .collect();
            bail!(
                "no API socket from {} within {SOCKET_LIMIT:?}",
                late.join(", ")
            );
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Whether a daemon answers on `control`, whatever it says.
fn answers(control: &Path) -> bool {
    let request = crate::http::request(control, Method::GET, "/v1/swarm", None);
    crate::http::block_on(async { tokio::time::timeout(ASK_LIMIT, request).await })
        .is_ok_and(|answer| answer.is_ok_and(|r| r.is_ok()))
}

/// `swarm init` on node1, managers join one by one (each changes the Raft
/// membership), workers all at once; then waits for every node Ready and
/// every manager voting.
fn form(lab: &LabFile, managers: usize) -> anyhow::Result<()> {
    let first = &lab.nodes[0];
    let _: InitReply = call(
        &first.control,
        Method::POST,
        "/v1/swarm/init",
        Some(serde_json::to_string(&InitRequest {
            advertise_addr: IpAddr::V4(first.addr),
            listen_addr: None,
            force_new_cluster: false,
            default_addr_pool: None,
            subnet_size: None,
            cert_expiry_secs: None,
            heartbeat_secs: None,
            node_down_secs: None,
            key_rotation_secs: None,
        })?),
    )
    .context("swarm init on node1")?;
    let token = |role| -> anyhow::Result<String> {
        match op(
            &first.control,
            &Op::JoinToken {
                role,
                rotate: false,
            },
        )? {
            OpReply::Token(t) => Ok(t.token),
            _ => bail!("shoald sent an unexpected answer to join-token"),
        }
    };
    let remote = SocketAddr::new(IpAddr::V4(first.addr), MANAGER_PORT);
    let join = |node: &LabNode, token: &str| -> anyhow::Result<()> {
        let req = JoinOptions {
            token: token.to_string(),
            remote,
            advertise_addr: IpAddr::V4(node.addr),
            listen_addr: None,
        };
        let _: shoal_manager::local::Joined = call(
            &node.control,
            Method::POST,
            "/v1/swarm/join",
            Some(serde_json::to_string(&req)?),
        )
        .with_context(|| format!("swarm join on {}", node.name))?;
        Ok(())
    };
    if managers > 1 {
        let mt = token(Role::Manager)?;
        for node in &lab.nodes[1..managers] {
            join(node, &mt)?;
        }
    }
    if lab.nodes.len() > managers {
        let wt = token(Role::Worker)?;
        std::thread::scope(|s| {
            let joins: Vec<_> = lab.nodes[managers..]
                .iter()
                .map(|node| s.spawn(|| join(node, &wt)))
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().unwrap_or_else(|_| bail!("a join thread panicked")))
                .collect::<anyhow::Result<Vec<()>>>()
        })?;
    }
    let deadline = Instant::now() + READY_LIMIT;
    let mut last: String;
    loop {
        match ready(first, lab.nodes.len(), managers) {
            Ok(None) => return Ok(()),
            Ok(Some(state)) => last = state,
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("the swarm was not ready within {READY_LIMIT:?}: {last}");
        }
        std::thread::sleep(POLL);
    }
}

/// `None` when every node is Ready and every manager votes; otherwise what
/// is missing.
fn ready(first: &LabNode, nodes: usize, managers: usize) -> anyhow::Result<Option<String>> {
    let info: SwarmInfo = ask(&first.control, Method::GET, "/v1/swarm", None, ASK_LIMIT)?;
    let views = node_views(&first.control)?;
    let ready = views
        .iter()
        .filter(|n| n.status == NodeStatus::Ready)
        .count();
    let voters = info.raft_voters.len();
    Ok((ready != nodes || voters != managers)
        .then(|| format!("{ready} of {nodes} nodes ready, {voters} of {managers} managers voting")))
}

/// `node ls` through `control`, within [`ASK_LIMIT`].
fn node_views(control: &Path) -> anyhow::Result<Vec<NodeView>> {
    let body = serde_json::to_string(&Op::Nodes)?;
    match ask(control, Method::POST, "/v1/swarm/op", Some(body), ASK_LIMIT)? {
        OpReply::Nodes(n) => Ok(n),
        _ => bail!("shoald sent an unexpected answer to node ls"),
    }
}

/// One API call with a time limit (a daemon that hangs must not hang `ls`).
fn ask<T: serde::de::DeserializeOwned>(
    control: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
    limit: Duration,
) -> anyhow::Result<T> {
    let answer = crate::http::block_on(async {
        tokio::time::timeout(limit, crate::http::request(control, method, path, body)).await
    })?
    .map_err(|_| anyhow::anyhow!("no answer from {} within {limit:?}", control.display()))??;
    let (status, text) = answer;
    if !status.is_success() {
        bail!("{}: HTTP {status}: {text}", control.display());
    }
    serde_json::from_str(&text).with_context(|| format!("shoald sent malformed JSON: {text}"))
}

/// The nodes as a table, with the swarm's view of them in `live` (by
/// hostname), then the clients.
fn render_nodes(lab: &LabFile, live: &[NodeView]) -> String {
    let mut rows = vec![[
        "NODE".to_string(),
        "ADDRESS".into(),
        "ROLE".into(),
        "STATUS".into(),
        "PID".into(),
        "DAEMON".into(),
    ]];
    for node in &lab.nodes {
        let running = node.pid.is_some_and(|p| procs::is_daemon(p, &node.control));
        let (role, status) = match live.iter().find(|v| v.hostname == node.name) {
            Some(v) => (
                match &v.manager_status {
                    Some(m) => format!("{} ({m})", v.role),
                    None => v.role.to_string(),
                },
                format!("{} {}", v.status, v.availability),
            ),
            None => (node.role.clone(), "-".into()),
        };
        rows.push([
            node.name.clone(),
            node.addr.to_string(),
            role,
            status,
            node.pid.map_or("-".into(), |p| p.to_string()),
            if running { "running" } else { "stopped" }.into(),
        ]);
    }
    for client in &lab.clients {
        rows.push([
            client.name.clone(),
            client.addr.to_string(),
            "client".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out += line.join("   ").trim_end();
        out.push('\n');
    }
    out
}

/// `lab ls`: the record, with roles and states from the first daemon that
/// answers (a worker forwards to the managers too).
fn ls(root: &Path, name: &str) -> anyhow::Result<()> {
    let lab = need_lab(root, name)?;
    let views = lab
        .nodes
        .iter()
        .filter(|n| n.pid.is_some_and(|p| procs::is_daemon(p, &n.control)))
        .find_map(|n| node_views(&n.control).ok())
        .unwrap_or_default();
    print!("{}", render_nodes(&lab, &views));
    Ok(())
}

/// `lab exec`.
fn exec(root: &Path, name: &str, node: &str, command: &[OsString]) -> anyhow::Result<ExitCode> {
    let lab = need_lab(root, name)?;
    // A node's commands talk to its daemon; a client has none, and a
    // SHOAL_CONTROL inherited from the caller would be a lie there.
    let (namespace, control) = if let Some(n) = lab.nodes.iter().find(|n| n.name == node) {
        (&n.namespace, Some(&n.control))
    } else if let Some(c) = lab.clients.iter().find(|c| c.name == node) {
        (&c.namespace, None)
    } else {
        let known: Vec<&str> = lab
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .chain(lab.clients.iter().map(|c| c.name.as_str()))
            .collect();
        bail!(
            "lab {name:?} has no node or client {node:?}; it has {}",
            known.join(", ")
        );
    };
    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = shoal_topology::netns_command(namespace, program);
    cmd.args(args);
    match control {
        Some(control) => cmd.env("SHOAL_CONTROL", control),
        None => cmd.env_remove("SHOAL_CONTROL"),
    };
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let mut path = vec![bin];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        cmd.env("PATH", std::env::join_paths(path)?);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `ip netns exec {namespace}`"))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `lab down`.
fn down(root: &Path, name: &str) -> anyhow::Result<()> {
    spec::check_name(name).map_err(anyhow::Error::msg)?;
    let dir = lab_dir(root, name);
    if !dir.exists() && lab_namespaces(name).is_empty() {
        println!("no lab named {name:?}: nothing to remove");
        return Ok(());
    }
    let problems = remove_lab(&dir, name);
    if problems.is_empty() {
        println!("lab {name:?} removed");
        Ok(())
    } else {
        bail!(
            "lab {name:?} was not removed completely:\n{}",
            problems.join("\n")
        )
    }
}

/// Stops the lab's daemons and what they started, removes its namespaces and
/// its directory; returns what went wrong. Works from whatever is left.
fn remove_lab(dir: &Path, name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lab = fs::read_to_string(lab_file(dir))
        .ok()
        .and_then(|t| serde_json::from_str::<LabFile>(&t).ok());
    let nodes = lab.as_ref().map_or(&[][..], |l| l.nodes.as_slice());
    let daemons: Vec<(u32, &Path)> = nodes
        .iter()
        .filter_map(|n| Some((n.pid?, n.control.as_path())))
        .filter(|&(pid, control)| procs::is_daemon(pid, control))
        .collect();
    // Tasks die with their daemon (PDEATHSIG) but are looked up first, so any
    // that outlive it are killed too.
    let pids: Vec<u32> = daemons.iter().map(|d| d.0).collect();
    let tasks = procs::descendants(&pids);
    let killed = procs::stop_daemons(&daemons, STOP_GRACE);
    if !killed.is_empty() {
        let _ = writeln!(
            io::stderr(),
            "shoal: daemons {killed:?} ignored SIGTERM and were killed"
        );
    }
    procs::kill_all(&tasks);
    let mut names: Vec<String> = lab.map(|l| l.namespaces).unwrap_or_default();
    for n in lab_namespaces(name) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    // Nodes before the bridge: lab.json lists the bridge first.
    names.reverse();
    if let Err(e) = shoal_topology::teardown(&names) {
        problems.push(format!("{e}"));
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("cannot remove {}: {e}", dir.display())),
    }
    // The root goes too once it holds no lab (removing a non-empty one fails).
    if let Some(root) = dir.parent() {
        let _ = fs::remove_dir(root);
    }
    problems
}
