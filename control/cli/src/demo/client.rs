//! The demo's HTTP client: plain HTTP/1.0 GETs over `std::net`, sent from a
//! thread that lives in the lab's client namespace, so the requests come from
//! outside the swarm the way a user's would, and the demo needs no curl.
//!
//! `setns` changes the calling thread only, so the client owns one thread
//! that enters the namespace once and serves requests from a channel until
//! the client is dropped (see `shoal_sys::netns`).

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use shoal_sys::netns::NetNs;

use super::report::{parse_response, parse_whoami, Outcome};

/// The most bytes read from one answer (whoami's are a few hundred).
const MAX_ANSWER: u64 = 64 * 1024;

type Job = (SocketAddrV4, Duration, mpsc::Sender<Outcome>);

/// An HTTP client inside a network namespace.
#[derive(Debug)]
pub struct NsClient {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsClient {
    /// Starts the client's thread inside the namespace `ip netns` calls
    /// `namespace`.
    pub fn start(namespace: &str) -> anyhow::Result<NsClient> {
        let ns = NetNs::named(namespace)?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (entered_tx, entered) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("demo-client".into())
            .spawn(move || {
                let ok = ns.enter_current_thread();
                let failed = ok.is_err();
                let _ = entered_tx.send(ok);
                if failed {
                    return;
                }
                for (to, limit, reply) in inbox {
                    let _ = reply.send(get(to, limit));
                }
            })
            .context("cannot start the client's thread")?;
        entered
            .recv()
            .context("the client's thread died before entering its namespace")??;
        Ok(NsClient {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// `GET /` from `to`, within about `limit` (connecting, then reading).
    pub fn get(&self, to: SocketAddrV4, limit: Duration) -> Outcome {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send((to, limit, reply)).is_ok());
        if !sent {
            return Outcome::Failed("the client's thread is gone".into());
        }
        answer
            .recv()
            .unwrap_or_else(|_| Outcome::Failed("the client's thread is gone".into()))
    }
}

impl Drop for NsClient {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.0 request: the server closes the connection after its answer,
/// so the answer is everything read until then.
fn get(to: SocketAddrV4, limit: Duration) -> Outcome {
    match exchange(to, limit) {
        Ok(raw) => match parse_response(&raw) {
            Ok((200, body)) => match parse_whoami(&String::from_utf8_lossy(body)) {
                Some(a) => Outcome::Answered(a),
                None => Outcome::Failed("an answer without a Task: line (not a swarm task)".into()),
            },
            Ok((code, _)) => Outcome::Failed(format!("HTTP status {code}")),
            Err(e) => Outcome::Failed(e),
        },
        Err(e) => Outcome::Failed(describe(&e)),
    }
}

fn exchange(to: SocketAddrV4, limit: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(to), limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    // One write: the request leaves in one segment.
    let request = format!("GET / HTTP/1.0\r\nHost: {to}\r\nUser-Agent: shoal-demo\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    Ok(raw)
}

/// Short words for the errors a user will meet here.
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::TimedOut | K::WouldBlock => "timed out".into(),
        K::ConnectionReset => "connection reset".into(),
        K::HostUnreachable | K::NetworkUnreachable => "unreachable".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on loopback that answers one request with `answer`.
    fn serve_once(answer: &'static [u8]) -> SocketAddrV4 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET / HTTP/1.0\r\nHost: 127.0.0.1:"));
            s.write_all(answer).unwrap();
        });
        addr
    }

    #[test]
    fn a_whoami_answer_names_its_task() {
        let to = serve_once(b"HTTP/1.0 200 OK\r\n\r\nTask: web.1.x\nNode: node1\nRemoteAddr: a\n");
        assert_eq!(
            get(to, Duration::from_secs(5)),
            Outcome::Answered(super::super::report::Answer {
                task: "web.1.x".into(),
                node: Some("node1".into())
            })
        );
        let to = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\n");
        assert_eq!(
            get(to, Duration::from_secs(5)),
            Outcome::Failed("HTTP status 404".into())
        );
    }

    #[test]
    fn nobody_listening_is_connection_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(to) = l.local_addr().unwrap() else {
            unreachable!()
        };
        drop(l);
        assert_eq!(
            get(to, Duration::from_secs(5)),
            Outcome::Failed("connection refused".into())
        );
    }
}
