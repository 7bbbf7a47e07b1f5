//! Hardened decoders (issue 11), node side: a stored record, a hint, a gossiped membership view
//! or digest, a config file. Arbitrary bytes and mutated valid encodings are decoded without a
//! panic, and a view that decodes is one the node can merge and compute a ring from.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use std::collections::BTreeMap;

use dynamokv_common::versioning::{Actor, WriteId};
use dynamokv_common::{CausalContext, VersionedState, key_position};
use dynamokv_proto::v1 as pb;
use dynamokv_server::anti_entropy::{compare_keys, differing_leaves, pair_roots, take_leaf_keys};
use dynamokv_server::config::Config;
use dynamokv_server::membership_state::{Digest, MemberRecord, MembershipState};
use dynamokv_server::merkle::{self, MerkleForest};
use dynamokv_server::storage;

fn state(seed: u64) -> VersionedState {
    let mut s = VersionedState::new();
    for i in 0..(seed % 3 + 1) {
        let _ = s.update(
            &CausalContext::new(),
            WriteId(u128::from(seed) << 8 | u128::from(i)),
            Some(Bytes::from(format!("v{seed}-{i}"))),
            Actor(seed % 5 + 1),
            0,
            1_000 + i,
        );
    }
    s
}

fn view(seed: u64) -> MembershipState {
    let n = (seed % 4 + 1) as usize;
    let mut v = MembershipState::of_members(
        "hostile",
        64,
        (0..n).map(|i| MemberRecord::new(format!("node-{i}"), format!("127.0.0.1:{}", 7000 + i))),
    );
    v.set_ring_seen("node-0");
    v
}

/// Node `node-0` of the static cluster [`view`] describes, in memory.
fn member_of_view(seed: u64) -> dynamokv_server::membership::Membership {
    let c = member_of_view_config(seed);
    dynamokv_server::membership::Membership::open(&c, "127.0.0.1:7000", None).unwrap()
}

/// The config of node `node-0` of the static cluster [`view`] describes.
fn member_of_view_config(seed: u64) -> Config {
    let mut c = Config {
        node_id: "node-0".into(),
        ..Config::default()
    };
    c.cluster.name = "hostile".into();
    c.cluster.partitions = 64;
    c.cluster.members = view(seed)
        .members()
        .map(|r| dynamokv_server::config::MemberConfig {
            id: r.id.clone(),
            address: r.address.clone(),
            zone: String::new(),
            weight: 1,
        })
        .collect();
    c
}

