//! Network-namespace topologies for the integration suites, the benchmarks and
//! `shoal lab`.
//!
//! Why namespaces, and why built this way:
//!
//! - **The host's network is never touched.** A swarm's underlay is simulated by
//!   a Linux bridge that lives in a namespace of its own; nodes and clients are
//!   namespaces with one veth on it. Nothing is added to the host: no link, no
//!   address, no route, no sysctl. Tests only ever send traffic to addresses
//!   inside their own namespaces.
//! - **Suites run in parallel.** Namespace names are
//!   `shl<pid>x<counter><role><index>` (see [`name`]), unique per process and per
//!   topology, and every topology has its own bridge, so the same address plan
//!   ([`plan`]) is reused safely by topologies side by side.
//! - **Cleanup happens, even on panic.** Dropping a [`Topology`] stops the
//!   processes started in it and removes its namespaces; drop never panics, so a
//!   failing assertion still leaves the machine clean. Runs that were killed
//!   outright leave namespaces whose pid is gone; [`sweep_stale`] removes them,
//!   and every build calls it first.
//! - **A topology can outlive its process** (`shoal lab`): built with
//!   [`TopologyBuilder::fixed_names`], its namespaces get names a later process
//!   can find (`<prefix>-n1`), [`Topology::persist`] hands them over instead of
//!   removing them, and [`teardown`] removes them when asked. Fixed names never
//!   look like the pid-based ones, so the sweeper leaves them alone.
//!
//! The topology is made with the `ip` command (iproute2), which is what a person
//! debugging a failed test would use too; closures run inside a namespace through
//! [`shoal_sys::netns::NetNs`], which confines `setns` to a dedicated thread.
//! Everything needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
//!
//! ```no_run
//! # fn main() -> Result<(), shoal_topology::TopologyError> {
//! use shoal_topology::Topology;
//!
//! let topo = Topology::builder().nodes(3).clients(1).build()?;
//! let to = topo.node(2).addr().to_string();
//! topo.client(0).ns().output(["ping", "-c", "1", "-W", "2", to.as_str()])?;
//! let task = topo.add_bare_namespace("web.1")?;
//! # drop(task);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod child;
mod command;
mod error;
pub mod name;
mod namespace;
pub mod plan;
mod sweep;
mod topology;

pub use child::{ManagedChild, TERMINATE_GRACE};
pub use command::COMMAND_TIME_LIMIT;
pub use error::TopologyError;
pub use name::{NsName, Role};
pub use namespace::{existing_namespaces, netns_command, teardown, Namespace};
pub use sweep::sweep_stale;
pub use topology::{
    Host, PersistedHost, PersistedTopology, Topology, TopologyBuilder, BRIDGE_IFACE,
    DEFAULT_UNDERLAY_MTU, UNDERLAY_IFACE,
};
