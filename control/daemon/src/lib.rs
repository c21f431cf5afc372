//! The `shoald` node daemon.
#![forbid(unsafe_code)]

/// Entry point of `shoald`.
pub fn main() -> std::process::ExitCode {
    eprintln!("shoald: not yet implemented");
    std::process::ExitCode::FAILURE
}
