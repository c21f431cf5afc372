//! The records the tables replicate: what DNS, the load balancer and the
//! data plane need to know about one task's endpoint on one network.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// A port published by a service (ingress / host mode), as Docker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// `"tcp"` or `"udp"`.
    pub protocol: String,
    /// Port inside the task.
    pub target: u16,
    /// Port published on the cluster.
    pub published: u16,
}

/// One task's endpoint on one overlay network. Written only by the node
/// that runs the task (`node_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Swarm task id; the table key within a network.
    pub task_id: String,
    /// `"<service>.<slot>.<task id>"`.
    pub task_name: String,
    /// Service name (the DNS name that resolves to the VIP or the tasks).
    pub service_name: String,
    /// Service id.
    pub service_id: String,
    /// The service's virtual IP on this network, if it has one.
    pub vip: Option<Ipv4Addr>,
    /// The task's address on the overlay.
    pub ip: Ipv4Addr,
    /// The task's MAC on the overlay.
    pub mac: [u8; 6],
    /// Owning node (the only writer of this record).
    pub node_id: String,
    /// Owning node's underlay address (VXLAN peer).
    pub node_addr: IpAddr,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Extra DNS names.
    pub aliases: Vec<String>,
    /// DNS round robin instead of a VIP.
    pub dnsrr: bool,
    /// Present but not to be served (e.g. task shutting down, health failing).
    pub disabled: bool,
}
