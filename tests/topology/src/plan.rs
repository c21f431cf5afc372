//! The underlay address plan, as pure functions.
//!
//! Every topology uses the same plan so that tests, benchmarks and `shoal lab`
//! can name hosts by their address without asking the topology: nodes from
//! 10.99.0.11 up, clients from 10.99.0.101 up, all in 10.99.0.0/24. Each topology
//! has a bridge of its own in a namespace of its own, so reusing the plan across
//! parallel topologies is safe. The host ranges do not overlap, which is why their
//! sizes are capped.

use std::net::Ipv4Addr;

/// The underlay network (every topology has its own copy of it).
pub const UNDERLAY_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
/// The underlay prefix length.
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The host part of node 0's address.
pub const FIRST_NODE_HOST: u8 = 11;
/// The host part of client 0's address.
pub const FIRST_CLIENT_HOST: u8 = 101;
/// Nodes get 10.99.0.11 to 10.99.0.100.
pub const MAX_NODES: usize = (FIRST_CLIENT_HOST - FIRST_NODE_HOST) as usize;
/// Clients get 10.99.0.101 to 10.99.0.254 (255 is the broadcast address).
pub const MAX_CLIENTS: usize = (255 - FIRST_CLIENT_HOST) as usize;
/// The smallest underlay MTU accepted (IPv4's minimum).
pub const MIN_MTU: u32 = 68;
/// The largest underlay MTU accepted (a veth's maximum).
pub const MAX_MTU: u32 = 65_535;

/// The underlay address of node `index` (0-based), or `None` past [`MAX_NODES`].
pub fn node_addr(index: usize) -> Option<Ipv4Addr> {
    host_addr(FIRST_NODE_HOST, index, MAX_NODES)
}

/// The underlay address of client `index` (0-based), or `None` past
/// [`MAX_CLIENTS`].
pub fn client_addr(index: usize) -> Option<Ipv4Addr> {
    host_addr(FIRST_CLIENT_HOST, index, MAX_CLIENTS)
}

fn host_addr(first: u8, index: usize, max: usize) -> Option<Ipv4Addr> {
    if index >= max {
        return None;
    }
    let host = u8::try_from(usize::from(first) + index).ok()?;
    let [a, b, c, _] = UNDERLAY_NETWORK.octets();
    Some(Ipv4Addr::new(a, b, c, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_and_clients_follow_the_plan() {
        assert_eq!(node_addr(0), Some(Ipv4Addr::new(10, 99, 0, 11)));
        assert_eq!(node_addr(2), Some(Ipv4Addr::new(10, 99, 0, 13)));
        assert_eq!(client_addr(0), Some(Ipv4Addr::new(10, 99, 0, 101)));
        assert_eq!(client_addr(1), Some(Ipv4Addr::new(10, 99, 0, 102)));
    }

    #[test]
    fn ranges_end_before_they_collide() {
        assert_eq!(
            node_addr(MAX_NODES - 1),
            Some(Ipv4Addr::new(10, 99, 0, 100))
        );
        assert_eq!(node_addr(MAX_NODES), None);
        assert_eq!(
            client_addr(MAX_CLIENTS - 1),
            Some(Ipv4Addr::new(10, 99, 0, 254))
        );
        assert_eq!(client_addr(MAX_CLIENTS), None);
        assert_eq!(client_addr(usize::MAX), None);
    }

    #[test]
    fn every_address_is_unique_and_in_the_underlay() {
        let all: Vec<Ipv4Addr> = (0..MAX_NODES)
            .filter_map(node_addr)
            .chain((0..MAX_CLIENTS).filter_map(client_addr))
            .collect();
        assert_eq!(all.len(), MAX_NODES + MAX_CLIENTS);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for a in all {
            let [x, y, z, host] = a.octets();
            assert_eq!([x, y, z], [10, 99, 0]);
            assert!(host != 0 && host != 255, "{a}");
        }
    }
}
