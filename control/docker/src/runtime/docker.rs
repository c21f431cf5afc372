//! [`DockerRuntime`]: tasks as containers of the local Docker Engine.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointIpamConfig,
    EndpointSettings, HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use shoal_runtime::{
    validate_id, LogChunk, Runtime, RuntimeError, Stream, TaskExit, TaskNetwork, TaskSpec,
};

use super::logs;

/// Where the Docker Engine listens by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The label naming the node whose daemon made a container.
pub const NODE_LABEL: &str = "io.shoal.node";
/// The label holding the task id of a container.
pub const TASK_LABEL: &str = "io.shoal.task";
/// The label of a Docker network holding the shoal network id.
pub const NETWORK_LABEL: &str = "io.shoal.network.id";
/// The driver option of a Docker network holding the shoal network id.
pub const NETWORK_OPTION: &str = "io.shoal.network";
/// The IPAM option of a Docker network holding the shoal network id.
pub const IPAM_NETWORK_OPTION: &str = "network";

/// How long a request may take, except `stop`, which adds its grace.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for the engine to report the exit after it returns.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Settings of a [`DockerRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The engine's Unix socket ([`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// The name of shoal's network and IPAM driver plugin (`"shoal"`).
    pub plugin: String,
    /// This node's id, put on every container as [`NODE_LABEL`].
    pub node_id: String,
}

impl DockerConfig {
    /// The default socket with `plugin` and `node_id`.
    pub fn new(plugin: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            plugin: plugin.into(),
            node_id: node_id.into(),
        }
    }
}

/// Runs tasks whose spec has an image as containers of the local Docker
/// Engine, through its API. See the [module docs](super).
pub struct DockerRuntime {
    config: DockerConfig,
    docker: Docker,
    /// `Option` only so that `Drop` can shut it down without blocking.
    rt: Option<tokio::runtime::Runtime>,
    tasks: Mutex<HashMap<String, Task>>,
    /// Held while a Docker network is looked up and created, so two tasks
    /// of one network do not both create it (see [`DockerRuntime::ensure_network`]).
    networks: Mutex<()>,
    /// `Docker <server version>`, as the managers are told.
    engine: String,
}

/// What the runtime remembers of a task it prepared.
struct Task {
    /// The container's name (the task's name).
    container: String,
    plugin_networking: bool,
    warnings: Vec<String>,
    started: bool,
    /// The exit recorded when the container disappeared under us.
    gone: Option<TaskExit>,
}

/// A container's state as the runtime needs it.
enum Seen {
    Created,
    Running,
    Exited(TaskExit),
    Missing,
}

