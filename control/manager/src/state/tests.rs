use super::*;
use proptest::prelude::*;

fn node(id: &str, hostname: &str, role: Role) -> Node {
    Node {
        id: id.into(),
        hostname: hostname.into(),
        role,
        availability: Availability::Active,
        labels: BTreeMap::new(),
        addr: "10.99.0.11".parse().unwrap(),
        api_addr: (role == Role::Manager).then(|| "10.99.0.11:2377".parse().unwrap()),
        raft_id: (role == Role::Manager).then_some(1),
        status: NodeStatus::Ready,
        status_message: String::new(),
        created_at: 100,
        updated_at: 100,
        version: 1,
        ingress_ip: None,
        engine: None,
    }
}

fn key(id: u8) -> ClusterKey {
    ClusterKey {
        id,
        secret: format!("{id:064x}"),
        created_at: id as u64,
    }
}

fn init() -> ClusterState {
    let mut s = ClusterState::default();
    let cluster = Cluster {
        id: "c1".into(),
        created_at: 100,
        ca_cert: "CERT".into(),
        ca_key: "KEY".into(),
        tokens: JoinTokens {
            worker: "W".into(),
            manager: "M".into(),
        },
        network_keys: vec![key(1)],
        gossip_keys: vec![key(1)],
        keys_rotated_at: 100,
        settings: ClusterSettings::default(),
        address_pool: AddressPool::default(),
    };
    let ingress = network::initial_ingress(&cluster, "ing0000000000000000000000".into(), 100)
        .expect("ingress of the default pool");
    let out = s.apply(&Command::Init {
        cluster: Box::new(cluster),
        node: Box::new(node("m1aaaaaaaaaaaaaaaaaaaaaaa", "mgr1", Role::Manager)),
        networks: vec![ingress],
    });
    assert_eq!(out, Outcome::default());
    s
}

fn join(s: &mut ClusterState, id: &str, hostname: &str, role: Role) {
    s.apply(&Command::Join {
        node: Box::new(node(id, hostname, role)),
    })
    .into_result()
    .unwrap();
}

#[test]
fn init_twice_is_refused_and_changes_nothing() {
    let mut s = init();
    let before = s.clone();
    let out = s.apply(&Command::Init {
        cluster: Box::new(before.cluster.clone().unwrap()),
        node: Box::new(node("other", "x", Role::Manager)),
        networks: vec![],
    });
    assert_eq!(out.refused, Some(Refusal::AlreadyInitialised));
    assert_eq!(s, before);
}

#[test]
fn commands_before_init_are_refused() {
    let mut s = ClusterState::default();
    let out = s.apply(&Command::Join {
        node: Box::new(node("w1", "w", Role::Worker)),
    });
    assert_eq!(out.refused, Some(Refusal::NoCluster));
    assert!(s.nodes.is_empty());
}

#[test]
fn labels_and_availability_update_and_bad_labels_change_nothing() {
    let mut s = init();
    join(&mut s, "w1bbbbbbbbbbbbbbbbbbbbbbb", "worker1", Role::Worker);
    let update = |add: &[(&str, &str)], rm: &[&str], a: Option<Availability>| Command::UpdateNode {
        id: "w1bbbbbbbbbbbbbbbbbbbbbbb".into(),
        availability: a,
        label_add: add
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        label_rm: rm.iter().map(|k| k.to_string()).collect(),
        at: 200,
    };
    s.apply(&update(
        &[("zone", "a"), ("ssd", "yes")],
        &[],
        Some(Availability::Drain),
    ))
    .into_result()
    .unwrap();
    s.apply(&update(&[("zone", "b")], &["ssd"], None))
        .into_result()
        .unwrap();
    let n = &s.nodes["w1bbbbbbbbbbbbbbbbbbbbbbb"];
    assert_eq!(n.availability, Availability::Drain);
    assert_eq!(n.labels, BTreeMap::from([("zone".into(), "b".into())]));
    assert_eq!(n.version, 3);
    let before = s.clone();
    let out = s.apply(&update(&[("bad=key", "v"), ("good", "v")], &[], None));
    assert_eq!(out.refused, Some(Refusal::BadLabel("bad=key".into())));
    assert_eq!(s, before);
}

