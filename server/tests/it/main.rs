//! Integration tests of the `dynamokv` node, one binary with a module per topic.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

mod proxy;
mod support;

mod attack;
mod bad_input;
mod campaign;
mod causality;
mod certs;
mod cli;
mod client_driven;
mod cluster;
mod context_authentication;
mod durability;
mod elasticity;
mod exposure;
mod failure_detection;
mod healing;
mod hostile_bytes;
mod intake;
mod observability;
mod overload;
mod security;
mod versioning;
