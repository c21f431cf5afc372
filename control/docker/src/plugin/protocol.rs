//! The wire types of the libnetwork remote driver protocol and the pure
//! request router.
//!
//! Field names are exactly those of moby's `libnetwork/drivers/remote/api`
//! and `libnetwork/ipams/remote/api` (Go's `encoding/json` uses the struct
//! field names as they are: `NetworkID`, `IPv4Data`, `AddressIPv6`, `PoolID`).
//! Go encodes a nil map or slice as `null` and a nil pointer as `null`, so
//! every map, list and optional object here reads `null` as empty; unknown
//! fields are ignored and missing ones defaulted, so a newer engine that adds
//! fields still talks to us.
//!
//! Errors: libnetwork's plugin client (`pkg/plugins/client.go`) reads the
//! `Err` field of any answer whose status is not 200, for both driver kinds,
//! whereas on a 200 the network driver reads `Err` but the IPAM driver reads
//! `Error`. We therefore answer every error with status 500 and `{"Err": ..}`:
//! one shape understood by both. An unknown method is a 404, which
//! libnetwork treats as "not implemented" where that is optional
//! (`ProgramExternalConnectivity`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::Backend;

/// The media type of every request and answer (plugin API v1.2).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Free-form options (`map[string]interface{}` in Go).
pub type Options = Map<String, Value>;

/// String options (`map[string]string` in Go), used by IPAM.
pub type StringOptions = BTreeMap<String, String>;

/// Reads `null` (Go's nil map, slice or pointer) as the default value.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The answer to `/Plugin.Activate`: the protocols this plugin speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    /// `NetworkDriver`, `IpamDriver`.
    #[serde(rename = "Implements", default, deserialize_with = "nullable")]
    pub implements: Vec<String>,
}

/// An error answer: `{"Err": "message"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong; Docker shows it after the method's name.
    #[serde(rename = "Err", default)]
    pub err: String,
}

// ---------------------------------------------------------------------------
// NetworkDriver
// ---------------------------------------------------------------------------

/// The answer to `/NetworkDriver.GetCapabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCapabilities {
    /// Where network state lives: `local` (each engine keeps its own) or
    /// `global` (needs a cluster store, which shoal does not use).
    #[serde(rename = "Scope", default)]
    pub scope: String,
    /// How far the network reaches: `global` for an overlay.
    #[serde(rename = "ConnectivityScope", default)]
    pub connectivity_scope: String,
}

/// One address pool of a network, as the IPAM driver handed it out
/// (`driverapi.IPAMData`; addresses are in CIDR notation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamData {
    /// The IPAM address space, e.g. `shoal`.
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    /// The pool, e.g. `10.99.1.0/24`.
    #[serde(rename = "Pool", default)]
    pub pool: String,
    /// The gateway with the pool's prefix length, e.g. `10.99.1.1/24`.
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
    /// Reserved auxiliary addresses by name (`--aux-address`).
    #[serde(rename = "AuxAddresses", default, deserialize_with = "nullable")]
    pub aux_addresses: StringOptions,
}

/// `/NetworkDriver.CreateNetwork`: `docker network create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    /// The network's ID, the key of every later call.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// Free-form options; Docker puts the `-o` driver options under
    /// `com.docker.network.generic` and adds `com.docker.network.enable_ipv6`.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
    /// The IPv4 pools from the IPAM driver.
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 pools from the IPAM driver (empty without `--ipv6`).
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// `/NetworkDriver.DeleteNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteNetworkRequest {
    /// The network to delete.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
}

/// `/NetworkDriver.AllocateNetwork` and `FreeNetwork` are only used for
/// swarm-scope networks; shoal refuses them, but still reads the request
/// so that a malformed one is reported as such.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocateNetworkRequest {
    /// The network.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// Driver options.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: StringOptions,
    /// IPv4 pools.
    #[serde(rename = "IPv4Data", default, deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    /// IPv6 pools.
    #[serde(rename = "IPv6Data", default, deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// An endpoint's interface addresses. Every field is a string and empty
