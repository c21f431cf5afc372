//! Node reports, the restart policy, task addresses and assignments.

use super::*;
use crate::dispatch::assignments;
use crate::state::orchestrator::reconcile;
use crate::state::service::{RestartCondition, TaskStatus};
use crate::state::TaskUpdate;
use std::collections::BTreeSet;

const W1: &str = "w1aaaaaaaaaaaaaaaaaaaaaaa";
const W2: &str = "w2aaaaaaaaaaaaaaaaaaaaaaa";

fn cluster() -> ClusterState {
    let mut s = init();
    join(&mut s, W1, "wrk1", Role::Worker);
    join(&mut s, W2, "wrk2", Role::Worker);
    // Distinct underlay addresses, so assignments can tell nodes apart.
    s.nodes.get_mut(W1).unwrap().addr = "10.99.0.12".parse().unwrap();
    s.nodes.get_mut(W2).unwrap().addr = "10.99.0.13".parse().unwrap();
    s
}

/// Runs the orchestrator at time `now` until it has nothing left to do.
fn converge_at(s: &mut ClusterState, now: Timestamp) {
    let mut n = s.tasks.len() + 100;
    for _ in 0..6 {
        let mut ids = || {
            n += 1;
            format!("t{n:04}")
        };
        match reconcile(s, now, &mut ids) {
            None => return,
            Some(cmd) => {
                if std::env::var("SHOAL_DEBUG").is_ok() {
                    eprintln!("{cmd:?}");
                }
                s.apply(&cmd).into_result().unwrap()
            }
        }
    }
    panic!("the orchestrator did not converge");
}

fn service(s: &mut ClusterState, spec: ServiceSpec, id: &str) {
    let service = s.plan_service(&spec, id.into(), 200).unwrap();
    s.apply(&Command::CreateService {
        service: Box::new(service),
    })
    .into_result()
    .unwrap();
}

fn web(replicas: u64, networks: Vec<String>) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        mode: ServiceMode::Replicated { replicas },
        command: vec!["sleep".into(), "1000".into()],
        networks,
        ..Default::default()
    }
}

fn report(
    s: &mut ClusterState,
    task: &Task,
    state: TaskState,
    code: Option<i32>,
    at: u64,
) -> Outcome {
    let node = task.node_id.clone().expect("placed");
    s.apply(&Command::UpdateTaskStatus {
        node,
        updates: vec![TaskUpdate {
            task_id: task.id.clone(),
            status: TaskStatus {
                state,
                message: String::new(),
                err: None,
                exit_code: code,
                timestamp: at,
            },
        }],
    })
}

fn slot_tasks(s: &ClusterState, slot: u64) -> Vec<Task> {
    s.tasks
        .values()
        .filter(|t| t.slot == Some(slot))
        .cloned()
        .collect()
}

fn live_in_slot(s: &ClusterState, slot: u64) -> Task {
    let live: Vec<Task> = slot_tasks(s, slot)
        .into_iter()
        .filter(|t| t.is_live())
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    live[0].clone()
}

#[test]
fn nodes_report_only_their_tasks_and_only_forward() {
    let mut s = cluster();
    service(&mut s, web(3, vec![]), "svc1");
    converge_at(&mut s, 300);
    let t = live_in_slot(&s, 1);
    assert!(report(&mut s, &t, TaskState::Running, None, 301)
        .refused
        .is_none());
    assert_eq!(s.tasks[&t.id].status.state, TaskState::Running);
    // An older report that arrives late changes nothing.
    assert!(report(&mut s, &t, TaskState::Starting, None, 302)
        .refused
        .is_none());
    assert_eq!(s.tasks[&t.id].status.state, TaskState::Running);
    // Another node may not report on it.
    let other = s
        .nodes
        .keys()
        .find(|n| Some(*n) != t.node_id.as_ref())
        .unwrap()
        .clone();
    let before = s.clone();
    let out = s.apply(&Command::UpdateTaskStatus {
        node: other.clone(),
        updates: vec![TaskUpdate {
            task_id: t.id.clone(),
            status: TaskStatus {
                state: TaskState::Failed,
                ..Default::default()
            },
        }],
    });
    assert_eq!(
        out.refused,
        Some(Refusal::NotYourTask {
            node: other,
            task: t.id.clone()
        })
    );
    assert_eq!(s, before);
    // Nodes do not report manager states.
    let out = report(&mut s, &t, TaskState::Pending, None, 303);
    assert!(
        matches!(out.refused, Some(Refusal::BadTaskState(_))),
        "{out:?}"
    );
}

