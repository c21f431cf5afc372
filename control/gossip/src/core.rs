//! The pure gossip core: foca membership plus the replicated tables.
//!
//! No clock, no socket: every input carries `now`, outputs are drained with
//! [`Gossip::poll_transmit`] (sealed datagrams), [`Gossip::poll_sync`]
//! (sealed first frames of TCP push-pull exchanges to open) and
//! [`Gossip::poll_event`]. Randomness comes from a seeded RNG so a
//! simulation replays exactly; only AEAD nonces may come from the OS
//! ([`CoreConfig::os_nonces`]).

pub use crate::config::{ConfigError, CoreConfig, Timings, MAX_DATAGRAM};
pub use crate::output::{Event, Member, MemberState, RecvError, SyncOpen, TableView, Transmit};
use crate::record::EndpointRecord;
use crate::seal::{KeyRing, KeyRingError, SealError, OVERHEAD};
use crate::stats::{Counters, DropReason};
use crate::swim::{NodeIdentity, SwimCodec};
use crate::table::Tables;
use crate::wire::{self, Group, Message, Scope, WireEntry};
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, State, Timer};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct MemberInfo {
    ident: NodeIdentity,
    up: bool,
}

type Swim = Foca<NodeIdentity, SwimCodec, SmallRng, NoCustomBroadcast>;

/// The gossip state machine of one node.
pub struct Gossip {
    local: NodeIdentity,
    timings: Timings,
    foca: Swim,
    rt: AccumulatingRuntime<NodeIdentity>,
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    keys: KeyRing,
    rng: SmallRng,
    os_rng: Option<ring::rand::SystemRandom>,
    tables: Tables,
    members: BTreeMap<String, MemberInfo>,
    seeds: BTreeSet<SocketAddr>,
    transmits: VecDeque<Transmit>,
    syncs: VecDeque<SyncOpen>,
    events: VecDeque<Event>,
    next_sync: Instant,
    next_announce: Instant,
    last_heal_sync: Option<Instant>,
    sync_round: u64,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("local", &self.local)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn drop_reason(e: &SealError) -> DropReason {
    match e {
        SealError::Truncated { .. } => DropReason::Truncated,
        SealError::BadVersion(_) => DropReason::BadVersion,
        SealError::UnknownKey(_) => DropReason::UnknownKey,
        SealError::BadTag => DropReason::BadTag,
    }
}

impl Gossip {
    /// A node that knows nobody yet; call [`Gossip::join`] with seeds.
    pub fn new(now: Instant, cfg: CoreConfig, keys: KeyRing) -> Result<Self, ConfigError> {
        cfg.timings.validate()?;
        if cfg.node_id.is_empty() || cfg.node_id.len() > 255 {
            return Err(ConfigError {
                field: "node_id",
                reason: "must be 1 to 255 bytes",
            });
        }
        let local = NodeIdentity {
            node_id: cfg.node_id.clone(),
            addr: cfg.advertise,
            generation: cfg.generation,
        };
        let foca = Foca::new(
            local.clone(),
            cfg.timings.foca_config(),
            SmallRng::seed_from_u64(cfg.rng_seed ^ 0x5eed_f0ca),
            SwimCodec,
        );
        let jitter = Duration::from_millis(cfg.rng_seed % 97);
        Ok(Self {
            tables: Tables::new(cfg.node_id, cfg.timings.reap_after),
            next_sync: now + cfg.timings.sync_interval + jitter,
            next_announce: now + cfg.timings.seed_announce_interval,
            timings: cfg.timings,
            local,
            foca,
            rt: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            keys,
            rng: SmallRng::seed_from_u64(cfg.rng_seed),
            os_rng: cfg.os_nonces.then(ring::rand::SystemRandom::new),
            members: BTreeMap::new(),
            seeds: BTreeSet::new(),
            transmits: VecDeque::new(),
            syncs: VecDeque::new(),
            events: VecDeque::new(),
            last_heal_sync: None,
            sync_round: 0,
            counters: Arc::new(Counters::default()),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.local.node_id
    }

    /// Shared counters (read them from any thread).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The tables (read-only).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Replace the key ring (rotation). The new ring takes effect at once.
    pub fn set_keys(&mut self, keys: &[(u8, [u8; 32])], tx_key: u8) -> Result<(), KeyRingError> {
        self.keys = KeyRing::new(keys, tx_key)?;
        Ok(())
    }

    // ------------------------------------------------------------ outputs

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.counters.sent_datagram(t.payload.len());
        Some(t)
    }

    /// Next push-pull exchange to open.
    pub fn poll_sync(&mut self) -> Option<SyncOpen> {
        let s = self.syncs.pop_front()?;
        self.counters.sent_frame(s.frame.len());
        Some(s)
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Gossip::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let t = self.next_sync.min(self.next_announce);
        self.timers.keys().next().map_or(t, |(at, _)| (*at).min(t))
    }

    // ------------------------------------------------------------- inputs

    /// A datagram arrived.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), RecvError> {
        self.counters.received_datagram(bytes.len());
        let msg = self.open(bytes)?;
        let _ = from;
        match msg {
            Message::Swim(data) => {
                let r = self.foca.handle_data(&data, &mut self.rt);
                self.drain_foca(now);
                if let Err(e) = r {
                    self.counters.dropped(DropReason::Swim);
                    return Err(RecvError::Swim(e.to_string()));
                }
            }
            Message::Update(groups) => self.apply_groups(now, &groups),
            _ => {
                self.counters.dropped(DropReason::UnexpectedMessage);
                return Err(RecvError::Unexpected("stream"));
            }
        }
        self.flush_table_events();
        Ok(())
    }

