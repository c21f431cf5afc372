//! Unit tests of the wire types and the router, with bodies shaped like
//! those libnetwork sends (Go's encoding: nil maps and slices as `null`).

use std::sync::Mutex;

use serde_json::{json, Value};

use super::protocol::{self, dispatch, Method};
use super::*;

/// Answers fixed values and remembers the last call.
#[derive(Default)]
struct Fixed {
    last: Mutex<Vec<String>>,
    fail: Option<String>,
}

impl Fixed {
    fn note(&self, call: String) -> Result<(), String> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
        match &self.fail {
            Some(message) => Err(message.clone()),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Backend for Fixed {
    fn create_network(&self, r: &CreateNetworkRequest) -> Result<(), String> {
        self.note(format!(
            "create_network {} {}",
            r.network_id,
            r.ipv4_data.len()
        ))
    }
    fn delete_network(&self, network_id: &str) -> Result<(), String> {
        self.note(format!("delete_network {network_id}"))
    }
    fn create_endpoint(&self, r: &CreateEndpointRequest) -> Result<CreateEndpointResponse, String> {
        self.note(format!(
            "create_endpoint {} {}",
            r.endpoint_id, r.interface.address
        ))?;
        Ok(CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "02:42:0a:63:01:02".to_owned(),
                ..EndpointInterface::default()
            }),
        })
    }
    fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<(), String> {
        self.note(format!("delete_endpoint {network_id} {endpoint_id}"))
    }
    fn endpoint_info(&self, _: &str, endpoint_id: &str) -> Result<Options, String> {
        self.note(format!("endpoint_info {endpoint_id}"))?;
        let mut info = Options::new();
        info.insert("vni".to_owned(), json!(4097));
        Ok(info)
    }
    fn join(&self, r: &JoinRequest) -> Result<JoinResponse, String> {
        self.note(format!("join {} {}", r.endpoint_id, r.sandbox_key))?;
        Ok(JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: "shv1".to_owned(),
                dst_name: String::new(),
                dst_prefix: "eth".to_owned(),
            }),
            gateway: "10.99.1.1".to_owned(),
            static_routes: vec![StaticRoute {
                destination: "10.98.0.0/16".to_owned(),
                route_type: 0,
                next_hop: "10.99.1.1".to_owned(),
            }],
            ..JoinResponse::default()
        })
    }
    fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), String> {
        self.note(format!("leave {network_id} {endpoint_id}"))
    }
    fn request_pool(&self, r: &RequestPoolRequest) -> Result<RequestPoolResponse, String> {
        self.note(format!(
            "request_pool {} {:?} {}",
            r.address_space, r.options, r.v6
        ))?;
        Ok(RequestPoolResponse {
            pool_id: "p1".to_owned(),
            pool: "10.99.1.0/24".to_owned(),
            data: StringOptions::new(),
        })
    }
    fn release_pool(&self, pool_id: &str) -> Result<(), String> {
        self.note(format!("release_pool {pool_id}"))
    }
    fn request_address(&self, r: &RequestAddressRequest) -> Result<RequestAddressResponse, String> {
        self.note(format!(
            "request_address {} {:?} {:?}",
            r.pool_id, r.address, r.options
        ))?;
        Ok(RequestAddressResponse {
            address: "10.99.1.2/24".to_owned(),
            data: StringOptions::new(),
        })
    }
    fn release_address(&self, pool_id: &str, address: &str) -> Result<(), String> {
        self.note(format!("release_address {pool_id} {address}"))
    }
}

fn call(backend: &Fixed, path: &str, body: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&body).expect("encode");
    let (status, answer) = dispatch(path, &body, backend);
    let answer = serde_json::from_slice(&answer).expect("the answer is JSON");
    (status, answer)
}