#[test]
fn a_manager_cannot_be_removed_until_demoted_and_an_up_node_only_with_force() {
    let mut s = init();
    join(&mut s, "m2ccccccccccccccccccccccc", "mgr2", Role::Manager);
    let rm = |force| Command::RemoveNode {
        id: "m2ccccccccccccccccccccccc".into(),
        force,
    };
    let out = s.apply(&rm(true));
    assert_eq!(
        out.refused.unwrap().to_string(),
        "node m2ccccccccccccccccccccccc is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
    );
    s.apply(&Command::SetRole {
        id: "m2ccccccccccccccccccccccc".into(),
        role: Role::Worker,
        raft_id: None,
        at: 300,
    })
    .into_result()
    .unwrap();
    assert_eq!(s.nodes["m2ccccccccccccccccccccccc"].raft_id, None);
    let out = s.apply(&rm(false));
    assert_eq!(
        out.refused.unwrap().to_string(),
        "node m2ccccccccccccccccccccccc is not down and can't be removed"
    );
    s.apply(&rm(true)).into_result().unwrap();
    assert!(!s.nodes.contains_key("m2ccccccccccccccccccccccc"));
}

#[test]
fn the_last_manager_cannot_be_demoted() {
    let mut s = init();
    let out = s.apply(&Command::SetRole {
        id: "m1aaaaaaaaaaaaaaaaaaaaaaa".into(),
        role: Role::Worker,
        raft_id: None,
        at: 1,
    });
    assert_eq!(out.refused, Some(Refusal::LastManager));
    assert_eq!(s.managers().count(), 1);
}

#[test]
fn a_leaving_manager_becomes_a_down_worker_that_node_rm_removes_but_the_last_cannot_leave() {
    let mut s = init();
    join(&mut s, "m2ccccccccccccccccccccccc", "mgr2", Role::Manager);
    s.apply(&Command::Leave {
        id: "m2ccccccccccccccccccccccc".into(),
        at: 300,
    })
    .into_result()
    .unwrap();
    let n = &s.nodes["m2ccccccccccccccccccccccc"];
    assert_eq!(
        (n.role, n.raft_id, n.status),
        (Role::Worker, None, NodeStatus::Down)
    );
    assert_eq!(n.status_message, "node left the swarm");
    assert_eq!(s.managers().count(), 1);
    let before = s.clone();
    let out = s.apply(&Command::Leave {
        id: "m1aaaaaaaaaaaaaaaaaaaaaaa".into(),
        at: 301,
    });
    assert_eq!(out.refused, Some(Refusal::LastManager));
    assert_eq!(s, before);
    s.apply(&Command::RemoveNode {
        id: "m2ccccccccccccccccccccccc".into(),
        force: false,
    })
    .into_result()
    .unwrap();
}

#[test]
fn settings_from_before_cert_expiry_read_as_ninety_days() {
    let old = r#"{"key_rotation_secs":43200,"node_down_secs":5,"heartbeat_secs":1}"#;
    let s: ClusterSettings = serde_json::from_str(old).unwrap();
    assert_eq!(s.node_cert_secs, 90 * 24 * 3600);
}

#[test]
fn rotation_keeps_three_keys_newest_last_and_refuses_reused_ids() {
    let mut s = init();
    for id in 2..=5u8 {
        s.apply(&Command::RotateKeys {
            network: key(id),
            gossip: key(id),
            at: id as u64,
        })
        .into_result()
        .unwrap();
    }
    let c = s.cluster.as_ref().unwrap();
    let ids: Vec<u8> = c.network_keys.iter().map(|k| k.id).collect();
    assert_eq!(ids, vec![3, 4, 5]);
    assert_eq!(c.keys_rotated_at, 5);
    assert_eq!(ClusterState::next_key_id(&c.network_keys), 6);
    let out = s.apply(&Command::RotateKeys {
        network: key(4),
        gossip: key(9),
        at: 9,
    });
    assert_eq!(out.refused, Some(Refusal::KeyIdInUse(4)));
    assert_eq!(ClusterState::next_key_id(&[key(255)]), 1);
}

