//! [`ProcessRuntime`]: tasks as host processes in their own namespaces.
//!
//! Every fork happens on one long-lived *spawner* thread owned by the
//! runtime. `PR_SET_PDEATHSIG` fires when the thread that forked the child
//! ends, not the process: forking from the agent's `spawn_blocking` threads,
//! which tokio retires after a few idle seconds, would kill the tasks with
//! them. The spawner lives as long as the runtime, so tasks die with the
//! daemon (or with the runtime, which also kills them on drop) and not before.
//!
//! State on disk, under the state directory: `run/<id>.resolv.conf` (removed
//! with the task, and all of `run/` by the next daemon) and `logs/<id>.log*`
//! (kept until [`Runtime::remove_logs`]). The network namespace is held only
//! by a descriptor, so a dead daemon leaves none behind.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoal_sys::sandbox::{self, SandboxSpec};

use crate::cgroup::{self, Cgroups};
use crate::log::{self, LogWriter};
use crate::{
    validate_id, LogChunk, Runtime, RuntimeError, Stream, TaskExit, TaskSpec, DEFAULT_PATH,
};

/// How long to wait for a SIGKILLed task to be reaped before giving up.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a task's output readers may take to drain after it exited.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How often `stop` checks whether the process exited.
const POLL: Duration = Duration::from_millis(10);

/// Settings of a [`ProcessRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Where resolv.conf files (`run/`) and logs (`logs/`) go.
    pub state_dir: PathBuf,
    /// The cgroup2 directory under which task cgroups are made; `None` for
    /// the daemon's own cgroup in the unified hierarchy.
    pub cgroup_root: Option<PathBuf>,
    /// The directory under the cgroup root that holds the task cgroups.
    pub cgroup_name: String,
    /// A task's log file is rotated when it would pass this size; one old
    /// file is kept, so a task's log takes at most twice this.
    pub log_max_bytes: u64,
}

impl RuntimeConfig {
    /// The defaults: the daemon's own cgroup, `shoal/<id>`, 8 MiB logs.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            cgroup_root: None,
            cgroup_name: "shoal".into(),
            log_max_bytes: 8 << 20,
        }
    }
}

/// Runs tasks as processes of the daemon's host, each in its own network,
/// UTS and mount namespaces. See the [crate docs](crate).
pub struct ProcessRuntime {
    run_dir: PathBuf,
    log_dir: PathBuf,
    log_max_bytes: u64,
    cgroups: Result<Cgroups, String>,
    tasks: Mutex<HashMap<String, Arc<Mutex<Task>>>>,
    spawner: Spawner,
}

struct Task {
    spec: TaskSpec,
    netns: Option<OwnedFd>,
    netns_path: PathBuf,
    resolv: PathBuf,
    cgroup: Option<PathBuf>,
    warnings: Vec<String>,
    state: State,
}

enum State {
    Prepared,
    Running(Running),
    Exited(TaskExit),
}

struct Running {
    child: Child,
    /// Each output reader sends once when its pipe is closed.
    drained: mpsc::Receiver<()>,
    readers: usize,
}

impl ProcessRuntime {
    /// A runtime with the default settings and state under `state_dir`.
    pub fn new(state_dir: PathBuf) -> Result<Self, RuntimeError> {
        Self::with_config(RuntimeConfig::new(state_dir))
    }

    /// A runtime with `config`. Removes what an earlier daemon left: its
    /// resolv.conf files and its empty task cgroups.
    pub fn with_config(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let state_err = |step| {
            let path = config.state_dir.clone();
            move |source| RuntimeError::StateDir { path, step, source }
        };
        let run_dir = config.state_dir.join("run");
        let log_dir = config.state_dir.join("logs");
        fs::create_dir_all(&run_dir).map_err(state_err("create run/"))?;
        fs::create_dir_all(&log_dir).map_err(state_err("create logs/"))?;
        let mut stale = 0;
        for entry in fs::read_dir(&run_dir).map_err(state_err("list run/"))? {
            let entry = entry.map_err(state_err("list run/"))?;
            fs::remove_file(entry.path()).map_err(state_err("remove a stale file in run/"))?;
            stale += 1;
        }
        if config.cgroup_name.is_empty() || config.cgroup_name.contains('/') {
            return Err(RuntimeError::StateDir {
                path: config.state_dir.clone(),
                step: "use cgroup_name",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} is not a directory name", config.cgroup_name),
                ),
            });
        }
        let cgroups = Cgroups::detect(config.cgroup_root.as_deref(), &config.cgroup_name);
        match &cgroups {
            Ok(c) => stale += c.sweep(),
            Err(reason) => tracing::info!(%reason, "no cgroup v2 for tasks: limits will not apply"),
        }
        if stale > 0 {
            tracing::info!(stale, "removed what an earlier runtime left");
        }
        Ok(Self {
            run_dir,
            log_dir,
            log_max_bytes: config.log_max_bytes,
            cgroups,
            tasks: Mutex::new(HashMap::new()),
            spawner: Spawner::start().map_err(state_err("start the spawner thread"))?,
        })
    }

    /// Why task cgroups are not made, when they are not.
    pub fn cgroup_unavailable(&self) -> Option<&str> {
        self.cgroups.as_ref().err().map(String::as_str)
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<Task>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn task(&self, id: &str) -> Result<Arc<Mutex<Task>>, RuntimeError> {
        validate_id(id)?;
        self.tasks()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownTask { id: id.to_string() })
    }
}