    /// A sealed stream frame (length prefix removed) arrived on a push-pull
    /// connection; returns the sealed reply to send, if any.
    pub fn handle_stream_frame(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, RecvError> {
        self.counters.received_frame(sealed.len());
        let msg = self.open(sealed)?;
        let reply = self.handle_stream_message(now, from, msg)?;
        Ok(reply.map(|m| {
            let s = self.seal(&m);
            self.counters.sent_frame(s.len());
            s
        }))
    }

    /// A decoded stream message; returns the reply message, if any.
    pub fn handle_stream_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: Message,
    ) -> Result<Option<Message>, RecvError> {
        let _ = from;
        let reply = match msg {
            Message::SyncRequest { from: _, digests } => {
                let mut groups = Vec::new();
                let mut want = Vec::new();
                for d in &digests {
                    let member = self.takes_part(&d.scope);
                    let theirs: BTreeSet<&str> =
                        d.owners.iter().map(|o| o.owner.as_str()).collect();
                    for owner in self.tables.differing_owners(d) {
                        let mine = owner == self.local.node_id;
                        if !member && !mine {
                            continue;
                        }
                        if let Some(g) = self.tables.group(&d.scope, &owner) {
                            groups.push(g);
                        }
                        if theirs.contains(owner.as_str()) {
                            want.push((d.scope.clone(), owner));
                        }
                    }
                }
                Some(Message::SyncReply { groups, want })
            }
            Message::SyncReply { groups, want } => {
                self.apply_groups(now, &groups);
                let push: Vec<Group> = want
                    .iter()
                    .filter(|(s, o)| self.takes_part(s) || *o == self.local.node_id)
                    .filter_map(|(s, o)| self.tables.group(s, o))
                    .collect();
                (!push.is_empty()).then_some(Message::SyncPush(push))
            }
            Message::SyncPush(groups) | Message::Update(groups) => {
                self.apply_groups(now, &groups);
                None
            }
            Message::Swim(_) => {
                self.counters.dropped(DropReason::UnexpectedMessage);
                return Err(RecvError::Unexpected("SWIM"));
            }
        };
        self.flush_table_events();
        Ok(reply)
    }

