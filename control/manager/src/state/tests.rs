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
    };
    let out = s.apply(&Command::Init {
        cluster: Box::new(cluster),
        node: Box::new(node("m1aaaaaaaaaaaaaaaaaaaaaaa", "mgr1", Role::Manager)),
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