#[test]
fn failed_tasks_restart_after_the_delay_up_to_the_attempts() {
    let mut s = cluster();
    let mut spec = web(1, vec![]);
    spec.restart.delay_ns = 5_000_000_000;
    spec.restart.max_attempts = 2;
    service(&mut s, spec, "svc1");
    converge_at(&mut s, 300);
    let first = live_in_slot(&s, 1);
    report(&mut s, &first, TaskState::Running, None, 301);
    report(&mut s, &first, TaskState::Failed, Some(137), 310);
    // Within the delay nothing happens.
    converge_at(&mut s, 314);
    assert_eq!(slot_tasks(&s, 1).len(), 1);
    assert_eq!(live_in_slot(&s, 1).id, first.id);
    // After it, a replacement with one attempt behind it; the failed task
    // is history with its exit code.
    converge_at(&mut s, 315);
    let second = live_in_slot(&s, 1);
    assert_ne!(second.id, first.id);
    assert_eq!(second.restarts, 1);
    assert_eq!(second.status.state, TaskState::Assigned);
    let old = &s.tasks[&first.id];
    assert_eq!(old.desired_state, TaskState::Shutdown);
    assert_eq!(old.status.exit_code, Some(137));
    // Second failure: one more attempt; the third failure is the last.
    report(&mut s, &second, TaskState::Failed, Some(1), 320);
    converge_at(&mut s, 330);
    let third = live_in_slot(&s, 1);
    assert_eq!(third.restarts, 2);
    report(&mut s, &third, TaskState::Failed, Some(1), 331);
    converge_at(&mut s, 400);
    assert_eq!(s.tasks[&third.id].desired_state, TaskState::Complete);
    assert!(slot_tasks(&s, 1).iter().all(|t| !t.is_live()));
    assert!(reconcile(&s, 500, &mut || "x".into()).is_none(), "it rests");
}

#[test]
fn completed_tasks_rest_under_on_failure_and_none_but_restart_under_any() {
    for (condition, exit, restarts) in [
        (RestartCondition::OnFailure, TaskState::Complete, false),
        (RestartCondition::OnFailure, TaskState::Failed, true),
        (RestartCondition::None, TaskState::Failed, false),
        (RestartCondition::Any, TaskState::Complete, true),
    ] {
        let mut s = cluster();
        let mut spec = web(1, vec![]);
        spec.restart.condition = condition;
        spec.restart.delay_ns = 0;
        service(&mut s, spec, "svc1");
        converge_at(&mut s, 300);
        let t = live_in_slot(&s, 1);
        report(&mut s, &t, exit, Some(0), 301);
        converge_at(&mut s, 302);
        let tasks = slot_tasks(&s, 1);
        assert_eq!(
            tasks.len(),
            1 + usize::from(restarts),
            "{condition:?} {exit:?}"
        );
        if !restarts {
            assert_eq!(s.tasks[&t.id].desired_state, TaskState::Complete);
        }
    }
}

