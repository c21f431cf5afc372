//! `shoal demo`: Docker Swarm's routing mesh on one machine, as a tutorial
//! that runs itself.
//!
//! It builds a lab (`lab::up`: real `shoald`s in namespaces and a client
//! outside the swarm), then runs the very `shoal` commands it prints, in this
//! process (`crate::run_args`) against node1's socket, so what is shown is
//! what ran. The requests to the published port come from the client's
//! namespace through a small HTTP/1.0 client of our own ([`client`]), so the
//! demo needs no curl; what they prove is judged by pure code ([`report`]).
//!
//! Everything it waits for is polled with a limit, and the lab is removed at
//! the end, after a failure and after Ctrl-C (a guard, and a signal watcher
//! that turns the first SIGINT or SIGTERM into a flag the steps check),
//! unless `--keep` asks to leave it for a look around.

pub mod client;
pub mod report;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::TaskState;

use self::client::NsClient;
use self::report::{request_line, Outcome, Tally, Verdict};
use crate::lab::{self, spec::LabFile, spec::LabSpec};
use crate::swarm::op;

/// The overlay network the service is attached to.
const NETWORK: &str = "demo-net";
/// The service.
const SERVICE: &str = "web";
/// Its tasks.
const REPLICAS: u64 = 3;
/// The published port, on every node.
const PUBLISHED: u16 = 5000;
/// The port whoami listens on inside each task.
const TARGET: u16 = 80;
/// How long the tasks have to run.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// How long every node has to answer on the published port once they do.
const MESH_LIMIT: Duration = Duration::from_secs(20);
/// How long one request may take (connecting, then reading).
const REQUEST_LIMIT: Duration = Duration::from_secs(2);
/// How often states and ports are polled.
const POLL: Duration = Duration::from_millis(50);
/// How many steps the demo announces.
const STEPS: usize = 6;

/// The flags of `shoal demo`.
#[derive(Debug, clap::Args)]
pub struct DemoFlags {
    /// Leave the lab running at the end (also after a failure) to look
    /// around; `shoal lab down --name demo` removes it.
    #[arg(long)]
    keep: bool,
    /// How many nodes (node1 is the manager).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How many requests to send to each node.
    #[arg(long, value_name = "N", default_value_t = 6)]
    requests: usize,
    /// The lab's name, to run the demo beside a lab called demo.
    #[arg(long, default_value = "demo")]
    name: String,
    /// The shoald binary (default: the one next to this shoal).
    #[arg(long, value_name = "PATH")]
    shoald: Option<PathBuf>,
}

/// Runs the demo with its lab under `root`.
pub fn run(root: &Path, flags: DemoFlags) -> anyhow::Result<ExitCode> {
    if flags.requests == 0 {
        bail!("--requests is 0; ask each node at least once");
    }
    let spec = LabSpec::new(&flags.name, flags.nodes, 1, 1).map_err(anyhow::Error::msg)?;
    let name = spec.name.clone();
    if lab::exists(root, &name)? {
        bail!(
            "a lab named {name:?} exists (from `shoal demo --keep`, or left by an earlier \
             run); remove it with `shoal lab down --name {name}`, or run the demo beside \
             it with --name"
        );
    }
    let stop = Interrupt::watch(&name)?;
    let this = std::env::current_exe().context("cannot tell where this shoal is")?;
    println!(
        "Shoal demo: Docker Swarm's routing mesh on {} nodes of this machine.\n\
         Each step shows the Docker command it stands for and the shoal command it runs.",
        spec.nodes
    );
    let began = Instant::now();
    announce(
        1,
        &format!(
            "A swarm of {} node{} on this machine, and a client outside it",
            spec.nodes,
            if spec.nodes == 1 { "" } else { "s" }
        ),
        "docker swarm init (node1), docker swarm join --token ... 10.99.0.11:2377 (the others)",
        &format!(
            "shoal lab up --name {name} --nodes {} --managers 1 --clients 1",
            spec.nodes
        ),
    );
    let lab = lab::up(root, &spec, flags.shoald.clone())?;
    let guard = Teardown {
        root: root.to_path_buf(),
        name: name.clone(),
        keep: flags.keep,
    };
    let result = Demo {
        lab: &lab,
        shoal: &this,
        stop: &stop,
        began,
        requests: flags.requests,
    }
    .steps();
    if stop.is_set() {
        drop(guard);
        eprintln!("shoal: interrupted");
        return Ok(ExitCode::from(130));
    }
    if let Err(e) = &result {
        // Said before the teardown's lines, which would bury it.
        eprintln!("shoal demo failed: {e:#}");
    }
    drop(guard);
    result.map(|()| ExitCode::SUCCESS).or(Ok(ExitCode::FAILURE))
}

