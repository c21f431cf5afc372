//! A named network namespace of a topology, and the commands that make and
//! remove one.
//!
//! Code runs inside a namespace two ways: closures through
//! [`shoal_sys::netns::NetNs::run`] (a dedicated thread enters the namespace, so
//! the test harness's threads never change namespace), and programs through
//! `ip netns exec`, which enters it before exec'ing the program (so the process
//! id we hold is the program's own). A [`Namespace`] opens the namespace anew for
//! every closure instead of holding a descriptor: a held descriptor would keep
//! the namespace, and its veths, alive after the topology removed it.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use shoal_sys::netns::{NetNs, NETNS_RUN_DIR};

use crate::child::{log, ManagedChild, Registry};
use crate::command::{run_bounded, run_checked, COMMAND_TIME_LIMIT};
use crate::name::Role;
use crate::TopologyError;

/// How long the `ip` commands that build and remove namespaces may take.
const IP_TIME_LIMIT: Duration = Duration::from_secs(30);

/// A network namespace made by a [`crate::Topology`].
///
/// A cheap handle (clone it freely): the namespace belongs to the topology and
/// is removed when the topology is dropped, whatever handles are left. Using a
/// handle after that fails with [`TopologyError::Removed`].
#[derive(Clone)]
pub struct Namespace {
    name: String,
    label: String,
    role: Role,
    path: PathBuf,
    children: Arc<Registry>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .field("label", &self.label)
            .field("role", &self.role)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(name: String, label: String, role: Role, children: Arc<Registry>) -> Self {
        let path = Path::new(NETNS_RUN_DIR).join(&name);
        Namespace {
            name,
            label,
            role,
            path,
            children,
        }
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the namespace is bound: `/var/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the topology calls it: `bridge`, `node0`, `client1`, or the label
    /// given to [`crate::Topology::add_bare_namespace`].
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What it stands for in the topology.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Runs `f` on a dedicated thread inside the namespace and returns its
    /// result; a panic in `f` is propagated. Sockets opened in `f` stay in the
    /// namespace when handed back to other threads.
    pub fn run<F, R>(&self, f: F) -> Result<R, TopologyError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.check_alive()?;
        Ok(NetNs::open(&self.path)?.run(f)?)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME
    /// program`); add arguments and stdio settings, then run it with
    /// [`Namespace::spawn`], [`Namespace::output`] or `std`'s own methods.
    /// Processes not started through `spawn` are not tracked, but any still in
    /// the namespace when the topology is dropped get SIGKILL.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.name).arg(program);
        cmd
    }

    /// Runs `argv` (program first) inside the namespace to completion, within
    /// [`COMMAND_TIME_LIMIT`], and returns what it wrote; fails with its stderr
    /// when it exits unsuccessfully.
    pub fn output<I, S>(&self, argv: I) -> Result<Output, TopologyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.output_within(argv, COMMAND_TIME_LIMIT)
    }

    /// [`Namespace::output`] with a time limit of the caller's choosing.
    pub fn output_within<I, S>(&self, argv: I, limit: Duration) -> Result<Output, TopologyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.check_alive()?;
        let mut argv = argv.into_iter();
        let program = argv.next().ok_or_else(|| TopologyError::EmptyCommand {
            name: self.name.clone(),
        })?;
        let mut cmd = self.command(program);
        cmd.args(argv);
        run_checked(&mut cmd, None, limit)
    }

    /// Starts `cmd` (usually made by [`Namespace::command`]) and tracks it: the
    /// returned handle stops it when dropped, and the topology stops it before
    /// removing its namespaces if the handle is still alive then. Stdio is as
    /// `cmd` says (inherited unless set).
    pub fn spawn(&self, cmd: Command) -> Result<ManagedChild, TopologyError> {
        self.children.spawn(cmd, &self.name)
    }

    fn check_alive(&self) -> Result<(), TopologyError> {
        if self.children.is_closed() {
            return Err(TopologyError::Removed {
                name: self.name.clone(),
            });
        }
        Ok(())
    }
}

/// A command that runs `program` inside the namespace called `name` (`ip
/// netns exec NAME program`), for namespaces that outlived the topology that
/// made them (see [`crate::Topology::persist`]).
pub fn netns_command(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", name]).arg(program);
    cmd
}

