//! The `shoal` command-line interface.
//!
//! One module per command. Commands that talk to a daemon go through
//! [`http`], a small HTTP client over Unix sockets.
#![forbid(unsafe_code)]

pub mod args;
pub mod dataplane;
pub mod demo;
pub mod doctor;
pub mod http;
pub mod lab;
pub mod network;
pub mod progress;
pub mod secret;
pub mod service;
pub mod swarm;
pub mod whoami;

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
    /// Serve HTTP answers naming the task, node, hostname and addresses that
    /// answered (like traefik/whoami): the workload of tests and demos.
    Whoami {
        /// The port to listen on (0: any free port, printed at start).
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// The address to listen on.
        #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
        /// An extra `Name:` line in every answer.
        #[arg(long)]
        name: Option<String>,
        /// Expect a PROXY protocol v2 header on every connection (from a
        /// port published with `proxy-protocol=v2`) and answer with its
        /// client as `RemoteAddr`.
        #[arg(long)]
        proxy_protocol: bool,
        /// Also answer UDP datagrams on this port.
        #[arg(long, value_name = "PORT")]
        udp_port: Option<u16>,
    },
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
    /// Manage the swarm (init, join, join-token, leave).
    Swarm {
        #[command(flatten)]
        control: Control,
        #[command(subcommand)]
        command: SwarmCommand,
    },
    /// Manage the swarm's nodes (managers only).
    Node {
        #[command(flatten)]
        control: Control,
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Manage the swarm's overlay networks (managers only).
    Network {
        #[command(flatten)]
        control: Control,
        #[command(subcommand)]
        command: network::NetworkCommand,
    },
    /// Manage the swarm's services (managers only).
    Service {
        #[command(flatten)]
        control: Control,
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Manage the swarm's secrets (managers only).
    Secret {
        #[command(flatten)]
        control: Control,
        #[command(subcommand)]
        command: secret::SecretCommand,
    },
    /// Docker Swarm's routing mesh in a minute (root): a 3-node lab, an
    /// encrypted overlay network, a service published on port 5000, and
    /// requests from a client outside the swarm to every node, each step
    /// shown with its docker and shoal commands.
    Demo {
        /// Where the demo's lab keeps its files (as `shoal lab --root`).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/run/shoal/lab",
            env = "SHOAL_LAB_ROOT"
        )]
        root: PathBuf,
        #[command(flatten)]
        flags: demo::DemoFlags,
    },
    /// Run a multi-node swarm on this machine, in network namespaces (root).
    Lab {
        /// Where labs keep their daemons' state, sockets, logs and lab.json.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/run/shoal/lab",
            env = "SHOAL_LAB_ROOT",
            global = true
        )]
        root: PathBuf,
        #[command(subcommand)]
        command: lab::LabCommand,
    },
}

/// The local shoald's API socket.
#[derive(Debug, clap::Args)]
struct Control {
    /// shoald's API socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/shoal/shoald.sock",
        env = "SHOAL_CONTROL",
        global = true
    )]
    control: PathBuf,
}

