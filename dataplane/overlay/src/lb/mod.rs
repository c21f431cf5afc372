//! The L4 virtual-IP load balancer (WIP).
#![allow(missing_docs)]
pub mod conntrack;
pub mod flow;
pub mod maglev;
pub mod nat;
pub mod reply;
#[cfg(test)]
mod testutil;
