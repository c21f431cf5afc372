//! Seeded-simulation invariants, in virtual time (one invariant per test).

use shoal_gossip::core::MemberState;
use shoal_gossip::sim::{sim_addr, test_record, Sim, SimConfig};
use std::time::Duration;

const NET: &str = "net-a";
const STEP: Duration = Duration::from_millis(10);

fn cluster(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(n, seed));
    sim.join_all(NET);
    let t = sim.run_until_true(Duration::from_secs(30), STEP, Sim::membership_converged);
    assert!(t.is_some(), "membership of {n} nodes did not converge");
    for i in 0..n {
        sim.with_core(i, |c, now| {
            c.publish(now, NET, test_record(i, &format!("task-{i}")))
        });
    }
    sim.run_for(Duration::from_secs(3));
    sim
}

#[test]
fn new_endpoint_everywhere_within_1s_5_nodes() {
    for seed in 1..=5 {
        let mut sim = cluster(5, seed);
        sim.with_core(2, |c, now| c.publish(now, NET, test_record(2, "fresh")));
        let t = sim.run_until_true(Duration::from_secs(1), STEP, |s| s.all_see(NET, "fresh"));
        eprintln!("seed {seed}: publish known everywhere after {t:?}");
        assert!(t.is_some(), "seed {seed}: not everywhere within 1 s");
    }
}

#[test]
fn new_endpoint_everywhere_50_nodes() {
    let mut sim = cluster(50, 7);
    sim.with_core(10, |c, now| c.publish(now, NET, test_record(10, "fresh")));
    let t = sim.run_until_true(Duration::from_secs(1), STEP, |s| s.all_see(NET, "fresh"));
    eprintln!("50 nodes: publish known everywhere after {t:?}");
    assert!(t.is_some());
}

#[test]
fn killed_node_unavailable_everywhere_within_3s() {
    for (n, seed) in [(5, 1), (5, 2), (5, 3), (50, 4), (50, 5), (50, 6)] {
        let mut sim = cluster(n, seed);
        let victim = n - 2;
        assert!(sim.all_see(NET, &format!("task-{victim}")));
        sim.kill(victim);
        let task = format!("task-{victim}");
        let t = sim.run_until_true(Duration::from_secs(3), STEP, |s| s.none_see(NET, &task));
        eprintln!("{n} nodes seed {seed}: dead node's endpoints gone after {t:?}");
        assert!(
            t.is_some(),
            "{n} nodes seed {seed}: still visible after 3 s"
        );
        // Not a tombstone: they stay in the table, only unavailable.
        assert!(sim
            .tables(0)
            .group(
                &shoal_gossip::wire::Scope::Endpoints(NET.into()),
                &format!("node-{victim}")
            )
            .is_some());
    }
}

#[test]
fn partition_heal_converges_with_nothing_stale() {
    for seed in 1..=3 {
        let mut sim = cluster(5, seed);
        sim.partition(|i| u32::from(i >= 2)); // {0,1} and {2,3,4}
        sim.run_for(Duration::from_secs(4));
        // Both sides add and remove.
        sim.with_core(0, |c, now| c.publish(now, NET, test_record(0, "left-new")));
        sim.with_core(1, |c, now| c.withdraw(now, NET, "task-1"));
        sim.with_core(3, |c, now| c.publish(now, NET, test_record(3, "right-new")));
        sim.with_core(4, |c, now| c.withdraw(now, NET, "task-4"));
        sim.with_core(2, |c, now| {
            c.publish(now, NET, test_record(2, "short-lived"))
        });
        sim.run_for(Duration::from_millis(500));
        sim.with_core(2, |c, now| c.withdraw(now, NET, "short-lived"));
        sim.run_for(Duration::from_secs(3));
        sim.heal();
        let want: Vec<String> = ["left-new", "right-new", "task-0", "task-2", "task-3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = sim.run_until_true(Duration::from_secs(15), STEP, |s| {
            s.alive_nodes().all(|i| {
                let mut ids = s.task_ids(i, NET);
                ids.sort();
                let mut w = want.clone();
                w.sort();
                ids == w
            }) && s.membership_converged()
        });
        eprintln!("seed {seed}: healed and identical after {t:?}");
        assert!(
            t.is_some(),
            "seed {seed}: views {:?}",
            (0..5).map(|i| sim.task_ids(i, NET)).collect::<Vec<_>>()
        );
        assert!(sim.views_identical(NET));
    }
}

