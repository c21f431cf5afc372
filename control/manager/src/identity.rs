//! What a node keeps outside Raft: who it is and how to reach the managers.
//!
//! `<state-dir>/node.json` holds the node id, its role, its certificate and key,
//! the cluster CA certificate and the managers' API addresses. It is written
//! atomically (temporary file, fsync, rename) with mode 0600, because it holds
//! the node's private key. A manager's Raft store lives beside it in
//! `<state-dir>/raft/`.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::Role;

/// A node's identity in its swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// The node id (also the certificate's common name).
    pub node_id: String,
    /// The swarm's id.
    pub cluster_id: String,
    /// The role its certificate carries.
    pub role: Role,
    /// Its Raft member id while a manager.
    pub raft_id: Option<u64>,
    /// The address it advertises.
    pub addr: IpAddr,
    /// Where its manager API listens (used while it is a manager).
    pub listen: SocketAddr,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The managers' API addresses, as last heard.
    pub managers: Vec<SocketAddr>,
}

/// The identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An I/O failure.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is damaged ({reason}); restore it from a backup, or leave the swarm with `shoal swarm leave --force` and join again")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl NodeFile {
    /// The file's path in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("node.json")
    }

    /// Reads the identity, `None` when this node is in no swarm.
    pub fn load(state_dir: &Path) -> Result<Option<NodeFile>, IdentityError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IdentityError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| IdentityError::Damaged {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes the identity atomically.
    pub fn store(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let path = Self::path(state_dir);
        let io = |op, source| IdentityError::Io {
            op,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| io("create the directory of", e))?;
        let tmp = state_dir.join("node.json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("plain data serializes");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        f.write_all(&text).map_err(|e| io("write", e))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("replace", e))?;
        Ok(())
    }

    /// A mutual-TLS client for the manager API with this identity.
    pub fn client(&self) -> Result<crate::net::Client, String> {
        Ok(crate::net::Client::new(
            crate::tls::client_config(self)?,
            crate::net::MANAGER_SERVER_NAME,
            std::time::Duration::from_secs(5),
        ))
    }

    /// Forgets the swarm: removes the identity and the Raft store.
    pub fn wipe(state_dir: &Path) -> Result<(), IdentityError> {
        for p in [Self::path(state_dir), state_dir.join("raft")] {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IdentityError::Io {
                        op: "remove",
                        path: p,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_damage_is_named() {
        let dir = std::env::temp_dir().join(format!("shoal-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(NodeFile::load(&dir).unwrap(), None);
        let f = NodeFile {
            node_id: "abc".into(),
            cluster_id: "c".into(),
            role: Role::Worker,
            raft_id: None,
            addr: "10.0.0.1".parse().unwrap(),
            listen: "0.0.0.0:2377".parse().unwrap(),
            cert_pem: "C".into(),
            key_pem: "K".into(),
            ca_pem: "A".into(),
            managers: vec!["10.0.0.2:2377".parse().unwrap()],
        };
        f.store(&dir).unwrap();
        assert_eq!(NodeFile::load(&dir).unwrap(), Some(f));
        let mode = std::fs::metadata(NodeFile::path(&dir)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        std::fs::write(NodeFile::path(&dir), "{").unwrap();
        let e = NodeFile::load(&dir).unwrap_err().to_string();
        assert!(e.contains("node.json is damaged"), "{e}");
        NodeFile::wipe(&dir).unwrap();
        assert_eq!(NodeFile::load(&dir).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
