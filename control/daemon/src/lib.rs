//! The `shoald` node daemon.
//!
//! It serves the local API on a Unix socket and takes part in a swarm
//! (`shoal swarm init` / `join`): as a manager it runs the Raft-replicated
//! cluster state and the manager API on 2377, as any node it heartbeats (see
//! `shoal-manager`). With `--config FILE` it also brings up the standalone data
//! plane that the file describes.
#![forbid(unsafe_code)]

pub mod api;
pub mod attach;
pub mod discovery;
mod docker;
pub mod file;
pub mod hostports;
pub mod ingress;
mod relay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use shoal_consensus::ConsensusConfig;
use shoal_manager::state::ClusterSettings;
use shoal_manager::swarm::{Swarm, SwarmConfig};
use shoal_node::DataPlane;

/// Default path of the local API socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/shoal/shoald.sock";

/// Command line of `shoald`.
#[derive(Debug, Parser)]
#[command(
    name = "shoald",
    version,
    about = "Shoal node daemon: userspace VXLAN overlay data plane"
)]
struct Args {
    /// Standalone data-plane file (TOML): node, networks, endpoints, peers, keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the swarm identity and the manager's Raft store live.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/shoal",
        env = "SHOAL_STATE_DIR"
    )]
    state_dir: PathBuf,
    /// The hostname `node ls` shows (default: the system's).
    #[arg(long, env = "SHOAL_HOSTNAME")]
    hostname: Option<String>,
    /// Unix socket of the local API (metrics, status, key rotation).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET, env = "SHOAL_CONTROL")]
    control: PathBuf,
    /// Log filter, e.g. `info` or `shoal_node=debug`. Openraft stays at
    /// `error` by default: its info and warn lines narrate every election and
    /// membership change (and warn about messages it rightly ignores).
    #[arg(long, default_value = "info,openraft=error", env = "SHOAL_LOG")]
    log: String,
    /// Upstream resolvers of the tasks' embedded DNS, comma-separated
    /// `ip[:port]` (at most 3; default: the nameservers of /etc/resolv.conf).
    #[arg(long, value_name = "ADDRS", env = "SHOAL_DNS_UPSTREAMS")]
    dns_upstreams: Option<String>,
    /// Milliseconds a task stays out of the routing mesh and DNS before it
    /// is stopped (SIGTERM).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 500,
        env = "SHOAL_DRAIN_GRACE_MS"
    )]
    drain_grace_ms: u64,
    /// TTL in seconds of the embedded DNS's answers about the swarm.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600,
        env = "SHOAL_DNS_TTL"
    )]
    dns_ttl: u32,
    /// Run tasks of `--image` services as containers of the Docker Engine
    /// on this node, and serve the `shoal` network plugin so that `docker
    /// run --network NET` joins shoal networks.
    #[arg(long, env = "SHOAL_DOCKER")]
    docker: bool,
    /// The Docker Engine's API socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/docker.sock",
        env = "SHOAL_DOCKER_SOCKET"
    )]
    docker_socket: PathBuf,
    /// The network and IPAM driver name Docker knows the plugin by
    /// (`docker network create -d NAME`); its socket is
    /// `/run/docker/plugins/NAME.sock`.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "shoal",
        env = "SHOAL_DOCKER_PLUGIN"
    )]
    docker_plugin: String,
    /// The network namespace of the Docker Engine, where container
    /// interfaces are made for Docker to move (default: that of the
    /// process serving --docker-socket).
    #[arg(long, value_name = "PATH", env = "SHOAL_DOCKER_NETNS")]
    docker_netns: Option<PathBuf>,
    /// Forwarding workers of the swarm's data plane: queues per TAP device
    /// and VXLAN sockets, each a pair of threads (default: one per core, at
    /// most 8). Fewer means fewer wake-ups per packet, more spreads
    /// throughput over cores. A `--config` file sets its own `workers`.
    #[arg(
        long,
        value_name = "N",
        env = "SHOAL_DATAPLANE_WORKERS",
        value_parser = clap::value_parser!(u16).range(1..=shoal_node::config::MAX_WORKERS as i64)
    )]
    dataplane_workers: Option<u16>,
}

