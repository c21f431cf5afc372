//! The node agent's task side: runs the tasks the managers placed on this
//! node and reports on them.
//!
//! Every half second the worker asks the managers for the node's
//! [`Assignments`] and brings the node in line ([`decide`], pure): a task
//! wanted and `assigned` is started (its sandbox prepared, its interfaces
//! attached to its networks through the [`NetworkAttacher`], its command
//! started through the [`Runtime`]); a task the managers want stopped is
//! stopped (SIGTERM, SIGKILL after the grace period); a task the managers
//! think runs here but this node does not hold (its daemon restarted, and
//! tasks die with it) is reported failed, so the orchestrator replaces it; a
//! task the managers forgot is stopped and its sandbox and logs removed.
//! Exits are reported as `complete` or `failed` with the exit code, and each
//! task's output is pushed to the leader for `service logs`.
//!
//! Without a reachable manager the worker keeps its tasks running and keeps
//! their reports until one answers.

pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_runtime::{Runtime, TaskExit, TaskSpec};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatch::{
    AssignedTask, Assignments, IngressAssignment, NetworkAssignment, TaskLogLine,
};
use crate::identity::NodeFile;
use crate::net::Client;
use crate::server::{LogsBody, TaskStatusBody};
use crate::state::{ClusterKey, TaskState, TaskStatus, TaskUpdate};
use crate::swarm::{now_secs, Shared};

/// How often the worker asks for its assignments.
const ROUND: Duration = Duration::from_millis(500);
/// Docker's default `--stop-grace-period`.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// What a task's `/etc/resolv.conf` says: the embedded DNS server.
const RESOLV_CONF: &str = "nameserver 127.0.0.11\noptions ndots:0\n";
/// At most this many log lines per task per round.
const LOG_BATCH: usize = 1000;

/// What the node's networking needs to know about the node: who it is,
/// where the managers are, and the cluster's current keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetworking {
    /// The node's id.
    pub node_id: String,
    /// Its underlay (swarm) address.
    pub addr: IpAddr,
    /// The managers' API addresses (gossip seeds: the same hosts, port 7946).
    pub managers: Vec<SocketAddr>,
    /// The network encryption keys, newest last.
    pub network_keys: Vec<ClusterKey>,
    /// The gossip keys, newest last.
    pub gossip_keys: Vec<ClusterKey>,
}

/// How the worker connects tasks to the swarm's networks: the node's data
/// plane, gossip and embedded DNS.
pub trait NetworkAttacher: Send + Sync + 'static {
    /// Brings the node's networking in line: gossip runs with the current
    /// keys, the data plane has exactly `networks`, those no longer listed
    /// and without local interfaces removed, and the routing mesh answers
    /// on the ports `ingress` lists. Called every round; cheap when nothing
    /// changed.
    fn sync(
        &self,
        node: &NodeNetworking,
        networks: &[NetworkAssignment],
        ingress: Option<&IngressAssignment>,
    ) -> Result<(), String>;
    /// Connects `task`, whose sandbox's network namespace is at `netns`:
    /// one interface per network (`eth0`, `eth1`, ... in the order of
    /// `task.networks`; `networks` holds each one's assignment in that
    /// order), its endpoints published to the other nodes, and its DNS
    /// server at 127.0.0.11.
    fn attach(
        &self,
        task: &AssignedTask,
        networks: &[NetworkAssignment],
        netns: &Path,
    ) -> Result<(), String>;
    /// Undoes [`attach`](Self::attach), as far as it went.
    fn detach(&self, task: &AssignedTask);
    /// Takes `task` out of rotation (load balancers and DNS) ahead of its
    /// stop; [`detach`](Self::detach) removes it for good.
    fn drain(&self, task: &AssignedTask) {
        let _ = task;
    }
    /// The swarm's attachable networks, every round, for a node with a
    /// container engine (`docker run --network NET` may use them).
    fn attachable(&self, networks: &[NetworkAssignment]) {
        let _ = networks;
    }
    /// Whether tasks can be attached to `networks` now (the data plane has
    /// them; an encrypted one waits for the cluster's keys).
    fn ready(&self, networks: &[NetworkAssignment]) -> bool {
        let _ = networks;
        true
    }
}

/// How long a task waits for its networks before it is started anyway (and
/// fails, saying why).
const NETWORK_WAIT: Duration = Duration::from_secs(10);

