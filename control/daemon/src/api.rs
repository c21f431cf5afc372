//! The daemon's local API: HTTP on a Unix socket (like Docker's
//! `/var/run/docker.sock`), for the CLI, for tests and for scraping metrics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text: drops per reason, frame counters |
//! | GET | `/v1/dataplane` | JSON: networks, their endpoints, counters (503 until a data plane runs) |
//! | GET | `/v1/discovery` | JSON: gossip members and each network's endpoints (swarm mode) |
//! | POST | `/v1/networks` | add a network (JSON as a `[[networks]]` entry of the file); idempotent |
//! | DELETE | `/v1/networks/{name}` | remove a network (409 while local endpoints are attached) |
//! | PUT | `/v1/networks/{name}/peers` | replace the peer nodes: `{"peers": ["10.99.0.12"]}` |
//! | POST | `/v1/endpoints` | create a local endpoint (JSON as an `[[endpoints]]` entry) |
//! | DELETE | `/v1/endpoints/{network}/{ip}` | remove a local endpoint; its TAP device goes |
//! | PUT | `/v1/networks/{name}/keys` | replace an encrypted network's key ring |
//! | POST | `/v1/networks/{name}/remotes` | add or move a remote endpoint |
//! | DELETE | `/v1/networks/{name}/remotes/{mac}` | remove a remote endpoint |

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_node::config::RemoteEndpoint;
use shoal_node::{DataPlane, DataPlaneError, FrameCounts};
use shoal_overlay::counters::DropReason;
use shoal_overlay::mac::MacAddr;
use shoal_overlay::switch::Location;

use crate::attach::DataPlaneAttacher;
use crate::file::{key_ring, EndpointSection, KeySection, NetworkSection};

/// The API's view of the daemon.
pub type AppState = Arc<DataPlane>;

/// The router of the local API: the data plane's routes that change it
/// when this daemon runs a standalone one (`--config`), its status whenever
/// a data plane runs (in swarm mode it starts with the first task's
/// network), what the node knows through gossip, and the swarm routes of
/// [`shoal_manager::local`].
pub fn router(
    dp: Option<AppState>,
    attacher: Arc<DataPlaneAttacher>,
    swarm: Arc<shoal_manager::swarm::Swarm>,
) -> Router {
    let status_routes = Router::new()
        .route("/v1/dataplane", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/discovery", get(discovery))
        .with_state(attacher);
    let data = match dp {
        Some(dp) => Router::new()
            .route("/v1/networks", post(add_network))
            .route("/v1/networks/{name}", delete(remove_network))
            .route("/v1/networks/{name}/peers", put(set_peers))
            .route("/v1/endpoints", post(add_endpoint))
            .route("/v1/endpoints/{network}/{ip}", delete(remove_endpoint))
            .route("/v1/networks/{name}/keys", put(set_keys))
            .route("/v1/networks/{name}/remotes", post(upsert_remote))
            .route("/v1/networks/{name}/remotes/{mac}", delete(remove_remote))
            .with_state(dp),
        None => Router::new(),
    };
    status_routes
        .merge(data)
        .merge(shoal_manager::local::router(swarm))
}

fn no_dataplane() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "this shoald runs no data plane yet: start it with --config FILE, or run a swarm task \
         attached to an overlay network"
            .into(),
    )
}

async fn discovery(
    State(attacher): State<Arc<DataPlaneAttacher>>,
) -> Result<Json<crate::attach::DiscoveryStatus>, ApiError> {
    attacher.discovery().map(Json).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "gossip is not running: this node is not in a swarm yet".into(),
        )
    })
}

/// An error answer: a status and a message naming the problem.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "message": self.1 }))).into_response()
    }
}

impl From<DataPlaneError> for ApiError {
    fn from(e: DataPlaneError) -> Self {
        let status = match e {
            DataPlaneError::UnknownNetwork(_) => StatusCode::NOT_FOUND,
            DataPlaneError::NetworkClash { .. }
            | DataPlaneError::NetworkInUse { .. }
            | DataPlaneError::EndpointExists { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

/// A JSON body whose every rejection (not JSON, wrong shape, unknown field,
/// no content type) is a 400 naming the problem, in the API's error shape.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(body)) => Ok(Body(body)),
            Err(rejection) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {}", rejection.body_text()),
            )),
        }
    }
}

fn frame_counters(dp: &DataPlane) -> [(&'static str, u64); 5] {
    let s = dp.stats();
    [
        ("endpoint_rx", s.endpoint_rx),
        ("endpoint_tx", s.endpoint_tx),
        ("underlay_rx", s.underlay_rx),
        ("underlay_tx", s.underlay_tx),
        ("arp_replies", s.arp_replies),
    ]
}

async fn metrics(State(attacher): State<Arc<DataPlaneAttacher>>) -> Result<String, ApiError> {
    let dp = attacher.current().ok_or_else(no_dataplane)?;
    let mut out = String::new();
    out.push_str(
        "# HELP shoal_dataplane_drops_total Frames dropped by the data plane, by reason.\n",
    );
    out.push_str("# TYPE shoal_dataplane_drops_total counter\n");
    for (reason, n) in dp.drops().snapshot() {
        let _ = writeln!(
            out,
            "shoal_dataplane_drops_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    out.push_str(
        "# HELP shoal_dataplane_frames_total Frames moved by the data plane, by direction.\n",
    );
    out.push_str("# TYPE shoal_dataplane_frames_total counter\n");
    for (dir, n) in frame_counters(&dp) {
        let _ = writeln!(
            out,
            "shoal_dataplane_frames_total{{direction=\"{dir}\"}} {n}"
        );
    }
    Ok(out)
}

/// One endpoint in the status answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EndpointView {
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// MAC address.
    pub mac: MacAddr,
    /// `local` or the owning node's underlay address.
    pub location: String,
}

/// One network in the status answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct NetworkView {
    /// Name.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Endpoint MTU.
    pub mtu: u32,
    /// Whether frames are sealed.
    pub encrypted: bool,
    /// Endpoints, sorted by IP.
    pub endpoints: Vec<EndpointView>,
}

