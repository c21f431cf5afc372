//! What the per-frame loops look up: the switch, each network's crypto and
//! each local endpoint's TAP queues, behind one `RwLock` (see [`Tables`]).
//!
//! Networks and endpoints come and go while frames are in flight, so the
//! three are changed together under the write side, and a frame is judged and
//! carried out under one read guard: a verdict never names an endpoint or a
//! network that has gone by the time the frame is written or sealed. The one
//! id that outlives a guard is a lane's pending merge target (the receive
//! loop's GRO state, kept for the rest of one receive batch); endpoint ids
//! carry a generation so that such a stale id finds nothing rather than the
//! endpoint that took its slot ([`EndpointSlab`]).
//!
//! Each network with virtual IPs has a [`VipTable`] behind its own mutex: the
//! balancer changes its connection table on every packet it handles. Lanes
//! take it only for frames of such a network, after one test
//! ([`Tables::has_vips`]) that is false on a node with no VIP at all.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, RwLock};

use shoal_overlay::counters::DropReason;
use shoal_overlay::lb::vip::VipTable;
use shoal_overlay::seal::{Opener, Sealer};
use shoal_overlay::switch::{EndpointId, NetworkId, Switch};
use shoal_overlay::vxlan::Vni;
use shoal_sys::tap::Tap;

/// The crypto state of an encrypted network.
pub(crate) struct NetCrypto {
    /// One sealer per lane: each lane seals under its own session, with its
    /// own sequence (see `shoal_overlay::seal`).
    pub(crate) sealers: Vec<RwLock<Sealer>>,
    pub(crate) opener: Mutex<Opener>,
}

impl NetCrypto {
    /// The sealer of lane `w`.
    pub(crate) fn sealer(&self, w: usize) -> &RwLock<Sealer> {
        &self.sealers[w % self.sealers.len()]
    }
}

/// A local endpoint's TAP queues, one per lane. The device disappears when
/// the last queue closes, i.e. when the last `Arc` of this is dropped.
pub(crate) struct LocalEndpoint {
    pub(crate) queues: Vec<Tap>,
    /// Tells this endpoint's lane threads to end (removal); the data plane's
    /// own stop flag ends them too.
    pub(crate) stop: AtomicBool,
}

impl LocalEndpoint {
    /// The queue lane `w` reads and writes.
    pub(crate) fn queue(&self, w: usize) -> &Tap {
        &self.queues[w % self.queues.len()]
    }
}

/// The per-frame lookups, changed together (see the module docs).
pub(crate) struct Tables {
    pub(crate) switch: Switch,
    /// Indexed by `NetworkId`; `None` for plain networks and free slots.
    crypto: Vec<Option<NetCrypto>>,
    pub(crate) endpoints: EndpointSlab<std::sync::Arc<LocalEndpoint>>,
    /// Indexed by `NetworkId`; `None` for networks without VIPs.
    vips: Vec<Option<Mutex<VipTable>>>,
    /// How many networks have VIPs.
    vip_networks: usize,
}

impl Tables {
    pub(crate) fn new() -> Self {
        Tables {
            switch: Switch::new(),
            crypto: Vec::new(),
            endpoints: EndpointSlab::new(),
            vips: Vec::new(),
            vip_networks: 0,
        }
    }

    /// True when some network has VIPs: the one test a frame pays otherwise.
    pub(crate) fn has_vips(&self) -> bool {
        self.vip_networks > 0
    }

