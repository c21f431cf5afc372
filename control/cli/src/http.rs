//! A one-shot HTTP/1.1 client over a Unix socket (hyper), for the Docker
//! Engine's socket and shoald's local API.

use std::path::Path;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Sends one request and returns the status and the body as text.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(StatusCode, String)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake failed")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await.context("request failed")?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .context("reading the answer failed")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Runs `f` on a small single-threaded runtime (the CLI is synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    Ok(rt.block_on(f))
}

/// Calls the local API and returns the answer's body. A refusal becomes an
/// error that carries shoald's message (the `message` field of its JSON error)
/// after `refused`, e.g. Docker's "Error response from daemon".
pub(crate) fn call_text(
    control: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
    refused: &str,
) -> anyhow::Result<String> {
    let (status, text) = block_on(request(control, method, path, body))?
        .with_context(|| format!("is shoald running with --control {}?", control.display()))?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        anyhow::bail!("{refused}: {msg}");
    }
    Ok(text)
}
