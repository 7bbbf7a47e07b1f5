//! The node's configuration file (`server/src/config.rs`): TOML text parsed into `Config`, then
//! `Config::validate`, which a node runs before it opens anything.
//!
//! Inputs: any text; a valid config edited; a config written from fields (partition counts,
//! quorums, members, seeds, limits) with values inside and outside their ranges. Checks: no
//! panic in parsing or validation; a config that validates has quorums, and a node can open
//! its local replica and its membership with it (an error is allowed, a panic is not).
#![no_main]

use std::fmt::Write;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use dynamokv_fuzz::{Edit, fresh_replica, mutate};
use dynamokv_server::config::Config;
use dynamokv_server::membership::Membership;
use dynamokv_server::storage::Storage;

const BASE: &str = "node_id = \"node-1\"\nlisten = \"127.0.0.1:7070\"\nengine = \"memory\"\n\
[cluster]\nname = \"c\"\npartitions = 64\nn = 3\nr = 2\nw = 2\n\
members = [{ id = \"node-1\", address = \"127.0.0.1:7071\" }, \
{ id = \"node-2\", address = \"127.0.0.1:7072\", zone = \"a\", weight = 2 }, \
{ id = \"node-3\", address = \"127.0.0.1:7073\" }]\n\
[limits]\nmax_key_bytes = 4096\nmax_value_bytes = 1048576\n\
[background]\nanti_entropy_interval_ms = 1000\n";

#[derive(Arbitrary, Debug)]
struct Member {
    id: u8,
    port: u8,
    zone: u8,
    weight: u8,
}

#[derive(Arbitrary, Debug)]
struct Parts {
    node: u8,
    partitions: u8,
    raw_partitions: u32,
    n: Option<u8>,
    r: Option<u8>,
    w: Option<u8>,
    sync_replicas: u8,
    members: Vec<Member>,
    seeds: Vec<u8>,
    max_key_bytes: u32,
    max_value_bytes: u32,
    max_object_bytes: Option<u64>,
    max_siblings: u8,
    max_vector_entries: u8,
    history_horizon_ms: u64,
    worker_threads: Option<u8>,
    weight: Option<u8>,
    intervals: [u16; 3],
}

/// The TOML text of a config with these fields.
fn render(p: &Parts) -> String {
    let partitions = match p.partitions % 8 {
        0 => p.raw_partitions,
        i => [1, 2, 3, 16, 64, 1000, 1024][usize::from(i) - 1],
    };
    let mut t = String::new();
    let _ = writeln!(t, "node_id = \"node-{}\"", p.node % 6);
    let _ = writeln!(t, "engine = \"memory\"");
    let _ = writeln!(t, "max_vector_entries = {}", p.max_vector_entries);
    let _ = writeln!(
        t,
        "history_horizon_ms = {}",
        p.history_horizon_ms.min(i64::MAX as u64)
    );
    if let Some(w) = p.worker_threads {
        let _ = writeln!(t, "worker_threads = {w}");
    }
    let _ = writeln!(t, "[cluster]\nname = \"c\"\npartitions = {partitions}");
    for (name, v) in [("n", p.n), ("r", p.r), ("w", p.w), ("weight", p.weight)] {
        if let Some(v) = v {
            let _ = writeln!(t, "{name} = {}", v % 8);
        }
    }
    let _ = writeln!(t, "sync_replicas = {}", p.sync_replicas % 8);
    let members: Vec<String> = p
        .members
        .iter()
        .take(8)
        .map(|m| {
            format!(
                "{{ id = \"node-{}\", address = \"127.0.0.1:{}\", zone = \"{}\", weight = {} }}",
                m.id % 6,
                7000 + u16::from(m.port % 8),
                ["", "a", "b"][usize::from(m.zone % 3)],
                m.weight % 4
            )
        })
        .collect();
    let _ = writeln!(t, "members = [{}]", members.join(", "));
    let seeds: Vec<String> = p
        .seeds
        .iter()
        .take(4)
        .map(|s| format!("\"127.0.0.1:{}\"", 7000 + u16::from(s % 8)))
        .collect();
    let _ = writeln!(t, "seeds = [{}]", seeds.join(", "));
    let _ = writeln!(
        t,
        "[limits]\nmax_key_bytes = {}\nmax_value_bytes = {}\nmax_siblings = {}",
        p.max_key_bytes, p.max_value_bytes, p.max_siblings
    );
    if let Some(o) = p.max_object_bytes {
        let _ = writeln!(t, "max_object_bytes = {}", o.min(i64::MAX as u64));
    }
    let _ = writeln!(
        t,
        "[background]\nhandoff_interval_ms = {}\nreap_interval_ms = {}\nlatency_bound_ms = {}",
        p.intervals[0], p.intervals[1], p.intervals[2]
    );
    t
}

#[derive(Arbitrary, Debug)]
enum Input {
    Text(String),
    Edited(Vec<Edit>),
    Built(Parts),
}

fuzz_target!(|input: Input| {
    let text = match &input {
        Input::Text(t) => t.clone(),
        Input::Edited(edits) => {
            String::from_utf8_lossy(&mutate(BASE.as_bytes().to_vec(), edits)).into_owned()
        }
        Input::Built(parts) => render(parts),
    };
    let Ok(config) = toml::from_str::<Config>(&text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    // What a node does next with a config that validated.
    assert!(config.quorums().is_ok(), "a valid config without quorums");
    let _ = (
        config.limits(),
        config.history_limits(),
        config.replica_timeout(),
    );
    let (store, _local) = fresh_replica(&config);
    let store: Arc<dyn Storage> = store;
    let _ = Membership::open(&config, "127.0.0.1:7070", Some(store));
});
