//! Services, the orchestrator and the scheduler, on states built by hand.

use super::*;
use crate::state::orchestrator::reconcile;
use crate::state::service::{PortConfig, Protocol, PublishMode};

fn three_nodes() -> ClusterState {
    let mut s = init();
    join(&mut s, "w1aaaaaaaaaaaaaaaaaaaaaaa", "wrk1", Role::Worker);
    join(&mut s, "w2aaaaaaaaaaaaaaaaaaaaaaa", "wrk2", Role::Worker);
    s
}

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        mode: ServiceMode::Replicated { replicas },
        command: vec!["sleep".into(), "1000".into()],
        ..Default::default()
    }
}

fn create(s: &mut ClusterState, spec: &ServiceSpec, id: &str) -> Result<String, Refusal> {
    let service = s.plan_service(spec, id.into(), 200)?;
    s.apply(&Command::CreateService {
        service: Box::new(service),
    })
    .into_result()?;
    Ok(id.to_string())
}

/// Runs the orchestrator until it has nothing left to do; ids count up.
fn converge(s: &mut ClusterState) {
    let mut n = s.tasks.len();
    for _ in 0..5 {
        let mut ids = || {
            n += 1;
            format!("t{n:04}")
        };
        match reconcile(s, 300, &mut ids) {
            None => return,
            Some(cmd) => s.apply(&cmd).into_result().unwrap(),
        }
    }
    panic!("the orchestrator did not converge");
}

/// Live tasks of a service per node hostname ("" for unplaced ones).
fn spread(s: &ClusterState, service: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for t in s.service_tasks(service).into_iter().filter(|t| t.is_live()) {
        let host = t
            .node_id
            .as_ref()
            .filter(|_| t.status.state == TaskState::Assigned)
            .map(|n| s.nodes[n].hostname.clone())
            .unwrap_or_default();
        *out.entry(host).or_default() += 1;
    }
    out
}

fn live_slots(s: &ClusterState, service: &str) -> Vec<u64> {
    s.service_tasks(service)
        .into_iter()
        .filter(|t| t.is_live())
        .filter_map(|t| t.slot)
        .collect()
}

#[test]
fn replicas_spread_one_per_node_and_scale_up_and_down() {
    let mut s = three_nodes();
    let web = create(&mut s, &spec("web", 3), "svc1").unwrap();
    converge(&mut s);
    assert_eq!(
        spread(&s, &web),
        BTreeMap::from([("mgr1".into(), 1), ("wrk1".into(), 1), ("wrk2".into(), 1)])
    );
    for t in s.tasks.values() {
        assert_eq!(t.status.state, TaskState::Assigned);
        assert_eq!(t.status.message, "scheduler assigned task to node");
        assert_eq!(t.desired_state, TaskState::Running);
    }
    // Converged: nothing more to propose.
    assert!(reconcile(&s, 301, &mut || unreachable!()).is_none());

    let mut five = s.services[&web].spec.clone();
    five.mode = ServiceMode::Replicated { replicas: 5 };
    s.apply(&Command::UpdateService {
        id: web.clone(),
        spec: Box::new(five),
        at: 400,
        force: false,
        rollback: false,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    let counts: Vec<usize> = spread(&s, &web).into_values().collect();
    assert_eq!(counts.iter().sum::<usize>(), 5);
    assert!(counts.iter().all(|&c| c == 1 || c == 2), "{counts:?}");
    assert_eq!(live_slots(&s, &web), [1, 2, 3, 4, 5]);
    assert_eq!(s.services[&web].version, 2);
    assert!(s.services[&web].previous_spec.is_some());

    let mut two = s.services[&web].spec.clone();
    two.mode = ServiceMode::Replicated { replicas: 2 };
    s.apply(&Command::UpdateService {
        id: web.clone(),
        spec: Box::new(two),
        at: 500,
        force: false,
        rollback: false,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    // The highest slots went; tasks that no node took leave no history.
    assert_eq!(live_slots(&s, &web), [1, 2]);
    assert_eq!(s.tasks.len(), 2);
}

#[test]
fn constraints_and_max_per_node_leave_tasks_pending_with_dockers_reason() {
    let mut s = three_nodes();
    let mut on_manager = spec("admin", 3);
    on_manager.constraints = vec!["node.role==manager".parse().unwrap()];
    let admin = create(&mut s, &on_manager, "svc1").unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, &admin), BTreeMap::from([("mgr1".into(), 3)]));

    let mut nowhere = spec("nowhere", 1);
    nowhere.constraints = vec!["node.labels.zone==mars".parse().unwrap()];
    let id = create(&mut s, &nowhere, "svc2").unwrap();
    converge(&mut s);
    let t = s.service_tasks(&id)[0];
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(t.node_id, None);
    assert_eq!(
        t.status.err.as_deref(),
        Some("no suitable node (scheduling constraints not satisfied on 3 nodes)")
    );

    let mut capped = spec("capped", 4);
    capped.max_replicas_per_node = Some(1);
    let id = create(&mut s, &capped, "svc3").unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, &id)[""], 1);
    let pending = s
        .service_tasks(&id)
        .into_iter()
        .find(|t| t.status.state == TaskState::Pending)
        .unwrap();
    assert_eq!(
        pending.status.err.as_deref(),
        Some("no suitable node (max replicas per node limit exceed)")
    );

    // A label that appears later lets the pending task through.
    s.apply(&Command::UpdateNode {
        id: "w2aaaaaaaaaaaaaaaaaaaaaaa".into(),
        availability: None,
        label_add: BTreeMap::from([("zone".into(), "mars".into())]),
        label_rm: vec![],
        at: 600,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, "svc2"), BTreeMap::from([("wrk2".into(), 1)]));
}