    /// The VIPs of network `id`, if it has any.
    pub(crate) fn vips(&self, id: NetworkId) -> Option<&Mutex<VipTable>> {
        self.vips.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Sets (or, with `None`, clears) the VIPs of network `id`.
    pub(crate) fn set_vips(&mut self, id: NetworkId, vips: Option<VipTable>) {
        let i = id.0 as usize;
        if self.vips.len() <= i {
            self.vips.resize_with(i + 1, || None);
        }
        let had = self.vips[i].is_some();
        let has = vips.is_some();
        self.vips[i] = vips.map(Mutex::new);
        match (had, has) {
            (false, true) => self.vip_networks += 1,
            (true, false) => self.vip_networks -= 1,
            _ => {}
        }
    }

    /// Every network's VIPs.
    pub(crate) fn all_vips(&self) -> impl Iterator<Item = &Mutex<VipTable>> {
        self.vips.iter().flatten()
    }

    /// The crypto state of network `id`; `None` when it is plain or unknown.
    pub(crate) fn crypto(&self, id: NetworkId) -> Option<&NetCrypto> {
        self.crypto.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Sets (or, with `None`, clears) the crypto state of network `id`.
    pub(crate) fn set_crypto(&mut self, id: NetworkId, crypto: Option<NetCrypto>) {
        let i = id.0 as usize;
        if self.crypto.len() <= i {
            self.crypto.resize_with(i + 1, || None);
        }
        self.crypto[i] = crypto;
    }

    /// Every encrypted network's crypto state.
    pub(crate) fn all_crypto(&self) -> impl Iterator<Item = &NetCrypto> {
        self.crypto.iter().flatten()
    }

    /// The crypto state of the network carried on `vni`: `Some` when it is
    /// encrypted, `None` when plain, an error when no network has that VNI.
    pub(crate) fn crypto_by_vni(&self, vni: Vni) -> Result<Option<&NetCrypto>, DropReason> {
        let net = self
            .switch
            .network_by_vni(vni)
            .ok_or(DropReason::UnknownVni)?;
        Ok(self.crypto(net))
    }
}

/// Bits of an [`EndpointId`] that name the slot; the rest are its generation.
const SLOT_BITS: u32 = 16;
/// The most endpoints one node serves at once.
pub(crate) const MAX_ENDPOINTS: usize = 1 << SLOT_BITS;

/// Local endpoints by [`EndpointId`]: a slot index in the low 16 bits and the
/// slot's generation in the high 16. Removing an endpoint bumps its slot's
/// generation, so its id never names the endpoint that reuses the slot: a
/// stale id lives at most one receive batch of one lane (microseconds), while
/// coming back to the same id takes 65536 removals from that slot, each a
/// control-plane call that closes a TAP device.
pub(crate) struct EndpointSlab<T> {
    slots: Vec<Slot<T>>,
    /// Free slot indexes, the last freed on top.
    free: Vec<usize>,
}

struct Slot<T> {
    generation: u16,
    value: Option<T>,
}

fn split(id: EndpointId) -> (usize, u16) {
    (
        (id.0 & ((1 << SLOT_BITS) - 1)) as usize,
        (id.0 >> SLOT_BITS) as u16,
    )
}

impl<T> EndpointSlab<T> {
    pub(crate) fn new() -> Self {
        EndpointSlab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores `value` and returns its id; `None` when [`MAX_ENDPOINTS`] are held.
    pub(crate) fn insert(&mut self, value: T) -> Option<EndpointId> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < MAX_ENDPOINTS => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                self.slots.len() - 1
            }
            None => return None,
        };
        let s = &mut self.slots[slot];
        s.value = Some(value);
        Some(EndpointId(
            (u32::from(s.generation) << SLOT_BITS) | slot as u32,
        ))
    }

    /// The value `id` names, if it is still there.
    pub(crate) fn get(&self, id: EndpointId) -> Option<&T> {
        let (slot, generation) = split(id);
        let s = self.slots.get(slot)?;
        if s.generation != generation {
            return None;
        }
        s.value.as_ref()
    }

    /// Takes the value `id` names out; its id is dead from then on.
    pub(crate) fn remove(&mut self, id: EndpointId) -> Option<T> {
        let (slot, generation) = split(id);
        let s = self.slots.get_mut(slot)?;
        if s.generation != generation {
            return None;
        }
        let value = s.value.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        Some(value)
    }

    /// How many values are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_id_never_names_the_endpoint_that_reuses_its_slot() {
        let mut slab = EndpointSlab::new();
        let a = slab.insert("a").unwrap();
        let b = slab.insert("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.get(a), None, "removed");
        assert_eq!(slab.remove(a), None, "removed twice");
        let c = slab.insert("c").unwrap();
        assert_eq!(split(c).0, split(a).0, "the slot is reused");
        assert_ne!(c, a, "under a new generation");
        assert_eq!(slab.get(a), None, "the old id finds nothing");
        assert_eq!(slab.remove(a), None, "and removes nothing");
        assert_eq!(slab.get(c), Some(&"c"));
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn every_id_of_a_slot_is_distinct_until_the_generation_wraps() {
        let mut slab = EndpointSlab::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(1 << 16) {
            let id = slab.insert(()).unwrap();
            assert!(seen.insert(id), "{id:?} handed out twice");
            slab.remove(id).unwrap();
        }
        // After 65536 removals the slot's generation comes back to 0.
        assert!(!seen.insert(slab.insert(()).unwrap()));
    }

    #[test]
    fn the_slab_refuses_beyond_its_capacity() {
        let mut slab = EndpointSlab::new();
        for _ in 0..MAX_ENDPOINTS {
            slab.insert(()).unwrap();
        }
        assert_eq!(slab.insert(()), None);
        slab.remove(EndpointId(7)).unwrap();
        assert!(slab.insert(()).is_some(), "a freed slot is usable again");
    }

    #[test]
    fn ids_from_unknown_slots_find_nothing() {
        let mut slab: EndpointSlab<()> = EndpointSlab::new();
        assert_eq!(slab.get(EndpointId(3)), None);
        assert_eq!(slab.remove(EndpointId(u32::MAX)), None);
    }
}