#[test]
fn force_new_cluster_keeps_one_manager_and_every_node() {
    let mut s = init();
    join(&mut s, "m2ccccccccccccccccccccccc", "mgr2", Role::Manager);
    join(&mut s, "w1bbbbbbbbbbbbbbbbbbbbbbb", "worker1", Role::Worker);
    s.apply(&Command::ForceNewCluster {
        id: "m2ccccccccccccccccccccccc".into(),
        raft_id: 7,
        at: 500,
    })
    .into_result()
    .unwrap();
    let managers: Vec<&str> = s.managers().map(|n| n.id.as_str()).collect();
    assert_eq!(managers, vec!["m2ccccccccccccccccccccccc"]);
    assert_eq!(s.nodes["m2ccccccccccccccccccccccc"].raft_id, Some(7));
    assert_eq!(
        s.nodes["m1aaaaaaaaaaaaaaaaaaaaaaa"].status,
        NodeStatus::Down
    );
    assert_eq!(s.nodes.len(), 3);
}

#[test]
fn nodes_are_found_by_id_prefix_or_hostname_and_ambiguity_is_named() {
    let mut s = init();
    join(&mut s, "w1bbbbbbbbbbbbbbbbbbbbbbb", "worker1", Role::Worker);
    join(&mut s, "w1cccccccccccccccccccccc", "worker2", Role::Worker);
    assert_eq!(
        s.find_node("worker2").unwrap().id,
        "w1cccccccccccccccccccccc"
    );
    assert_eq!(s.find_node("w1b").unwrap().hostname, "worker1");
    assert!(s.find_node("w1").unwrap_err().contains("ambiguous"));
    assert!(s.find_node("zzz").unwrap_err().contains("not found"));
}

fn arb_command() -> impl Strategy<Value = Command> {
    let ids = prop::sample::select(vec![
        "m1aaaaaaaaaaaaaaaaaaaaaaa",
        "w1bbbbbbbbbbbbbbbbbbbbbbb",
        "nope",
    ]);
    prop_oneof![
        (ids.clone(), any::<bool>()).prop_map(|(id, force)| Command::RemoveNode {
            id: id.into(),
            force
        }),
        (ids.clone(), any::<bool>()).prop_map(|(id, m)| Command::SetRole {
            id: id.into(),
            role: if m { Role::Manager } else { Role::Worker },
            raft_id: m.then_some(2),
            at: 7,
        }),
        (ids.clone(), "[a-z=]{0,4}").prop_map(|(id, k)| Command::UpdateNode {
            id: id.into(),
            availability: Some(Availability::Pause),
            label_add: BTreeMap::from([(k, "v".into())]),
            label_rm: vec![],
            at: 8,
        }),
        (1u8..8).prop_map(|id| Command::RotateKeys {
            network: key(id),
            gossip: key(id),
            at: 9
        }),
    ]
}

proptest! {
    /// Replicas that apply the same commands agree, a refused command changes
    /// nothing, and the swarm never loses its last manager.
    #[test]
    fn replicas_agree_and_refusals_change_nothing(cmds in prop::collection::vec(arb_command(), 0..40)) {
        let mut a = init();
        join(&mut a, "w1bbbbbbbbbbbbbbbbbbbbbbb", "worker1", Role::Worker);
        let mut b = a.clone();
        for cmd in &cmds {
            let before = a.clone();
            let out = a.apply(cmd);
            prop_assert_eq!(&out, &b.apply(cmd));
            if out.refused.is_some() {
                prop_assert_eq!(&a, &before);
            }
            prop_assert!(a.managers().count() >= 1);
            let keys = &a.cluster.as_ref().unwrap().network_keys;
            prop_assert!(keys.len() <= KEPT_KEYS);
        }
        prop_assert_eq!(a, b);
    }
}

// ---- networks ----

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: "overlay".into(),
        ..Default::default()
    }
}