/// A task this node holds.
#[derive(Debug, Clone)]
struct Local {
    task: AssignedTask,
    /// The last state this node reported (or is about to).
    reported: TaskState,
    /// Set once its process ended (or it was stopped).
    exit: Option<TaskExit>,
    /// A stop is under way.
    stopping: bool,
    /// The log cursor.
    log_next: u64,
}

/// What the worker does about one task this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start it.
    Start(Box<AssignedTask>),
    /// Stop it (it runs here and the managers want it stopped).
    Stop(String),
    /// The managers want it stopped and it does not run here: say so.
    ReportStopped(String),
    /// The managers think it runs here, it does not: report it failed.
    ReportLost(String),
    /// The managers forgot it: stop it if needed, free it, delete its logs.
    Forget(String),
}

/// What to do, from the assignments and the tasks this node holds (by id,
/// with whether each has ended and whether a stop is under way).
pub(crate) fn decide(
    assigned: &[AssignedTask],
    local: &BTreeMap<String, (bool, bool)>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let listed: BTreeSet<&str> = assigned.iter().map(|t| t.id.as_str()).collect();
    for t in assigned {
        let wanted = t.desired_state <= TaskState::Running;
        match local.get(&t.id) {
            Some(&(ended, stopping)) if !wanted && !ended && !stopping => {
                actions.push(Action::Stop(t.id.clone()))
            }
            Some(_) => {}
            None if wanted && t.state == TaskState::Assigned => {
                actions.push(Action::Start(Box::new(t.clone())))
            }
            None if t.state >= TaskState::Accepted && !t.state.is_terminal() => {
                if wanted {
                    actions.push(Action::ReportLost(t.id.clone()));
                } else {
                    actions.push(Action::ReportStopped(t.id.clone()));
                }
            }
            None => {}
        }
    }
    for id in local.keys() {
        if !listed.contains(id.as_str()) {
            actions.push(Action::Forget(id.clone()));
        }
    }
    actions
}

/// The status reported for an exit: `complete` for 0, `failed` otherwise
/// with Docker's error; `shutdown` when the managers asked for the stop.
fn exit_status(exit: &TaskExit, asked_to_stop: bool) -> TaskStatus {
    let (state, message, err) = if asked_to_stop {
        (TaskState::Shutdown, "shutdown".to_string(), None)
    } else if exit.code == 0 {
        (TaskState::Complete, "finished".to_string(), None)
    } else {
        let mut err = format!("task: non-zero exit ({})", exit.code);
        if exit.oom_killed {
            err.push_str(": out of memory");
        }
        (TaskState::Failed, "failed".to_string(), Some(err))
    };
    TaskStatus {
        state,
        message,
        err,
        exit_code: Some(exit.code),
        timestamp: now_secs(),
    }
}

fn status(state: TaskState, message: &str, err: Option<String>) -> TaskStatus {
    TaskStatus {
        state,
        message: message.into(),
        err,
        exit_code: None,
        timestamp: now_secs(),
    }
}

/// The worker's loop; ends when `stop` turns true, stopping every task.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(runtime) = shared.config.runtime.clone() else {
        return;
    };
    let mut w = Worker {
        shared,
        runtime,
        local: BTreeMap::new(),
        networks: BTreeMap::new(),
        reports: Vec::new(),
        stops: JoinSet::new(),
        waiting: BTreeMap::new(),
    };
    loop {
        w.round().await;
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
    w.stop_all().await;
}

struct Worker {
    shared: Arc<Shared>,
    runtime: Arc<dyn Runtime>,
    local: BTreeMap<String, Local>,
    /// The networks of the last assignments, by id.
    networks: BTreeMap<String, NetworkAssignment>,
    /// Reports not yet delivered.
    reports: Vec<TaskUpdate>,
    /// Stops under way: task id and its exit.
    stops: JoinSet<(String, Option<TaskExit>)>,
    /// Tasks waiting for their networks, since when.
    waiting: BTreeMap<String, std::time::Instant>,
}

