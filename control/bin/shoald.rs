//! `shoald`: the node daemon. All logic lives in the `shoal-daemon` crate.
fn main() -> std::process::ExitCode {
    shoal_daemon::main()
}
