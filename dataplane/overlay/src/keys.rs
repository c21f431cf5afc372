//! Network keys and the key ring of an encrypted network.
//!
//! A ring holds up to three keys, each with a one-byte id carried in every
//! sealed frame, plus the id of the key used for sending. Rotation follows
//! Docker's rule: a node sends with a new key only once every peer accepts it.
//! Docker keeps three keys and sends with the second-newest for that reason; the
//! ring just holds whatever the control plane decided, and a receiver accepts
//! every key in it.

use std::fmt;

/// Length of a network key.
pub const KEY_LEN: usize = 32;
/// The most keys a ring holds.
pub const MAX_KEYS: usize = 3;

/// The AEAD that seals a network's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Cipher {
    /// AES-256-GCM (the default: hardware-accelerated on x86-64 and arm64).
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (for CPUs without AES instructions).
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        })
    }
}

/// One network key. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey {
    id: u8,
    secret: [u8; KEY_LEN],
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A key or a ring that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// A secret that is not 64 hex characters.
    #[error("key {id}: the secret must be {} hex characters (32 bytes), got {got} characters", KEY_LEN * 2)]
    BadSecretLength {
        /// The key id.
        id: u8,
        /// Characters received.
        got: usize,
    },
    /// A secret with a character that is not hex.
    #[error("key {id}: the secret has a character that is not hex (0-9, a-f)")]
    BadSecretDigit {
        /// The key id.
        id: u8,
    },
    /// An empty ring.
    #[error("a key ring needs at least one key")]
    Empty,
    /// More than three keys.
    #[error("a key ring holds at most {MAX_KEYS} keys, got {0}")]
    TooMany(usize),
    /// Two keys with one id.
    #[error("two keys have id {0}; ids must be distinct")]
    DuplicateId(u8),
    /// A sending key that is not in the ring.
    #[error("the sending key id {0} is not in the ring")]
    UnknownTx(u8),
}

impl NetworkKey {
    /// A key from raw bytes.
    pub fn new(id: u8, secret: [u8; KEY_LEN]) -> Self {
        NetworkKey { id, secret }
    }

    /// A key from 64 hex characters.
    pub fn from_hex(id: u8, hex: &str) -> Result<Self, KeyRingError> {
        let hex = hex.trim();
        if hex.len() != KEY_LEN * 2 {
            return Err(KeyRingError::BadSecretLength { id, got: hex.len() });
        }
        let mut secret = [0u8; KEY_LEN];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .map_err(|_| KeyRingError::BadSecretDigit { id })?;
        }
        Ok(NetworkKey { id, secret })
    }

    /// The key id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The secret bytes.
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

/// The keys a network accepts, and the one it sends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<NetworkKey>,
    tx: u8,
}

impl KeyRing {
    /// A ring of 1 to 3 keys with distinct ids, sending with `tx`.
    pub fn new(keys: Vec<NetworkKey>, tx: u8) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyRingError::TooMany(keys.len()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyRingError::DuplicateId(k.id));
            }
        }
        if !keys.iter().any(|k| k.id == tx) {
            return Err(KeyRingError::UnknownTx(tx));
        }
        Ok(KeyRing { keys, tx })
    }

    /// The key with this id.
    pub fn get(&self, id: u8) -> Option<&NetworkKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The key used for sending.
    pub fn tx_key(&self) -> &NetworkKey {
        self.get(self.tx).expect("checked in new")
    }

    /// Every key id, in ring order.
    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|k| k.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn hex_keys_parse_and_never_print() {
        let k = NetworkKey::from_hex(7, HEX).unwrap();
        assert_eq!(k.secret()[1], 0x11);
        assert!(!format!("{k:?}").contains("1122"));
        assert_eq!(
            NetworkKey::from_hex(1, "abc"),
            Err(KeyRingError::BadSecretLength { id: 1, got: 3 })
        );
        let bad = HEX.replace('f', "g");
        assert_eq!(
            NetworkKey::from_hex(1, &bad),
            Err(KeyRingError::BadSecretDigit { id: 1 })
        );
    }

    #[test]
    fn rings_are_checked() {
        let k = |id| NetworkKey::new(id, [id; KEY_LEN]);
        assert_eq!(KeyRing::new(vec![], 1), Err(KeyRingError::Empty));
        assert_eq!(
            KeyRing::new(vec![k(1), k(2), k(3), k(4)], 1),
            Err(KeyRingError::TooMany(4))
        );
        assert_eq!(
            KeyRing::new(vec![k(1), k(1)], 1),
            Err(KeyRingError::DuplicateId(1))
        );
        assert_eq!(KeyRing::new(vec![k(1)], 2), Err(KeyRingError::UnknownTx(2)));
        let ring = KeyRing::new(vec![k(1), k(2)], 2).unwrap();
        assert_eq!(ring.tx_key().id(), 2);
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![1, 2]);
        assert!(ring.get(3).is_none());
    }
}
