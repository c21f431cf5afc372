//! Any Ethernet frame (ARP included) through both switch entry points.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use shoal_overlay::mac::MacAddr;
use shoal_overlay::switch::{EndpointId, EndpointRecord, Location, NetworkSpec, Switch, ARP_FRAME_LEN};
use shoal_overlay::vxlan::Vni;

fuzz_target!(|data: &[u8]| {
    let mut sw = Switch::new();
    let vni = Vni::new(4096).unwrap();
    let net = sw.add_network(NetworkSpec { name: "f".into(), vni, mtu: 1450, encrypted: false }).unwrap();
    let peer = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12));
    for (host, location) in [(2, Location::Local(EndpointId(0))), (3, Location::Remote(peer))] {
        let ip = Ipv4Addr::new(10, 0, 0, host);
        sw.upsert_endpoint(net, EndpointRecord { ip, mac: MacAddr::from_ipv4(ip), location }).unwrap();
    }
    let mut reply = [0u8; ARP_FRAME_LEN];
    let _ = sw.from_endpoint(EndpointId(0), data, &mut reply);
    let _ = sw.from_underlay(vni, peer, data, &mut reply);
});
