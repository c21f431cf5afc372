//! Seeded simulation: N pure cores over a virtual network with a virtual
//! clock, latency, jitter, loss and partitions. Deterministic for a seed.
//!
//! Push-pull streams are modelled as ordered frames with the same latency
//! (no loss: TCP), cut by partitions like datagrams.

use crate::core::{CoreConfig, Gossip, Timings};
use crate::record::EndpointRecord;
use crate::seal::KeyRing;
use crate::table::Tables;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed for everything random.
    pub seed: u64,
    /// One-way base latency.
    pub latency: Duration,
    /// Extra uniform random latency, up to this.
    pub jitter: Duration,
    /// Datagram loss probability (0..1).
    pub loss: f64,
    /// Protocol timings (`expected_cluster_size` is set to `nodes`).
    pub timings: Timings,
}

impl SimConfig {
    /// Defaults: 1 ms latency, 1 ms jitter, no loss, default timings.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            loss: 0.0,
            timings: Timings::default(),
        }
    }
}

#[derive(Debug)]
enum Delivery {
    Datagram {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Stream {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    d: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct SimNode {
    core: Gossip,
    addr: SocketAddr,
    alive: bool,
    /// Drop every packet to and from this node (not dead, just unreachable).
    muted: bool,
    group: u32,
    wake: Option<Instant>,
}

/// The simulated cluster.
pub struct Sim {
    start: Instant,
    now: Instant,
    cfg: SimConfig,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
    by_addr: HashMap<SocketAddr, usize>,
    rng: SmallRng,
    seq: u64,
}

/// Address of simulated node `i`.
pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(
            10,
            (i / 62500) as u8,
            ((i / 250) % 250) as u8,
            (i % 250 + 1) as u8,
        )),
        7946,
    )
}

/// A test endpoint record for `task` on node `node`.
pub fn test_record(node: usize, task: &str) -> EndpointRecord {
    EndpointRecord {
        task_id: task.to_owned(),
        task_name: format!("web.1.{task}"),
        service_name: "web".into(),
        service_id: "svc-web".into(),
        vip: Some(Ipv4Addr::new(10, 255, 0, 2)),
        ip: Ipv4Addr::new(10, 0, (node / 250) as u8, (node % 250 + 2) as u8),
        mac: [2, 66, 0, 0, (node >> 8) as u8, node as u8],
        node_id: format!("node-{node}"),
        node_addr: sim_addr(node).ip(),
        ports: vec![],
        aliases: vec![],
        dnsrr: false,
        disabled: false,
    }
}

impl Sim {
    /// Build `cfg.nodes` cores that know nobody.
    pub fn new(cfg: SimConfig) -> Self {
        let start = Instant::now();
        let mut timings = cfg.timings.clone();
        timings.expected_cluster_size = cfg.nodes as u32;
        let nodes: Vec<SimNode> = (0..cfg.nodes)
            .map(|i| {
                let keys = KeyRing::new(&[(1, [42; 32])], 1)
                    .unwrap_or_else(|_| unreachable!("valid ring"));
                let core = Gossip::new(
                    start,
                    CoreConfig {
                        node_id: format!("node-{i}"),
                        advertise: sim_addr(i),
                        generation: 1,
                        timings: timings.clone(),
                        rng_seed: cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                        os_nonces: false,
                    },
                    keys,
                )
                .unwrap_or_else(|e| panic!("sim config: {e}"));
                SimNode {
                    core,
                    addr: sim_addr(i),
                    alive: true,
                    muted: false,
                    group: 0,
                    wake: None,
                }
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        let mut sim = Self {
            start,
            now: start,
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            nodes,
            queue: BinaryHeap::new(),
            wakes: BinaryHeap::new(),
            by_addr,
            seq: 0,
        };
        for i in 0..sim.nodes.len() {
            sim.after(i);
        }
        sim
    }

    /// Virtual time since start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if the sim has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s core.
    pub fn core(&self, i: usize) -> &Gossip {
        &self.nodes[i].core
    }

    /// Node `i`'s tables.
    pub fn tables(&self, i: usize) -> &Tables {
        self.nodes[i].core.tables()
    }

    /// Is node `i` running?
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Run `f` on node `i`'s core at the current virtual time, then route its output.
    pub fn with_core(&mut self, i: usize, f: impl FnOnce(&mut Gossip, Instant)) {
        let now = self.now;
        f(&mut self.nodes[i].core, now);
        self.after(i);
    }

    /// Every node joins with node 0 and node `i-1` as seeds, and joins `net`.
    pub fn join_all(&mut self, net: &str) {
        for i in 0..self.nodes.len() {
            let mut seeds = vec![sim_addr(0)];
            if i > 1 {
                seeds.push(sim_addr(i - 1));
            }
            let net = net.to_owned();
            self.with_core(i, move |c, now| {
                c.join(now, seeds);
                c.join_network(now, &net);
            });
        }
    }

    /// Restart node `i` with empty state and a higher generation, as a
    /// process restart would; it rejoins via node 0 and joins `net` but
    /// publishes nothing.
    pub fn restart(&mut self, i: usize, generation: u64, net: &str) {
        let mut timings = self.cfg.timings.clone();
        timings.expected_cluster_size = self.cfg.nodes as u32;
        let keys = KeyRing::new(&[(1, [42; 32])], 1).unwrap_or_else(|_| unreachable!("valid ring"));
        let core = Gossip::new(
            self.now,
            CoreConfig {
                node_id: format!("node-{i}"),
                advertise: sim_addr(i),
                generation,
                timings,
                rng_seed: self.cfg.seed ^ generation.rotate_left(17) ^ i as u64,
                os_nonces: false,
            },
            keys,
        )
        .unwrap_or_else(|e| panic!("sim config: {e}"));
        self.nodes[i].core = core;
        self.nodes[i].alive = true;
        self.nodes[i].wake = None;
        let net = net.to_owned();
        let seed = sim_addr(if i == 0 { 1 } else { 0 });
        self.with_core(i, move |c, now| {
            c.join(now, [seed]);
            c.join_network(now, &net);
        });
    }

    /// Stop node `i` abruptly (no leave message).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Make node `i` unreachable (or reachable again) without stopping it.
    pub fn set_muted(&mut self, i: usize, muted: bool) {
        self.nodes[i].muted = muted;
    }

    /// Put each node in a partition group; only same-group nodes talk.
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            n.group = group_of(i);
        }
    }

