//! Merkle exchanges of anti-entropy (paper 4.7; `server/src/merkle.rs`, `anti_entropy.rs`, the
//! `TreeRoots`, `TreeLeaves` and `LeafKeys` rpcs of `proto/dynamokv.proto`), both ways.
//!
//! A peer's requests, decoded and answered by the node's `Replica` service over its trees
//! (2008 keys, 8 of them under one leaf). Checks: no panic; an answer has one root per
//! partition asked, each the node's own; a partition's leaves are the node's; a leaf's key
//! listing holds at most the page limit, only keys under that leaf, after the key it was asked
//! to continue from, in storage order, each with its state digest.
//!
//! A peer's answers, decoded and judged by the comparison steps of anti-entropy
//! (`anti_entropy::{pair_roots, differing_leaves, take_leaf_keys, compare_keys}`). Checks: no
//! panic; roots and leaves are refused unless there is one per partition (leaf) asked, and the
//! leaves found differing are real leaves of the partition that differ; a listing's pages are
//! taken only if each key lies under the leaf and after the last one taken (so pages always
//! advance); the keys found differing are exactly those whose digests differ or that one side
//! lacks.
//!
//! Each message is raw bytes or built from the node's own keys and hashes with changes, then
//! encoded; the node decodes it.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_common::key_position;
use dynamokv_fuzz::{PARTITIONS, block_on, node};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_server::Replica;
use dynamokv_server::anti_entropy::{compare_keys, differing_leaves, pair_roots, take_leaf_keys};
use dynamokv_server::merkle::state_digest;
use dynamokv_server::service::MAX_LEAF_KEYS;
use dynamokv_server::storage;

/// A message, as raw bytes or built.
#[derive(Arbitrary, Debug)]
enum Msg<T> {
    Raw(Vec<u8>),
    Built(T),
}

fn decode<T, M: Message + Default>(msg: &Msg<T>, build: impl FnOnce(&T) -> M) -> Option<M> {
    let bytes = match msg {
        Msg::Raw(b) => b.clone(),
        Msg::Built(parts) => build(parts).encode_to_vec(),
    };
    M::decode(bytes.as_slice()).ok()
}

fn q(other: bool) -> u32 {
    if other { PARTITIONS / 2 } else { PARTITIONS }
}