fn net_id(name: &str) -> String {
    format!("{name:x<25}").chars().take(25).collect()
}

/// Plans `spec` as the leader would and applies it as every manager would.
fn create(s: &mut ClusterState, spec: &NetworkSpec) -> Result<Network, Refusal> {
    let network = s.plan_network(spec, net_id(&spec.name), 200)?;
    s.apply(&Command::CreateNetwork {
        network: Box::new(network.clone()),
    })
    .into_result()?;
    Ok(network)
}

fn with_subnet(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        subnet: Some(subnet.parse().unwrap()),
        ..spec(name)
    }
}

fn cidr(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

/// A swarm whose default address pool is `pool` in `/size` blocks.
fn init_with_pool(pool: &str, size: u8) -> ClusterState {
    let mut s = init();
    let cluster = s.cluster.as_mut().unwrap();
    cluster.address_pool = AddressPool::new(cidr(pool), size).unwrap();
    s.networks.clear();
    let ingress = network::initial_ingress(cluster, net_id("ingress"), 100).unwrap();
    s.networks.insert(ingress.id.clone(), ingress);
    s
}

#[test]
fn swarm_init_creates_the_ingress_network() {
    let s = init();
    let nets: Vec<&Network> = s.networks.values().collect();
    assert_eq!(nets.len(), 1);
    let ingress = nets[0];
    assert_eq!(ingress.name, "ingress");
    assert_eq!(ingress.subnet, cidr("10.0.0.0/24"));
    assert_eq!(ingress.gateway.to_string(), "10.0.0.1");
    assert_eq!(ingress.vni, 4096);
    assert!(ingress.ingress && !ingress.encrypted && !ingress.attachable);
    assert_eq!(ingress.driver, NetworkDriver::Overlay);
}

#[test]
fn a_refused_ingress_network_leaves_no_half_made_swarm() {
    let mut s = ClusterState::default();
    let mut cluster = init().cluster.unwrap();
    cluster.address_pool = AddressPool::default();
    let mut bad = network::initial_ingress(&cluster, net_id("ingress"), 1).unwrap();
    bad.vni = 7;
    let out = s.apply(&Command::Init {
        cluster: Box::new(cluster),
        node: Box::new(node("m1aaaaaaaaaaaaaaaaaaaaaaa", "mgr1", Role::Manager)),
        networks: vec![bad],
    });
    assert_eq!(out.refused, Some(Refusal::VniOutOfRange(7)));
    assert_eq!(s, ClusterState::default());
}

#[test]
fn networks_get_the_lowest_free_subnet_and_vni() {
    let mut s = init();
    let a = create(&mut s, &spec("a")).unwrap();
    let b = create(&mut s, &spec("b")).unwrap();
    assert_eq!((a.subnet, a.vni), (cidr("10.0.1.0/24"), 4097));
    assert_eq!((b.subnet, b.vni), (cidr("10.0.2.0/24"), 4098));
    assert_eq!(b.gateway.to_string(), "10.0.2.1");
    s.apply(&Command::RemoveNetwork { id: a.id.clone() })
        .into_result()
        .unwrap();
    let c = create(&mut s, &spec("c")).unwrap();
    assert_eq!((c.subnet, c.vni), (cidr("10.0.1.0/24"), 4097));
}

#[test]
fn allocation_skips_subnets_the_user_took() {
    let mut s = init();
    create(&mut s, &with_subnet("front", "10.0.2.0/23")).unwrap();
    let subnets: Vec<ipnet::Ipv4Net> = (0..3)
        .map(|i| create(&mut s, &spec(&format!("n{i}"))).unwrap().subnet)
        .collect();
    assert_eq!(
        subnets,
        vec![
            cidr("10.0.1.0/24"),
            cidr("10.0.4.0/24"),
            cidr("10.0.5.0/24")
        ]
    );
}

#[test]
fn a_user_subnet_that_overlaps_is_refused_naming_the_other_network() {
    let mut s = init();
    create(&mut s, &with_subnet("front", "10.20.0.0/16")).unwrap();
    let before = s.clone();
    let err = create(&mut s, &with_subnet("back", "10.20.5.0/24")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet 10.20.5.0/24 overlaps network front (10.20.0.0/16)"
    );
    let err = create(&mut s, &with_subnet("wide", "10.0.0.0/8")).unwrap_err();
    assert!(err.to_string().contains("overlaps network"), "{err}");
    assert_eq!(s, before);
}

#[test]
fn an_exhausted_pool_says_so_and_a_user_subnet_still_works() {
    // Two /24 blocks: ingress takes the first.
    let mut s = init_with_pool("10.9.0.0/23", 24);
    let ingress = s.networks.values().next().unwrap();
    assert_eq!(ingress.subnet, cidr("10.9.0.0/24"));
    assert_eq!(
        create(&mut s, &spec("a")).unwrap().subnet,
        cidr("10.9.1.0/24")
    );
    let err = create(&mut s, &spec("b")).unwrap_err();
    assert_eq!(
        err,
        Refusal::PoolExhausted {
            pool: cidr("10.9.0.0/23"),
            size: 24
        }
    );
    assert!(err.to_string().starts_with(
        "could not find an available, non-overlapping IPv4 address pool among the defaults"
    ));
    assert!(err.to_string().contains("10.9.0.0/23"), "{err}");
    create(&mut s, &with_subnet("b", "192.168.7.0/24")).unwrap();
}

#[test]
fn address_pools_are_checked_with_clear_errors() {
    let e = AddressPool::new(cidr("10.1.2.3/16"), 24).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid --default-addr-pool 10.1.2.3/16: host bits are set; the network is 10.1.0.0/16"
    );
    let e = AddressPool::new(cidr("10.1.0.0/16"), 12).unwrap_err();
    assert!(
        e.to_string().contains("--default-addr-pool-mask-length 12"),
        "{e}"
    );
    assert!(e.to_string().contains("between 16"), "{e}");
    assert!(AddressPool::new(cidr("10.1.0.0/16"), 31).is_err());
    assert!(AddressPool::new(cidr("10.1.0.0/16"), 16).is_ok());
    // A pool that arrives from the replicated state goes through the same checks.
    let bad = r#"{"pool":"10.0.0.0/8","subnet_size":4}"#;
    assert!(serde_json::from_str::<AddressPool>(bad).is_err());
}

