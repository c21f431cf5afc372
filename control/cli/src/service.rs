//! `shoal service ...` and `shoal node ps`: Docker's service verbs, through
//! the local shoald (which forwards to the leader). Flag values are parsed
//! here with the manager's own parsers, so a bad one is refused before
//! anything is sent, with a message naming the flag and the value.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use clap::{Args, Subcommand};
use hyper::Method;
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::constraint::Constraint;
use shoal_manager::state::service::{
    parse_cpus, parse_duration, parse_memory, EndpointMode, FailureAction, Limits, PortConfig,
    RestartCondition, RestartPolicy, UpdateConfig, UpdateOrder,
};
use shoal_manager::state::update::ServiceChanges;
use shoal_manager::state::{ServiceMode, ServiceSpec};
use shoal_manager::swarm::SwarmInfo;
use shoal_manager::views::{render_service_ls, render_task_ps, service_inspect, short_id};

use crate::args;
use crate::network::each;
use crate::progress::{self, Current};
use crate::swarm::{call, op};

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A number of replicas (`--replicas`).
    Replicated,
    /// One task on every eligible node.
    Global,
}

/// The flags of `service create`.
#[derive(Debug, Args)]
pub struct CreateFlags {
    /// The service's name.
    #[arg(long)]
    name: String,
    /// How many tasks (replicated mode; default 1).
    #[arg(long, value_name = "K")]
    replicas: Option<u64>,
    /// replicated or global.
    #[arg(long, value_enum, default_value = "replicated")]
    mode: Mode,
    /// A network to attach to (name, id or id prefix).
    #[arg(long = "network", value_name = "NET")]
    networks: Vec<String>,
    /// Publish a port: PUBLISHED:TARGET[/PROTOCOL], or
    /// published=P,target=T,protocol=tcp|udp,mode=ingress|host.
    #[arg(long = "publish", short = 'p', value_name = "PORT", value_parser = parse_port)]
    ports: Vec<PortConfig>,
    /// A placement constraint (node.role==worker, node.labels.k==v, node.hostname!=x, node.id==ID).
    #[arg(long = "constraint", value_name = "EXPR", value_parser = parse_constraint)]
    constraints: Vec<Constraint>,
    /// At most this many tasks of the service on one node.
    #[arg(long, value_name = "M")]
    replicas_max_per_node: Option<u64>,
    /// An environment variable (KEY=VALUE).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<String>,
    /// A label (key=value).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[command(flatten)]
    policy: PolicyFlags,
    /// vip or dnsrr.
    #[arg(long, value_name = "MODE", value_parser = parse_from_str::<EndpointMode>)]
    endpoint_mode: Option<EndpointMode>,
    /// Return at once instead of showing progress until the tasks run.
    #[arg(long, short)]
    detach: bool,
    /// Run the tasks as containers of this local image, on nodes whose
    /// shoald runs with `--docker` (nothing is pulled).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The command and its arguments, after `--` (with --image: instead of
    /// the image's own).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The restart, update and resource flags that `service create` and
/// `service update` share; unset ones keep the default (create) or the
/// current value (update).
#[derive(Debug, Args)]
pub struct PolicyFlags {
    /// When to restart a task's process: none, on-failure or any.
    #[arg(long, value_name = "COND", value_parser = parse_from_str::<RestartCondition>)]
    restart_condition: Option<RestartCondition>,
    /// How long to wait between restarts (5s, 1m30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    restart_delay: Option<u64>,
    /// How many restarts before giving up (0: no limit).
    #[arg(long, value_name = "N")]
    restart_max_attempts: Option<u64>,
    /// How many tasks a rolling update replaces at once (0: all).
    #[arg(long, value_name = "N")]
    update_parallelism: Option<u64>,
    /// How long to wait between batches of a rolling update.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    update_delay: Option<u64>,
    /// stop-first or start-first.
    #[arg(long, value_name = "ORDER", value_parser = parse_from_str::<UpdateOrder>)]
    update_order: Option<UpdateOrder>,
    /// What a failing update does: pause, continue or rollback.
    #[arg(long, value_name = "ACTION", value_parser = parse_from_str::<FailureAction>)]
    update_failure_action: Option<FailureAction>,
    /// How long a new task must run to count as updated (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    update_monitor: Option<u64>,
    /// Limit each task to this many CPUs (e.g. 0.5; cgroup v2 where present).
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    limit_cpu: Option<u64>,
    /// Limit each task's memory (e.g. 64m, 1g; cgroup v2 where present).
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    limit_memory: Option<u64>,
}

/// The flags of `service update`.
#[derive(Debug, Args)]
pub struct UpdateFlags {
    /// How many tasks.
    #[arg(long, value_name = "K")]
    replicas: Option<u64>,
    /// The new image (services created with --image only).
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The new command and its arguments, as one string split on spaces
    /// (or give them after `--`).
    #[arg(long, value_name = "ARGS")]
    args: Option<String>,
    /// Add or change an environment variable (KEY=VALUE).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long, value_name = "KEY")]
    env_rm: Vec<String>,
    /// Add a placement constraint.
    #[arg(long, value_name = "EXPR", value_parser = parse_constraint)]
    constraint_add: Vec<Constraint>,
    /// Remove a placement constraint (as written at create).
    #[arg(long, value_name = "EXPR")]
    constraint_rm: Vec<String>,
    /// Publish a port (as `--publish` of `service create`).
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    publish_add: Vec<PortConfig>,
    /// Stop publishing the port with this target.
    #[arg(long, value_name = "TARGET")]
    publish_rm: Vec<u16>,
    #[command(flatten)]
    policy: PolicyFlags,
    /// Replace the tasks even if nothing they run changed.
    #[arg(long)]
    force: bool,
    /// Return at once.
    #[arg(long, short)]
    detach: bool,
    /// The service name, id or id prefix.
    service: String,
    /// The new command and its arguments, after `--`.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl UpdateFlags {
    fn changes(&self) -> anyhow::Result<ServiceChanges> {
        let command = match (&self.args, self.command.is_empty()) {
            (Some(_), false) => {
                bail!("give the new command either with --args or after --, not both")
            }
            (Some(a), true) => Some(a.split_whitespace().map(str::to_string).collect()),
            (None, false) => Some(self.command.clone()),
            (None, true) => None,
        };
        Ok(ServiceChanges {
            replicas: self.replicas,
            command,
            image: self.image.clone(),
            env_add: self.env_add.clone(),
            env_rm: self.env_rm.clone(),
            constraint_add: self.constraint_add.clone(),
            constraint_rm: self.constraint_rm.clone(),
            publish_add: self.publish_add.clone(),
            publish_rm: self.publish_rm.clone(),
            restart_condition: self.policy.restart_condition,
            restart_delay_ns: self.policy.restart_delay,
            restart_max_attempts: self.policy.restart_max_attempts,
            update_parallelism: self.policy.update_parallelism,
            update_delay_ns: self.policy.update_delay,
            update_order: self.policy.update_order,
            update_failure_action: self.policy.update_failure_action,
            update_monitor_ns: self.policy.update_monitor,
            limit_cpu: self.policy.limit_cpu,
            limit_memory: self.policy.limit_memory,
            force: self.force,
        })
    }
}

fn parse_port(s: &str) -> Result<PortConfig, String> {
    s.parse()
}

fn parse_constraint(s: &str) -> Result<Constraint, String> {
    s.parse()
}

fn parse_from_str<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl CreateFlags {
    /// The spec these flags ask for.
    pub fn spec(self) -> anyhow::Result<ServiceSpec> {
        let mode = match (self.mode, self.replicas) {
            (Mode::Global, Some(_)) => {
                bail!("--replicas can only be used with replicated mode (not with --mode global)")
            }
            (Mode::Global, None) => ServiceMode::Global,
            (Mode::Replicated, r) => ServiceMode::Replicated {
                replicas: r.unwrap_or(1),
            },
        };
        if self.replicas_max_per_node == Some(0) {
            bail!(
                "invalid --replicas-max-per-node 0: give at least 1, or leave it out for no limit"
            );
        }
        if self.image.is_none() && self.command.is_empty() {
            bail!("give the command to run after --, or an --image");
        }
        let r = RestartPolicy::default();
        let u = UpdateConfig::default();
        let p = &self.policy;
        Ok(ServiceSpec {
            name: self.name,
            mode,
            image: self.image,
            command: self.command,
            env: self.env,
            networks: self.networks,
            ports: self.ports,
            constraints: self.constraints,
            max_replicas_per_node: self.replicas_max_per_node,
            restart: RestartPolicy {
                condition: p.restart_condition.unwrap_or(r.condition),
                delay_ns: p.restart_delay.unwrap_or(r.delay_ns),
                max_attempts: p.restart_max_attempts.unwrap_or(r.max_attempts),
            },
            update: UpdateConfig {
                parallelism: p.update_parallelism.unwrap_or(u.parallelism),
                delay_ns: p.update_delay.unwrap_or(u.delay_ns),
                order: p.update_order.unwrap_or(u.order),
                failure_action: p.update_failure_action.unwrap_or(u.failure_action),
                monitor_ns: p.update_monitor.unwrap_or(u.monitor_ns),
            },
            endpoint_mode: self.endpoint_mode.unwrap_or_default(),
            labels: args::labels(&self.labels),
            limits: Limits {
                nano_cpus: p.limit_cpu,
                memory_bytes: p.limit_memory,
            },
        })
    }
}

/// `shoal service` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service; prints its id, then its progress until its tasks
    /// run (unless `--detach`).
    Create(Box<CreateFlags>),
    /// List the services.
    #[command(visible_alias = "list")]
    Ls {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
        /// Print whole ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// List the tasks of services.
    Ps {
        /// Print ids only.
        #[arg(long, short)]
        quiet: bool,
        /// Print whole ids.
        #[arg(long)]
        no_trunc: bool,
        /// Service names, ids or id prefixes.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show services in detail (JSON, like Docker's).
    Inspect {
        /// Service names, ids or id prefixes.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Change the number of replicas: SERVICE=REPLICAS.
    Scale {
        /// Return at once instead of showing progress until the tasks run.
        #[arg(long, short)]
        detach: bool,
        /// SERVICE=REPLICAS pairs.
        #[arg(required = true, value_name = "SERVICE=REPLICAS", value_parser = parse_scale)]
        pairs: Vec<(String, u64)>,
    },
    /// Change a service; tasks whose command, environment or ports change
    /// are replaced in a rolling update.
    Update(Box<UpdateFlags>),
    /// Go back to the service's previous spec.
    Rollback {
        /// Return at once.
        #[arg(long, short)]
        detach: bool,
        /// The service name, id or id prefix.
        service: String,
    },
    /// Show what a service's tasks wrote to stdout and stderr.
    Logs {
        /// Keep printing new lines as they come (stop with Ctrl-C).
        #[arg(long, short)]
        follow: bool,
        /// Print only the lines, without the task and node prefix.
        #[arg(long)]
        raw: bool,
        /// Show timestamps.
        #[arg(long, short)]
        timestamps: bool,
        /// The service name, id or id prefix.
        service: String,
    },
    /// Remove services.
    #[command(visible_alias = "remove")]
    Rm {
        /// Service names, ids or id prefixes.
        #[arg(required = true)]
        services: Vec<String>,
    },
}

fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let bad = || format!("invalid scale specifier {s:?}: use SERVICE=REPLICAS, e.g. web=6");
    let (name, n) = s.split_once('=').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), n.parse().map_err(|_| bad())?))
}