fn lock(task: &Mutex<Task>) -> MutexGuard<'_, Task> {
    task.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_spec(spec: &TaskSpec) -> Result<(), RuntimeError> {
    validate_id(&spec.id)?;
    let task = if spec.name.is_empty() {
        &spec.id
    } else {
        &spec.name
    };
    let invalid = |field, reason: &str| RuntimeError::InvalidSpec {
        task: task.clone(),
        field,
        reason: reason.to_string(),
    };
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(invalid("command", "no command to run"));
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(invalid("command", "an argument contains a NUL byte"));
    }
    let h = &spec.hostname;
    if h.is_empty() || h.len() > 64 || h.contains('\0') {
        return Err(invalid("hostname", "must be 1 to 64 bytes without NUL"));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(
                "env",
                &format!(
                    "{k:?} is not a valid variable (no '=' or NUL in names, no NUL in values)"
                ),
            ));
        }
    }
    Ok(())
}

/// The task's whole environment: its own, plus `PATH` and `HOSTNAME` if absent.
fn task_env(spec: &TaskSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), spec.hostname.clone()));
    }
    env
}

/// Finds `program` the way `execvp` would with the task's `PATH`; `None` when
/// no executable file is there (or, for a path with a `/`, nothing at all).
fn look_path(program: &str, path: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        // An explicit path is left to exec, which names the precise failure
        // (permission denied, bad format) when it exists.
        let p = PathBuf::from(program);
        return fs::metadata(&p).is_ok().then_some(p);
    }
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|p| executable(p))
}

fn exit_of(status: ExitStatus) -> TaskExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => TaskExit {
            code,
            signal: None,
            oom_killed: false,
        },
        (None, Some(sig)) => TaskExit {
            code: 128 + sig,
            signal: Some(sig),
            oom_killed: false,
        },
        // Neither: stopped or continued, which `wait` does not report here.
        (None, None) => TaskExit {
            code: -1,
            signal: None,
            oom_killed: false,
        },
    }
}

impl Task {
    fn name(&self) -> &str {
        if self.spec.name.is_empty() {
            &self.spec.id
        } else {
            &self.spec.name
        }
    }

    /// Reaps the process if it ended; records and returns the exit.
    fn poll(&mut self) -> Result<Option<TaskExit>, RuntimeError> {
        let running = match &mut self.state {
            State::Prepared => {
                return Err(RuntimeError::NotStarted {
                    task: self.name().to_string(),
                })
            }
            State::Exited(exit) => return Ok(Some(*exit)),
            State::Running(running) => running,
        };
        let status = match running.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return Ok(None),
            Err(e) => return Err(RuntimeError::step(self.name(), "wait for the process", e)),
        };
        let pid = running.child.id() as i32;
        let mut exit = exit_of(status);
        // What the task started dies with it, as in a container: its group
        // (the leader's pid stays reserved while the group has members) and
        // its cgroup, which also holds what left the group.
        let _ = sandbox::kill_group(pid, libc::SIGKILL);
        if let Some(dir) = &self.cgroup {
            exit.oom_killed = cgroup::oom_killed(dir);
            cgroup::kill_all(dir);
        }
        // Let the readers write the last lines before anyone reads the log.
        let deadline = Instant::now() + DRAIN_WAIT;
        for _ in 0..running.readers {
            let left = deadline.saturating_duration_since(Instant::now());
            if running.drained.recv_timeout(left).is_err() {
                tracing::warn!(task = %self.spec.name, "output still open after the task exited");
                break;
            }
        }
        tracing::debug!(task = %self.spec.name, code = exit.code, "task exited");
        self.state = State::Exited(exit);
        Ok(Some(exit))
    }

    /// Polls until the process exits or `timeout` passes.
    fn wait_for(&mut self, timeout: Duration) -> Result<Option<TaskExit>, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.poll()? {
                return Ok(Some(exit));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    fn signal(&self, signal: i32) -> Result<(), RuntimeError> {
        let State::Running(running) = &self.state else {
            return Ok(());
        };
        let pid = running.child.id() as i32;
        sandbox::kill_group(pid, signal)
            .map(drop)
            .map_err(|e| RuntimeError::step(self.name(), format!("send signal {signal}"), e))
    }

    /// SIGKILL to everything of the task and a bounded wait for the leader.
    fn kill(&mut self) -> Result<Option<TaskExit>, RuntimeError> {
        if !matches!(self.state, State::Running(_)) {
            return Ok(None);
        }
        self.signal(libc::SIGKILL)?;
        if let Some(dir) = &self.cgroup {
            cgroup::kill_all(dir);
        }
        match self.wait_for(KILL_WAIT)? {
            Some(exit) => Ok(Some(exit)),
            None => Err(RuntimeError::step(
                self.name(),
                "stop the process",
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("it did not exit {KILL_WAIT:?} after SIGKILL (stuck in the kernel?)"),
                ),
            )),
        }
    }

    /// Kills the process and frees the namespace, cgroup and resolv.conf.
    fn teardown(&mut self) -> Result<(), RuntimeError> {
        let killed = self.kill();
        self.netns = None;
        let mut result = killed.map(drop);
        if let Some(dir) = self.cgroup.take() {
            if let Err(e) = cgroup::remove(&dir, Duration::from_secs(2)) {
                result = result.and(Err(RuntimeError::step(
                    self.name(),
                    format!("remove cgroup {}", dir.display()),
                    e,
                )));
            }
        }
        match fs::remove_file(&self.resolv) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                result = result.and(Err(RuntimeError::step(
                    self.name(),
                    format!("remove {}", self.resolv.display()),
                    e,
                )))
            }
        }
        result
    }
}

