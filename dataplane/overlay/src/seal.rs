//! Sealed VXLAN frames: the encrypted overlay.
//!
//! ```text
//! outer IPv4 | UDP 4789 | VXLAN (I|E flags, key id, VNI)   8 bytes  \
//!                       | session: time u32, lane u8, rand u24 8     } AAD
//!                       | counter u64                          8     /
//!                       | ciphertext of the inner Ethernet frame
//!                       | tag                                  16
//! ```
//!
//! The network key is never used directly. Each sender session derives its own
//! traffic key with HKDF-SHA256 from the network key, the sender's underlay
//! address and the session (its start time and 32 random bits). Keys are thus
//! unique per (network key, sender, session), so the per-session counter may
//! start at zero and the nonce (`0u32 || counter`) never repeats, across
//! restarts too: a restarted sender starts a new session. The counter doubles
//! as the anti-replay sequence number ([`crate::replay`]).
//!
//! A sender runs one session per forwarding lane (worker thread), each with its
//! own counter, so lanes never share a sequence that the underlay could
//! reorder. A receiver keeps, per (sender, key id, lane), the current and
//! previous sessions, each with its own window, so a sender's rekey loses no
//! frame in flight. A frame of an unknown session becomes current only if it
//! authenticates and its session started no earlier than the current one;
//! older sessions are stale. See docs/WIRE.md for the whole set of rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::counters::DropReason;
use crate::keys::{Cipher, KeyRing, NetworkKey};
use crate::replay::ReplayWindow;
use crate::vxlan::{Vni, VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

/// Session (8) and counter (8) after the VXLAN header.
pub const SEAL_HEADER_LEN: usize = 16;
/// The AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed frame adds to a plain VXLAN frame: the endpoint MTU of an
/// encrypted network on a 1500-byte underlay is 1450 - 32 = 1418.
pub const SEAL_OVERHEAD: usize = SEAL_HEADER_LEN + TAG_LEN;
/// Offset of the ciphertext in a sealed datagram.
pub const SEALED_PAYLOAD_AT: usize = VXLAN_HEADER_LEN + SEAL_HEADER_LEN;
/// A session never seals with a counter this high (it rekeys long before).
pub const REJECT_AFTER: u64 = 1 << 60;
/// How many (sender, key, lane) streams an [`Opener`] tracks before
/// forgetting the least recent.
pub const MAX_SENDERS: usize = 16384;

const HKDF_SALT: &[u8] = b"shoal-overlay-v1";

/// When a sender starts a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// After this many frames.
    pub after_packets: u64,
    /// After this long.
    pub after: Duration,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        RekeyPolicy {
            after_packets: 1 << 30,
            after: Duration::from_secs(120),
        }
    }
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The output buffer cannot hold the sealed frame.
    #[error("output buffer of {have} bytes is too small for a sealed frame of {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The session's counter is exhausted; the sender must rekey.
    #[error("the session counter is exhausted; rekey before sealing again")]
    CounterExhausted,
}

fn algorithm(cipher: Cipher) -> &'static aead::Algorithm {
    match cipher {
        Cipher::Aes256Gcm => &aead::AES_256_GCM,
        Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    }
}