fn tasks(
    control: &Path,
    service: Option<&str>,
    node: Option<&str>,
) -> anyhow::Result<Vec<shoal_manager::views::TaskView>> {
    let OpReply::Tasks(tasks) = op(
        control,
        &Op::Tasks {
            service: service.map(str::to_string),
            node: node.map(str::to_string),
        },
    )?
    else {
        bail!("shoald sent an unexpected answer");
    };
    Ok(tasks)
}

fn print_tasks(tasks: &[shoal_manager::views::TaskView], quiet: bool, no_trunc: bool, now: u64) {
    if quiet {
        for t in tasks {
            println!("{}", short_id(&t.task.id, no_trunc));
        }
    } else {
        print!("{}", render_task_ps(tasks, now, no_trunc));
    }
}

/// Runs a `shoal service` subcommand against the shoald at `control`.
pub fn run(control: &Path, command: ServiceCommand, now: u64) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(flags) => {
            let detach = flags.detach;
            let spec = flags.spec()?;
            let OpReply::Id(id) = op(control, &Op::CreateService(Box::new(spec)))? else {
                bail!("shoald sent an unexpected answer");
            };
            println!("{id}");
            if !detach {
                progress::wait_on_stdout(control, &id, Current::Version)?;
            }
            Ok(())
        }
        ServiceCommand::Ls { quiet, no_trunc } => {
            let OpReply::Services(services) = op(control, &Op::Services)? else {
                bail!("shoald sent an unexpected answer");
            };
            if quiet {
                for s in &services {
                    println!("{}", short_id(&s.service.id, no_trunc));
                }
            } else {
                print!("{}", render_service_ls(&services, no_trunc));
            }
            Ok(())
        }
        ServiceCommand::Ps {
            quiet,
            no_trunc,
            services,
        } => {
            let mut all = Vec::new();
            let (_, errors) = each(&services, |key| {
                all.extend(tasks(control, Some(key), None)?);
                Ok(())
            });
            print_tasks(&all, quiet, no_trunc, now);
            errors
        }
        ServiceCommand::Inspect { services } => {
            let (found, errors) = each(&services, |key| {
                match op(control, &Op::Service { key: key.into() })? {
                    OpReply::Service(s) => Ok(service_inspect(&s)),
                    _ => bail!("shoald sent an unexpected answer"),
                }
            });
            println!("{}", serde_json::to_string_pretty(&found)?);
            errors
        }
        ServiceCommand::Scale { detach, pairs } => {
            let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
            let wanted: BTreeMap<&str, u64> = pairs.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            let (scaled, errors) = each(&keys, |key| {
                let replicas = wanted[key];
                op(
                    control,
                    &Op::ScaleService {
                        key: key.into(),
                        replicas,
                    },
                )?;
                println!("{key} scaled to {replicas}");
                Ok(key.to_string())
            });
            if !detach {
                for key in &scaled {
                    progress::wait_on_stdout(control, key, Current::Version)?;
                }
            }
            errors
        }
        ServiceCommand::Update(flags) => {
            let changes = flags.changes()?;
            op(
                control,
                &Op::UpdateService {
                    key: flags.service.clone(),
                    changes: Box::new(changes),
                },
            )?;
            println!("{}", flags.service);
            if !flags.detach {
                progress::wait_on_stdout(control, &flags.service, Current::Version)?;
            }
            Ok(())
        }
        ServiceCommand::Rollback { detach, service } => {
            op(
                control,
                &Op::RollbackService {
                    key: service.clone(),
                },
            )?;
            println!("{service}");
            if !detach {
                progress::wait_on_stdout(control, &service, Current::Version)?;
            }
            Ok(())
        }
        ServiceCommand::Logs {
            follow,
            raw,
            timestamps,
            service,
        } => logs(control, &service, follow, raw, timestamps),
        ServiceCommand::Rm { services } => {
            let (_, errors) = each(&services, |key| {
                op(control, &Op::RemoveService { key: key.into() })?;
                println!("{key}");
                Ok(())
            });
            errors
        }
    }
}