#[test]
fn the_lowest_free_vni_and_exhaustion() {
    use std::collections::BTreeSet;
    let used: BTreeSet<u32> = [5, 7].into();
    assert_eq!(network::lowest_free(&used, 5, 7), Some(6));
    let full: BTreeSet<u32> = [5, 6, 7].into();
    assert_eq!(network::lowest_free(&full, 5, 7), None);
    assert_eq!(network::lowest_free(&BTreeSet::new(), 5, 7), Some(5));
    assert_eq!(
        network::lowest_free(&[u32::MAX].into(), u32::MAX, u32::MAX),
        None
    );
    // A command that brings its own VNI is checked against the range and the others.
    let mut s = init();
    let mut n = s.plan_network(&spec("a"), net_id("a"), 1).unwrap();
    n.vni = 4096;
    let out = s.apply(&Command::CreateNetwork {
        network: Box::new(n.clone()),
    });
    assert_eq!(
        out.refused.unwrap().to_string(),
        "VXLAN id 4096 is already used by network ingress"
    );
    n.vni = MAX_VNI + 1;
    let out = s.apply(&Command::CreateNetwork {
        network: Box::new(n),
    });
    assert_eq!(out.refused, Some(Refusal::VniOutOfRange(MAX_VNI + 1)));
}