#[derive(Debug, Subcommand)]
enum SwarmCommand {
    /// Initialize a swarm: this node becomes its first manager.
    Init {
        /// The address other nodes reach this one at.
        #[arg(long, value_name = "ADDR")]
        advertise_addr: Option<std::net::IpAddr>,
        /// Where the manager API listens.
        #[arg(long, value_name = "ADDR:PORT")]
        listen_addr: Option<std::net::SocketAddr>,
        /// Restart a one-manager swarm from this node's surviving state.
        #[arg(long)]
        force_new_cluster: bool,
        /// Where networks without --subnet get theirs (default 10.0.0.0/8).
        #[arg(long, value_name = "CIDR", value_parser = args::ipv4_cidr)]
        default_addr_pool: Option<ipnet::Ipv4Net>,
        /// The prefix length of those subnets (default 24).
        #[arg(long, value_name = "LENGTH")]
        default_addr_pool_mask_length: Option<u8>,
        /// How long node certificates live, like 2160h (default 90 days, at
        /// least 1h); nodes renew theirs between 50% and 80% of it.
        #[arg(long, value_name = "DURATION", value_parser = args::duration_secs)]
        cert_expiry: Option<u64>,
        /// How often nodes heartbeat to the managers, like 1s (default 1s).
        #[arg(long, value_name = "DURATION", value_parser = args::duration_secs)]
        dispatcher_heartbeat: Option<u64>,
        /// How long a node may stay silent before it is Down, like 5s
        /// (default 5s, at least two heartbeats).
        #[arg(long, value_name = "DURATION", value_parser = args::duration_secs)]
        node_down_timeout: Option<u64>,
        /// How often the leader rotates the network and gossip keys, like 12h
        /// (default 12h).
        #[arg(long, value_name = "DURATION", value_parser = args::duration_secs)]
        key_rotation_interval: Option<u64>,
    },
    /// Join a swarm as a worker or a manager (the token says which).
    Join {
        /// The join token.
        #[arg(long)]
        token: String,
        /// The address other nodes reach this one at.
        #[arg(long, value_name = "ADDR")]
        advertise_addr: Option<std::net::IpAddr>,
        /// Where this node's manager API would listen.
        #[arg(long, value_name = "ADDR:PORT")]
        listen_addr: Option<std::net::SocketAddr>,
        /// A manager, as HOST:PORT.
        remote: String,
    },
    /// Print or rotate a join token.
    JoinToken {
        /// Make a new token; the old one stops working.
        #[arg(long)]
        rotate: bool,
        /// Print the token only.
        #[arg(long, short)]
        quiet: bool,
        /// worker or manager.
        role: String,
    },
    /// Leave the swarm.
    Leave {
        /// Leave even as a manager.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// List the nodes of the swarm.
    Ls {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show nodes in detail (JSON).
    Inspect {
        /// Node ids, id prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make workers managers.
    Promote {
        /// Node ids, id prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        /// Node ids, id prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Change a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long)]
        availability: Option<String>,
        /// Add or change a label (key=value).
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a label.
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
        /// Node id, id prefix or hostname.
        node: String,
    },
    /// List the tasks on nodes (this node when none is given).
    Ps {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
        /// Print whole ids.
        #[arg(long)]
        no_trunc: bool,
        /// Node ids, id prefixes or hostnames.
        nodes: Vec<String>,
    },
    /// Remove nodes from the swarm.
    Rm {
        /// Remove even if the node is not down.
        #[arg(long, short)]
        force: bool,
        /// Node ids, id prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Entry point of `shoal`.
pub fn main() -> ExitCode {
    match execute(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `shoal ARGS` in this process (`args` without the program name), as
/// if typed: `shoal demo` runs the very commands it shows this way.
pub(crate) fn run_args<I, S>(args: I) -> anyhow::Result<ExitCode>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let argv =
        std::iter::once(std::ffi::OsString::from("shoal")).chain(args.into_iter().map(Into::into));
    execute(Cli::try_parse_from(argv)?)
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let result = match cli.command {
        Command::Whoami {
            port,
            bind,
            name,
            proxy_protocol,
            udp_port,
        } => whoami::run(whoami::Settings {
            listen: std::net::SocketAddr::new(bind, port),
            name,
            proxy_protocol,
            udp_port,
        }),
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
            return Ok(if doctor::all_required_ok(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Dataplane { control, command } => match command {
            DataplaneCommand::Status { json } => dataplane::status(&control, json),
            DataplaneCommand::Keys { network, keys, tx } => {
                dataplane::set_keys(&control, &network, &keys, tx)
            }
        },
        Command::Swarm { control, command } => {
            let c = &control.control;
            match command {
                SwarmCommand::Init {
                    advertise_addr,
                    listen_addr,
                    force_new_cluster,
                    default_addr_pool,
                    default_addr_pool_mask_length,
                    cert_expiry,
                    dispatcher_heartbeat,
                    node_down_timeout,
                    key_rotation_interval,
                } => swarm::init(
                    c,
                    swarm::InitFlags {
                        advertise: advertise_addr,
                        listen: listen_addr,
                        force_new_cluster,
                        default_addr_pool,
                        subnet_size: default_addr_pool_mask_length,
                        cert_expiry_secs: cert_expiry,
                        heartbeat_secs: dispatcher_heartbeat,
                        node_down_secs: node_down_timeout,
                        key_rotation_secs: key_rotation_interval,
                    },
                ),
                SwarmCommand::Join {
                    token,
                    advertise_addr,
                    listen_addr,
                    remote,
                } => swarm::join(c, &token, &remote, advertise_addr, listen_addr),
                SwarmCommand::JoinToken {
                    rotate,
                    quiet,
                    role,
                } => swarm::join_token(c, &role, rotate, quiet),
                SwarmCommand::Leave { force } => swarm::leave(c, force),
            }
        }
        Command::Node { control, command } => {
            let c = &control.control;
            match command {
                NodeCommand::Ls { quiet } => swarm::node_ls(c, quiet),
                NodeCommand::Inspect { nodes } => swarm::node_inspect(c, &nodes),
                NodeCommand::Promote { nodes } => {
                    swarm::set_role(c, &nodes, shoal_manager::state::Role::Manager)
                }
                NodeCommand::Demote { nodes } => {
                    swarm::set_role(c, &nodes, shoal_manager::state::Role::Worker)
                }
                NodeCommand::Update {
                    availability,
                    label_add,
                    label_rm,
                    node,
                } => swarm::update(c, &node, availability.as_deref(), &label_add, &label_rm),
                NodeCommand::Rm { force, nodes } => swarm::remove(c, &nodes, force),
                NodeCommand::Ps {
                    quiet,
                    no_trunc,
                    nodes,
                } => service::node_ps(c, &nodes, quiet, no_trunc, unix_now()),
            }
        }
        Command::Network { control, command } => network::run(&control.control, command),
        Command::Secret { control, command } => secret::run(&control.control, command, unix_now()),
        Command::Service { control, command } => {
            service::run(&control.control, command, unix_now())
        }
        Command::Demo { root, flags } => return demo::run(&root, flags),
        Command::Lab { root, command } => return lab::run(&root, command),
    };
    result.map(|()| ExitCode::SUCCESS)
}
