//! `shoal whoami`: a tiny HTTP server that says who answered, like
//! traefik/whoami. It is the workload of the tests and of `shoal demo`: each
//! answer names the task, the node, the hostname and the addresses of the
//! process that served it, and echoes the request, so a client can tell which
//! task of a service the routing mesh picked.
//!
//! The task and node names come from the environment the task runtime sets
//! (`SHOAL_TASK_NAME`, `SHOAL_NODE_HOSTNAME`); lines whose value is unknown
//! are left out rather than guessed.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Uri, Version};
use axum::Router;

/// What `shoal whoami` serves with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `--name`: an extra `Name:` line (traefik/whoami's `WHOAMI_NAME`).
    pub name: Option<String>,
    /// `--proxy-protocol`: every connection starts with a PROXY protocol v2
    /// header (from the routing mesh), whose client is the `RemoteAddr`.
    pub proxy_protocol: bool,
    /// `--udp-port`: also answer datagrams on this UDP port with who
    /// answered and the sender's address.
    pub udp_port: Option<u16>,
}

/// Who this process is, gathered once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `--name`.
    pub name: Option<String>,
    /// The task's name (`web.1.<id>`).
    pub task: Option<String>,
    /// The node's hostname.
    pub node: Option<String>,
    /// This process's hostname (the task's UTS namespace).
    pub hostname: String,
    /// Local IPv4 addresses.
    pub ips: Vec<Ipv4Addr>,
}

impl Identity {
    /// Reads the environment, the hostname and the local addresses.
    pub fn gather(name: Option<String>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Identity {
            name,
            task: env("SHOAL_TASK_NAME"),
            node: env("SHOAL_NODE_HOSTNAME"),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            ips: std::fs::read_to_string("/proc/net/fib_trie")
                .map(|t| local_ipv4s(&t))
                .unwrap_or_default(),
        }
    }
}

/// The body of one answer: who answered, then the request as received.
pub fn render(
    who: &Identity,
    remote: SocketAddr,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{k}: {v}");
    };
    for (k, v) in [
        ("Name", &who.name),
        ("Task", &who.task),
        ("Node", &who.node),
    ] {
        if let Some(v) = v {
            line(k, v);
        }
    }
    line("Hostname", &who.hostname);
    for ip in &who.ips {
        line("IP", &ip.to_string());
    }
    line("RemoteAddr", &remote.to_string());
    let _ = writeln!(out, "{method} {uri} {version:?}");
    for (k, v) in headers {
        let _ = writeln!(
            out,
            "{}: {}",
            canonical(k.as_str()),
            String::from_utf8_lossy(v.as_bytes())
        );
    }
    out
}

/// `user-agent` → `User-Agent`, as Go prints header names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The host's own IPv4 addresses from `/proc/net/fib_trie`: every address
/// followed by a `/32 host LOCAL` leaf, in the order found, without repeats.
pub fn local_ipv4s(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for l in fib_trie.lines() {
        let t = l.trim();
        if let Some(addr) = t.strip_prefix("|-- ").or_else(|| t.strip_prefix("+-- ")) {
            last = addr.split('/').next().and_then(|a| a.parse().ok());
        } else if t == "/32 host LOCAL" {
            if let Some(a) = last {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The answer to one datagram: who answered, and the sender.
pub fn render_datagram(who: &Identity, remote: SocketAddr) -> String {
    let mut out = String::new();
    for (k, v) in [
        ("Name", &who.name),
        ("Task", &who.task),
        ("Node", &who.node),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{k}: {v}");
        }
    }
    let _ = writeln!(out, "Hostname: {}", who.hostname);
    let _ = writeln!(out, "RemoteAddr: {remote}");
    out
}

/// Serves until killed. Prints `listening on ADDR` (the bound address, so
/// `--port 0` is usable) on stdout once ready.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let who = std::sync::Arc::new(Identity::gather(settings.name));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        println!("listening on {}", listener.local_addr()?);
        if let Some(port) = settings.udp_port {
            let addr = SocketAddr::new(settings.listen.ip(), port);
            let udp = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot listen on UDP {addr}"))?;
            println!("listening on udp {}", udp.local_addr()?);
            let who = who.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((_, from)) = udp.recv_from(&mut buf).await {
                    let _ = udp
                        .send_to(render_datagram(&who, from).as_bytes(), from)
                        .await;
                }
            });
        }
        if settings.proxy_protocol {
            loop {
                let (conn, remote) = listener.accept().await?;
                let who = who.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_proxied(conn, remote, &who).await {
                        eprintln!("whoami: {remote}: {e:#}");
                    }
                });
            }
        }
        let app = Router::new().fallback(
            move |ConnectInfo(remote): ConnectInfo<SocketAddr>,
                  method: Method,
                  uri: Uri,
                  version: Version,
                  headers: HeaderMap| {
                let who = who.clone();
                async move { render(&who, remote, &method, &uri, version, &headers) }
            },
        );
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .context("whoami server failed")
    })
}

