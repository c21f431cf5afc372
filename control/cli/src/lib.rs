//! The `shoal` command-line interface.
#![forbid(unsafe_code)]

/// Entry point of `shoal`.
pub fn main() -> std::process::ExitCode {
    eprintln!("shoal: not yet implemented");
    std::process::ExitCode::FAILURE
}
