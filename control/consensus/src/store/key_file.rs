//! The data-encryption key file, `<dir>/raft.key`: 32 random bytes, mode 0600, made once with
//! the store and kept beside `raft.redb` for as long as the directory lives.
//!
//! Why a file in the store directory: the key must survive restarts and travel wherever the
//! directory is copied (`force_new_cluster` on a copy), with nothing else to carry along. Like
//! Swarm without autolock, this protects the database file, not the directory: whoever reads
//! `raft.key` can read the store. Wrapping the key with one the operator holds is a later step.
//!
//! A key is never made for data it did not seal: when `raft.redb` exists but its key does not,
//! opening fails and names the file, rather than starting an empty-looking store over
//! unreadable records.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use super::seal::KEY_LEN;
use super::{DB_FILE, KEY_FILE};
use crate::error::StoreError;

/// Loads the key of the store in `dir`, or makes one if the store does not exist yet.
pub(super) fn load_or_create(dir: &Path) -> Result<[u8; KEY_LEN], StoreError> {
    let path = dir.join(KEY_FILE);
    if let Some(key) = load(&path)? {
        return Ok(key);
    }
    let db = dir.join(DB_FILE);
    let db_exists = db.try_exists().map_err(|source| StoreError::KeyIo {
        op: "check for the database next to",
        path: path.clone(),
        source,
    })?;
    if db_exists {
        return Err(StoreError::KeyMissing { db, key: path });
    }
    create(dir)
}

/// Reads the key file; `None` if there is none.
fn load(path: &Path) -> Result<Option<[u8; KEY_LEN]>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::KeyIo {
                op: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| StoreError::KeyDamaged {
        path: path.to_owned(),
        len: bytes.len(),
    })?;
    Ok(Some(key))
}

/// Makes the key file atomically: a complete, synced temporary file is hard-linked into place.
/// Unlike a rename, the link refuses to replace a key that a concurrent opener of the same
/// directory made first; that key is then used.
fn create(dir: &Path) -> Result<[u8; KEY_LEN], StoreError> {
    let path = dir.join(KEY_FILE);
    let io = |op, source| StoreError::KeyIo {
        op,
        path: path.clone(),
        source,
    };
    let rng = SystemRandom::new();
    let random = |buf: &mut [u8]| {
        rng.fill(buf)
            .map_err(|_| StoreError::KeyRandom { path: path.clone() })
    };
    let mut key = [0u8; KEY_LEN];
    random(&mut key)?;
    // A name no other opener (nor the leftover of a crashed one) holds.
    let mut tag = [0u8; 8];
    random(&mut tag)?;
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", u64::from_le_bytes(tag)));
    let linked = write_new(&tmp, &key)
        .map_err(|e| io("write", e))
        .and_then(|()| match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io("create", e)),
        });
    // The temporary name goes in every case; the key lives on under `raft.key` if linked.
    let _ = std::fs::remove_file(&tmp);
    if !linked? {
        return load(&path)?.ok_or_else(|| io("read", ErrorKind::NotFound.into()));
    }
    // The link must be durable before any record is sealed with the key.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory of", e))?;
    Ok(key)
}

/// Writes `key` into a new file readable by its owner only, and syncs it.
fn write_new(path: &Path, key: &[u8; KEY_LEN]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(key)?;
    f.sync_all()
}
