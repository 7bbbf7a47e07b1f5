//! What the fuzz targets share: valid samples to start from, byte edits, replica states built
//! field by field from small domains (so that many get past the decoder's checks and reach the
//! code behind it), and one in-memory node (its local replica and its node-to-node service).
//!
//! Each target lives in `fuzz_targets/`; docs/fuzzing.md says what each one checks.

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use dynamokv_common::versioning::{Actor, Dot, MAX_COUNTER, WriteId};
use dynamokv_common::{CausalContext, VersionVector, VersionedState, key_position};
use dynamokv_proto::v1 as pb;
use dynamokv_server::config::{Config, MemberConfig};
use dynamokv_server::coordinator::Coordinator;
use dynamokv_server::membership::Membership;
use dynamokv_server::merkle::MerkleForest;
use dynamokv_server::metrics::Metrics;
use dynamokv_server::peers::Peers;
use dynamokv_server::replica::LocalReplica;
use dynamokv_server::service::ReplicaService;
use dynamokv_server::storage::{self, MemoryStorage, Storage};

/// Runs a future to completion on this thread. The code driven here never waits on I/O: its
/// futures are ready at their first poll, or wait on a transport the target answers at once.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// One edit of a byte string: a byte flipped, the string cut, a byte inserted.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Edit {
    Flip(u16, u8),
    Cut(u16),
    Insert(u16, u8),
}

/// `bytes` after at most eight `edits`.
pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits.iter().take(8) {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let len = bytes.len();
        match *e {
            Edit::Flip(i, x) => bytes[i as usize % len] ^= x.max(1),
            Edit::Cut(i) => bytes.truncate(i as usize % len),
            Edit::Insert(i, x) => bytes.insert(i as usize % (len + 1), x),
        }
    }
    bytes
}

/// A valid replica state: a few writes by a few actors, some superseding others, one of them
/// a delete.
pub fn state(seed: u64) -> VersionedState {
    let mut s = VersionedState::new();
    for i in 0..(seed % 4 + 1) {
        let ctx = if i % 2 == 1 {
            CausalContext::of_read(&s)
        } else {
            CausalContext::new()
        };
        let value = (i != 3).then(|| Bytes::from(format!("value-{seed}-{i}")));
        let _ = s.update(
            &ctx,
            WriteId(u128::from(seed.wrapping_mul(10).wrapping_add(i))),
            value,
            Actor(seed % 3 + 1),
            0,
            1_000 + i,
        );
    }
    s
}

/// An actor from a small domain (1 to 4), or now and then one at the top of the range.
pub fn actor(a: u8) -> u64 {
    if a < 250 {
        u64::from(a % 4) + 1
    } else {
        u64::MAX - u64::from(a - 250)
    }
}

/// A counter from a small domain (0 to 7), or now and then one about the largest a version
/// vector may name ([`MAX_COUNTER`], and one above it) or at the top of the range.
pub fn counter(c: u8) -> u64 {
    match c {
        0..250 => u64::from(c % 8),
        250..254 => MAX_COUNTER + 1 - u64::from(c - 250),
        _ => u64::MAX - u64::from(c - 254),
    }
}

/// A write id from a small domain, so that ids repeat across siblings and retired sets.
pub fn write_id(w: u8) -> Bytes {
    Bytes::copy_from_slice(&u128::from(w % 8).to_be_bytes())
}

/// A client context built from parts through the public API, as a read or write makes one.
#[derive(Arbitrary, Debug)]
pub struct ContextParts {
    entries: Vec<(u8, u8)>,
    cloud: Vec<(u8, u8)>,
    seen: Vec<u8>,
}

impl ContextParts {
    pub fn build(&self) -> CausalContext {
        let mut clock = VersionVector::new();
        // Counters from 1 (an entry with counter 0 exists only beside a cloud dot of its actor)
        // to MAX_COUNTER, as in every state a replica decodes.
        let c = |c| counter(c).clamp(1, MAX_COUNTER);
        for &(a, n) in self.entries.iter().take(8) {
            clock.insert(Actor(actor(a)), c(n), 0);
        }
        for &(a, n) in self.cloud.iter().take(8) {
            clock.add_dot(Dot {
                actor: Actor(actor(a)),
                counter: c(n),
            });
        }
        CausalContext {
            clock,
            seen: self
                .seen
                .iter()
                .take(8)
                .map(|&w| WriteId(u128::from(w)))
                .collect(),
        }
    }
}

/// One sibling of a [`WireState`].
#[derive(Arbitrary, Debug)]
pub struct WireSibling {
    actor: u8,
    counter: u8,
    value: Vec<u8>,
    tombstone: bool,
    timestamp_ms: u64,
    /// `None`: no write id (a sibling stored before write ids existed).
    write_id: Option<u8>,
}

/// A replica state in wire form, field by field, from small domains: few actors, small
/// counters, few write ids.
#[derive(Arbitrary, Debug)]
pub struct WireState {
    has_clock: bool,
    entries: Vec<(u8, u8, u64)>,
    cloud: Vec<(u8, u8)>,
    siblings: Vec<WireSibling>,
    retired: Vec<(u8, u64)>,
}

