//! Replicated tables: pure state, no I/O, `now` passed in.
//!
//! Two tables share one set of rules:
//! - [`Scope::Networks`]: which node takes part in which network
//!   (owner = node, key = network id);
//! - [`Scope::Endpoints`]`(net)`: the endpoint records of one network
//!   (owner = node running the task, key = task id).
//!
//! Rules: an entry is written only by its owner, stamped with the owner's
//! node-wide Lamport clock (bumped on every local write, `max(local, seen)`
//! on merge); the higher clock wins. Deletion writes a tombstone, reaped
//! after `reap_after`. An owner that receives a copy of its own entry newer
//! than what it holds (a stale copy after its tombstone was reaped, or its
//! pre-restart state) re-asserts its current state with a higher clock
//! (a fresh tombstone if it has none), so nothing stale comes back.
//! Entries of an owner that membership declared down are kept but marked
//! unavailable (locally, not replicated); after `reap_after` down they are
//! dropped.

use crate::record::EndpointRecord;
use crate::wire::{Group, OwnerDigest, Scope, ScopeDigest, WireEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Entry {
    clock: u64,
    deleted: bool,
    record: Option<EndpointRecord>,
    /// Local time the tombstone was stored (for reaping).
    since: Instant,
}

impl Entry {
    fn to_wire(&self, key: &str) -> WireEntry {
        WireEntry {
            key: key.to_owned(),
            clock: self.clock,
            deleted: self.deleted,
            record: if self.deleted {
                None
            } else {
                self.record.clone()
            },
        }
    }
}

type OwnerMap = BTreeMap<String, Entry>;

#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    reaped: bool,
}

/// Outcome of merging a group.
#[derive(Debug, Default)]
pub struct Applied {
    /// Entries stored.
    pub stored: usize,
    /// Groups this node (as owner) re-asserted and must disseminate.
    pub refuted: Vec<Group>,
    /// Keys whose stored entry is live (new or updated).
    pub live_keys: Vec<String>,
}

/// Both tables of one node.
#[derive(Debug)]
pub struct Tables {
    local: String,
    clock: u64,
    reap_after: Duration,
    scopes: BTreeMap<Scope, BTreeMap<String, OwnerMap>>,
    down: BTreeMap<String, Down>,
    version: u64,
    changed: BTreeSet<Scope>,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

impl Tables {
    /// Empty tables for node `local`.
    pub fn new(local: impl Into<String>, reap_after: Duration) -> Self {
        Self {
            local: local.into(),
            clock: 0,
            reap_after,
            scopes: BTreeMap::new(),
            down: BTreeMap::new(),
            version: 0,
            changed: BTreeSet::new(),
        }
    }

    /// This node's id.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// Lamport clock.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Bumped on every change a consumer could see.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn touch(&mut self, scope: &Scope) {
        self.version += 1;
        self.changed.insert(scope.clone());
    }