/// means "not set"; addresses are in CIDR notation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInterface {
    /// IPv4 address with prefix, e.g. `10.99.1.2/24`.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// IPv6 address with prefix.
    #[serde(rename = "AddressIPv6", default)]
    pub address_ipv6: String,
    /// MAC address, e.g. `02:42:0a:63:01:02`.
    #[serde(rename = "MacAddress", default)]
    pub mac_address: String,
}

/// `/NetworkDriver.CreateEndpoint`: a container is about to be attached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateEndpointRequest {
    /// The network.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// The new endpoint's ID.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// What Docker already decided (the addresses from IPAM).
    #[serde(rename = "Interface", default, deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    /// Free-form endpoint options (exposed ports, port mappings, ...).
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

/// The answer to `CreateEndpoint`. `interface` must stay `None` when the
/// request already carried addresses: libnetwork refuses a driver that
/// changes an address it set ("driver modified interface address").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateEndpointResponse {
    /// Only the fields Docker left empty, if any.
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

/// `/NetworkDriver.DeleteEndpoint`, `/NetworkDriver.EndpointOperInfo`,
/// `/NetworkDriver.Leave` and `/NetworkDriver.RevokeExternalConnectivity`
/// all name one endpoint of one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// The network.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// The endpoint.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
}

/// The answer to `EndpointOperInfo` (shown by `docker inspect`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfoResponse {
    /// Free-form operational data.
    #[serde(rename = "Value", default, deserialize_with = "nullable")]
    pub value: Options,
}

/// `/NetworkDriver.Join`: attach an endpoint to a container's sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The network.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// The endpoint.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// The path of the container's network namespace,
    /// `/var/run/docker/netns/<id>`.
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
    /// Free-form options.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

/// Which host interface Docker moves into the container, and its new name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceName {
    /// The interface in the host namespace (e.g. a veth peer) that Docker
    /// moves into the sandbox.
    #[serde(rename = "SrcName", default)]
    pub src_name: String,
    /// Ignored by libnetwork's remote driver; kept for completeness.
    #[serde(rename = "DstName", default, skip_serializing_if = "String::is_empty")]
    pub dst_name: String,
    /// The name prefix inside the container: `eth` gives `eth0`, `eth1`...
    #[serde(rename = "DstPrefix", default)]
    pub dst_prefix: String,
}

/// A route Docker installs in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// The destination in CIDR notation.
    #[serde(rename = "Destination", default)]
    pub destination: String,
    /// 0: through `next_hop`; 1: directly connected.
    #[serde(rename = "RouteType", default)]
    pub route_type: i64,
    /// The next hop (for route type 0).
    #[serde(rename = "NextHop", default)]
    pub next_hop: String,
}

/// The answer to `Join`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The interface to move into the sandbox.
    #[serde(rename = "InterfaceName", default)]
    pub interface_name: Option<InterfaceName>,
    /// The IPv4 default gateway (a bare address), or empty for none.
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
    /// The IPv6 default gateway, or empty.
    #[serde(rename = "GatewayIPv6", default)]
    pub gateway_ipv6: String,
    /// Extra routes.
    #[serde(rename = "StaticRoutes", default, deserialize_with = "nullable")]
    pub static_routes: Vec<StaticRoute>,
    /// True: this network does not give the container its default route.
    #[serde(rename = "DisableGatewayService", default)]
    pub disable_gateway_service: bool,
}

/// `/NetworkDriver.ProgramExternalConnectivity` (accepted, no-op).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramExternalConnectivityRequest {
    /// The network.
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    /// The endpoint.
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// Port mappings and exposed ports.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: Options,
}

/// `/NetworkDriver.DiscoverNew` and `DiscoverDelete` (accepted, no-op).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryNotification {
    /// 1: node discovery (the only kind libnetwork forwards).
    #[serde(rename = "DiscoveryType", default)]
    pub discovery_type: i64,
    /// The node's data.
    #[serde(rename = "DiscoveryData", default)]
    pub discovery_data: Value,
}

