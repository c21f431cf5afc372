//! Any bytes into `handle_query`, against a zone with VIP, dnsrr and PTR records:
//! it must never panic, and whatever it answers must decode again.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_dns::{handle_query, Endpoint, QueryOutcome, Zone, DEFAULT_TTL};

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let ep = |svc: &str, slot: u8, vip: Option<Ipv4Addr>, dnsrr: bool| Endpoint {
            network_id: "n".into(),
            service_name: svc.into(),
            service_id: format!("{svc}-id"),
            task_name: format!("{svc}.{slot}.t{slot}"),
            task_id: format!("t{slot}"),
            ip: Ipv4Addr::new(10, 0, 0, slot),
            vip,
            dnsrr,
            aliases: vec!["alias".into()],
            healthy: slot % 2 == 0,
        };
        let vip = Some(Ipv4Addr::new(10, 0, 1, 1));
        Zone::new(
            (1..=40)
                .map(|i| ep("web", i, vip, false))
                .chain((41..=45).map(|i| ep("rr", i, None, true))),
            DEFAULT_TTL,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let rotate = data.first().copied().map_or(0, u64::from);
    match handle_query(zone(), data, rotate) {
        QueryOutcome::Reply(r) => {
            assert!(r.for_udp().len() >= 12);
            assert!(r.for_tcp().len() >= 12);
        }
        QueryOutcome::Forward(q) => {
            let _ = q.upstream_bytes(7);
            let _ = q.servfail();
            let _ = q.accept_upstream(data, 7);
        }
        QueryOutcome::Drop(_) => {}
    }
});
