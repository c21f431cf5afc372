//! Raft for the managers: placeholder, being written.
#![forbid(unsafe_code)]
