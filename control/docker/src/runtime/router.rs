//! [`RuntimeRouter`]: one [`Runtime`] for the node agent over the process
//! runtime and, where the node has one, the Docker runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shoal_runtime::{LogChunk, Runtime, RuntimeError, TaskExit, TaskSpec};

use super::DockerRuntime;

/// Which runtime holds a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Process,
    Docker,
}

/// Sends a task with an image to Docker and any other to the process
/// runtime, and every later call for that task to the same one.
pub struct RuntimeRouter {
    process: Arc<dyn Runtime>,
    docker: Option<Arc<DockerRuntime>>,
    routes: Mutex<HashMap<String, Which>>,
}

impl RuntimeRouter {
    /// A router over `process` and, if the node runs one, `docker`.
    pub fn new(process: Arc<dyn Runtime>, docker: Option<Arc<DockerRuntime>>) -> Self {
        Self {
            process,
            docker,
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The Docker runtime, when the node has one.
    pub fn docker(&self) -> Option<&Arc<DockerRuntime>> {
        self.docker.as_ref()
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<String, Which>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runtime(&self, which: Which) -> &dyn Runtime {
        match (which, &self.docker) {
            (Which::Docker, Some(docker)) => docker.as_ref(),
            _ => self.process.as_ref(),
        }
    }

    /// The runtime of `id`: remembered, else Docker if it has the task
    /// (made before this router), else the process runtime.
    fn route(&self, id: &str) -> &dyn Runtime {
        if let Some(which) = self.routes().get(id).copied() {
            return self.runtime(which);
        }
        match &self.docker {
            Some(docker) if docker.tasks().iter().any(|t| t == id) => {
                self.routes().insert(id.to_string(), Which::Docker);
                docker.as_ref()
            }
            _ => self.process.as_ref(),
        }
    }

    /// Like [`Self::route`] without asking the engine: for the calls that
    /// must not block (`warnings`, `plugin_networking`).
    fn route_known(&self, id: &str) -> &dyn Runtime {
        let which = self.routes().get(id).copied().unwrap_or(Which::Process);
        self.runtime(which)
    }
}

impl Runtime for RuntimeRouter {
    fn prepare(&self, spec: &TaskSpec) -> Result<PathBuf, RuntimeError> {
        let which = if spec.image.is_some() {
            Which::Docker
        } else {
            Which::Process
        };
        let path = match (which, &self.docker) {
            (Which::Docker, None) => {
                return Err(RuntimeError::InvalidSpec {
                    task: if spec.name.is_empty() {
                        spec.id.clone()
                    } else {
                        spec.name.clone()
                    },
                    field: "image",
                    reason: "this node runs no Docker engine for image tasks \
                             (start shoald with --docker)"
                        .into(),
                })
            }
            (Which::Docker, Some(docker)) => docker.prepare(spec)?,
            (Which::Process, _) => self.process.prepare(spec)?,
        };
        self.routes().insert(spec.id.clone(), which);
        Ok(path)
    }

    fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        self.route(id).start(id)
    }

    fn try_wait(&self, id: &str) -> Result<Option<TaskExit>, RuntimeError> {
        self.route(id).try_wait(id)
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<TaskExit, RuntimeError> {
        self.route(id).stop(id, grace)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.route(id).remove(id)
    }

    fn remove_logs(&self, id: &str) -> Result<(), RuntimeError> {
        let result = self.route(id).remove_logs(id);
        if result.is_ok() {
            self.routes().remove(id);
        }
        result
    }

    fn logs(&self, id: &str, since: u64, max: usize) -> Result<LogChunk, RuntimeError> {
        self.route(id).logs(id, since, max)
    }

    fn tasks(&self) -> Vec<String> {
        let mut ids = self.process.tasks();
        if let Some(docker) = &self.docker {
            ids.extend(docker.tasks());
        }
        ids.sort();
        ids.dedup();
        ids
    }

    fn warnings(&self, id: &str) -> Vec<String> {
        self.route_known(id).warnings(id)
    }

    fn plugin_networking(&self, id: &str) -> bool {
        self.route_known(id).plugin_networking(id)
    }
}