#[test]
fn a_racing_duplicate_is_refused_not_applied_twice() {
    let mut s = init();
    // Two plans from the same state get the same subnet and VNI.
    let first = s.plan_network(&spec("a"), net_id("a"), 1).unwrap();
    let second = s.plan_network(&spec("b"), net_id("b"), 1).unwrap();
    assert_eq!((first.subnet, first.vni), (second.subnet, second.vni));
    s.apply(&Command::CreateNetwork {
        network: Box::new(first),
    })
    .into_result()
    .unwrap();
    let before = s.clone();
    let out = s.apply(&Command::CreateNetwork {
        network: Box::new(second),
    });
    assert_eq!(
        out.refused.unwrap().to_string(),
        "subnet 10.0.1.0/24 overlaps network a (10.0.1.0/24)"
    );
    assert_eq!(s, before);
    // The same name twice, even with different resources.
    let mut again = s.plan_network(&spec("c"), net_id("c"), 1).unwrap();
    again.name = "a".into();
    let out = s.apply(&Command::CreateNetwork {
        network: Box::new(again),
    });
    assert_eq!(
        out.refused.unwrap().to_string(),
        "network with name a already exists"
    );
}

#[test]
fn bad_network_requests_are_refused_with_their_reason() {
    let mut s = init();
    create(&mut s, &spec("front")).unwrap();
    let cases: Vec<(NetworkSpec, &str)> = vec![
        (spec("front"), "network with name front already exists"),
        (
            NetworkSpec {
                driver: "bridge".into(),
                ..spec("x")
            },
            "network driver \"bridge\" is not supported by shoal; use overlay",
        ),
        (spec("bad name"), "invalid network name \"bad name\""),
        (spec("-lead"), "invalid network name \"-lead\""),
        (spec(&"n".repeat(64)), "at most 63 characters"),
        (
            with_subnet("x", "10.50.0.1/24"),
            "invalid subnet 10.50.0.1/24: host bits are set; the network is 10.50.0.0/24",
        ),
        (
            with_subnet("x", "10.50.0.0/31"),
            "invalid subnet 10.50.0.0/31: it is too small",
        ),
        (
            NetworkSpec {
                gateway: Some("10.60.0.1".parse().unwrap()),
                ..with_subnet("x", "10.50.0.0/24")
            },
            "invalid gateway 10.60.0.1 for subnet 10.50.0.0/24: it is outside the subnet",
        ),
        (
            NetworkSpec {
                gateway: Some("10.50.0.255".parse().unwrap()),
                ..with_subnet("x", "10.50.0.0/24")
            },
            "it is the subnet's broadcast address",
        ),
        (
            NetworkSpec {
                gateway: Some("10.50.0.1".parse().unwrap()),
                ..spec("x")
            },
            "a gateway needs its subnet: give --subnet together with --gateway",
        ),
        (
            NetworkSpec {
                options: BTreeMap::from([("mtu".into(), "1400".into())]),
                ..spec("x")
            },
            "invalid network option mtu (shoal's overlay driver knows only encrypted)",
        ),
        (
            NetworkSpec {
                options: BTreeMap::from([("encrypted".into(), "maybe".into())]),
                ..spec("x")
            },
            "invalid network option encrypted=maybe",
        ),
        (
            NetworkSpec {
                labels: BTreeMap::from([("a=b".into(), "c".into())]),
                ..spec("x")
            },
            "invalid label \"a=b\"",
        ),
        (
            NetworkSpec {
                ingress: true,
                ..spec("x")
            },
            "an ingress network (ingress) already exists; a swarm has at most one",
        ),
    ];
    let before = s.clone();
    for (spec, words) in cases {
        let err = create(&mut s, &spec).unwrap_err().to_string();
        assert!(err.contains(words), "{spec:?}: {err}");
    }
    assert_eq!(s, before);
}

#[test]
fn options_labels_and_a_user_gateway_are_kept() {
    let mut s = init();
    let n = create(
        &mut s,
        &NetworkSpec {
            gateway: Some("10.50.0.254".parse().unwrap()),
            options: BTreeMap::from([("encrypted".into(), String::new())]),
            attachable: true,
            labels: BTreeMap::from([("tier".into(), "front".into())]),
            ..with_subnet("front", "10.50.0.0/24")
        },
    )
    .unwrap();
    assert_eq!(n.gateway.to_string(), "10.50.0.254");
    assert!(n.encrypted && n.attachable && !n.ingress);
    assert_eq!(n.labels["tier"], "front");
    assert_eq!(s.networks[&n.id], n);
}

