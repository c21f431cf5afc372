//! The control call that gives a network its virtual IPs, and the clock the
//! lanes balance with.
//!
//! The daemon calls [`DataPlane::set_vip_services`] on every gossip change
//! and every assignment round, so an unchanged list costs one comparison
//! under the control mutex and takes no table lock. A network's
//! [`VipTable`] is made with its first VIP and dropped with its last, so a
//! network without VIPs costs its frames nothing (see `crate::tables`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shoal_overlay::lb::vip::{VipService, VipTable};
use shoal_overlay::lb::BalancerConfig;

use crate::config::validate_vip_services;
use crate::dataplane::{lock_poisoned, DataPlane, DataPlaneError};

/// Monotonic time since the first call: the balancer's `now` (its timeouts
/// must not jump with the wall clock).
pub(crate) fn monotonic_now() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// `services` in a canonical order, so equal sets compare equal.
fn canonical(services: &[VipService]) -> Vec<VipService> {
    let mut out: Vec<VipService> = services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.backends.sort_unstable();
            s.backends.dedup();
            s
        })
        .collect();
    out.sort_unstable();
    out
}

impl DataPlane {
    /// Makes the virtual IPs of `network` exactly `services`: each VIP
    /// balances every TCP and UDP port over its active backends (see
    /// `shoal_overlay::lb::vip`); a backend marked inactive keeps its flows
    /// and gets no new ones, one left out has its TCP flows reset. An empty
    /// list removes them all.
    ///
    /// Refused when the network is unknown, a VIP or backend is not a host
    /// address of its subnet, a VIP is listed twice or is a backend's, or a
    /// VIP is the address of an endpoint the network holds (local or remote).
    /// Setting the same list again is a no-op that takes no table lock.
    pub fn set_vip_services(
        &self,
        network: &str,
        services: &[VipService],
    ) -> Result<(), DataPlaneError> {
        let wanted = canonical(services);
        let mut control = lock_poisoned(self.control.lock());
        let subnet = control
            .subnet(network)
            .ok_or_else(|| DataPlaneError::UnknownNetwork(network.to_string()))?;
        if control
            .vips
            .get(network)
            .map_or(wanted.is_empty(), |v| *v == wanted)
        {
            return Ok(());
        }
        validate_vip_services(network, subnet, &wanted)?;
        let t = lock_poisoned(self.shared.tables.read());
        let id = t
            .switch
            .network_by_name(network)
            .ok_or_else(|| DataPlaneError::UnknownNetwork(network.to_string()))?;
        if let Some(s) = wanted.iter().find(|s| t.switch.mac_of(id, s.vip).is_some()) {
            return Err(crate::config::ConfigError::Invalid {
                field: format!("network[{network}].vip[{}].vip", s.vip),
                reason: format!("{} is an endpoint's address on this network", s.vip),
            }
            .into());
        }
        match (t.vips(id), wanted.is_empty()) {
            (Some(table), false) => {
                lock_poisoned(table.lock()).set_services(&wanted);
                drop(t);
            }
            (None, true) => drop(t),
            (existing, _) => {
                // The table comes or goes: that needs the write side.
                let had = existing.is_some();
                drop(t);
                let table = if wanted.is_empty() {
                    None
                } else {
                    let mut table = VipTable::new(BalancerConfig::default())
                        .expect("the default balancer configuration is valid");
                    table.set_services(&wanted);
                    Some(table)
                };
                let mut t = lock_poisoned(self.shared.tables.write());
                t.set_vips(id, table);
                tracing::info!(network = %network, vips = wanted.len(), had, "virtual IPs set");
            }
        }
        if wanted.is_empty() {
            control.vips.remove(network);
        } else {
            control.vips.insert(network.to_string(), wanted);
        }
        Ok(())
    }

    /// The VIP services of `network` as last set (canonical order).
    pub fn vip_services(&self, network: &str) -> Vec<VipService> {
        let control = lock_poisoned(self.control.lock());
        control.vips.get(network).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