#[test]
fn drained_and_down_nodes_lose_their_tasks_to_others() {
    let mut s = three_nodes();
    let web = create(&mut s, &spec("web", 3), "svc1").unwrap();
    converge(&mut s);
    s.apply(&Command::UpdateNode {
        id: "w1aaaaaaaaaaaaaaaaaaaaaaa".into(),
        availability: Some(Availability::Drain),
        label_add: BTreeMap::new(),
        label_rm: vec![],
        at: 600,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    let now = spread(&s, &web);
    assert_eq!(now.get("wrk1"), None, "{now:?}");
    assert_eq!(now.values().sum::<usize>(), 3);
    // The task that was there is kept as history, desired shutdown.
    let old: Vec<&Task> = s.tasks.values().filter(|t| !t.is_live()).collect();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].desired_state, TaskState::Shutdown);
    assert_eq!(old[0].node_id.as_deref(), Some("w1aaaaaaaaaaaaaaaaaaaaaaa"));

    s.apply(&Command::SetStatus {
        id: "w2aaaaaaaaaaaaaaaaaaaaaaa".into(),
        status: NodeStatus::Down,
        message: "heartbeat failure".into(),
        at: 700,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, &web), BTreeMap::from([("mgr1".into(), 3)]));
    assert_eq!(live_slots(&s, &web), [1, 2, 3]);
}

#[test]
fn global_services_follow_the_nodes() {
    let mut s = three_nodes();
    let mut g = spec("agent", 0);
    g.mode = ServiceMode::Global;
    g.constraints = vec!["node.hostname!=wrk2".parse().unwrap()];
    let id = create(&mut s, &g, "svc1").unwrap();
    converge(&mut s);
    assert_eq!(
        spread(&s, &id),
        BTreeMap::from([("mgr1".into(), 1), ("wrk1".into(), 1)])
    );
    for t in s.service_tasks(&id) {
        assert_eq!(t.slot, None);
        assert_eq!(
            t.name("agent"),
            format!("agent.{}", t.node_id.clone().unwrap())
        );
    }
    join(&mut s, "w3aaaaaaaaaaaaaaaaaaaaaaa", "wrk3", Role::Worker);
    converge(&mut s);
    assert_eq!(spread(&s, &id).len(), 3);
    s.apply(&Command::UpdateNode {
        id: "w3aaaaaaaaaaaaaaaaaaaaaaa".into(),
        availability: Some(Availability::Drain),
        label_add: BTreeMap::new(),
        label_rm: vec![],
        at: 600,
    })
    .into_result()
    .unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, &id).len(), 2);
}