impl WireState {
    pub fn to_proto(&self) -> pb::VersionedState {
        pb::VersionedState {
            clock: self.has_clock.then(|| pb::VersionVector {
                entries: self
                    .entries
                    .iter()
                    .take(8)
                    .map(|&(a, c, t)| pb::ClockEntry {
                        actor: actor(a),
                        counter: counter(c),
                        timestamp_ms: t,
                    })
                    .collect(),
                cloud: self
                    .cloud
                    .iter()
                    .take(8)
                    .map(|&(a, c)| pb::Dot {
                        actor: actor(a),
                        counter: counter(c),
                    })
                    .collect(),
            }),
            siblings: self
                .siblings
                .iter()
                .take(8)
                .map(|s| pb::Sibling {
                    actor: actor(s.actor),
                    counter: counter(s.counter),
                    value: Bytes::copy_from_slice(&s.value),
                    tombstone: s.tombstone,
                    timestamp_ms: s.timestamp_ms,
                    write_id: s.write_id.map(write_id).unwrap_or_default(),
                })
                .collect(),
            retired: self
                .retired
                .iter()
                .take(8)
                .map(|&(w, at)| pb::RetiredWrite {
                    write_id: write_id(w),
                    retired_at_ms: at,
                })
                .collect(),
        }
    }
}

/// Checks the invariants every state a replica holds must keep, by its own decoder: a state
/// that does not survive its own encoding would be unreadable once stored or sent.
pub fn assert_valid(what: &str, s: &VersionedState) {
    let again = VersionedState::from_proto(&s.to_proto());
    assert_eq!(
        again.as_ref(),
        Ok(s),
        "{what}: does not re-decode to itself"
    );
    let stored = storage::decode_state(&storage::encode_state(s));
    assert!(
        stored.as_ref().is_ok_and(|t| t == s),
        "{what}: its stored record does not decode to it: {stored:?}"
    );
}

/// Q of the fixture node and of the clusters the targets build.
pub const PARTITIONS: u32 = 64;

/// A config of node `node-0` in a static cluster of `members` nodes (at least 1).
pub fn config(members: usize) -> Config {
    let mut c = Config::default();
    c.node_id = "node-0".into();
    c.cluster.name = "fuzz".into();
    c.cluster.partitions = PARTITIONS;
    c.cluster.members = (0..members.max(1))
        .map(|i| MemberConfig {
            id: format!("node-{i}"),
            address: format!("127.0.0.1:{}", 7000 + i),
            zone: String::new(),
            weight: 1,
        })
        .collect();
    c
}

/// A node in memory: its storage, local replica and node-to-node service.
#[derive(Debug)]
pub struct Node {
    pub store: Arc<MemoryStorage>,
    pub local: Arc<LocalReplica>,
    pub replica: ReplicaService,
    /// The keys stored at start, each holding [`state`] of its index.
    pub keys: Vec<Bytes>,
}

impl Node {
    pub fn forest(&self) -> &MerkleForest {
        self.local.forest()
    }
}

fn open_replica(config: &Config, store: Arc<dyn Storage>, metrics: Arc<Metrics>) -> LocalReplica {
    LocalReplica::open(
        store,
        &config.node_id,
        config.cluster.partitions,
        config.history_limits(),
        config.sibling_limits(),
        metrics,
    )
    .expect("the fixture's replica opens")
}

/// The node the targets share, built once per process: 2000 keys spread over the ring, and
/// 8 more under one leaf, so that some leaves list several keys.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let config = config(3);
        let store = Arc::new(MemoryStorage::default());
        let mut keys: Vec<Bytes> = (0..2000).map(|i| Bytes::from(format!("key-{i}"))).collect();
        let leaf_of = |k: &[u8]| key_position(k) >> 112;
        let crowded = leaf_of(&keys[0]);
        let mut j = 0u64;
        while keys.len() < 2008 {
            let k = format!("crowd-{j}");
            if leaf_of(k.as_bytes()) == crowded {
                keys.push(Bytes::from(k));
            }
            j += 1;
        }
        for (i, k) in keys.iter().enumerate() {
            storage::write_state(store.as_ref(), k, &state(i as u64)).expect("memory write");
        }
        let metrics = Arc::new(Metrics::new());
        let local = Arc::new(open_replica(&config, store.clone(), Arc::clone(&metrics)));
        let membership =
            Membership::open(&config, "127.0.0.1:7000", None).expect("the fixture's membership");
        let coordinator = Arc::new(Coordinator::new(
            membership.clone(),
            Arc::clone(&local),
            Arc::new(Peers::new(config.replica_timeout())),
            config.limits(),
            config.replica_timeout(),
            0,
            Arc::clone(&metrics),
        ));
        // Plain text: access control off (the requests come from no connection).
        let access = Arc::new(dynamokv_server::access_control::AccessControl::new(
            false,
            &config.cluster.name,
            &[],
            std::time::Duration::from_secs(2),
            membership,
            Arc::clone(&coordinator),
        ));
        let replica = ReplicaService::new(
            config.node_id.clone(),
            Arc::clone(&local),
            coordinator,
            metrics,
            CancellationToken::new(),
            access,
        );
        Node {
            store,
            local,
            replica,
            keys,
        }
    })
}

/// A fresh local replica of `config` on an empty in-memory store.
pub fn fresh_replica(config: &Config) -> (Arc<MemoryStorage>, Arc<LocalReplica>) {
    let store = Arc::new(MemoryStorage::default());
    let local = open_replica(config, store.clone(), Arc::new(Metrics::new()));
    (store, Arc::new(local))
}