#[test]
fn tasks_get_distinct_addresses_and_free_them_when_they_end() {
    let mut s = cluster();
    let net = s
        .plan_network(
            &NetworkSpec {
                name: "backend".into(),
                driver: "overlay".into(),
                ..Default::default()
            },
            "net0000000000000000000000".into(),
            100,
        )
        .unwrap();
    s.apply(&Command::CreateNetwork {
        network: Box::new(net.clone()),
    })
    .into_result()
    .unwrap();
    let mut spec = web(3, vec!["backend".into()]);
    spec.restart.delay_ns = 0;
    service(&mut s, spec, "svc1");
    converge_at(&mut s, 300);
    let mut ips: Vec<_> = s
        .tasks
        .values()
        .map(|t| {
            assert_eq!(t.networks.len(), 1);
            assert_eq!(t.networks[0].network_id, net.id);
            t.networks[0].ip
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3);
    assert!(!ips.contains(&net.gateway));
    assert!(ips.iter().all(|ip| net.subnet.contains(ip)));

    // A task asked to stop keeps its address until its node says it stopped.
    let t = live_in_slot(&s, 1);
    report(&mut s, &t, TaskState::Running, None, 301);
    let mut stopping = s.tasks[&t.id].clone();
    stopping.desired_state = TaskState::Shutdown;
    s.tasks.insert(stopping.id.clone(), stopping.clone());
    converge_at(&mut s, 302);
    let replacement = live_in_slot(&s, 1);
    assert_ne!(replacement.networks[0].ip, t.networks[0].ip);
    // Once ended, it is free again.
    report(&mut s, &t, TaskState::Shutdown, Some(143), 303);
    assert!(!s.addresses_in_use(&net).contains(&t.networks[0].ip));

    // Each node's assignments list its tasks and their networks (where the
    // other tasks are is gossip's business).
    let a = assignments(&s, W1);
    let mine: Vec<&Task> = s
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(W1) && t.holds_addresses())
        .collect();
    assert_eq!(a.tasks.len(), mine.len());
    assert_eq!(a.networks.len(), 1);
    assert_eq!(a.networks[0].id, net.id);
}

#[test]
fn removed_tasks_go_once_stopped_and_tasks_of_departed_nodes_are_orphaned() {
    let mut s = cluster();
    service(&mut s, web(3, vec![]), "svc1");
    converge_at(&mut s, 300);
    for t in s.tasks.clone().values() {
        report(&mut s, t, TaskState::Running, None, 301);
    }
    // Scale down: slot 3 is asked to go, and goes once its node says so.
    let mut spec = s.services["svc1"].spec.clone();
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    s.apply(&Command::UpdateService {
        id: "svc1".into(),
        spec: Box::new(spec),
        at: 302,
        force: false,
        rollback: false,
    })
    .into_result()
    .unwrap();
    converge_at(&mut s, 302);
    let t3 = live_or_removing(&s, 3);
    assert_eq!(t3.desired_state, TaskState::Remove);
    report(&mut s, &t3, TaskState::Shutdown, Some(143), 303);
    converge_at(&mut s, 304);
    assert!(!s.tasks.contains_key(&t3.id));

    // A node removed while its task may run: the task is orphaned.
    let on_w2: Vec<Task> = s
        .tasks
        .values()
        .filter(|t| t.node_id.as_deref() == Some(W2) && t.is_live())
        .cloned()
        .collect();
    s.apply(&Command::RemoveNode {
        id: W2.into(),
        force: true,
    })
    .into_result()
    .unwrap();
    converge_at(&mut s, 305);
    for t in on_w2 {
        if let Some(now) = s.tasks.get(&t.id) {
            assert_eq!(now.status.state, TaskState::Orphaned, "{now:?}");
            assert!(!now.holds_addresses());
        }
    }
    assert_eq!(
        s.tasks
            .values()
            .filter(|t| t.is_live() && t.node_id.is_some())
            .count(),
        2
    );
}

fn live_or_removing(s: &ClusterState, slot: u64) -> Task {
    slot_tasks(s, slot)
        .into_iter()
        .find(|t| t.desired_state <= TaskState::Remove && !t.status.state.is_terminal())
        .expect("a task in the slot")
}

