//! Why a frame was dropped, and lock-free counters of each reason.
//!
//! A dropped frame is never a log line: it is a [`DropReason`] that bumps one
//! counter in [`DropCounters`], which the daemon exports on its metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why the data plane dropped a frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The stable snake_case name used in metrics and the CLI.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A frame too short for its headers, or with an impossible length field.
    Malformed => "malformed",
    /// A VXLAN header without the I (valid VNI) flag, or with unknown flags.
    BadVxlanFlags => "bad_vxlan_flags",
    /// A VXLAN frame for a VNI this node does not serve.
    UnknownVni => "unknown_vni",
    /// A plain VXLAN frame arriving for a VNI that requires encryption.
    PlainOnEncrypted => "plain_on_encrypted",
    /// A sealed frame arriving for a VNI configured as plain.
    SealedOnPlain => "sealed_on_plain",
    /// A sealed frame naming a key id that is not in the key ring.
    UnknownKey => "unknown_key",
    /// A sealed frame from a sender session older than the ones in use.
    StaleSession => "stale_session",
    /// A sealed frame whose counter was already seen or is behind the window.
    Replay => "replay",
    /// A sealed frame whose authentication tag did not verify.
    AuthFailure => "auth_failure",
    /// A frame whose destination MAC or IP is in no forwarding table.
    UnknownDestination => "unknown_destination",
    /// A frame from a local endpoint whose source MAC is not the endpoint's own.
    SpoofedSource => "spoofed_source",
    /// A frame larger than the endpoint MTU allows.
    Oversize => "oversize",
    /// A broadcast or multicast frame that is not an ARP request (no flooding).
    Flood => "flood",
    /// An ARP request for an IP address no table knows.
    ArpUnknownTarget => "arp_unknown_target",
    /// A frame from an underlay address that is not a known peer of the network.
    UnknownPeer => "unknown_peer",
    /// The kernel refused to send or deliver the frame (buffer full, device gone).
    IoError => "io_error",
    /// A non-first IPv4 fragment to a service VIP: it carries no ports, so it
    /// cannot be matched to a flow (the balancer does not reassemble).
    VipFragment => "vip_fragment",
    /// A new flow to a VIP refused because the connection table is full.
    ConntrackFull => "conntrack_full",
    /// A new flow to a VIP whose reply 5-tuple is already tracked for another
    /// flow (one client port to two VIP ports with the same target port).
    ConntrackClash => "conntrack_clash",
}

/// One lock-free counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl DropCounters {
    /// Counts one frame dropped for `reason`.
    pub fn record(&self, reason: DropReason) {
        self.add(reason, 1);
    }

    /// Counts `n` frames dropped for `reason`.
    pub fn add(&self, reason: DropReason, n: u64) {
        self.counts[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The number of frames dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`DropReason::ALL`] order.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counters_independent() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());

        let c = DropCounters::default();
        c.record(DropReason::Replay);
        c.add(DropReason::AuthFailure, 3);
        assert_eq!(c.get(DropReason::Replay), 1);
        assert_eq!(c.get(DropReason::AuthFailure), 3);
        assert_eq!(c.get(DropReason::Malformed), 0);
        assert_eq!(c.snapshot().len(), DropReason::ALL.len());
    }
}
