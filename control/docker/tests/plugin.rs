//! The plugin over a real Unix socket, and driven by the real Docker engine.
//!
//! `docker_drives_the_plugin` needs root, `ip` and a running Docker engine
//! on `/var/run/docker.sock`; without them it fails (it never skips), with a
//! message saying what is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use shoal_docker::plugin::protocol::{self, Method};
use shoal_docker::plugin::{
    Backend, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, InterfaceName,
    JoinRequest, JoinResponse, Options, PluginServer, RequestAddressRequest,
    RequestAddressResponse, RequestPoolRequest, RequestPoolResponse, MAX_BODY_BYTES,
};
use tokio::net::UnixStream;

// ---------------------------------------------------------------------------
// A recording backend
// ---------------------------------------------------------------------------

/// Hands out `10.99.<octet>.0/24`, the gateway `.1` and hosts from `.2`;
/// on Join creates a veth pair in the root namespace and names its peer.
struct Recorder {
    /// Prefix of the veth names, unique per test process.
    tag: String,
    octet: u8,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every request, by path, in arrival order.
    calls: Vec<String>,
    next_host: u8,
    veths: Vec<String>,
    pool_requests: Vec<RequestPoolRequest>,
    address_requests: Vec<RequestAddressRequest>,
    addresses_given: Vec<String>,
    create_network: Option<CreateNetworkRequest>,
    create_endpoint: Option<CreateEndpointRequest>,
    join: Option<JoinRequest>,
    /// Whether a namespace was mounted at `SandboxKey` when Join came in.
    sandbox_existed_at_join: Option<bool>,
    released_addresses: Vec<String>,
    /// (call, whether the container's interface was in the root namespace).
    peer_in_root: Vec<(String, bool)>,
}

impl Recorder {
    fn new(tag: String, octet: u8) -> Recorder {
        Recorder {
            tag,
            octet,
            state: Mutex::new(State {
                next_host: 2,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes whether the container end of the last veth is back in the
    /// root namespace.
    fn note_peer(&self, when: &str) {
        let mut state = self.state();
        if let Some(n) = state.veths.len().checked_sub(1) {
            let peer = format!("{}c{n}", self.tag);
            let home = ip(&["link", "show", &peer]).is_ok();
            state.peer_in_root.push((when.to_owned(), home));
        }
    }

    fn pool(&self) -> String {
        format!("10.99.{}.0/24", self.octet)
    }
}

impl Backend for Recorder {
    fn observe(&self, method: Method) {
        let mut state = self.state();
        // After Join, note with each call whether the container's network
        // namespace is mounted at the SandboxKey yet.
        let netns = match &state.join {
            Some(join) if netns_mounted(&join.sandbox_key) => " (netns mounted)",
            Some(_) => " (no netns)",
            None => "",
        };
        let call = format!("{}{netns}", method.path());
        state.calls.push(call);
    }

    fn create_network(&self, request: &CreateNetworkRequest) -> Result<(), String> {
        if request.options["com.docker.network.generic"]
            .get("refuse")
            .is_some()
        {
            return Err("test refusal: no network for you".to_owned());
        }
        self.state().create_network = Some(request.clone());
        Ok(())
    }

    fn delete_network(&self, _network_id: &str) -> Result<(), String> {
        Ok(())
    }

    fn create_endpoint(
        &self,
        request: &CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, String> {
        self.state().create_endpoint = Some(request.clone());
        Ok(CreateEndpointResponse { interface: None })
    }

    fn delete_endpoint(&self, _network_id: &str, _endpoint_id: &str) -> Result<(), String> {
        self.note_peer("DeleteEndpoint");
        // Docker has moved the container's end back by now (checked
        // below); deleting our end deletes the pair.
        let last = self.state().veths.last().cloned();
        if let Some(host) = last {
            ip(&["link", "del", &host])?;
        }
        Ok(())
    }

    fn endpoint_info(&self, _network_id: &str, endpoint_id: &str) -> Result<Options, String> {
        let mut info = Options::new();
        info.insert("shoal.endpoint".to_owned(), Value::from(endpoint_id));
        Ok(info)
    }

    fn join(&self, request: &JoinRequest) -> Result<JoinResponse, String> {
        let existed = netns_mounted(&request.sandbox_key);
        let mut state = self.state();
        let n = state.veths.len();
        let host = format!("{}h{n}", self.tag);
        let peer = format!("{}c{n}", self.tag);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &host, "up"])?;
        state.veths.push(host);
        state.join = Some(request.clone());
        state.sandbox_existed_at_join = Some(existed);
        Ok(JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: peer,
                dst_name: String::new(),
                dst_prefix: "eth".to_owned(),
            }),
            gateway: format!("10.99.{}.1", self.octet),
            ..JoinResponse::default()
        })
    }

