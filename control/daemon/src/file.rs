//! The standalone configuration file (TOML), parsed at the edge into the typed
//! [`DataPlaneConfig`].
//!
//! Unknown keys are refused, so a misspelt option is an error rather than a
//! silent default. Every conversion error names the field it is about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ipnet::Ipv4Net;
use serde::Deserialize;
use shoal_node::config::{
    DataPlaneConfig, Encryption, LocalEndpointConfig, NetworkConfig, RemoteEndpoint,
};
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::mac::MacAddr;
use shoal_overlay::vxlan::{Vni, VXLAN_PORT};
use shoal_sys::netns::NETNS_RUN_DIR;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node.
    pub node: NodeSection,
    /// Overlay networks.
    #[serde(default)]
    pub networks: Vec<NetworkSection>,
    /// Local endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointSection>,
}

/// `[node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's underlay address.
    pub address: IpAddr,
    /// Listening address of the VXLAN socket (default `0.0.0.0:4789`).
    pub listen: Option<SocketAddr>,
    /// Port peers listen on (default 4789).
    pub peer_port: Option<u16>,
    /// Underlay MTU (default 1500).
    pub underlay_mtu: Option<u32>,
    /// Forwarding workers (default: one per core, at most 8).
    pub workers: Option<usize>,
}

/// `[[networks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Network name.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Overlay subnet, e.g. `10.0.0.0/24`.
    pub subnet: Ipv4Net,
    /// Whether frames are sealed.
    #[serde(default)]
    pub encrypted: bool,
    /// AEAD for encrypted networks (default AES-256-GCM).
    pub cipher: Option<Cipher>,
    /// Up to three keys (`{ id = 1, secret = "<64 hex>" }`).
    #[serde(default)]
    pub keys: Vec<KeySection>,
    /// The key id used for sending.
    pub tx_key: Option<u8>,
    /// Underlay addresses of the other nodes.
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// Endpoints on other nodes.
    #[serde(default)]
    pub remotes: Vec<RemoteSection>,
}

/// A key in a network's ring.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// Key id (0-255), carried in each sealed frame.
    pub id: u8,
    /// 32 bytes as 64 hex characters.
    pub secret: String,
}

/// `[[networks.remotes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// MAC (default derived from the IP, 02:42:a.b.c.d).
    pub mac: Option<MacAddr>,
    /// Underlay address of the owning node.
    pub node: IpAddr,
}

/// `[[endpoints]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// Network name.
    pub network: String,
    /// Namespace name (under /var/run/netns) or absolute path.
    pub netns: String,
    /// Interface name inside the namespace (default `eth0`).
    pub ifname: Option<String>,
    /// Overlay address.
    pub ip: Ipv4Addr,
    /// MAC (default derived from the IP).
    pub mac: Option<MacAddr>,
}

/// Reads and converts the file at `path`.
pub fn load(path: &Path) -> anyhow::Result<DataPlaneConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses and converts configuration text.
pub fn parse(text: &str) -> anyhow::Result<DataPlaneConfig> {
    let file: FileConfig = toml::from_str(text)?;
    let mut config = DataPlaneConfig::new(file.node.address);
    if let Some(listen) = file.node.listen {
        config.listen = listen;
    }
    config.peer_port = file.node.peer_port.unwrap_or(VXLAN_PORT);
    if let Some(mtu) = file.node.underlay_mtu {
        config.underlay_mtu = mtu;
    }
    if let Some(workers) = file.node.workers {
        config.workers = workers;
    }
    for net in file.networks {
        config.networks.push(network(net)?);
    }
    for ep in file.endpoints {
        config.endpoints.push(endpoint(ep));
    }
    config.validate()?;
    Ok(config)
}

/// Converts an `[[endpoints]]` entry (also the body of `POST /v1/endpoints`):
/// a bare namespace name is looked up under `/var/run/netns`, `ifname`
/// defaults to `eth0` and the MAC to the one derived from the IP.
pub fn endpoint(ep: EndpointSection) -> LocalEndpointConfig {
    let netns = if ep.netns.starts_with('/') {
        PathBuf::from(&ep.netns)
    } else {
        Path::new(NETNS_RUN_DIR).join(&ep.netns)
    };
    LocalEndpointConfig {
        network: ep.network,
        netns,
        ifname: ep.ifname.unwrap_or_else(|| "eth0".into()),
        ip: ep.ip,
        mac: ep.mac.unwrap_or_else(|| MacAddr::from_ipv4(ep.ip)),
        handover: false,
    }
}

