//! A stand-in for shoal's network plugin: just enough of libnetwork's remote
//! network and IPAM driver protocol for the engine to create networks and
//! attach containers, recording every request so tests can check what the
//! runtime made the engine ask.
//!
//! It serves HTTP/1.1 on `/run/docker/plugins/<name>.sock` (where the engine
//! discovers plugins) from plain threads, and gives each endpoint a veth of
//! the host for the engine to move into the container.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The plugin's socket and the requests it answered (`("CreateNetwork", body)`).
pub struct FakePlugin {
    pub name: String,
    socket: PathBuf,
    pub requests: Arc<Mutex<Vec<(String, Value)>>>,
    veths: Arc<Mutex<Vec<String>>>,
}

impl FakePlugin {
    pub fn start(name: &str) -> Self {
        let dir = PathBuf::from("/run/docker/plugins");
        std::fs::create_dir_all(&dir).expect("create /run/docker/plugins");
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind the plugin socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let veths = Arc::new(Mutex::new(Vec::new()));
        let (r, v) = (requests.clone(), veths.clone());
        let tag = name.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (r, v, tag) = (r.clone(), v.clone(), tag.clone());
                std::thread::spawn(move || serve(conn, &r, &v, &tag));
            }
        });
        Self {
            name: name.to_string(),
            socket,
            requests,
            veths,
        }
    }

    /// The bodies of the requests to `method` (`"IpamDriver.RequestPool"`).
    pub fn bodies(&self, method: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        for veth in self.veths.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = Command::new("ip").args(["link", "del", veth]).output();
        }
    }
}

fn serve(
    conn: UnixStream,
    requests: &Mutex<Vec<(String, Value)>>,
    veths: &Mutex<Vec<String>>,
    tag: &str,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = path.trim_start_matches('/').to_string();
        let answer = answer(&method, &body, veths, tag);
        requests.lock().unwrap().push((method, body));
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if conn.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(method: &str, body: &Value, veths: &Mutex<Vec<String>>, tag: &str) -> Value {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    match method {
        "Plugin.Activate" => json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        "NetworkDriver.GetCapabilities" => json!({"Scope": "local"}),
        "IpamDriver.GetCapabilities" => json!({"RequiresMACAddress": false}),
        "IpamDriver.GetDefaultAddressSpaces" => {
            json!({"LocalDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global"})
        }
        "IpamDriver.RequestPool" => {
            let pool = body["Pool"].as_str().unwrap_or("").to_string();
            json!({"PoolID": pool, "Pool": pool, "Data": {}})
        }
        "IpamDriver.RequestAddress" => {
            let pool = body["PoolID"].as_str().unwrap_or("10.0.0.0/24");
            let (net, len) = pool.split_once('/').unwrap_or((pool, "24"));
            let address = match body["Address"].as_str() {
                Some(a) if !a.is_empty() => a.to_string(),
                // The gateway: the network's first address.
                _ => {
                    let base: std::net::Ipv4Addr = net.parse().unwrap();
                    std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
                }
            };
            json!({"Address": format!("{address}/{len}"), "Data": {}})
        }
        "NetworkDriver.CreateEndpoint" => json!({"Interface": {}}),
        "NetworkDriver.Join" => {
            // Short names: interface names have 15 bytes at most.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let host = format!("fp{}h{n}", &tag[tag.len().saturating_sub(5)..]);
            let peer = format!("fp{}c{n}", &tag[tag.len().saturating_sub(5)..]);
            let _ = Command::new("ip")
                .args(["link", "add", &host, "type", "veth", "peer", "name", &peer])
                .output();
            veths.lock().unwrap().push(host);
            json!({
                "InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
                "DisableGatewayService": true
            })
        }
        "NetworkDriver.EndpointOperInfo" => json!({"Value": {}}),
        _ => json!({}),
    }
}