/// Entry point of `shoald`.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Runs `shoald` with explicit arguments (the first is the program name), for
/// binaries that embed the daemon, such as the benchmark runner.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(args);
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("shoald: invalid --log filter {:?}: {e}", args.log);
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.config.is_some() && args.dataplane_workers.is_some() {
        anyhow::bail!(
            "--dataplane-workers is for the swarm's data plane; with --config, set `workers` under [node] in the file"
        );
    }
    let dp = match &args.config {
        Some(path) => {
            let config = file::load(path)?;
            let dp = Arc::new(DataPlane::start(config).context("cannot start the data plane")?);
            tracing::info!(listen = %dp.local_addr()?, "data plane running");
            Some(dp)
        }
        None => None,
    };
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = discovery::upstreams(args.dns_upstreams.as_deref(), &resolv_conf)
        .map_err(anyhow::Error::msg)
        .context("invalid --dns-upstreams")?;
    if upstreams.is_empty() {
        tracing::warn!("no DNS upstream: tasks will get SERVFAIL for names outside the swarm");
    }
    let attacher = Arc::new(attach::DataPlaneAttacher::new(
        dp.clone(),
        attach::DnsSettings {
            upstreams,
            ttl: args.dns_ttl,
        },
        args.dataplane_workers.map(usize::from),
    ));
    let hostname = match args.hostname.clone() {
        Some(h) => h,
        None => system_hostname(),
    };
    let process: Arc<dyn shoal_runtime::Runtime> = Arc::new(
        shoal_runtime::ProcessRuntime::new(args.state_dir.join("tasks"))
            .context("cannot start the task runtime")?,
    );
    let docker = if args.docker {
        Some(Arc::new(docker::connect(&args, &hostname)?))
    } else {
        None
    };
    let engine = docker.as_ref().map(|d| d.engine().to_string());
    if let Some(d) = &docker {
        attacher.on_attachable(docker::network_maker(d.clone()));
    }
    let runtime = Arc::new(shoal_docker::runtime::RuntimeRouter::new(process, docker));
    let swarm = Arc::new(Swarm::new(SwarmConfig {
        state_dir: args.state_dir.clone(),
        hostname,
        consensus: ConsensusConfig::default(),
        settings: ClusterSettings::default(),
        min_cert_secs: min_cert_secs()?,
        runtime: Some(runtime),
        attacher: Some(attacher.clone()),
        drain_grace: std::time::Duration::from_millis(args.drain_grace_ms),
        engine,
    }));
    // Two threads: the manager's Raft, its API and the local API must not
    // wait behind one another.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the API runtime")?;
    rt.block_on(async {
        if swarm
            .resume()
            .await
            .context("cannot resume the swarm this node was in")?
        {
            tracing::info!("resumed swarm membership");
        }
        let plugin = match args.docker {
            true => Some(docker::serve_plugin(&args, &attacher, swarm.clone()).await?),
            false => None,
        };
        let result = serve(dp, attacher, swarm.clone(), &args.control).await;
        if let Some(p) = plugin {
            p.stop().await;
        }
        swarm.shutdown().await;
        result
    })
}

/// The shortest `swarm init --cert-expiry` this daemon accepts: Docker's
/// hour, unless the test-only `SHOAL_TEST_MIN_CERT_SECS` lowers it (the
/// swarm suite uses it to watch certificates renew within seconds). It is not
/// a command-line flag on purpose: nothing in production should need it.
fn min_cert_secs() -> anyhow::Result<u64> {
    match std::env::var("SHOAL_TEST_MIN_CERT_SECS") {
        Err(_) => Ok(shoal_manager::swarm::MIN_CERT_SECS),
        Ok(v) => {
            let secs: u64 = v.parse().with_context(|| {
                format!("SHOAL_TEST_MIN_CERT_SECS must be a number of seconds, not {v:?}")
            })?;
            tracing::warn!(
                secs,
                "test-only SHOAL_TEST_MIN_CERT_SECS lowers the shortest --cert-expiry"
            );
            Ok(secs.max(1))
        }
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn serve(
    dp: Option<Arc<DataPlane>>,
    attacher: Arc<attach::DataPlaneAttacher>,
    swarm: Arc<Swarm>,
    control: &std::path::Path,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    if let Some(dir) = control.parent() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create directory {} for the API socket",
                dir.display()
            )
        })?;
    }
    // A socket file left by a daemon that died is stale; a live one answers.
    if control.exists() {
        if std::os::unix::net::UnixStream::connect(control).is_ok() {
            anyhow::bail!(
                "another shoald is serving {}; stop it or pass a different --control path",
                control.display()
            );
        }
        std::fs::remove_file(control)
            .with_context(|| format!("cannot remove stale socket {}", control.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(control)
        .with_context(|| format!("cannot listen on {}", control.display()))?;
    tracing::info!(socket = %control.display(), "local API listening");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down");
    };
    let result = axum::serve(listener, api::router(dp, attacher, swarm))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(control);
    result.context("local API failed")
}
