//! Shoal's NetworkDB: cluster membership and the replicated endpoint tables
//! that DNS, the data plane and the load balancer consume (Docker Swarm's
//! "gossip on 7946").
//!
//! # Layout
//!
//! Pure code at the bottom, one thin driver on top:
//! - [`seal`]: every datagram and stream frame is AEAD-sealed
//!   (AES-256-GCM, `version | key id | 12-byte random nonce | ciphertext |
//!   tag`, header authenticated). A [`seal::KeyRing`] holds several keys,
//!   seals with one and opens with all, and is replaced at runtime
//!   (`set_keys`) for rotation. Anything that fails to open is a typed
//!   error and a counted [`stats::DropReason`], never a panic.
//! - [`wire`]: the versioned [`wire::Message`] enum and its hand-written,
//!   bounded codec (no panics, no trailing bytes, counts bounded by the
//!   bytes left); TCP frames are `u32`-length-prefixed, at most
//!   [`wire::MAX_FRAME`] (8 MiB).
//! - [`table`]: owner-written entries keyed by `(network, task id)` with a
//!   node-wide Lamport clock, tombstones reaped after `reap_after`, owner
//!   refutation of stale copies, per-owner digests, and a local
//!   "unavailable" mark for owners that membership declared down.
//!   Network membership ("node X is in network N") is itself such a table,
//!   so it converges by the same rules.
//! - [`swim`] and [`core`]: [`core::Gossip`] combines
//!   [foca](https://docs.rs/foca) (SWIM with suspicion, refutation and
//!   renewable identities; no I/O, so it fits the pure-core split) with the
//!   tables. It takes `now` and bytes and returns datagrams, push-pull
//!   exchanges to open and events; randomness comes from a seeded RNG.
//! - [`driver`]: [`driver::GossipHandle`], a tokio task around the core
//!   with UDP and TCP on one address (7946 in production).
//! - [`sim`]: N cores over a virtual network (clock, latency, loss,
//!   partitions), used by the tests and `examples/sim.rs`.
//!
//! # Replication
//!
//! A local write (publish, withdraw, disable, join/leave a network) is sent
//! at once, sealed, to every other member of that network (datagrams under
//! 1400 bytes; an entry too large for one goes over TCP). Nodes joining a
//! network pull it with a push-pull exchange, and members hand their own
//! entries to a node as soon as they learn it joined. Loss, partitions and
//! restarts are repaired by anti-entropy: every `sync_interval` each node
//! opens a TCP push-pull with one random peer (alternating between a
//! member of one of its networks and any member). The initiator sends
//! per-owner digests (count, max clock, hash of `(key, clock, deleted)`);
//! the responder returns the entries of owners that differ and names the
//! owners it wants; the initiator pushes those. Any node that missed
//! updates therefore converges, which rules out Docker's "service name
//! resolves on some nodes only" (moby #47728, #33721). Owner refutation
//! makes sure a stale copy that comes back after its tombstone was reaped
//! (or a node's pre-restart state) is overwritten with a newer tombstone.
//!
//! # Timing defaults ([`core::Timings`])
//!
//! - probe period 300 ms, probe RTT 150 ms (then 3 indirect probes),
//!   suspicion 1 s: a dead node is suspected about one probe period after
//!   its first missed probe and declared down 1 s later; the down update is
//!   piggybacked and gossiped every 200 ms to 3 members while updates are
//!   pending, so every node knows within 3 s. The sim measures 1.4 to
//!   2.0 s for 5 nodes over 40 seeds and 1.8 to 2.4 s for 50 (see
//!   `tests/sim.rs`). With a 500 ms period 2 of 40 seeds took over 3 s: in
//!   a small cluster each node probes a given member only every N-1
//!   periods, so the first probe of a dead node can come late.
//! - SWIM updates are retransmitted twice foca's default (8 log10(n+1)
//!   times): with the default, a few nodes of a 200-node cluster formed at
//!   once missed some joins until their own probes found them.
//! - `sync_interval` 1 s, `reap_after` 60 s (tombstones and the entries of
//!   nodes down that long), seeds re-announced every 5 s while they are not
//!   alive members. Members declared down are re-announced every 2 s
//!   (foca's `periodic_announce_to_down_members`), and a node that learns
//!   it was declared down renews its identity (generation + 1) and rejoins:
//!   together these heal partitions.
//! - These suit LANs of up to a few hundred nodes. For larger clusters
//!   raise `suspect_to_down_after` (false positives grow with size).
//!
//! # What is weak
//!
//! - A node cut off for longer than the suspicion time minus about one
//!   probe period (700 ms by default) can be declared down even though it
//!   comes back before the suspicion expires: foca spreads the suspicion
//!   to the others but not to the suspect, and its retransmissions can be
//!   used up while the suspect cannot hear them. The node then rejoins
//!   with a renewed identity and its endpoints come back, but they flap.
//! - Anti-entropy digests list every owner of a scope, so a push-pull
//!   request grows with the number of nodes (about 30 bytes per owner per
//!   scope); a two-level digest would make it constant.
//! - A push-pull reply larger than [`wire::MAX_FRAME`] is not sent.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod core;
pub mod driver;
pub mod output;
pub mod record;
pub mod seal;
pub mod sim;
pub mod stats;
pub mod swim;
pub mod table;
pub mod wire;

pub use crate::core::{Event, Gossip, Member, MemberState, TableView, Timings};
pub use crate::driver::{GossipConfig, GossipError, GossipHandle};
pub use crate::record::{EndpointRecord, PublishedPort};
pub use crate::stats::{DropReason, Stats};
