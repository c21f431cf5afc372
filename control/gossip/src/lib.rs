//! placeholder
#![forbid(unsafe_code)]
pub mod record;
pub mod seal;
pub mod table;
pub mod wire;
