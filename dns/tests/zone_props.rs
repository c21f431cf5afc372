//! Properties of the zone and the query core over generated task sets.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use shoal_dns::query::build_query;
use shoal_dns::{handle_query, Endpoint, Lookup, QueryOutcome, RecordType, Zone, DEFAULT_TTL};

fn endpoints() -> impl Strategy<Value = Vec<Endpoint>> {
    // Few services and small IP ranges so that names and IPs collide often.
    proptest::collection::vec(
        (
            0u8..4,
            0u8..3,
            1u8..40,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        0..24,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(
                |(i, (svc, net, ip, has_vip, dnsrr, healthy, alias))| Endpoint {
                    network_id: format!("net{net}"),
                    service_name: format!("svc{svc}"),
                    service_id: format!("id{svc}"),
                    task_name: format!("svc{svc}.{i}.task{i}"),
                    task_id: format!("task{i}"),
                    ip: Ipv4Addr::new(10, net, 0, ip),
                    vip: has_vip.then(|| Ipv4Addr::new(10, net, 255, svc)),
                    dnsrr,
                    aliases: if alias {
                        vec![format!("alias{svc}")]
                    } else {
                        vec![]
                    },
                    healthy,
                },
            )
            .collect()
    })
}

fn ips(l: Lookup) -> BTreeSet<Ipv4Addr> {
    match l {
        Lookup::A(v) => {
            let set: BTreeSet<_> = v.iter().copied().collect();
            assert_eq!(set.len(), v.len(), "duplicate IPs in {v:?}");
            set
        }
        Lookup::NoData => BTreeSet::new(),
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    #[test]
    fn tasks_name_is_exactly_the_healthy_task_ips(eps in endpoints()) {
        let zone = Zone::new(eps.clone(), DEFAULT_TTL);
        let services: BTreeSet<_> = eps.iter().map(|e| e.service_name.clone()).collect();
        for svc in &services {
            let want: BTreeSet<_> = eps
                .iter()
                .filter(|e| &e.service_name == svc && e.healthy)
                .map(|e| e.ip)
                .collect();
            prop_assert_eq!(ips(zone.lookup(&format!("tasks.{svc}"), RecordType::A)), want.clone());
            // The service name: its (non-dnsrr) VIPs, else the same healthy IPs.
            let vips: BTreeSet<_> = eps
                .iter()
                .filter(|e| &e.service_name == svc && !e.dnsrr)
                .filter_map(|e| e.vip)
                .collect();
            let want_svc = if vips.is_empty() { want } else { vips };
            prop_assert_eq!(ips(zone.lookup(&svc.to_uppercase(), RecordType::A)), want_svc);
        }
        for e in &eps {
            prop_assert!(ips(zone.lookup(&e.task_name, RecordType::A)).contains(&e.ip));
            prop_assert_eq!(zone.lookup(&e.task_name, RecordType::AAAA), Lookup::NoData);
        }
        prop_assert_eq!(zone.lookup("svc9", RecordType::A), Lookup::Forward);
        prop_assert_eq!(zone.lookup("tasks.svc9", RecordType::A), Lookup::Forward);
    }

    #[test]
    fn every_answer_is_a_permutation_of_the_lookup(eps in endpoints(), rotate in any::<u64>()) {
        let zone = Zone::new(eps, DEFAULT_TTL);
        for svc in 0..4 {
            let name = format!("tasks.svc{svc}");
            let q = build_query(1, &name, RecordType::A).unwrap();
            let lookup = zone.lookup(&name, RecordType::A);
            let forward = lookup == Lookup::Forward;
            let want = if forward { BTreeSet::new() } else { ips(lookup) };
            match handle_query(&zone, &q, rotate) {
                QueryOutcome::Reply(r) => {
                    let m = hickory_proto::op::Message::from_vec(r.for_tcp()).unwrap();
                    let got: BTreeSet<_> = m.answers.iter().filter_map(|r| match &r.data {
                        hickory_proto::rr::RData::A(a) => Some(a.0),
                        _ => None,
                    }).collect();
                    prop_assert!(!forward);
                    prop_assert_eq!(got, want);
                }
                QueryOutcome::Forward(_) => prop_assert!(forward),
                QueryOutcome::Drop(d) => prop_assert!(false, "dropped: {:?}", d),
            }
        }
    }

    #[test]
    fn handle_query_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let zone = Zone::new([], DEFAULT_TTL);
        let _ = handle_query(&zone, &bytes, 3);
    }
}