#[test]
fn ingress_ports_are_unique_and_allocated_from_30000() {
    let mut s = three_nodes();
    let mut web = spec("web", 1);
    web.ports = vec!["5000:80".parse().unwrap(), "8080".parse().unwrap()];
    create(&mut s, &web, "svcweb").unwrap();
    let ports = &s.services["svcweb"].spec.ports;
    assert_eq!(ports[1].published, Some(30000));

    let mut clash = spec("api", 1);
    clash.ports = vec!["5000:8000".parse().unwrap()];
    let e = create(&mut s, &clash, "svcapi").unwrap_err();
    assert_eq!(
        e.to_string(),
        "port '5000' is already in use by service 'web' (svcweb) as an ingress port"
    );
    // The same number over UDP is another port; the next dynamic one is 30001.
    clash.ports = vec!["5000:8000/udp".parse().unwrap(), "9000".parse().unwrap()];
    create(&mut s, &clash, "svcapi").unwrap();
    assert_eq!(s.services["svcapi"].spec.ports[1].published, Some(30001));

    // A racing second proposal of the same port is refused by apply itself.
    let mut racer = s.services["svcweb"].clone();
    racer.id = "svcrace".into();
    racer.spec.name = "race".into();
    let out = s.apply(&Command::CreateService {
        service: Box::new(racer),
    });
    assert!(matches!(
        out.refused,
        Some(Refusal::PortInUse { port: 5000, .. })
    ));

    let mut dnsrr = spec("rr", 1);
    dnsrr.endpoint_mode = crate::state::service::EndpointMode::Dnsrr;
    dnsrr.ports = vec!["7000:80".parse().unwrap()];
    assert_eq!(
        create(&mut s, &dnsrr, "svcrr").unwrap_err(),
        Refusal::DnsrrWithIngress
    );
    let dup = create(&mut s, &spec("web", 1), "svcdup").unwrap_err();
    assert_eq!(dup.to_string(), "service web already exists");
    let bad = create(&mut s, &spec("-web", 1), "svcbad").unwrap_err();
    assert!(matches!(bad, Refusal::BadServiceName(_)));
    let mut empty = spec("empty", 1);
    empty.command.clear();
    assert!(create(&mut s, &empty, "svcempty")
        .unwrap_err()
        .to_string()
        .contains("needs a command"));
}

#[test]
fn host_mode_ports_keep_tasks_on_different_nodes() {
    let mut s = three_nodes();
    let mut h = spec("edge", 4);
    h.ports = vec![PortConfig {
        protocol: Protocol::Tcp,
        target: 80,
        published: Some(8080),
        mode: PublishMode::Host,
        proxy_protocol: false,
    }];
    let id = create(&mut s, &h, "svc1").unwrap();
    converge(&mut s);
    assert_eq!(spread(&s, &id)[""], 1);
    let pending = s
        .service_tasks(&id)
        .into_iter()
        .find(|t| t.status.state == TaskState::Pending)
        .unwrap();
    assert_eq!(
        pending.status.err.as_deref(),
        Some("no suitable node (host-mode port already in use on 3 nodes)")
    );
}

