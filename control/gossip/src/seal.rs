//! Sealing of every datagram and stream frame with the cluster gossip key.
//!
//! Layout: `version (1) | key id (1) | nonce (12) | ciphertext | tag (16)`.
//! The 14-byte header is the AEAD's associated data, so the version and key
//! id cannot be changed in flight. AES-256-GCM with random 96-bit nonces:
//! the collision bound (2^32 messages per key) is far beyond a gossip key's
//! life; keys are rotated with [`KeyRing`] replacement anyway.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use thiserror::Error;

/// Envelope version byte.
pub const SEAL_VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 14;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Total bytes sealing adds.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Why a sealed message was refused. Each is counted as a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealError {
    /// Shorter than header plus tag.
    #[error("sealed message of {len} bytes is shorter than the {OVERHEAD}-byte envelope")]
    Truncated {
        /// Received length.
        len: usize,
    },
    /// Envelope version we do not speak.
    #[error("sealed message has version {0}, this node speaks version {SEAL_VERSION}")]
    BadVersion(u8),
    /// Key id not in our ring: the sender uses a key we were not given.
    #[error("sealed message uses key id {0}, which is not in this node's key ring (set_keys)")]
    UnknownKey(u8),
    /// Authentication failed: wrong key material or tampering.
    #[error("sealed message failed authentication (wrong key or corrupted)")]
    BadTag,
}

/// Invalid key ring configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyRingError {
    /// No keys at all.
    #[error("keys: the key ring is empty; give at least one 32-byte gossip key")]
    Empty,
    /// Same id twice.
    #[error("keys: key id {0} appears twice")]
    DuplicateId(u8),
    /// `tx_key` not among the keys.
    #[error("tx_key: key id {0} is not in keys")]
    TxKeyMissing(u8),
}

/// Several keys, each with a one-byte id; one (`tx`) seals, all open.
pub struct KeyRing {
    keys: Vec<(u8, LessSafeKey)>,
    tx: usize,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("KeyRing")
            .field("ids", &ids)
            .field("tx", &self.keys[self.tx].0)
            .finish()
    }
}

impl KeyRing {
    /// Build a ring from `(id, secret)` pairs; `tx_key` seals outgoing data.
    pub fn new(keys: &[(u8, [u8; 32])], tx_key: u8) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut out: Vec<(u8, LessSafeKey)> = Vec::with_capacity(keys.len());
        for (id, secret) in keys {
            if out.iter().any(|(i, _)| i == id) {
                return Err(KeyRingError::DuplicateId(*id));
            }
            // A 32-byte key is always valid for AES-256-GCM.
            let unbound = UnboundKey::new(&AES_256_GCM, secret).map_err(|_| KeyRingError::Empty)?;
            out.push((*id, LessSafeKey::new(unbound)));
        }
        let tx = out
            .iter()
            .position(|(id, _)| *id == tx_key)
            .ok_or(KeyRingError::TxKeyMissing(tx_key))?;
        Ok(Self { keys: out, tx })
    }

    /// Id of the key used to seal.
    pub fn tx_key(&self) -> u8 {
        self.keys[self.tx].0
    }

    /// Seal `plaintext` with the tx key and a caller-supplied random nonce.
    pub fn seal(&self, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
        let (id, key) = &self.keys[self.tx];
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.push(SEAL_VERSION);
        out.push(*id);
        out.extend_from_slice(&nonce);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&out[..HEADER_LEN]);
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut out[HEADER_LEN..],
            )
            // ring only fails for inputs beyond 64 GiB.
            .unwrap_or_else(|_| unreachable!("AES-GCM input under 64 GiB"));
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Authenticate and decrypt; returns the plaintext.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated { len: sealed.len() });
        }
        if sealed[0] != SEAL_VERSION {
            return Err(SealError::BadVersion(sealed[0]));
        }
        let id = sealed[1];
        let key = self
            .keys
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, k)| k)
            .ok_or(SealError::UnknownKey(id))?;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&sealed[..HEADER_LEN]);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&sealed[2..HEADER_LEN]);
        let mut buf = sealed[HEADER_LEN..].to_vec();
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut buf,
            )
            .map_err(|_| SealError::BadTag)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rotation() {
        let a = KeyRing::new(&[(1, [7; 32])], 1).unwrap();
        let sealed = a.seal([3; 12], b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(a.open(&sealed).unwrap(), b"hello");
        // A ring that has the old key and sends with a new one still opens old traffic.
        let b = KeyRing::new(&[(1, [7; 32]), (2, [9; 32])], 2).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"hello");
        assert_eq!(
            a.open(&b.seal([0; 12], b"x")),
            Err(SealError::UnknownKey(2))
        );
    }

    #[test]
    fn refusals_are_typed() {
        let a = KeyRing::new(&[(1, [7; 32])], 1).unwrap();
        let wrong = KeyRing::new(&[(1, [8; 32])], 1).unwrap();
        let sealed = a.seal([3; 12], b"hello");
        assert_eq!(wrong.open(&sealed), Err(SealError::BadTag));
        assert_eq!(a.open(&sealed[..10]), Err(SealError::Truncated { len: 10 }));
        let mut v = sealed.clone();
        v[0] = 9;
        assert_eq!(a.open(&v), Err(SealError::BadVersion(9)));
        let mut t = sealed;
        t[20] ^= 1;
        assert_eq!(a.open(&t), Err(SealError::BadTag));
        assert_eq!(KeyRing::new(&[], 1).unwrap_err(), KeyRingError::Empty);
        assert_eq!(
            KeyRing::new(&[(1, [0; 32]), (1, [1; 32])], 1).unwrap_err(),
            KeyRingError::DuplicateId(1)
        );
        assert_eq!(
            KeyRing::new(&[(1, [0; 32])], 2).unwrap_err(),
            KeyRingError::TxKeyMissing(2)
        );
    }
}
