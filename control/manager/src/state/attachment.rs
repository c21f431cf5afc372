//! Network attachments: containers that `docker run --network NET` put on an
//! attachable overlay network, outside any service (Docker's "network
//! attachment" tasks). Each holds an address of the network, given in
//! `apply` (the lowest free host, so every manager gives the same), until
//! its node detaches it or leaves the swarm.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::task::allocate;
use super::{ClusterState, NodeId, Refusal, Timestamp};

/// A container's attachment to an attachable network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its id: the node's name for it (the Docker endpoint id), unique in
    /// the swarm together with the node.
    pub id: String,
    /// The network's id.
    pub network_id: String,
    /// The node the container runs on.
    pub node_id: NodeId,
    /// Its address on the network.
    pub ip: Ipv4Addr,
    /// When it was made.
    pub created_at: Timestamp,
}

/// The key of an attachment in [`ClusterState::attachments`]: the node's id
/// and the node's own id for it.
pub fn attachment_key(node: &str, id: &str) -> String {
    format!("{node}/{id}")
}

/// Checks a node's attachment id: 1 to 128 of `[A-Za-z0-9_.-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl ClusterState {
    /// `Command::Attach`: gives the container `id` on `node` an address on
    /// `network`. Attaching the same id to the same network again keeps its
    /// address (the node may retry after a lost reply).
    pub(crate) fn attach(
        &mut self,
        id: &str,
        network: &str,
        node: &str,
        at: Timestamp,
    ) -> Result<(), Refusal> {
        if !valid_id(id) {
            return Err(Refusal::BadAttachment(format!(
                "invalid attachment id {id:?}: use 1 to 128 of [A-Za-z0-9_.-]"
            )));
        }
        if !self.nodes.contains_key(node) {
            return Err(Refusal::NoSuchNode(node.to_string()));
        }
        let net = self
            .networks
            .get(network)
            .ok_or_else(|| Refusal::NoSuchNetwork(network.to_string()))?
            .clone();
        if !net.attachable || net.ingress {
            return Err(Refusal::BadAttachment(format!(
                "network {} is not manually attachable (create it with --attachable)",
                net.name
            )));
        }
        let key = attachment_key(node, id);
        if let Some(old) = self.attachments.get(&key) {
            if old.network_id == net.id {
                return Ok(());
            }
            return Err(Refusal::BadAttachment(format!(
                "attachment {id} of node {node} is already on another network"
            )));
        }
        let mut used = self.addresses_in_use(&net);
        let ip = allocate(&net, &mut used).ok_or_else(|| {
            Refusal::BadAttachment(format!("no address left on network {}", net.name))
        })?;
        self.attachments.insert(
            key,
            Attachment {
                id: id.to_string(),
                network_id: net.id.clone(),
                node_id: node.to_string(),
                ip,
                created_at: at,
            },
        );
        Ok(())
    }

    /// The attachments of `network`.
    pub fn network_attachments<'a>(
        &'a self,
        network: &'a str,
    ) -> impl Iterator<Item = &'a Attachment> + 'a {
        self.attachments
            .values()
            .filter(move |a| a.network_id == network)
    }
}
