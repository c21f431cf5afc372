//! The node agent: heartbeats to the managers and follows its role.
//!
//! Every node, managers included, POSTs `/v1/heartbeat` to the managers it
//! knows, the last one that answered first (a manager's own API forwards it
//! to the leader; a manager just promoted and not yet in the Raft group is
//! served by the others). The answer carries the node's role in the
//! cluster state, the managers' addresses and the keys. When the role changed
//! (`node promote` / `node demote`), the agent asks for a certificate for the
//! new role and starts or stops the node's manager parts.
//!
//! After each round the agent also checks its certificate's validity: past a
//! point chosen at random between 50% and 80% of it (Docker's rule, so a
//! swarm's nodes do not all renew at once) it asks the managers for a new
//! one through the same `/v1/renew` call, stores it in `node.json` and
//! adopts it for new connections. A node whose certificate has already
//! expired cannot renew (the managers refuse the expired certificate) and
//! must leave and join again, as in Docker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::ops::HeartbeatReply;
use crate::state::Role;
use crate::swarm::{now_secs, Shared};
use crate::tls;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut period = Duration::from_secs(1);
    let mut first = 0usize;
    let mut jitter = random_jitter();
    loop {
        match beat(&shared, &mut first).await {
            Ok(reply) => {
                period = Duration::from_secs(reply.heartbeat_secs.clamp(1, 60));
                if let Err(e) = follow(&shared, &reply).await {
                    tracing::warn!(error = %e, "cannot follow the cluster's view of this node");
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
        }
        match renew_if_due(&shared, jitter).await {
            Ok(true) => jitter = random_jitter(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot renew this node's certificate"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

async fn beat(shared: &Arc<Shared>, first: &mut usize) -> Result<HeartbeatReply, String> {
    let node = shared.node.read().await.clone().ok_or("not in a swarm")?;
    let client = shared.client.read().await.clone().ok_or("no identity")?;
    let body = crate::server::HeartbeatBody {
        engine: shared.config.engine.clone(),
    };
    let (at, reply) = client
        .post_any::<_, HeartbeatReply>(&node.managers, *first, "/v1/heartbeat", &body)
        .await
        .map_err(|e| e.to_string())?;
    *first = at;
    Ok(reply)
}

/// Applies what the managers say this node is.
async fn follow(shared: &Arc<Shared>, reply: &HeartbeatReply) -> Result<(), String> {
    let Some(mut node) = shared.node.read().await.clone() else {
        return Ok(());
    };
    *shared.network_keys.lock().expect("keys") = reply.network_keys.clone();
    *shared.gossip_keys.lock().expect("keys") = reply.gossip_keys.clone();
    let mut changed = false;
    if !reply.managers.is_empty() && reply.managers != node.managers {
        node.managers = reply.managers.clone();
        changed = true;
    }
    if reply.role != node.role {
        tracing::info!(from = %node.role, to = %reply.role, "role changed by the managers");
        (node.cert_pem, node.key_pem) = new_certificate(shared, &node).await?;
        node.role = reply.role;
        node.raft_id = reply.raft_id;
        node.store(&shared.config.state_dir)
            .map_err(|e| e.to_string())?;
        match reply.role {
            Role::Manager => {
                shared.set_identity(node.clone()).await?;
                let raft = shared.open_raft(&node).await.map_err(|e| e.to_string())?;
                shared
                    .start_manager(&node, raft)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Role::Worker => {
                shared.stop_manager().await;
                let _ = std::fs::remove_dir_all(shared.config.state_dir.join("raft"));
                shared.set_identity(node).await?;
            }
        }
        return Ok(());
    }
    if changed {
        node.store(&shared.config.state_dir)
            .map_err(|e| e.to_string())?;
        *shared.node.write().await = Some(node);
    }
    Ok(())
}

/// Where between 50% and 80% of a certificate's validity it is renewed.
fn random_jitter() -> f64 {
    let mut b = [0u8; 8];
    tls::fill_random(&mut b);
    u64::from_be_bytes(b) as f64 / u64::MAX as f64
}

/// Renews the certificate when its renewal point has passed; true if it did.
async fn renew_if_due(shared: &Arc<Shared>, jitter: f64) -> Result<bool, String> {
    let Some(mut node) = shared.node.read().await.clone() else {
        return Ok(false);
    };
    let (not_before, not_after) = tls::validity(&node.cert_pem)?;
    if !tls::renewal_due(not_before, not_after, now_secs(), jitter) {
        return Ok(false);
    }
    tracing::info!(not_after, "renewing this node's certificate");
    (node.cert_pem, node.key_pem) = new_certificate(shared, &node).await?;
    node.store(&shared.config.state_dir)
        .map_err(|e| e.to_string())?;
    shared.adopt_certificate(node).await?;
    Ok(true)
}

/// A new key and a certificate for it from the managers, for the role the
/// cluster state gives this node: (certificate, key), both PEM.
async fn new_certificate(
    shared: &Arc<Shared>,
    node: &crate::identity::NodeFile,
) -> Result<(String, String), String> {
    let key = tls::NodeKey::generate()?;
    let csr = key.csr_pem(&node.node_id)?;
    let cert = renew(shared, node, &csr).await?;
    Ok((cert, key.key_pem()))
}

async fn renew(
    shared: &Arc<Shared>,
    node: &crate::identity::NodeFile,
    csr: &str,
) -> Result<String, String> {
    let client = shared.client.read().await.clone().ok_or("no identity")?;
    let body = serde_json::json!({ "csr": csr });
    let mut last = String::from("no manager known");
    for addr in &node.managers {
        match client.post::<_, String>(*addr, "/v1/renew", &body).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