/// A host-mode port needs its published port (no node picks one), and a
/// port cannot be published in host mode by one service and through the
/// routing mesh by another: every node listens on the mesh's ports.
#[test]
fn host_mode_ports_need_a_published_port_that_the_mesh_does_not_use() {
    let mut s = three_nodes();
    let mut h = spec("edge", 1);
    h.ports = vec!["target=80,mode=host".parse().unwrap()];
    assert_eq!(
        create(&mut s, &h, "svc1").unwrap_err().to_string(),
        "invalid service spec: host-mode port 80/tcp needs a published port: use published=PORT,target=80,mode=host"
    );
    h.ports = vec!["published=30000,target=80,mode=host".parse().unwrap()];
    create(&mut s, &h, "svc1").unwrap();

    // The mesh's dynamic ports skip it, and cannot take it explicitly.
    let mut web = spec("web", 1);
    web.ports = vec!["8080".parse().unwrap()];
    create(&mut s, &web, "svc2").unwrap();
    assert_eq!(s.services["svc2"].spec.ports[0].published, Some(30001));
    let mut clash = spec("api", 1);
    clash.ports = vec!["30000:80".parse().unwrap()];
    assert_eq!(
        create(&mut s, &clash, "svc3").unwrap_err().to_string(),
        "invalid service spec: port 30000/tcp is published in host mode by service edge (svc1); it cannot be an ingress port too"
    );
    // Nor the other way round.
    let mut edge2 = spec("edge2", 1);
    edge2.ports = vec!["published=30001,target=80,mode=host".parse().unwrap()];
    assert_eq!(
        create(&mut s, &edge2, "svc4").unwrap_err(),
        Refusal::PortInUse {
            port: 30001,
            service: "web".into(),
            id: "svc2".into()
        }
    );
    // Two services may share a host-mode port: the scheduler keeps their
    // tasks on different nodes.
    edge2.ports = vec!["published=30000,target=80,mode=host".parse().unwrap()];
    create(&mut s, &edge2, "svc4").unwrap();
}

#[test]
fn networks_in_use_by_a_service_cannot_be_removed() {
    let mut s = three_nodes();
    let net = s
        .plan_network(
            &NetworkSpec {
                name: "backend".into(),
                driver: "overlay".into(),
                ..Default::default()
            },
            "net1".into(),
            100,
        )
        .unwrap();
    s.apply(&Command::CreateNetwork {
        network: Box::new(net),
    })
    .into_result()
    .unwrap();
    let mut web = spec("web", 1);
    web.networks = vec!["backend".into()];
    web.ports = vec!["5000:80".parse().unwrap()];
    create(&mut s, &web, "svc1").unwrap();
    assert_eq!(s.services["svc1"].spec.networks, ["net1"]);
    let e = s
        .apply(&Command::RemoveNetwork { id: "net1".into() })
        .into_result()
        .unwrap_err();
    assert_eq!(e.to_string(), "network backend is in use by service web");
    let ingress = s.find_network("ingress").unwrap().id.clone();
    let e = s
        .apply(&Command::RemoveNetwork { id: ingress })
        .into_result()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ingress network cannot be removed because service web depends on it"
    );
    let mut on_ingress = spec("x", 1);
    on_ingress.networks = vec!["ingress".into()];
    assert!(matches!(
        create(&mut s, &on_ingress, "svc2"),
        Err(Refusal::IngressAttach(_))
    ));
    // Removing the service frees the network and drops its tasks.
    converge(&mut s);
    s.apply(&Command::RemoveService { id: "svc1".into() })
        .into_result()
        .unwrap();
    assert!(s.tasks.is_empty());
    s.apply(&Command::RemoveNetwork { id: "net1".into() })
        .into_result()
        .unwrap();
}

#[test]
fn stale_task_plans_are_refused_whole() {
    let mut s = three_nodes();
    create(&mut s, &spec("web", 2), "svc1").unwrap();
    let mut ids = 0;
    let plan = reconcile(&s, 300, &mut || {
        ids += 1;
        format!("a{ids}")
    })
    .unwrap();
    // Another plan for the same slots, made from the same state (a failover).
    let mut ids = 0;
    let twin = reconcile(&s, 300, &mut || {
        ids += 1;
        format!("b{ids}")
    })
    .unwrap();
    s.apply(&plan).into_result().unwrap();
    let before = s.clone();
    let e = s.apply(&twin).into_result().unwrap_err();
    assert!(e.to_string().contains("second live task"), "{e}");
    assert_eq!(s, before);
    s.apply(&Command::RemoveService { id: "svc1".into() })
        .into_result()
        .unwrap();
    assert!(matches!(
        s.apply(&plan).into_result(),
        Err(Refusal::StaleTasks(_))
    ));
}