/// One connection that starts with a PROXY protocol v2 header, then one
/// HTTP/1.x request; answered like any other, with the header's client as
/// `RemoteAddr`, and closed.
async fn serve_proxied(
    mut conn: tokio::net::TcpStream,
    peer: SocketAddr,
    who: &Identity,
) -> anyhow::Result<()> {
    use shoal_overlay::lb::proxy::{Addresses, ProxyHeader, ProxyParseError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let limit = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let (remote, used) = loop {
        match ProxyHeader::parse(&buf) {
            Ok((h, used)) => {
                let remote = match h.addresses {
                    Addresses::V4 { src, .. } => SocketAddr::V4(src),
                    Addresses::V6 { src, .. } => SocketAddr::V6(src),
                    Addresses::Unspec => peer,
                };
                break (remote, used);
            }
            Err(ProxyParseError::Incomplete(_)) => {}
            Err(e) => anyhow::bail!("not a PROXY protocol v2 header: {e}"),
        }
        let n = tokio::time::timeout_at(limit, conn.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "closed before the PROXY header ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..used);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        anyhow::ensure!(buf.len() < 64 * 1024, "request head over 64 KiB");
        let n = tokio::time::timeout_at(limit, conn.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "closed before the request ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = Method::from_bytes(first.next().unwrap_or("GET").as_bytes())?;
    let uri: Uri = first.next().unwrap_or("/").parse()?;
    let version = match first.next() {
        Some("HTTP/1.0") => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::new();
    for l in lines.take_while(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
                axum::http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let body = render(who, remote, &method, &uri, version, &headers);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(answer.as_bytes()).await?;
    conn.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.3
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.0.3
           /32 host LOCAL
";

    #[test]
    fn local_addresses_come_from_the_local_leaves_only() {
        assert_eq!(
            local_ipv4s(FIB_TRIE),
            [
                "10.0.0.3".parse::<Ipv4Addr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        assert!(local_ipv4s("").is_empty());
        assert!(local_ipv4s("|-- not-an-ip\n /32 host LOCAL\n").is_empty());
    }

    #[test]
    fn the_answer_names_who_answered_then_echoes_the_request() {
        let who = Identity {
            name: None,
            task: Some("web.1.abc".into()),
            node: Some("node2".into()),
            hostname: "f00".into(),
            ips: vec!["10.0.0.3".parse().unwrap()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "curl/8".parse().unwrap());
        let body = render(
            &who,
            "10.0.9.1:4000".parse().unwrap(),
            &Method::GET,
            &"/x?y=1".parse().unwrap(),
            Version::HTTP_11,
            &headers,
        );
        assert_eq!(
            body,
            "Task: web.1.abc\nNode: node2\nHostname: f00\nIP: 10.0.0.3\nRemoteAddr: 10.0.9.1:4000\nGET /x?y=1 HTTP/1.1\nUser-Agent: curl/8\n"
        );
    }
}