#[test]
fn activate_and_capabilities_need_no_body() {
    let backend = Fixed::default();
    for (path, want) in [
        (
            "/Plugin.Activate",
            json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        ),
        (
            "/NetworkDriver.GetCapabilities",
            json!({"Scope": "local", "ConnectivityScope": "global"}),
        ),
        (
            "/IpamDriver.GetCapabilities",
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}),
        ),
        (
            "/IpamDriver.GetDefaultAddressSpaces",
            json!({"LocalDefaultAddressSpace": "shoal", "GlobalDefaultAddressSpace": "shoal"}),
        ),
    ] {
        for body in [&b""[..], b"{}", b" \n", b"null"] {
            let (status, answer) = dispatch(path, body, &backend);
            assert_eq!(status, 200, "{path} {body:?}");
            let answer: Value = serde_json::from_slice(&answer).expect("JSON");
            assert_eq!(answer, want, "{path}");
        }
    }
    assert!(backend.calls().is_empty());
}

#[test]
fn create_network_reads_go_nulls_and_ignores_unknown_fields() {
    let backend = Fixed::default();
    // As Docker 20.10 sends it (see the module docs), plus a field from the
    // future and Go's null for an empty IPv6 list.
    let (status, answer) = call(
        &backend,
        "/NetworkDriver.CreateNetwork",
        json!({
            "NetworkID": "n1",
            "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "shoal", "Pool": "10.99.1.0/24",
                          "Gateway": "10.99.1.1/24", "AuxAddresses": null}],
            "IPv6Data": null,
            "SomethingNew": 1
        }),
    );
    assert_eq!((status, answer), (200, json!({})));
    assert_eq!(backend.calls(), ["create_network n1 1"]);

    let parsed: CreateNetworkRequest = protocol::parse(
        "/x",
        br#"{"NetworkID":"n1","IPv4Data":[{"Pool":"10.99.1.0/24","Gateway":"10.99.1.1/24"}]}"#,
    )
    .expect("parse");
    assert_eq!(parsed.ipv4_data[0].gateway, "10.99.1.1/24");
    assert!(parsed.ipv6_data.is_empty() && parsed.options.is_empty());
}

#[test]
fn endpoint_calls_round_trip() {
    let backend = Fixed::default();
    let (status, answer) = call(
        &backend,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e1",
               "Interface": {"Address": "10.99.1.2/24", "AddressIPv6": "", "MacAddress": ""},
               "Options": {"com.docker.network.portmap": []}}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"Interface": {"Address": "", "AddressIPv6": "", "MacAddress": "02:42:0a:63:01:02"}})
    );
    // A nil Interface pointer reads as an empty one.
    let (status, _) = call(
        &backend,
        "/NetworkDriver.CreateEndpoint",
        json!({"NetworkID": "n1", "EndpointID": "e2", "Interface": null, "Options": null}),
    );
    assert_eq!(status, 200);

    let (status, answer) = call(
        &backend,
        "/NetworkDriver.Join",
        json!({"NetworkID": "n1", "EndpointID": "e1",
               "SandboxKey": "/var/run/docker/netns/abc", "Options": null}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({
            "InterfaceName": {"SrcName": "shv1", "DstPrefix": "eth"},
            "Gateway": "10.99.1.1",
            "GatewayIPv6": "",
            "StaticRoutes": [{"Destination": "10.98.0.0/16", "RouteType": 0, "NextHop": "10.99.1.1"}],
            "DisableGatewayService": false
        })
    );
    let (_, answer) = call(
        &backend,
        "/NetworkDriver.EndpointOperInfo",
        json!({"NetworkID": "n1", "EndpointID": "e1"}),
    );
    assert_eq!(answer, json!({"Value": {"vni": 4097}}));
    for path in ["/NetworkDriver.Leave", "/NetworkDriver.DeleteEndpoint"] {
        let (status, answer) = call(
            &backend,
            path,
            json!({"NetworkID": "n1", "EndpointID": "e1"}),
        );
        assert_eq!((status, answer), (200, json!({})), "{path}");
    }
    let (status, _) = call(
        &backend,
        "/NetworkDriver.DeleteNetwork",
        json!({"NetworkID": "n1"}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        backend.calls(),
        [
            "create_endpoint e1 10.99.1.2/24",
            "create_endpoint e2 ",
            "join e1 /var/run/docker/netns/abc",
            "endpoint_info e1",
            "leave n1 e1",
            "delete_endpoint n1 e1",
            "delete_network n1",
        ]
    );
}

#[test]
fn ipam_calls_round_trip() {
    let backend = Fixed::default();
    let (status, answer) = call(
        &backend,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "shoal", "Pool": "", "SubPool": "",
               "Options": {"network": "foo"}, "V6": false}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"PoolID": "p1", "Pool": "10.99.1.0/24", "Data": {}})
    );
    let (_, answer) = call(
        &backend,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": "p1", "Address": "",
               "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert_eq!(answer, json!({"Address": "10.99.1.2/24", "Data": {}}));
    let (status, _) = call(
        &backend,
        "/IpamDriver.ReleaseAddress",
        json!({"PoolID": "p1", "Address": "10.99.1.2"}),
    );
    assert_eq!(status, 200);
    let (status, _) = call(&backend, "/IpamDriver.ReleasePool", json!({"PoolID": "p1"}));
    assert_eq!(status, 200);
    assert_eq!(
        backend.calls(),
        [
            r#"request_pool shoal {"network": "foo"} false"#,
            r#"request_address p1 "" {"RequestAddressType": "com.docker.network.gateway"}"#,
            "release_address p1 10.99.1.2",
            "release_pool p1",
        ]
    );
}