#[test]
fn ingress_can_be_removed_and_made_again_and_networks_are_found_like_docker() {
    let mut s = init();
    let front = create(&mut s, &spec("front")).unwrap();
    assert_eq!(s.find_network("front").unwrap().id, front.id);
    assert_eq!(s.find_network(&front.id).unwrap().name, "front");
    assert_eq!(s.find_network(&front.id[..6]).unwrap().name, "front");
    assert_eq!(
        s.find_network("nope").unwrap_err(),
        "network nope not found"
    );
    let ingress = s.find_network("ingress").unwrap().id.clone();
    assert!(s.network_users(&ingress).is_empty());
    s.apply(&Command::RemoveNetwork { id: ingress })
        .into_result()
        .unwrap();
    let again = create(
        &mut s,
        &NetworkSpec {
            ingress: true,
            ..spec("mesh")
        },
    )
    .unwrap();
    assert!(again.ingress);
    assert_eq!((again.subnet, again.vni), (cidr("10.0.0.0/24"), 4096));
    let out = s.apply(&Command::RemoveNetwork { id: "gone".into() });
    assert_eq!(out.refused.unwrap().to_string(), "network gone not found");
}

#[test]
fn states_from_before_networks_still_load() {
    let s = init();
    let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
    json.as_object_mut().unwrap().remove("networks");
    json.as_object_mut().unwrap().remove("secrets");
    json["cluster"]
        .as_object_mut()
        .unwrap()
        .remove("address_pool");
    let old: ClusterState = serde_json::from_value(json).unwrap();
    assert!(old.networks.is_empty() && old.secrets.is_empty());
    assert_eq!(old.cluster.unwrap().address_pool, AddressPool::default());
}

// ---- secrets ----

fn secret_spec(name: &str, data: &[u8]) -> SecretSpec {
    SecretSpec {
        name: name.into(),
        data: SecretData::new(data.to_vec()),
        labels: BTreeMap::new(),
    }
}

fn create_secret(s: &mut ClusterState, spec: &SecretSpec) -> Result<Secret, Refusal> {
    let secret = s.plan_secret(spec, net_id(&spec.name), 300)?;
    s.apply(&Command::CreateSecret {
        secret: Box::new(secret.clone()),
    })
    .into_result()?;
    Ok(secret)
}

#[test]
fn secrets_are_unique_by_name_sized_like_dockers_and_removable() {
    let mut s = init();
    let db = create_secret(&mut s, &secret_spec("db_password", b"hunter2")).unwrap();
    assert_eq!(s.secrets[&db.id].data.expose(), b"hunter2");
    assert_eq!(db.created_at, 300);
    let before = s.clone();
    let cases = [
        (
            secret_spec("db_password", b"x"),
            "secret db_password already exists".to_string(),
        ),
        (
            secret_spec("empty", b""),
            "secret data must be larger than 0 and less than 512000 bytes".into(),
        ),
        (
            secret_spec("big", &vec![7; MAX_SECRET_SIZE]),
            "secret data must be larger than 0 and less than 512000 bytes".into(),
        ),
        (
            secret_spec("bad/name", b"x"),
            "invalid secret name \"bad/name\": only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]".into(),
        ),
        (
            secret_spec(&"s".repeat(65), b"x"),
            "invalid secret name".into(),
        ),
    ];
    for (spec, words) in cases {
        let err = create_secret(&mut s, &spec).unwrap_err().to_string();
        assert!(err.contains(&words), "{}: {err}", spec.name);
    }
    assert_eq!(s, before);
    create_secret(
        &mut s,
        &secret_spec("largest.ok", &vec![7; MAX_SECRET_SIZE - 1]),
    )
    .unwrap();
    assert_eq!(s.find_secret("db_password").unwrap().id, db.id);
    assert_eq!(s.find_secret("nope").unwrap_err(), "secret nope not found");
    assert!(s.secret_users(&db.id).is_empty());
    s.apply(&Command::RemoveSecret { id: db.id.clone() })
        .into_result()
        .unwrap();
    assert!(s.find_secret("db_password").is_err());
    let out = s.apply(&Command::RemoveSecret { id: db.id });
    assert!(matches!(out.refused, Some(Refusal::NoSuchSecret(_))));
}