/// The steps after `lab up`.
struct Demo<'a> {
    lab: &'a LabFile,
    shoal: &'a Path,
    stop: &'a Interrupt,
    began: Instant,
    requests: usize,
}

impl Demo<'_> {
    fn steps(&self) -> anyhow::Result<()> {
        self.stop.check()?;
        announce(
            2,
            "An encrypted overlay network (frames between nodes sealed with an AEAD)",
            &format!("docker network create -d overlay --opt encrypted {NETWORK}"),
            &self.exec_line(&[
                "network",
                "create",
                "-d",
                "overlay",
                "--opt",
                "encrypted",
                NETWORK,
            ]),
        );
        self.on_node1(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--opt",
            "encrypted",
            NETWORK,
        ])?;

        self.stop.check()?;
        let this = self.shoal.to_string_lossy();
        let replicas = REPLICAS.to_string();
        let publish = format!("{PUBLISHED}:{TARGET}");
        let port = TARGET.to_string();
        let create = [
            "service",
            "create",
            "--detach",
            "--name",
            SERVICE,
            "--replicas",
            &replicas,
            "--network",
            NETWORK,
            "-p",
            &publish,
            "--",
            &this,
            "whoami",
            "--port",
            &port,
        ];
        announce(
            3,
            &format!(
                "A service of {REPLICAS} whoami tasks on {NETWORK}, port {PUBLISHED} published \
                 on every node (ingress: the routing mesh)"
            ),
            &format!(
                "docker service create --detach --name {SERVICE} --replicas {REPLICAS} \
                 --network {NETWORK} --publish {publish} traefik/whoami"
            ),
            &self.exec_line(&create),
        );
        self.on_node1(&create)?;

        announce(
            4,
            &format!("Wait until the {REPLICAS} tasks run (up to {CONVERGE_LIMIT:?})"),
            &format!("docker service ls ; docker service ps {SERVICE}"),
            &self.exec_line(&["service", "ls"]),
        );
        let tasks = self.wait_for_tasks()?;

        let client = self
            .lab
            .clients
            .first()
            .context("the demo's lab has no client")?;
        let first = self.lab.nodes[0].addr;
        announce(
            5,
            &format!(
                "Ask every node on port {PUBLISHED} from {} ({}), outside the swarm",
                client.name, client.addr
            ),
            &format!("curl http://{first}:{PUBLISHED}/   (and every other node's address)"),
            &format!(
                "shoal lab exec --name {} {} -- curl -s http://{first}:{PUBLISHED}/",
                self.lab.name, client.name
            ),
        );
        println!(
            "    (the demo sends the same GET itself, from a thread inside {}'s namespace)",
            client.name
        );
        let http = NsClient::start(&client.namespace)?;
        let targets: Vec<(String, SocketAddrV4)> = self
            .lab
            .nodes
            .iter()
            .map(|n| (n.name.clone(), SocketAddrV4::new(n.addr, PUBLISHED)))
            .collect();
        let every_node = self.first_answers(&http, &targets)?;
        println!(
            "    every node answered {:.2}s after `lab up` began (issue 9 aims at under 3s for 3 nodes)",
            every_node.as_secs_f64()
        );
        println!(
            "\n    {} request{} to each node:",
            self.requests,
            if self.requests == 1 { "" } else { "s" }
        );
        let names: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
        let mut tally = Tally::new(&names, &tasks);
        for _ in 0..self.requests {
            for (node, to) in &targets {
                self.stop.check()?;
                let outcome = http.get(*to, REQUEST_LIMIT);
                println!("    {}", request_line(node, *to, &outcome));
                tally.record(node, &outcome);
            }
        }
        println!("\n    Answers by task, through each node asked:");
        for line in tally.render().lines() {
            println!("    {line}");
        }
        println!(
            "    time from `lab up` to an answer through every node: {:.2}s",
            every_node.as_secs_f64()
        );
        match tally.verdict() {
            Verdict::Pass { .. } => Ok(()),
            Verdict::Fail(problems) => bail!("{}", problems.join("; ")),
        }
    }

    /// `shoal lab exec --name NAME node1 -- shoal ARGS`, as shown.
    fn exec_line(&self, args: &[&str]) -> String {
        format!(
            "shoal lab exec --name {} node1 -- shoal {}",
            self.lab.name,
            args.join(" ")
        )
    }

    /// Runs `shoal ARGS` against node1's daemon, in this process.
    fn on_node1(&self, args: &[&str]) -> anyhow::Result<()> {
        let (verb, rest) = args.split_first().context("no command")?;
        let control = self.lab.nodes[0].control.to_string_lossy().into_owned();
        let argv = [*verb, "--control", &control]
            .into_iter()
            .chain(rest.iter().copied());
        let code = crate::run_args(argv).with_context(|| format!("shoal {}", args.join(" ")))?;
        if code != ExitCode::SUCCESS {
            bail!("shoal {} failed", args.join(" "));
        }
        Ok(())
    }

    /// Polls the service until its tasks run, printing each change of
    /// count; then `service ls` and `service ps`. Returns the running tasks'
    /// full names (`web.1.<id>`, what whoami answers with).
    fn wait_for_tasks(&self) -> anyhow::Result<Vec<String>> {
        let control = &self.lab.nodes[0].control;
        let deadline = Instant::now() + CONVERGE_LIMIT;
        let mut shown = None;
        loop {
            self.stop.check()?;
            let OpReply::Services(services) = op(control, &Op::Services)? else {
                bail!("shoald sent an unexpected answer to service ls");
            };
            let now = services
                .iter()
                .find(|s| s.service.spec.name == SERVICE)
                .map_or((0, REPLICAS), |s| (s.running, s.desired));
            if shown != Some(now) {
                println!(
                    "    {SERVICE}: {}/{} running after {:.2}s",
                    now.0,
                    now.1,
                    self.began.elapsed().as_secs_f64()
                );
                shown = Some(now);
            }
            if now.0 >= REPLICAS {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.on_node1(&["service", "ps", SERVICE]);
                bail!(
                    "{SERVICE} had {}/{} tasks running after {CONVERGE_LIMIT:?}; \
                     `service ps` above says why",
                    now.0,
                    now.1
                );
            }
            std::thread::sleep(POLL);
        }
        self.on_node1(&["service", "ls"])?;
        self.on_node1(&["service", "ps", SERVICE])?;
        let OpReply::Tasks(tasks) = op(
            control,
            &Op::Tasks {
                service: Some(SERVICE.into()),
                node: None,
            },
        )?
        else {
            bail!("shoald sent an unexpected answer to service ps");
        };
        Ok(tasks
            .iter()
            .filter(|t| {
                t.task.desired_state == TaskState::Running
                    && t.task.status.state == TaskState::Running
            })
            .map(|t| format!("{}.{}", t.name, t.task.id))
            .collect())
    }

    /// Asks each node until it answers once, printing each first answer;
    /// returns the time from `lab up` to the last of them. Fails naming the
    /// nodes that stayed silent for [`MESH_LIMIT`].
    fn first_answers(
        &self,
        http: &NsClient,
        targets: &[(String, SocketAddrV4)],
    ) -> anyhow::Result<Duration> {
        println!("    waiting for a first answer through every node (up to {MESH_LIMIT:?}):");
        let deadline = Instant::now() + MESH_LIMIT;
        let mut last: Vec<Option<String>> = vec![Some("not asked yet".into()); targets.len()];
        while last.iter().any(Option::is_some) {
            for (i, (node, to)) in targets.iter().enumerate() {
                if last[i].is_none() {
                    continue;
                }
                self.stop.check()?;
                match http.get(*to, REQUEST_LIMIT) {
                    outcome @ Outcome::Answered(_) => {
                        println!(
                            "    {}   (first answer, {:.2}s after `lab up` began)",
                            request_line(node, *to, &outcome),
                            self.began.elapsed().as_secs_f64()
                        );
                        last[i] = None;
                    }
                    Outcome::Failed(why) => last[i] = Some(why),
                }
            }
            if last.iter().all(Option::is_none) {
                break;
            }
            if Instant::now() > deadline {
                let silent: Vec<String> = targets
                    .iter()
                    .zip(&last)
                    .filter_map(|((node, to), why)| {
                        Some(format!("{node} ({to}): {}", why.as_ref()?))
                    })
                    .collect();
                bail!(
                    "no answer on port {PUBLISHED} within {MESH_LIMIT:?} from {} of {} nodes: {}. \
                     A port published with -p answers on every node through the routing mesh \
                     (issue 8); does this shoald have it? --keep leaves the lab up to look around",
                    silent.len(),
                    targets.len(),
                    silent.join("; ")
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(self.began.elapsed())
    }
}

/// Prints a step's title and the commands it stands for.
fn announce(n: usize, title: &str, docker: &str, shoal: &str) {
    println!("\n==> {n}/{STEPS}  {title}");
    println!("    docker: {docker}");
    println!("    shoal:  {shoal}");
}

/// Removes the demo's lab when dropped, unless `--keep`.
struct Teardown {
    root: PathBuf,
    name: String,
    keep: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let name = &self.name;
        if self.keep {
            println!("\nThe lab stays up (--keep). Look around, then remove it:");
            println!("    shoal lab ls --name {name}");
            println!(
                "    shoal lab exec --name {name} client1 -- curl -s http://10.99.0.12:{PUBLISHED}/"
            );
            println!("    shoal lab exec --name {name} node1 -- shoal service ps {SERVICE}");
            println!("    shoal lab down --name {name}");
            return;
        }
        announce(
            STEPS,
            "Clean up: stop the daemons and their tasks, remove the namespaces",
            "docker service rm web ; docker swarm leave --force (on every node)",
            &format!("shoal lab down --name {name}"),
        );
        let problems = lab::remove(&self.root, name);
        if problems.is_empty() {
            println!("lab {name:?} removed");
        } else {
            eprintln!(
                "shoal: lab {name:?} was not removed completely; try `shoal lab down --name {name}`:\n{}",
                problems.join("\n")
            );
        }
    }
}

/// The first SIGINT or SIGTERM sets a flag that the steps check between
/// requests and polls, so the demo stops where it is and its guard removes
/// the lab; a second one exits at once, leaving the lab to `lab down`.
#[derive(Debug)]
struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    fn watch(name: &str) -> anyhow::Result<Interrupt> {
        use tokio::signal::unix::{signal, SignalKind};
        let flag = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime for the signal watcher")?;
        // Registered here, before any step runs, so no signal is missed.
        let signals = rt
            .block_on(async {
                Ok::<_, std::io::Error>([
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ])
            })
            .context("cannot watch for Ctrl-C")?;
        for mut s in signals {
            let flag = flag.clone();
            let name = name.to_string();
            rt.spawn(async move {
                while s.recv().await.is_some() {
                    if flag.swap(true, Ordering::SeqCst) {
                        eprintln!(
                            "\nshoal: interrupted again; leaving lab {name:?} as it is: \
                             `shoal lab down --name {name}` removes it"
                        );
                        std::process::exit(130);
                    }
                    eprintln!(
                        "\nshoal: interrupted; stopping the demo and removing its lab \
                         (interrupt again to leave at once)"
                    );
                }
            });
        }
        std::thread::Builder::new()
            .name("demo-signals".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .context("cannot start the signal watcher")?;
        Ok(Interrupt(flag))
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Fails once interrupted.
    fn check(&self) -> anyhow::Result<()> {
        if self.is_set() {
            bail!("interrupted");
        }
        Ok(())
    }
}
