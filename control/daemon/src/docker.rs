//! `shoald --docker`: the Docker Engine runs `--image` tasks, and the
//! `shoal` network plugin puts Docker's containers on shoal networks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use shoal_docker::plugin::PluginServer;
use shoal_docker::runtime::{DockerConfig, DockerRuntime};
use shoal_manager::dispatch::NetworkAssignment;
use shoal_manager::swarm::Swarm;

use crate::attach::{AttachableHook, DataPlaneAttacher, DockerBackend};
use crate::Args;

/// Where Docker looks for plugins' sockets.
const PLUGIN_DIR: &str = "/run/docker/plugins";

/// Connects to the engine at `--docker-socket`; `node` names this daemon's
/// containers (leftovers of an earlier run are removed).
pub(crate) fn connect(args: &Args, node: &str) -> anyhow::Result<DockerRuntime> {
    check_plugin_name(&args.docker_plugin).map_err(anyhow::Error::msg)?;
    let config = DockerConfig {
        socket: args.docker_socket.clone(),
        plugin: args.docker_plugin.clone(),
        node_id: node.to_string(),
    };
    let docker = DockerRuntime::connect(config).with_context(|| {
        format!(
            "--docker: no Docker Engine at {}",
            args.docker_socket.display()
        )
    })?;
    tracing::info!(engine = %docker.engine(), "Docker Engine runs --image tasks");
    Ok(docker)
}

/// A plugin name Docker accepts and a file name can hold.
fn check_plugin_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid --docker-plugin {name:?}: use 1 to 64 of [a-z0-9-_.], not starting with ."
        ))
    }
}

/// Makes each attachable shoal network a Docker network of the plugin's
/// driver (once per network, off the caller's thread: it is called from
/// the agent's loop every round).
pub(crate) fn network_maker(docker: Arc<DockerRuntime>) -> AttachableHook {
    let made: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    Box::new(move |networks: &[NetworkAssignment]| {
        let new: Vec<NetworkAssignment> = {
            let mut m = made.lock().expect("made lock");
            networks
                .iter()
                .filter(|n| m.insert(n.id.clone()))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return;
        }
        let docker = docker.clone();
        let made = made.clone();
        std::thread::spawn(move || {
            for n in new {
                let subnet = n.subnet;
                if let Err(e) =
                    docker.make_network(&n.name, &n.id, subnet.network(), subnet.prefix_len())
                {
                    tracing::warn!(network = %n.name, error = %e, "cannot make the Docker network");
                    // Tried again next round.
                    made.lock().expect("made lock").remove(&n.id);
                }
            }
        });
    })
}

/// The process that serves the engine's socket (dockerd), named by its
/// peer credentials.
async fn engine_pid(socket: &std::path::Path) -> anyhow::Result<i32> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let pid = stream
        .peer_cred()
        .context("cannot read the engine's credentials")?
        .pid()
        .context("the kernel did not say which process serves the engine's socket")?;
    Ok(pid)
}

/// Serves the network and IPAM driver at `/run/docker/plugins/<name>.sock`.
pub(crate) async fn serve_plugin(
    args: &Args,
    attacher: &DataPlaneAttacher,
    swarm: Arc<Swarm>,
) -> anyhow::Result<PluginServer> {
    let pid = engine_pid(&args.docker_socket).await?;
    let netns = match &args.docker_netns {
        Some(path) => path.clone(),
        None => PathBuf::from(format!("/proc/{pid}/ns/net")),
    };
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    tracing::info!(netns = %netns.display(), root = %root.display(), "container interfaces are made in the engine's namespace");
    let handle = tokio::runtime::Handle::current();
    let backend = DockerBackend::new(attacher, swarm, handle, netns, root);
    let socket = PathBuf::from(PLUGIN_DIR).join(format!("{}.sock", args.docker_plugin));
    let server = PluginServer::start(socket.clone(), Arc::new(backend))
        .await
        .with_context(|| format!("cannot serve the network plugin at {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "Docker network plugin listening");
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        assert!(check_plugin_name("shoal").is_ok());
        assert!(check_plugin_name("shoal-t123").is_ok());
        for bad in ["", "Shoal", "a/b", ".x", "a b"] {
            assert!(check_plugin_name(bad).is_err(), "{bad:?}");
        }
    }
}
