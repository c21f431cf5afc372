//! A runtime with its own state directory and cgroup name per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal_runtime::{
    Limits, LogLine, ProcessRuntime, Runtime, RuntimeConfig, Stream, TaskExit, TaskSpec,
};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A unique, valid task id or name fragment.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Fixture {
    pub rt: Option<ProcessRuntime>,
    pub dir: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(edit: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let dir = std::env::temp_dir().join(format!("shoal-rt-{}", unique("t")));
        let mut config = RuntimeConfig::new(dir.clone());
        config.cgroup_name = format!("shoal-test-{}", unique("c"));
        edit(&mut config);
        let rt = ProcessRuntime::with_config(config).expect("runtime");
        Self { rt: Some(rt), dir }
    }

    pub fn rt(&self) -> &ProcessRuntime {
        self.rt.as_ref().expect("runtime")
    }

    pub fn spec(&self, command: &[&str]) -> TaskSpec {
        let id = unique("t");
        TaskSpec {
            name: format!("web.1.{id}"),
            hostname: format!("h{id}"),
            id,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            resolv_conf: "nameserver 127.0.0.11\noptions ndots:0\n".into(),
            limits: Limits::default(),
            image: None,
            labels: Default::default(),
            networks: Vec::new(),
        }
    }

    /// Prepares and starts `spec`; returns the pid.
    pub fn run(&self, spec: &TaskSpec) -> u32 {
        self.rt().prepare(spec).expect("prepare");
        self.rt().start(&spec.id).expect("start")
    }

    /// Waits (up to 20 s) for the task to exit.
    pub fn wait(&self, id: &str) -> TaskExit {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.rt().try_wait(id).expect("try_wait") {
                return exit;
            }
            assert!(Instant::now() < deadline, "task {id} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// All log lines of the task.
    pub fn lines(&self, id: &str) -> Vec<LogLine> {
        self.rt().logs(id, 0, usize::MAX).expect("logs").lines
    }

    pub fn stdout(&self, id: &str) -> Vec<String> {
        self.lines(id)
            .into_iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.line)
            .collect()
    }

    /// Waits (up to 10 s) until the task printed `line` on stdout.
    pub fn wait_for_line(&self, id: &str, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stdout(id).iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "task {id} never printed {line:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Dropping the runtime kills its tasks and frees their sandboxes.
        drop(self.rt.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True while a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Waits (up to 5 s) for a process to be gone.
pub fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
