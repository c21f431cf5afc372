//! The calls that change a running data plane: networks, local endpoints,
//! peers, remote endpoints and keys.
//!
//! They run one at a time (the [`Control`] mutex), so a check and the change
//! it guards cannot interleave with another call, and they hold the tables'
//! write lock only for the in-memory change itself: creating a TAP device in
//! a task's namespace and starting or joining lane threads happen outside it,
//! so the lanes never wait for them. Names are resolved to ids under the same
//! write lock as the change, since the switch reuses a removed network's id.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use ipnet::Ipv4Net;
use shoal_overlay::keys::{Cipher, KeyRing};
use shoal_overlay::mac::MacAddr;
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer};
use shoal_overlay::switch::{EndpointId, EndpointRecord, Location, NetworkId, NetworkSpec};
use shoal_overlay::vxlan::Vni;

use crate::config::{ConfigError, LocalEndpointConfig, NetworkConfig, RemoteEndpoint};
use crate::dataplane::{lock_poisoned, now_since_epoch, spawn, DataPlane, DataPlaneError};
use crate::endpoint;
use crate::forward;
use crate::tables::{LocalEndpoint, NetCrypto, Tables, MAX_ENDPOINTS};

/// What the control calls keep beside the tables.
#[derive(Default)]
pub(crate) struct Control {
    /// The settings a network was added with, by name.
    networks: std::collections::HashMap<String, NetworkState>,
    /// The running local endpoints.
    pub(crate) endpoints: Vec<RunningEndpoint>,
    /// Each network's VIP services as last set (see [`crate::vips`]).
    pub(crate) vips: std::collections::HashMap<String, Vec<shoal_overlay::lb::vip::VipService>>,
}

impl Control {
    /// The subnet of network `name`, if it exists.
    pub(crate) fn subnet(&self, name: &str) -> Option<Ipv4Net> {
        self.networks.get(name).map(|n| n.subnet)
    }
}

/// The settings of a network that the switch does not hold.
struct NetworkState {
    vni: Vni,
    subnet: Ipv4Net,
    cipher: Option<Cipher>,
}

