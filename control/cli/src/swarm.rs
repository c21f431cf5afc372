//! `shoal swarm ...` and `shoal node ...`: Docker's verbs, through the local
//! shoald's API socket (which forwards to the swarm's leader).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use anyhow::{bail, Context};
use hyper::Method;
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use shoal_manager::local::{Joined, LeaveRequest, Left};
use shoal_manager::ops::{Op, OpReply};
use shoal_manager::state::{Availability, Role};
use shoal_manager::swarm::{InitReply, InitRequest, JoinOptions, SwarmInfo};
use shoal_manager::views::{render_init, render_join_instructions, render_node_ls};

use crate::http::call_text;

/// Calls the local API and decodes the answer; errors carry shoald's message
/// as Docker prints them ("Error response from daemon: ...").
pub(crate) fn call<T: DeserializeOwned>(
    control: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<T> {
    let text = call_text(control, method, path, body, "Error response from daemon")?;
    serde_json::from_str(&text).with_context(|| format!("shoald sent malformed JSON: {text}"))
}

pub(crate) fn op(control: &Path, op: &Op) -> anyhow::Result<OpReply> {
    call(
        control,
        Method::POST,
        "/v1/swarm/op",
        Some(serde_json::to_string(op)?),
    )
}

/// The address this host uses towards `to` (no packet is sent: a UDP
/// `connect` only picks the route).
fn source_address_towards(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The flags of `swarm init`.
#[derive(Debug, Default)]
pub struct InitFlags {
    /// `--advertise-addr`.
    pub advertise: Option<IpAddr>,
    /// `--listen-addr`.
    pub listen: Option<SocketAddr>,
    /// `--force-new-cluster`.
    pub force_new_cluster: bool,
    /// `--default-addr-pool`.
    pub default_addr_pool: Option<Ipv4Net>,
    /// `--default-addr-pool-mask-length`.
    pub subnet_size: Option<u8>,
    /// `--cert-expiry`, in seconds.
    pub cert_expiry_secs: Option<u64>,
    /// `--dispatcher-heartbeat`, in seconds.
    pub heartbeat_secs: Option<u64>,
    /// `--node-down-timeout`, in seconds.
    pub node_down_secs: Option<u64>,
    /// `--key-rotation-interval`, in seconds.
    pub key_rotation_secs: Option<u64>,
}

/// `swarm init`.
pub fn init(control: &Path, flags: InitFlags) -> anyhow::Result<()> {
    let advertise_addr = match flags.advertise {
        Some(a) => a,
        None => source_address_towards("192.0.2.1:2377".parse()?).context(
            "could not choose an IP address to advertise (no default route); specify one with --advertise-addr",
        )?,
    };
    let req = InitRequest {
        advertise_addr,
        listen_addr: flags.listen,
        force_new_cluster: flags.force_new_cluster,
        default_addr_pool: flags.default_addr_pool,
        subnet_size: flags.subnet_size,
        cert_expiry_secs: flags.cert_expiry_secs,
        heartbeat_secs: flags.heartbeat_secs,
        node_down_secs: flags.node_down_secs,
        key_rotation_secs: flags.key_rotation_secs,
    };
    let reply: InitReply = call(
        control,
        Method::POST,
        "/v1/swarm/init",
        Some(serde_json::to_string(&req)?),
    )?;
    print!(
        "{}",
        render_init(&reply.node_id, &reply.worker_token, reply.manager)
    );
    Ok(())
}

/// Parses `HOST:PORT` or `HOST` (port 2377), like `docker swarm join`.
pub fn parse_remote(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 2377));
    }
    bail!("invalid manager address {s:?}: use IP:PORT or IP (port 2377)")
}

/// `swarm join`.
pub fn join(
    control: &Path,
    token: &str,
    remote: &str,
    advertise: Option<IpAddr>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let remote = parse_remote(remote)?;
    let advertise_addr = match advertise {
        Some(a) => a,
        None => source_address_towards(remote).with_context(|| {
            format!("no route to {remote}; specify the address to advertise with --advertise-addr")
        })?,
    };
    let req = JoinOptions {
        token: token.to_string(),
        remote,
        advertise_addr,
        listen_addr: listen,
    };
    let joined: Joined = call(
        control,
        Method::POST,
        "/v1/swarm/join",
        Some(serde_json::to_string(&req)?),
    )?;
    println!("This node joined a swarm as a {}.", joined.role);
    Ok(())
}

