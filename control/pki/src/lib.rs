//! The cluster PKI: placeholder, being written.
#![forbid(unsafe_code)]