#[test]
fn wrongly_suspected_node_refutes_and_stays() {
    for seed in 1..=3 {
        let mut sim = cluster(5, seed);
        // Unreachable for less than the suspicion time (1 s) minus a probe
        // period (300 ms): see "What is weak" in the crate docs for longer cuts.
        sim.set_muted(3, true);
        sim.run_for(Duration::from_millis(400));
        sim.set_muted(3, false);
        let mut ever_down = false;
        for _ in 0..300 {
            sim.run_for(STEP);
            for i in sim.alive_nodes().filter(|i| *i != 3).collect::<Vec<_>>() {
                let down = sim
                    .core(i)
                    .members()
                    .iter()
                    .any(|m| m.addr == sim_addr(3) && m.state == MemberState::Down);
                let gone = !sim
                    .tables(i)
                    .available_endpoints(NET)
                    .any(|r| r.task_id == "task-3");
                if (down || gone) && !ever_down {
                    eprintln!(
                        "seed {seed}: node {i} at {:?}: down={down} gone={gone}",
                        sim.elapsed()
                    );
                }
                ever_down |= down || gone;
            }
        }
        assert!(
            !ever_down,
            "seed {seed}: node 3 was declared down or its endpoints vanished"
        );
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut sim = cluster(5, seed);
        sim.kill(4);
        sim.run_for(Duration::from_secs(3));
        (sim.total_bytes_sent(), sim.tables(0).version())
    };
    assert_eq!(run(9), run(9));
}

#[test]
fn restarted_owner_removes_its_stale_entries() {
    let mut sim = cluster(5, 11);
    sim.with_core(2, |c, now| {
        c.publish(now, NET, test_record(2, "before-restart"))
    });
    sim.run_for(Duration::from_secs(1));
    assert!(sim.all_see(NET, "before-restart"));
    // Restart with empty state: the old task must not survive anywhere.
    sim.kill(2);
    sim.run_for(Duration::from_millis(300));
    sim.restart(2, 2, NET);
    let t = sim.run_until_true(Duration::from_secs(10), STEP, |s| {
        s.none_see(NET, "before-restart") && s.none_see(NET, "task-2") && s.membership_converged()
    });
    eprintln!("stale entries of restarted node gone after {t:?}");
    assert!(
        t.is_some(),
        "views {:?}",
        (0..5).map(|i| sim.task_ids(i, NET)).collect::<Vec<_>>()
    );
    // And its new writes win over its old clock.
    sim.with_core(2, |c, now| {
        c.publish(now, NET, test_record(2, "before-restart"))
    });
    let t = sim.run_until_true(Duration::from_secs(3), STEP, |s| {
        s.all_see(NET, "before-restart")
    });
    assert!(t.is_some());
}

#[test]
fn key_rotation_keeps_the_cluster_together() {
    let mut sim = cluster(5, 12);
    let old = (1u8, [42u8; 32]);
    let new = (2u8, [43u8; 32]);
    // 1: everyone accepts the new key; 2: everyone sends with it; 3: old key removed.
    for step in [(vec![old, new], 1u8), (vec![old, new], 2), (vec![new], 2)] {
        for i in 0..5 {
            let (keys, tx) = step.clone();
            sim.with_core(i, move |c, _| c.set_keys(&keys, tx).unwrap());
        }
        sim.run_for(Duration::from_secs(2));
        assert!(sim.membership_converged());
    }
    sim.with_core(0, |c, now| {
        c.publish(now, NET, test_record(0, "after-rotation"))
    });
    assert!(sim
        .run_until_true(Duration::from_secs(1), STEP, |s| s
            .all_see(NET, "after-rotation"))
        .is_some());
    let drops: u64 = (0..5)
        .map(|i| {
            sim.core(i)
                .counters()
                .snapshot()
                .drops
                .values()
                .sum::<u64>()
        })
        .sum();
    assert_eq!(drops, 0, "rotation in three steps drops nothing");
}

#[test]
fn converges_under_loss() {
    let mut cfg = SimConfig::new(10, 13);
    cfg.loss = 0.05;
    let mut sim = Sim::new(cfg);
    sim.join_all(NET);
    assert!(sim
        .run_until_true(Duration::from_secs(30), STEP, Sim::membership_converged)
        .is_some());
    for i in 0..10 {
        sim.with_core(i, |c, now| {
            c.publish(now, NET, test_record(i, &format!("task-{i}")))
        });
    }
    let t = sim.run_until_true(Duration::from_secs(10), STEP, |s| {
        (0..10).all(|i| s.all_see(NET, &format!("task-{i}"))) && s.views_identical(NET)
    });
    eprintln!("10 nodes, 5% loss: all endpoints everywhere after {t:?}");
    assert!(t.is_some());
}
