//! Integration tests of the `dynamokv` node, one binary with a module per topic.

mod support;

mod bad_input;
mod cluster;
mod durability;
mod versioning;