#[test]
fn no_op_methods_are_accepted_without_the_backend() {
    let backend = Fixed::default();
    for (path, body) in [
        (
            "/NetworkDriver.DiscoverNew",
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1", "self": true}}),
        ),
        (
            "/NetworkDriver.DiscoverDelete",
            json!({"DiscoveryType": 1, "DiscoveryData": null}),
        ),
        (
            "/NetworkDriver.ProgramExternalConnectivity",
            json!({"NetworkID": "n", "EndpointID": "e", "Options": null}),
        ),
        (
            "/NetworkDriver.RevokeExternalConnectivity",
            json!({"NetworkID": "n", "EndpointID": "e"}),
        ),
    ] {
        assert_eq!(call(&backend, path, body), (200, json!({})), "{path}");
    }
    assert!(backend.calls().is_empty());
}

#[test]
fn swarm_scope_is_refused() {
    let backend = Fixed::default();
    for path in [
        "/NetworkDriver.AllocateNetwork",
        "/NetworkDriver.FreeNetwork",
    ] {
        let (status, answer) = call(&backend, path, json!({"NetworkID": "n", "Options": null}));
        assert_eq!(status, 500, "{path}");
        assert_eq!(answer, json!({"Err": protocol::SWARM_UNSUPPORTED}));
        assert!(protocol::SWARM_UNSUPPORTED.contains("swarm mode"));
    }
}

#[test]
fn errors_are_err_bodies() {
    let failing = Fixed {
        fail: Some("pool 10.99.0.0/16 is exhausted".to_owned()),
        ..Fixed::default()
    };
    let (status, answer) = call(
        &failing,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "shoal"}),
    );
    assert_eq!(status, 500);
    assert_eq!(answer, json!({"Err": "pool 10.99.0.0/16 is exhausted"}));

    let backend = Fixed::default();
    let (status, answer) = dispatch("/NetworkDriver.Join", b"{\"NetworkID\": 3}", &backend);
    assert_eq!(status, 500);
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    let message = answer["Err"].as_str().expect("Err");
    assert!(
        message.starts_with("/NetworkDriver.Join: cannot parse the request body: invalid type"),
        "{message}"
    );

    let (status, answer) = dispatch("/VolumeDriver.Create", b"{}", &backend);
    assert_eq!(status, 404);
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(
        answer,
        json!({"Err": "shoal plugin: no method /VolumeDriver.Create"})
    );
    assert!(backend.calls().is_empty());
}

#[test]
fn every_method_has_a_distinct_path() {
    for method in Method::ALL {
        assert_eq!(Method::from_path(method.path()), Some(method));
    }
    assert_eq!(Method::from_path("/Plugin.Activate/"), None);
}
