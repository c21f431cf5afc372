//! The libnetwork remote network driver and IPAM driver, so that
//! `docker network create -d shoal --ipam-driver shoal NET` and
//! `docker run --network NET` put containers on a shoal network.
//!
//! Docker finds a legacy (v1) plugin by its socket,
//! `/run/docker/plugins/<name>.sock`, and posts JSON to it over HTTP/1.1
//! (`application/vnd.docker.plugins.v1.2+json`). One socket serves both
//! protocols: `Plugin.Activate` answers `NetworkDriver` and `IpamDriver`.
//!
//! The split follows the house style: [`protocol`] holds the wire types and
//! [`protocol::dispatch`], a pure function from (path, body) to (status,
//! body) that calls a [`Backend`]; [`PluginServer`] only moves bytes between
//! a Unix socket and `dispatch`. The decisions (which pool, which address,
//! which interface) are the [`Backend`]'s, implemented by the daemon.
//!
//! # What Docker 20.10 sends, in order
//!
//! Recorded by `tests/plugin.rs` (`docker_drives_the_plugin`) against the
//! engine on the test machine (20.10.24, API 1.41), one plugin `P` serving
//! both drivers; the same sequence on every run.
//!
//! **`docker network create -d P --ipam-driver P --ipam-opt network=foo N`**
//! (the first use of `P` activates it):
//! 1. `Plugin.Activate`, `NetworkDriver.GetCapabilities`,
//!    `IpamDriver.GetCapabilities`, `IpamDriver.GetDefaultAddressSpaces`.
//! 2. `IpamDriver.RequestPool` `{AddressSpace: "shoal", Pool: "", SubPool:
//!    "", Options: {"network": "foo"}, V6: false}`: our default address
//!    space; the `--ipam-opt`s arrive as `Options`. No IPv6 request
//!    without `--ipv6`.
//! 3. `IpamDriver.RequestAddress` `{PoolID, Address: "", Options:
//!    {"RequestAddressType": "com.docker.network.gateway"}}`: the gateway
//!    (skipped if the pool's `Data` names `com.docker.network.gateway`).
//! 4. `NetworkDriver.CreateNetwork` `{NetworkID, Options:
//!    {"com.docker.network.enable_ipv6": false, "com.docker.network.generic":
//!    {the -o options}}, IPv4Data: [{AddressSpace: "shoal", Pool:
//!    "10.99.x.0/24", Gateway: "10.99.x.1/24", AuxAddresses: {}}], IPv6Data:
//!    []}`.
//!
//! **`docker run --network N`** (container start):
//! 1. `IpamDriver.RequestAddress` `{PoolID, Address: "", Options: {}}`:
//!    Docker takes the address from IPAM *before* the network driver hears
//!    of the endpoint.
//! 2. `NetworkDriver.CreateEndpoint`: `Interface.Address` is filled with
//!    the address our IPAM gave (`10.99.x.2/24`), `AddressIPv6` and
//!    **`MacAddress` are empty** (the kernel's random veth MAC is kept
//!    unless we answer one); `Options` holds
//!    `com.docker.network.endpoint.exposedports` and
//!    `com.docker.network.portmap`. Answer `Interface: None` (or only a MAC):
//!    Docker refuses a driver that changes an address it set.
//! 3. `NetworkDriver.Join` `{SandboxKey: "/var/run/docker/netns/<12 hex>"}`:
//!    the namespace **does not exist yet** (nothing is mounted at the
//!    SandboxKey). runc's prestart hook creates it after all the calls
//!    below; only then does Docker move `SrcName` in, rename it
//!    `DstPrefix` + index (`eth0`), set the address, the gateway
//!    (`default via` our `Gateway`) and the routes. So a driver cannot
//!    enter the container's namespace during any call of the start; it
//!    creates the interface in the root namespace (e.g. a veth pair) and
//!    names one end.
//! 4. `NetworkDriver.ProgramExternalConnectivity` (this network gives the
//!    container its default gateway), then `NetworkDriver.EndpointOperInfo`
//!    twice; still no namespace.
//!
//! **The container stops** (`--rm`): `RevokeExternalConnectivity`, `Leave`
//! (the interface is still in the container's namespace), `DeleteEndpoint`
//! (Docker has moved the interface back to the root namespace under its
//! `SrcName`: delete it now), then `IpamDriver.ReleaseAddress` `{PoolID,
//! Address: "10.99.x.2"}` (a bare address).
//!
//! **`docker network rm N`**: `IpamDriver.ReleaseAddress` (the gateway),
//! `IpamDriver.ReleasePool`, and only then `NetworkDriver.DeleteNetwork`:
//! the pool is gone before the network driver hears of it.
//!
//! **Errors**: an `Err` from `RequestPool` or `CreateNetwork` fails
//! `docker network create` with `Error response from daemon:
//! IpamDriver.RequestPool: <message>` (resp. `NetworkDriver.CreateNetwork:`);
//! when CreateNetwork fails Docker gives back the gateway address and the
//! pool (`ReleaseAddress`, `ReleasePool`).
//!
//! Swarm-scope calls (`AllocateNetwork`, `FreeNetwork`) are refused: shoal
//! runs beside Docker, not as its swarm mode.