#[test]
fn a_plan_from_an_older_copy_does_not_undo_a_report() {
    let mut s = cluster();
    service(&mut s, web(1, vec![]), "svc1");
    converge_at(&mut s, 300);
    let t = live_in_slot(&s, 1);
    // The orchestrator's copy says assigned; the node then reports running.
    let mut planned = t.clone();
    planned.desired_state = TaskState::Shutdown;
    report(&mut s, &t, TaskState::Running, None, 301);
    s.apply(&Command::SetTasks {
        tasks: vec![planned],
        removed: vec![],
        updates: vec![],
        rollbacks: vec![],
        at: 302,
    })
    .into_result()
    .unwrap();
    let now = &s.tasks[&t.id];
    assert_eq!(now.status.state, TaskState::Running);
    assert_eq!(now.desired_state, TaskState::Shutdown);
}

fn run_all(s: &mut ClusterState, at: u64) {
    for t in s.tasks.clone().values() {
        if t.is_live() && t.status.state < TaskState::Running {
            report(s, t, TaskState::Running, None, at);
        }
    }
}

fn update(s: &mut ClusterState, f: impl FnOnce(&mut ServiceSpec), at: u64) {
    let mut spec = s.services["svc1"].spec.clone();
    f(&mut spec);
    s.apply(&Command::UpdateService {
        id: "svc1".into(),
        spec: Box::new(spec),
        at,
        force: false,
        rollback: false,
    })
    .into_result()
    .unwrap();
}

fn versions(s: &ClusterState) -> (usize, usize) {
    let svc = &s.services["svc1"];
    let live: Vec<&Task> = s.tasks.values().filter(|t| t.is_live()).collect();
    let old = live.iter().filter(|t| svc.is_outdated(t)).count();
    (old, live.len() - old)
}

#[test]
fn rolling_updates_go_batch_by_batch_and_complete() {
    use crate::state::update::UpdateState;
    let mut s = cluster();
    service(&mut s, web(3, vec![]), "svc1");
    converge_at(&mut s, 300);
    run_all(&mut s, 301);
    // Scaling replaces nothing.
    update(
        &mut s,
        |sp| sp.mode = ServiceMode::Replicated { replicas: 3 },
        302,
    );
    converge_at(&mut s, 302);
    assert_eq!(versions(&s), (0, 3));
    assert!(s.services["svc1"].update_status.is_none());
    // A new command: one task at a time (stop-first), each once the last runs.
    update(
        &mut s,
        |sp| {
            sp.command = vec!["sleep".into(), "2000".into()];
            sp.update.monitor_ns = 0;
        },
        310,
    );
    converge_at(&mut s, 310);
    assert_eq!(versions(&s), (2, 1));
    converge_at(&mut s, 311);
    assert_eq!(versions(&s), (2, 1), "waits for the new task to run");
    run_all(&mut s, 312);
    converge_at(&mut s, 312);
    assert_eq!(versions(&s), (1, 2));
    run_all(&mut s, 313);
    converge_at(&mut s, 313);
    run_all(&mut s, 314);
    converge_at(&mut s, 314);
    assert_eq!(versions(&s), (0, 3));
    let status = s.services["svc1"].update_status.clone().unwrap();
    assert_eq!(status.state, UpdateState::Completed, "{status:?}");
    assert_eq!(status.completed_at, Some(314));
}

#[test]
fn a_new_task_counts_as_updated_only_after_the_monitor_period() {
    let mut s = cluster();
    service(&mut s, web(2, vec![]), "svc1");
    converge_at(&mut s, 300);
    run_all(&mut s, 301);
    update(&mut s, |sp| sp.command = vec!["false".into()], 310);
    converge_at(&mut s, 310);
    run_all(&mut s, 311);
    // Running since 311: with the 5 s monitor the next batch waits.
    converge_at(&mut s, 315);
    assert_eq!(versions(&s), (1, 1));
    converge_at(&mut s, 316);
    assert_eq!(versions(&s), (0, 2));
}

