//! The thin I/O half: a Unix socket, HTTP/1.1 (hyper) and the blocking pool.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::protocol::{self, error_body};
use super::Backend;

/// The largest request body served; libnetwork's are a few KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long `stop` lets answers in flight finish before cutting them off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to pause after a failed `accept` (e.g. out of descriptors)
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The plugin's socket server, running on the caller's tokio runtime.
///
/// Dropping it stops accepting and removes the socket file; [`stop`]
/// additionally lets requests in flight finish.
///
/// [`stop`]: PluginServer::stop
#[derive(Debug)]
pub struct PluginServer {
    path: PathBuf,
    shutdown: watch::Sender<bool>,
    /// `None` once stopped.
    accept: Option<JoinHandle<()>>,
}

impl PluginServer {
    /// Listens on `socket` (e.g. `/run/docker/plugins/shoal.sock`; the
    /// file name without `.sock` is the plugin's name for Docker) and
    /// serves the protocol with `backend`.
    ///
    /// Creates the parent directory. A socket file left by a dead process
    /// is replaced; one that still answers is an `AddrInUse` error, and a
    /// file that is not a socket is an `AlreadyExists` error.
    pub async fn start(socket: PathBuf, backend: Arc<dyn Backend>) -> io::Result<PluginServer> {
        // std::fs rather than tokio::fs: a mkdir, a stat and an unlink on
        // a local directory, once at startup.
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        remove_stale_socket(&socket).await?;
        let listener = UnixListener::bind(&socket).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", socket.display()),
            )
        })?;
        let (shutdown, watch) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, backend, watch));
        tracing::info!(socket = %socket.display(), "docker plugin listening");
        Ok(PluginServer {
            path: socket,
            shutdown,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets requests in flight finish (for at most a few
    /// seconds) and removes the socket file.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(accept) = self.accept.take() {
            if let Err(e) = accept.await {
                tracing::warn!(error = %e, "docker plugin accept task failed");
            }
        }
        self.remove_socket();
    }

    fn remove_socket(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the plugin socket")
            }
        }
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            self.shutdown.send_replace(true);
            accept.abort();
            self.remove_socket();
        }
    }
}

/// Removes `socket` if it is a socket file nobody answers on.
async fn remove_stale_socket(socket: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(socket) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", socket.display()),
        ));
    }
    if UnixStream::connect(socket).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another plugin serves {}", socket.display()),
        ));
    }
    tracing::info!(socket = %socket.display(), "removing a stale plugin socket");
    std::fs::remove_file(socket)
}

/// Resolves once `stop` was asked for (or the server was dropped).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server was dropped.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: UnixListener,
    backend: Arc<dyn Backend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, backend.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker plugin cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "docker plugin requests still running at stop; cutting them off"
        );
    }
}

async fn serve_connection(
    stream: UnixStream,
    backend: Arc<dyn Backend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| handle(request, backend.clone()));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped(&mut shutdown) => {
            // Finish the request in flight, if any, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "docker plugin connection ended");
    }
}

async fn handle(
    request: Request<Incoming>,
    backend: Arc<dyn Backend>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let (status, body) = if request.method() != hyper::Method::POST {
        (
            405,
            error_body(&format!(
                "{path}: plugin methods are POSTs, not {}",
                request.method()
            )),
        )
    } else {
        match Limited::new(request.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let call_path = path.clone();
                tokio::task::spawn_blocking(move || {
                    protocol::dispatch(&call_path, &bytes, &*backend)
                })
                .await
                .unwrap_or_else(|e| {
                    (
                        protocol::STATUS_ERROR,
                        error_body(&format!("{path}: the shoal backend failed: {e}")),
                    )
                })
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => (
                413,
                error_body(&format!(
                    "{path}: request body larger than {MAX_BODY_BYTES} bytes"
                )),
            ),
            Err(e) => (
                400,
                error_body(&format!("{path}: cannot read the request body: {e}")),
            ),
        }
    };
    if status == protocol::STATUS_OK {
        tracing::debug!(%path, "docker plugin call");
    } else {
        tracing::warn!(%path, status, answer = %String::from_utf8_lossy(&body), "docker plugin call failed");
    }
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)));
    // The status and header are constants known to be valid.
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