/// The status answer of `GET /v1/dataplane`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// Networks.
    pub networks: Vec<NetworkView>,
    /// Drop counts by reason name (every reason, zeros included).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Frame counts by direction.
    pub frames: std::collections::BTreeMap<String, u64>,
    /// Frame counts of each forwarding lane (worker), by direction.
    pub lanes: Vec<FrameCounts>,
}

async fn status(
    State(attacher): State<Arc<DataPlaneAttacher>>,
) -> Result<Json<StatusView>, ApiError> {
    let dp = attacher.current().ok_or_else(no_dataplane)?;
    let networks = dp
        .networks()
        .into_iter()
        .map(|(spec, eps)| NetworkView {
            name: spec.name,
            vni: spec.vni.get(),
            mtu: spec.mtu,
            encrypted: spec.encrypted,
            endpoints: eps
                .into_iter()
                .map(|r| EndpointView {
                    ip: r.ip,
                    mac: r.mac,
                    location: match r.location {
                        Location::Local(_) => "local".into(),
                        Location::Remote(node) => node.to_string(),
                    },
                })
                .collect(),
        })
        .collect();
    let drops = DropReason::ALL
        .iter()
        .map(|&r| (r.name().to_string(), dp.drops().get(r)))
        .collect();
    let frames = frame_counters(&dp)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Ok(Json(StatusView {
        networks,
        drops,
        frames,
        lanes: dp.lane_stats(),
    }))
}

/// Body of `PUT /v1/networks/{name}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysBody {
    keys: Vec<KeySection>,
    tx: u8,
}

async fn set_keys(
    State(dp): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<KeysBody>,
) -> Result<StatusCode, ApiError> {
    let ring = key_ring(&body.keys, Some(body.tx))
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    dp.set_keys(&name, &ring)?;
    tracing::info!(network = %name, tx = body.tx, keys = body.keys.len(), "key ring replaced");
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/networks/{name}/remotes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteBody {
    ip: Ipv4Addr,
    mac: Option<MacAddr>,
    node: IpAddr,
}

async fn upsert_remote(
    State(dp): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<RemoteBody>,
) -> Result<StatusCode, ApiError> {
    let remote = RemoteEndpoint {
        ip: body.ip,
        mac: body.mac.unwrap_or_else(|| MacAddr::from_ipv4(body.ip)),
        node: body.node,
    };
    dp.upsert_remote(&name, remote)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_remote(
    State(dp): State<AppState>,
    Path((name, mac)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mac: MacAddr = mac
        .parse()
        .map_err(|e: shoal_overlay::mac::MacParseError| {
            ApiError(StatusCode::BAD_REQUEST, e.to_string())
        })?;
    if dp.remove_remote(&name, mac)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no endpoint with MAC {mac} on network {name:?}"),
        ))
    }
}

async fn add_network(
    State(dp): State<AppState>,
    Body(body): Body<NetworkSection>,
) -> Result<StatusCode, ApiError> {
    let net = crate::file::network(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let name = net.name.clone();
    dp.add_network(net)?;
    tracing::debug!(network = %name, "network added through the API");
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_network(
    State(dp): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if dp.remove_network(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no network named {name:?} on this node"),
        ))
    }
}

/// Body of `PUT /v1/networks/{name}/peers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersBody {
    peers: Vec<IpAddr>,
}

async fn set_peers(
    State(dp): State<AppState>,
    Path(name): Path<String>,
    Body(body): Body<PeersBody>,
) -> Result<StatusCode, ApiError> {
    dp.set_peers(&name, &body.peers)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_endpoint(
    State(dp): State<AppState>,
    Body(body): Body<EndpointSection>,
) -> Result<StatusCode, ApiError> {
    let ep = crate::file::endpoint(body);
    // Creating the TAP enters the task's namespace on a thread of its own and
    // takes a few system calls: keep it off the runtime's threads.
    tokio::task::spawn_blocking(move || dp.add_endpoint(ep))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_endpoint(
    State(dp): State<AppState>,
    Path((network, ip)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{ip:?} is not an IPv4 address"),
        )
    })?;
    // Joining the endpoint's threads takes up to one poll interval.
    let removed = {
        let network = network.clone();
        tokio::task::spawn_blocking(move || dp.remove_endpoint(&network, ip))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no local endpoint {ip} on network {network:?}"),
        ))
    }
}