/// `swarm join-token`.
pub fn join_token(control: &Path, role: &str, rotate: bool, quiet: bool) -> anyhow::Result<()> {
    let role = match role {
        "worker" => Role::Worker,
        "manager" => Role::Manager,
        other => bail!("unknown role {other:?}: use worker or manager"),
    };
    let info: SwarmInfo = call(control, Method::GET, "/v1/swarm", None)?;
    let OpReply::Token(t) = op(control, &Op::JoinToken { role, rotate })? else {
        bail!("shoald sent an unexpected answer");
    };
    if rotate && !quiet {
        println!("Successfully rotated {role} join token.\n");
    }
    if quiet {
        println!("{}", t.token);
    } else {
        print!(
            "{}",
            render_join_instructions(role, &t.token, info.manager_addr)
        );
    }
    Ok(())
}

/// `swarm leave`.
pub fn leave(control: &Path, force: bool) -> anyhow::Result<()> {
    let left: Left = call(
        control,
        Method::POST,
        "/v1/swarm/leave",
        Some(serde_json::to_string(&LeaveRequest { force })?),
    )?;
    if let Some(warning) = left.warning {
        eprintln!("Warning: {warning}");
    }
    println!("Node left the swarm.");
    Ok(())
}

/// `node ls`.
pub fn node_ls(control: &Path, quiet: bool) -> anyhow::Result<()> {
    let info: SwarmInfo = call(control, Method::GET, "/v1/swarm", None)?;
    let OpReply::Nodes(nodes) = op(control, &Op::Nodes)? else {
        bail!("shoald sent an unexpected answer");
    };
    if quiet {
        for n in nodes {
            println!("{}", n.id);
        }
    } else {
        print!("{}", render_node_ls(&nodes, &info.node_id));
    }
    Ok(())
}

/// `node inspect`: a JSON array, like Docker's.
pub fn node_inspect(control: &Path, keys: &[String]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for key in keys {
        let OpReply::Node(n) = op(control, &Op::Node { key: key.clone() })? else {
            bail!("shoald sent an unexpected answer");
        };
        out.push(n.docker_inspect());
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `node promote` / `node demote`.
pub fn set_role(control: &Path, keys: &[String], role: Role) -> anyhow::Result<()> {
    for key in keys {
        op(
            control,
            &Op::SetRole {
                key: key.clone(),
                role,
            },
        )?;
        match role {
            Role::Manager => println!("Node {key} promoted to a manager in the swarm."),
            Role::Worker => println!("Manager {key} demoted in the swarm."),
        }
    }
    Ok(())
}

/// `node update`.
pub fn update(
    control: &Path,
    key: &str,
    availability: Option<&str>,
    label_add: &[String],
    label_rm: &[String],
) -> anyhow::Result<()> {
    let availability = availability
        .map(str::parse::<Availability>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mut add = BTreeMap::new();
    for l in label_add {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        add.insert(k.to_string(), v.to_string());
    }
    if availability.is_none() && add.is_empty() && label_rm.is_empty() {
        bail!("nothing to update: give --availability, --label-add or --label-rm");
    }
    let OpReply::Id(id) = op(
        control,
        &Op::UpdateNode {
            key: key.to_string(),
            availability,
            label_add: add,
            label_rm: label_rm.to_vec(),
        },
    )?
    else {
        bail!("shoald sent an unexpected answer");
    };
    let _ = id;
    println!("{key}");
    Ok(())
}

/// `node rm`.
pub fn remove(control: &Path, keys: &[String], force: bool) -> anyhow::Result<()> {
    for key in keys {
        op(
            control,
            &Op::RemoveNode {
                key: key.clone(),
                force,
            },
        )?;
        println!("{key}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_default_to_port_2377_and_garbage_is_named() {
        assert_eq!(
            parse_remote("10.0.0.1").unwrap(),
            "10.0.0.1:2377".parse().unwrap()
        );
        assert_eq!(
            parse_remote("10.0.0.1:4000").unwrap(),
            "10.0.0.1:4000".parse().unwrap()
        );
        let e = parse_remote("manager-one").unwrap_err().to_string();
        assert!(e.contains("\"manager-one\""), "{e}");
    }
}