    /// Remove partitions.
    pub fn heal(&mut self) {
        self.partition(|_| 0);
    }

    fn link(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.nodes[a], &self.nodes[b]);
        x.alive && y.alive && !x.muted && !y.muted && x.group == y.group
    }

    fn delay(&mut self) -> Duration {
        let j = self.cfg.jitter.as_micros() as u64;
        let extra = if j == 0 {
            0
        } else {
            self.rng.random_range(0..=j)
        };
        self.cfg.latency + Duration::from_micros(extra)
    }

    fn schedule(&mut self, d: Delivery) {
        self.seq += 1;
        let at = self.now + self.delay();
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            d,
        }));
    }

    /// Route everything node `i` wants to send and re-arm its timer.
    fn after(&mut self, i: usize) {
        if !self.nodes[i].alive {
            // A dead node's output is lost.
            let c = &mut self.nodes[i].core;
            while c.poll_transmit().is_some() {}
            while c.poll_sync().is_some() {}
            while c.poll_event().is_some() {}
            return;
        }
        while let Some(t) = self.nodes[i].core.poll_transmit() {
            let Some(&to) = self.by_addr.get(&t.to) else {
                continue;
            };
            if !self.link(i, to) {
                continue;
            }
            if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss.min(1.0)) {
                continue;
            }
            self.schedule(Delivery::Datagram {
                from: i,
                to,
                bytes: t.payload,
            });
        }
        while let Some(s) = self.nodes[i].core.poll_sync() {
            let Some(&to) = self.by_addr.get(&s.to) else {
                continue;
            };
            if self.link(i, to) {
                self.schedule(Delivery::Stream {
                    from: i,
                    to,
                    bytes: s.frame,
                });
            }
        }
        while self.nodes[i].core.poll_event().is_some() {}
        let t = self.nodes[i].core.poll_timeout();
        if self.nodes[i].wake != Some(t) {
            self.nodes[i].wake = Some(t);
            self.wakes.push(Reverse((t, i)));
        }
    }

    /// Advance virtual time to `until`, processing everything due.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let q = self.queue.peek().map(|Reverse(s)| s.at);
            let w = self.wakes.peek().map(|Reverse((t, _))| *t);
            let next = match (q, w) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if q == Some(next) {
                let Some(Reverse(s)) = self.queue.pop() else {
                    break;
                };
                self.deliver(s.d);
            } else {
                let Some(Reverse((t, i))) = self.wakes.pop() else {
                    break;
                };
                if self.nodes[i].wake != Some(t) || !self.nodes[i].alive {
                    continue;
                }
                self.nodes[i].wake = None;
                let now = self.now;
                self.nodes[i].core.handle_timeout(now);
                self.after(i);
            }
        }
        self.now = self.now.max(until);
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d {
            Delivery::Datagram { from, to, bytes } => {
                if !self.link(from, to) {
                    return;
                }
                let addr = self.nodes[from].addr;
                let _ = self.nodes[to].core.handle_datagram(now, addr, &bytes);
                self.after(to);
            }
            Delivery::Stream { from, to, bytes } => {
                if !self.link(from, to) {
                    return;
                }
                let addr = self.nodes[from].addr;
                let reply = self.nodes[to].core.handle_stream_frame(now, addr, &bytes);
                self.after(to);
                if let Ok(Some(r)) = reply {
                    self.schedule(Delivery::Stream {
                        from: to,
                        to: from,
                        bytes: r,
                    });
                }
            }
        }
    }

    /// Run in `step`s until `pred` holds or `limit` passes; returns the
    /// virtual time it took (to within `step`).
    pub fn run_until_true(
        &mut self,
        limit: Duration,
        step: Duration,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let t0 = self.now;
        loop {
            if pred(self) {
                return Some(self.now - t0);
            }
            if self.now - t0 >= limit {
                return None;
            }
            let next = self.now + step;
            self.run_until(next);
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Does every alive node see `task` as available in `net`?
    pub fn all_see(&self, net: &str, task: &str) -> bool {
        self.alive_nodes().all(|i| {
            self.tables(i)
                .available_endpoints(net)
                .any(|r| r.task_id == task)
        })
    }

    /// Does no alive node see `task` as available in `net`?
    pub fn none_see(&self, net: &str, task: &str) -> bool {
        self.alive_nodes().all(|i| {
            !self
                .tables(i)
                .available_endpoints(net)
                .any(|r| r.task_id == task)
        })
    }

    /// Sorted available task ids of `net` on node `i`.
    pub fn task_ids(&self, i: usize, net: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .tables(i)
            .available_endpoints(net)
            .map(|r| r.task_id.clone())
            .collect();
        v.sort();
        v
    }

    /// Do all alive nodes have the same available endpoints in `net`?
    pub fn views_identical(&self, net: &str) -> bool {
        let mut it = self.alive_nodes();
        let Some(first) = it.next() else { return true };
        let reference = self.task_ids(first, net);
        it.all(|i| self.task_ids(i, net) == reference)
    }

    /// Does every alive node see every other alive node as a member?
    pub fn membership_converged(&self) -> bool {
        let alive = self.alive_nodes().count();
        self.alive_nodes().all(|i| {
            self.core(i)
                .members()
                .iter()
                .filter(|m| m.state != crate::core::MemberState::Down)
                .filter(|m| {
                    self.by_addr
                        .get(&m.addr)
                        .is_some_and(|&j| self.nodes[j].alive)
                })
                .count()
                == alive - 1
        })
    }

    /// Indices of running nodes.
    pub fn alive_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].alive)
    }

    /// Sum of bytes sent by all nodes so far.
    pub fn total_bytes_sent(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.core.counters().snapshot().bytes_sent)
            .sum()
    }
}