#[derive(Arbitrary, Debug)]
struct RootsAsk {
    other_q: bool,
    partitions: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct LeavesAsk {
    other_q: bool,
    partition: u8,
}

/// Where a listing continues from.
#[derive(Arbitrary, Debug)]
enum After {
    Start,
    /// After one of the node's keys.
    Key(u16),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct LeafKeysAsk {
    other_q: bool,
    /// The leaf of one of the node's keys, or a neighbour of it.
    key: u16,
    leaf_offset: i8,
    after: After,
    limit: u16,
}

/// One key of a listing: one of the node's keys or any bytes, with its digest or another.
#[derive(Arbitrary, Debug)]
struct Listed {
    key: Result<u16, Vec<u8>>,
    same_digest: bool,
}

#[derive(Arbitrary, Debug)]
struct Page {
    keys: Vec<Listed>,
    more: bool,
}

#[derive(Arbitrary, Debug)]
struct Answers {
    /// The partition and leaf compared: those of one of the node's keys.
    key: u16,
    /// The peer's roots: the node's own root or another, per shared partition; `extra`
    /// answers with one root too many, `drop` with one too few.
    same_roots: Vec<bool>,
    extra: bool,
    drop: bool,
    roots: Option<Vec<u8>>,
    /// The peer's leaves: the node's own with these indices changed, cut or grown.
    changed_leaves: Vec<u16>,
    leaves_len: Option<u16>,
    leaves: Option<Vec<u8>>,
    pages: Vec<Msg<Page>>,
}

#[derive(Arbitrary, Debug)]
enum Case {
    Roots(Msg<RootsAsk>),
    Leaves(Msg<LeavesAsk>),
    LeafKeys(Msg<LeafKeysAsk>),
    Answers(Answers),
}

fn key_of(i: u16) -> Bytes {
    let keys = &node().keys;
    keys[usize::from(i) % keys.len()].clone()
}

fn digest_of(key: &[u8]) -> Option<u64> {
    let state = storage::read_state(node().store.as_ref(), key).expect("readable")?;
    Some(state_digest(key, &state))
}

fn serve_roots(msg: &Msg<RootsAsk>) {
    let Some(req) = decode(msg, |a| pb::TreeRootsRequest {
        partitions: q(a.other_q),
        partition: a
            .partitions
            .iter()
            .take(70)
            .map(|&p| u32::from(p % 80))
            .collect(),
    }) else {
        return;
    };
    let forest = node().forest();
    let asked = req.partition.clone();
    if let Ok(answer) = block_on(node().replica.tree_roots(tonic::Request::new(req))) {
        let roots = answer.into_inner().roots;
        assert_eq!(roots.len(), asked.len());
        for (p, root) in asked.iter().zip(roots) {
            assert_eq!(root, forest.partition_root(*p));
        }
    }
}

fn serve_leaves(msg: &Msg<LeavesAsk>) {
    let Some(req) = decode(msg, |a| pb::TreeLeavesRequest {
        partitions: q(a.other_q),
        partition: u32::from(a.partition % 80),
    }) else {
        return;
    };
    let p = req.partition;
    if let Ok(answer) = block_on(node().replica.tree_leaves(tonic::Request::new(req))) {
        assert_eq!(
            answer.into_inner().leaves,
            node().forest().partition_leaves(p)
        );
    }
}

fn serve_leaf_keys(msg: &Msg<LeafKeysAsk>) {
    let forest = node().forest();
    let Some(req) = decode(msg, |a| {
        let (p, leaf) = forest.leaf_of_key(&key_of(a.key));
        pb::LeafKeysRequest {
            partitions: q(a.other_q),
            partition: p,
            leaf: leaf.wrapping_add_signed(i32::from(a.leaf_offset % 3)),
            after: match &a.after {
                After::Start => Bytes::new(),
                After::Key(i) => Bytes::from(storage::storage_key(&key_of(*i))),
                After::Raw(b) => Bytes::copy_from_slice(b),
            },
            limit: u32::from(a.limit % 12),
        }
    }) else {
        return;
    };
    let (p, leaf, after, limit) = (req.partition, req.leaf, req.after.clone(), req.limit);
    let Ok(answer) = block_on(node().replica.leaf_keys(tonic::Request::new(req))) else {
        return;
    };
    let answer = answer.into_inner();
    assert!(answer.keys.len() <= (limit as usize).clamp(1, MAX_LEAF_KEYS));
    let (first, last) = forest.leaf_range(p, leaf);
    let mut previous = after.to_vec();
    for k in &answer.keys {
        let position = key_position(&k.key);
        assert!(
            (first..=last).contains(&position),
            "a listing of leaf {leaf} of partition {p} holds a key of another leaf"
        );
        let sk = storage::storage_key(&k.key);
        assert!(
            sk > previous,
            "a listing is out of order or repeats its start"
        );
        previous = sk;
        assert_eq!(Some(k.digest), digest_of(&k.key));
    }
}

fn judge(a: &Answers) {
    let n = node();
    let forest = n.forest();
    let (p, leaf) = forest.leaf_of_key(&key_of(a.key));

    // Roots of the partitions both replicate.
    let mut shared = vec![p, (p + 1) % PARTITIONS, (p + 7) % PARTITIONS];
    shared.dedup();
    let built = || {
        let mut roots: Vec<u64> = shared
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let own = forest.partition_root(s);
                if a.same_roots.get(i).copied().unwrap_or(true) {
                    own
                } else {
                    !own
                }
            })
            .collect();
        if a.extra {
            roots.push(0);
        }
        if a.drop {
            roots.pop();
        }
        pb::TreeRootsResponse { roots }
    };
    let roots = match &a.roots {
        Some(raw) => pb::TreeRootsResponse::decode(raw.as_slice()).ok(),
        None => Some(built()),
    };
    if let Some(roots) = roots {
        match pair_roots(&shared, &roots.roots) {
            Ok(pairs) => {
                assert_eq!(roots.roots.len(), shared.len());
                let pairs: Vec<(u32, u64)> = pairs.collect();
                assert_eq!(pairs.iter().map(|(s, _)| *s).collect::<Vec<_>>(), shared);
            }
            Err(_) => assert_ne!(roots.roots.len(), shared.len()),
        }
    }

