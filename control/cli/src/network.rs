//! `shoal network ...`: Docker's network verbs for the swarm's overlay
//! networks, through the local shoald (which forwards to the leader).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::bail;
use clap::Subcommand;
use ipnet::Ipv4Net;
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::NetworkSpec;
use shoal_manager::views::{render_network_ls, NetworkInspect};

use crate::args;
use crate::swarm::op;

/// `shoal network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create an overlay network; prints its id.
    Create {
        /// The driver. Shoal has one: overlay.
        #[arg(long, short, default_value = "overlay")]
        driver: String,
        /// The subnet in CIDR notation (default: the next free block of the
        /// swarm's address pool).
        #[arg(long, value_name = "CIDR", value_parser = args::ipv4_cidr)]
        subnet: Option<Ipv4Net>,
        /// The gateway (default: the subnet's first address); needs --subnet.
        #[arg(long, value_name = "IP")]
        gateway: Option<Ipv4Addr>,
        /// A driver option: `encrypted` seals traffic between nodes.
        #[arg(long = "opt", short = 'o', value_name = "KEY[=VALUE]")]
        opts: Vec<String>,
        /// Let standalone containers attach, not only services.
        #[arg(long)]
        attachable: bool,
        /// Make it the routing-mesh network (a swarm has at most one).
        #[arg(long)]
        ingress: bool,
        /// A label (key=value).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The network's name.
        name: String,
    },
    /// List the swarm's networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
        /// Print whole ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show networks in detail (JSON, like Docker's).
    Inspect {
        /// Network names, ids or id prefixes.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Network names, ids or id prefixes.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// Runs a `shoal network` subcommand against the shoald at `control`.
pub fn run(control: &Path, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            opts,
            attachable,
            ingress,
            labels,
            name,
        } => {
            let spec = NetworkSpec {
                name,
                driver,
                subnet,
                gateway,
                options: args::labels(&opts),
                attachable,
                ingress,
                labels: args::labels(&labels),
            };
            let OpReply::Id(id) = op(control, &Op::CreateNetwork(Box::new(spec)))? else {
                bail!("shoald sent an unexpected answer");
            };
            println!("{id}");
            Ok(())
        }
        NetworkCommand::Ls { quiet, no_trunc } => {
            let OpReply::Networks(mut networks) = op(control, &Op::Networks)? else {
                bail!("shoald sent an unexpected answer");
            };
            if quiet {
                networks.sort_by(|a, b| a.name.cmp(&b.name));
                for n in &networks {
                    println!("{}", shoal_manager::views::short_id(&n.id, no_trunc));
                }
            } else {
                print!("{}", render_network_ls(&networks, no_trunc));
            }
            Ok(())
        }
        NetworkCommand::Inspect { networks } => {
            let (found, errors) = each(&networks, |key| {
                match op(control, &Op::Network { key: key.into() })? {
                    OpReply::Network(n) => Ok(NetworkInspect::of(&n)),
                    _ => bail!("shoald sent an unexpected answer"),
                }
            });
            println!("{}", serde_json::to_string_pretty(&found)?);
            errors
        }
        NetworkCommand::Rm { networks } => {
            let (_, errors) = each(&networks, |key| {
                op(control, &Op::RemoveNetwork { key: key.into() })?;
                println!("{key}");
                Ok(())
            });
            errors
        }
    }
}

/// Runs `f` for every key, like Docker's CLI: a failure does not stop the
/// others, and all failures are reported together at the end.
pub(crate) fn each<T>(
    keys: &[String],
    mut f: impl FnMut(&str) -> anyhow::Result<T>,
) -> (Vec<T>, anyhow::Result<()>) {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for key in keys {
        match f(key) {
            Ok(t) => done.push(t),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(failed.join("\n")))
    };
    (done, result)
}