/// Figures measured by [`run_scenarios`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cluster size.
    pub nodes: usize,
    /// Time to a converged membership after everyone joined.
    pub membership: Option<Duration>,
    /// (a) Publish to known everywhere.
    pub publish: Option<Duration>,
    /// (b) Kill to unavailable everywhere.
    pub failure: Option<Duration>,
    /// (c) Heal to identical views.
    pub heal: Option<Duration>,
    /// (d) Steady-state bytes per second per node.
    pub steady_bytes_per_node_per_sec: f64,
}

/// The standard scenarios, in order, on one cluster.
pub fn run_scenarios(cfg: SimConfig) -> Report {
    let n = cfg.nodes;
    let step = if n > 200 {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(10)
    };
    let mut sim = Sim::new(cfg);
    let net = "net-a";
    sim.join_all(net);
    let membership = sim.run_until_true(Duration::from_secs(60), step, Sim::membership_converged);
    // Every node runs one task.
    for i in 0..n {
        sim.with_core(i, |c, now| {
            c.publish(now, net, test_record(i, &format!("task-{i}")))
        });
    }
    sim.run_for(Duration::from_secs(5));

    // (d) steady state.
    let b0 = sim.total_bytes_sent();
    sim.run_for(Duration::from_secs(10));
    let steady = (sim.total_bytes_sent() - b0) as f64 / 10.0 / n as f64;

    // (a) publish.
    sim.with_core(n / 2, |c, now| {
        c.publish(now, net, test_record(n / 2, "fresh"))
    });
    let publish = sim.run_until_true(Duration::from_secs(30), step, |s| s.all_see(net, "fresh"));

    // (b) failure.
    let victim = n - 1;
    sim.kill(victim);
    let task = format!("task-{victim}");
    let failure = sim.run_until_true(Duration::from_secs(30), step, |s| s.none_see(net, &task));

    // (c) partition in two halves, writes on both sides, heal.
    let half = n / 2;
    sim.partition(|i| u32::from(i >= half));
    sim.run_for(Duration::from_secs(5));
    sim.with_core(0, |c, now| c.publish(now, net, test_record(0, "left-new")));
    sim.with_core(1 % n, |c, now| {
        c.withdraw(now, net, &format!("task-{}", 1 % n))
    });
    sim.with_core(half, |c, now| {
        c.publish(now, net, test_record(half, "right-new"))
    });
    sim.with_core(half + 1, |c, now| {
        c.withdraw(now, net, &format!("task-{}", half + 1))
    });
    sim.run_for(Duration::from_secs(5));
    sim.heal();
    let gone = [
        format!("task-{}", 1 % n),
        format!("task-{}", half + 1),
        task.clone(),
    ];
    let heal = sim.run_until_true(Duration::from_secs(120), step, |s| {
        s.all_see(net, "left-new")
            && s.all_see(net, "right-new")
            && gone.iter().all(|t| s.none_see(net, t))
            && s.views_identical(net)
    });
    Report {
        nodes: n,
        membership,
        publish,
        failure,
        heal,
        steady_bytes_per_node_per_sec: steady,
    }
}
