//! Typed, validated configuration of the core and its timing defaults.

use foca::{Config, PeriodicParams};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;
use thiserror::Error;

use crate::seal::OVERHEAD;

/// Largest sealed datagram we send (fits a 1500-byte MTU with IP/UDP headers
/// and an overlay's own encapsulation to spare).
pub const MAX_DATAGRAM: usize = 1400;
/// Largest foca packet: the datagram less the seal and the message header.
pub(crate) const SWIM_MAX: usize = MAX_DATAGRAM - OVERHEAD - 8;

/// Protocol timings. See the crate docs for why these defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// SWIM probe period (default 300 ms).
    pub probe_period: Duration,
    /// Wait for a direct ack before indirect probes (default 150 ms).
    pub probe_rtt: Duration,
    /// Suspect to down (default 1 s).
    pub suspect_to_down_after: Duration,
    /// Anti-entropy push-pull period with one random peer (default 1 s).
    pub sync_interval: Duration,
    /// Tombstones and down owners' entries are dropped after this (default 60 s).
    pub reap_after: Duration,
    /// Announce to seeds that are not alive members this often (default 5 s).
    pub seed_announce_interval: Duration,
    /// Expected cluster size; sets how often SWIM updates are retransmitted.
    pub expected_cluster_size: u32,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down_after: Duration::from_secs(1),
            sync_interval: Duration::from_secs(1),
            reap_after: Duration::from_secs(60),
            seed_announce_interval: Duration::from_secs(5),
            expected_cluster_size: 32,
        }
    }
}

impl Timings {
    /// Refuse settings foca or the tables cannot work with; names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason| Err(ConfigError { field, reason });
        if self.probe_period.is_zero() {
            return fail("probe_period", "must be above zero");
        }
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return fail("probe_rtt", "must be above zero and below probe_period");
        }
        if self.suspect_to_down_after.is_zero() {
            return fail("suspect_to_down_after", "must be above zero");
        }
        if self.sync_interval.is_zero() {
            return fail("sync_interval", "must be above zero");
        }
        if self.seed_announce_interval.is_zero() {
            return fail("seed_announce_interval", "must be above zero");
        }
        Ok(())
    }

    pub(crate) fn foca_config(&self) -> Config {
        let n = NonZeroU32::new(self.expected_cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let mut c = Config::new_lan(n);
        // foca's default (4 * log10(n + 1)) lets a few nodes of a 200-node
        // cluster that formed at once miss some joins until they probe
        // them, up to a minute later; twice that reaches everyone.
        c.max_transmissions = c
            .max_transmissions
            .saturating_mul(std::num::NonZeroU8::MIN.saturating_add(1));
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        c.max_packet_size = NonZeroUsize::new(SWIM_MAX).unwrap_or(NonZeroUsize::MIN);
        c.remove_down_after = Some(Duration::from_secs(600));
        c.notify_down_members = true;
        let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
        c.periodic_announce = Some(PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::MIN,
        });
        // What heals partitions: both sides keep knocking on the members
        // they declared down; the first answer makes them rejoin.
        c.periodic_announce_to_down_members = Some(PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: two,
        });
        // Only sends while there are updates to spread, so a short period
        // costs nothing in steady state and gets a Down to everyone fast.
        c.periodic_gossip = Some(PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::new(3).unwrap_or(two),
        });
        c
    }
}

/// An invalid setting, named.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("gossip config: {field} {reason}")]
pub struct ConfigError {
    /// Field name.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

/// What the core needs to start.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Stable node id (owner name in the tables).
    pub node_id: String,
    /// Address other nodes reach us at (UDP and TCP).
    pub advertise: SocketAddr,
    /// Orders restarts of the same address; take it from a clock or a counter.
    pub generation: u64,
    /// Timings.
    pub timings: Timings,
    /// Seed of every random choice (probe order, sync peers).
    pub rng_seed: u64,
    /// Take AEAD nonces from the OS (true in production, false in simulation).
    pub os_nonces: bool,
}