#[test]
fn a_failing_update_pauses_or_rolls_back_and_start_first_keeps_the_old_task() {
    use crate::state::service::{FailureAction, UpdateOrder};
    use crate::state::update::UpdateState;
    for action in [FailureAction::Pause, FailureAction::Rollback] {
        let mut s = cluster();
        let mut spec = web(2, vec![]);
        spec.update.failure_action = action;
        spec.update.order = UpdateOrder::StartFirst;
        spec.restart.delay_ns = 60_000_000_000;
        service(&mut s, spec, "svc1");
        converge_at(&mut s, 300);
        run_all(&mut s, 301);
        update(&mut s, |sp| sp.command = vec!["false".into()], 310);
        converge_at(&mut s, 310);
        // Start-first: the old task of the slot still runs beside the new.
        assert_eq!(versions(&s), (2, 1), "{action:?}");
        let fresh: Task = s
            .tasks
            .values()
            .find(|t| t.is_live() && !s.services["svc1"].is_outdated(t))
            .unwrap()
            .clone();
        report(&mut s, &fresh, TaskState::Failed, Some(1), 311);
        converge_at(&mut s, 312);
        let svc = &s.services["svc1"];
        let status = svc.update_status.clone().unwrap();
        match action {
            FailureAction::Pause => {
                assert_eq!(status.state, UpdateState::Paused);
                assert!(status.message.contains(&fresh.id), "{status:?}");
                assert_eq!(svc.spec.command, ["false"]);
            }
            _ => {
                assert_eq!(status.state, UpdateState::RollbackStarted);
                assert_eq!(svc.spec.command, ["sleep", "1000"]);
            }
        }
        // The old tasks kept running all along.
        let old_running = s
            .tasks
            .values()
            .filter(|t| t.is_live() && t.status.state == TaskState::Running && t.spec_version == 1)
            .count();
        assert_eq!(old_running, 2, "{action:?}");
    }
}

fn network(s: &mut ClusterState, name: &str, id: &str) -> crate::state::network::Network {
    let net = s
        .plan_network(
            &NetworkSpec {
                name: name.into(),
                driver: "overlay".into(),
                ..Default::default()
            },
            id.into(),
            100,
        )
        .unwrap();
    s.apply(&Command::CreateNetwork {
        network: Box::new(net.clone()),
    })
    .into_result()
    .unwrap();
    net
}

#[test]
fn services_get_a_virtual_ip_per_network_apart_from_their_tasks() {
    let mut s = cluster();
    let front = network(&mut s, "front", "net0000000000000000000001");
    let back = network(&mut s, "back", "net0000000000000000000002");
    let ingress = s.networks.values().find(|n| n.ingress).unwrap().clone();
    let mut spec = web(2, vec!["front".into(), "back".into()]);
    spec.ports = vec!["5000:80".parse().unwrap()];
    service(&mut s, spec.clone(), "svc1");
    let vips = s.services["svc1"].vips.clone();
    // The ingress network first, then the service's own, in order.
    let nets: Vec<&str> = vips.iter().map(|v| v.network_id.as_str()).collect();
    assert_eq!(nets, [&ingress.id, &front.id, &back.id]);
    for (v, n) in vips.iter().zip([&ingress, &front, &back]) {
        assert!(n.subnet.contains(&v.ip) && v.ip != n.gateway, "{v:?}");
    }
    // Tasks never get a virtual IP's address.
    converge_at(&mut s, 300);
    for t in s.tasks.values() {
        for a in &t.networks {
            assert!(!vips.contains(a), "{a:?}");
        }
    }
    // Leaving a network frees its VIP; the others stay put.
    let mut fewer = s.services["svc1"].spec.clone();
    fewer.networks = vec![front.id.clone()];
    s.apply(&Command::UpdateService {
        id: "svc1".into(),
        spec: Box::new(fewer),
        at: 400,
        force: false,
        rollback: false,
    })
    .into_result()
    .unwrap();
    assert_eq!(s.services["svc1"].vips, vips[..2]);
    assert!(!s.addresses_in_use(&back).contains(&vips[2].ip));
    // dnsrr services have none.
    let mut rr = web(1, vec!["back".into()]);
    rr.name = "rr".into();
    rr.endpoint_mode = crate::state::service::EndpointMode::Dnsrr;
    service(&mut s, rr, "svc2");
    assert!(s.services["svc2"].vips.is_empty());
}