    /// Scopes changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<Scope> {
        std::mem::take(&mut self.changed)
    }

    /// Write a live local entry (`record` is `None` for network membership);
    /// returns the group to disseminate.
    pub fn local_put(
        &mut self,
        now: Instant,
        scope: Scope,
        key: &str,
        record: Option<EndpointRecord>,
    ) -> Group {
        self.write(now, scope, key, false, record)
    }

    /// Tombstone a local entry; `None` when there is nothing live to delete.
    pub fn local_delete(&mut self, now: Instant, scope: Scope, key: &str) -> Option<Group> {
        let live = self
            .scopes
            .get(&scope)
            .and_then(|o| o.get(&self.local))
            .and_then(|m| m.get(key))
            .is_some_and(|e| !e.deleted);
        live.then(|| self.write(now, scope, key, true, None))
    }

    fn write(
        &mut self,
        now: Instant,
        scope: Scope,
        key: &str,
        deleted: bool,
        record: Option<EndpointRecord>,
    ) -> Group {
        self.clock += 1;
        let e = Entry {
            clock: self.clock,
            deleted,
            record,
            since: now,
        };
        let wire = e.to_wire(key);
        self.scopes
            .entry(scope.clone())
            .or_default()
            .entry(self.local.clone())
            .or_default()
            .insert(key.to_owned(), e);
        self.touch(&scope);
        Group {
            scope,
            owner: self.local.clone(),
            entries: vec![wire],
        }
    }

    /// Set the `disabled` flag of a local live endpoint.
    pub fn set_disabled(
        &mut self,
        now: Instant,
        net: &str,
        task: &str,
        disabled: bool,
    ) -> Option<Group> {
        let scope = Scope::Endpoints(net.to_owned());
        let mut rec = self
            .scopes
            .get(&scope)?
            .get(&self.local)?
            .get(task)
            .filter(|e| !e.deleted)?
            .record
            .clone()?;
        if rec.disabled == disabled {
            return None;
        }
        rec.disabled = disabled;
        Some(self.local_put(now, scope, task, Some(rec)))
    }

    /// Live local keys in a scope (task ids, or networks joined).
    pub fn local_keys(&self, scope: &Scope) -> Vec<String> {
        self.scopes
            .get(scope)
            .and_then(|o| o.get(&self.local))
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| !e.deleted)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Does this node take part in `net`?
    pub fn is_local_member(&self, net: &str) -> bool {
        self.scopes
            .get(&Scope::Networks)
            .and_then(|o| o.get(&self.local))
            .and_then(|m| m.get(net))
            .is_some_and(|e| !e.deleted)
    }

    /// Nodes (other than down ones) that joined `net`, this node included.
    pub fn network_members(&self, net: &str) -> Vec<String> {
        let Some(owners) = self.scopes.get(&Scope::Networks) else {
            return Vec::new();
        };
        owners
            .iter()
            .filter(|(o, m)| !self.down.contains_key(*o) && m.get(net).is_some_and(|e| !e.deleted))
            .map(|(o, _)| o.clone())
            .collect()
    }

    /// Merge a group received from a peer.
    pub fn apply(&mut self, now: Instant, g: &Group) -> Applied {
        let mut out = Applied::default();
        if g.owner == self.local {
            let mut refuted = Vec::new();
            for e in &g.entries {
                if !Self::valid(&g.scope, e) {
                    continue;
                }
                self.clock = self.clock.max(e.clock);
                let mine = self
                    .scopes
                    .entry(g.scope.clone())
                    .or_default()
                    .entry(self.local.clone())
                    .or_default();
                match mine.get_mut(&e.key) {
                    Some(l) if l.clock >= e.clock => {}
                    Some(l) => {
                        self.clock += 1;
                        l.clock = self.clock;
                        if l.deleted {
                            l.since = now;
                        }
                        refuted.push(l.to_wire(&e.key));
                    }
                    None if e.deleted => {
                        mine.insert(
                            e.key.clone(),
                            Entry {
                                clock: e.clock,
                                deleted: true,
                                record: None,
                                since: now,
                            },
                        );
                    }
                    None => {
                        self.clock += 1;
                        let t = Entry {
                            clock: self.clock,
                            deleted: true,
                            record: None,
                            since: now,
                        };
                        refuted.push(t.to_wire(&e.key));
                        mine.insert(e.key.clone(), t);
                    }
                }
            }
            if !refuted.is_empty() {
                self.touch(&g.scope);
                out.refuted.push(Group {
                    scope: g.scope.clone(),
                    owner: self.local.clone(),
                    entries: refuted,
                });
            }
            return out;
        }
        if self.down.get(&g.owner).is_some_and(|d| d.reaped) {
            return out;
        }
        for e in &g.entries {
            if !Self::valid(&g.scope, e) {
                continue;
            }
            self.clock = self.clock.max(e.clock);
            let owned = self
                .scopes
                .entry(g.scope.clone())
                .or_default()
                .entry(g.owner.clone())
                .or_default();
            if owned.get(&e.key).is_some_and(|l| l.clock >= e.clock) {
                continue;
            }
            owned.insert(
                e.key.clone(),
                Entry {
                    clock: e.clock,
                    deleted: e.deleted,
                    record: e.record.clone(),
                    since: now,
                },
            );
            out.stored += 1;
            if !e.deleted {
                out.live_keys.push(e.key.clone());
            }
        }
        if out.stored > 0 {
            self.touch(&g.scope);
        }
        out
    }

    fn valid(scope: &Scope, e: &WireEntry) -> bool {
        match scope {
            Scope::Networks => e.record.is_none(),
            Scope::Endpoints(_) => e.deleted == e.record.is_none(),
        }
    }

    /// Per-owner digests of a scope.
    pub fn digest(&self, scope: &Scope) -> ScopeDigest {
        let owners = self
            .scopes
            .get(scope)
            .map(|o| {
                o.iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(|(owner, m)| Self::owner_digest(owner, m))
                    .collect()
            })
            .unwrap_or_default();
        ScopeDigest {
            scope: scope.clone(),
            owners,
        }
    }

    fn owner_digest(owner: &str, m: &OwnerMap) -> OwnerDigest {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut max_clock = 0;
        for (k, e) in m {
            fnv(&mut hash, k.as_bytes());
            fnv(&mut hash, &[0xff]);
            fnv(&mut hash, &e.clock.to_be_bytes());
            fnv(&mut hash, &[u8::from(e.deleted)]);
            max_clock = max_clock.max(e.clock);
        }
        OwnerDigest {
            owner: owner.to_owned(),
            count: m.len() as u64,
            max_clock,
            hash,
        }
    }

    /// Owners whose digests differ between `remote` and this node (either side
    /// may lack the owner).
    pub fn differing_owners(&self, remote: &ScopeDigest) -> Vec<String> {
        let local = self.digest(&remote.scope);
        let mine: BTreeMap<&str, &OwnerDigest> =
            local.owners.iter().map(|d| (d.owner.as_str(), d)).collect();
        let theirs: BTreeMap<&str, &OwnerDigest> = remote
            .owners
            .iter()
            .map(|d| (d.owner.as_str(), d))
            .collect();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for (o, d) in &theirs {
            if mine.get(o) != Some(d) {
                out.insert((*o).to_owned());
            }
        }
        for o in mine.keys() {
            if !theirs.contains_key(o) {
                out.insert((*o).to_owned());
            }
        }
        out.into_iter().collect()
    }

    /// This node's copy of `owner`'s entries in `scope`, if any.
    pub fn group(&self, scope: &Scope, owner: &str) -> Option<Group> {
        let m = self.scopes.get(scope)?.get(owner)?;
        if m.is_empty() {
            return None;
        }
        Some(Group {
            scope: scope.clone(),
            owner: owner.to_owned(),
            entries: m.iter().map(|(k, e)| e.to_wire(k)).collect(),
        })
    }

    /// Membership declared `owner` down: its entries become unavailable.
    pub fn mark_down(&mut self, now: Instant, owner: &str) {
        if owner == self.local || self.down.contains_key(owner) {
            return;
        }
        self.down.insert(
            owner.to_owned(),
            Down {
                since: now,
                reaped: false,
            },
        );
        self.touch_owner(owner);
    }

    /// `owner` is alive again: its entries are available again.
    pub fn mark_up(&mut self, owner: &str) {
        if self.down.remove(owner).is_some() {
            self.touch_owner(owner);
        }
    }

    /// Is `owner` currently considered down?
    pub fn is_down(&self, owner: &str) -> bool {
        self.down.contains_key(owner)
    }

    fn touch_owner(&mut self, owner: &str) {
        let scopes: Vec<Scope> = self
            .scopes
            .iter()
            .filter(|(_, o)| o.get(owner).is_some_and(|m| !m.is_empty()))
            .map(|(s, _)| s.clone())
            .collect();
        self.version += 1;
        self.changed.extend(scopes);
    }

    /// Reap tombstones and entries of owners down longer than `reap_after`.
    pub fn tick(&mut self, now: Instant) {
        let reap = self.reap_after;
        let mut touched = BTreeSet::new();
        for (scope, owners) in &mut self.scopes {
            for m in owners.values_mut() {
                let before = m.len();
                m.retain(|_, e| !(e.deleted && now.saturating_duration_since(e.since) >= reap));
                if m.len() != before {
                    touched.insert(scope.clone());
                }
            }
            owners.retain(|_, m| !m.is_empty());
        }
        for (owner, d) in &mut self.down {
            if !d.reaped && now.saturating_duration_since(d.since) >= reap {
                d.reaped = true;
                for (scope, owners) in &mut self.scopes {
                    if owners.remove(owner).is_some() {
                        touched.insert(scope.clone());
                    }
                }
            }
        }
        if !touched.is_empty() {
            self.version += 1;
            self.changed.extend(touched);
        }
    }

    /// Entries of `net` that consumers should use: live, enabled, owner up.
    pub fn available_endpoints<'a>(
        &'a self,
        net: &str,
    ) -> impl Iterator<Item = &'a EndpointRecord> + 'a {
        self.scopes
            .get(&Scope::Endpoints(net.to_owned()))
            .into_iter()
            .flat_map(|owners| owners.iter())
            .filter(|(o, _)| !self.down.contains_key(*o))
            .flat_map(|(_, m)| m.values())
            .filter(|e| !e.deleted)
            .filter_map(|e| e.record.as_ref())
            .filter(|r| !r.disabled)
    }

    /// Every network that has an endpoint table or a member.
    pub fn networks(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (s, owners) in &self.scopes {
            match s {
                Scope::Endpoints(n) => {
                    out.insert(n.clone());
                }
                Scope::Networks => {
                    for m in owners.values() {
                        out.extend(m.iter().filter(|(_, e)| !e.deleted).map(|(k, _)| k.clone()));
                    }
                }
            }
        }
        out
    }

    /// Networks this node joined.
    pub fn local_networks(&self) -> Vec<String> {
        self.local_keys(&Scope::Networks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn rec(task: &str, node: &str) -> EndpointRecord {
        EndpointRecord {
            task_id: task.into(),
            task_name: format!("web.1.{task}"),
            service_name: "web".into(),
            service_id: "s1".into(),
            vip: None,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: [2, 0, 0, 0, 0, 1],
            node_id: node.into(),
            node_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: vec![],
            aliases: vec![],
            dnsrr: false,
            disabled: false,
        }
    }

    fn net() -> Scope {
        Scope::Endpoints("n".into())
    }

    #[test]
    fn higher_clock_wins_and_lamport_merges() {
        let t0 = Instant::now();
        let mut a = Tables::new("a", Duration::from_secs(60));
        let mut b = Tables::new("b", Duration::from_secs(60));
        let g1 = a.local_put(t0, net(), "t1", Some(rec("t1", "a")));
        let g2 = a.local_delete(t0, net(), "t1").unwrap();
        // Out of order: the tombstone first, then the older write.
        b.apply(t0, &g2);
        assert_eq!(b.apply(t0, &g1).stored, 0);
        assert_eq!(b.available_endpoints("n").count(), 0);
        assert!(b.clock() >= 2);
        assert_eq!(b.digest(&net()), a.digest(&net()));
    }

    #[test]
    fn owner_refutes_stale_copies() {
        let t0 = Instant::now();
        let mut a = Tables::new("a", Duration::from_secs(1));
        let live = a.local_put(t0, net(), "t1", Some(rec("t1", "a")));
        a.local_delete(t0, net(), "t1").unwrap();
        a.tick(t0 + Duration::from_secs(2));
        assert!(a.group(&net(), "a").is_none(), "tombstone reaped");
        let out = a.apply(t0, &live);
        assert_eq!(out.refuted.len(), 1);
        let t = &out.refuted[0].entries[0];
        assert!(t.deleted && t.clock > live.entries[0].clock);
        // A restarted owner that still has the task re-asserts it above the old clock.
        let mut fresh = Tables::new("a", Duration::from_secs(60));
        fresh.local_put(t0, net(), "t1", Some(rec("t1", "a")));
        let mut old = live.clone();
        old.entries[0].clock = 50;
        let out = fresh.apply(t0, &old);
        assert!(out.refuted[0].entries[0].clock > 50 && !out.refuted[0].entries[0].deleted);
    }

    #[test]
    fn down_owner_unavailable_then_reaped() {
        let t0 = Instant::now();
        let mut a = Tables::new("a", Duration::from_secs(60));
        let mut b = Tables::new("b", Duration::from_secs(60));
        b.apply(t0, &a.local_put(t0, net(), "t1", Some(rec("t1", "a"))));
        assert_eq!(b.available_endpoints("n").count(), 1);
        b.mark_down(t0, "a");
        assert_eq!(b.available_endpoints("n").count(), 0);
        b.mark_up("a");
        assert_eq!(b.available_endpoints("n").count(), 1);
        b.mark_down(t0, "a");
        b.tick(t0 + Duration::from_secs(61));
        assert!(b.group(&net(), "a").is_none());
        // While still down, copies from others are not taken back.
        let g = a.group(&net(), "a").unwrap();
        assert_eq!(b.apply(t0, &g).stored, 0);
        b.mark_up("a");
        assert_eq!(b.apply(t0, &g).stored, 1);
    }

    #[test]
    fn digests_find_differences() {
        let t0 = Instant::now();
        let mut a = Tables::new("a", Duration::from_secs(60));
        let mut b = Tables::new("b", Duration::from_secs(60));
        a.local_put(t0, net(), "t1", Some(rec("t1", "a")));
        b.local_put(t0, net(), "t2", Some(rec("t2", "b")));
        assert_eq!(
            a.differing_owners(&b.digest(&net())),
            vec!["a".to_string(), "b".to_string()]
        );
        b.apply(t0, &a.group(&net(), "a").unwrap());
        assert_eq!(a.differing_owners(&b.digest(&net())), vec!["b".to_string()]);
        let v = b.version();
        assert!(b.set_disabled(t0, "n", "t2", true).is_some());
        assert!(b.version() > v);
        assert_eq!(b.available_endpoints("n").count(), 1);
    }
}