impl Worker {
    async fn round(&mut self) {
        while let Some(done) = self.stops.try_join_next() {
            if let Ok((id, exit)) = done {
                self.stopped(&id, exit).await;
            }
        }
        self.check_exits().await;
        let Some((node, client)) = self.identity().await else {
            return;
        };
        match client
            .post_any::<_, Assignments>(&node.managers, 0, "/v1/assignments", &())
            .await
        {
            Ok((_, a)) => self.follow(&node, a).await,
            Err(e) => tracing::debug!(error = %e, "no assignments this round"),
        }
        self.push_logs(&node, &client).await;
        self.send_reports(&node, &client).await;
    }

    async fn identity(&self) -> Option<(NodeFile, Client)> {
        let node = self.shared.node.read().await.clone()?;
        let client = self.shared.client.read().await.clone()?;
        (!node.managers.is_empty()).then_some((node, client))
    }

    async fn follow(&mut self, node: &NodeFile, a: Assignments) {
        self.networks = a
            .networks
            .iter()
            .map(|n| (n.id.clone(), n.clone()))
            .collect();
        self.sync_networks(node, &a.networks, a.ingress.as_ref());
        if let Some(attacher) = self.shared.config.attacher.clone() {
            attacher.attachable(&a.attachable);
        }
        let held: BTreeMap<String, (bool, bool)> = self
            .local
            .iter()
            .map(|(id, l)| (id.clone(), (l.exit.is_some(), l.stopping)))
            .collect();
        for action in decide(&a.tasks, &held) {
            match action {
                Action::Start(task) => self.start(node, *task).await,
                Action::Stop(id) => self.begin_stop(&id),
                Action::ReportStopped(id) => {
                    self.report(&id, status(TaskState::Shutdown, "shutdown", None))
                }
                Action::ReportLost(id) => self.report(
                    &id,
                    status(
                        TaskState::Failed,
                        "failed",
                        Some("task: no longer running on this node (its daemon restarted)".into()),
                    ),
                ),
                Action::Forget(id) => self.forget(&id).await,
            }
        }
        // Keep each held task's copy of what the managers want.
        for t in a.tasks {
            if let Some(l) = self.local.get_mut(&t.id) {
                l.task = t;
            }
        }
    }

    fn sync_networks(
        &mut self,
        node: &NodeFile,
        networks: &[NetworkAssignment],
        ingress: Option<&IngressAssignment>,
    ) {
        let Some(attacher) = self.shared.config.attacher.clone() else {
            return;
        };
        let ctx = NodeNetworking {
            node_id: node.node_id.clone(),
            addr: node.addr,
            managers: node.managers.clone(),
            network_keys: self.shared.network_keys.lock().expect("keys").clone(),
            gossip_keys: self.shared.gossip_keys.lock().expect("keys").clone(),
        };
        if let Err(e) = attacher.sync(&ctx, networks, ingress) {
            tracing::warn!(error = %e, "cannot bring the node's networking in line");
        }
    }

    fn report(&mut self, id: &str, status: TaskStatus) {
        if let Some(l) = self.local.get_mut(id) {
            if status.state <= l.reported {
                return;
            }
            l.reported = status.state;
        }
        self.reports
            .retain(|r| r.task_id != id || r.status.state > status.state);
        self.reports.push(TaskUpdate {
            task_id: id.to_string(),
            status,
        });
    }

    async fn start(&mut self, node: &NodeFile, task: AssignedTask) {
        let id = task.id.clone();
        // Its networks may not be in the data plane yet (a first round
        // without keys): the task waits a few rounds rather than failing
        // and waiting out its restart delay.
        if let Some(attacher) = self.shared.config.attacher.clone() {
            let networks: Vec<NetworkAssignment> = task
                .networks
                .iter()
                .filter_map(|a| self.networks.get(&a.network_id).cloned())
                .collect();
            let since = *self
                .waiting
                .entry(id.clone())
                .or_insert_with(std::time::Instant::now);
            if !attacher.ready(&networks) && since.elapsed() < NETWORK_WAIT {
                tracing::debug!(task = %task.name, "waiting for the task's networks");
                return;
            }
            self.waiting.remove(&id);
        }
        self.local.insert(
            id.clone(),
            Local {
                task: task.clone(),
                reported: TaskState::Assigned,
                exit: None,
                stopping: false,
                log_next: 0,
            },
        );
        self.report(&id, status(TaskState::Accepted, "accepted", None));
        let spec = match self.spec(node, &task) {
            Ok(spec) => spec,
            Err(e) => return self.fail_start(&id, TaskState::Rejected, e).await,
        };
        let runtime = self.runtime.clone();
        let prepared = blocking(move || runtime.prepare(&spec).map_err(|e| e.to_string())).await;
        let netns = match prepared {
            Ok(path) => path,
            Err(e) => return self.fail_start(&id, TaskState::Rejected, e).await,
        };
        self.report(&id, status(TaskState::Preparing, "preparing", None));
        if let Err(e) = self.attach(&task, &netns) {
            return self.fail_start(&id, TaskState::Failed, e).await;
        }
        self.report(&id, status(TaskState::Starting, "starting", None));
        let runtime = self.runtime.clone();
        let start_id = id.clone();
        match blocking(move || runtime.start(&start_id).map_err(|e| e.to_string())).await {
            Ok(pid) => {
                tracing::info!(task = %task.name, pid, "task started");
                for w in self.runtime.warnings(&id) {
                    tracing::warn!(task = %task.name, warning = %w, "task started with a warning");
                }
                self.report(&id, status(TaskState::Running, "started", None));
            }
            Err(e) => self.fail_start(&id, TaskState::Failed, e).await,
        }
    }