#[test]
fn every_node_takes_part_in_the_routing_mesh_with_its_own_ingress_address() {
    let mut s = cluster();
    let ingress = s.networks.values().find(|n| n.ingress).unwrap().clone();
    let ips: BTreeSet<_> = s.nodes.values().map(|n| n.ingress_ip.unwrap()).collect();
    assert_eq!(ips.len(), s.nodes.len());
    assert!(ips
        .iter()
        .all(|ip| ingress.subnet.contains(ip) && *ip != ingress.gateway));
    // Without a published port nobody needs the mesh.
    service(&mut s, web(1, vec![]), "svc0");
    assert!(assignments(&s, W1).ingress.is_none());
    let mut spec = web(1, vec![]);
    spec.name = "pub".into();
    spec.ports = vec!["5000:80".parse().unwrap()];
    service(&mut s, spec, "svc1");
    converge_at(&mut s, 300);
    for node in s.nodes.keys() {
        let a = assignments(&s, node);
        let i = a.ingress.expect("an ingress assignment on every node");
        assert_eq!(i.ip, s.nodes[node].ingress_ip.unwrap());
        assert_eq!(i.services.len(), 1);
        assert_eq!(i.services[0].ports[0].published, Some(5000));
        assert!(a.networks.iter().any(|n| n.id == ingress.id && n.ingress));
    }
    // Tasks and VIPs never take a node's ingress address.
    for t in s.tasks.values() {
        assert!(t.networks.iter().all(|a| !ips.contains(&a.ip)));
    }
    assert!(s.services["svc1"].vips.iter().all(|v| !ips.contains(&v.ip)));
}

#[test]
fn image_tasks_go_only_to_nodes_with_an_engine_and_say_why_otherwise() {
    let mut s = cluster();
    let mut spec = web(2, vec![]);
    spec.image = Some("shoal-test/busybox:latest".into());
    spec.command = vec![];
    service(&mut s, spec, "svc0000000000000000000000");
    converge_at(&mut s, 300);
    let pending: Vec<&Task> = s.tasks.values().collect();
    assert_eq!(pending.len(), 2);
    for t in &pending {
        assert!(t.node_id.is_none(), "{t:?}");
        assert!(
            t.status
                .err
                .as_deref()
                .unwrap_or_default()
                .contains("no container engine")
                || t.status.message.contains("no container engine"),
            "{:?}",
            t.status
        );
    }
    s.apply(&Command::SetEngine {
        id: W2.into(),
        engine: Some("Docker 20.10.24".into()),
        at: 301,
    })
    .into_result()
    .unwrap();
    converge_at(&mut s, 302);
    let placed: Vec<Option<&str>> = s
        .tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Running)
        .map(|t| t.node_id.as_deref())
        .collect();
    assert_eq!(placed, vec![Some(W2), Some(W2)]);
    let a = assignments(&s, W2);
    assert!(a
        .tasks
        .iter()
        .all(|t| t.image.as_deref() == Some("shoal-test/busybox:latest")));
}