/// Converts a `[[networks]]` entry (also the body of `POST /v1/networks`);
/// errors name the field.
pub fn network(net: NetworkSection) -> anyhow::Result<NetworkConfig> {
    let field = |f: &str| format!("network[{}].{f}", net.name);
    let vni = Vni::new(net.vni).with_context(|| field("vni"))?;
    let encryption = if net.encrypted {
        let keys = key_ring(&net.keys, net.tx_key).with_context(|| field("keys"))?;
        Some(Encryption {
            cipher: net.cipher.unwrap_or_default(),
            keys,
        })
    } else {
        if !net.keys.is_empty() || net.tx_key.is_some() || net.cipher.is_some() {
            bail!(
                "{}: keys, tx_key and cipher are only for encrypted networks; add `encrypted = true` or remove them",
                field("encrypted")
            );
        }
        None
    };
    let remotes = net
        .remotes
        .iter()
        .map(|r| RemoteEndpoint {
            ip: r.ip,
            mac: r.mac.unwrap_or_else(|| MacAddr::from_ipv4(r.ip)),
            node: r.node,
        })
        .collect();
    Ok(NetworkConfig {
        name: net.name,
        vni,
        subnet: net.subnet,
        encryption,
        peers: net.peers,
        remotes,
    })
}

/// Builds a key ring from `{id, secret}` pairs; `tx` defaults to the only key.
pub fn key_ring(keys: &[KeySection], tx: Option<u8>) -> anyhow::Result<KeyRing> {
    if keys.is_empty() {
        bail!("an encrypted network needs at least one key: keys = [{{ id = 1, secret = \"<64 hex characters>\" }}]");
    }
    let ring = keys
        .iter()
        .map(|k| NetworkKey::from_hex(k.id, &k.secret).with_context(|| format!("key id {}", k.id)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tx = match (tx, keys) {
        (Some(tx), _) => tx,
        (None, [only]) => only.id,
        (None, _) => bail!("tx_key must say which of the keys is used for sending"),
    };
    Ok(KeyRing::new(ring, tx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn base() -> String {
        format!(
            r#"
[node]
address = "10.99.0.11"

[[networks]]
name = "blue"
vni = 4096
subnet = "10.0.0.0/24"
encrypted = true
keys = [{{ id = 1, secret = "{KEY}" }}]
peers = ["10.99.0.12"]
remotes = [{{ ip = "10.0.0.4", node = "10.99.0.12" }}]

[[endpoints]]
network = "blue"
netns = "task1"
ip = "10.0.0.2"
"#
        )
    }

    #[test]
    fn a_full_file_converts() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.listen.port(), 4789);
        let net = &c.networks[0];
        assert_eq!(net.endpoint_mtu(c.underlay_mtu), 1418);
        assert_eq!(net.remotes[0].mac.to_string(), "02:42:0a:00:00:04");
        assert_eq!(c.endpoints[0].netns, Path::new("/var/run/netns/task1"));
        assert_eq!(c.endpoints[0].ifname, "eth0");
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(include_str!("../../../docs/examples/node1.toml")).unwrap();
        assert_eq!(c.networks[0].remotes.len(), 2);
        assert_eq!(c.endpoints[0].netns, Path::new("/var/run/netns/task-a"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (base().replace("vni = 4096", "vni = 16777216"), "vni"),
            (
                base().replace("vni = 4096", "vni = 4096\ncolour = 1"),
                "colour",
            ),
            (
                base().replace("ip = \"10.0.0.2\"", "ip = \"10.1.0.2\""),
                "outside the subnet",
            ),
            (
                base().replace("network = \"blue\"", "network = \"red\""),
                "no network named",
            ),
            (base().replace(KEY, "abc"), "key id 1"),
            (
                base().replace("encrypted = true", "encrypted = false"),
                "only for encrypted",
            ),
            (
                base().replace("subnet = \"10.0.0.0/24\"", "subnet = \"10.0.0.0/33\""),
                "subnet",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "expected {needle:?} in: {err}");
        }
    }
}