// ---------------------------------------------------------------------------
// IpamDriver
// ---------------------------------------------------------------------------

/// The answer to `/IpamDriver.GetCapabilities`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamCapabilities {
    /// True: Docker passes the endpoint's MAC in `RequestAddress` options.
    #[serde(rename = "RequiresMACAddress", default)]
    pub requires_mac_address: bool,
    /// True: Docker replays every pool and address request at startup.
    #[serde(rename = "RequiresRequestReplay", default)]
    pub requires_request_replay: bool,
}

/// The answer to `/IpamDriver.GetDefaultAddressSpaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpaces {
    /// For local-scope networks.
    #[serde(rename = "LocalDefaultAddressSpace", default)]
    pub local_default_address_space: String,
    /// For global-scope networks.
    #[serde(rename = "GlobalDefaultAddressSpace", default)]
    pub global_default_address_space: String,
}

/// `/IpamDriver.RequestPool`: one per address family of a new network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoolRequest {
    /// The address space (ours: `shoal`).
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    /// The pool the user asked for (`--subnet`), or empty: choose one.
    #[serde(rename = "Pool", default)]
    pub pool: String,
    /// A sub-range of the pool for dynamic addresses (`--ip-range`).
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    /// The `--ipam-opt` options.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: StringOptions,
    /// True for the IPv6 pool.
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// The answer to `RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoolResponse {
    /// An opaque ID for later calls.
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
    /// The pool in CIDR notation.
    #[serde(rename = "Pool", default)]
    pub pool: String,
    /// Extra data; `com.docker.network.gateway` (CIDR) names the gateway
    /// so that Docker does not request one.
    #[serde(rename = "Data", default, deserialize_with = "nullable")]
    pub data: StringOptions,
}

/// `/IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePoolRequest {
    /// The pool.
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
}

/// `/IpamDriver.RequestAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressRequest {
    /// The pool.
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
    /// A bare address the user asked for (`--ip`, `--gateway`), or empty.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// `RequestAddressType: com.docker.network.gateway` for the gateway.
    #[serde(rename = "Options", default, deserialize_with = "nullable")]
    pub options: StringOptions,
}

/// The answer to `RequestAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressResponse {
    /// The address with the pool's prefix length, e.g. `10.99.1.2/24`.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// Extra data.
    #[serde(rename = "Data", default, deserialize_with = "nullable")]
    pub data: StringOptions,
}

/// `/IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAddressRequest {
    /// The pool.
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
    /// The bare address.
    #[serde(rename = "Address", default)]
    pub address: String,
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

/// Every method this plugin answers, by its URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `/Plugin.Activate`.
    Activate,
    /// `/NetworkDriver.GetCapabilities`.
    NetworkCapabilities,
    /// `/NetworkDriver.CreateNetwork`.
    CreateNetwork,
    /// `/NetworkDriver.DeleteNetwork`.
    DeleteNetwork,
    /// `/NetworkDriver.AllocateNetwork` (swarm scope: refused).
    AllocateNetwork,
    /// `/NetworkDriver.FreeNetwork` (swarm scope: refused).
    FreeNetwork,
    /// `/NetworkDriver.CreateEndpoint`.
    CreateEndpoint,
    /// `/NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint,
    /// `/NetworkDriver.EndpointOperInfo`.
    EndpointOperInfo,
    /// `/NetworkDriver.Join`.
    Join,
    /// `/NetworkDriver.Leave`.
    Leave,
    /// `/NetworkDriver.DiscoverNew` (no-op).
    DiscoverNew,
    /// `/NetworkDriver.DiscoverDelete` (no-op).
    DiscoverDelete,
    /// `/NetworkDriver.ProgramExternalConnectivity` (no-op).
    ProgramExternalConnectivity,
    /// `/NetworkDriver.RevokeExternalConnectivity` (no-op).
    RevokeExternalConnectivity,
    /// `/IpamDriver.GetCapabilities`.
    IpamCapabilities,
    /// `/IpamDriver.GetDefaultAddressSpaces`.
    DefaultAddressSpaces,
    /// `/IpamDriver.RequestPool`.
    RequestPool,
    /// `/IpamDriver.ReleasePool`.
    ReleasePool,
    /// `/IpamDriver.RequestAddress`.
    RequestAddress,
    /// `/IpamDriver.ReleaseAddress`.
    ReleaseAddress,
}