#[test]
fn bad_images_and_image_changes_are_checked() {
    let mut s = cluster();
    for bad in ["", "has space", "-x", "UPPER"] {
        let mut spec = web(1, vec![]);
        spec.image = Some(bad.into());
        let err = s
            .plan_service(&spec, "svc0000000000000000000000".into(), 200)
            .and_then(|svc| {
                s.apply(&Command::CreateService {
                    service: Box::new(svc),
                })
                .into_result()
            })
            .unwrap_err();
        assert!(err.to_string().contains("--image"), "{bad:?}: {err}");
    }
    // A process service cannot gain an image by update; an image service
    // with an empty command runs the image's own.
    let spec = web(1, vec![]);
    let changes = update::ServiceChanges {
        image: Some("busybox".into()),
        ..Default::default()
    };
    assert!(update::apply_changes(&spec, &changes)
        .unwrap_err()
        .contains("created with --image"));
    let mut spec = web(1, vec![]);
    spec.image = Some("busybox".into());
    let new = update::apply_changes(&spec, &changes).unwrap();
    assert!(!update::redeploys(&spec, &new));
    let changes = update::ServiceChanges {
        image: Some("busybox:2".into()),
        ..Default::default()
    };
    let new = update::apply_changes(&spec, &changes).unwrap();
    assert!(update::redeploys(&spec, &new));
}

#[test]
fn attachments_take_free_addresses_only_on_attachable_networks_and_go_with_their_node() {
    let mut s = cluster();
    let plain = create(&mut s, &spec("plain")).unwrap();
    let att = create(
        &mut s,
        &NetworkSpec {
            attachable: true,
            ..spec("att")
        },
    )
    .unwrap();
    let attach = |s: &mut ClusterState, id: &str, net: &str, node: &str| {
        s.apply(&Command::Attach {
            id: id.into(),
            network: net.into(),
            node: node.into(),
            at: 400,
        })
        .into_result()
    };
    let err = attach(&mut s, "ep1", &plain.id, W1).unwrap_err();
    assert!(err.to_string().contains("not manually attachable"), "{err}");
    let err = attach(&mut s, "bad id", &att.id, W1).unwrap_err();
    assert!(err.to_string().contains("invalid attachment id"), "{err}");
    attach(&mut s, "ep1", &att.id, W1).unwrap();
    attach(&mut s, "ep1", &att.id, W1).unwrap();
    attach(&mut s, "ep1", &att.id, W2).unwrap();
    let ips: Vec<Ipv4Addr> = s.network_attachments(&att.id).map(|a| a.ip).collect();
    assert_eq!(ips.len(), 2, "one per node, the retry kept its address");
    assert_ne!(ips[0], ips[1]);
    assert!(!ips.contains(&att.gateway));
    // A task on the network takes neither address.
    service(
        &mut s,
        web(1, vec![att.id.clone()]),
        "svc0000000000000000000000",
    );
    converge_at(&mut s, 401);
    let task_ip = s.tasks.values().next().unwrap().networks[0].ip;
    assert!(!ips.contains(&task_ip));
    // The network is in use while attached; the node's assignments keep it.
    assert!(assignments(&s, W1).networks.iter().any(|n| n.id == att.id));
    s.apply(&Command::RemoveService {
        id: "svc0000000000000000000000".into(),
    })
    .into_result()
    .unwrap();
    let err = s
        .apply(&Command::RemoveNetwork { id: att.id.clone() })
        .into_result()
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    s.apply(&Command::Detach {
        id: "ep1".into(),
        node: W1.into(),
    })
    .into_result()
    .unwrap();
    s.apply(&Command::Detach {
        id: "ep1".into(),
        node: W1.into(),
    })
    .into_result()
    .unwrap();
    s.apply(&Command::RemoveNode {
        id: W2.into(),
        force: true,
    })
    .into_result()
    .unwrap();
    assert_eq!(s.network_attachments(&att.id).count(), 0);
}

#[test]
fn only_nodes_with_an_engine_are_told_the_attachable_networks() {
    let mut s = cluster();
    let att = create(
        &mut s,
        &NetworkSpec {
            attachable: true,
            ..spec("att")
        },
    )
    .unwrap();
    assert!(assignments(&s, W1).attachable.is_empty());
    s.apply(&Command::SetEngine {
        id: W1.into(),
        engine: Some("Docker 20.10.24".into()),
        at: 500,
    })
    .into_result()
    .unwrap();
    let a = assignments(&s, W1);
    assert_eq!(
        a.attachable
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        vec![att.id.as_str()]
    );
}