fn step_err(task: &str, step: impl Into<String>, e: DockerError) -> RuntimeError {
    RuntimeError::Step {
        task: task.to_string(),
        step: step.into(),
        source: io::Error::other(e),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn exit_of(info: &ContainerInspectResponse) -> TaskExit {
    let state = info.state.as_ref();
    let code = state.and_then(|s| s.exit_code).unwrap_or(-1) as i32;
    TaskExit {
        code,
        // Docker reports 128 + n for a container killed by signal n and does
        // not say more; a process may also exit with such a code itself, so
        // the signal is not guessed.
        signal: None,
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
    }
}

fn seen_of(info: &ContainerInspectResponse) -> Seen {
    let status = info.state.as_ref().and_then(|s| s.status);
    match status {
        Some(ContainerStateStatusEnum::CREATED) => Seen::Created,
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => Seen::Running,
        _ => Seen::Exited(exit_of(info)),
    }
}

/// The subnet `ip/prefix_len` belongs to, as Docker writes it.
fn subnet(ip: Ipv4Addr, prefix_len: u8) -> String {
    let prefix_len = prefix_len.min(32);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    format!("{}/{prefix_len}", Ipv4Addr::from(u32::from(ip) & mask))
}

fn endpoint(net: &TaskNetwork) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(net.ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl DockerRuntime {
    /// Connects to the engine at `config.socket`, checks it answers, and
    /// removes the containers an earlier daemon of this node left
    /// (labelled [`NODE_LABEL`]`=<node_id>`): the manager replaces their
    /// tasks anyway.
    pub fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let socket = config.socket.display().to_string();
        let unreachable = |e: DockerError| {
            RuntimeError::Step {
            task: "-".into(),
            step: format!(
                "reach the Docker engine at {socket} (is dockerd running, and may this user use its socket?)"
            ),
            source: io::Error::other(e),
        }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("docker-runtime")
            .build()
            .map_err(|e| RuntimeError::Step {
                task: "-".into(),
                step: "start the Docker client's runtime".into(),
                source: e,
            })?;
        let docker = rt.block_on(async {
            let docker = Docker::connect_with_unix(
                &socket,
                REQUEST_TIMEOUT.as_secs(),
                bollard::API_DEFAULT_VERSION,
            )?;
            docker.ping().await?;
            // The engine may be older than bollard's models (20.10 speaks
            // 1.41): speak the lower of the two versions.
            let docker = docker.negotiate_version().await?;
            let version = docker.version().await?;
            Ok::<_, DockerError>((docker, version.version.unwrap_or_default()))
        });
        let (docker, server_version) = docker.map_err(unreachable)?;
        let version = docker.client_version();
        let runtime = Self {
            config,
            docker,
            rt: Some(rt),
            tasks: Mutex::new(HashMap::new()),
            networks: Mutex::new(()),
            engine: format!("Docker {server_version}"),
        };
        let mut removed = 0;
        for (id, container) in runtime.containers()? {
            runtime.remove_container(&id, &container)?;
            removed += 1;
        }
        tracing::info!(
            socket = %runtime.config.socket.display(),
            api = %version,
            removed,
            "Docker runtime ready"
        );
        Ok(runtime)
    }

    /// The settings it was made with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The engine, as `Docker <server version>`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Makes sure the Docker network `name` of shoal network
    /// `shoal_network_id` (subnet `subnet`) exists, with the plugin as its
    /// driver and IPAM driver: what `docker run --network NAME` needs.
    pub fn make_network(
        &self,
        name: &str,
        shoal_network_id: &str,
        subnet: std::net::Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), RuntimeError> {
        let net = TaskNetwork {
            docker_network: name.to_string(),
            ip: subnet,
            prefix_len,
            shoal_network_id: shoal_network_id.to_string(),
        };
        self.ensure_network("-", &net)
    }

    /// The network namespace path of a started container
    /// (`NetworkSettings.SandboxKey`), `None` when it has none or is unknown.
    pub fn sandbox_key(&self, id: &str) -> Option<PathBuf> {
        let container = self.container_name(id).ok()?;
        let info = self.inspect(&container).ok()??;
        info.network_settings?
            .sandbox_key
            .filter(|k| !k.is_empty())
            .map(PathBuf::from)
    }

    /// The pid of a running container's first process.
    pub fn container_pid(&self, id: &str) -> Option<u32> {
        let container = self.container_name(id).ok()?;
        let info = self.inspect(&container).ok()??;
        let pid = info.state?.pid?;
        u32::try_from(pid).ok().filter(|&p| p > 0)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(f)
    }

    fn tasks_map(&self) -> MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's containers: task id and container name.
    fn containers(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{NODE_LABEL}={}", self.config.node_id)],
        )]);
        let list = self
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })))
            .map_err(|e| step_err("-", "list this node's containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.labels?.get(TASK_LABEL)?.clone();
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                Some((id, name))
            })
            .collect())
    }

    /// The container name of a task: remembered, or found by its labels
    /// (a task prepared by another `DockerRuntime` of this node).
    fn container_name(&self, id: &str) -> Result<String, RuntimeError> {
        validate_id(id)?;
        if let Some(task) = self.tasks_map().get(id) {
            return Ok(task.container.clone());
        }
        self.containers()?
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, name)| name)
            .ok_or_else(|| RuntimeError::UnknownTask { id: id.to_string() })
    }

    /// Inspects a container; `None` when it does not exist.
    fn inspect(&self, container: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.block_on(
            self.docker
                .inspect_container(container, None::<InspectContainerOptions>),
        ) {
            Ok(info) => Ok(Some(info)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(step_err(container, "inspect the container", e)),
        }
    }

    /// The task's container state; a container that disappeared after it
    /// was started is an exit with 137 (as if killed), recorded once.
    fn observe(&self, id: &str) -> Result<(String, Seen), RuntimeError> {
        let container = self.container_name(id)?;
        if let Some(exit) = self.tasks_map().get(id).and_then(|t| t.gone) {
            return Ok((container, Seen::Exited(exit)));
        }
        let seen = match self.inspect(&container)? {
            Some(info) => seen_of(&info),
            None => Seen::Missing,
        };
        if !matches!(seen, Seen::Missing) {
            return Ok((container, seen));
        }
        let mut tasks = self.tasks_map();
        match tasks.get_mut(id) {
            Some(task) if task.started => {
                tracing::warn!(
                    task = %container,
                    "the task's container disappeared (removed outside shoal?): counted as killed"
                );
                let exit = TaskExit {
                    code: 137,
                    signal: None,
                    oom_killed: false,
                };
                task.gone = Some(exit);
                Ok((container, Seen::Exited(exit)))
            }
            _ => Ok((container, Seen::Missing)),
        }
    }

    /// Makes sure the Docker network of `net` exists and is shoal's.
    ///
    /// The engine takes `CheckDuplicate` only before API 1.44 and bollard's
    /// models are newer and lack it, so two creations of one name are kept
    /// apart by a lock here (one daemon per node makes the networks) and
    /// the name is checked exactly (the engine also matches id prefixes).
    fn ensure_network(&self, task: &str, net: &TaskNetwork) -> Result<(), RuntimeError> {
        let _guard = self.networks.lock().unwrap_or_else(|p| p.into_inner());
        let name = &net.docker_network;
        let invalid = |reason: String| RuntimeError::InvalidSpec {
            task: task.to_string(),
            field: "networks",
            reason,
        };
        let found = self.block_on(
            self.docker
                .inspect_network(name, None::<InspectNetworkOptions>),
        );
        match found {
            Ok(info) if info.name.as_deref() == Some(name.as_str()) => {
                let driver = info.driver.unwrap_or_default();
                if driver != self.config.plugin {
                    return Err(invalid(format!(
                        "Docker network {name:?} exists with driver {driver:?}, not shoal's \
                         {:?}: remove it (docker network rm {name}) or rename the shoal network",
                        self.config.plugin
                    )));
                }
                let labelled = info.labels.as_ref().and_then(|l| l.get(NETWORK_LABEL));
                if labelled != Some(&net.shoal_network_id) {
                    let owner = labelled.map_or("(none)", String::as_str);
                    return Err(invalid(format!(
                        "Docker network {name:?} belongs to shoal network {owner}, not {}: \
                         remove the stale one (docker network rm {name})",
                        net.shoal_network_id
                    )));
                }
                return Ok(());
            }
            Ok(_) => {} // another network whose id starts with the name
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(step_err(task, format!("inspect Docker network {name}"), e)),
        }
        let id_map = |k: &str| HashMap::from([(k.to_string(), net.shoal_network_id.clone())]);
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some(self.config.plugin.clone()),
            ipam: Some(Ipam {
                driver: Some(self.config.plugin.clone()),
                // The engine lets a container ask for an address only on a
                // network with a configured subnet.
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet(net.ip, net.prefix_len)),
                    ..Default::default()
                }]),
                options: Some(id_map(IPAM_NETWORK_OPTION)),
            }),
            options: Some(id_map(NETWORK_OPTION)),
            labels: Some(id_map(NETWORK_LABEL)),
            ..Default::default()
        };
        self.block_on(self.docker.create_network(request))
            .map_err(|e| step_err(task, format!("create Docker network {name}"), e))?;
        tracing::info!(network = %name, shoal_network = %net.shoal_network_id, "Docker network created");
        Ok(())
    }

    /// Force-removes a container (and its anonymous volumes); a missing one is fine.
    fn remove_container(&self, task: &str, container: &str) -> Result<(), RuntimeError> {
        let removed = self.block_on(self.docker.remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        ));
        match removed {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409 "removal already in progress" is done by someone else.
            Err(DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(step_err(task, "remove the container", e)),
        }
    }

    fn create(&self, spec: &TaskSpec, container: &str) -> Result<Vec<String>, RuntimeError> {
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(NODE_LABEL.into(), self.config.node_id.clone());
        labels.insert(TASK_LABEL.into(), spec.id.clone());
        let (network_mode, endpoints) = match spec.networks.first() {
            Some(first) => (
                first.docker_network.clone(),
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        first.docker_network.clone(),
                        endpoint(first),
                    )])),
                }),
            ),
            None => ("none".to_string(), None),
        };
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: spec.image.clone(),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network_mode),
                nano_cpus: spec.limits.nano_cpus.map(to_i64),
                memory: spec.limits.memory_bytes.map(to_i64),
                // The swarm orchestrator restarts tasks, never the engine.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::new()),
                }),
                ..Default::default()
            }),
            networking_config: endpoints,
            ..Default::default()
        };
        let created = self
            .block_on(self.docker.create_container(
                Some(CreateContainerOptions {
                    name: Some(container.to_string()),
                    ..Default::default()
                }),
                body,
            ))
            .map_err(|e| step_err(container, "create the container", e))?;
        // Before API 1.44 a container is created on one network only; the
        // others are connected before it starts, so every interface is there
        // when the command runs. The engine (20.10) joins them in an order of
        // its own, not this one: `eth0` is not always the first network, so
        // a task tells its interfaces apart by their addresses.
        for net in spec.networks.iter().skip(1) {
            let connected = self.block_on(self.docker.connect_network(
                &net.docker_network,
                NetworkConnectRequest {
                    container: created.id.clone(),
                    endpoint_config: Some(endpoint(net)),
                },
            ));
            if let Err(e) = connected {
                let _ = self.remove_container(container, container);
                return Err(step_err(
                    container,
                    format!("connect the container to network {}", net.docker_network),
                    e,
                ));
            }
        }
        Ok(created.warnings)
    }
}

