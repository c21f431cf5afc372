//! `shoal`: the command-line interface. All logic lives in the `shoal-cli` crate.
fn main() -> std::process::ExitCode {
    shoal_cli::main()
}
