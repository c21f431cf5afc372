//! The connection table: one entry per balanced flow, found from either
//! direction, with light TCP state tracking and per-state timeouts.
//!
//! An entry holds the flow as the client sent it (client -> VIP), the backend
//! chosen for it, and so the NAT mapping both ways: packets matching the
//! *original* key are DNATed to the backend, packets matching the *reply* key
//! (backend -> client) get the VIP back as source.
//!
//! Time is a [`Duration`] since any epoch the caller likes, passed in; nothing
//! here reads a clock.
//!
//! Expiry. Lookups are O(1): a `HashMap` from either key to a slot of a slab
//! (`std`'s keyed hasher, since tasks choose the 5-tuples and could otherwise
//! aim collisions at it). A packet only moves its entry's deadline, in O(1).
//! Reaping uses a min-heap of *armed* deadlines: each entry has at most one
//! armed timer that counts; when it fires, an entry that was refreshed since is
//! re-armed at its new deadline, and only a dead one is removed. So each entry
//! costs O(log n) once per timeout period rather than per packet. A deadline
//! that moves *earlier* (a FIN or RST after hours of ESTABLISHED) arms a new
//! timer, so closed flows leave within their short timeout. No timer is armed
//! more than [`REARM_HORIZON`] ahead (an idle ESTABLISHED flow is re-armed
//! every minute instead of once at 5 days), so the stale timers that removed
//! or shortened entries leave behind are gone within a minute and the heap
//! stays near the number of entries. Lookups also treat
//! an entry past its deadline as gone, so correctness never waits for a sweep:
//! [`Conntrack::expire`] only frees memory, and runs by itself when the table
//! is full.
//!
//! TCP tracking is deliberately light (no sequence-window checks, unlike
//! Linux's): SYN, SYN-ACK, ESTABLISHED, FIN_WAIT (one side closed), TIME_WAIT
//! (both closed), CLOSE (RST). Timeouts default to Linux's nf_conntrack values.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::lb::flow::{FlowKey, Proto, TcpFlags};

/// How far ahead a reaping timer is ever armed (see the module docs).
pub const REARM_HORIZON: Duration = Duration::from_secs(60);

/// Timeouts and size of the connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Idle timeout of an established TCP flow. Default 5 days, Linux's
    /// `nf_conntrack_tcp_timeout_established` (IPVS, which Docker uses, drops
    /// idle flows after 900 s, a well-known source of broken long-lived
    /// connections; we do not copy that).
    pub tcp_established_timeout: Duration,
    /// SYN_SENT, SYN_RECV, FIN_WAIT and TIME_WAIT. Default 120 s, Linux's
    /// `nf_conntrack_tcp_timeout_{syn_sent,fin_wait,time_wait}` (its SYN_RECV is 60 s).
    pub tcp_transitory_timeout: Duration,
    /// After an RST. Default 10 s, Linux's `nf_conntrack_tcp_timeout_close`.
    pub tcp_close_timeout: Duration,
    /// UDP before any reply. Default 30 s, Linux's `nf_conntrack_udp_timeout`.
    pub udp_timeout: Duration,
    /// UDP once the backend replied. Default 120 s, Linux's
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp_stream_timeout: Duration,
    /// Most flows held; new flows beyond it are refused. Default 65536
    /// (about 10 MiB).
    pub max_entries: usize,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            tcp_established_timeout: Duration::from_secs(5 * 24 * 3600),
            tcp_transitory_timeout: Duration::from_secs(120),
            tcp_close_timeout: Duration::from_secs(10),
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
            max_entries: 65536,
        }
    }
}

/// A refused configuration, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A timeout of zero would expire every flow at once.
    #[error("conntrack {0} must be above zero")]
    ZeroTimeout(&'static str),
    /// A table that can hold nothing.
    #[error("conntrack max_entries must be at least 1")]
    ZeroEntries,
}

impl ConntrackConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("tcp_established_timeout", self.tcp_established_timeout),
            ("tcp_transitory_timeout", self.tcp_transitory_timeout),
            ("tcp_close_timeout", self.tcp_close_timeout),
            ("udp_timeout", self.udp_timeout),
            ("udp_stream_timeout", self.udp_stream_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        if self.max_entries == 0 {
            return Err(ConfigError::ZeroEntries);
        }
        Ok(())
    }
}

/// A refused insertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConntrackError {
    /// The table holds `max_entries` live flows.
    #[error("connection table full ({0} flows); raise max_entries or shorten timeouts")]
    Full(usize),
    /// The flow, or its reply direction, is already tracked: two clients'
    /// flows would map to the same backend 5-tuple (for instance one client
    /// port to two VIP ports with the same target port). Without source port
    /// rewriting the replies could not be told apart, so the new flow is refused.
    #[error("flow {0} clashes with a tracked flow")]
    Clash(FlowKey),
}