#[test]
fn a_member_record_without_an_address_is_refused() {
    // Found by `cargo fuzz run gossip`: a record without an address decoded. Gossiped over a
    // node's own record, it made a view with no ring until the node announced its address
    // again, and answering the same gossip twice changed the node's view the second time.
    let m = member_of_view(2);
    let mut theirs = m.state();
    theirs.set_member(MemberRecord::new("node-0", ""));
    let delta = theirs.to_proto();
    assert!(MembershipState::from_proto(&delta).is_err());
    let request = pb::GossipRequest {
        cluster: "hostile".into(),
        partitions: 64,
        from: "node-1".into(),
        state_hash: Bytes::new(),
        digest: Some(theirs.digest().to_proto()),
        delta: Some(delta),
    };
    let _ = m.handle_gossip(&request);
    let once = m.state();
    let _ = m.handle_gossip(&request);
    assert_eq!(m.state(), once);
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, x, how) in edits {
        if bytes.is_empty() {
            bytes.push(x);
            continue;
        }
        let i = at % bytes.len();
        match how % 3 {
            0 => bytes[i] ^= x.max(1),
            1 => bytes.truncate(i),
            _ => bytes.insert(i, x),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

#[test]
fn a_hint_key_parses_only_if_it_is_the_hint_key_of_what_it_names() {
    // Found by `cargo fuzz run hint`: the key's ring position at the front was not checked, so
    // a hint key with another position parsed, naming a key whose hints are never found there.
    let good = storage::hint_key(b"cart", "node-2");
    assert_eq!(
        storage::parse_hint_key(&good).unwrap(),
        (&b"cart"[..], "node-2")
    );
    let mut moved = good.clone();
    moved[0] ^= 1;
    assert!(storage::parse_hint_key(&moved).is_err());
}

/// A forest of Q = 64 over `n` keys, each holding [`state`] of its index.
fn forest(n: usize) -> (MerkleForest, Vec<(Bytes, u64)>) {
    let keys: Vec<(Bytes, u64)> = (0..n)
        .map(|i| {
            let key = Bytes::from(format!("key-{i}"));
            let digest = merkle::state_digest(&key, &state(i as u64));
            (key, digest)
        })
        .collect();
    let f = MerkleForest::new(64);
    for (k, d) in &keys {
        f.add(k, *d);
    }
    (f, keys)
}

fn page(keys: &[&[u8]], more: bool) -> pb::LeafKeysResponse {
    pb::LeafKeysResponse {
        keys: keys
            .iter()
            .map(|k| pb::KeyDigest {
                key: Bytes::copy_from_slice(k),
                digest: 1,
            })
            .collect(),
        more,
    }
}

#[test]
fn a_leaf_listing_is_taken_only_if_it_stays_under_the_leaf_and_advances() {
    // Found by `cargo fuzz run merkle`: anti-entropy took any key a peer listed for a leaf, of
    // any other leaf or partition (then repaired it into this node, which may not replicate
    // it), and followed a listing whose next page started at or before the last one: a peer
    // answering so kept the exchange going forever.
    let (f, _) = forest(0);
    let key: &[u8] = b"key-1";
    let (p, leaf) = f.leaf_of_key(key);
    let range = f.leaf_range(p, leaf);
    let other: &[u8] = b"key-2";
    assert_ne!(f.leaf_of_key(other), (p, leaf));
    let sk = storage::storage_key(key);

    let mut theirs = BTreeMap::new();
    assert_eq!(
        take_leaf_keys(&mut theirs, &page(&[key], true), range, &[]),
        Ok(Some(Bytes::from(sk.clone())))
    );
    for (bad, after) in [
        (page(&[key], true), &sk[..]),
        (page(&[other], false), &[][..]),
        (page(&[key, key], false), &[][..]),
        (page(&[key, other], true), &[][..]),
    ] {
        let mut t = theirs.clone();
        assert!(take_leaf_keys(&mut t, &bad, range, after).is_err());
        assert_eq!(t, theirs, "a refused page left keys behind");
    }
}

/// A node in memory, built once: 300 keys each holding [`state`] of its index, its local
/// replica and its node-to-node service, which answers the Merkle requests of anti-entropy.
struct MerkleNode {
    local: std::sync::Arc<dynamokv_server::replica::LocalReplica>,
    service: dynamokv_server::service::ReplicaService,
    keys: Vec<Bytes>,
}

fn merkle_node() -> &'static MerkleNode {
    static NODE: std::sync::OnceLock<MerkleNode> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        use std::sync::Arc;
        let c = member_of_view_config(0);
        let store = Arc::new(storage::MemoryStorage::default());
        let keys: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("key-{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            storage::write_state(store.as_ref(), k, &state(i as u64)).unwrap();
        }
        let metrics = Arc::new(dynamokv_server::metrics::Metrics::new());
        let local = Arc::new(
            dynamokv_server::replica::LocalReplica::open(
                store,
                &c.node_id,
                c.cluster.partitions,
                c.history_limits(),
                c.sibling_limits(),
                Arc::clone(&metrics),
            )
            .unwrap(),
        );
        let membership =
            dynamokv_server::membership::Membership::open(&c, "127.0.0.1:7000", None).unwrap();
        let coordinator = Arc::new(dynamokv_server::coordinator::Coordinator::new(
            membership.clone(),
            Arc::clone(&local),
            Arc::new(dynamokv_server::peers::Peers::new(c.replica_timeout())),
            c.limits(),
            c.replica_timeout(),
            0,
            Arc::clone(&metrics),
        ));
        // A plain-text node: access control off, as the requests come from no connection.
        let access = Arc::new(dynamokv_server::access_control::AccessControl::new(
            false,
            &c.cluster.name,
            &[],
            std::time::Duration::from_secs(2),
            membership,
            Arc::clone(&coordinator),
        ));
        let service = dynamokv_server::service::ReplicaService::new(
            c.node_id.clone(),
            Arc::clone(&local),
            coordinator,
            metrics,
            tokio_util::sync::CancellationToken::new(),
            access,
        );
        MerkleNode {
            local,
            service,
            keys,
        }
    })
}

