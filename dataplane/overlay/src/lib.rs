//! The pure overlay core of Shoal.
//!
//! Wire types for VXLAN (RFC 7348) and Shoal's sealed (encrypted) VXLAN frames, the
//! anti-replay window, the network key ring, drop reasons, the virtual switch
//! tables and the L4 virtual-IP load balancer ([`lb`]). Nothing here does I/O or reads a clock: time and bytes are passed in, and
//! decisions come back as values for a driver to carry out.
#![forbid(unsafe_code)]

pub mod counters;
pub mod keys;
pub mod lb;
pub mod mac;
pub mod offload;
pub mod replay;
pub mod seal;
pub mod switch;
pub mod vxlan;
