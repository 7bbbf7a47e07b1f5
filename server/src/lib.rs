//! A DynamoKV node: a complete Dynamo (DeCandia et al., SOSP 2007) storage node.
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//! - [`storage`]: local persistence (paper 4.1), RocksDB or in-memory.
//! - [`replica`]: this node's replica: atomic per-key version updates and merges (paper 4.4).
//! - [`merkle`]: per-partition Merkle trees of this node's keys for anti-entropy (paper 4.7).
//! - [`membership`]: the cluster view and ring (paper 4.2, 4.8); [`membership_state`]: the
//!   membership state gossip spreads, with its deterministic merge, and [`gossip`], the
//!   exchange that spreads it (paper 4.8.1).
//! - [`peers`]: connections to the other nodes and local failure detection (paper 4.8.3).
//! - [`coordinator`]: quorum reads and writes, forwarding, read repair (paper 4.5);
//!   [`context_keys`]: the keys the version contexts it hands out are signed with.
//! - Background work, admitted by [`admission`] control (paper 6.5): [`hinted_handoff`]
//!   (paper 4.6), [`anti_entropy`] (paper 4.7), [`tombstones`] (reaping deleted keys).
//! - [`service`]: the gRPC services; [`server`] starts and stops it all.
//! - [`certificates`]: development certificates (`dynamokv cert`) and the identity a
//!   certificate carries (issue 11).

pub mod access_control;
pub mod admin;
pub mod admission;
pub mod anti_entropy;
pub mod background;
pub mod certificates;
pub mod config;
pub mod connections;
pub mod context_keys;
pub mod coordinator;
pub mod dev;
pub mod error;
pub mod gossip;
pub mod guard;
pub mod hinted_handoff;
pub mod intake;
pub mod key_range_transfer;
pub mod load_shedding;
pub mod membership;
pub mod membership_state;
pub mod merkle;
pub mod metrics;
pub mod peers;
pub mod replica;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
pub mod tombstones;
pub mod user_cache;

pub use config::Config;
pub use server::{NodeHandle, ServerError, run, start, start_on};
