//! Creating a task endpoint: a TAP device inside the task's network namespace.
//!
//! The TAP is created from a thread that has entered the task's namespace, so
//! the device is born there and needs no move between namespaces (which would
//! take netlink). The descriptor stays with the daemon: every frame the task
//! sends reaches the data plane, and the device disappears when the daemon
//! closes it.

use shoal_overlay::offload::VNET_HDR_LEN;
use shoal_sys::iface;
use shoal_sys::netns::NetNs;
use shoal_sys::tap::{Tap, TapOptions, TUN_F_CSUM, TUN_F_TSO4};

use crate::config::LocalEndpointConfig;

/// Creates and configures the endpoint's TAP device with `queues` queues (one
/// per worker; the kernel picks a queue per flow); the error says which step failed.
pub(crate) fn create(
    ep: &LocalEndpointConfig,
    prefix_len: u8,
    mtu: u32,
    queues: usize,
) -> Result<Vec<Tap>, String> {
    let ns = NetNs::open(&ep.netns).map_err(|e| e.to_string())?;
    ns.run(|| -> Result<Vec<Tap>, String> {
        let name = ep.ifname.as_str();
        // TUNSETIFF on an existing multi-queue TAP would attach to it as one
        // more queue rather than fail: never create over an existing name.
        if iface::index(name).is_ok() {
            return Err(format!(
                "interface {name} already exists in the namespace; pick another ifname"
            ));
        }
        // Offloads: the task's kernel hands over TCP super-frames of up to 64 KiB
        // with partial checksums, and accepts the same from us. Only TCPv4 is
        // offered, the only kind the data plane cuts (the overlay is IPv4).
        let opts = TapOptions {
            vnet_hdr: true,
            multi_queue: queues > 1,
        };
        let mut taps = vec![Tap::create(name, &opts).map_err(|e| e.to_string())?];
        for _ in 1..queues {
            let queue = taps[0].open_queue().map_err(|e| e.to_string())?;
            taps.push(queue);
        }
        for tap in &taps {
            tap.set_vnet_hdr_size(VNET_HDR_LEN as i32)
                .map_err(|e| e.to_string())?;
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4)
                .map_err(|e| e.to_string())?;
            tap.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        // IPv6 would only add router solicitations and neighbour discovery
        // multicast, which the switch drops: the overlay carries IPv4.
        iface::disable_ipv6(name).map_err(|e| e.to_string())?;
        iface::set_mac(name, ep.mac.0).map_err(|e| e.to_string())?;
        iface::set_mtu(name, mtu).map_err(|e| e.to_string())?;
        if !ep.handover {
            iface::set_ipv4(name, ep.ip, prefix_len).map_err(|e| e.to_string())?;
            iface::set_up(name).map_err(|e| e.to_string())?;
        }
        Ok(taps)
    })
    .map_err(|e| e.to_string())?
}
