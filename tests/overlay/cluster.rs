//! A cluster fixture: a topology of node namespaces, each running a real `shoald`
//! from a generated standalone config (or, for interop tests, the kernel's own
//! VXLAN), and task namespaces holding the endpoints.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_overlay::mac::MacAddr;
use shoal_topology::{ManagedChild, Namespace, Topology};

pub use crate::http::http;

/// The key every encrypted network starts with (id 1).
pub const KEY1: &str = "6b65792d6f6e652d6b65792d6f6e652d6b65792d6f6e652d6b65792d6f6e6531";
/// A second key for rotation tests (id 2).
pub const KEY2: &str = "74776f2d74776f2d74776f2d74776f2d74776f2d74776f2d74776f2d74776f32";

/// An overlay network of the fixture.
#[derive(Debug, Clone)]
pub struct NetDef {
    pub name: &'static str,
    pub vni: u32,
    /// The first three octets of the /24.
    pub prefix: [u8; 3],
    pub encrypted: bool,
}

impl NetDef {
    pub fn blue(encrypted: bool) -> Self {
        NetDef {
            name: "blue",
            vni: 4096,
            prefix: [10, 0, 0],
            encrypted,
        }
    }
}

/// A task endpoint: which node, which network (index into the nets), which host octet.
#[derive(Debug, Clone, Copy)]
pub struct TaskDef {
    pub node: usize,
    pub net: usize,
    pub host: u8,
}

/// A running task endpoint.
pub struct Task {
    pub ns: Namespace,
    pub ip: Ipv4Addr,
    pub node: usize,
    pub net: usize,
}

/// The running fixture. Dropping it stops every daemon and removes every namespace.
pub struct Cluster {
    pub tasks: Vec<Task>,
    pub sockets: Vec<Option<PathBuf>>,
    workers: Option<usize>,
    pub dir: PathBuf,
    daemons: Vec<ManagedChild>,
    // Declared last: namespaces go after the daemons that use them.
    pub topo: Topology,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.daemons.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// `tasks_per_node` tasks on every node, all on network 0.
pub fn uniform_tasks(nodes: usize, tasks_per_node: usize) -> Vec<TaskDef> {
    (0..nodes)
        .flat_map(|node| {
            (0..tasks_per_node).map(move |j| TaskDef {
                node,
                net: 0,
                host: (10 + 10 * node + j) as u8,
            })
        })
        .collect()
}

impl Cluster {
    /// Builds `nodes` nodes; those in `kernel_nodes` use the Linux kernel's VXLAN
    /// instead of shoald.
    pub fn start(
        nodes: usize,
        nets: &[NetDef],
        tasks: &[TaskDef],
        kernel_nodes: &[usize],
    ) -> Result<Cluster> {
        Self::start_with_workers(nodes, nets, tasks, kernel_nodes, None)
    }