impl Method {
    /// Every method, for tests and documentation.
    pub const ALL: [Method; 21] = [
        Method::Activate,
        Method::NetworkCapabilities,
        Method::CreateNetwork,
        Method::DeleteNetwork,
        Method::AllocateNetwork,
        Method::FreeNetwork,
        Method::CreateEndpoint,
        Method::DeleteEndpoint,
        Method::EndpointOperInfo,
        Method::Join,
        Method::Leave,
        Method::DiscoverNew,
        Method::DiscoverDelete,
        Method::ProgramExternalConnectivity,
        Method::RevokeExternalConnectivity,
        Method::IpamCapabilities,
        Method::DefaultAddressSpaces,
        Method::RequestPool,
        Method::ReleasePool,
        Method::RequestAddress,
        Method::ReleaseAddress,
    ];

    /// The URL path libnetwork posts to.
    pub fn path(self) -> &'static str {
        match self {
            Method::Activate => "/Plugin.Activate",
            Method::NetworkCapabilities => "/NetworkDriver.GetCapabilities",
            Method::CreateNetwork => "/NetworkDriver.CreateNetwork",
            Method::DeleteNetwork => "/NetworkDriver.DeleteNetwork",
            Method::AllocateNetwork => "/NetworkDriver.AllocateNetwork",
            Method::FreeNetwork => "/NetworkDriver.FreeNetwork",
            Method::CreateEndpoint => "/NetworkDriver.CreateEndpoint",
            Method::DeleteEndpoint => "/NetworkDriver.DeleteEndpoint",
            Method::EndpointOperInfo => "/NetworkDriver.EndpointOperInfo",
            Method::Join => "/NetworkDriver.Join",
            Method::Leave => "/NetworkDriver.Leave",
            Method::DiscoverNew => "/NetworkDriver.DiscoverNew",
            Method::DiscoverDelete => "/NetworkDriver.DiscoverDelete",
            Method::ProgramExternalConnectivity => "/NetworkDriver.ProgramExternalConnectivity",
            Method::RevokeExternalConnectivity => "/NetworkDriver.RevokeExternalConnectivity",
            Method::IpamCapabilities => "/IpamDriver.GetCapabilities",
            Method::DefaultAddressSpaces => "/IpamDriver.GetDefaultAddressSpaces",
            Method::RequestPool => "/IpamDriver.RequestPool",
            Method::ReleasePool => "/IpamDriver.ReleasePool",
            Method::RequestAddress => "/IpamDriver.RequestAddress",
            Method::ReleaseAddress => "/IpamDriver.ReleaseAddress",
        }
    }

    /// The method posted to `path`, if we serve it.
    pub fn from_path(path: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.path() == path)
    }
}

/// The status of a successful answer.
pub const STATUS_OK: u16 = 200;
/// The status of an error answer (see the module docs for why not 200).
pub const STATUS_ERROR: u16 = 500;
/// The status of an unknown method.
pub const STATUS_NOT_FOUND: u16 = 404;

/// The error body `{"Err": message}`.
pub fn error_body(message: &str) -> Vec<u8> {
    encode(&ErrorResponse {
        err: message.to_owned(),
    })
}

/// The message shoal answers to swarm-scope calls.
pub const SWARM_UNSUPPORTED: &str =
    "shoal does not support Docker swarm mode networks: create the network with `docker network create` on each node (local scope)";

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs and string-keyed maps cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|e| error_body_fallback(&e.to_string()))
}

fn error_body_fallback(message: &str) -> Vec<u8> {
    let text = serde_json::Value::String(format!("cannot encode the answer: {message}"));
    format!("{{\"Err\":{text}}}").into_bytes()
}

