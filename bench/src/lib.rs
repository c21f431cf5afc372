//! Shoal's benchmarks. Benchmarks measure; tests assert behaviour. Every figure
//! here is compared with a peer measured in the same run.
#![forbid(unsafe_code)]

pub mod chart;
pub mod dns;
mod http;
pub mod mesh;
pub mod overlay;
pub mod peers;
pub mod raft;

/// Whether `program` is on the PATH (as the shell finds it).
pub(crate) fn installed(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until shoald opens its API socket `sock` (20 s at most).
pub(crate) fn wait_for_socket(sock: &std::path::Path) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("shoald did not open {} within 20 s", sock.display())
}
