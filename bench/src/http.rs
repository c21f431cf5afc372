//! A minimal HTTP/1.1 client for shoald's API socket and etcd, so the
//! benchmarks need no HTTP stack of their own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result};

/// A minimal HTTP/1.1 keep-alive client: one request at a time on one
/// connection, bodies by Content-Length or chunked.
pub(crate) struct Http<S: Read + Write> {
    io: BufReader<S>,
}

pub(crate) trait Timeout {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl Timeout for UnixStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl Timeout for TcpStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl<S: Read + Write + Timeout> Http<S> {
    pub(crate) fn new(stream: S) -> Result<Self> {
        // A write that takes longer than this is a stuck cluster, not a figure.
        stream.set_timeout(Duration::from_secs(20))?;
        Ok(Http {
            io: BufReader::new(stream),
        })
    }

    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String)> {
        write!(
            self.io.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut line = String::new();
        self.io.read_line(&mut line)?;
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("malformed status line {line:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            line.clear();
            self.io.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>().context("bad Content-Length")?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.io.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            let mut body = vec![0; length.context("answer without a length")?];
            self.io.read_exact(&mut body)?;
            out = body;
        }
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_reads_chunked_and_sized_answers_on_one_connection() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
              HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope",
        )
        .unwrap();
        let mut h = Http::new(a).unwrap();
        assert_eq!(h.request("GET", "/", "").unwrap(), (200, "abcde".into()));
        assert_eq!(h.request("GET", "/", "").unwrap(), (404, "nope".into()));
    }
}