impl Runtime for ProcessRuntime {
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
        check_spec(spec)?;
        let mut tasks = self.tasks();
        if let Some(task) = tasks.get(&spec.id) {
            return Ok(lock(task).netns_path.clone());
        }
        let name = if spec.name.is_empty() {
            &spec.id
        } else {
            &spec.name
        };
        let netns = sandbox::new_netns().map_err(|e| RuntimeError::step(name, e.step, e.source))?;
        let netns_path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            netns.as_raw_fd()
        ));
        let resolv = self.run_dir.join(format!("{}.resolv.conf", spec.id));
        fs::write(&resolv, &spec.resolv_conf)
            .map_err(|e| RuntimeError::step(name, format!("write {}", resolv.display()), e))?;
        tracing::debug!(task = %name, netns = %netns_path.display(), "task prepared");
        tasks.insert(
            spec.id.clone(),
            Arc::new(Mutex::new(Task {
                spec: spec.clone(),
                netns: Some(netns),
                netns_path: netns_path.clone(),
                resolv,
                cgroup: None,
                warnings: Vec::new(),
                state: State::Prepared,
            })),
        );
        Ok(netns_path)
    }

    fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        let task = self.task(id)?;
        let mut task = lock(&task);
        let task = &mut *task;
        let name = task.name().to_string();
        if !matches!(task.state, State::Prepared) {
            return Err(RuntimeError::AlreadyStarted { task: name });
        }
        let env = task_env(&task.spec);
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let argv0 = &task.spec.command[0];
        let program = look_path(argv0, path).ok_or_else(|| RuntimeError::NotFound {
            task: name.clone(),
            program: argv0.clone(),
        })?;
        let netns = task
            .netns
            .as_ref()
            .ok_or_else(|| RuntimeError::UnknownTask { id: id.to_string() })?
            .try_clone()
            .map_err(|e| RuntimeError::step(&name, "duplicate the namespace descriptor", e))?;

        // The cgroup: made where possible; limits that cannot apply are warnings.
        let mut warnings = Vec::new();
        let mut procs = None;
        match &self.cgroups {
            Ok(cgroups) => match cgroups.create(id, &task.spec.limits) {
                Ok((dir, w)) => {
                    warnings.extend(w);
                    match cgroup::open_procs(&dir) {
                        Ok(f) => procs = Some(f),
                        Err(e) => warnings.push(format!(
                            "task not placed in cgroup {}: {e}{}",
                            dir.display(),
                            if task.spec.limits.any() {
                                "; limits not applied"
                            } else {
                                ""
                            }
                        )),
                    }
                    task.cgroup = Some(dir);
                }
                Err(e) if task.spec.limits.any() => warnings.push(format!(
                    "limits not applied: cannot create the task's cgroup: {e}"
                )),
                Err(_) => {}
            },
            Err(reason) if task.spec.limits.any() => {
                warnings.push(format!("limits not applied: no cgroup v2 ({reason})"))
            }
            Err(_) => {}
        }
        for w in &warnings {
            tracing::warn!(task = %name, "{w}");
        }
        task.warnings.extend(warnings);

        let log = LogWriter::open(&self.log_dir, id, self.log_max_bytes)
            .map_err(|e| RuntimeError::step(&name, "open the task's log", e))?;
        let mut cmd = Command::new(&program);
        cmd.arg0(argv0)
            .args(&task.spec.command[1..])
            .env_clear()
            .envs(env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let hostname = task.spec.hostname.clone();
        let resolv = task.resolv.clone();
        let spawned = self.spawner.run(move || {
            let spec = SandboxSpec {
                netns: netns.as_fd(),
                hostname: &hostname,
                resolv_conf: &resolv,
                cgroup_procs: procs.as_ref().map(|f| f.as_fd()),
            };
            sandbox::spawn(cmd, &spec)
        });
        let mut child = match spawned {
            Some(Ok(child)) => child,
            Some(Err(e)) => {
                if let Some(dir) = task.cgroup.take() {
                    let _ = cgroup::remove(&dir, Duration::from_secs(1));
                }
                let step = if e.step == "execute the command" {
                    format!(
                        "start the command: exec {:?}",
                        program.display().to_string()
                    )
                } else {
                    format!("start the command: {}", e.step)
                };
                return Err(RuntimeError::step(&name, step, e.source));
            }
            None => {
                return Err(RuntimeError::step(
                    &name,
                    "start the command",
                    io::Error::other("the spawner thread is gone"),
                ))
            }
        };
        let (done, drained) = mpsc::channel();
        let log = Arc::new(Mutex::new(log));
        let mut readers = 0;
        if let Some(out) = child.stdout.take() {
            log::spawn_reader(&name, Stream::Stdout, out, log.clone(), done.clone())
                .map_err(|e| RuntimeError::step(&name, "start the stdout reader", e))?;
            readers += 1;
        }
        if let Some(err) = child.stderr.take() {
            log::spawn_reader(&name, Stream::Stderr, err, log, done)
                .map_err(|e| RuntimeError::step(&name, "start the stderr reader", e))?;
            readers += 1;
        }
        let pid = child.id();
        tracing::info!(task = %name, pid, program = %program.display(), "task started");
        task.state = State::Running(Running {
            child,
            drained,
            readers,
        });
        Ok(pid)
    }

    fn try_wait(&self, id: &str) -> Result<Option<TaskExit>, RuntimeError> {
        let task = self.task(id)?;
        let mut task = lock(&task);
        task.poll()
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<TaskExit, RuntimeError> {
        let task = self.task(id)?;
        let mut task = lock(&task);
        if let Some(exit) = task.poll()? {
            return Ok(exit);
        }
        task.signal(libc::SIGTERM)?;
        if let Some(exit) = task.wait_for(grace)? {
            return Ok(exit);
        }
        tracing::info!(task = %task.name(), ?grace, "task ignored SIGTERM: killing it");
        match task.kill()? {
            Some(exit) => Ok(exit),
            None => task.poll()?.ok_or_else(|| RuntimeError::NotStarted {
                task: task.name().to_string(),
            }),
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let Some(task) = self.tasks().remove(id) else {
            return Ok(());
        };
        let mut task = lock(&task);
        task.teardown()
    }

    fn remove_logs(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        if let Some(task) = self.tasks().get(id) {
            return Err(RuntimeError::StillHeld {
                task: lock(task).name().to_string(),
            });
        }
        log::remove(&self.log_dir, id).map_err(|e| RuntimeError::step(id, "remove the log", e))
    }

    fn logs(&self, id: &str, since: u64, max: usize) -> Result<LogChunk, RuntimeError> {
        validate_id(id)?;
        let (current, old) = log::paths(&self.log_dir, id);
        if !current.exists() && !old.exists() && !self.tasks().contains_key(id) {
            return Err(RuntimeError::UnknownTask { id: id.to_string() });
        }
        log::read(&self.log_dir, id, since, max)
            .map_err(|e| RuntimeError::step(id, "read the log", e))
    }

    fn tasks(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.tasks().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn warnings(&self, id: &str) -> Vec<String> {
        self.task(id)
            .map(|t| lock(&t).warnings.clone())
            .unwrap_or_default()
    }
}

impl Drop for ProcessRuntime {
    /// Kills every task and frees its sandbox; logs stay.
    fn drop(&mut self) {
        let tasks: Vec<_> = self.tasks().drain().collect();
        for (_, task) in tasks {
            let mut task = lock(&task);
            if let Err(e) = task.teardown() {
                tracing::warn!(error = %e, "cleanup on drop");
            }
        }
        if let Ok(cgroups) = &self.cgroups {
            cgroups.remove_parent();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The long-lived thread every task is forked from (see the module docs).
struct Spawner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawner {
    fn start() -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("task-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the spawner thread; `None` if the thread is gone.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.as_ref()?.send(job).ok()?;
        drop(jobs);
        rx.recv().ok()
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
