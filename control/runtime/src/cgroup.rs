//! cgroup v2 for tasks: `<root>/<parent>/<task id>`, where `root` is the
//! daemon's own cgroup (or a configured one) and `parent` is `shoal`.
//!
//! Plain file I/O on cgroupfs, no system calls of our own. A cgroup is made
//! for every task where a writable cgroup2 hierarchy exists, limits or not: it
//! lets the runtime kill everything the task started (`cgroup.kill`) and tell
//! an OOM kill from a plain SIGKILL. Limits need the `cpu` and `memory`
//! controllers enabled from the root down; when that fails (the root holds
//! processes itself, controllers bound to a cgroup v1 hierarchy, no
//! delegation) the task still starts and the runtime records a warning.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Limits;

/// The period written to `cpu.max`, in microseconds (Docker's).
const CPU_PERIOD_US: u64 = 100_000;

/// Where the runtime makes task cgroups.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    root: PathBuf,
    parent: PathBuf,
}

impl Cgroups {
    /// Finds the hierarchy and makes `<root>/<name>`; `Err` says why there is
    /// no usable cgroup v2.
    pub(crate) fn detect(configured: Option<&Path>, name: &str) -> Result<Self, String> {
        let root = match configured {
            Some(root) => root.to_path_buf(),
            None => default_root()?,
        };
        if !root.join("cgroup.controllers").exists() {
            return Err(format!("{} is not a cgroup2 directory", root.display()));
        }
        let parent = root.join(name);
        fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create cgroup {}: {e}", parent.display()))?;
        Ok(Self { root, parent })
    }

    /// Removes the empty task cgroups an earlier daemon left; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| fs::remove_dir(e.path()).is_ok())
            .count()
    }

    /// Removes `<root>/<name>` if it is empty (ignored otherwise).
    pub(crate) fn remove_parent(&self) {
        let _ = fs::remove_dir(&self.parent);
    }

    /// Makes the task's cgroup and applies `limits`; what could not be
    /// applied comes back as warnings.
    pub(crate) fn create(&self, id: &str, limits: &Limits) -> io::Result<(PathBuf, Vec<String>)> {
        let dir = self.parent.join(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut warnings = Vec::new();
        if let Some(nano) = limits.nano_cpus {
            let quota = (nano.saturating_mul(CPU_PERIOD_US) / 1_000_000_000).max(1000);
            let value = format!("{quota} {CPU_PERIOD_US}");
            if let Err(e) = self
                .enable("cpu")
                .and_then(|()| write(&dir.join("cpu.max"), &value))
            {
                warnings.push(format!("CPU limit not applied: {e}"));
            }
        }
        if let Some(bytes) = limits.memory_bytes {
            if let Err(e) = self
                .enable("memory")
                .and_then(|()| write(&dir.join("memory.max"), &bytes.to_string()))
            {
                warnings.push(format!("memory limit not applied: {e}"));
            }
        }
        Ok((dir, warnings))
    }

    /// Enables `controller` for the children of the root and of the parent.
    fn enable(&self, controller: &str) -> io::Result<()> {
        let available = fs::read_to_string(self.root.join("cgroup.controllers"))?;
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(io::Error::other(format!(
                "the {controller} controller is not available in {} (bound to cgroup v1, or not delegated)",
                self.root.display()
            )));
        }
        for dir in [&self.root, &self.parent] {
            let control = dir.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control)?;
            if enabled.split_whitespace().any(|c| c == controller) {
                continue;
            }
            write(&control, &format!("+{controller}")).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot enable the {controller} controller in {}: {e} \
                         (a cgroup that holds processes cannot pass controllers down: \
                         run the daemon in a leaf cgroup and configure a cgroup root)",
                        control.display()
                    ),
                )
            })?;
        }
        Ok(())
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The daemon's own cgroup in the unified hierarchy: `/sys/fs/cgroup` on a
/// cgroup2 host, `/sys/fs/cgroup/unified` on a hybrid one.
fn default_root() -> Result<PathBuf, String> {
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("the daemon is in no cgroup2 hierarchy (no 0:: line in /proc/self/cgroup)")?;
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let base = Path::new(base);
        if base.join("cgroup.controllers").exists() {
            let own = own.trim_matches('/');
            return Ok(if own.is_empty() {
                base.to_path_buf()
            } else {
                base.join(own)
            });
        }
    }
    Err("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified".into())
}

/// Opens `cgroup.procs` of a task cgroup for the child to join.
pub(crate) fn open_procs(dir: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
}

/// True when the OOM killer killed a process of the cgroup.
pub(crate) fn oom_killed(dir: &Path) -> bool {
    fs::read_to_string(dir.join("memory.events")).is_ok_and(|events| {
        events.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    })
}

/// Kills every process left in the cgroup (`cgroup.kill`, or one by one on
/// kernels before 5.14).
pub(crate) fn kill_all(dir: &Path) {
    if write(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = shoal_sys::sandbox::kill(pid, libc::SIGKILL);
        }
    }
}

/// Removes a task cgroup, killing what is left and waiting up to `timeout`
/// for the processes to leave it.
pub(crate) fn remove(dir: &Path, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                kill_all(dir);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
