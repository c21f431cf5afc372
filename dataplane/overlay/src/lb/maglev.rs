//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! Every node of a Swarm balances traffic to every service VIP on its own, with
//! no coordination per flow. Maglev makes that safe: a node that builds a table
//! from the same backend set gets the *same* table, so a flow moved between
//! nodes, or a node that lost its connection table, still reaches the backend
//! it started on; and when one backend leaves, almost only the flows that were
//! on it move.
//!
//! Determinism across nodes rests on three choices:
//! - the backend key is [`BackendId`], the backend's overlay IPv4 address and
//!   target port packed in a `u64`, which every node knows identically (a
//!   task's address is unique in its network while it lives; a new task that
//!   reuses the address takes over the same slots, which is what we want);
//! - offset and skip come from [`mix64`] with fixed seeds, never from a
//!   per-process random hasher;
//! - the backends are sorted and deduplicated before the table is filled, so
//!   the order in which the control plane lists them does not matter.
//!
//! Weights are not supported: backends are equal, and the caller leaves out
//! draining, dead and zero-weight backends before it builds (see
//! [`crate::lb::Balancer`]).
//!
//! Cost: building is O(M log M) on average (the paper's bound for the
//! population loop); the table holds one `u32` per slot, 256 KiB for the
//! default M = 65537.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::lb::flow::mix64;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
const EMPTY: u32 = u32::MAX;

/// A backend's stable identity: its IPv4 address in the high 32 bits of the
/// low 48, its port in the low 16. Invertible, so the table needs no side map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u64);

impl From<SocketAddrV4> for BackendId {
    fn from(a: SocketAddrV4) -> Self {
        BackendId((u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()))
    }
}

impl BackendId {
    /// The backend's address and port.
    pub fn addr(self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from((self.0 >> 16) as u32), self.0 as u16)
    }

    fn offset_skip(self, m: u64) -> (u64, u64) {
        let offset = mix64(self.0 ^ OFFSET_SEED) % m;
        let skip = mix64(self.0 ^ SKIP_SEED) % (m - 1) + 1;
        (offset, skip)
    }
}

/// A table size that is prime (so every skip visits every slot) and at least 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableSize(u32);

/// A refused table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Maglev table size {0} is not a prime of at least 3; use a prime well above 100 x the largest backend count, such as 65537 or 655373")]
pub struct TableSizeError(pub u32);

impl TableSize {
    /// The paper's small size, and ours by default. Slot shares stay within 1%
    /// of fair up to 1000 backends; a removal moves at most 0.6x the removed
    /// backend's share of other slots up to 100 backends, ~5x at 500-1000
    /// (measured in the tests; see `maglev_figures`).
    pub const DEFAULT: TableSize = TableSize(65537);

    /// A size, if `n` is a prime of at least 3.
    pub fn new(n: u32) -> Result<TableSize, TableSizeError> {
        if n >= 3 && is_prime(n) {
            Ok(TableSize(n))
        } else {
            Err(TableSizeError(n))
        }
    }

    /// The number of slots.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for TableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// A Maglev lookup table: flow hash to backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    /// The backends, sorted and deduplicated; slots index into this.
    backends: Vec<BackendId>,
    /// One backend index per slot; empty when there are no backends.
    slots: Vec<u32>,
}

impl Maglev {
    /// Builds the table for `backends` (any order, duplicates ignored) with
    /// `size` slots. With more backends than slots, the backends that find no
    /// free slot before the table fills get no traffic; keep `size` well above
    /// the backend count.
    pub fn build(backends: &[BackendId], size: TableSize) -> Maglev {
        let mut ids = backends.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let m = u64::from(size.get());
        if ids.is_empty() {
            return Maglev {
                backends: ids,
                slots: Vec::new(),
            };
        }
        // Each backend's permutation is offset + j * skip (mod m); instead of
        // materialising it (n * m entries), keep each backend's next position.
        let (mut next, skips): (Vec<u64>, Vec<u64>) =
            ids.iter().map(|id| id.offset_skip(m)).unzip();
        let mut slots = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for i in 0..ids.len() {
                loop {
                    let c = next[i];
                    next[i] += skips[i];
                    if next[i] >= m {
                        next[i] -= m;
                    }
                    let slot = &mut slots[c as usize];
                    if *slot == EMPTY {
                        *slot = i as u32;
                        filled += 1;
                        if filled == m {
                            break 'fill;
                        }
                        break;
                    }
                }
            }
        }
        Maglev {
            backends: ids,
            slots,
        }
    }

    /// The backend for a flow, or `None` when the table has no backends.
    pub fn lookup(&self, flow_hash: u64) -> Option<BackendId> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = self.slots[(flow_hash % self.slots.len() as u64) as usize];
        self.backends.get(slot as usize).copied()
    }

    /// The backends in the table, sorted.
    pub fn backends(&self) -> &[BackendId] {
        &self.backends
    }

    /// The number of slots (0 when there are no backends).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the table has no backends.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The backend of every slot, in slot order (for tests and diagnostics).
    pub fn slots(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.slots.iter().map(|&i| self.backends[i as usize])
    }

    /// How many slots each backend holds, in [`Maglev::backends`] order.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for &i in &self.slots {
            counts[i as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests;