    fn leave(&self, _network_id: &str, _endpoint_id: &str) -> Result<(), String> {
        self.note_peer("Leave");
        Ok(())
    }

    fn request_pool(&self, request: &RequestPoolRequest) -> Result<RequestPoolResponse, String> {
        self.state().pool_requests.push(request.clone());
        if request.v6 {
            return Err("the test backend has no IPv6 pools".to_owned());
        }
        if request.options.contains_key("refuse") {
            return Err("test refusal: no pool for you".to_owned());
        }
        Ok(RequestPoolResponse {
            pool_id: format!("pool-{}", self.octet),
            pool: self.pool(),
            data: Default::default(),
        })
    }

    fn release_pool(&self, _pool_id: &str) -> Result<(), String> {
        Ok(())
    }

    fn request_address(
        &self,
        request: &RequestAddressRequest,
    ) -> Result<RequestAddressResponse, String> {
        let mut state = self.state();
        state.address_requests.push(request.clone());
        let gateway = request
            .options
            .get("RequestAddressType")
            .map(String::as_str)
            == Some("com.docker.network.gateway");
        let address = if !request.address.is_empty() {
            format!("{}/24", request.address)
        } else if gateway {
            format!("10.99.{}.1/24", self.octet)
        } else {
            let host = state.next_host;
            state.next_host = host.checked_add(1).ok_or("the test pool is full")?;
            format!("10.99.{}.{host}/24", self.octet)
        };
        state.addresses_given.push(address.clone());
        Ok(RequestAddressResponse {
            address,
            data: Default::default(),
        })
    }

    fn release_address(&self, _pool_id: &str, address: &str) -> Result<(), String> {
        self.state().released_addresses.push(address.to_owned());
        Ok(())
    }
}

/// Whether a network namespace is mounted at `path` (Docker leaves the
/// empty mount point behind for a while after the container is gone, so
/// the file existing says nothing).
fn netns_mounted(path: &str) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // The mount point is the fifth field.
    mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| Path::new(mount_point) == path)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------