/// The TCP state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The client's SYN was seen.
    SynSent,
    /// The backend's SYN-ACK was seen.
    SynRecv,
    /// The handshake completed (or the flow was picked up mid-stream).
    Established,
    /// One side sent FIN.
    FinWait,
    /// Both sides sent FIN.
    TimeWait,
    /// An RST was seen.
    Close,
}

/// The state of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// A TCP flow.
    Tcp(TcpState),
    /// A UDP flow the backend has not answered yet.
    UdpUnreplied,
    /// A UDP flow with traffic both ways.
    UdpStream,
}

/// Which way a packet travels relative to the tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to VIP (before DNAT).
    Original,
    /// Backend to client (before reverse NAT).
    Reply,
}

/// What the tracker needs to know about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A TCP segment with these flags.
    Tcp(TcpFlags),
    /// A UDP datagram.
    Udp,
}

/// One tracked flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The flow as the client sent it: client -> VIP:port.
    pub original: FlowKey,
    /// The backend the flow was given.
    pub backend: SocketAddrV4,
    /// Its state.
    pub state: FlowState,
    deadline: Duration,
    /// The deadline of the one heap timer that counts for this entry.
    armed: Duration,
    fin_original: bool,
    fin_reply: bool,
}

impl Entry {
    /// The VIP and port the client addressed.
    pub fn vip(&self) -> SocketAddrV4 {
        self.original.dst
    }

    /// The client's address and port.
    pub fn client(&self) -> SocketAddrV4 {
        self.original.src
    }

    /// True when the client is its own backend: the flow is also
    /// source-NATed to the VIP (see `lb`'s module docs).
    pub fn is_hairpin(&self) -> bool {
        self.backend.ip() == self.original.src.ip()
    }

    /// The key of replies: backend -> client, or backend -> `VIP:client
    /// port` for a hairpin flow.
    pub fn reply_key(&self) -> FlowKey {
        reply_key(&self.original, self.backend)
    }

    /// When the flow expires unless another packet comes.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// The connection table.
#[derive(Debug)]
pub struct Conntrack {
    config: ConntrackConfig,
    index: HashMap<FlowKey, (u32, Direction)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline, slot, generation), earliest first.
    timers: BinaryHeap<Reverse<(Duration, u32, u32)>>,
    live: usize,
}

impl Conntrack {
    /// An empty table.
    pub fn new(config: ConntrackConfig) -> Result<Conntrack, ConfigError> {
        config.validate()?;
        Ok(Conntrack {
            config,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            live: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConntrackConfig {
        &self.config
    }

    /// Entries held, including ones past their deadline not yet reaped.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The live entry for a packet with key `key`, and which way it travels.
    pub fn get(&self, now: Duration, key: &FlowKey) -> Option<(Direction, &Entry)> {
        let &(slot, dir) = self.index.get(key)?;
        let e = self.slots[slot as usize].entry.as_ref()?;
        (e.deadline > now).then_some((dir, e))
    }

    /// Records a packet of a tracked flow: advances the state and refreshes the
    /// deadline. `None` if the flow is not tracked (or has expired; it is then
    /// removed).
    pub fn observe(
        &mut self,
        now: Duration,
        key: &FlowKey,
        seen: Seen,
    ) -> Option<(Direction, &Entry)> {
        let &(slot, dir) = self.index.get(key)?;
        let expired = self.slots[slot as usize]
            .entry
            .as_ref()
            .is_none_or(|e| e.deadline <= now);
        if expired {
            self.remove_slot(slot);
            return None;
        }
        let config = self.config;
        let s = &mut self.slots[slot as usize];
        let e = s.entry.as_mut()?;
        advance(e, dir, seen);
        e.deadline = now + timeout(&config, e.state);
        if e.deadline < e.armed {
            e.armed = e.deadline;
            self.timers.push(Reverse((e.armed, slot, s.generation)));
        }
        let e = self.slots[slot as usize].entry.as_ref()?;
        Some((dir, e))
    }

    /// Tracks a new flow `original` (client -> VIP) given to `backend`; `seen`
    /// is its first packet. A TCP flow whose first packet is not a SYN is
    /// picked up as ESTABLISHED (a flow that outlived this node's table, or
    /// moved here from another node, keeps going: Maglev sends it to the same
    /// backend).
    pub fn insert(
        &mut self,
        now: Duration,
        original: FlowKey,
        backend: SocketAddrV4,
        seen: Seen,
    ) -> Result<&Entry, ConntrackError> {
        let reply = reply_key(&original, backend);
        for k in [&original, &reply] {
            if let Some(&(slot, _)) = self.index.get(k) {
                let live = self.slots[slot as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.deadline > now);
                if live {
                    return Err(ConntrackError::Clash(original));
                }
                self.remove_slot(slot);
            }
        }
        if self.live >= self.config.max_entries {
            self.expire(now);
            if self.live >= self.config.max_entries {
                return Err(ConntrackError::Full(self.live));
            }
        }
        let state = match (original.proto, seen) {
            (Proto::Tcp, Seen::Tcp(f)) if f.rst() => FlowState::Tcp(TcpState::Close),
            (Proto::Tcp, Seen::Tcp(f)) if f.syn() && !f.ack() => FlowState::Tcp(TcpState::SynSent),
            (Proto::Tcp, _) => FlowState::Tcp(TcpState::Established),
            (Proto::Udp, _) => FlowState::UdpUnreplied,
        };
        let deadline = now + timeout(&self.config, state);
        let armed = deadline.min(now + REARM_HORIZON);
        let entry = Entry {
            original,
            backend,
            state,
            deadline,
            armed,
            fin_original: false,
            fin_reply: false,
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.entry = Some(entry);
        self.timers.push(Reverse((armed, slot, s.generation)));
        self.index.insert(original, (slot, Direction::Original));
        self.index.insert(reply, (slot, Direction::Reply));
        self.live += 1;
        let e = self.slots[slot as usize].entry.as_ref();
        Ok(e.expect("just inserted"))
    }

    /// Removes the flow that `key` (either direction) belongs to.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry> {
        let &(slot, _) = self.index.get(key)?;
        self.remove_slot(slot)
    }

    /// Removes every flow for which `f` is false.
    pub fn retain(&mut self, mut f: impl FnMut(&Entry) -> bool) {
        for slot in 0..self.slots.len() as u32 {
            if self.slots[slot as usize]
                .entry
                .as_ref()
                .is_some_and(|e| !f(e))
            {
                self.remove_slot(slot);
            }
        }
    }

    /// Every entry held.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|s| s.entry.as_ref())
    }

    /// Removes the flows whose deadline is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Duration) -> usize {
        let mut reaped = 0;
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let s = &mut self.slots[slot as usize];
            let Some(e) = s.entry.as_mut() else { continue };
            if s.generation != generation || e.armed != at {
                continue; // A stale timer: removed, reused or re-armed since.
            }
            if e.deadline <= now {
                self.remove_slot(slot);
                reaped += 1;
            } else {
                e.armed = e.deadline.min(now + REARM_HORIZON);
                self.timers.push(Reverse((e.armed, slot, generation)));
            }
        }
        reaped
    }

