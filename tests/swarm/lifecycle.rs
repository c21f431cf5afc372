//! Node certificates renewed before they expire, and managers leaving with
//! `swarm leave --force` without costing the others their quorum.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_manager::identity::NodeFile;

use crate::{label_op, Swarm};

fn cert_of(s: &Swarm, i: usize) -> String {
    NodeFile::load(&s.state_dir(i))
        .unwrap()
        .expect("node.json")
        .cert_pem
}

fn voters(s: &Swarm, i: usize) -> anyhow::Result<Vec<u64>> {
    Ok(s.info(i)?["raft_voters"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default())
}

/// A swarm whose certificates live 20 s: `--cert-expiry` refuses units
/// Docker refuses and lifetimes under the minimum; every node, manager and
/// worker, replaces its certificate in `node.json` before it expires, and the
/// swarm keeps working (heartbeats, forwarded writes) after the original
/// certificates have expired.
#[test]
fn certificates_are_renewed_before_they_expire() {
    let s = Swarm::new(3).unwrap();
    let a0 = s.addr(0).to_string();
    let init = |expiry: &str| {
        s.shoal(
            0,
            &[
                "swarm",
                "init",
                "--advertise-addr",
                &a0,
                "--cert-expiry",
                expiry,
            ],
        )
    };
    let err = String::from_utf8_lossy(&init("90d").stderr).into_owned();
    assert!(
        err.contains("invalid duration \"90d\": 'd' is not a unit"),
        "{err}"
    );
    let err = String::from_utf8_lossy(&init("5s").stderr).into_owned();
    assert!(
        err.contains("invalid --cert-expiry 5s: node certificates must live at least 10s"),
        "{err}"
    );

    let formed = Instant::now();
    s.form_with(2, &["--cert-expiry", "20s"]).unwrap(); // node0, node1 managers; node2 worker
    let first: Vec<String> = (0..3).map(|i| cert_of(&s, i)).collect();
    s.wait_for(
        Duration::from_secs(30),
        "every node's certificate replaced",
        || Ok((0..3).all(|i| cert_of(&s, i) != first[i])),
    )
    .unwrap();

    // Past the original certificates' expiry (20 s after their issue, which
    // was after `formed`), with a margin.
    let expired = formed + Duration::from_secs(24);
    if let Some(left) = expired.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    // A write through the second manager is forwarded to the leader over
    // mutual TLS with renewed certificates on both ends.
    let (code, v) = s.op(1, &label_op("node2", "renewed")).unwrap();
    assert_eq!(code, 200, "{v}");
    assert!(s.labels(0, "node2").unwrap().contains_key("renewed"));
    // The worker's heartbeats still reach the managers: nobody is Down.
    let (code, nodes) = s.op(0, &json!({"op": "nodes"})).unwrap();
    assert_eq!(code, 200);
    let nodes = nodes["value"].as_array().unwrap();
    assert!(
        nodes.iter().all(|n| n["status"] == "ready"),
        "{nodes:?}\n{}",
        s.logs()
    );
    // And the renewals go on: the certificates in use now are newer still.
    let second: Vec<String> = (0..3).map(|i| cert_of(&s, i)).collect();
    s.wait_for(
        Duration::from_secs(30),
        "every node's certificate replaced again",
        || Ok((0..3).all(|i| cert_of(&s, i) != second[i])),
    )
    .unwrap();
}

/// Four managers. `swarm leave` without `--force` is refused with Docker's
/// words; with it, a follower and then the leader leave and are taken out of
/// the Raft group, so the others keep a quorum, elect a leader and take
/// writes, and `node ls` shows the leavers Down. When no quorum is left the
/// last-but-one manager still leaves, with a warning saying why.
#[test]
fn managers_leaving_with_force_are_taken_out_of_the_raft_group() {
    let mut s = Swarm::new(4).unwrap();
    s.form(4).unwrap();
    let leader = s.leader(0).unwrap();
    let follower = (0..4).find(|&i| i != leader).unwrap();

    let err = s.shoal_err(follower, &["swarm", "leave"]);
    assert!(err.contains("You are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves 3 managers out of 4. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message."), "{err}");

    let out = s.shoal(follower, &["swarm", "leave", "--force"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Node left the swarm.\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let rest: Vec<usize> = (0..4).filter(|&i| i != follower).collect();
    s.wait_for(Duration::from_secs(10), "three voters left", || {
        for &i in &rest {
            if voters(&s, i)?.len() != 3 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .unwrap();
    for &i in &rest {
        let (code, v) = s.op(i, &label_op("node0", &format!("after{i}"))).unwrap();
        assert_eq!(code, 200, "write through node {i}: {v}");
    }
    let ls = s.shoal_ok(leader, &["node", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(&format!("node{follower} ")) && l.contains("Down")),
        "{ls}"
    );

    // The leader leaves: one of the others leads, without it among the voters.
    let leader_raft = s.info(leader).unwrap()["raft_id"].as_u64().unwrap();
    let out = s.shoal(leader, &["swarm", "leave", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let rest: Vec<usize> = rest.into_iter().filter(|&i| i != leader).collect();
    s.wait_for(
        Duration::from_secs(15),
        "a new leader among the rest",
        || {
            for &i in &rest {
                let v = voters(&s, i)?;
                let led_by = s.info(i)?["raft_leader"].as_u64();
                if v.len() != 2
                    || v.contains(&leader_raft)
                    || led_by.is_none_or(|l| l == leader_raft)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .unwrap();
    let (code, v) = s.op(rest[0], &label_op("node0", "after-leader")).unwrap();
    assert_eq!(code, 200, "{v}");

    // One of the last two dies; the other cannot be taken out, leaves anyway.
    s.kill(rest[1]);
    let out = s.shoal(rest[0], &["swarm", "leave", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Warning: the other managers could not take this node out of the Raft group"),
        "{err}"
    );
    assert!(NodeFile::load(&s.state_dir(rest[0])).unwrap().is_none());
}
