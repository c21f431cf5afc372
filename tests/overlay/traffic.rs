//! Traffic generators that run inside task namespaces: bounded TCP transfers
//! whose bytes are checked end to end.

use std::hash::Hasher;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_topology::Namespace;

/// Deterministic pseudo-random bytes (xorshift64*), so both ends agree on the
/// content without shipping it around.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Digest of a byte stream (SipHash via the std hasher; integrity, not security).
#[derive(Default)]
pub struct Digest {
    h: std::collections::hash_map::DefaultHasher,
    len: u64,
}

impl Digest {
    pub fn update(&mut self, b: &[u8]) {
        self.h.write(b);
        self.len += b.len() as u64;
    }

    pub fn finish(&self) -> (u64, u64) {
        (self.len, self.h.finish())
    }
}

/// What a transfer saw.
#[derive(Debug)]
pub struct TransferReport {
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Sends `bytes` of pattern from `client` to `server_ip:port` inside `server`,
/// and checks that exactly those bytes arrive. `during` runs on the caller's
/// thread while the transfer is in flight (after the first megabyte arrived).
pub fn transfer(
    server: &Namespace,
    server_ip: Ipv4Addr,
    client: &Namespace,
    bytes: u64,
    port: u16,
    during: impl FnOnce() -> Result<()>,
) -> Result<TransferReport> {
    let limit = Duration::from_secs(120);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (progress_tx, progress_rx) = mpsc::channel::<()>();
    let addr = SocketAddr::from((server_ip, port));
    std::thread::scope(|scope| -> Result<TransferReport> {
        let receiver = scope.spawn(move || {
            server
                .run(move || -> Result<(u64, u64)> {
                    let listener =
                        TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
                    listener.set_nonblocking(true)?;
                    let _ = ready_tx.send(());
                    let deadline = Instant::now() + Duration::from_secs(15);
                    let mut conn = loop {
                        match listener.accept() {
                            Ok((c, _)) => break c,
                            Err(e)
                                if e.kind() == ErrorKind::WouldBlock
                                    && Instant::now() < deadline =>
                            {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Err(e) => return Err(e).context("accept"),
                        }
                    };
                    conn.set_nonblocking(false)?;
                    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
                    let mut digest = Digest::default();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut signalled = false;
                    loop {
                        let n = conn.read(&mut buf).context("read (stalled for 20 s?)")?;
                        if n == 0 {
                            break;
                        }
                        digest.update(&buf[..n]);
                        if !signalled && digest.len >= 1 << 20 {
                            signalled = true;
                            let _ = progress_tx.send(());
                        }
                    }
                    Ok(digest.finish())
                })
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("receiver did not start listening")?;
        let start = Instant::now();
        let sender = scope.spawn(move || {
            client
                .run(move || -> Result<(u64, u64)> {
                    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        .with_context(|| format!("connect {addr}"))?;
                    conn.set_write_timeout(Some(Duration::from_secs(20)))?;
                    let mut pattern = Pattern::new(bytes ^ port as u64);
                    let mut digest = Digest::default();
                    let mut buf = vec![0u8; 1 << 16];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        pattern.fill(&mut buf[..n]);
                        conn.write_all(&buf[..n])
                            .context("write (stalled for 20 s?)")?;
                        digest.update(&buf[..n]);
                        left -= n as u64;
                        if start.elapsed() > limit {
                            bail!("transfer exceeded {limit:?}");
                        }
                    }
                    conn.shutdown(std::net::Shutdown::Write)?;
                    Ok(digest.finish())
                })
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
        });
        let during_result = match progress_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => during(),
            Err(_) => Ok(()),
        };
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        during_result.context("action during the transfer")?;
        if sent != got {
            bail!(
                "transfer corrupted: sent {} bytes (digest {:x}), received {} bytes (digest {:x})",
                sent.0,
                sent.1,
                got.0,
                got.1
            );
        }
        Ok(TransferReport {
            bytes: got.0,
            elapsed: start.elapsed(),
        })
    })
}
