//! A DynamoKV node: a complete Dynamo (DeCandia et al., SOSP 2007) storage node.
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//! - [`storage`]: local persistence (paper 4.1), RocksDB or in-memory.
//! - [`replica`]: this node's replica: atomic per-key version updates and merges (paper 4.4).
//! - [`membership`]: the cluster view and ring (paper 4.2, 4.8).
//! - [`coordinator`]: quorum reads and writes, forwarding, read repair (paper 4.5).
//! - [`service`]: the gRPC services; [`server`] starts and stops it all.

pub mod admin;
pub mod config;
pub mod coordinator;
pub mod dev;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod peers;
pub mod replica;
pub mod server;
pub mod service;
pub mod storage;

pub use config::Config;
pub use server::{NodeHandle, ServerError, run, start, start_on};
