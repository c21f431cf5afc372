//! The `shoal` command-line interface.
//!
//! One module per command. Commands that talk to a daemon go through
//! [`http`], a small HTTP client over Unix sockets.
#![forbid(unsafe_code)]

pub mod dataplane;
pub mod doctor;
pub mod http;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `shoal`.
#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: Docker Swarm networking in userspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this host can run Shoal, and what to do about anything missing.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and steer the local shoald data plane.
    Dataplane {
        /// shoald's API socket.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/run/shoal/shoald.sock",
            env = "SHOAL_CONTROL",
            global = true
        )]
        control: PathBuf,
        #[command(subcommand)]
        command: DataplaneCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DataplaneCommand {
    /// Networks, endpoints, frame counters and drops by reason.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace an encrypted network's keys (rotation: add, switch --tx, retire).
    Keys {
        /// The network.
        network: String,
        /// A key as ID:SECRET (64 hex characters); up to three.
        #[arg(long = "key", value_name = "ID:SECRET", required = true)]
        keys: Vec<String>,
        /// The id of the key to send with.
        #[arg(long)]
        tx: u8,
    },
}

/// Entry point of `shoal`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor { json } => {
            let checks = doctor::run_checks();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&checks).unwrap_or_default()
                );
            } else {
                print!("{}", doctor::render_table(&checks));
            }
            return if doctor::all_required_ok(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Dataplane { control, command } => match command {
            DataplaneCommand::Status { json } => dataplane::status(&control, json),
            DataplaneCommand::Keys { network, keys, tx } => {
                dataplane::set_keys(&control, &network, &keys, tx)
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
