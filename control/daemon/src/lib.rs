//! The `shoald` node daemon.
//!
//! Today it runs in standalone mode: `shoald --config FILE` brings up the data
//! plane described by a static file and serves the local API on a Unix socket.
//! The manager and gossip will feed the same data-plane calls later.
#![forbid(unsafe_code)]

pub mod api;
pub mod file;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
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
    /// Standalone configuration file (TOML): node, networks, endpoints, peers, keys.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Unix socket of the local API (metrics, status, key rotation).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET, env = "SHOAL_CONTROL")]
    control: PathBuf,
    /// Log filter, e.g. `info` or `shoal_node=debug`.
    #[arg(long, default_value = "info", env = "SHOAL_LOG")]
    log: String,
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
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let config = file::load(&args.config)?;
    let node = config.node_addr;
    let dp = Arc::new(DataPlane::start(config).context("cannot start the data plane")?);
    let span = tracing::info_span!("node", addr = %node);
    let _enter = span.enter();
    tracing::info!(listen = %dp.local_addr()?, "data plane running");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the API runtime")?;
    rt.block_on(serve(dp, &args.control))
}

async fn serve(dp: Arc<DataPlane>, control: &std::path::Path) -> anyhow::Result<()> {
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
    let result = axum::serve(listener, api::router(dp))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(control);
    result.context("local API failed")
}