    fn remove_slot(&mut self, slot: u32) -> Option<Entry> {
        let s = &mut self.slots[slot as usize];
        let e = s.entry.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        self.index.remove(&e.original);
        self.index.remove(&e.reply_key());
        Some(e)
    }
}

fn reply_key(original: &FlowKey, backend: SocketAddrV4) -> FlowKey {
    let dst = if backend.ip() == original.src.ip() {
        SocketAddrV4::new(*original.dst.ip(), original.src.port())
    } else {
        original.src
    };
    FlowKey {
        proto: original.proto,
        src: backend,
        dst,
    }
}

fn timeout(c: &ConntrackConfig, state: FlowState) -> Duration {
    match state {
        FlowState::Tcp(TcpState::Established) => c.tcp_established_timeout,
        FlowState::Tcp(TcpState::Close) => c.tcp_close_timeout,
        FlowState::Tcp(_) => c.tcp_transitory_timeout,
        FlowState::UdpUnreplied => c.udp_timeout,
        FlowState::UdpStream => c.udp_stream_timeout,
    }
}

fn advance(e: &mut Entry, dir: Direction, seen: Seen) {
    use TcpState::*;
    let tcp = match (e.state, seen) {
        (FlowState::UdpUnreplied, Seen::Udp) if dir == Direction::Reply => {
            e.state = FlowState::UdpStream;
            return;
        }
        (FlowState::Tcp(s), Seen::Tcp(f)) => (s, f),
        _ => return,
    };
    let (state, f) = tcp;
    if f.rst() {
        e.state = FlowState::Tcp(Close);
        return;
    }
    if f.fin() {
        match dir {
            Direction::Original => e.fin_original = true,
            Direction::Reply => e.fin_reply = true,
        }
    }
    let next = match (state, dir) {
        (SynSent, Direction::Reply) if f.syn() && f.ack() => SynRecv,
        (SynRecv, Direction::Original) if f.ack() && !f.syn() => Established,
        (SynSent | SynRecv, _) => state,
        (Close, _) => Close,
        _ => state,
    };
    let next = if matches!(next, Established | FinWait | SynRecv) && (e.fin_original || e.fin_reply)
    {
        if e.fin_original && e.fin_reply {
            TimeWait
        } else {
            FinWait
        }
    } else {
        next
    };
    e.state = FlowState::Tcp(next);
}

#[cfg(test)]
mod tests;