impl Runtime for DockerRuntime {
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
        validate_id(&spec.id)?;
        let container = if spec.name.is_empty() {
            spec.id.clone()
        } else {
            spec.name.clone()
        };
        if self.tasks_map().contains_key(&spec.id) {
            return Ok(PathBuf::new());
        }
        let invalid = |field, reason: String| RuntimeError::InvalidSpec {
            task: container.clone(),
            field,
            reason,
        };
        let Some(image) = spec.image.as_deref().filter(|i| !i.is_empty()) else {
            return Err(invalid(
                "image",
                "no image: only tasks of services created with --image run in Docker".into(),
            ));
        };
        let mut warnings = Vec::new();
        match self.inspect(&container)? {
            Some(info)
                if info
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(TASK_LABEL))
                    == Some(&spec.id) =>
            {
                // Made by an earlier call that did not return: reuse it.
                tracing::debug!(task = %container, "reusing the task's container");
            }
            Some(_) => {
                return Err(invalid(
                    "name",
                    format!("a container named {container:?} exists and is not this task's"),
                ))
            }
            None => {
                match self.block_on(self.docker.inspect_image(image)) {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {
                        return Err(invalid(
                            "image",
                            format!("image {image} is not on this node (shoal does not pull)"),
                        ))
                    }
                    Err(e) => {
                        return Err(step_err(&container, format!("inspect image {image}"), e))
                    }
                }
                for net in &spec.networks {
                    self.ensure_network(&container, net)?;
                }
                warnings = self.create(spec, &container)?;
                for w in &warnings {
                    tracing::warn!(task = %container, "{w}");
                }
                tracing::debug!(task = %container, image, "container created");
            }
        }
        self.tasks_map().insert(
            spec.id.clone(),
            Task {
                container,
                plugin_networking: !spec.networks.is_empty(),
                warnings,
                started: false,
                gone: None,
            },
        );
        Ok(PathBuf::new())
    }

    fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        let (container, seen) = self.observe(id)?;
        match seen {
            Seen::Created => {}
            Seen::Missing => return Err(RuntimeError::UnknownTask { id: id.to_string() }),
            Seen::Running | Seen::Exited(_) => {
                return Err(RuntimeError::AlreadyStarted { task: container })
            }
        }
        self.block_on(self.docker.start_container(&container, None))
            .map_err(|e| step_err(&container, "start the container", e))?;
        if let Some(task) = self.tasks_map().get_mut(id) {
            task.started = true;
        }
        let info = self.inspect(&container)?;
        // A command that exits at once has no pid any more: 0 then.
        let pid = info
            .and_then(|i| i.state?.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        tracing::info!(task = %container, pid, "container started");
        Ok(pid)
    }

    fn try_wait(&self, id: &str) -> Result<Option<TaskExit>, RuntimeError> {
        match self.observe(id)? {
            (task, Seen::Created) => Err(RuntimeError::NotStarted { task }),
            (_, Seen::Running) => Ok(None),
            (_, Seen::Exited(exit)) => Ok(Some(exit)),
            (_, Seen::Missing) => Err(RuntimeError::UnknownTask { id: id.to_string() }),
        }
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<TaskExit, RuntimeError> {
        let container = match self.observe(id)? {
            (task, Seen::Created) => return Err(RuntimeError::NotStarted { task }),
            (_, Seen::Exited(exit)) => return Ok(exit),
            (_, Seen::Missing) => return Err(RuntimeError::UnknownTask { id: id.to_string() }),
            (container, Seen::Running) => container,
        };
        // The engine counts whole seconds; round up so the task gets its grace.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let docker = self
            .docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT + Duration::from_secs(secs));
        let stopped = self.block_on(docker.stop_container(
            &container,
            Some(StopContainerOptions {
                t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
                signal: None,
            }),
        ));
        match stopped {
            Ok(()) => {}
            // 304: it exited meanwhile; 404: it disappeared (observed below).
            Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(step_err(&container, "stop the container", e)),
        }
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            match self.observe(id)? {
                (_, Seen::Exited(exit)) => return Ok(exit),
                (_, Seen::Missing) => return Err(RuntimeError::UnknownTask { id: id.to_string() }),
                (container, _) if Instant::now() >= deadline => {
                    return Err(RuntimeError::Step {
                        task: container,
                        step: "stop the container".into(),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the engine stopped it but still reports it running",
                        ),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let container = match self.container_name(id) {
            Ok(c) => c,
            Err(RuntimeError::UnknownTask { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remove_container(&container, &container)?;
        self.tasks_map().remove(id);
        tracing::debug!(task = %container, "container removed");
        Ok(())
    }

    fn remove_logs(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        // The engine deletes a container's log with the container.
        match self.tasks_map().get(id) {
            Some(task) => Err(RuntimeError::StillHeld {
                task: task.container.clone(),
            }),
            None => Ok(()),
        }
    }

    fn logs(&self, id: &str, since: u64, max: usize) -> Result<LogChunk, RuntimeError> {
        let container = self.container_name(id)?;
        // Every line the engine keeps, numbered from 0: the cursor is the
        // number of the next line, as in the process runtime.
        let all = self.block_on(async {
            let mut lines = Vec::new();
            let mut frames = self.docker.logs(
                &container,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    timestamps: true,
                    tail: "all".into(),
                    ..Default::default()
                }),
            );
            while let Some(frame) = frames.next().await {
                match frame? {
                    bollard::container::LogOutput::StdOut { message } => {
                        logs::frame_lines(Stream::Stdout, &message, &mut lines)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        logs::frame_lines(Stream::Stderr, &message, &mut lines)
                    }
                    _ => {}
                }
            }
            Ok::<_, DockerError>(lines)
        });
        let all = match all {
            Ok(lines) => lines,
            Err(e) if is_not_found(&e) => {
                return Err(RuntimeError::UnknownTask { id: id.to_string() })
            }
            Err(e) => return Err(step_err(&container, "read the container's log", e)),
        };
        let start = usize::try_from(since).unwrap_or(usize::MAX).min(all.len());
        let lines: Vec<_> = all.into_iter().skip(start).take(max).collect();
        Ok(LogChunk {
            next: (start + lines.len()) as u64,
            lines,
        })
    }

    fn tasks(&self) -> Vec<String> {
        let mut ids: Vec<String> = match self.containers() {
            Ok(list) => list.into_iter().map(|(id, _)| id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the Docker tasks");
                self.tasks_map().keys().cloned().collect()
            }
        };
        ids.sort();
        ids.dedup();
        ids
    }

    fn warnings(&self, id: &str) -> Vec<String> {
        self.tasks_map()
            .get(id)
            .map(|t| t.warnings.clone())
            .unwrap_or_default()
    }

    fn plugin_networking(&self, id: &str) -> bool {
        self.tasks_map()
            .get(id)
            .is_some_and(|t| t.plugin_networking)
    }
}

impl Drop for DockerRuntime {
    /// Containers stay (the next daemon removes them); the client's runtime
    /// is shut down without blocking, so dropping is safe in async code.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert_eq!(subnet(Ipv4Addr::new(10, 0, 1, 7), 24), "10.0.1.0/24");
        assert_eq!(subnet(Ipv4Addr::new(10, 0, 1, 7), 32), "10.0.1.7/32");
        assert_eq!(subnet(Ipv4Addr::new(10, 0, 1, 7), 0), "0.0.0.0/0");
        assert_eq!(subnet(Ipv4Addr::new(172, 18, 200, 1), 12), "172.16.0.0/12");
    }
}
