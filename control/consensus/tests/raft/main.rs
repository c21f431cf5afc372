//! Raft suite: in-process clusters over `InMemoryRouter`, stores in temporary directories.

mod support;

mod at_rest;
mod cluster;
mod recovery;
mod snapshot;
mod store;