/// Parses a request body; an empty body (as libnetwork sends for
/// `GetCapabilities`) reads as `{}`.
pub fn parse<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("{path}: cannot parse the request body: {e}"))
}

/// Routes one request: parses `body` for the method at `path`, calls the
/// backend and encodes its answer. Returns the HTTP status and the body.
pub fn dispatch(path: &str, body: &[u8], backend: &dyn Backend) -> (u16, Vec<u8>) {
    let Some(method) = Method::from_path(path) else {
        return (
            STATUS_NOT_FOUND,
            error_body(&format!("shoal plugin: no method {path}")),
        );
    };
    backend.observe(method);
    match answer(method, path, body, backend) {
        Ok(body) => (STATUS_OK, body),
        Err(message) => (STATUS_ERROR, error_body(&message)),
    }
}

fn answer(
    method: Method,
    path: &str,
    body: &[u8],
    backend: &dyn Backend,
) -> Result<Vec<u8>, String> {
    let empty = || encode(&Map::new());
    Ok(match method {
        Method::Activate => encode(&ActivateResponse {
            implements: vec!["NetworkDriver".to_owned(), "IpamDriver".to_owned()],
        }),
        Method::NetworkCapabilities => encode(&NetworkCapabilities {
            scope: "local".to_owned(),
            connectivity_scope: "global".to_owned(),
        }),
        Method::CreateNetwork => {
            backend.create_network(&parse(path, body)?)?;
            empty()
        }
        Method::DeleteNetwork => {
            let req: DeleteNetworkRequest = parse(path, body)?;
            backend.delete_network(&req.network_id)?;
            empty()
        }
        Method::AllocateNetwork => {
            parse::<AllocateNetworkRequest>(path, body)?;
            return Err(SWARM_UNSUPPORTED.to_owned());
        }
        Method::FreeNetwork => {
            parse::<DeleteNetworkRequest>(path, body)?;
            return Err(SWARM_UNSUPPORTED.to_owned());
        }
        Method::CreateEndpoint => encode(&backend.create_endpoint(&parse(path, body)?)?),
        Method::DeleteEndpoint => {
            let req: EndpointRequest = parse(path, body)?;
            backend.delete_endpoint(&req.network_id, &req.endpoint_id)?;
            empty()
        }
        Method::EndpointOperInfo => {
            let req: EndpointRequest = parse(path, body)?;
            encode(&EndpointInfoResponse {
                value: backend.endpoint_info(&req.network_id, &req.endpoint_id)?,
            })
        }
        Method::Join => encode(&backend.join(&parse(path, body)?)?),
        Method::Leave => {
            let req: EndpointRequest = parse(path, body)?;
            backend.leave(&req.network_id, &req.endpoint_id)?;
            empty()
        }
        Method::DiscoverNew | Method::DiscoverDelete => {
            parse::<DiscoveryNotification>(path, body)?;
            empty()
        }
        Method::ProgramExternalConnectivity => {
            parse::<ProgramExternalConnectivityRequest>(path, body)?;
            empty()
        }
        Method::RevokeExternalConnectivity => {
            parse::<EndpointRequest>(path, body)?;
            empty()
        }
        Method::IpamCapabilities => encode(&IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        }),
        Method::DefaultAddressSpaces => encode(&AddressSpaces {
            local_default_address_space: super::ADDRESS_SPACE.to_owned(),
            global_default_address_space: super::ADDRESS_SPACE.to_owned(),
        }),
        Method::RequestPool => encode(&backend.request_pool(&parse(path, body)?)?),
        Method::ReleasePool => {
            let req: ReleasePoolRequest = parse(path, body)?;
            backend.release_pool(&req.pool_id)?;
            empty()
        }
        Method::RequestAddress => encode(&backend.request_address(&parse(path, body)?)?),
        Method::ReleaseAddress => {
            let req: ReleaseAddressRequest = parse(path, body)?;
            backend.release_address(&req.pool_id, &req.address)?;
            empty()
        }
    })
}