fn arb_node() -> impl Strategy<Value = (bool, u8, bool, Option<u8>)> {
    // (manager, availability 0..3, down, zone label)
    (
        any::<bool>(),
        0u8..3,
        proptest::bool::weighted(0.2),
        proptest::option::of(0u8..3),
    )
}

proptest! {
    /// Whatever the nodes, the replica count, the constraint and the cap:
    /// every placed task sits on a Ready, Active node that satisfies the
    /// constraints and the cap, the live tasks fill exactly the slots asked
    /// for, and among the eligible nodes no node holds more than one task
    /// more than another (spread), unless the cap stops it.
    #[test]
    fn placements_respect_filters_and_spread(
        nodes in proptest::collection::vec(arb_node(), 1..7),
        replicas in 0u64..20,
        constraint in proptest::option::of(0u8..4),
        cap in proptest::option::of(1u64..4),
    ) {
        let mut s = init();
        for (i, (manager, avail, down, zone)) in nodes.iter().enumerate() {
            let id = format!("n{i}aaaaaaaaaaaaaaaaaaaaaaa");
            join(&mut s, &id, &format!("host{i}"), if *manager { Role::Manager } else { Role::Worker });
            let availability = [Availability::Active, Availability::Pause, Availability::Drain][*avail as usize];
            let label_add = zone.map(|z| BTreeMap::from([("zone".to_string(), format!("z{z}"))])).unwrap_or_default();
            s.apply(&Command::UpdateNode { id: id.clone(), availability: Some(availability), label_add, label_rm: vec![], at: 1 }).into_result().unwrap();
            if *down {
                s.apply(&Command::SetStatus { id, status: NodeStatus::Down, message: String::new(), at: 1 }).into_result().unwrap();
            }
        }
        let mut sp = spec("web", replicas);
        sp.constraints = match constraint {
            Some(0) => vec!["node.role==worker".parse().unwrap()],
            Some(1) => vec!["node.labels.zone==z1".parse().unwrap()],
            Some(2) => vec!["node.labels.zone!=z0".parse().unwrap()],
            Some(_) => vec!["node.hostname!=host0".parse().unwrap()],
            None => vec![],
        };
        sp.max_replicas_per_node = cap;
        create(&mut s, &sp, "svc1").unwrap();
        converge(&mut s);
        let service = s.services["svc1"].clone();
        let live: Vec<&Task> = s.tasks.values().filter(|t| t.is_live()).collect();
        prop_assert_eq!(live.len() as u64, replicas);
        let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &live {
            match (&t.node_id, t.status.state) {
                (Some(n), TaskState::Assigned) => {
                    let node = &s.nodes[n];
                    prop_assert_eq!(node.status, NodeStatus::Ready);
                    prop_assert_eq!(node.availability, Availability::Active);
                    prop_assert!(constraint::all_match(&service.spec.constraints, node));
                    *per_node.entry(n.as_str()).or_default() += 1;
                }
                (None, TaskState::Pending) => {
                    prop_assert!(t.status.err.as_deref().unwrap_or("").starts_with("no suitable node"));
                }
                other => prop_assert!(false, "unexpected task {:?}", other),
            }
        }
        let eligible: Vec<&Node> = s.nodes.values().filter(|n| {
            n.status == NodeStatus::Ready && n.availability == Availability::Active
                && constraint::all_match(&service.spec.constraints, n)
        }).collect();
        let counts: Vec<u64> = eligible.iter().map(|n| per_node.get(n.id.as_str()).copied().unwrap_or(0)).collect();
        if let Some(cap) = cap {
            prop_assert!(counts.iter().all(|&c| c <= cap));
        }
        let placed: u64 = counts.iter().sum();
        let (lo, hi) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
        prop_assert!(hi - lo <= 1, "uneven spread {:?}", counts);
        // Everything that could be placed was placed.
        let room = if eligible.is_empty() { 0 } else { cap.map_or(u64::MAX, |c| c * eligible.len() as u64) };
        prop_assert_eq!(placed, replicas.min(room));
        // And a converged state proposes nothing.
        prop_assert!(reconcile(&s, 999, &mut || unreachable!()).is_none());
    }
}
