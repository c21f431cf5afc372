//! Typed, validated Raft settings. Parsing them from files or flags is the daemon's job.

use std::time::Duration;

use openraft::SnapshotPolicy;

/// Settings of one manager's Raft node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusConfig {
    /// Name of the cluster, only used in logs.
    pub cluster_name: String,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout. Must exceed `heartbeat_interval`.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout. Must exceed `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// Build a snapshot (and allow purging the log) after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// How many already-snapshotted entries to keep in the log, so slightly lagging followers
    /// catch up from the log rather than from a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// How long `write`, `linearizable_read` and membership changes wait for the cluster before
    /// giving up with a timeout (the outcome of a write is then unknown).
    pub request_timeout: Duration,
}

impl Default for ConsensusConfig {
    /// Heartbeat 100 ms and election 0.5–1 s (etcd's defaults). Openraft 0.9 lets a follower
    /// start an election only after the leader's lease (the election maximum) plus its own
    /// randomized timeout, so a dead leader is replaced 1.5–2 s after its last heartbeat,
    /// inside the 3 s the swarm promises, while a busy host that stalls a heartbeat or two
    /// starts no spurious election. A snapshot every 5000 entries keeping 1000 behind it.
    fn default() -> Self {
        ConsensusConfig {
            cluster_name: "shoal".to_owned(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`ConsensusConfig`] field was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration or count that must be positive is zero.
    #[error("consensus config: `{field}` must be greater than zero")]
    Zero {
        /// The refused field.
        field: &'static str,
    },
    /// Two fields are in the wrong order.
    #[error("consensus config: `{smaller}` ({smaller_ms} ms) must be less than `{larger}` ({larger_ms} ms)")]
    Order {
        /// The field that must be the smaller one.
        smaller: &'static str,
        /// Its value in milliseconds.
        smaller_ms: u128,
        /// The field that must be the larger one.
        larger: &'static str,
        /// Its value in milliseconds.
        larger_ms: u128,
    },
    /// Openraft refused the translated config.
    #[error("consensus config refused by openraft: {0}")]
    Openraft(String),
}

impl ConsensusConfig {
    /// Checks the fields and translates them into openraft's config.
    pub fn to_openraft(&self) -> Result<openraft::Config, ConfigError> {
        let nonzero = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("election_timeout_min", self.election_timeout_min),
            ("election_timeout_max", self.election_timeout_max),
            ("request_timeout", self.request_timeout),
        ];
        for (field, value) in nonzero {
            if value.as_millis() == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.snapshot_logs_since_last == 0 {
            return Err(ConfigError::Zero {
                field: "snapshot_logs_since_last",
            });
        }
        let ordered = [
            (
                "heartbeat_interval",
                self.heartbeat_interval,
                "election_timeout_min",
                self.election_timeout_min,
            ),
            (
                "election_timeout_min",
                self.election_timeout_min,
                "election_timeout_max",
                self.election_timeout_max,
            ),
        ];
        for (smaller, a, larger, b) in ordered {
            if a >= b {
                return Err(ConfigError::Order {
                    smaller,
                    smaller_ms: a.as_millis(),
                    larger,
                    larger_ms: b.as_millis(),
                });
            }
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: ms(self.heartbeat_interval),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Openraft(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let c = ConsensusConfig::default().to_openraft().unwrap();
        assert_eq!(c.heartbeat_interval, 100);
        // Lease (the election maximum) plus the largest timeout stays inside 3 s.
        assert!(c.election_timeout_max * 2 < 3000);
        assert_eq!(c.snapshot_policy, SnapshotPolicy::LogsSinceLast(5000));
    }

    #[test]
    fn election_must_exceed_heartbeat() {
        let c = ConsensusConfig {
            heartbeat_interval: Duration::from_millis(500),
            election_timeout_min: Duration::from_millis(300),
            ..Default::default()
        };
        let err = c.to_openraft().unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Order {
                smaller: "heartbeat_interval",
                ..
            }
        ));
        assert!(err.to_string().contains("election_timeout_min"));
    }

    #[test]
    fn zero_snapshot_threshold_is_refused() {
        let c = ConsensusConfig {
            snapshot_logs_since_last: 0,
            ..Default::default()
        };
        assert_eq!(
            c.to_openraft().unwrap_err(),
            ConfigError::Zero {
                field: "snapshot_logs_since_last"
            }
        );
    }
}
