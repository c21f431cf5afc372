//! placeholder
#![forbid(unsafe_code)]
pub mod core;
pub mod driver;
pub mod record;
pub mod seal;
pub mod sim;
pub mod stats;
pub mod swim;
pub mod table;
pub mod wire;