#[test]
fn secret_data_is_base64_in_json_and_never_in_debug() {
    let mut s = init();
    create_secret(&mut s, &secret_spec("api_key", b"hunter2")).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"data\":\"aHVudGVyMg==\""), "{json}");
    assert!(!json.contains("hunter2"));
    let back: ClusterState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let cmd = Command::CreateSecret {
        secret: Box::new(s.secrets.values().next().unwrap().clone()),
    };
    for text in [format!("{s:?}"), format!("{cmd:?}"), format!("{s:#?}")] {
        assert!(!text.contains("hunter2") && !text.contains("aHVudGVyMg"));
        assert!(text.contains("7 bytes, not shown"));
    }
    assert!(serde_json::from_str::<SecretData>("\"not base64!\"").is_err());
}

// ---- allocation never overlaps ----

#[derive(Debug, Clone)]
enum NetOp {
    Auto,
    User(ipnet::Ipv4Net),
    Remove(usize),
}

fn arb_net_op() -> impl Strategy<Value = NetOp> {
    prop_oneof![
        3 => Just(NetOp::Auto),
        2 => (0u32..(1 << 14), 18u8..=28).prop_map(|(offset, len)| {
            let addr = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + (offset << 4));
            NetOp::User(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
        }),
        2 => (0usize..64).prop_map(NetOp::Remove),
    ]
}

proptest! {
    /// Whatever mix of automatic and user subnets is created and removed, no
    /// two networks ever share an address or a VNI; an automatic allocation
    /// that the leader planned is always applied, and only fails when the
    /// pool is full; replicas stay equal.
    #[test]
    fn allocated_subnets_never_overlap(ops in prop::collection::vec(arb_net_op(), 0..60)) {
        let mut s = init_with_pool("10.0.0.0/20", 24);
        let mut replica = s.clone();
        for (i, op) in ops.iter().enumerate() {
            let name = format!("n{i}");
            let planned = match op {
                NetOp::Auto => s.plan_network(&spec(&name), net_id(&name), 1),
                NetOp::User(subnet) => s.plan_network(
                    &with_subnet(&name, &subnet.to_string()), net_id(&name), 1),
                NetOp::Remove(k) => {
                    let ids: Vec<String> = s.networks.keys().cloned().collect();
                    if ids.is_empty() { continue; }
                    let cmd = Command::RemoveNetwork { id: ids[k % ids.len()].clone() };
                    prop_assert_eq!(s.apply(&cmd), replica.apply(&cmd));
                    continue;
                }
            };
            match planned {
                Ok(network) => {
                    let cmd = Command::CreateNetwork { network: Box::new(network) };
                    let out = s.apply(&cmd);
                    prop_assert_eq!(&out, &replica.apply(&cmd));
                    prop_assert_eq!(out.refused, None);
                }
                Err(Refusal::PoolExhausted { .. }) => {
                    prop_assert!(matches!(op, NetOp::Auto));
                    // Full means full: every /24 of the pool touches a network.
                    let pool = s.cluster.as_ref().unwrap().address_pool.pool();
                    for block in pool.subnets(24).unwrap() {
                        prop_assert!(s.networks.values().any(|n| network::overlaps(&n.subnet, &block)));
                    }
                }
                Err(Refusal::SubnetOverlap { .. }) => prop_assert!(matches!(op, NetOp::User(_))),
                Err(other) => prop_assert!(false, "unexpected refusal {other}"),
            }
            let nets: Vec<&Network> = s.networks.values().collect();
            for (a, x) in nets.iter().enumerate() {
                for y in &nets[a + 1..] {
                    prop_assert!(!network::overlaps(&x.subnet, &y.subnet), "{} and {} overlap", x.subnet, y.subnet);
                    prop_assert_ne!(x.vni, y.vni);
                }
                prop_assert!(x.subnet.contains(&x.gateway));
            }
        }
        prop_assert_eq!(s, replica);
    }
}

mod services;
mod tasks;