    /// The runtime's spec of `task`: placeholders expanded, Swarm's
    /// environment, the hostname of a container (the id's first 12 chars).
    fn spec(&self, node: &NodeFile, task: &AssignedTask) -> Result<TaskSpec, String> {
        let ctx = template::Context {
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            task_id: task.id.clone(),
            task_name: task.name.clone(),
            task_slot: task
                .slot
                .map_or_else(|| node.node_id.clone(), |s| s.to_string()),
            node_id: node.node_id.clone(),
            node_hostname: self.shared.config.hostname.clone(),
        };
        let mut env: Vec<(String, String)> = vec![
            ("SHOAL_TASK_NAME".into(), task.name.clone()),
            ("SHOAL_NODE_HOSTNAME".into(), ctx.node_hostname.clone()),
        ];
        for kv in &task.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            let v = template::expand(v, &ctx)?;
            env.retain(|(old, _)| old != k);
            env.push((k.to_string(), v));
        }
        Ok(TaskSpec {
            id: task.id.clone(),
            name: task.name.clone(),
            hostname: task.id.chars().take(12).collect(),
            command: task.command.clone(),
            env,
            resolv_conf: RESOLV_CONF.into(),
            limits: shoal_runtime::Limits {
                nano_cpus: task.limits.nano_cpus,
                memory_bytes: task.limits.memory_bytes,
            },
            image: task.image.clone(),
            labels: swarm_labels(node, task),
            networks: task
                .networks
                .iter()
                .filter_map(|a| {
                    let n = self.networks.get(&a.network_id)?;
                    Some(shoal_runtime::TaskNetwork {
                        docker_network: n.name.clone(),
                        ip: a.ip,
                        prefix_len: n.subnet.prefix_len(),
                        shoal_network_id: n.id.clone(),
                    })
                })
                .collect(),
        })
    }

    fn attach(&self, task: &AssignedTask, netns: &Path) -> Result<(), String> {
        // Host-mode ports are the attacher's too, network or not.
        let host_ports = task
            .ports
            .iter()
            .any(|p| p.mode == crate::state::service::PublishMode::Host);
        if task.networks.is_empty() && !host_ports {
            return Ok(());
        }
        let Some(attacher) = self.shared.config.attacher.clone() else {
            return Err("this node has no data plane to attach the task's networks".into());
        };
        let networks = task
            .networks
            .iter()
            .map(|a| {
                self.networks.get(&a.network_id).cloned().ok_or_else(|| {
                    format!("network {} is not in this node's assignments", a.network_id)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        attacher.attach(task, &networks, netns)
    }

    fn detach(&self, task: &AssignedTask) {
        if let Some(attacher) = self.shared.config.attacher.clone() {
            attacher.detach(task);
        }
    }

    async fn fail_start(&mut self, id: &str, state: TaskState, err: String) {
        tracing::warn!(task = id, error = %err, "task did not start");
        if let Some(l) = self.local.get(id) {
            self.detach(&l.task.clone());
        }
        let runtime = self.runtime.clone();
        let rid = id.to_string();
        let _ = blocking(move || runtime.remove(&rid).map_err(|e| e.to_string())).await;
        if let Some(l) = self.local.get_mut(id) {
            l.exit = Some(TaskExit {
                code: -1,
                signal: None,
                oom_killed: false,
            });
        }
        self.report(id, status(state, "failed", Some(err)));
    }

    fn begin_stop(&mut self, id: &str) {
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        l.stopping = true;
        // Out of the rotation first, so that no new connection or lookup
        // picks it while it shuts down.
        let drain = match self.shared.config.attacher.clone() {
            Some(attacher) => {
                attacher.drain(&l.task);
                self.shared.config.drain_grace
            }
            None => Duration::ZERO,
        };
        let runtime = self.runtime.clone();
        let id = id.to_string();
        self.stops.spawn_blocking(move || {
            std::thread::sleep(drain);
            let exit = runtime.stop(&id, STOP_GRACE).ok();
            (id, exit)
        });
    }

    async fn stopped(&mut self, id: &str, exit: Option<TaskExit>) {
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        l.stopping = false;
        let exit = exit.unwrap_or(TaskExit {
            code: 137,
            signal: Some(9),
            oom_killed: false,
        });
        l.exit = Some(exit);
        let task = l.task.clone();
        self.release(&task).await;
        self.report(id, exit_status(&exit, true));
    }

    /// Frees an ended task's sandbox and interfaces (its logs stay).
    async fn release(&mut self, task: &AssignedTask) {
        self.detach(task);
        let runtime = self.runtime.clone();
        let id = task.id.clone();
        if let Err(e) = blocking(move || runtime.remove(&id).map_err(|e| e.to_string())).await {
            tracing::warn!(task = %task.name, error = %e, "cannot free the task's sandbox");
        }
    }

    async fn check_exits(&mut self) {
        let running: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| l.exit.is_none() && !l.stopping && l.reported >= TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in running {
            let runtime = self.runtime.clone();
            let wid = id.clone();
            let exit =
                match blocking(move || runtime.try_wait(&wid).map_err(|e| e.to_string())).await {
                    Ok(Some(exit)) => exit,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(task = %id, error = %e, "cannot check the task's process");
                        continue;
                    }
                };
            // The last lines the task wrote go out before its end is told.
            let Some(l) = self.local.get_mut(&id) else {
                continue;
            };
            l.exit = Some(exit);
            let asked = l.task.desired_state > TaskState::Running;
            let task = l.task.clone();
            tracing::info!(task = %task.name, code = exit.code, "task exited");
            self.release(&task).await;
            self.report(&id, exit_status(&exit, asked));
        }
    }

    async fn forget(&mut self, id: &str) {
        let Some(l) = self.local.remove(id) else {
            return;
        };
        if l.exit.is_none() {
            self.detach(&l.task);
        }
        let runtime = self.runtime.clone();
        let id = id.to_string();
        let _ = blocking(move || {
            if l.exit.is_none() && !l.stopping {
                let _ = runtime.stop(&id, STOP_GRACE);
            }
            runtime.remove(&id).map_err(|e| e.to_string())?;
            runtime.remove_logs(&id).map_err(|e| e.to_string())
        })
        .await;
    }

    async fn push_logs(&mut self, node: &NodeFile, client: &Client) {
        let mut lines = Vec::new();
        let mut cursors = Vec::new();
        let wanted: Vec<(String, u64)> = self
            .local
            .iter()
            .filter(|(_, l)| l.reported >= TaskState::Running || l.exit.is_some())
            .map(|(id, l)| (id.clone(), l.log_next))
            .collect();
        if wanted.is_empty() {
            return;
        }
        // A runtime may block reading logs (Docker's answers over its API).
        let runtime = self.runtime.clone();
        let chunks = blocking(move || {
            Ok(wanted
                .into_iter()
                .filter_map(|(id, since)| {
                    Some((id.clone(), runtime.logs(&id, since, LOG_BATCH).ok()?))
                })
                .collect::<Vec<_>>())
        })
        .await
        .unwrap_or_default();
        for (id, chunk) in chunks {
            let id = &id;
            if chunk.lines.is_empty() {
                continue;
            }
            cursors.push((id.clone(), chunk.next));
            lines.extend(chunk.lines.into_iter().map(|line| TaskLogLine {
                task_id: id.clone(),
                time_ns: line.time_ns,
                stream: match line.stream {
                    shoal_runtime::Stream::Stdout => "stdout".into(),
                    shoal_runtime::Stream::Stderr => "stderr".into(),
                },
                line: line.line,
            }));
        }
        if lines.is_empty() {
            return;
        }
        let body = LogsBody { lines };
        if let Err(e) = client
            .post_any::<_, ()>(&node.managers, 0, "/v1/logs", &body)
            .await
        {
            tracing::debug!(error = %e, "task logs not delivered");
            return;
        }
        for (id, next) in cursors {
            if let Some(l) = self.local.get_mut(&id) {
                l.log_next = next;
            }
        }
    }

    async fn send_reports(&mut self, node: &NodeFile, client: &Client) {
        if self.reports.is_empty() {
            return;
        }
        let body = TaskStatusBody {
            updates: self.reports.clone(),
        };
        match client
            .post_any::<_, ()>(&node.managers, 0, "/v1/task-status", &body)
            .await
        {
            Ok(_) => self.reports.clear(),
            Err(e) => tracing::debug!(error = %e, "task reports not delivered"),
        }
    }

    /// Leaving the swarm: every task stops.
    async fn stop_all(&mut self) {
        let ids: Vec<String> = self.local.keys().cloned().collect();
        for id in ids {
            self.forget(&id).await;
        }
        while self.stops.join_next().await.is_some() {}
    }
}

/// The labels Docker Swarm puts on a task's container.
fn swarm_labels(node: &NodeFile, task: &AssignedTask) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("com.docker.swarm.node.id".to_string(), node.node_id.clone()),
        (
            "com.docker.swarm.service.id".to_string(),
            task.service_id.clone(),
        ),
        (
            "com.docker.swarm.service.name".to_string(),
            task.service_name.clone(),
        ),
        ("com.docker.swarm.task.id".to_string(), task.id.clone()),
        ("com.docker.swarm.task.name".to_string(), task.name.clone()),
    ])
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("runtime call failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, desired: TaskState, state: TaskState) -> AssignedTask {
        AssignedTask {
            id: id.into(),
            name: format!("web.1.{id}"),
            service_id: "s".into(),
            service_name: "web".into(),
            slot: Some(1),
            desired_state: desired,
            state,
            image: None,
            command: vec!["true".into()],
            env: vec![],
            networks: vec![],
            limits: Default::default(),
            dnsrr: false,
            vips: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn assigned_tasks_start_and_stopped_ones_stop() {
        let a = [
            task("a", TaskState::Running, TaskState::Assigned),
            task("b", TaskState::Shutdown, TaskState::Running),
            task("c", TaskState::Running, TaskState::Running),
        ];
        let held = BTreeMap::from([
            ("b".to_string(), (false, false)),
            ("c".to_string(), (false, false)),
        ]);
        assert_eq!(
            decide(&a, &held),
            vec![
                Action::Start(Box::new(a[0].clone())),
                Action::Stop("b".into())
            ]
        );
        // A stop under way or an ended task is not stopped again.
        let held = BTreeMap::from([
            ("b".to_string(), (false, true)),
            ("c".to_string(), (true, false)),
        ]);
        assert_eq!(
            decide(&a, &held),
            vec![Action::Start(Box::new(a[0].clone()))]
        );
    }

    #[test]
    fn tasks_this_node_lost_are_reported_and_forgotten_ones_freed() {
        let a = [
            task("lost", TaskState::Running, TaskState::Running),
            task("gone", TaskState::Shutdown, TaskState::Starting),
            task("over", TaskState::Shutdown, TaskState::Failed),
        ];
        let held = BTreeMap::from([("old".to_string(), (true, false))]);
        assert_eq!(
            decide(&a, &held),
            vec![
                Action::ReportLost("lost".into()),
                Action::ReportStopped("gone".into()),
                Action::Forget("old".into()),
            ]
        );
    }

    #[test]
    fn exits_are_reported_in_dockers_words() {
        let exit = |code| TaskExit {
            code,
            signal: None,
            oom_killed: false,
        };
        let s = exit_status(&exit(137), false);
        assert_eq!(s.state, TaskState::Failed);
        assert_eq!(s.err.as_deref(), Some("task: non-zero exit (137)"));
        assert_eq!(s.exit_code, Some(137));
        assert_eq!(exit_status(&exit(0), false).state, TaskState::Complete);
        assert_eq!(exit_status(&exit(143), true).state, TaskState::Shutdown);
    }
}