#[test]
fn a_leaf_listing_holds_only_keys_under_the_leaf_whatever_it_continues_after() {
    // Found by `cargo fuzz run merkle`: a LeafKeys request continuing after a key before the
    // leaf listed the keys of other leaves and partitions, from there up to the leaf's end.
    let n = merkle_node();
    let forest = n.local.forest();
    let (p, leaf) = forest.leaf_of_key(&n.keys[7]);
    let (first, last) = forest.leaf_range(p, leaf);
    for after in [&[][..], &[0][..], &storage::storage_key(b"key-7")[..]] {
        let (keys, _) = n.local.key_digests(first, last, after, 4096).unwrap();
        for (k, _) in keys {
            assert!(
                (first..=last).contains(&key_position(&k)),
                "after {after:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn merkle_requests_are_answered_only_as_what_they_ask(
        pick in any::<u16>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..100),
        after in prop::collection::vec(any::<u8>(), 0..24),
        limit in 0u32..8,
    ) {
        use dynamokv_proto::v1::replica_server::Replica;
        use futures::executor::block_on;
        let n = merkle_node();
        let forest = n.local.forest();
        let key = &n.keys[usize::from(pick) % n.keys.len()];
        let (p, leaf) = forest.leaf_of_key(key);
        let roots = pb::TreeRootsRequest { partitions: 64, partition: vec![p, (p + 1) % 64] };
        let leaves = pb::TreeLeavesRequest { partitions: 64, partition: p };
        let listing = pb::LeafKeysRequest {
            partitions: 64,
            partition: p,
            leaf,
            after: Bytes::from(after),
            limit,
        };
        for bytes in [
            mutate(roots.encode_to_vec(), &e),
            mutate(leaves.encode_to_vec(), &e),
            mutate(listing.encode_to_vec(), &e),
            listing.encode_to_vec(),
            junk,
        ] {
            if let Ok(req) = pb::TreeRootsRequest::decode(bytes.as_slice()) {
                let asked = req.partition.clone();
                if let Ok(a) = block_on(n.service.tree_roots(tonic::Request::new(req))) {
                    let got = a.into_inner().roots;
                    prop_assert_eq!(got.len(), asked.len());
                    for (q, root) in asked.iter().zip(got) {
                        prop_assert_eq!(root, forest.partition_root(*q));
                    }
                }
            }
            if let Ok(req) = pb::TreeLeavesRequest::decode(bytes.as_slice()) {
                let q = req.partition;
                if let Ok(a) = block_on(n.service.tree_leaves(tonic::Request::new(req))) {
                    prop_assert_eq!(a.into_inner().leaves, forest.partition_leaves(q));
                }
            }
            if let Ok(req) = pb::LeafKeysRequest::decode(bytes.as_slice()) {
                let (q, l, from, most) = (req.partition, req.leaf, req.after.clone(), req.limit);
                if let Ok(a) = block_on(n.service.leaf_keys(tonic::Request::new(req))) {
                    let a = a.into_inner();
                    prop_assert!(a.keys.len() <= (most as usize).clamp(1, 4096));
                    let (first, last) = forest.leaf_range(q, l);
                    let mut previous = from.to_vec();
                    for k in &a.keys {
                        prop_assert!((first..=last).contains(&key_position(&k.key)));
                        let sk = storage::storage_key(&k.key);
                        prop_assert!(sk > previous);
                        previous = sk;
                    }
                }
            }
        }
    }

    #[test]
    fn merkle_answers_are_judged_without_panicking_and_only_as_what_they_say(
        pick in any::<u16>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
        more in any::<bool>(),
    ) {
        let (f, keys) = forest(300);
        let (key, _) = &keys[usize::from(pick) % keys.len()];
        let (p, leaf) = f.leaf_of_key(key);
        let ours = f.partition_leaves(p);

        // Roots of three partitions; leaves of one: the node's own, edited, and junk.
        let shared = [p, (p + 1) % 64, (p + 2) % 64];
        let roots = pb::TreeRootsResponse {
            roots: shared.iter().map(|&s| f.partition_root(s)).collect(),
        };
        let leaves = pb::TreeLeavesResponse { leaves: ours.clone() };
        for bytes in [
            mutate(roots.encode_to_vec(), &e),
            mutate(leaves.encode_to_vec(), &e),
            junk.clone(),
        ] {
            if let Ok(r) = pb::TreeRootsResponse::decode(bytes.as_slice()) {
                prop_assert_eq!(pair_roots(&shared, &r.roots).is_ok(), r.roots.len() == 3);
            }
            if let Ok(l) = pb::TreeLeavesResponse::decode(bytes.as_slice()) {
                match differing_leaves(p, &ours, &l.leaves) {
                    Ok(differ) => {
                        for i in differ {
                            prop_assert_ne!(ours[i as usize], l.leaves[i as usize]);
                            let _ = f.leaf_range(p, i);
                        }
                    }
                    Err(_) => prop_assert_ne!(l.leaves.len(), ours.len()),
                }
            }
        }

        // One leaf's listing: the node's own keys under it, edited, and junk.
        let range = f.leaf_range(p, leaf);
        let under: Vec<&[u8]> = keys
            .iter()
            .filter(|(k, _)| f.leaf_of_key(k) == (p, leaf))
            .map(|(k, _)| &k[..])
            .collect();
        let mut theirs = BTreeMap::new();
        let mut after = Bytes::new();
        for bytes in [mutate(page(&under, more).encode_to_vec(), &e), junk] {
            let Ok(pg) = pb::LeafKeysResponse::decode(bytes.as_slice()) else {
                continue;
            };
            if let Ok(Some(next)) = take_leaf_keys(&mut theirs, &pg, range, &after) {
                prop_assert!(next > after);
                after = next;
            }
        }
        for k in theirs.keys() {
            prop_assert!((range.0..=range.1).contains(&key_position(k)));
        }
        let ours: BTreeMap<Bytes, u64> = keys
            .iter()
            .filter(|(k, _)| f.leaf_of_key(k) == (p, leaf))
            .cloned()
            .collect();
        let (differ, compared) = compare_keys(&ours, &theirs);
        let union: std::collections::BTreeSet<&Bytes> = ours.keys().chain(theirs.keys()).collect();
        prop_assert_eq!(compared, union.len() as u64);
        for k in &differ {
            prop_assert_ne!(ours.get(k), theirs.get(k));
        }
    }

    #[test]
    fn hint_keys_parse_only_as_the_hint_key_of_what_they_name(
        key in prop::collection::vec(any::<u8>(), 0..16),
        owner in "[a-z0-9-]{0,12}",
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        for bytes in [mutate(storage::hint_key(&key, &owner), &e), junk] {
            if let Ok((k, o)) = storage::parse_hint_key(&bytes) {
                prop_assert_eq!(storage::hint_key(k, o), bytes.clone());
            }
        }
    }

    #[test]
    fn stored_records_and_hints_decode_without_panicking(
        seed in any::<u64>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let record = storage::encode_state(&state(seed));
        let hint = storage::encode_hint(42, &state(seed));
        for bytes in [mutate(record, &e), mutate(hint, &e), junk] {
            if let Ok(s) = storage::decode_state(&bytes) {
                let _ = storage::encode_state(&s);
                let _ = s.live_values();
            }
            let _ = storage::decode_hint(&bytes);
            let _ = storage::parse_hint_key(&bytes);
        }
    }

    #[test]
    fn gossiped_views_and_digests_decode_without_panicking_and_a_decoded_view_is_usable(
        seed in any::<u64>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let ours = view(seed);
        let theirs = mutate(view(seed.wrapping_add(1)).to_proto().encode_to_vec(), &e);
        let digest = mutate(ours.digest().to_proto().encode_to_vec(), &e);
        for bytes in [theirs, digest, junk] {
            if let Ok(proto) = pb::MembershipState::decode(bytes.as_slice())
                && let Ok(other) = MembershipState::from_proto(&proto)
            {
                let mut merged = ours.clone();
                let _ = merged.merge(&other);
                let _ = merged.ring();
                let _ = merged.previous_ring();
                let _ = merged.digest();
            }
            if let Ok(proto) = pb::MembershipDigest::decode(bytes.as_slice())
                && let Ok(d) = Digest::from_proto(&proto)
            {
                let _ = ours.delta_for(&d);
            }
        }
    }

    #[test]
    fn gossip_is_answered_once_and_what_the_node_sends_back_decodes(
        seed in any::<u64>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let m = member_of_view(seed);
        let theirs = view(seed.wrapping_add(1));
        let request = pb::GossipRequest {
            cluster: "hostile".into(),
            partitions: 64,
            from: "node-1".into(),
            state_hash: Bytes::new(),
            digest: Some(theirs.digest().to_proto()),
            delta: Some(theirs.to_proto()),
        };
        for bytes in [mutate(request.encode_to_vec(), &e), junk] {
            let Ok(req) = pb::GossipRequest::decode(bytes.as_slice()) else {
                continue;
            };
            if let Ok(answer) = m.handle_gossip(&req) {
                if let Some(d) = &answer.delta {
                    prop_assert!(MembershipState::from_proto(d).is_ok());
                }
                if let Some(d) = &answer.digest {
                    prop_assert!(Digest::from_proto(d).is_ok());
                }
            }
            let once = m.state();
            let _ = m.handle_gossip(&req);
            prop_assert_eq!(m.state(), once, "the same gossip taught the node twice");
        }
    }

    #[test]
    fn config_text_is_parsed_or_refused_without_panicking(
        e in edits(),
        junk in "\\PC{0,200}",
    ) {
        let base = "node_id = \"node-1\"\nlisten = \"127.0.0.1:7070\"\n[cluster]\nname = \"c\"\npartitions = 64\nseeds = [\"127.0.0.1:7071\"]\n[limits]\nmax_key_bytes = 4096\n";
        let mutated = String::from_utf8_lossy(&mutate(base.as_bytes().to_vec(), &e)).into_owned();
        for text in [mutated, junk] {
            if let Ok(c) = toml::from_str::<Config>(&text)
                && c.validate().is_ok()
            {
                open_node(&c);
            }
        }
    }
}

/// What a node opens first with a config that validated: its local replica (with its Merkle
/// trees) and its membership. Either may refuse; neither may panic.
fn open_node(c: &Config) {
    let store = std::sync::Arc::new(storage::MemoryStorage::default());
    let _ = dynamokv_server::replica::LocalReplica::open(
        store.clone(),
        &c.node_id,
        c.cluster.partitions,
        c.history_limits(),
        c.sibling_limits(),
        std::sync::Arc::new(dynamokv_server::metrics::Metrics::new()),
    );
    let _ = dynamokv_server::membership::Membership::open(c, "127.0.0.1:7070", Some(store));
}

#[test]
fn a_config_whose_partition_count_makes_no_ring_is_refused() {
    // Found by `cargo fuzz run config`: validation let any partition count through, and a node
    // given one that is not a power of two up to 2^20 panicked building its Merkle trees.
    for partitions in [0, 3, 65, 1000, (1 << 20) + 1, 1 << 21, u32::MAX] {
        let text = format!("[cluster]\npartitions = {partitions}\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().is_err(), "{partitions} partitions validated");
    }
    for partitions in [1, 64, 1 << 20] {
        let text = format!("[cluster]\npartitions = {partitions}\n");
        let c: Config = toml::from_str(&text).unwrap();
        assert!(c.validate().is_ok(), "{partitions} partitions refused");
    }
}
