//! Lock-free counters shared by the core and whoever reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an incoming datagram or frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than the seal envelope.
    Truncated,
    /// Unknown envelope version.
    BadVersion,
    /// Sealed with a key id we do not have.
    UnknownKey,
    /// Failed authentication.
    BadTag,
    /// Authentic but not a valid message.
    Malformed,
    /// foca refused the SWIM packet.
    Swim,
    /// A stream-only message on UDP or the reverse.
    UnexpectedMessage,
    /// A TCP frame above the limit.
    FrameTooLarge,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; 8] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::UnknownKey,
        DropReason::BadTag,
        DropReason::Malformed,
        DropReason::Swim,
        DropReason::UnexpectedMessage,
        DropReason::FrameTooLarge,
    ];
}

/// Counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_received: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    drops: [AtomicU64; 8],
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed out for sending (datagrams and frames, sealed).
    pub bytes_sent: u64,
    /// Bytes received (datagrams and frames, sealed).
    pub bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Stream frames sent.
    pub frames_sent: u64,
    /// Stream frames received.
    pub frames_received: u64,
    /// Drops by reason (every reason present, zero or not).
    pub drops: BTreeMap<DropReason, u64>,
}

impl Counters {
    pub(crate) fn sent_datagram(&self, len: usize) {
        self.datagrams_sent.fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(len as u64, Relaxed);
    }
    pub(crate) fn received_datagram(&self, len: usize) {
        self.datagrams_received.fetch_add(1, Relaxed);
        self.bytes_received.fetch_add(len as u64, Relaxed);
    }
    pub(crate) fn sent_frame(&self, len: usize) {
        self.frames_sent.fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(len as u64, Relaxed);
    }
    pub(crate) fn received_frame(&self, len: usize) {
        self.frames_received.fetch_add(1, Relaxed);
        self.bytes_received.fetch_add(len as u64, Relaxed);
    }
    /// Count one drop.
    pub fn dropped(&self, reason: DropReason) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.drops[i].fetch_add(1, Relaxed);
    }
    /// Read all counters.
    pub fn snapshot(&self) -> Stats {
        Stats {
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            datagrams_sent: self.datagrams_sent.load(Relaxed),
            datagrams_received: self.datagrams_received.load(Relaxed),
            frames_sent: self.frames_sent.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
            drops: DropReason::ALL
                .iter()
                .zip(&self.drops)
                .map(|(r, c)| (*r, c.load(Relaxed)))
                .collect(),
        }
    }
}
