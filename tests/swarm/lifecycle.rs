//! Node certificates renewed before they expire.

use std::time::{Duration, Instant};

use serde_json::json;
use shoal_manager::identity::NodeFile;

use crate::{label_op, Swarm};

fn cert_of(s: &Swarm, i: usize) -> String {
    NodeFile::load(&s.state_dir(i))
        .unwrap()
        .expect("node.json")
        .cert_pem
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
