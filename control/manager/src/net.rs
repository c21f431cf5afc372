//! The manager API's transport: HTTP/1.1 over mutual TLS (TCP 2377).
//!
//! [`serve`] accepts TLS connections and hands each request to an axum
//! router with the client's verified certificate chain attached as a
//! [`PeerCerts`] extension (empty for a client without a certificate, which
//! may only join). [`Client`] sends JSON requests to other managers over
//! pooled mutual-TLS connections; Raft traffic, forwarded commands and
//! heartbeats all use it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The server name every manager certificate carries, so clients verify "a
/// manager of this cluster" whatever address they dialled.
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The verified certificate chain of the client of a request (leaf first);
/// empty when the client presented none.
#[derive(Debug, Clone, Default)]
pub struct PeerCerts(pub Arc<Vec<CertificateDer<'static>>>);

/// Serves `router` on `listener` over TLS until `shutdown` turns true.
///
/// Each new connection uses the configuration `tls` holds at its accept, so
/// a renewed certificate is presented from the next connection on while the
/// connections already open finish with the old one.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "manager API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let router = router.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let certs: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let svc = router.layer(axum::Extension(PeerCerts(Arc::new(certs))));
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%remote, error = %e, "manager API connection ended");
                    }
                }
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

/// A failed call to another manager.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection or no TLS session could be made.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The manager dialled.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The manager answered with an error.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The message it gave.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("bad answer from {addr}: {reason}")]
    BadAnswer {
        /// The manager.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

/// A pooled mutual-TLS HTTP client for the manager API.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client that presents the identity in `tls` (or none) and verifies
    /// servers as `server_name`. Each call gives up after `timeout`.
    pub fn new(tls: Arc<rustls::ClientConfig>, server_name: &str, timeout: Duration) -> Self {
        let name = ServerName::try_from(server_name.to_string())
            .unwrap_or_else(|_| ServerName::try_from("swarm-manager").expect("valid name"));
        let connector = Connector {
            tls: TlsConnector::from(tls),
            name,
        };
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Client { inner, timeout }
    }

    /// POSTs `body` as JSON to `path` on `addr` and decodes the JSON answer.
    pub async fn post<B, R>(&self, addr: SocketAddr, path: &str, body: &B) -> Result<R, CallError>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::BadAnswer {
            addr,
            reason: format!("cannot encode request: {e}"),
        })?;
        self.request(addr, hyper::Method::POST, path, Some(bytes))
            .await
    }

    /// POSTs `body` to the managers in turn, starting at `managers[first]`,
    /// until one answers; returns the index of the one that did. A
    /// manager's refusal is final: every manager runs ops on the leader, so
    /// another would refuse too. With no manager, an `Unreachable` error.
    pub async fn post_any<B, R>(
        &self,
        managers: &[SocketAddr],
        first: usize,
        path: &str,
        body: &B,
    ) -> Result<(usize, R), CallError>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let n = managers.len();
        let mut last = None;
        for i in 0..n {
            let at = (first + i) % n;
            match self.post::<B, R>(managers[at], path, body).await {
                Ok(r) => return Ok((at, r)),
                Err(e @ CallError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(manager = %managers[at], %path, error = %e, "manager did not answer");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Unreachable {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: "no manager known".into(),
        }))
    }

    /// GETs `path` on `addr` and decodes the JSON answer.
    pub async fn get<R>(&self, addr: SocketAddr, path: &str) -> Result<R, CallError>
    where
        R: serde::de::DeserializeOwned,
    {
        self.request(addr, hyper::Method::GET, path, None).await
    }

    async fn request<R>(
        &self,
        addr: SocketAddr,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<R, CallError>
    where
        R: serde::de::DeserializeOwned,
    {
        let uri: Uri =
            format!("https://{addr}{path}")
                .parse()
                .map_err(|e| CallError::BadAnswer {
                    addr,
                    reason: format!("bad path {path:?}: {e}"),
                })?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::BadAnswer {
                addr,
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| CallError::Unreachable { addr, reason };
        let resp = tokio::time::timeout(self.timeout, self.inner.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("answer cut off".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
            addr,
            reason: e.to_string(),
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Dials TCP and runs the TLS handshake for the pooled client.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
    name: ServerName<'static>,
}

/// A TLS stream the pool can hold.
struct TlsIo(TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(2377);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TlsIo(TokioIo::new(stream)))
        })
    }
}