    // The leaves of one partition.
    let ours = forest.partition_leaves(p);
    let theirs = match &a.leaves {
        Some(raw) => pb::TreeLeavesResponse::decode(raw.as_slice()).ok(),
        None => {
            let mut leaves = ours.clone();
            for &i in a.changed_leaves.iter().take(16) {
                let i = usize::from(i) % leaves.len();
                leaves[i] = !leaves[i];
            }
            if let Some(len) = a.leaves_len {
                leaves.resize(usize::from(len) % (2 * ours.len()), 7);
            }
            Some(pb::TreeLeavesResponse { leaves })
        }
    };
    if let Some(theirs) = theirs {
        match differing_leaves(p, &ours, &theirs.leaves) {
            Ok(differ) => {
                assert_eq!(theirs.leaves.len(), ours.len());
                for l in differ {
                    assert_ne!(ours[l as usize], theirs.leaves[l as usize]);
                    let _ = forest.leaf_range(p, l);
                }
            }
            Err(_) => assert_ne!(theirs.leaves.len(), ours.len()),
        }
    }

    // The keys under one leaf, page by page, compared with the node's.
    let (first, last) = forest.leaf_range(p, leaf);
    let mut theirs: BTreeMap<Bytes, u64> = BTreeMap::new();
    let mut after = Bytes::new();
    for msg in a.pages.iter().take(8) {
        let Some(page) = decode(msg, |pg| pb::LeafKeysResponse {
            keys: pg
                .keys
                .iter()
                .take(16)
                .map(|l| {
                    let key = match &l.key {
                        Ok(i) => key_of(*i),
                        Err(raw) => Bytes::copy_from_slice(raw),
                    };
                    let own = digest_of(&key).unwrap_or(0);
                    pb::KeyDigest {
                        digest: if l.same_digest { own } else { !own },
                        key,
                    }
                })
                .collect(),
            more: pg.more,
        }) else {
            break;
        };
        match take_leaf_keys(&mut theirs, &page, (first, last), &after) {
            Ok(Some(next)) => {
                assert!(next > after, "a listing's pages do not advance");
                after = next;
            }
            Ok(None) | Err(_) => break,
        }
    }
    for k in theirs.keys() {
        assert!(
            (first..=last).contains(&key_position(k)),
            "a key of another leaf was taken from a listing"
        );
    }
    let (ours, _) = n
        .local
        .key_digests(first, last, &[], MAX_LEAF_KEYS)
        .expect("readable");
    let ours: BTreeMap<Bytes, u64> = ours.into_iter().collect();
    let (differ, compared) = compare_keys(&ours, &theirs);
    let all: std::collections::BTreeSet<&Bytes> = ours.keys().chain(theirs.keys()).collect();
    assert_eq!(compared, all.len() as u64);
    let expected: Vec<Bytes> = all
        .into_iter()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .cloned()
        .collect();
    assert_eq!(differ, expected);
}

fuzz_target!(|case: Case| {
    match &case {
        Case::Roots(m) => serve_roots(m),
        Case::Leaves(m) => serve_leaves(m),
        Case::LeafKeys(m) => serve_leaf_keys(m),
        Case::Answers(a) => judge(a),
    }
});
