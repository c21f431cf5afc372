use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node_file(ca: &ClusterCa, node_id: &str, role: Role, cluster: &str) -> NodeFile {
    let key = NodeKey::generate().unwrap();
    let cert_pem = ca
        .issue(
            &key.csr_pem("anything").unwrap(),
            node_id,
            role,
            cluster,
            crate::state::DEFAULT_NODE_CERT_SECS,
        )
        .unwrap();
    NodeFile {
        node_id: node_id.into(),
        cluster_id: cluster.into(),
        role,
        raft_id: None,
        addr: "127.0.0.1".parse().unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_pem,
        key_pem: key.key_pem(),
        ca_pem: ca.cert_pem(),
        managers: vec![],
    }
}

/// Runs one TLS handshake over an in-memory pipe and returns the identity
/// the server saw (None: no client certificate) or the client's error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> Result<Option<PeerIdentity>, String> {
    let (a, b) = tokio::io::duplex(1 << 16);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let srv = tokio::spawn(async move {
        let mut tls = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .map(|c| peer_identity(&c).unwrap());
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(id)
    });
    let name = ServerName::try_from("swarm-manager").unwrap();
    let mut tls = connector
        .connect(name, b)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    srv.await.unwrap()
}

#[test]
fn tokens_have_swarms_shape_and_bad_ones_are_named() {
    let ca = ClusterCa::generate().unwrap();
    let t = new_join_token(&ca);
    assert!(t.starts_with("SWMTKN-1-"), "{t}");
    assert_eq!(t.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
    let parsed = parse_join_token(&t).unwrap();
    assert_eq!(parsed.ca_digest, base36(&ca.digest(), 50));
    assert_ne!(new_join_token(&ca), t, "secrets are random");
    for (bad, says) in [
        ("SWMTKN-2-abc-def", "unsupported version"),
        ("hello", "expected SWMTKN-1"),
        ("SWMTKN-1-abc-def", "CA digest part"),
        (&format!("SWMTKN-1-{}-short", "0".repeat(50)), "secret part"),
    ] {
        let e = parse_join_token(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    assert!(token_matches(&format!(" {t}\n"), &t));
    assert!(!token_matches(&new_join_token(&ca), &t));
}

#[test]
fn base36_matches_known_values() {
    assert_eq!(base36(&[0], 3), "000");
    assert_eq!(base36(&[35], 1), "z");
    assert_eq!(base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
}

#[test]
fn certificates_carry_node_role_and_cluster_and_ignore_the_csr_subject() {
    let ca = ClusterCa::generate().unwrap();
    let f = node_file(&ca, "node1", Role::Worker, "cluster9");
    let der = CertificateDer::from_pem_slice(f.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        peer_identity(&der).unwrap(),
        PeerIdentity {
            node_id: "node1".into(),
            role: Role::Worker,
            cluster_id: "cluster9".into()
        }
    );
    let again = ClusterCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.digest(), ca.digest());
    assert!(ca.issue("not a csr", "x", Role::Worker, "c", 3600).is_err());
}

#[test]
fn certificates_live_as_long_as_asked_with_a_bounded_backdate() {
    let ca = ClusterCa::generate().unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr_pem("x").unwrap();
    let now = crate::swarm::now_secs();
    let (nb, na) = validity(&ca.issue(&csr, "n", Role::Worker, "c", 90 * 86400).unwrap()).unwrap();
    assert!(na.abs_diff(now + 90 * 86400) <= 2, "{na} vs {now}");
    assert!(
        nb.abs_diff(now - 3600) <= 2,
        "backdated an hour: {nb} vs {now}"
    );
    // A 20 s certificate is backdated 2 s, so 50%-80% of it is before expiry.
    let (nb, na) = validity(&ca.issue(&csr, "n", Role::Worker, "c", 20).unwrap()).unwrap();
    assert!(
        na.abs_diff(now + 20) <= 2 && nb.abs_diff(now - 2) <= 2,
        "{nb} {na} {now}"
    );
    assert!(validity("not a certificate").is_err());
}

#[test]
fn renewal_falls_between_half_and_four_fifths_of_the_validity() {
    // Valid from 1000 to 2000: due from 1500 (jitter 0) to 1800 (jitter 1).
    assert!(!renewal_due(1000, 2000, 1499, 0.0));
    assert!(renewal_due(1000, 2000, 1500, 0.0));
    assert!(!renewal_due(1000, 2000, 1799, 1.0));
    assert!(renewal_due(1000, 2000, 1800, 1.0));
    assert!(!renewal_due(1000, 2000, 1649, 0.5));
    assert!(renewal_due(1000, 2000, 1650, 0.5));
    // Out-of-range jitter is clamped, never pushing renewal past 80%.
    assert!(renewal_due(1000, 2000, 1800, 7.0));
    assert!(!renewal_due(1000, 2000, 1499, -1.0));
    // Expired, or a clock before the start, behave.
    assert!(renewal_due(1000, 2000, 5000, 0.9));
    assert!(!renewal_due(1000, 2000, 0, 0.0));
    // A degenerate certificate (not_after before not_before) is due at once.
    assert!(renewal_due(2000, 1000, 2000, 0.3));
}

#[tokio::test]
async fn mutual_tls_knows_its_own_and_refuses_other_cas() {
    let ca = ClusterCa::generate().unwrap();
    let manager = node_file(&ca, "m1", Role::Manager, "c1");
    let worker = node_file(&ca, "w1", Role::Worker, "c1");
    let server = server_config(&manager).unwrap();
    let id = handshake(server.clone(), client_config(&worker).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id.node_id.as_str(), id.role), ("w1", Role::Worker));

    // A client from another swarm's CA does not trust the server, and the
    // server does not accept its certificate.
    let other = ClusterCa::generate().unwrap();
    let stranger = node_file(&other, "x1", Role::Manager, "c2");
    assert!(handshake(server.clone(), client_config(&stranger).unwrap())
        .await
        .is_err());

    // Joining: no client certificate, the server pinned by the token.
    let token = parse_join_token(&new_join_token(&ca)).unwrap();
    let id = handshake(server.clone(), bootstrap_client_config(&token))
        .await
        .unwrap();
    assert_eq!(id, None);
    let wrong = parse_join_token(&new_join_token(&other)).unwrap();
    let e = handshake(server, bootstrap_client_config(&wrong))
        .await
        .unwrap_err();
    assert!(e.contains("does not match the join token"), "{e}");
}
