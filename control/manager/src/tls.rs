//! The swarm's PKI as the manager uses it: the cluster CA, node certificates
//! issued from CSRs, `SWMTKN-1` join tokens and the rustls configurations.
//!
//! Like Docker: a node certificate's subject is CN = node id, OU =
//! `swarm-manager` or `swarm-worker`, O = cluster id, and every manager
//! certificate also names `swarm-manager` so that clients verify "a manager
//! of this cluster" whatever address they dialled. A joining node does not
//! have the CA yet; it trusts the manager only if the CA certificate the
//! manager sends hashes to the digest inside its join token.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::identity::NodeFile;
use crate::state::Role;

/// How far before its issue a node certificate is valid from, at most: room
/// for clocks that run behind the CA's. Short lifetimes (tests) backdate a
/// tenth of the lifetime instead, so that the renewal point, which is a share
/// of the whole validity, still falls before expiry.
const MAX_BACKDATE_SECS: u64 = 3600;
/// The CA lives 20 years (Docker's default).
const CA_YEARS: i64 = 20;

/// Fills `buf` from the system's secure random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the system random source works");
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The cluster's root CA.
pub(crate) struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl ClusterCa {
    /// A new CA (ECDSA P-256).
    pub(crate) fn generate() -> Result<Self, String> {
        let key = KeyPair::generate().map_err(err("cannot generate the CA key"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "swarm-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365 * CA_YEARS);
        let cert = params
            .self_signed(&key)
            .map_err(err("cannot self-sign the CA"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// The CA from its PEM certificate and key (as the cluster state holds them).
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(err("the CA key in the cluster state"))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("the CA certificate in the cluster state: {e}"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    /// The certificate (PEM).
    pub(crate) fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The key (PEM).
    pub(crate) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the certificate's DER.
    pub(crate) fn digest(&self) -> [u8; 32] {
        sha256(&self.cert_der)
    }

    /// Signs the CSR as node `node_id` with `role` in `cluster_id`, valid for
    /// `lifetime_secs` from now. The subject and names come from the
    /// arguments, never from the CSR: only its key is used.
    pub(crate) fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        lifetime_secs: u64,
    ) -> Result<String, String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(err("invalid certificate signing request"))?;
        let ou = role_ou(role);
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.subject_alt_names = [node_id, ou]
            .iter()
            .map(|n| {
                n.to_string()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(err("bad name"))
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        let backdate = MAX_BACKDATE_SECS.min(lifetime_secs / 10);
        params.not_before = now - time::Duration::seconds(backdate as i64);
        params.not_after = now + time::Duration::seconds(lifetime_secs as i64);
        csr.params = params;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(err("the cluster CA certificate"))?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(err("cannot sign the node certificate"))?;
        Ok(cert.pem())
    }
}

fn role_ou(role: Role) -> &'static str {
    match role {
        Role::Manager => "swarm-manager",
        Role::Worker => "swarm-worker",
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A node's own key pair.
pub(crate) struct NodeKey(KeyPair);

impl NodeKey {
    /// A new key (ECDSA P-256).
    pub(crate) fn generate() -> Result<Self, String> {
        KeyPair::generate()
            .map(NodeKey)
            .map_err(err("cannot generate a node key"))
    }

    /// A CSR for this key (the CA decides the subject).
    pub(crate) fn csr_pem(&self, cn: &str) -> Result<String, String> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .serialize_request(&self.0)
            .and_then(|c| c.pem())
            .map_err(err("cannot make a certificate signing request"))
    }

    /// The key (PEM).
    pub(crate) fn key_pem(&self) -> String {
        self.0.serialize_pem()
    }
}

/// Big-endian bytes in base 36, zero-padded to `width` characters.
fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = bytes.to_vec();
    let mut out = Vec::new();
    while n.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | *b as u32;
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// A parsed join token: `SWMTKN-1-<CA digest, base 36, 50>-<secret, base 36, 25>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinToken {
    /// The CA digest part.
    pub(crate) ca_digest: String,
    /// The secret part.
    pub(crate) secret: String,
}

/// A new token for `ca`: its digest and 128 random bits.
pub(crate) fn new_join_token(ca: &ClusterCa) -> String {
    let mut secret = [0u8; 16];
    fill_random(&mut secret);
    format!(
        "SWMTKN-1-{}-{}",
        base36(&ca.digest(), 50),
        base36(&secret, 25)
    )
}

/// Parses a token; the error names what is wrong with it.
pub(crate) fn parse_join_token(s: &str) -> Result<JoinToken, String> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let base36_ok = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    match parts.as_slice() {
        ["SWMTKN", "1", digest, secret] => {
            if digest.len() != 50 || !base36_ok(digest) {
                return Err(format!(
                    "invalid join token: the CA digest part must be 50 base-36 characters, not {:?}",
                    digest
                ));
            }
            if secret.len() != 25 || !base36_ok(secret) {
                return Err(
                    "invalid join token: the secret part must be 25 base-36 characters".into(),
                );
            }
            Ok(JoinToken {
                ca_digest: digest.to_string(),
                secret: secret.to_string(),
            })
        }
        ["SWMTKN", version, ..] if *version != "1" => Err(format!(
            "invalid join token: unsupported version {version:?} (this shoal knows SWMTKN-1)"
        )),
        _ => Err("invalid join token: expected SWMTKN-1-<digest>-<secret>".into()),
    }
}

/// Whether `given` is `expected`, compared in constant time.
pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.trim().as_bytes(), expected.as_bytes());
    // The length of a token is public (its format fixes it); the bytes are not.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A certificate's validity: `not_before` and `not_after`, in seconds since
/// the Unix epoch.
pub(crate) fn validity(cert_pem: &str) -> Result<(u64, u64), String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("this node's certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("this node's certificate is unreadable: {e}"))?;
    let v = cert.validity();
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok((
        secs(v.not_before.timestamp()),
        secs(v.not_after.timestamp()),
    ))
}

/// Whether a certificate valid from `not_before` to `not_after` (seconds)
/// should be renewed at `now`: once the point `jitter` (0 to 1, chosen at
/// random per certificate) of the way between 50% and 80% of its validity
/// has passed. Like Docker, this spreads the renewals of a swarm's nodes
/// over time instead of sending them all to the CA at once.
pub(crate) fn renewal_due(not_before: u64, not_after: u64, now: u64, jitter: f64) -> bool {
    let span = not_after.saturating_sub(not_before) as f64;
    let share = 0.5 + 0.3 * jitter.clamp(0.0, 1.0);
    let point = not_before as f64 + span * share;
    now as f64 >= point
}

/// Who a peer certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerIdentity {
    /// CN.
    pub(crate) node_id: String,
    /// From OU.
    pub(crate) role: Role,
    /// O.
    pub(crate) cluster_id: String,
}

/// Reads the identity from a (verified) node certificate.
pub(crate) fn peer_identity(der: &CertificateDer<'_>) -> Result<PeerIdentity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable peer certificate: {e}"))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let node_id = first(&mut subject.iter_common_name()).ok_or("peer certificate has no CN")?;
    let ou = first(&mut subject.iter_organizational_unit()).ok_or("peer certificate has no OU")?;
    let cluster_id = first(&mut subject.iter_organization()).ok_or("peer certificate has no O")?;
    let role = match ou.as_str() {
        "swarm-manager" => Role::Manager,
        "swarm-worker" => Role::Worker,
        other => return Err(format!("peer certificate has an unknown role {other:?}")),
    };
    Ok(PeerIdentity {
        node_id,
        role,
        cluster_id,
    })
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

fn identity(node: &NodeFile) -> Result<Identity, String> {
    let leaf = CertificateDer::from_pem_slice(node.cert_pem.as_bytes())
        .map_err(|e| format!("this node's certificate: {e}"))?;
    let ca = CertificateDer::from_pem_slice(node.ca_pem.as_bytes())
        .map_err(|e| format!("the cluster CA certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes())
        .map_err(|e| format!("this node's key: {e}"))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("the cluster CA certificate: {e}"))?;
    Ok(Identity {
        chain: vec![leaf, ca],
        key,
        roots: Arc::new(roots),
    })
}

/// The manager API's server side: presents the node's chain (leaf and CA, so
/// joining nodes can check the CA against their token) and accepts clients
/// with a certificate of this CA, or without one (joining).
pub(crate) fn server_config(node: &NodeFile) -> Result<Arc<rustls::ServerConfig>, String> {
    let id = identity(node)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(id.roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("cannot build the client verifier: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain, id.key)
        .map_err(|e| format!("this node's certificate or key: {e}"))?;
    Ok(Arc::new(config))
}

/// Mutual TLS towards managers: trusts only the cluster CA.
pub(crate) fn client_config(node: &NodeFile) -> Result<Arc<rustls::ClientConfig>, String> {
    let id = identity(node)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(id.roots)
        .with_client_auth_cert(id.chain, id.key)
        .map_err(|e| format!("this node's certificate or key: {e}"))?;
    Ok(Arc::new(config))
}

/// TLS for a node that is joining: no client certificate, and the server is
/// trusted only if its chain ends in a CA whose digest is the token's.
pub(crate) fn bootstrap_client_config(token: &JoinToken) -> Arc<rustls::ClientConfig> {
    let verifier = Arc::new(TokenPinnedVerifier {
        digest: token.ca_digest.clone(),
        provider: provider(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts a server chain whose last certificate is the CA named by the join
/// token's digest, after verifying the leaf against that CA as usual.
#[derive(Debug)]
struct TokenPinnedVerifier {
    digest: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for TokenPinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mismatch = || {
            rustls::Error::General(
                "the manager's CA does not match the join token; wrong cluster or man-in-the-middle"
                    .into(),
            )
        };
        let ca = intermediates.last().ok_or_else(mismatch)?;
        if base36(&sha256(ca), 50) != self.digest {
            return Err(mismatch());
        }
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the manager's CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
