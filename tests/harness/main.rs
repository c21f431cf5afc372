//! The harness suite: checks that `shoal-topology` builds what the other suites
//! stand on. Hosts reach each other over the underlay, the plan (addresses, MTU,
//! IPv6 off) is what the crate says, and nothing is left behind: not after a
//! normal drop, not after a panic, not a spawned process, and not a namespace of
//! a crashed run.
//!
//! Needs root (network namespaces), `ip` and `ping`; `scripts/test` runs it.
//! Traffic only goes to addresses inside the namespaces these tests make.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shoal_topology::{sweep_stale, Namespace, Topology, TopologyError};

/// SIGTERM's number (the same on every Linux architecture).
const SIGTERM: i32 = 15;
/// SIGKILL's number (the same on every Linux architecture).
const SIGKILL: i32 = 9;

/// The namespaces `ip netns list` shows.
fn netns_list() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run `ip netns list`");
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Asserts none of `names` is still listed.
fn assert_all_gone(names: &[String]) {
    assert!(!names.is_empty(), "no namespace names to check");
    let listed = netns_list();
    let left: Vec<&String> = names.iter().filter(|n| listed.contains(*n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), or `None` when
/// there is no such process. Comparing it tells a process from a later one that
/// reused its pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_string)
}

/// Whether the process that had `pid` and `started` at the time is gone (a
/// zombie still counts as there: it has not been reaped).
fn is_gone(pid: u32, started: &str) -> bool {
    start_time(pid).as_deref() != Some(started)
}

/// Waits up to ten seconds until `pid` is running `comm`.
fn wait_for_comm(pid: u32, comm: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if now.trim() == comm {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "pid {pid} never ran {comm} (comm {now:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to ten seconds for an untracked child to exit.
fn wait_exit(child: &mut Child) -> Result<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("pid {} still running after 10 s", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One ICMP echo from `from` to `to`, two seconds at most.
fn ping(from: &Namespace, to: std::net::Ipv4Addr) -> Result<()> {
    from.output(["ping", "-n", "-c", "1", "-W", "2", &to.to_string()])
        .with_context(|| format!("ping {to} from {}", from.label()))?;
    Ok(())
}

/// Bytes that differ from position to position, so a reordering shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Sends `data` from `client` to an echo server in `server` bound on
/// `addr` (port 0: any) and returns what came back.
fn tcp_echo(
    server: &Namespace,
    addr: SocketAddr,
    client: &Namespace,
    data: &[u8],
) -> Result<Vec<u8>> {
    let (port_tx, port_rx) = mpsc::channel::<u16>();
    std::thread::scope(|scope| -> Result<Vec<u8>> {
        let echo = scope.spawn(move || -> Result<usize> {
            server.run(move || -> Result<usize> {
                let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
                port_tx.send(listener.local_addr()?.port())?;
                listener.set_nonblocking(true)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut conn = loop {
                    match listener.accept() {
                        Ok((conn, _)) => break conn,
                        Err(e)
                            if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(e).context("accept (no client within 10 s?)"),
                    }
                };
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(5)))?;
                conn.set_write_timeout(Some(Duration::from_secs(5)))?;
                let mut buf = [0u8; 4096];
                let mut echoed = 0;
                loop {
                    let n = conn.read(&mut buf).context("echo read")?;
                    if n == 0 {
                        return Ok(echoed);
                    }
                    conn.write_all(&buf[..n]).context("echo write")?;
                    echoed += n;
                }
            })?
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .context("echo server did not start")?;
        let to = SocketAddr::new(addr.ip(), port);
        let received = client.run(move || -> Result<Vec<u8>> {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .with_context(|| format!("connect {to}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.set_write_timeout(Some(Duration::from_secs(5)))?;
            // A few KB: far below the socket buffers, so writing it all before
            // reading cannot deadlock against the echo.
            conn.write_all(data).context("send")?;
            conn.shutdown(std::net::Shutdown::Write)?;
            let mut back = Vec::new();
            conn.read_to_end(&mut back).context("receive the echo")?;
            Ok(back)
        })??;
        let echoed = echo.join().expect("echo thread panicked")?;
        ensure!(
            echoed == data.len(),
            "server echoed {echoed} of {} bytes",
            data.len()
        );
        Ok(received)
    })
}

#[test]
fn every_host_reaches_every_other_over_the_underlay() {
    let topo = Topology::builder().nodes(3).clients(1).build().unwrap();
    let hosts: Vec<_> = topo.nodes().iter().chain(topo.clients()).collect();
    assert_eq!(hosts.len(), 4);
    for from in &hosts {
        for to in &hosts {
            if from.name() != to.name() {
                ping(from.ns(), to.addr()).unwrap();
            }
        }
    }

    let data = pattern(6 * 1024 + 17);
    let server = SocketAddr::from((topo.node(0).addr(), 0));
    let back = tcp_echo(topo.node(0).ns(), server, topo.client(0).ns(), &data).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ from those sent");
}

#[test]
fn hosts_are_isolated_from_other_topologies() {
    // Same address plan, different bridges: node 0 of one topology must not
    // answer for node 1 of the other, and a second topology changes nothing for
    // the first.
    let a = Topology::builder().nodes(2).build().unwrap();
    let b = Topology::builder().nodes(1).build().unwrap();
    assert_eq!(a.node(0).addr(), b.node(0).addr());
    let names: BTreeSet<String> = a.namespace_names().into_iter().collect();
    assert!(b.namespace_names().iter().all(|n| !names.contains(n)));
    let to = a.node(1).addr();
    let err = b
        .node(0)
        .ns()
        .output(["ping", "-n", "-c", "1", "-W", "1", &to.to_string()]);
    assert!(err.is_err(), "{to} answered across topologies");
    ping(a.node(0).ns(), to).unwrap();
}

#[test]
fn the_underlay_follows_the_plan_with_ipv6_off() {
    let read_host = |knob: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"))
    };
    let host_before = (read_host("all").ok(), read_host("default").ok());

    let topo = Topology::builder()
        .nodes(2)
        .clients(2)
        .underlay_mtu(1400)
        .build()
        .unwrap();
    let expected = ["10.99.0.11", "10.99.0.12", "10.99.0.101", "10.99.0.102"];
    let hosts: Vec<_> = topo.nodes().iter().chain(topo.clients()).collect();
    for (host, addr) in hosts.iter().zip(expected) {
        assert_eq!(host.addr().to_string(), addr);
        let ns = host.ns();
        assert_eq!(
            ns.path(),
            std::path::Path::new("/var/run/netns").join(host.name())
        );
        let v4 = ns
            .output(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .unwrap();
        let v4 = String::from_utf8_lossy(&v4.stdout);
        assert!(
            v4.contains(&format!("inet {addr}/24")),
            "{}: {v4}",
            host.name()
        );
        let link = ns.output(["ip", "-o", "link", "show", "eth0"]).unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(
            link.contains("mtu 1400") && link.contains("state UP"),
            "{link}"
        );
        let lo = ns.output(["ip", "-o", "link", "show", "lo"]).unwrap();
        assert!(
            String::from_utf8_lossy(&lo.stdout).contains(",UP"),
            "lo is down"
        );
        let v6 = ns.output(["ip", "-o", "-6", "addr", "show"]).unwrap();
        assert!(
            v6.stdout.is_empty(),
            "IPv6 addresses in {}: {}",
            host.name(),
            String::from_utf8_lossy(&v6.stdout)
        );
        let off = ns
            .output(["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&off.stdout).trim(), "1");
    }
    // The bridge holds one short-named port per host, all at the underlay MTU.
    let ports = topo
        .bridge()
        .output(["ip", "-o", "link", "show", "master", "br0"])
        .unwrap();
    let ports = String::from_utf8_lossy(&ports.stdout);
    for port in ["vn0@", "vn1@", "vc0@", "vc1@"] {
        assert!(ports.contains(port), "{port} missing from {ports}");
    }
    assert_eq!(ports.lines().count(), 4, "{ports}");
    assert!(ports.lines().all(|l| l.contains("mtu 1400")), "{ports}");

    // A bare namespace: lo up and nothing else.
    let task = topo.add_bare_namespace("web.1").unwrap();
    assert_eq!(task.label(), "web.1");
    let links = task.output(["ip", "-o", "link", "show"]).unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains(",UP"), "{links}");
    assert!(topo.namespace_names().contains(&task.name().to_string()));

    // Nothing of this happened to the host.
    assert_eq!(
        host_before,
        (read_host("all").ok(), read_host("default").ok())
    );
}

#[test]
fn names_carry_pid_role_and_index() {
    let topo = Topology::builder().nodes(2).clients(1).build().unwrap();
    let task = topo.add_bare_namespace("t").unwrap();
    let pid = std::process::id();
    let prefix = format!("shl{pid}x");
    let roles: Vec<String> = topo
        .namespace_names()
        .iter()
        .map(|n| {
            let rest = n
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{n} lacks {prefix}"));
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
                .to_string()
        })
        .collect();
    assert_eq!(roles, ["b0", "n0", "n1", "c0", "t0"]);
    assert_eq!(task.name(), topo.namespace_names()[4]);
}

#[test]
fn dropping_the_topology_removes_its_namespaces() {
    let topo = Topology::builder().nodes(2).clients(1).build().unwrap();
    topo.add_bare_namespace("task").unwrap();
    let names = topo.namespace_names();
    assert_eq!(names.len(), 5);
    let listed = netns_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{names:?} not all in {listed:?}"
    );
    let kept = topo.node(0).ns().clone();
    drop(topo);
    assert_all_gone(&names);
    // A handle that outlived its topology says so instead of acting.
    let err = kept.output(["true"]).unwrap_err();
    assert!(matches!(err, TopologyError::Removed { .. }), "{err}");
    assert!(kept.run(|| ()).is_err());
}

#[test]
fn a_panicking_test_leaves_no_namespace_behind() {
    let names = Mutex::new(Vec::new());
    let child = Mutex::new(None);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::builder().nodes(2).clients(1).build().unwrap();
        topo.add_bare_namespace("doomed").unwrap();
        names.lock().unwrap().extend(topo.namespace_names());
        let mut cmd = topo.node(1).ns().command("sleep");
        cmd.arg("30");
        let sleeper = topo.node(1).ns().spawn(cmd).unwrap();
        wait_for_comm(sleeper.id(), "sleep").unwrap();
        let started = start_time(sleeper.id()).unwrap();
        *child.lock().unwrap() = Some((sleeper.id(), started));
        // Both the handle and the topology unwind from here.
        panic!("deliberate panic inside a topology");
    }));
    assert!(outcome.is_err(), "the body did not panic");
    let names = names.into_inner().unwrap();
    assert_eq!(
        names.len(),
        5,
        "bridge, 2 nodes, 1 client, 1 task: {names:?}"
    );
    assert_all_gone(&names);
    let (pid, started) = child.into_inner().unwrap().expect("child started");
    assert!(is_gone(pid, &started), "pid {pid} survived the panic");
}

#[test]
fn spawned_children_are_stopped_when_the_topology_is_dropped() {
    let topo = Topology::builder().nodes(2).build().unwrap();
    let ns = topo.node(0).ns();
    let mut cmd = ns.command("sleep");
    cmd.arg("30").stdout(Stdio::null());
    let mut sleeper = ns.spawn(cmd).unwrap();
    // One that ignores SIGTERM, to be SIGKILLed after the grace period.
    let mut cmd = topo.node(1).ns().command("sh");
    cmd.args(["-c", "trap '' TERM; exec sleep 30"]);
    let mut stubborn = topo.node(1).ns().spawn(cmd).unwrap();
    wait_for_comm(sleeper.id(), "sleep").unwrap();
    wait_for_comm(stubborn.id(), "sleep").unwrap();
    let started = [
        (sleeper.id(), start_time(sleeper.id()).unwrap()),
        (stubborn.id(), start_time(stubborn.id()).unwrap()),
    ];
    assert_eq!(sleeper.try_wait().unwrap(), None);

    // The handles outlive the topology: the topology stops them itself.
    let names = topo.namespace_names();
    let start = Instant::now();
    drop(topo);
    let took = start.elapsed();
    for (pid, started) in &started {
        assert!(is_gone(*pid, started), "pid {pid} is still there");
    }
    assert_all_gone(&names);
    assert!(took < Duration::from_secs(20), "drop took {took:?}");
    assert_eq!(
        sleeper.try_wait().unwrap().and_then(|s| s.signal()),
        Some(SIGTERM)
    );
    assert_eq!(
        stubborn.try_wait().unwrap().and_then(|s| s.signal()),
        Some(SIGKILL)
    );
}

#[test]
fn dropping_a_child_handle_stops_it_while_the_topology_lives() {
    let topo = Topology::builder().nodes(1).build().unwrap();
    let ns = topo.node(0).ns();
    let mut cmd = ns.command("sleep");
    cmd.arg("30");
    let sleeper = ns.spawn(cmd).unwrap();
    wait_for_comm(sleeper.id(), "sleep").unwrap();
    let (pid, started) = (sleeper.id(), start_time(sleeper.id()).unwrap());
    drop(sleeper);
    assert!(is_gone(pid, &started), "pid {pid} survived its handle");
    // The namespace is still usable.
    ns.output(["true"]).unwrap();
}

#[test]
fn untracked_processes_are_killed_before_namespaces_go() {
    let topo = Topology::builder().nodes(1).build().unwrap();
    let mut untracked = topo
        .node(0)
        .ns()
        .command("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let outcome = (|| -> Result<ExitStatus> {
        wait_for_comm(untracked.id(), "sleep")?;
        drop(topo);
        wait_exit(&mut untracked)
    })();
    let _ = untracked.kill();
    let status = outcome.unwrap();
    assert_eq!(status.signal(), Some(SIGKILL), "{status:?}");
}

#[test]
fn output_failures_name_the_command_and_its_stderr() {
    let topo = Topology::builder().nodes(1).build().unwrap();
    let err = topo
        .node(0)
        .ns()
        .output(["ip", "link", "set", "nosuchdev", "up"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "ip netns exec {} ip link set nosuchdev up",
            topo.node(0).name()
        )),
        "{msg}"
    );
    assert!(msg.contains("nosuchdev\""), "stderr missing: {msg}");
    assert!(!err.is_permission_denied(), "{msg}");
    let empty: [&str; 0] = [];
    assert!(topo.node(0).ns().output(empty).is_err());
}

/// Namespaces made by hand for the sweeper test, removed even if it fails.
struct HandMade {
    names: Vec<String>,
    live: Option<Child>,
}

impl HandMade {
    fn add(&mut self, name: String) -> String {
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        self.names.push(name.clone());
        name
    }
}

impl Drop for HandMade {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut live) = self.live.take() {
            let _ = live.kill();
            let _ = live.wait();
        }
    }
}