/// How often `service logs -f` asks for new lines.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `service logs`: Docker's `web.1.<id>@node1    | line` format.
fn logs(
    control: &Path,
    service: &str,
    follow: bool,
    raw: bool,
    timestamps: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut since = 0;
    loop {
        let OpReply::Logs(lines) = op(
            control,
            &Op::Logs {
                service: service.into(),
                since,
            },
        )?
        else {
            bail!("shoald sent an unexpected answer");
        };
        let mut out = std::io::stdout().lock();
        for l in &lines {
            since = since.max(l.seq);
            let mut text = String::new();
            if timestamps {
                text.push_str(&shoal_manager::views::rfc3339_nanos(l.line.time_ns));
                text.push(' ');
            }
            if !raw {
                text.push_str(&format!("{}@{}    | ", l.task, l.node));
            }
            text.push_str(&l.line.line);
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        if lines.is_empty() && !follow {
            return Ok(());
        }
        if lines.is_empty() {
            std::thread::sleep(FOLLOW_EVERY);
        }
    }
}

/// `node ps [NODE...]`: the tasks on the nodes (this node when none is given).
pub fn node_ps(
    control: &Path,
    nodes: &[String],
    quiet: bool,
    no_trunc: bool,
    now: u64,
) -> anyhow::Result<()> {
    let nodes = if nodes.is_empty() {
        let info: SwarmInfo = call(control, Method::GET, "/v1/swarm", None)?;
        vec![info.node_id]
    } else {
        nodes.to_vec()
    };
    let mut all = Vec::new();
    let (_, errors) = each(&nodes, |key| {
        all.extend(tasks(control, None, Some(key))?);
        Ok(())
    });
    print_tasks(&all, quiet, no_trunc, now);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        c: ServiceCommand,
    }

    fn spec(args: &[&str]) -> anyhow::Result<ServiceSpec> {
        let mut all = vec!["t", "create"];
        all.extend_from_slice(args);
        match T::try_parse_from(all)?.c {
            ServiceCommand::Create(f) => f.spec(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_flags_become_a_spec() {
        let s = spec(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "5000:80",
            "--publish",
            "published=53,target=53,protocol=udp,mode=host",
            "--constraint",
            "node.role==worker",
            "--env",
            "A=1",
            "--restart-delay",
            "10s",
            "--update-order",
            "start-first",
            "--endpoint-mode",
            "vip",
            "--",
            "shoal",
            "whoami",
            "--port",
            "80",
        ])
        .unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(s.command, ["shoal", "whoami", "--port", "80"]);
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.constraints[0].to_string(), "node.role==worker");
        assert_eq!(s.restart.delay_ns, 10_000_000_000);
        assert_eq!(s.update.order, UpdateOrder::StartFirst);
        let g = spec(&["--name", "g", "--mode", "global", "--", "sleep", "1"]).unwrap();
        assert_eq!(g.mode, ServiceMode::Global);
    }

    #[test]
    fn bad_flags_and_values_are_named() {
        for (args, words) in [
            (vec!["--name", "w", "--bogus", "--", "x"], "--bogus"),
            (
                vec!["--name", "w", "-p", "5000:http", "--", "x"],
                "invalid target port \"http\"",
            ),
            (
                vec!["--name", "w", "--constraint", "node.color==red", "--", "x"],
                "node.color",
            ),
            (
                vec!["--name", "w", "--restart-condition", "sometimes", "--", "x"],
                "sometimes",
            ),
            (
                vec!["--name", "w", "--update-delay", "soon", "--", "x"],
                "\"soon\"",
            ),
            (
                vec!["--name", "w", "--env", "=x", "--", "x"],
                "not KEY=VALUE",
            ),
            (
                vec![
                    "--name",
                    "w",
                    "--mode",
                    "global",
                    "--replicas",
                    "2",
                    "--",
                    "x",
                ],
                "--replicas",
            ),
            (vec!["--name", "w", "--replicas", "many", "--", "x"], "many"),
        ] {
            let e = format!("{:#}", spec(&args).unwrap_err());
            assert!(e.contains(words), "{args:?}: {e}");
        }
        assert!(parse_scale("web").unwrap_err().contains("\"web\""));
        assert_eq!(parse_scale("web=6").unwrap(), ("web".into(), 6));
    }
}
