//! Sealing of store records with the directory's data-encryption key (AES-256-GCM).
//!
//! Why: the replicated state holds the swarm's secrets (the CA key, join tokens, network
//! keys), and the store writes that state to disk in log entries, in the applied state and in
//! snapshots. Like Docker Swarm, which encrypts its Raft log and snapshots with a per-manager
//! data-encryption key, each such record is sealed before it reaches redb, so the database
//! file on its own (a backup, a stolen disk image) reveals nothing.
//!
//! A sealed record is `nonce (12) | ciphertext | tag (16)`. The nonce is random per seal:
//! records are rewritten in place and across restarts, so there is no counter to keep durable.
//! The price is a budget: with 96 random bits, one key may seal about 2^32 records before the
//! chance of a repeated nonce passes 2^-32 (NIST SP 800-38D, 8.3). That is 136 years at one
//! seal a second, 1.4 years at a hundred; a store sealing faster for longer needs key rotation.
//!
//! The caller passes associated data naming the record's place (its table and key): a record
//! copied into another place then fails to open instead of passing for what lived there.
//!
//! No I/O but the system random source: the key comes in as bytes, records go in and out as
//! bytes.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a data-encryption key.
pub const KEY_LEN: usize = 32;
/// Length of the AES-GCM tag.
const TAG_LEN: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Why a record could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The operating system did not hand out random bytes for a nonce.
    #[error("the system random source failed")]
    Random,
    /// The plaintext exceeds what AES-GCM can seal under one nonce (64 GiB).
    #[error("a record of {len} bytes is too long for AES-GCM")]
    TooLong {
        /// The plaintext length.
        len: usize,
    },
}

/// Why a sealed record could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a nonce and a tag: cut off, or never sealed.
    #[error("{len} bytes is too short to be a sealed record")]
    Truncated {
        /// The record length.
        len: usize,
    },
    /// The tag does not match: the record was altered, moved from another place, or sealed
    /// with another key.
    #[error("it does not authenticate")]
    Rejected,
}

/// Seals and opens records with one data-encryption key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// A sealer using `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("AES-256-GCM takes a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts `plaintext` under a fresh random nonce and authenticates it together with
    /// `aad`, which is not stored: [`Sealer::open`] must be given the same.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut sealed = Vec::with_capacity(OVERHEAD + plaintext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| SealError::TooLong {
                len: plaintext.len(),
            })?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    /// Decrypts a record made by [`Sealer::seal`] with the same key and `aad`; anything else
    /// is refused.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let truncated = OpenError::Truncated { len: sealed.len() };
        let (nonce, body) = sealed.split_first_chunk::<NONCE_LEN>().ok_or(truncated)?;
        if body.len() < TAG_LEN {
            return Err(truncated);
        }
        let mut buf = body.to_vec();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| OpenError::Rejected)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &[u8] = b"shoal-raft-v1/logs/7";
    const SECRET: &[u8] = b"-----BEGIN PRIVATE KEY----- cluster CA";

    fn sealer() -> Sealer {
        Sealer::new(&[0x5a; KEY_LEN])
    }

    #[test]
    fn round_trip_hides_the_plaintext() {
        let s = sealer();
        for plaintext in [&b""[..], SECRET] {
            let sealed = s.seal(AAD, plaintext).unwrap();
            assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
            assert_eq!(s.open(AAD, &sealed).unwrap(), plaintext);
        }
        let sealed = s.seal(AAD, SECRET).unwrap();
        assert!(!sealed.windows(SECRET.len()).any(|w| w == SECRET));
    }

    #[test]
    fn each_seal_draws_a_new_nonce() {
        let s = sealer();
        let a = s.seal(AAD, SECRET).unwrap();
        let b = s.seal(AAD, SECRET).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
        assert_eq!(s.open(AAD, &b).unwrap(), SECRET);
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let s = sealer();
        let sealed = s.seal(AAD, SECRET).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(s.open(AAD, &bad), Err(OpenError::Rejected), "byte {i}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(s.open(AAD, &longer), Err(OpenError::Rejected));
        assert_eq!(
            s.open(AAD, &sealed[..sealed.len() - 1]),
            Err(OpenError::Rejected)
        );
    }

    #[test]
    fn a_record_shorter_than_nonce_and_tag_is_truncated() {
        let s = sealer();
        for len in [0, NONCE_LEN - 1, NONCE_LEN, OVERHEAD - 1] {
            assert_eq!(
                s.open(AAD, &vec![0; len]),
                Err(OpenError::Truncated { len })
            );
        }
    }

    #[test]
    fn another_place_is_refused() {
        let s = sealer();
        let sealed = s.seal(AAD, SECRET).unwrap();
        assert_eq!(
            s.open(b"shoal-raft-v1/logs/8", &sealed),
            Err(OpenError::Rejected)
        );
        assert_eq!(s.open(b"", &sealed), Err(OpenError::Rejected));
    }

    #[test]
    fn another_key_is_refused() {
        let sealed = sealer().seal(AAD, SECRET).unwrap();
        let mut other = [0x5a; KEY_LEN];
        other[KEY_LEN - 1] ^= 0x01;
        assert_eq!(
            Sealer::new(&other).open(AAD, &sealed),
            Err(OpenError::Rejected)
        );
        assert_eq!(sealer().open(AAD, &sealed).unwrap(), SECRET);
    }
}