#[test]
fn the_sweeper_removes_namespaces_of_dead_runs_only() {
    let mut made = HandMade {
        names: Vec::new(),
        live: None,
    };
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    assert!(start_time(dead).is_none(), "pid {dead} reused already");
    let live = Command::new("sleep").arg("30").spawn().unwrap();
    let live_pid = live.id();
    made.live = Some(live);

    let stale = made.add(format!("shl{dead}x0n0"));
    let alive = made.add(format!("shl{live_pid}x0n0"));
    let foreign = [
        made.add(format!("shl{dead}x0n0-mine")),
        made.add(format!("shl{dead}x0z0")),
    ];
    // A leftover daemon of the crashed run, still inside its namespace.
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "30"])
        .spawn()
        .unwrap();
    let outcome = (|| -> Result<ExitStatus> {
        wait_for_comm(leftover.id(), "sleep")?;
        sweep_stale();
        wait_exit(&mut leftover)
    })();
    let _ = leftover.kill();

    let listed = netns_list();
    // Another test's build may have swept it first; either way it must be gone.
    assert!(!listed.contains(&stale), "{stale} was not swept");
    assert!(listed.contains(&alive), "{alive} (pid alive) was swept");
    for name in &foreign {
        assert!(listed.contains(name), "foreign {name} was swept");
    }
    let status = outcome.unwrap();
    assert_eq!(status.signal(), Some(SIGKILL), "leftover: {status:?}");
}