/// The names of the namespaces on this machine, as `ip netns list` knows them.
pub fn existing_namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Removes the namespaces `names`, as a topology's drop would: SIGKILL to
/// every process still inside, then the name. Names that do not exist are
/// skipped, so tearing down twice, or after half a teardown, is fine. Every
/// name is tried; the first failure is returned.
pub fn teardown<I, S>(names: I) -> Result<(), TopologyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut first = None;
    for name in names {
        let name = name.as_ref();
        if !Path::new(NETNS_RUN_DIR).join(name).exists() {
            continue;
        }
        if let Err(e) = remove(name) {
            if Path::new(NETNS_RUN_DIR).join(name).exists() {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Creates the namespace `name` (nothing in it is up yet).
///
/// With `replace_stale`, a namespace already bearing the name is taken for one
/// left by an earlier process that had our pid and crashed (our names carry the
/// pid and a counter we never reuse): it is removed and the creation retried
/// once. Without it (fixed names), an existing namespace is an error.
pub(crate) fn create(name: &str, replace_stale: bool) -> Result<(), TopologyError> {
    let add = || {
        run_checked(
            Command::new("ip").args(["netns", "add", name]),
            None,
            IP_TIME_LIMIT,
        )
    };
    match add() {
        Err(TopologyError::Command { stderr, .. })
            if stderr.contains("File exists") && !replace_stale =>
        {
            return Err(TopologyError::Exists {
                name: name.to_string(),
            });
        }
        Err(TopologyError::Command { stderr, .. }) if stderr.contains("File exists") => {
            log(format_args!(
                "removing stale network namespace {name} left by an earlier process with our pid"
            ));
            remove(name)?;
            add()?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// Runs `ip -n NAME -batch -` with `lines` (one `ip` command without the `ip`
/// per line) inside the namespace `name`.
pub(crate) fn ip_batch(name: &str, lines: &str) -> Result<(), TopologyError> {
    run_checked(
        Command::new("ip").args(["-n", name, "-batch", "-"]),
        Some(lines.as_bytes()),
        IP_TIME_LIMIT,
    )
    .map(drop)
}

/// Turns IPv6 off in the namespace at `path`, for the links that exist and for
/// those made later, so the underlay carries no router solicitations, DAD or
/// MLD. A kernel without IPv6 has nothing to turn off.
pub(crate) fn disable_ipv6(path: &Path) -> Result<(), TopologyError> {
    let written = NetNs::open(path)?.run(|| -> std::io::Result<()> {
        // /proc/sys/net is resolved against the namespace of the thread that
        // opens the file, which here is the dedicated one inside `path`.
        for conf in ["default", "all"] {
            let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            match std::fs::write(&knob, "1") {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    })?;
    written.map_err(|source| TopologyError::Sysctl {
        namespace: path.display().to_string(),
        source,
    })
}

/// Removes the namespace `name`: SIGKILL to any process still inside (their
/// presence would keep it alive, unnamed, after `ip netns del`), then the name.
pub(crate) fn remove(name: &str) -> Result<(), TopologyError> {
    kill_stragglers(name);
    run_checked(
        Command::new("ip").args(["netns", "del", name]),
        None,
        IP_TIME_LIMIT,
    )
    .map(drop)
}

/// Sends SIGKILL to every process in the namespace `name` except ourselves.
fn kill_stragglers(name: &str) {
    let mut pids = Command::new("ip");
    pids.args(["netns", "pids", name]);
    let Ok(out) = run_bounded(&mut pids, "ip netns pids", None, IP_TIME_LIMIT) else {
        return;
    };
    let me = std::process::id();
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|&pid| pid != me && pid > 1)
        .map(|pid| pid.to_string())
        .collect();
    if pids.is_empty() {
        return;
    }
    log(format_args!(
        "killing processes left in network namespace {name}: {}",
        pids.join(" ")
    ));
    let mut kill = Command::new("kill");
    kill.arg("-KILL").arg("--").args(&pids);
    if let Err(e) = run_bounded(&mut kill, "kill -KILL", None, IP_TIME_LIMIT) {
        log(format_args!("{e}"));
    }
}