    /// Like [`Cluster::start`], with `workers` forwarding lanes per shoald
    /// (`None`: the daemon's default, one per core).
    pub fn start_with_workers(
        nodes: usize,
        nets: &[NetDef],
        tasks: &[TaskDef],
        kernel_nodes: &[usize],
        workers: Option<usize>,
    ) -> Result<Cluster> {
        let topo = Topology::builder().nodes(nodes).clients(1).build()?;
        let dir = std::env::temp_dir().join(format!(
            "shoal-it-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut made = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            let ns = topo.add_bare_namespace(&format!("{i}"))?;
            let p = nets[t.net].prefix;
            made.push(Task {
                ns,
                ip: Ipv4Addr::new(p[0], p[1], p[2], t.host),
                node: t.node,
                net: t.net,
            });
        }
        let mut cluster = Cluster {
            tasks: made,
            sockets: vec![None; nodes],
            workers,
            dir,
            daemons: Vec::new(),
            topo,
        };
        for node in 0..nodes {
            if kernel_nodes.contains(&node) {
                cluster.start_kernel_node(node, nets)?;
            } else {
                cluster.start_shoald(node, nets, kernel_nodes)?;
            }
        }
        Ok(cluster)
    }

    fn node_addr(&self, node: usize) -> Ipv4Addr {
        self.topo.node(node).addr()
    }

    fn config_for(&self, node: usize, nets: &[NetDef]) -> String {
        let mut s = format!("[node]\naddress = \"{}\"\n", self.node_addr(node));
        if let Some(w) = self.workers {
            s += &format!("workers = {w}\n");
        }
        for (n, net) in nets.iter().enumerate() {
            let p = net.prefix;
            s += &format!(
                "\n[[networks]]\nname = \"{}\"\nvni = {}\nsubnet = \"{}.{}.{}.0/24\"\n",
                net.name, net.vni, p[0], p[1], p[2]
            );
            if net.encrypted {
                s += &format!("encrypted = true\nkeys = [{{ id = 1, secret = \"{KEY1}\" }}]\n");
            }
            let peers: Vec<String> = (0..self.sockets.len())
                .filter(|&o| o != node)
                .map(|o| format!("\"{}\"", self.node_addr(o)))
                .collect();
            s += &format!("peers = [{}]\n", peers.join(", "));
            for t in self.tasks.iter().filter(|t| t.net == n && t.node != node) {
                s += &format!(
                    "[[networks.remotes]]\nip = \"{}\"\nnode = \"{}\"\n",
                    t.ip,
                    self.node_addr(t.node)
                );
            }
        }
        for t in self.tasks.iter().filter(|t| t.node == node) {
            s += &format!(
                "\n[[endpoints]]\nnetwork = \"{}\"\nnetns = \"{}\"\nip = \"{}\"\n",
                nets[t.net].name,
                t.ns.name(),
                t.ip
            );
        }
        s
    }

    fn start_shoald(&mut self, node: usize, nets: &[NetDef], _kernel: &[usize]) -> Result<()> {
        let config = self.dir.join(format!("node{node}.toml"));
        std::fs::write(&config, self.config_for(node, nets))?;
        let sock = self.dir.join(format!("node{node}.sock"));
        let log = self.dir.join(format!("node{node}.log"));
        let mut cmd = self
            .topo
            .node(node)
            .ns()
            .command(env!("CARGO_BIN_EXE_shoald"));
        cmd.arg("--config")
            .arg(&config)
            .arg("--control")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = self.topo.node(node).ns().spawn(cmd)?;
        self.daemons.push(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http(&sock, "GET", "/v1/dataplane", None) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "shoald on node {node} did not come up within 20 s; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.sockets[node] = Some(sock);
        Ok(())
    }

    /// A node that uses the kernel's VXLAN: vxlan device and veths to its tasks on
    /// one bridge, static FDB entries towards the shoal nodes.
    fn start_kernel_node(&mut self, node: usize, nets: &[NetDef]) -> Result<()> {
        let ns = self.topo.node(node).ns();
        let me = self.node_addr(node);
        for (n, net) in nets.iter().enumerate() {
            let vx = format!("vx{n}");
            let br = format!("brov{n}");
            ns.output(["ip", "link", "add", &br, "type", "bridge"])?;
            ns.output([
                "ip",
                "link",
                "add",
                &vx,
                "type",
                "vxlan",
                "id",
                &net.vni.to_string(),
                "local",
                &me.to_string(),
                "dstport",
                "4789",
                "nolearning",
            ])?;
            ns.output(["ip", "link", "set", &vx, "master", &br, "up"])?;
            ns.output(["ip", "link", "set", &br, "up"])?;
            for other in (0..self.sockets.len()).filter(|&o| o != node) {
                let dst = self.node_addr(other).to_string();
                // Broadcasts (ARP requests) go to every shoal node ...
                ns.output([
                    "bridge",
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    &vx,
                    "dst",
                    &dst,
                ])?;
                // ... and unicast to the node that owns the MAC.
                for t in self.tasks.iter().filter(|t| t.net == n && t.node == other) {
                    let mac = MacAddr::from_ipv4(t.ip).to_string();
                    ns.output(["bridge", "fdb", "add", &mac, "dev", &vx, "dst", &dst])?;
                }
            }
            for (i, t) in self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.net == n && t.node == node)
            {
                let outside = format!("kv{i}");
                let mac = MacAddr::from_ipv4(t.ip).to_string();
                ns.output([
                    "ip",
                    "link",
                    "add",
                    &outside,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    t.ns.name(),
                ])?;
                ns.output(["ip", "link", "set", &outside, "master", &br, "up"])?;
                let tns = &t.ns;
                tns.output(["ip", "link", "set", "eth0", "address", &mac, "mtu", "1450"])?;
                tns.output(["ip", "addr", "add", &format!("{}/24", t.ip), "dev", "eth0"])?;
                tns.output(["ip", "link", "set", "eth0", "up"])?;
                // On veth, the kernel leaves TCP checksums partial all the way
                // through its own VXLAN (a NIC would fill them in); a shoal peer
                // reading the datagram would see an unfinished checksum.
                tns.output(["ethtool", "-K", "eth0", "tx", "off"])?;
            }
        }
        Ok(())
    }

    /// `GET /v1/dataplane` of a shoal node, parsed.
    pub fn status(&self, node: usize) -> Result<serde_json::Value> {
        let sock = self.sockets[node].as_ref().context("not a shoal node")?;
        let (code, body) = http(sock, "GET", "/v1/dataplane", None)?;
        if code != 200 {
            bail!("status of node {node}: HTTP {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The drop counters of a shoal node.
    pub fn drops(&self, node: usize) -> Result<BTreeMap<String, u64>> {
        Ok(serde_json::from_value(self.status(node)?["drops"].clone())?)
    }

    /// Replaces the key ring of `network` on every shoal node.
    pub fn set_keys(&self, network: &str, keys: &[(u8, &str)], tx: u8) -> Result<()> {
        let keys: Vec<_> = keys
            .iter()
            .map(|(id, s)| serde_json::json!({"id": id, "secret": s}))
            .collect();
        let body = serde_json::json!({ "keys": keys, "tx": tx }).to_string();
        for sock in self.sockets.iter().flatten() {
            let (code, resp) = http(
                sock,
                "PUT",
                &format!("/v1/networks/{network}/keys"),
                Some(&body),
            )?;
            if code != 204 {
                bail!("set keys on {}: HTTP {code}: {resp}", sock.display());
            }
        }
        Ok(())
    }

    /// Pings `to` from task `from`, one echo, two seconds at most.
    pub fn ping(&self, from: usize, to: Ipv4Addr) -> bool {
        self.tasks[from]
            .ns
            .command("ping")
            .args(["-c", "1", "-W", "2", &to.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// Runs `cmd` and fails with its stderr when it does not succeed.
#[allow(dead_code)]
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
