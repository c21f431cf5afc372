//! The swarm agent's way onto the overlay: task interfaces and the networks
//! they need, made with the node's [`DataPlane`].
//!
//! The data plane starts on the first network a task needs, on this node's
//! swarm address and UDP 4789 (or is the one `--config` started). Networks
//! are named by their swarm id inside it (names can be reused after `network
//! rm`, ids cannot). Each sync makes the data plane's networks, peers and
//! remote tasks equal to the managers' assignments, removing what they no
//! longer list, and gives encrypted networks the cluster's key ring.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use shoal_manager::dispatch::NetworkAssignment;
use shoal_manager::state::task::task_mac;
use shoal_manager::state::ClusterKey;
use shoal_manager::worker::NetworkAttacher;
use shoal_node::config::{
    DataPlaneConfig, Encryption, LocalEndpointConfig, NetworkConfig, RemoteEndpoint,
};
use shoal_node::{DataPlane, DataPlaneError};
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::mac::MacAddr;

/// How old a new key must be before nodes send with it: every node has
/// heard of it by then (heartbeats), so none drops frames sealed with a key
/// it does not know yet. Until then the previous key sends.
pub const KEY_SETTLE_SECS: u64 = 15;

/// Attaches tasks through a data plane started on demand.
pub struct DataPlaneAttacher {
    dp: Mutex<Option<Arc<DataPlane>>>,
    /// The remote task addresses last given to each network.
    remotes: Mutex<BTreeMap<String, BTreeSet<Ipv4Addr>>>,
}

impl DataPlaneAttacher {
    /// `dp`: the data plane `--config` started, if any.
    pub fn new(dp: Option<Arc<DataPlane>>) -> Self {
        DataPlaneAttacher {
            dp: Mutex::new(dp),
            remotes: Mutex::new(BTreeMap::new()),
        }
    }

    fn data_plane(&self, node: IpAddr) -> Result<Arc<DataPlane>, String> {
        let mut dp = self.dp.lock().expect("data plane lock");
        if let Some(dp) = dp.as_ref() {
            return Ok(dp.clone());
        }
        let started = Arc::new(
            DataPlane::start(DataPlaneConfig::new(node))
                .map_err(|e| format!("cannot start the data plane: {e}"))?,
        );
        tracing::info!(node = %node, "data plane started for the swarm's tasks");
        *dp = Some(started.clone());
        Ok(started)
    }

    /// The running data plane, if one was started.
    pub fn current(&self) -> Option<Arc<DataPlane>> {
        self.dp.lock().expect("data plane lock").clone()
    }
}

/// The key ring of an encrypted network: all the cluster's keys, the newest
/// that has settled sending.
pub fn key_ring(keys: &[ClusterKey], now: u64) -> Result<KeyRing, String> {
    let ring: Vec<NetworkKey> = keys
        .iter()
        .map(|k| NetworkKey::from_hex(k.id, &k.secret).map_err(|e| format!("key {}: {e}", k.id)))
        .collect::<Result<_, _>>()?;
    let tx = keys
        .iter()
        .rev()
        .find(|k| k.created_at + KEY_SETTLE_SECS <= now)
        .or(keys.first())
        .ok_or("the cluster has no network key yet")?
        .id;
    KeyRing::new(ring, tx).map_err(|e| e.to_string())
}

fn mac_of(ip: Ipv4Addr) -> MacAddr {
    MacAddr(task_mac(ip))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NetworkAttacher for DataPlaneAttacher {
    fn sync(
        &self,
        node: IpAddr,
        networks: &[NetworkAssignment],
        keys: &[ClusterKey],
    ) -> Result<(), String> {
        let wanted: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
        if networks.is_empty() && self.current().is_none() {
            return Ok(());
        }
        let dp = self.data_plane(node)?;
        let mut last = self.remotes.lock().expect("remotes lock");
        let mut errors = Vec::new();
        for n in networks {
            let encryption = if n.encrypted {
                Some(Encryption {
                    cipher: Cipher::default(),
                    keys: key_ring(keys, now_secs())?,
                })
            } else {
                None
            };
            let remotes: Vec<RemoteEndpoint> = n
                .remotes
                .iter()
                .map(|r| RemoteEndpoint {
                    ip: r.ip,
                    mac: mac_of(r.ip),
                    node: r.node,
                })
                .collect();
            let peers = n.peers();
            let config = NetworkConfig {
                name: n.id.clone(),
                vni: shoal_overlay::vxlan::Vni::new(n.vni).map_err(|e| e.to_string())?,
                subnet: n.subnet,
                encryption,
                peers: peers.clone(),
                remotes: remotes.clone(),
            };
            if let Err(e) = dp.add_network(config) {
                errors.push(format!("network {}: {e}", n.name));
                continue;
            }
            // Adding adds peers; this drops the ones no longer listed.
            if let Err(e) = dp.set_peers(&n.id, &peers) {
                errors.push(format!("network {}: {e}", n.name));
            }
            let now: BTreeSet<Ipv4Addr> = remotes.iter().map(|r| r.ip).collect();
            for gone in last
                .get(&n.id)
                .into_iter()
                .flatten()
                .filter(|ip| !now.contains(ip))
            {
                let _ = dp.remove_remote(&n.id, mac_of(*gone));
            }
            last.insert(n.id.clone(), now);
        }
        for (spec, _) in dp.networks() {
            if !wanted.contains(spec.name.as_str()) {
                match dp.remove_network(&spec.name) {
                    Ok(_) => {
                        last.remove(&spec.name);
                    }
                    // Its last task is still on its way out; next time.
                    Err(DataPlaneError::NetworkInUse { .. }) => {}
                    Err(e) => errors.push(format!("network {}: {e}", spec.name)),
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn attach(
        &self,
        network: &NetworkAssignment,
        netns: &Path,
        ifname: &str,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), String> {
        let dp = self
            .current()
            .ok_or("the data plane is not running (no network was set up)")?;
        dp.add_endpoint(LocalEndpointConfig {
            network: network.id.clone(),
            netns: netns.to_path_buf(),
            ifname: ifname.to_string(),
            ip,
            mac: MacAddr(mac),
        })
        .map_err(|e| e.to_string())
    }

    fn detach(&self, network: &NetworkAssignment, ip: Ipv4Addr) -> Result<(), String> {
        let Some(dp) = self.current() else {
            return Ok(());
        };
        dp.remove_endpoint(&network.id, ip)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8, at: u64) -> ClusterKey {
        ClusterKey {
            id,
            secret: format!("{id:064x}"),
            created_at: at,
        }
    }

    #[test]
    fn the_newest_settled_key_sends() {
        let keys = [key(1, 100), key(2, 200), key(3, 1000)];
        assert_eq!(key_ring(&keys, 1005).unwrap().tx_key().id(), 2);
        assert_eq!(key_ring(&keys, 1015).unwrap().tx_key().id(), 3);
        // A brand-new swarm's only key sends at once.
        assert_eq!(key_ring(&[key(1, 1000)], 1000).unwrap().tx_key().id(), 1);
        assert!(key_ring(&[], 1000).is_err());
    }
}