/// A local endpoint with its lane threads.
pub(crate) struct RunningEndpoint {
    network: String,
    ip: Ipv4Addr,
    id: EndpointId,
    local: Arc<LocalEndpoint>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningEndpoint {
    /// Ends the endpoint's lane threads and waits for them (each notices
    /// within one poll interval). Its TAP queues close when the last `Arc`
    /// goes, which is this one once the endpoint is out of the tables.
    pub(crate) fn stop_and_join(self) {
        self.local.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn invalid(field: String, reason: String) -> DataPlaneError {
    ConfigError::Invalid { field, reason }.into()
}

fn spec_of(net: &NetworkConfig, underlay_mtu: u32) -> NetworkSpec {
    NetworkSpec {
        name: net.name.clone(),
        vni: net.vni,
        mtu: net.endpoint_mtu(underlay_mtu),
        encrypted: net.encryption.is_some(),
    }
}

fn network_id(t: &Tables, name: &str) -> Result<NetworkId, DataPlaneError> {
    t.switch
        .network_by_name(name)
        .ok_or_else(|| DataPlaneError::UnknownNetwork(name.to_string()))
}

/// Refuses a remote record that would take the place of a local endpoint
/// (same IP or MAC): the switch would move the record and orphan the TAP.
fn check_not_local(
    t: &Tables,
    id: NetworkId,
    name: &str,
    remote: &RemoteEndpoint,
) -> Result<(), DataPlaneError> {
    for r in t.switch.endpoints(id) {
        if matches!(r.location, Location::Local(_)) && (r.ip == remote.ip || r.mac == remote.mac) {
            return Err(invalid(
                format!("network[{name}].remote"),
                format!(
                    "{} ({}) is a local endpoint of this node; remove it with remove_endpoint first",
                    r.ip, r.mac
                ),
            ));
        }
    }
    Ok(())
}

fn remote_record(r: &RemoteEndpoint) -> EndpointRecord {
    EndpointRecord {
        ip: r.ip,
        mac: r.mac,
        location: Location::Remote(r.node),
    }
}

impl DataPlane {
    /// Adds an overlay network, checked as [`crate::config::DataPlaneConfig::validate`]
    /// checks one (name, subnet, MTU, peers, remotes; VNI and name unused).
    ///
    /// Adding a network that exists with the same name, VNI, subnet and
    /// encryption (on or off, and the same cipher) is not an error: the peers
    /// given are added to its peers, the remotes upserted and, when encrypted,
    /// the key ring replaced. Any other difference is a
    /// [`DataPlaneError::NetworkClash`] naming the setting.
    pub fn add_network(&self, net: NetworkConfig) -> Result<(), DataPlaneError> {
        let s = &self.shared;
        net.validate(s.node_addr, s.underlay_mtu)?;
        let mut control = lock_poisoned(self.control.lock());
        if let Some(existing) = control.networks.get(&net.name) {
            let clash = |existing: String, wanted: String| {
                Err(DataPlaneError::NetworkClash {
                    name: net.name.clone(),
                    existing,
                    wanted,
                })
            };
            if existing.vni != net.vni {
                return clash(format!("VNI {}", existing.vni), format!("VNI {}", net.vni));
            }
            if existing.subnet != net.subnet {
                return clash(
                    format!("subnet {}", existing.subnet),
                    format!("subnet {}", net.subnet),
                );
            }
            let describe = |c: Option<Cipher>| match c {
                Some(c) => format!("encryption ({c:?})"),
                None => "no encryption".to_string(),
            };
            let wanted = net.encryption.as_ref().map(|e| e.cipher);
            if existing.cipher != wanted {
                return clash(describe(existing.cipher), describe(wanted));
            }
            let mut t = lock_poisoned(s.tables.write());
            let id = network_id(&t, &net.name)?;
            for r in &net.remotes {
                check_not_local(&t, id, &net.name, r)?;
            }
            for &peer in &net.peers {
                t.switch.add_peer(id, peer)?;
            }
            for r in &net.remotes {
                t.switch.upsert_endpoint(id, remote_record(r))?;
            }
            drop(t);
            if let Some(enc) = &net.encryption {
                self.set_keys(&net.name, &enc.keys)?;
            }
            return Ok(());
        }

        let crypto = net.encryption.as_ref().map(|enc| {
            let now = now_since_epoch();
            NetCrypto {
                sealers: (0..s.workers)
                    .map(|lane| {
                        RwLock::new(Sealer::for_lane(
                            enc.cipher,
                            s.node_addr,
                            &enc.keys,
                            now,
                            RekeyPolicy::default(),
                            lane as u8,
                        ))
                    })
                    .collect(),
                opener: Mutex::new(Opener::new(enc.cipher, &enc.keys)),
            }
        });
        let mut t = lock_poisoned(s.tables.write());
        let id = t.switch.add_network(spec_of(&net, s.underlay_mtu))?;
        let filled = (|| {
            for &peer in &net.peers {
                t.switch.add_peer(id, peer)?;
            }
            for r in &net.remotes {
                t.switch.upsert_endpoint(id, remote_record(r))?;
            }
            Ok::<_, DataPlaneError>(())
        })();
        if let Err(e) = filled {
            // Nothing local is attached yet, so the removal cannot be refused.
            let _ = t.switch.remove_network(id);
            return Err(e);
        }
        t.set_crypto(id, crypto);
        drop(t);
        control.networks.insert(
            net.name.clone(),
            NetworkState {
                vni: net.vni,
                subnet: net.subnet,
                cipher: net.encryption.as_ref().map(|e| e.cipher),
            },
        );
        tracing::info!(network = %net.name, vni = %net.vni, subnet = %net.subnet, encrypted = net.encryption.is_some(), "network added");
        Ok(())
    }

    /// Removes a network with its remote records, peers and keys. Refused
    /// ([`DataPlaneError::NetworkInUse`], naming them) while local endpoints
    /// are attached; `Ok(false)` if there is no such network.
    pub fn remove_network(&self, name: &str) -> Result<bool, DataPlaneError> {
        let mut control = lock_poisoned(self.control.lock());
        if !control.networks.contains_key(name) {
            return Ok(false);
        }
        let attached: Vec<Ipv4Addr> = control
            .endpoints
            .iter()
            .filter(|e| e.network == name)
            .map(|e| e.ip)
            .collect();
        if !attached.is_empty() {
            return Err(DataPlaneError::NetworkInUse {
                name: name.to_string(),
                endpoints: attached,
            });
        }
        let mut t = lock_poisoned(self.shared.tables.write());
        let id = network_id(&t, name)?;
        t.switch.remove_network(id)?;
        t.set_crypto(id, None);
        t.set_vips(id, None);
        drop(t);
        control.networks.remove(name);
        control.vips.remove(name);
        tracing::info!(network = %name, "network removed");
        Ok(true)
    }

    /// Creates the endpoint's TAP device inside `ep.netns` (a bind-mounted
    /// namespace file, `/proc/<pid>/ns/net` or `/proc/<pid>/fd/<n>`), puts it
    /// in the switch and starts its lane threads.
    ///
    /// Refused when the network is unknown, the endpoint does not fit it (see
    /// [`LocalEndpointConfig::validate`]), its IP or MAC is already a local
    /// endpoint of the network, or the interface name exists in the namespace.
    /// A failure names the step and leaves nothing behind.
    pub fn add_endpoint(&self, ep: LocalEndpointConfig) -> Result<(), DataPlaneError> {
        let s = &self.shared;
        let mut control = lock_poisoned(self.control.lock());
        let net = control
            .networks
            .get(&ep.network)
            .ok_or_else(|| DataPlaneError::UnknownNetwork(ep.network.clone()))?;
        ep.validate_in(&ep.network, net.subnet)?;
        let prefix_len = net.subnet.prefix_len();
        let mtu = {
            let t = lock_poisoned(s.tables.read());
            let id = network_id(&t, &ep.network)?;
            for r in t.switch.endpoints(id) {
                if !matches!(r.location, Location::Local(_)) {
                    // A remote record with this IP is the same endpoint moving
                    // here (the switch moves it) or a clash it refuses.
                    continue;
                }
                let what = if r.ip == ep.ip {
                    format!("IP {}", ep.ip)
                } else if r.mac == ep.mac {
                    format!("MAC {} ({})", ep.mac, r.ip)
                } else {
                    continue;
                };
                return Err(DataPlaneError::EndpointExists {
                    network: ep.network.clone(),
                    what,
                });
            }
            t.switch.spec(id).map_or(0, |spec| spec.mtu)
        };
        if control.endpoints.len() >= MAX_ENDPOINTS {
            return Err(DataPlaneError::TooManyEndpoints(MAX_ENDPOINTS));
        }

        let endpoint_err = |reason: String| DataPlaneError::Endpoint {
            ip: ep.ip,
            netns: ep.netns.display().to_string(),
            reason,
        };
        let queues = endpoint::create(&ep, prefix_len, mtu, s.workers).map_err(endpoint_err)?;
        let local = Arc::new(LocalEndpoint {
            queues,
            stop: AtomicBool::new(false),
        });

        let id = {
            let mut t = lock_poisoned(s.tables.write());
            let net_id = network_id(&t, &ep.network)?;
            let id = t
                .endpoints
                .insert(local.clone())
                .ok_or(DataPlaneError::TooManyEndpoints(MAX_ENDPOINTS))?;
            let record = EndpointRecord {
                ip: ep.ip,
                mac: ep.mac,
                location: Location::Local(id),
            };
            if let Err(e) = t.switch.upsert_endpoint(net_id, record) {
                t.endpoints.remove(id);
                return Err(e.into());
            }
            id
        };

        let mut running = RunningEndpoint {
            network: ep.network.clone(),
            ip: ep.ip,
            id,
            local,
            threads: Vec::with_capacity(s.workers),
        };
        for w in 0..s.workers {
            let (sh, local) = (s.clone(), running.local.clone());
            let name = format!("ep{}q{w}", id.0 & 0xffff);
            match spawn(name, move || forward::endpoint_loop(&sh, id, &local, w)) {
                Ok(handle) => running.threads.push(handle),
                Err(e) => {
                    self.take_out(&running);
                    running.stop_and_join();
                    return Err(e);
                }
            }
        }
        control.endpoints.push(running);
        tracing::info!(network = %ep.network, ip = %ep.ip, netns = %ep.netns.display(), ifname = %ep.ifname, "endpoint added");
        Ok(())
    }

    /// Stops the endpoint's lane threads, takes it out of the switch and
    /// closes its TAP queues, which removes the device from the task's
    /// namespace. `Ok(false)` if this node has no such endpoint (or network).
    pub fn remove_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<bool, DataPlaneError> {
        let mut control = lock_poisoned(self.control.lock());
        let Some(at) = control
            .endpoints
            .iter()
            .position(|e| e.network == network && e.ip == ip)
        else {
            return Ok(false);
        };
        let running = control.endpoints.swap_remove(at);
        // Out of the tables first: from here no frame reaches its queues.
        self.take_out(&running);
        running.stop_and_join();
        tracing::info!(network = %network, ip = %ip, "endpoint removed");
        Ok(true)
    }

    /// Takes a local endpoint out of the switch and the endpoint slab.
    fn take_out(&self, running: &RunningEndpoint) {
        let mut t = lock_poisoned(self.shared.tables.write());
        t.switch.remove_local(running.id);
        t.endpoints.remove(running.id);
    }

    /// Replaces the peer nodes (underlay addresses) named for a network.
    /// Nodes holding remote endpoints of the network stay peers while they do.
    pub fn set_peers(&self, network: &str, peers: &[IpAddr]) -> Result<(), DataPlaneError> {
        if let Some(own) = peers.iter().find(|&&p| p == self.shared.node_addr) {
            return Err(invalid(
                format!("network[{network}].peers"),
                format!("{own} is this node's own address"),
            ));
        }
        let _control = lock_poisoned(self.control.lock());
        let mut t = lock_poisoned(self.shared.tables.write());
        let id = network_id(&t, network)?;
        t.switch.set_peers(id, peers.iter().copied())?;
        Ok(())
    }

    /// Adds or moves an endpoint that lives on another node. Refused when
    /// its IP or MAC is a local endpoint of this node.
    pub fn upsert_remote(
        &self,
        network: &str,
        remote: RemoteEndpoint,
    ) -> Result<(), DataPlaneError> {
        if remote.node == self.shared.node_addr {
            return Err(invalid(
                "node".into(),
                format!("{} is this node's own address", remote.node),
            ));
        }
        let control = lock_poisoned(self.control.lock());
        if let Some(net) = control.networks.get(network) {
            if !net.subnet.contains(&remote.ip) {
                return Err(invalid(
                    "ip".into(),
                    format!("{} is outside the subnet {}", remote.ip, net.subnet),
                ));
            }
        }
        let mut t = lock_poisoned(self.shared.tables.write());
        let id = network_id(&t, network)?;
        check_not_local(&t, id, network, &remote)?;
        t.switch.upsert_endpoint(id, remote_record(&remote))?;
        Ok(())
    }

    /// Removes a remote endpoint by MAC; true if it was known.
    pub fn remove_remote(&self, network: &str, mac: MacAddr) -> Result<bool, DataPlaneError> {
        let _control = lock_poisoned(self.control.lock());
        let mut t = lock_poisoned(self.shared.tables.write());
        let id = network_id(&t, network)?;
        let local = t
            .switch
            .endpoints(id)
            .iter()
            .any(|r| r.mac == mac && matches!(r.location, Location::Local(_)));
        if local {
            return Err(invalid(
                "mac".into(),
                format!("{mac} is a local endpoint of this node, not a remote one"),
            ));
        }
        Ok(t.switch.remove_endpoint(id, mac)?)
    }

    /// Replaces an encrypted network's key ring (rotation).
    pub fn set_keys(&self, network: &str, keys: &KeyRing) -> Result<(), DataPlaneError> {
        let t = lock_poisoned(self.shared.tables.read());
        let id = network_id(&t, network)?;
        let crypto = t
            .crypto(id)
            .ok_or_else(|| DataPlaneError::NotEncrypted(network.to_string()))?;
        // Receivers first: a frame sealed under the new key must never arrive
        // before this node accepts it.
        lock_poisoned(crypto.opener.lock()).set_keys(keys);
        let now = now_since_epoch();
        for sealer in &crypto.sealers {
            lock_poisoned(sealer.write()).set_keys(keys, now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