// A plain HTTP/1.1 client over the socket
// ---------------------------------------------------------------------------

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn post(socket: &Path, path: &str, body: Vec<u8>) -> Answer {
    let stream = UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let driver = tokio::spawn(connection);
    let request = Request::post(path)
        .header("host", "plugin")
        .header("content-type", protocol::CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    driver.abort();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: answer {bytes:?} is not JSON: {e}"));
    Answer {
        status,
        content_type,
        body,
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn temp_socket() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir()
        .join(format!("shoal-plugin-test-{}-{n}", std::process::id()))
        .join("p.sock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_speaks_the_plugin_protocol() {
    let socket = temp_socket();
    let recorder = Arc::new(Recorder::new("unused".to_owned(), 1));
    let server = PluginServer::start(socket.clone(), recorder.clone())
        .await
        .expect("start");
    assert_eq!(server.path(), socket);

    let activate = post(&socket, "/Plugin.Activate", Vec::new()).await;
    assert_eq!(activate.status, 200);
    assert_eq!(activate.content_type, protocol::CONTENT_TYPE);
    assert_eq!(
        activate.body,
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );

    let pool = post(
        &socket,
        "/IpamDriver.RequestPool",
        br#"{"AddressSpace":"shoal","Pool":"","SubPool":"","Options":null,"V6":false}"#.to_vec(),
    )
    .await;
    assert_eq!(pool.status, 200);
    assert_eq!(
        pool.body,
        json!({"PoolID": "pool-1", "Pool": "10.99.1.0/24", "Data": {}})
    );

    let unknown = post(&socket, "/NetworkDriver.Frobnicate", b"{}".to_vec()).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["Err"]
        .as_str()
        .is_some_and(|e| e.contains("/NetworkDriver.Frobnicate")));

    let bad = post(&socket, "/NetworkDriver.Join", b"{not json".to_vec()).await;
    assert_eq!(bad.status, 500);
    assert!(bad.body["Err"]
        .as_str()
        .is_some_and(|e| e.contains("/NetworkDriver.Join")));

    let huge = post(
        &socket,
        "/NetworkDriver.Join",
        vec![b' '; MAX_BODY_BYTES + 1],
    )
    .await;
    assert_eq!(huge.status, 413);
    assert!(huge.body["Err"]
        .as_str()
        .is_some_and(|e| e.contains("larger")));

    // A second server on a live socket is refused.
    let second = PluginServer::start(socket.clone(), recorder.clone()).await;
    let err = second.expect_err("a second server on a live socket");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another plugin serves"), "{err}");

    server.stop().await;
    assert!(!socket.exists(), "stop removes the socket");
    assert!(
        UnixStream::connect(&socket).await.is_err(),
        "nothing answers after stop"
    );

    // A stale socket file (its process died) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let server = PluginServer::start(socket.clone(), recorder.clone())
        .await
        .expect("start over a stale socket");
    assert_eq!(
        post(&socket, "/Plugin.Activate", Vec::new()).await.status,
        200
    );
    drop(server);
    assert!(!socket.exists(), "drop removes the socket");

    let calls = recorder.state().calls.clone();
    assert_eq!(
        calls,
        [
            "/Plugin.Activate",
            "/IpamDriver.RequestPool",
            "/NetworkDriver.Join",
            "/Plugin.Activate"
        ]
    );
    if let Some(dir) = socket.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

// ---------------------------------------------------------------------------
// The real Docker engine
// ---------------------------------------------------------------------------

const IMAGE: &str = "shoal-test/busybox:latest";
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the docker CLI (bounded by `DOCKER_TIMEOUT`); `Err` holds stderr.
async fn docker(args: &[&str]) -> Result<String, String> {
    let run = tokio::process::Command::new("docker")
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DOCKER_TIMEOUT, run)
        .await
        .map_err(|_| format!("docker {args:?} took over {DOCKER_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes what the Docker test made, also when it fails. Declared after
/// the server so that it drops first, while the plugin still answers
/// Docker's DeleteNetwork.
struct DockerCleanup {
    network: String,
    container: String,
    recorder: Arc<Recorder>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        // Best effort, never panics: each may already be gone.
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
        let veths = self.recorder.state().veths.clone();
        for veth in veths {
            let _ = ip(&["link", "del", &veth]);
        }
    }
}

/// Fails (never skips) without a Docker engine; builds the test image.
async fn need_docker() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]).await {
        panic!("this test needs a running Docker engine on /var/run/docker.sock: {e}");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-images");
    let built = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        built.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&built.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_shows_the_plugin_errors() {
    need_docker().await;
    let pid = std::process::id();
    let plugin = format!("shoaltest{pid}e");
    let network = format!("shoaltest-e{pid}");
    let recorder = Arc::new(Recorder::new(format!("shte{}", pid % 100_000), 7));
    let socket = PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let server = PluginServer::start(socket.clone(), recorder.clone())
        .await
        .expect("start the plugin");
    let cleanup = DockerCleanup {
        network: network.clone(),
        container: format!("shoaltest-e{pid}-none"),
        recorder: recorder.clone(),
    };

    // An IPAM error (libnetwork's IPAM client reads `Error` on a 200; we
    // answer 500 + `Err`, which the plugin client reads for both drivers).
    let ipam = docker(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--ipam-opt",
        "refuse=1",
        &network,
    ])
    .await
    .expect_err("the pool was refused");
    eprintln!("IPAM refusal: {ipam}");
    assert!(ipam.contains("test refusal: no pool for you"), "{ipam}");

    // A network driver error; Docker gives the pool back.
    let driver = docker(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "-o",
        "refuse=1",
        &network,
    ])
    .await
    .expect_err("the network was refused");
    eprintln!("network driver refusal: {driver}");
    assert!(
        driver.contains("test refusal: no network for you"),
        "{driver}"
    );
    let calls = recorder.state().calls.clone();
    eprintln!("calls: {calls:#?}");
    assert_eq!(
        calls.last().map(String::as_str),
        Some("/IpamDriver.ReleasePool"),
        "Docker gives the pool back when CreateNetwork fails: {calls:#?}"
    );

    drop(cleanup);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_drives_the_plugin() {
    need_docker().await;
    let pid = std::process::id();

    let plugin = format!("shoaltest{pid}");
    let network = format!("shoaltest-n{pid}");
    let container = format!("shoaltest-c{pid}");
    let octet = u8::try_from(pid % 200 + 20).expect("below 256");
    let recorder = Arc::new(Recorder::new(format!("sht{}", pid % 100_000), octet));
    let socket = PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let server = PluginServer::start(socket.clone(), recorder.clone())
        .await
        .expect("start the plugin");
    let cleanup = DockerCleanup {
        network: network.clone(),
        container: container.clone(),
        recorder: recorder.clone(),
    };

    // Network create.
    let net_id = docker(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--ipam-opt",
        "network=foo",
        &network,
    ])
    .await
    .expect("network create");
    let net_id = net_id.trim().to_owned();
    let after_create = recorder.state().calls.len();

    // Container start and stop (--rm: removed when `ip addr` exits).
    let seen = docker(&[
        "run",
        "--rm",
        "--name",
        &container,
        "--network",
        &network,
        IMAGE,
        "sh",
        "-c",
        "ip addr; ip route",
    ])
    .await
    .expect("docker run");
    let after_run = recorder.state().calls.len();

    // Network rm.
    docker(&["network", "rm", &network])
        .await
        .expect("network rm");

    // `docker run --rm` may return before Docker has released the endpoint;
    // `network rm` waits for that, so by now every call is in.
    let calls = recorder.state().calls.clone();
    {
        let state = recorder.state();
        eprintln!("network create: {:#?}", &calls[..after_create]);
        eprintln!("container run: {:#?}", &calls[after_create..after_run]);
        eprintln!("network rm: {:#?}", &calls[after_run..]);
        eprintln!("pool requests: {:#?}", state.pool_requests);
        eprintln!("address requests: {:#?}", state.address_requests);
        eprintln!("addresses given: {:?}", state.addresses_given);
        eprintln!("create network: {:#?}", state.create_network);
        eprintln!("create endpoint: {:#?}", state.create_endpoint);
        eprintln!("join: {:#?}", state.join);
        eprintln!(
            "sandbox existed at join: {:?}",
            state.sandbox_existed_at_join
        );
        eprintln!("released: {:?}", state.released_addresses);
        eprintln!("interface in the root namespace: {:?}", state.peer_in_root);
        eprintln!("container saw:\n{seen}");

        // The container has our interface, renamed eth0, with our address.
        let address = format!("10.99.{octet}.2/24");
        assert!(
            seen.contains(&format!("inet {address}")),
            "container does not have {address}:\n{seen}"
        );
        assert!(seen.contains("eth0"), "no eth0 in the container:\n{seen}");
        assert!(
            seen.contains(&format!("default via 10.99.{octet}.1")),
            "no default route through our gateway:\n{seen}"
        );

        // What Docker told us.
        let pool = &state.pool_requests[0];
        assert_eq!(pool.address_space, "shoal");
        assert_eq!(pool.options.get("network").map(String::as_str), Some("foo"));
        let created = state.create_network.as_ref().expect("CreateNetwork came");
        assert_eq!(created.network_id, net_id);
        assert_eq!(created.ipv4_data[0].pool, recorder.pool());
        let endpoint = state.create_endpoint.as_ref().expect("CreateEndpoint came");
        assert_eq!(endpoint.network_id, net_id);
        assert_eq!(endpoint.interface.address, address);
        let join = state.join.as_ref().expect("Join came");
        assert_eq!(join.endpoint_id, endpoint.endpoint_id);
        assert!(join.sandbox_key.starts_with("/var/run/docker/netns/"));
        // Docker (runc's prestart hook) creates the namespace only after Join:
        // a driver cannot enter it during Join.
        assert_eq!(state.sandbox_existed_at_join, Some(false));
        // At DeleteEndpoint (not yet at Leave) Docker has moved the interface
        // back to the root namespace under its SrcName.
        assert!(
            state
                .peer_in_root
                .iter()
                .any(|(call, home)| call == "DeleteEndpoint" && *home),
            "{:?}",
            state.peer_in_root
        );
    }

    // The order of the calls that matter to a driver.
    let order = |path: &str| {
        calls
            .iter()
            .position(|c| c.split(' ').next() == Some(path))
            .unwrap_or_else(|| panic!("Docker never called {path}: {calls:#?}"))
    };
    assert!(order("/Plugin.Activate") < order("/IpamDriver.RequestPool"));
    assert!(order("/IpamDriver.RequestPool") < order("/NetworkDriver.CreateNetwork"));
    assert!(order("/NetworkDriver.CreateNetwork") < order("/NetworkDriver.CreateEndpoint"));
    assert!(order("/NetworkDriver.CreateEndpoint") < order("/NetworkDriver.Join"));
    assert!(order("/NetworkDriver.Join") < order("/NetworkDriver.Leave"));
    assert!(order("/NetworkDriver.Leave") < order("/NetworkDriver.DeleteEndpoint"));
    assert!(order("/NetworkDriver.DeleteEndpoint") < order("/IpamDriver.ReleasePool"));
    // Docker 20.10 releases the pool before it tells the network driver.
    assert!(order("/IpamDriver.ReleasePool") < order("/NetworkDriver.DeleteNetwork"));

    drop(cleanup);
    server.stop().await;
    assert!(!socket.exists());
}