pub mod protocol;
mod server;
#[cfg(test)]
mod tests;

pub use protocol::{
    dispatch, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest,
    EndpointInterface, InterfaceName, IpamData, JoinRequest, JoinResponse, Options,
    RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
    StaticRoute, StringOptions,
};
pub use server::{PluginServer, MAX_BODY_BYTES};

/// The one IPAM address space shoal offers, local and global.
pub const ADDRESS_SPACE: &str = "shoal";

/// The decisions behind the protocol, made by the daemon.
///
/// Methods block (they may take locks, talk to the manager or run netlink);
/// the server calls them on tokio's blocking pool. An `Err(message)` is
/// answered as `{"Err": message}`; the Docker CLI shows it as `Error
/// response from daemon: IpamDriver.RequestPool: <message>`, so say what
/// failed and what to do.
pub trait Backend: Send + Sync + 'static {
    /// Called with every request to a method this plugin serves, before it
    /// is handled (also for the ones answered without the backend, such as
    /// `Plugin.Activate`). For counters and tests; the default does nothing.
    fn observe(&self, method: protocol::Method) {
        let _ = method;
    }

    /// A network was created (`docker network create -d <plugin>`), with
    /// the pools our IPAM handed out.
    fn create_network(&self, request: &CreateNetworkRequest) -> Result<(), String>;

    /// A network was removed.
    fn delete_network(&self, network_id: &str) -> Result<(), String>;

    /// A container is about to be attached. `request.interface.address`
    /// already holds the address our IPAM gave; answer `interface: None`
    /// unless you fill a field Docker left empty (the MAC).
    fn create_endpoint(
        &self,
        request: &CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, String>;

    /// The endpoint is gone (after `leave`).
    fn delete_endpoint(&self, network_id: &str, endpoint_id: &str) -> Result<(), String>;

    /// Operational data about the endpoint, shown by `docker inspect`.
    fn endpoint_info(&self, network_id: &str, endpoint_id: &str) -> Result<Options, String>;

    /// Attach the endpoint to the container whose network namespace is at
    /// `request.sandbox_key`: name a host interface for Docker to move in.
    fn join(&self, request: &JoinRequest) -> Result<JoinResponse, String>;

    /// Detach the endpoint from its container.
    fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), String>;

    /// Hand out an address pool for a new network.
    fn request_pool(&self, request: &RequestPoolRequest) -> Result<RequestPoolResponse, String>;

    /// Take a pool back.
    fn release_pool(&self, pool_id: &str) -> Result<(), String>;

    /// Hand out an address (the gateway's, or an endpoint's) from a pool.
    fn request_address(
        &self,
        request: &RequestAddressRequest,
    ) -> Result<RequestAddressResponse, String>;

    /// Take an address back (`address` is bare, without a prefix length).
    fn release_address(&self, pool_id: &str, address: &str) -> Result<(), String>;
}
