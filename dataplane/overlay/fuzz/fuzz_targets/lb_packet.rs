//! Any IPv4 packet through the load balancer (both directions), the RST and
//! ICMP answer builders, and the PROXY v2 parser.
#![no_main]
use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal_overlay::lb::flow::Proto;
use shoal_overlay::lb::proxy::ProxyHeader;
use shoal_overlay::lb::reply::{icmp_port_unreachable_for, tcp_rst_for};
use shoal_overlay::lb::nat::L4Checksum;
use shoal_overlay::lb::vip::{VipBackend, VipService, VipTable};
use shoal_overlay::lb::{Backend, BackendState, Balancer, BalancerConfig};

fuzz_target!(|data: &[u8]| {
    let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let b = [Backend { addr: "10.0.1.1:8080".parse().unwrap(), state: BackendState::Active }];
    for proto in [Proto::Tcp, Proto::Udp] {
        lb.set_service(vip, 80, proto, &b);
    }
    let now = Duration::from_secs(1);
    let mut p = data.to_vec();
    let _ = lb.handle_outbound(now, &mut p);
    let _ = lb.handle_reply(now, &mut p);
    let _ = tcp_rst_for(data);
    let _ = icmp_port_unreachable_for(data);
    let _ = ProxyHeader::parse(data);
    // The same bytes as an Ethernet frame through a network's VIPs (every
    // port; the sender 10.0.0.2 is a backend, so hairpin paths are reached).
    let mut vips = VipTable::new(BalancerConfig::default()).unwrap();
    vips.set_services(&[VipService {
        vip,
        backends: ["10.0.0.2", "10.0.1.1"]
            .iter()
            .map(|ip| VipBackend { ip: ip.parse().unwrap(), active: true })
            .collect(),
    }]);
    let mut frame = data.to_vec();
    let mut reply = vec![0u8; data.len() + 64];
    for csum in [L4Checksum::Complete, L4Checksum::Partial] {
        let _ = vips.from_endpoint(now, &mut frame, csum, &mut reply);
        let _ = vips.to_endpoint(now, &mut frame, csum);
    }
});
