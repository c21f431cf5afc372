//! Swarm tasks as Docker containers.
//!
//! A service created with `--image` runs its tasks in the local Docker
//! Engine instead of as host processes: [`DockerRuntime`] implements the
//! node agent's [`shoal_runtime::Runtime`] with the Engine API, and
//! [`RuntimeRouter`] sends each task to Docker or to the process runtime by
//! its spec, so the agent keeps one runtime.
//!
//! A container's interfaces come from shoal's network plugin when it
//! starts, not from TAP devices the agent makes: `prepare` ensures each of
//! the task's Docker networks exists (driver and IPAM driver = the plugin,
//! the shoal network id in their options) and creates the container on
//! them with the task's addresses; [`shoal_runtime::Runtime::plugin_networking`]
//! tells the agent so.
//!
//! The Engine API client (bollard) is async and the [`Runtime`] trait is
//! blocking, so the runtime owns a small current-thread tokio runtime and
//! blocks on each call; it is meant to be called, like every runtime, from
//! `spawn_blocking` or a plain thread. Containers are labelled with the node
//! id, so a new daemon removes what the previous one left.
//!
//! What differs from the process runtime: the spec's `resolv_conf` is not
//! used (a container on a Docker network gets the engine's resolver), the
//! engine adds `PATH` from the image and `HOSTNAME` itself, limits the engine
//! refuses (more CPUs than the host has, under 6 MiB of memory) fail
//! `prepare` as they fail a Swarm task, and a task's log goes with its
//! container at `remove`.
//!
//! [`Runtime`]: shoal_runtime::Runtime

mod docker;
mod logs;
mod router;

pub use docker::{
    DockerConfig, DockerRuntime, DEFAULT_SOCKET, IPAM_NETWORK_OPTION, NETWORK_LABEL,
    NETWORK_OPTION, NODE_LABEL, TASK_LABEL,
};
pub use router::RuntimeRouter;
