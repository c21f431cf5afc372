//! Networks and endpoints added and removed through shoald's local API while
//! it runs, as the swarm node agent will: the daemons start with no network
//! and no endpoint in their file.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_topology::Namespace;

use crate::cluster::{http, Cluster, KEY1};

/// A request to node `node`'s local API; status and body.
fn api(
    cluster: &Cluster,
    node: usize,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let sock = cluster.sockets[node].as_ref().expect("a shoal node");
    let body = body.map(Value::to_string);
    http(sock, method, path, body.as_deref()).unwrap()
}

/// Like [`api`], expecting `want`; the failure shows the answer.
fn expect(
    cluster: &Cluster,
    node: usize,
    method: &str,
    path: &str,
    body: Option<&Value>,
    want: u16,
) -> String {
    let (code, text) = api(cluster, node, method, path, body);
    assert_eq!(code, want, "{method} {path} on node {node}: {text}");
    text
}

fn ping(from: &Namespace, to: Ipv4Addr) -> bool {
    from.output(["ping", "-c", "1", "-W", "2", &to.to_string()])
        .is_ok_and(|o| o.status.success())
}

/// Whether `eth0` exists in `ns`, waiting up to 5 s for it to become `expect`
/// (the kernel unregisters a closed TAP device shortly after).
fn has_eth0(ns: &Namespace, expect: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let there = ns
            .output(["ip", "link", "show", "eth0"])
            .is_ok_and(|o| o.status.success());
        if there == expect || Instant::now() > deadline {
            return there;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn blue(cluster: &Cluster, node: usize, encrypted: bool) -> Value {
    let peer = cluster.topo.node(1 - node).addr().to_string();
    let mut net = json!({
        "name": "blue",
        "vni": 4096,
        "subnet": "10.0.0.0/24",
        "peers": [peer],
    });
    if encrypted {
        net["encrypted"] = json!(true);
        net["keys"] = json!([{ "id": 1, "secret": KEY1 }]);
    }
    net
}

fn endpoint(ns: &Namespace, ip: Ipv4Addr) -> Value {
    json!({ "network": "blue", "netns": ns.name(), "ip": ip })
}

fn networks_and_endpoints_come_and_go_through_the_api(encrypted: bool) {
    let cluster = Cluster::start(2, &[], &[], &[]).unwrap();
    for node in 0..2 {
        let status = cluster.status(node).unwrap();
        assert_eq!(status["networks"], json!([]), "node {node} starts empty");
    }
    let tasks = [
        cluster.topo.add_bare_namespace("t0").unwrap(),
        cluster.topo.add_bare_namespace("t1").unwrap(),
    ];
    let ips = [Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20)];

    for node in 0..2 {
        let net = blue(&cluster, node, encrypted);
        expect(&cluster, node, "POST", "/v1/networks", Some(&net), 204);
        // Adding it again changes nothing; other settings under its name clash.
        expect(&cluster, node, "POST", "/v1/networks", Some(&net), 204);
        let mut clash = net.clone();
        clash["vni"] = json!(4097);
        let text = expect(&cluster, node, "POST", "/v1/networks", Some(&clash), 409);
        assert!(text.contains("VNI 4096"), "{text}");

        let ep = endpoint(&tasks[node], ips[node]);
        expect(&cluster, node, "POST", "/v1/endpoints", Some(&ep), 204);
        let other = 1 - node;
        let remote = json!({ "ip": ips[other], "node": cluster.topo.node(other).addr() });
        expect(
            &cluster,
            node,
            "POST",
            "/v1/networks/blue/remotes",
            Some(&remote),
            204,
        );
    }
    assert!(ping(&tasks[0], ips[1]), "node 0 to node 1");
    assert!(ping(&tasks[1], ips[0]), "node 1 to node 0");
    let status = cluster.status(1).unwrap();
    let net = &status["networks"][0];
    assert_eq!(net["mtu"], json!(if encrypted { 1418 } else { 1450 }));
    assert_eq!(net["encrypted"], json!(encrypted));
    assert_eq!(net["endpoints"][1]["location"], json!("local"), "{net}");

    // A network with an endpoint attached is not removed.
    let text = expect(&cluster, 1, "DELETE", "/v1/networks/blue", None, 409);
    assert!(text.contains("10.0.0.20"), "{text}");

    // The endpoint goes: its TAP leaves the task's namespace, traffic stops.
    expect(
        &cluster,
        1,
        "DELETE",
        "/v1/endpoints/blue/10.0.0.20",
        None,
        204,
    );
    assert!(!has_eth0(&tasks[1], false), "eth0 is still in t1");
    assert!(has_eth0(&tasks[0], true), "t0 kept its eth0");
    assert!(!ping(&tasks[0], ips[1]), "reached a removed endpoint");
    expect(
        &cluster,
        1,
        "DELETE",
        "/v1/endpoints/blue/10.0.0.20",
        None,
        404,
    );

    // Back again: traffic flows again.
    let ep = endpoint(&tasks[1], ips[1]);
    expect(&cluster, 1, "POST", "/v1/endpoints", Some(&ep), 204);
    assert!(has_eth0(&tasks[1], true));
    assert!(ping(&tasks[0], ips[1]), "node 0 to the endpoint added back");
    assert!(ping(&tasks[1], ips[0]), "the endpoint added back to node 0");

    for node in 0..2 {
        let drops = cluster.drops(node).unwrap();
        assert_eq!(drops["auth_failure"], 0, "node {node}: {drops:?}");
        assert_eq!(drops["replay"], 0, "node {node}: {drops:?}");
    }

    // Without its endpoint the network can go, and the node is empty again.
    expect(
        &cluster,
        1,
        "DELETE",
        "/v1/endpoints/blue/10.0.0.20",
        None,
        204,
    );
    expect(&cluster, 1, "DELETE", "/v1/networks/blue", None, 204);
    expect(&cluster, 1, "DELETE", "/v1/networks/blue", None, 404);
    assert_eq!(cluster.status(1).unwrap()["networks"], json!([]));
}

#[test]
fn plain_networks_and_endpoints_added_and_removed_through_the_api_carry_traffic() {
    networks_and_endpoints_come_and_go_through_the_api(false);
}

#[test]
fn encrypted_networks_and_endpoints_added_and_removed_through_the_api_carry_traffic() {
    networks_and_endpoints_come_and_go_through_the_api(true);
}

#[test]
fn bad_network_and_endpoint_requests_are_refused_with_a_reason() {
    let cluster = Cluster::start(1, &[], &[], &[]).unwrap();
    let task = cluster.topo.add_bare_namespace("t").unwrap();
    let post = |path: &str, body: &str| {
        let sock = cluster.sockets[0].as_ref().unwrap();
        http(sock, "POST", path, Some(body)).unwrap()
    };
    let cases = [
        (
            "/v1/networks",
            "{not json".to_string(),
            400,
            "invalid request body",
        ),
        (
            "/v1/networks",
            json!({"name": "blue", "vni": 4096}).to_string(),
            400,
            "subnet",
        ),
        (
            "/v1/networks",
            json!({"name": "blue", "vni": 4096, "subnet": "10.0.0.0/24", "colour": 1}).to_string(),
            400,
            "colour",
        ),
        (
            "/v1/networks",
            json!({"name": "blue", "vni": 16777216, "subnet": "10.0.0.0/24"}).to_string(),
            400,
            "vni",
        ),
        (
            "/v1/networks",
            json!({"name": "blue", "vni": 4096, "subnet": "10.0.0.0/24", "encrypted": true})
                .to_string(),
            400,
            "at least one key",
        ),
        (
            "/v1/endpoints",
            json!({"network": "blue", "netns": task.name(), "ip": "10.0.0.2"}).to_string(),
            404,
            "no network named",
        ),
    ];
    for (path, body, code, needle) in cases {
        let (got, text) = post(path, &body);
        assert_eq!(got, code, "POST {path} {body}: {text}");
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    let net = json!({"name": "blue", "vni": 4096, "subnet": "10.0.0.0/24"});
    expect(&cluster, 0, "POST", "/v1/networks", Some(&net), 204);
    let cases = [
        (
            json!({"network": "blue", "netns": task.name(), "ip": "10.0.0.999"}),
            "invalid request body",
        ),
        (
            json!({"network": "blue", "netns": task.name(), "ip": "10.1.0.2"}),
            "outside the subnet",
        ),
        (
            json!({"network": "blue", "netns": "no-such-ns", "ip": "10.0.0.2"}),
            "no-such-ns",
        ),
        (
            json!({"network": "blue", "netns": task.name(), "ip": "10.0.0.2", "ifname": "a/b"}),
            "ifname",
        ),
    ];
    for (body, needle) in cases {
        let text = expect(&cluster, 0, "POST", "/v1/endpoints", Some(&body), 400);
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    }
    assert!(
        !has_eth0(&task, false),
        "a refused endpoint left a device behind"
    );
    let text = expect(
        &cluster,
        0,
        "DELETE",
        "/v1/endpoints/blue/not-an-ip",
        None,
        400,
    );
    assert!(text.contains("not-an-ip"), "{text}");
    let own = json!({ "peers": [cluster.topo.node(0).addr()] });
    let text = expect(
        &cluster,
        0,
        "PUT",
        "/v1/networks/blue/peers",
        Some(&own),
        400,
    );
    assert!(text.contains("own address"), "{text}");
    expect(
        &cluster,
        0,
        "PUT",
        "/v1/networks/blue/peers",
        Some(&json!({"peers": ["10.99.0.12"]})),
        204,
    );
}