/// Derives the traffic key of one sender session.
fn traffic_key(cipher: Cipher, key: &NetworkKey, sender: IpAddr, session: &[u8; 8]) -> LessSafeKey {
    let alg = algorithm(cipher);
    let addr = match sender {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(key.secret());
    let info = [addr.as_slice(), session.as_slice()];
    let okm = prk
        .expand(&info, alg)
        .expect("HKDF-SHA256 can expand 32 bytes");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn session_time(session: &[u8; 8]) -> u32 {
    u32::from_be_bytes([session[0], session[1], session[2], session[3]])
}

/// The sender's lane: byte 4 of the session.
fn session_lane(session: &[u8; 8]) -> u8 {
    session[4]
}

struct TxSession {
    key_id: u8,
    session: [u8; 8],
    key: LessSafeKey,
    started: Duration,
}

/// The sending side of an encrypted network on one node.
///
/// Sealing takes `&self` (the counter is atomic), so several threads can seal
/// at once; rekeying and key changes take `&mut self`.
pub struct Sealer {
    cipher: Cipher,
    local: IpAddr,
    tx_key: NetworkKey,
    policy: RekeyPolicy,
    lane: u8,
    session: TxSession,
    counter: AtomicU64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("cipher", &self.cipher)
            .field("local", &self.local)
            .field("key_id", &self.session.key_id)
            .field("lane", &self.lane)
            .field("counter", &self.counter.load(Ordering::Relaxed))
            .finish()
    }
}

impl Sealer {
    /// A sealer for `local` (this node's underlay address) sending with the
    /// ring's tx key; `now` is wall-clock time since the Unix epoch.
    pub fn new(
        cipher: Cipher,
        local: IpAddr,
        ring: &KeyRing,
        now: Duration,
        policy: RekeyPolicy,
    ) -> Self {
        Self::for_lane(cipher, local, ring, now, policy, 0)
    }

    /// A sealer for one of several lanes (worker threads) of the same node:
    /// each lane seals its own sequence, which receivers track apart.
    pub fn for_lane(
        cipher: Cipher,
        local: IpAddr,
        ring: &KeyRing,
        now: Duration,
        policy: RekeyPolicy,
        lane: u8,
    ) -> Self {
        let rng = SystemRandom::new();
        let tx_key = ring.tx_key().clone();
        let session = Self::new_session(cipher, local, &tx_key, now, 0, lane, &rng);
        Sealer {
            cipher,
            local,
            tx_key,
            policy,
            lane,
            session,
            counter: AtomicU64::new(0),
            rng,
        }
    }

    fn new_session(
        cipher: Cipher,
        local: IpAddr,
        key: &NetworkKey,
        now: Duration,
        min_time: u32,
        lane: u8,
        rng: &SystemRandom,
    ) -> TxSession {
        let time = (now.as_secs().min(u32::MAX as u64) as u32).max(min_time);
        let mut session = [0u8; 8];
        session[..4].copy_from_slice(&time.to_be_bytes());
        session[4] = lane;
        rng.fill(&mut session[5..])
            .expect("the system random source works");
        TxSession {
            key_id: key.id(),
            key: traffic_key(cipher, key, local, &session),
            session,
            started: now,
        }
    }

    /// Seals `frame` for `vni` into `out` (VXLAN header, seal header,
    /// ciphertext, tag) and returns the datagram's length.
    pub fn seal(&self, vni: Vni, frame: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        let need = SEALED_PAYLOAD_AT + frame.len() + TAG_LEN;
        if out.len() < need {
            return Err(SealError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        out[SEALED_PAYLOAD_AT..SEALED_PAYLOAD_AT + frame.len()].copy_from_slice(frame);
        self.seal_in_place(vni, &mut out[..need], frame.len())
    }

    /// Seals in place: `buf` holds the frame at [`SEALED_PAYLOAD_AT`] with
    /// room for the headers before it and [`TAG_LEN`] bytes after it.
    pub fn seal_in_place(
        &self,
        vni: Vni,
        buf: &mut [u8],
        frame_len: usize,
    ) -> Result<usize, SealError> {
        let need = SEALED_PAYLOAD_AT + frame_len + TAG_LEN;
        if buf.len() < need {
            return Err(SealError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER {
            return Err(SealError::CounterExhausted);
        }
        let s = &self.session;
        VxlanRepr {
            vni,
            sealed: Some(s.key_id),
        }
        .emit(&mut VxlanPacket::new_unchecked(
            &mut buf[..VXLAN_HEADER_LEN],
        ));
        buf[8..16].copy_from_slice(&s.session);
        buf[16..24].copy_from_slice(&counter.to_be_bytes());
        let (aad, rest) = buf.split_at_mut(SEALED_PAYLOAD_AT);
        let (data, tail) = rest.split_at_mut(frame_len);
        let tag = s
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&aad[..]), data)
            .expect("frames are far below the AEAD's length limit");
        tail[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(need)
    }

    /// True when the session has sealed enough frames, or lived long enough,
    /// that a new one is due.
    pub fn needs_rekey(&self, now: Duration) -> bool {
        self.counter.load(Ordering::Relaxed) >= self.policy.after_packets
            || now.saturating_sub(self.session.started) >= self.policy.after
    }

    /// Starts a new session: a fresh traffic key, the counter back at zero.
    pub fn rekey(&mut self, now: Duration) {
        let min_time = session_time(&self.session.session).saturating_add(1);
        self.session = Self::new_session(
            self.cipher,
            self.local,
            &self.tx_key,
            now,
            min_time,
            self.lane,
            &self.rng,
        );
        *self.counter.get_mut() = 0;
    }

    /// Adopts a new ring; a changed sending key starts a new session.
    pub fn set_keys(&mut self, ring: &KeyRing, now: Duration) {
        let tx = ring.tx_key();
        if *tx != self.tx_key {
            self.tx_key = tx.clone();
            self.rekey(now);
        }
    }

    /// The id of the key frames are sealed with.
    pub fn key_id(&self) -> u8 {
        self.session.key_id
    }
}

struct RxSession {
    session: [u8; 8],
    key: LessSafeKey,
    window: ReplayWindow,
}

impl RxSession {
    /// Derives an unknown session's key and opens its first frame; the session
    /// exists only if that frame authenticates.
    fn open_first(
        cipher: Cipher,
        net_key: &NetworkKey,
        sender: IpAddr,
        session: [u8; 8],
        counter: u64,
        packet: &mut [u8],
    ) -> Result<(RxSession, usize), DropReason> {
        let mut rx = RxSession {
            session,
            key: traffic_key(cipher, net_key, sender, &session),
            window: ReplayWindow::new(),
        };
        let len = open_with(&rx.key, counter, packet)?;
        rx.window.accept(counter);
        Ok((rx, len))
    }
}

struct SenderState {
    current: RxSession,
    previous: Option<RxSession>,
    last_used: u64,
}

/// The receiving side of an encrypted network on one node.
pub struct Opener {
    cipher: Cipher,
    ring: KeyRing,
    /// Keyed by (sender, key id, lane).
    senders: HashMap<(IpAddr, u8, u8), SenderState>,
    tick: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("cipher", &self.cipher)
            .field("keys", &self.ring.ids().collect::<Vec<_>>())
            .field("senders", &self.senders.len())
            .finish()
    }
}

/// Decrypts in place; the plaintext length on success.
fn open_with(key: &LessSafeKey, counter: u64, packet: &mut [u8]) -> Result<usize, DropReason> {
    let (aad, rest) = packet.split_at_mut(SEALED_PAYLOAD_AT);
    key.open_in_place(nonce(counter), Aad::from(&aad[..]), rest)
        .map(|plain| plain.len())
        .map_err(|_| DropReason::AuthFailure)
}

impl Opener {
    /// An opener accepting every key of `ring`.
    pub fn new(cipher: Cipher, ring: &KeyRing) -> Self {
        Opener {
            cipher,
            ring: ring.clone(),
            senders: HashMap::new(),
            tick: 0,
        }
    }

    /// Adopts a new ring; sessions under removed or changed keys are forgotten.
    pub fn set_keys(&mut self, ring: &KeyRing) {
        let old = std::mem::replace(&mut self.ring, ring.clone());
        self.senders.retain(
            |&(_, id, _), _| matches!((old.get(id), ring.get(id)), (Some(a), Some(b)) if a == b),
        );
    }

    /// Opens a sealed datagram from `sender` (starting at the VXLAN header) in
    /// place and returns the inner Ethernet frame.
    pub fn open<'a>(
        &mut self,
        sender: IpAddr,
        packet: &'a mut [u8],
    ) -> Result<&'a [u8], DropReason> {
        if packet.len() < SEALED_PAYLOAD_AT + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        let repr = VxlanRepr::parse(&VxlanPacket::new_unchecked(&packet[..]))?;
        let key_id = repr.sealed.ok_or(DropReason::PlainOnEncrypted)?;
        let net_key = self.ring.get(key_id).ok_or(DropReason::UnknownKey)?;
        let session: [u8; 8] = packet[8..16].try_into().expect("length checked");
        let counter = u64::from_be_bytes(packet[16..24].try_into().expect("length checked"));
        if counter >= REJECT_AFTER {
            return Err(DropReason::Replay);
        }
        self.tick += 1;
        let tick = self.tick;
        let stream = (sender, key_id, session_lane(&session));
        let len = match self.senders.get_mut(&stream) {
            Some(state) => {
                let known = if state.current.session == session {
                    Some(&mut state.current)
                } else {
                    state.previous.as_mut().filter(|p| p.session == session)
                };
                if let Some(rx) = known {
                    if !rx.window.check(counter) {
                        return Err(DropReason::Replay);
                    }
                    let len = open_with(&rx.key, counter, packet)?;
                    rx.window.accept(counter);
                    state.last_used = tick;
                    len
                } else if session_time(&session) >= session_time(&state.current.session) {
                    let (rx, len) = RxSession::open_first(
                        self.cipher,
                        net_key,
                        sender,
                        session,
                        counter,
                        packet,
                    )?;
                    state.previous = Some(std::mem::replace(&mut state.current, rx));
                    state.last_used = tick;
                    len
                } else {
                    return Err(DropReason::StaleSession);
                }
            }
            None => {
                let (rx, len) =
                    RxSession::open_first(self.cipher, net_key, sender, session, counter, packet)?;
                if self.senders.len() >= MAX_SENDERS {
                    self.evict_least_recent();
                }
                self.senders.insert(
                    stream,
                    SenderState {
                        current: rx,
                        previous: None,
                        last_used: tick,
                    },
                );
                len
            }
        };
        Ok(&packet[SEALED_PAYLOAD_AT..SEALED_PAYLOAD_AT + len])
    }

    fn evict_least_recent(&mut self) {
        if let Some(&k) = self
            .senders
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k)
        {
            self.senders.remove(&k);
        }
    }

    /// How many (sender, key, lane) streams are tracked.
    pub fn tracked_senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests;
