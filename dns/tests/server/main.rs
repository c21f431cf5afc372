//! The server driven over real sockets: in namespaces on 127.0.0.11 (root only,
//! skipped otherwise) and on the caller's loopback (always).

mod harness;
mod loopback;
mod netns;
