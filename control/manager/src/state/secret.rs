//! Secrets in the cluster state.
//!
//! A secret's bytes live in the replicated state (managers only) and travel
//! inside the command that creates it; nothing sends them back. Views and op
//! replies carry the metadata only, like Docker's API, and [`SecretData`]'s
//! `Debug` prints a length, never the bytes, so no log line or panic message
//! can show them (commands and states are `Debug`, and openraft logs entries).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{valid_label_key, ClusterState, Refusal, Timestamp};

/// The largest secret Docker accepts is one byte less than this (500 KiB):
/// swarmkit refuses `len >= 500 KiB`, and so do we.
pub const MAX_SECRET_SIZE: usize = 500 * 1024;

/// A secret's bytes: base64 in JSON, a length in `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretData(Vec<u8>);

impl SecretData {
    /// Wraps the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretData(bytes)
    }

    /// The bytes, for the code that hands them to a task (and tests).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData(<{} bytes, not shown>)", self.0.len())
    }
}

impl Serialize for SecretData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BASE64
            .decode(text.as_bytes())
            .map(SecretData)
            .map_err(|e| serde::de::Error::custom(format!("secret data is not base64: {e}")))
    }
}

/// Checks a secret's size the way swarmkit does (also used by the CLI, so a
/// file that is too large is refused before it is sent).
pub fn check_secret_size(len: usize) -> Result<(), Refusal> {
    if len == 0 || len >= MAX_SECRET_SIZE {
        return Err(Refusal::SecretSize);
    }
    Ok(())
}

/// A secret of the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Its id: 25 lower-case base-36 characters.
    pub id: String,
    /// Its name, unique in the swarm.
    pub name: String,
    /// The value. Never returned by the API.
    pub data: SecretData,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed (secrets are immutable, so: created).
    pub updated_at: Timestamp,
}

/// What `secret create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    /// The name.
    pub name: String,
    /// The value.
    pub data: SecretData,
    /// `--label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// swarmkit's rule for secret names: letters, digits, `-`, `_` and `.`,
/// starting and ending with a letter or digit, at most 64 characters.
fn valid_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl ClusterState {
    /// The secret the leader proposes for `spec` (it supplies id and time).
    pub fn plan_secret(
        &self,
        spec: &SecretSpec,
        id: String,
        at: Timestamp,
    ) -> Result<Secret, Refusal> {
        self.cluster.as_ref().ok_or(Refusal::NoCluster)?;
        let secret = Secret {
            id,
            name: spec.name.clone(),
            data: spec.data.clone(),
            labels: spec.labels.clone(),
            created_at: at,
            updated_at: at,
        };
        self.check_secret(&secret)?;
        Ok(secret)
    }

    /// Whether `secret` may join the state: a valid name no other secret
    /// has, a size Docker accepts, valid label keys, a fresh id.
    pub fn check_secret(&self, secret: &Secret) -> Result<(), Refusal> {
        if !valid_secret_name(&secret.name) {
            return Err(Refusal::BadSecretName(secret.name.clone()));
        }
        if self.secrets.values().any(|s| s.name == secret.name) {
            return Err(Refusal::SecretNameInUse(secret.name.clone()));
        }
        check_secret_size(secret.data.len())?;
        if let Some(bad) = secret.labels.keys().find(|k| !valid_label_key(k)) {
            return Err(Refusal::BadLabel(bad.clone()));
        }
        if self.secrets.contains_key(&secret.id) {
            return Err(Refusal::SecretIdInUse(secret.id.clone()));
        }
        Ok(())
    }

    /// Finds a secret by full id, name or unique id prefix.
    pub fn find_secret(&self, key: &str) -> Result<&Secret, String> {
        super::find_by_key("secret", key, &self.secrets, |s| &s.name)
    }

    /// What uses secret `id`: the names of the services that mount it.
    ///
    /// Nothing yet: services exist, but cannot mount secrets yet (there is no
    /// `--secret`); this is where they will be listed, and [`Command::RemoveSecret`](super::Command::RemoveSecret)
    /// already refuses to remove a secret while the list is not empty.
    pub fn secret_users(&self, _id: &str) -> Vec<String> {
        Vec::new()
    }
}