    /// Timers: SWIM probes, anti-entropy, seed announces, reaping.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(at, seq), _)) = self.timers.first_key_value() {
            if at > now {
                break;
            }
            let Some(timer) = self.timers.remove(&(at, seq)) else {
                break;
            };
            if self.foca.handle_timer(timer, &mut self.rt).is_err() {
                self.counters.dropped(DropReason::Swim);
            }
            self.drain_foca(now);
        }
        if now >= self.next_sync {
            self.next_sync = now + self.timings.sync_interval;
            self.tables.tick(now);
            self.sync_round += 1;
            if let Some(peer) = self.random_peer() {
                self.queue_sync(peer);
            }
        }
        if now >= self.next_announce {
            self.next_announce = now + self.timings.seed_announce_interval;
            self.announce_seeds(now);
        }
        self.flush_table_events();
    }

    // -------------------------------------------------------- local calls

    /// Remember seeds and announce to them now.
    pub fn join(&mut self, now: Instant, seeds: impl IntoIterator<Item = SocketAddr>) {
        let seeds: Vec<SocketAddr> = seeds.into_iter().collect();
        self.add_seeds(seeds.iter().copied());
        for s in seeds {
            if s != self.local.addr {
                self.announce_to(now, s);
            }
        }
    }

    /// Remember seeds, announced to every `seed_announce_interval` while
    /// they are not alive members (this is what rejoins after long splits).
    pub fn add_seeds(&mut self, seeds: impl IntoIterator<Item = SocketAddr>) {
        self.seeds.extend(seeds);
    }

    /// Take part in `net`: announce it and pull its table from a member.
    pub fn join_network(&mut self, now: Instant, net: &str) {
        if self.tables.is_local_member(net) {
            return;
        }
        let g = self.tables.local_put(now, Scope::Networks, net, None);
        self.disseminate(&g);
        // Full push-pull on join with one member of the network.
        let members: Vec<SocketAddr> = self
            .tables
            .network_members(net)
            .iter()
            .filter_map(|n| self.up_addr(n))
            .collect();
        if let Some(peer) = self.pick(&members) {
            self.queue_sync(peer);
        }
        self.events.push_back(Event::TableChanged(net.to_owned()));
        self.flush_table_events();
    }

    /// Stop taking part in `net`: withdraw our endpoints there, then leave.
    pub fn leave_network(&mut self, now: Instant, net: &str) {
        let scope = Scope::Endpoints(net.to_owned());
        for task in self.tables.local_keys(&scope) {
            if let Some(g) = self.tables.local_delete(now, scope.clone(), &task) {
                self.disseminate(&g);
            }
        }
        if let Some(g) = self.tables.local_delete(now, Scope::Networks, net) {
            self.disseminate(&g);
        }
        self.flush_table_events();
    }

    /// Publish (or replace) a local endpoint. Joins `net` if needed; the
    /// record's `node_id` is set to this node (the only writer).
    pub fn publish(&mut self, now: Instant, net: &str, mut record: EndpointRecord) {
        self.join_network(now, net);
        record.node_id = self.local.node_id.clone();
        let task = record.task_id.clone();
        let g = self
            .tables
            .local_put(now, Scope::Endpoints(net.to_owned()), &task, Some(record));
        self.disseminate(&g);
        self.flush_table_events();
    }

    /// Withdraw a local endpoint (tombstone).
    pub fn withdraw(&mut self, now: Instant, net: &str, task_id: &str) {
        if let Some(g) = self
            .tables
            .local_delete(now, Scope::Endpoints(net.to_owned()), task_id)
        {
            self.disseminate(&g);
        }
        self.flush_table_events();
    }

    /// Enable or disable a local endpoint.
    pub fn set_disabled(&mut self, now: Instant, net: &str, task_id: &str, disabled: bool) {
        if let Some(g) = self.tables.set_disabled(now, net, task_id, disabled) {
            self.disseminate(&g);
        }
        self.flush_table_events();
    }

    /// Leave the SWIM cluster gracefully (others mark us down at once).
    pub fn leave_cluster(&mut self, now: Instant) {
        if self.foca.leave_cluster(&mut self.rt).is_err() {
            self.counters.dropped(DropReason::Swim);
        }
        self.drain_foca(now);
    }

    // -------------------------------------------------------------- views

    /// Members other than this node, highest generation per node id.
    pub fn members(&self) -> Vec<Member> {
        let mut best: BTreeMap<&str, (u64, Member)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let state = match m.state() {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down => MemberState::Down,
            };
            let cand = (
                id.generation,
                Member {
                    node_id: id.node_id.clone(),
                    addr: id.addr,
                    state,
                },
            );
            match best.get(id.node_id.as_str()) {
                Some((g, _)) if *g >= id.generation => {}
                _ => {
                    best.insert(id.node_id.as_str(), cand);
                }
            }
        }
        best.into_values().map(|(_, m)| m).collect()
    }

    /// Snapshot of every network's available endpoints.
    pub fn view(&self) -> TableView {
        let networks = self
            .tables
            .networks()
            .into_iter()
            .map(|n| {
                let mut eps: Vec<EndpointRecord> =
                    self.tables.available_endpoints(&n).cloned().collect();
                eps.sort_by(|a, b| a.task_id.cmp(&b.task_id));
                (n, eps)
            })
            .collect();
        TableView {
            version: self.tables.version(),
            networks,
        }
    }

    // ----------------------------------------------------------- internal

    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        let os_ok = match &self.os_rng {
            Some(r) => ring::rand::SecureRandom::fill(r, &mut n).is_ok(),
            None => false,
        };
        if !os_ok {
            self.rng.fill_bytes(&mut n);
        }
        n
    }

    fn seal(&mut self, m: &Message) -> Vec<u8> {
        let nonce = self.nonce();
        self.keys.seal(nonce, &wire::encode(m))
    }

    fn open(&mut self, sealed: &[u8]) -> Result<Message, RecvError> {
        let plain = self
            .keys
            .open(sealed)
            .inspect_err(|e| self.counters.dropped(drop_reason(e)))?;
        wire::decode(&plain).map_err(|e| {
            self.counters.dropped(DropReason::Malformed);
            RecvError::Wire(e)
        })
    }

    fn takes_part(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Networks => true,
            Scope::Endpoints(n) => self.tables.is_local_member(n),
        }
    }

    fn up_addr(&self, node: &str) -> Option<SocketAddr> {
        if node == self.local.node_id {
            return None;
        }
        self.members
            .get(node)
            .filter(|m| m.up)
            .map(|m| m.ident.addr)
    }

    fn pick(&mut self, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        if addrs.is_empty() {
            None
        } else {
            Some(addrs[self.rng.random_range(0..addrs.len())])
        }
    }

    /// Even rounds: a member of one of our networks; odd rounds: anyone
    /// (keeps the network-membership table converging everywhere).
    fn random_peer(&mut self) -> Option<SocketAddr> {
        let nets = self.tables.local_networks();
        if self.sync_round & 1 == 0 && !nets.is_empty() {
            let net = nets[self.rng.random_range(0..nets.len())].clone();
            let addrs: Vec<SocketAddr> = self
                .tables
                .network_members(&net)
                .iter()
                .filter_map(|n| self.up_addr(n))
                .collect();
            if !addrs.is_empty() {
                return self.pick(&addrs);
            }
        }
        let all: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.up)
            .map(|m| m.ident.addr)
            .collect();
        self.pick(&all)
    }

    fn queue_sync(&mut self, to: SocketAddr) {
        let mut digests = vec![self.tables.digest(&Scope::Networks)];
        for n in self.tables.local_networks() {
            digests.push(self.tables.digest(&Scope::Endpoints(n)));
        }
        let frame = self.seal(&Message::SyncRequest {
            from: self.local.node_id.clone(),
            digests,
        });
        self.syncs.push_back(SyncOpen { to, frame });
    }

    fn announce_to(&mut self, now: Instant, addr: SocketAddr) {
        let dst = NodeIdentity {
            node_id: String::new(),
            addr,
            generation: 0,
        };
        if self.foca.announce(dst, &mut self.rt).is_err() {
            self.counters.dropped(DropReason::Swim);
        }
        self.drain_foca(now);
    }

    fn announce_seeds(&mut self, now: Instant) {
        let alive: BTreeSet<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.up)
            .map(|m| m.ident.addr)
            .collect();
        let todo: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|s| **s != self.local.addr && !alive.contains(s))
            .copied()
            .collect();
        for s in todo {
            self.announce_to(now, s);
        }
    }

    fn drain_foca(&mut self, now: Instant) {
        while let Some((to, data)) = self.rt.to_send() {
            let payload = self.seal(&Message::Swim(data.to_vec()));
            self.transmits.push_back(Transmit {
                to: to.addr,
                payload,
            });
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => self.member_up(now, id),
                OwnedNotification::MemberDown(id) => self.member_down(now, &id),
                OwnedNotification::Rename(old, new) => {
                    if old.node_id != new.node_id {
                        self.member_down(now, &old);
                    }
                    let up = self.members.get(&new.node_id).is_some_and(|m| m.up);
                    if up {
                        if let Some(m) = self.members.get_mut(&new.node_id) {
                            m.ident = new;
                        }
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(node = %id.node_id, generation = id.generation, "rejoined the cluster after being declared down");
                    self.local = id;
                }
                _ => {}
            }
        }
    }

    fn member_up(&mut self, now: Instant, id: NodeIdentity) {
        if id.node_id == self.local.node_id {
            return;
        }
        let prev = self.members.get(&id.node_id).cloned();
        if prev.as_ref().is_some_and(|m| m.up && m.ident == id) {
            return;
        }
        let was_down = prev.is_some_and(|m| !m.up) || self.tables.is_down(&id.node_id);
        let addr = id.addr;
        self.members.insert(
            id.node_id.clone(),
            MemberInfo {
                ident: id.clone(),
                up: true,
            },
        );
        self.tables.mark_up(&id.node_id);
        // Tell it which networks we are in, so it sends us its writes there.
        if let Some(g) = self.tables.group(&Scope::Networks, &self.local.node_id) {
            self.send_group(&g, &[addr]);
        }
        self.events.push_back(Event::MemberUp {
            node_id: id.node_id,
            addr,
        });
        // Coming back from down (partition heal, restart): pull its state
        // now rather than waiting for the random peer to get there.
        let quarter = self.timings.sync_interval / 4;
        if was_down
            && self
                .last_heal_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= quarter)
        {
            self.last_heal_sync = Some(now);
            self.queue_sync(addr);
        }
    }

    fn member_down(&mut self, now: Instant, id: &NodeIdentity) {
        let Some(m) = self.members.get_mut(&id.node_id) else {
            return;
        };
        if m.ident != *id || !m.up {
            return;
        }
        m.up = false;
        self.tables.mark_down(now, &id.node_id);
        self.events.push_back(Event::MemberDown {
            node_id: id.node_id.clone(),
            addr: id.addr,
        });
    }

    fn apply_groups(&mut self, now: Instant, groups: &[Group]) {
        for g in groups {
            if g.owner != self.local.node_id && !self.takes_part(&g.scope) {
                continue;
            }
            let applied = self.tables.apply(now, g);
            for r in applied.refuted {
                self.disseminate(&r);
            }
            // A node just joined networks we are in: hand it our own
            // entries there at once instead of waiting for anti-entropy.
            if g.scope == Scope::Networks && g.owner != self.local.node_id {
                if let Some(addr) = self.up_addr(&g.owner) {
                    for net in applied.live_keys {
                        if !self.tables.is_local_member(&net) {
                            continue;
                        }
                        let scope = Scope::Endpoints(net);
                        if let Some(mine) = self.tables.group(&scope, &self.local.node_id) {
                            self.send_group(&mine, &[addr]);
                        }
                    }
                }
            }
        }
    }

    fn flush_table_events(&mut self) {
        for s in self.tables.take_changed() {
            if let Scope::Endpoints(n) = s {
                self.events.push_back(Event::TableChanged(n));
            }
        }
    }

    /// Send a fresh write to the nodes that take part in its scope, packed in
    /// datagrams under [`MAX_DATAGRAM`]; an entry too large for one goes
    /// over TCP.
    fn disseminate(&mut self, g: &Group) {
        let targets: Vec<SocketAddr> = match &g.scope {
            Scope::Networks => self
                .members
                .values()
                .filter(|m| m.up)
                .map(|m| m.ident.addr)
                .collect(),
            Scope::Endpoints(n) => self
                .tables
                .network_members(n)
                .iter()
                .filter_map(|m| self.up_addr(m))
                .collect(),
        };
        self.send_group(g, &targets);
    }

    fn send_group(&mut self, g: &Group, targets: &[SocketAddr]) {
        if targets.is_empty() {
            return;
        }
        let mut head = wire::Writer::default();
        wire::put_group_head(&mut head, g);
        let budget = MAX_DATAGRAM - OVERHEAD - 8 - head.buf.len();
        let mut chunks: Vec<Vec<WireEntry>> = vec![Vec::new()];
        let mut used = 0;
        for e in &g.entries {
            let mut w = wire::Writer::default();
            wire::put_entry(&mut w, e);
            let len = w.buf.len();
            if len > budget {
                let big = Message::Update(vec![Group {
                    scope: g.scope.clone(),
                    owner: g.owner.clone(),
                    entries: vec![e.clone()],
                }]);
                for t in targets {
                    let frame = self.seal(&big);
                    self.syncs.push_back(SyncOpen { to: *t, frame });
                }
                continue;
            }
            if used + len > budget {
                chunks.push(Vec::new());
                used = 0;
            }
            used += len;
            if let Some(c) = chunks.last_mut() {
                c.push(e.clone());
            }
        }
        for entries in chunks.into_iter().filter(|c| !c.is_empty()) {
            let m = Message::Update(vec![Group {
                scope: g.scope.clone(),
                owner: g.owner.clone(),
                entries,
            }]);
            for t in targets {
                let payload = self.seal(&m);
                self.transmits.push_back(Transmit { to: *t, payload });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(keys: KeyRing) -> Gossip {
        let cfg = CoreConfig {
            node_id: "a".into(),
            advertise: "127.0.0.1:7946".parse().unwrap(),
            generation: 1,
            timings: Timings::default(),
            rng_seed: 3,
            os_nonces: false,
        };
        Gossip::new(Instant::now(), cfg, keys).unwrap()
    }

    #[test]
    fn every_drop_reason_is_reachable() {
        let ring = || KeyRing::new(&[(1, [1; 32])], 1).unwrap();
        let mut c = core(ring());
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.2:7946".parse().unwrap();
        let other = KeyRing::new(&[(2, [1; 32])], 2).unwrap();
        let wrong = KeyRing::new(&[(1, [9; 32])], 1).unwrap();
        let good = ring();
        let mut bad_version = good.seal([0; 12], b"x");
        bad_version[0] = 7;
        let cases: Vec<(DropReason, Vec<u8>, bool)> = vec![
            (DropReason::Truncated, vec![1, 1, 0], true),
            (DropReason::BadVersion, bad_version, true),
            (DropReason::UnknownKey, other.seal([0; 12], b"x"), true),
            (DropReason::BadTag, wrong.seal([0; 12], b"x"), true),
            (DropReason::Malformed, good.seal([0; 12], b"\x01\x09"), true),
            (
                DropReason::Swim,
                good.seal([0; 12], &wire::encode(&Message::Swim(vec![1, 2, 3]))),
                true,
            ),
            (
                DropReason::UnexpectedMessage,
                good.seal([0; 12], &wire::encode(&Message::SyncPush(vec![]))),
                true,
            ),
            (
                DropReason::UnexpectedMessage,
                good.seal([0; 12], &wire::encode(&Message::Swim(vec![]))),
                false,
            ),
        ];
        for (reason, bytes, datagram) in cases {
            let before = c.counters().snapshot().drops[&reason];
            if datagram {
                assert!(c.handle_datagram(now, from, &bytes).is_err(), "{reason:?}");
            } else {
                assert!(
                    c.handle_stream_frame(now, from, &bytes).is_err(),
                    "{reason:?}"
                );
            }
            assert_eq!(
                c.counters().snapshot().drops[&reason],
                before + 1,
                "{reason:?}"
            );
        }
        // FrameTooLarge is counted by the driver; it has its own test.
    }

    #[test]
    fn invalid_config_names_the_field() {
        let mut t = Timings::default();
        t.probe_rtt = t.probe_period;
        assert_eq!(t.validate().unwrap_err().field, "probe_rtt");
    }
}
