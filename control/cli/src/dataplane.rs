//! `shoal dataplane`: the local data plane's tables and counters, and key
//! rotation, through shoald's API socket.

use std::path::Path;

use anyhow::Context;
use hyper::Method;
use serde_json::Value;

use crate::http::call_text;

fn call(
    control: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<String> {
    call_text(control, method, path, body, "shoald refused")
}

/// Prints networks, endpoints and counters (or the raw JSON).
pub fn status(control: &Path, json: bool) -> anyhow::Result<()> {
    let text = call(control, Method::GET, "/v1/dataplane", None)?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text).context("shoald sent malformed JSON")?;
    print!("{}", render_status(&v));
    Ok(())
}

/// The human view of `GET /v1/dataplane`.
pub fn render_status(v: &Value) -> String {
    let mut out = format!(
        "{:<16} {:<9} {:<6} {:<10} ENDPOINTS\n",
        "NETWORK", "VNI", "MTU", "ENCRYPTED"
    );
    for n in v["networks"].as_array().into_iter().flatten() {
        let eps = n["endpoints"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let local = eps.iter().filter(|e| e["location"] == "local").count();
        out += &format!(
            "{:<16} {:<9} {:<6} {:<10} {} ({} local)\n",
            n["name"].as_str().unwrap_or("?"),
            n["vni"],
            n["mtu"],
            if n["encrypted"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            eps.len(),
            local
        );
    }
    out += &format!("\n{:<24} COUNT\n", "FRAMES");
    for (k, n) in v["frames"].as_object().into_iter().flatten() {
        out += &format!("{k:<24} {n}\n");
    }
    out += &format!("\n{:<24} COUNT\n", "DROPPED (reason)");
    for (k, n) in v["drops"].as_object().into_iter().flatten() {
        out += &format!("{k:<24} {n}\n");
    }
    out
}

/// Replaces a network's key ring: `keys` as `ID:HEX`.
pub fn set_keys(control: &Path, network: &str, keys: &[String], tx: u8) -> anyhow::Result<()> {
    let mut list = Vec::new();
    for k in keys {
        let (id, secret) = k.split_once(':').with_context(|| {
            format!("--key {k:?}: expected ID:SECRET, e.g. 2:<64 hex characters>")
        })?;
        let id: u8 = id
            .parse()
            .with_context(|| format!("--key {k:?}: the id must be a number from 0 to 255"))?;
        list.push(serde_json::json!({ "id": id, "secret": secret }));
    }
    let body = serde_json::json!({ "keys": list, "tx": tx }).to_string();
    call(
        control,
        Method::PUT,
        &format!("/v1/networks/{network}/keys"),
        Some(body),
    )?;
    println!(
        "network {network}: {} key(s), sending with key {tx}",
        keys.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_networks_and_every_counter() {
        let v = serde_json::json!({
            "networks": [{"name": "blue", "vni": 4096, "mtu": 1418, "encrypted": true,
                          "endpoints": [{"ip": "10.0.0.2", "mac": "02:42:0a:00:00:02", "location": "local"},
                                        {"ip": "10.0.0.3", "mac": "02:42:0a:00:00:03", "location": "10.99.0.12"}]}],
            "frames": {"underlay_rx": 5},
            "drops": {"replay": 3, "auth_failure": 0}
        });
        let t = render_status(&v);
        assert!(
            t.contains("blue")
                && t.contains("4096")
                && t.contains("yes")
                && t.contains("2 (1 local)"),
            "{t}"
        );
        assert!(t.contains("replay") && t.contains("auth_failure"), "{t}");
    }
}
