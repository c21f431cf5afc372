//! Integration tests of the process runtime: real processes in real
//! namespaces, so they run as root. Each test owns a [`Fixture`] whose drop
//! kills its tasks and removes its state, also when the test fails.

mod fixture;
mod lifecycle;
mod limits;
mod logs;
mod sandbox;
