//! Virtual IPs for real: a service's name resolves to its VIP inside a
//! task, and connections to the VIP are balanced by the client's node's
//! switch over the service's tasks on every node, the backends seeing the
//! client's own address; scaling down takes a task out of the rotation with
//! no request failing once it has left; a task reaches its own service's
//! VIP (hairpin).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::discovery::{create, gossip_view, resolve_in, task_ips};
use crate::tasks::{curl_from, pid_of, running};
use crate::Swarm;

/// The VIP of `service` (its only one: no published ports, one network),
/// from `service inspect`.
pub(crate) fn service_vip(s: &Swarm, service: &str) -> Result<Ipv4Addr> {
    let v: Value = serde_json::from_str(&s.shoal_ok(0, &["service", "inspect", service]))?;
    let vips = v[0]["Endpoint"]["VirtualIPs"]
        .as_array()
        .context("no Endpoint.VirtualIPs")?;
    let [one] = vips.as_slice() else {
        anyhow::bail!("{service} has {} VIPs: {vips:?}", vips.len());
    };
    let addr = one["Addr"].as_str().context("no Addr")?;
    Ok(addr.split('/').next().unwrap_or("").parse()?)
}

/// `GET http://web/` from inside the task `pid`: the `Task:` and the
/// `RemoteAddr:` lines of `shoal whoami`'s answer.
fn whoami_from(pid: u32) -> Result<(String, String)> {
    let body = curl_from(pid, "web")?;
    let line = |k: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_string)
            .with_context(|| format!("no {k} line: {body:?}"))
    };
    Ok((line("Task: ")?, line("RemoteAddr: ")?))
}

#[test]
fn a_vip_balances_in_the_switch_and_follows_scaling() {
    let s = Swarm::new(3).unwrap();
    s.form(1).unwrap();
    s.shoal_ok(0, &["network", "create", "-d", "overlay", "front"]);
    let shoal = env!("CARGO_BIN_EXE_shoal");
    create(
        &s,
        &[
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "front",
            "--",
            shoal,
            "whoami",
            "--port",
            "80",
        ],
    );
    create(
        &s,
        &[
            "--name",
            "client",
            "--replicas",
            "1",
            "--network",
            "front",
            "--",
            "sleep",
            "3000",
        ],
    );
    s.wait_for(Duration::from_secs(30), "3 running tasks", || {
        Ok(running(&s, 0, "web")?.len() == 2 && running(&s, 0, "client")?.len() == 1)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let web = task_ips(&s, "web").unwrap();
    let web_names: BTreeSet<String> = web.keys().cloned().collect();
    let web_ips: BTreeSet<Ipv4Addr> = web.values().copied().collect();
    let (client_name, client_ip) = task_ips(&s, "client").unwrap().into_iter().next().unwrap();
    let pid = pid_of(&client_name).unwrap();
    let vip = service_vip(&s, "web").unwrap();
    println!("web tasks {web:?}, VIP {vip}, client {client_name} at {client_ip}");
    assert!(!web_ips.contains(&vip), "the VIP is no task's address");

    // The name gives the VIP; tasks.<name> still gives the tasks.
    s.wait_for(Duration::from_secs(15), "web to resolve to its VIP", || {
        Ok(resolve_in(pid, "web")? == BTreeSet::from([vip]))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    s.wait_for(Duration::from_secs(10), "tasks.web to list 2 tasks", || {
        Ok(resolve_in(pid, "tasks.web")? == web_ips)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    // The client's node balances once it knows both tasks.
    s.wait_for(
        Duration::from_secs(15),
        "every node to know 3 tasks",
        || {
            Ok((0..3).all(|i| {
                gossip_view(&s, i).is_ok_and(|v| v.get("front").is_some_and(|e| e.len() == 3))
            }))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));

    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..48 {
        let (task, remote) = whoami_from(pid)
            .unwrap_or_else(|e| panic!("request {n} to the VIP: {e:#}\n{}", s.logs()));
        assert!(web_names.contains(&task), "{task} is not a web task");
        assert!(
            remote.starts_with(&format!("{client_ip}:")),
            "the backend sees the client itself, not {remote}"
        );
        *per_task.entry(task).or_default() += 1;
    }
    println!("48 requests to the VIP: {per_task:?}");
    assert_eq!(per_task.len(), 2, "both web tasks answer: {per_task:?}");

    // Hairpin: a web task calling its own service reaches both tasks,
    // itself included.
    let (me, _) = web.iter().next().unwrap();
    let me_pid = pid_of(me).unwrap();
    let mut from_web: BTreeSet<String> = BTreeSet::new();
    for n in 0..24 {
        let (task, _) = whoami_from(me_pid)
            .unwrap_or_else(|e| panic!("hairpin request {n}: {e:#}\n{}", s.logs()));
        from_web.insert(task);
    }
    assert_eq!(
        from_web, web_names,
        "a web task reaches itself and the other"
    );

    // Scale down: once the removed task has left every node's view, every
    // request reaches the one left, and none fails.
    s.shoal_ok(0, &["service", "scale", "--detach", "web=1"]);
    s.wait_for(
        Duration::from_secs(20),
        "one web task in every view",
        || {
            Ok((0..3).all(|i| {
                gossip_view(&s, i).is_ok_and(|v| v.get("front").is_some_and(|e| e.len() == 2))
            }))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", s.logs()));
    let left = gossip_view(&s, 0).unwrap()["front"].clone();
    let (kept, _) = web
        .iter()
        .find(|(_, ip)| left.contains(ip))
        .expect("one web task is left");
    for n in 0..40 {
        let (task, _) = whoami_from(pid)
            .unwrap_or_else(|e| panic!("request {n} after the scale-down: {e:#}\n{}", s.logs()));
        assert_eq!(&task, kept, "request {n}");
    }
}
