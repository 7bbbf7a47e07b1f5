//! Anti-entropy with Merkle trees (paper 4.7).
//!
//! Replicas drift apart when hinted handoff cannot make up for a failure (a hint lost with its
//! node, a replica down for longer than hints are kept). Dynamo repairs them in the background by
//! comparing, per key range, a Merkle tree of each replica's keys: equal roots mean the whole
//! range agrees and nothing more is sent; differing roots lead down to the leaves that differ,
//! and only those leaves' keys are exchanged. As in the paper, a node keeps one tree per key
//! range it holds; here a range is a ring partition (paper 6.2, strategy 3), so the trees of two
//! replicas of a partition always cover exactly the same range and never need recomputing when
//! membership changes.
//!
//! The forest is one array of leaves covering the whole ring: leaf `i` holds the positions whose
//! top `leaf_bits` bits are `i`, with `leaf_bits = max(16, log2 Q)`, so a partition's tree is its
//! run of consecutive leaves. A leaf's hash is the XOR of the [`state_digest`]s of the keys under
//! it. XOR makes a write's update O(1) and lock-free (XOR out the old digest, XOR in the new one
//! with one `fetch_xor`), independent of the order writes arrive in, and rebuildable from a scan
//! of storage at start. A root is recomputed on demand from its partition's leaves: with the
//! default 1024 partitions that is 64 leaves (512 bytes), so a root costs well under a microsecond
//! and an intermediate level would save neither time nor bytes on the wire.
//!
//! Digests are compared between nodes, possibly running different builds, so they use a fixed,
//! specified hash (XXH3, 64 bits) over a canonical encoding, never std's randomised hashers.

use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use dynamokv_common::ring::MAX_PARTITIONS;
use dynamokv_common::{VersionedState, key_position};

/// Leaves cover the ring at no coarser grain than this many top bits of the position (65536
/// leaves, 512 KiB), so a differing leaf stands for few keys even when partitions are few.
const MIN_LEAF_BITS: u32 = 16;

/// A key's state digest: equal on two replicas exactly when they hold the same versions of the
/// key (up to 64-bit hash collisions).
///
/// It covers the key and everything replicas converge on: the clock's (actor, counter) pairs
/// and single events (the dot cloud), every sibling (dot, write id, value or tombstone, and the
/// sibling's own timestamp, which travels with it) and the set of retired write ids. It ignores
/// per-replica bookkeeping that differs between replicas holding the same versions: the
/// last-use times of clock entries and the time this replica learned that a write was retired.
///
/// Every field is fixed-width or length-prefixed and every collection is counted and in a
/// canonical order (clock entries and cloud by actor and dot, siblings by dot, retired ids
/// ascending: the orders [`VersionedState`] keeps), so distinct states encode distinctly.
pub fn state_digest(key: &[u8], state: &VersionedState) -> u64 {
    let mut h = Xxh3::new();
    put_u64(&mut h, key.len() as u64);
    h.update(key);

    let clock = state.clock();
    put_u64(&mut h, clock.len() as u64);
    // Third item: the entry's last-use time, replica bookkeeping (see above).
    for (actor, counter, _) in clock.iter() {
        put_u64(&mut h, actor.0);
        put_u64(&mut h, counter);
    }
    let cloud: Vec<_> = clock.cloud().collect();
    put_u64(&mut h, cloud.len() as u64);
    for dot in cloud {
        put_u64(&mut h, dot.actor.0);
        put_u64(&mut h, dot.counter);
    }

    let siblings = state.siblings();
    put_u64(&mut h, siblings.len() as u64);
    for s in siblings {
        put_u64(&mut h, s.dot.actor.0);
        put_u64(&mut h, s.dot.counter);
        h.update(&s.write_id.0.to_le_bytes());
        put_u64(&mut h, s.timestamp_ms);
        match &s.value {
            None => h.update(&[0]),
            Some(v) => {
                h.update(&[1]);
                put_u64(&mut h, v.len() as u64);
                h.update(v);
            }
        }
    }

    // The ids only: when each was retired is this replica's bookkeeping.
    let retired: Vec<_> = state.retired().collect();
    put_u64(&mut h, retired.len() as u64);
    for w in retired {
        h.update(&w.0.to_le_bytes());
    }
    h.digest()
}

fn put_u64(h: &mut Xxh3, x: u64) {
    h.update(&x.to_le_bytes());
}

/// Refuses a number of partitions no ring has (the precondition of [`MerkleForest::new`]):
/// anything but a power of two from 1 to [`MAX_PARTITIONS`]. Config validation calls it.
pub fn check_partitions(partitions: u32) -> Result<(), String> {
    if partitions.is_power_of_two() && partitions <= MAX_PARTITIONS {
        return Ok(());
    }
    Err(format!(
        "the number of partitions must be a power of two from 1 to {MAX_PARTITIONS}, not {partitions}"
    ))
}

/// This node's Merkle trees, one per partition, over a shared array of leaves (see the module
/// docs).
///
/// Updates are lock-free and commute, so the leaves depend only on the set of (key, digest)
/// pairs added, not on the order or the threads that added them. Readers may see a partition in
/// the middle of concurrent writes; anti-entropy compares again on its next round anyway.
///
/// Callers keep it in step with storage: [`update`](Self::update) with the state the key had
/// before and after each write, under the same per-key lock as the write (two racing writers
/// of one key would otherwise XOR out the same old digest twice).
pub struct MerkleForest {
    partitions: u32,
    /// `log2 Q`.
    partition_bits: u32,
    /// `max(16, log2 Q)`: the ring is split into `2^leaf_bits` leaves.
    leaf_bits: u32,
    leaves: Box<[AtomicU64]>,
}

impl std::fmt::Debug for MerkleForest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerkleForest")
            .field("partitions", &self.partitions)
            .field("leaf_bits", &self.leaf_bits)
            .field("leaves_per_partition", &self.leaves_per_partition())
            .finish_non_exhaustive()
    }
}

impl MerkleForest {
    /// An empty forest (no keys) for a ring of `partitions` partitions.
    ///
    /// # Panics
    /// If `partitions` is not a power of two from 1 to [`MAX_PARTITIONS`], which a valid ring
    /// never has.
    pub fn new(partitions: u32) -> MerkleForest {
        if let Err(e) = check_partitions(partitions) {
            panic!("{e}");
        }
        let partition_bits = partitions.trailing_zeros();
        let leaf_bits = partition_bits.max(MIN_LEAF_BITS);
        let leaves = (0..1usize << leaf_bits)
            .map(|_| AtomicU64::new(0))
            .collect();
        MerkleForest {
            partitions,
            partition_bits,
            leaf_bits,
            leaves,
        }
    }

    /// Q, the number of partitions (and of trees).
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Number of leaves of each partition's tree: `2^(leaf_bits - log2 Q)`, 1 at Q = 2^20.
    pub fn leaves_per_partition(&self) -> usize {
        1 << (self.leaf_bits - self.partition_bits)
    }

    /// A key's state changed from `old` to `new` (`None`: the key was or is absent).
    pub fn update(&self, key: &[u8], old: Option<&VersionedState>, new: Option<&VersionedState>) {
        let digest = |s: Option<&VersionedState>| s.map_or(0, |s| state_digest(key, s));
        let delta = digest(old) ^ digest(new);
        if delta != 0 {
            self.leaves[self.global_leaf(key)].fetch_xor(delta, Ordering::Relaxed);
        }
    }

    /// Adds one key with a known digest (rebuilding from storage at start). Keys are a set:
    /// adding the same (key, digest) twice removes it again, so add each key once.
    pub fn add(&self, key: &[u8], digest: u64) {
        self.leaves[self.global_leaf(key)].fetch_xor(digest, Ordering::Relaxed);
    }

    /// Sets the hash of the leaf holding `key` (recomputed from storage after a record under
    /// it was set aside; the caller holds off every write meanwhile).
    pub fn set_leaf_of(&self, key: &[u8], hash: u64) {
        self.leaves[self.global_leaf(key)].store(hash, Ordering::Relaxed);
    }

    /// The leaf hashes of partition `p`'s tree, in ring order: what two replicas exchange once
    /// their roots differ.
    pub fn partition_leaves(&self, p: u32) -> Vec<u64> {
        self.leaf_slice(p)
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect()
    }

    /// The root of partition `p`'s tree: XXH3 of its leaf hashes. Equal roots on two replicas
    /// mean the partition agrees and the comparison stops there.
    ///
    /// A partition with no keys has all leaves 0, so its root is a fixed value for a given Q,
    /// [`empty_root`](Self::empty_root): two replicas that both hold nothing agree, as they
    /// should.
    pub fn partition_root(&self, p: u32) -> u64 {
        root_of(self.leaf_slice(p).iter().map(|l| l.load(Ordering::Relaxed)))
    }

    /// The root of every partition with no keys under this forest's Q.
    pub fn empty_root(&self) -> u64 {
        root_of(std::iter::repeat_n(0, self.leaves_per_partition()))
    }

    /// The first and last ring position under leaf `leaf` of partition `p`: the key range to
    /// exchange when that leaf differs.
    ///
    /// # Panics
    /// If `p` or `leaf` is out of range.
    pub fn leaf_range(&self, p: u32, leaf: u32) -> (u128, u128) {
        assert!(p < self.partitions, "partition {p} out of range");
        assert!(
            (leaf as usize) < self.leaves_per_partition(),
            "leaf {leaf} out of range"
        );
        let global = ((p as u128) << (self.leaf_bits - self.partition_bits)) | leaf as u128;
        let start = global << (128 - self.leaf_bits);
        (start, start | (u128::MAX >> self.leaf_bits))
    }

    /// The partition holding `key` and the index within it of the leaf holding `key`.
    pub fn leaf_of_key(&self, key: &[u8]) -> (u32, u32) {
        let global = self.global_leaf(key);
        let within = self.leaf_bits - self.partition_bits;
        (
            (global >> within) as u32,
            (global & ((1 << within) - 1)) as u32,
        )
    }

    fn global_leaf(&self, key: &[u8]) -> usize {
        (key_position(key) >> (128 - self.leaf_bits)) as usize
    }

    fn leaf_slice(&self, p: u32) -> &[AtomicU64] {
        assert!(p < self.partitions, "partition {p} out of range");
        let n = self.leaves_per_partition();
        &self.leaves[p as usize * n..(p as usize + 1) * n]
    }
}

fn root_of(leaves: impl Iterator<Item = u64>) -> u64 {
    let bytes: Vec<u8> = leaves.flat_map(u64::to_le_bytes).collect();
    xxh3_64(&bytes)
}

/// Builds a forest from every key this node holds, e.g. a scan of storage at start.
pub fn rebuild(
    partitions: u32,
    entries: impl IntoIterator<Item = (Vec<u8>, VersionedState)>,
) -> MerkleForest {
    let forest = MerkleForest::new(partitions);
    for (key, state) in entries {
        forest.add(&key, state_digest(&key, &state));
    }
    forest
}

/// Indices at which two leaf vectors of one partition differ: the step of the top-down
/// comparison after the roots differed (equal roots stop it; differing leaves lead to comparing
/// the keys in their [`leaf_range`](MerkleForest::leaf_range)s).
///
/// Vectors of different lengths come from nodes configured with different Q, which callers
/// should refuse before comparing; here an index present on one side only counts as differing.
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<u32> {
    (0..ours.len().max(theirs.len()))
        .filter(|&i| ours.get(i) != theirs.get(i))
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use dynamokv_common::{Actor, CausalContext, Member, Ring, WriteId};
    use dynamokv_proto::v1 as pb;
    use proptest::prelude::*;

    use super::*;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    fn all_leaves(f: &MerkleForest) -> Vec<u64> {
        (0..f.partitions())
            .flat_map(|p| f.partition_leaves(p))
            .collect()
    }

    fn key(i: usize) -> Vec<u8> {
        format!("key-{i}").into_bytes()
    }

    /// A state holding one write per entry of `writes` (`(actor, value)`), each written with
    /// the context of a read just before it when `supersede`, blind (a new sibling) otherwise.
    fn written(writes: &[(u64, Option<&[u8]>, bool)], t0: u64) -> VersionedState {
        let mut s = VersionedState::new();
        for (i, (actor, value, supersede)) in writes.iter().enumerate() {
            let ctx = if *supersede {
                CausalContext::of_read(&s)
            } else {
                CausalContext::new()
            };
            let id = WriteId((u128::from(t0) << 32) | i as u128);
            let v = value.map(Bytes::copy_from_slice);
            s.update(&ctx, id, v, Actor(*actor), 1, t0 + i as u64);
        }
        s
    }

    /// A state with every kind of content: two clock entries, a cloud dot, a value sibling, a
    /// tombstone sibling and two retired writes.
    fn rich() -> pb::VersionedState {
        let entry = |actor, counter, timestamp_ms| pb::ClockEntry {
            actor,
            counter,
            timestamp_ms,
        };
        let sibling = |actor, counter, w: u128, value: Option<&str>, timestamp_ms| pb::Sibling {
            actor,
            counter,
            value: Bytes::copy_from_slice(value.unwrap_or("").as_bytes()),
            tombstone: value.is_none(),
            timestamp_ms,
            write_id: Bytes::copy_from_slice(&w.to_be_bytes()),
        };
        let retired = |w: u128, retired_at_ms| pb::RetiredWrite {
            write_id: Bytes::copy_from_slice(&w.to_be_bytes()),
            retired_at_ms,
        };
        pb::VersionedState {
            clock: Some(pb::VersionVector {
                entries: vec![entry(A.0, 3, 100), entry(B.0, 0, 200)],
                cloud: vec![pb::Dot {
                    actor: B.0,
                    counter: 5,
                }],
            }),
            siblings: vec![
                sibling(A.0, 3, 10, Some("x"), 100),
                sibling(B.0, 5, 11, None, 200),
            ],
            retired: vec![retired(7, 50), retired(8, 60)],
        }
    }

    /// One edit of a state's wire form.
    type Change = Box<dyn Fn(&mut pb::VersionedState)>;

    fn digest_of(p: &pb::VersionedState) -> u64 {
        let state = VersionedState::from_proto(p).expect("valid test state");
        state_digest(b"k", &state)
    }

    #[test]
    fn digest_ignores_clock_entry_and_retired_at_times() {
        let base = rich();
        let mut later = base.clone();
        for e in &mut later.clock.as_mut().expect("clock").entries {
            e.timestamp_ms += 12345;
        }
        for r in &mut later.retired {
            r.retired_at_ms += 777;
        }
        assert_eq!(digest_of(&base), digest_of(&later));

        // The same through real merges: replicas that learn of a superseding write at different
        // times retire the old write at different times, but hold the same versions.
        let first = written(&[(A.0, Some(b"one"), false)], 1);
        let mut second = first.clone();
        second.update(
            &CausalContext::of_read(&first),
            WriteId(99),
            Some(Bytes::from_static(b"two")),
            B,
            1,
            2,
        );
        let (mut early, mut late) = (first.clone(), first);
        early.merge(&second, 3);
        late.merge(&second, 1_000_000);
        assert_ne!(early.to_proto().retired, late.to_proto().retired);
        assert_eq!(state_digest(b"k", &early), state_digest(b"k", &late));
    }

    #[test]
    fn digest_changes_with_every_version_field() {
        let base = rich();
        let d0 = digest_of(&base);
        let variants: Vec<(&str, Change)> = vec![
            (
                "clock counter",
                Box::new(|p| p.clock.as_mut().expect("clock").entries[0].counter = 4),
            ),
            (
                "clock actor",
                Box::new(|p| {
                    p.clock
                        .as_mut()
                        .expect("clock")
                        .entries
                        .push(pb::ClockEntry {
                            actor: 9,
                            counter: 1,
                            timestamp_ms: 0,
                        })
                }),
            ),
            (
                "cloud dot",
                Box::new(|p| {
                    p.clock.as_mut().expect("clock").cloud.push(pb::Dot {
                        actor: B.0,
                        counter: 7,
                    })
                }),
            ),
            (
                "value",
                Box::new(|p| p.siblings[0].value = Bytes::from_static(b"y")),
            ),
            (
                "empty value vs tombstone",
                Box::new(|p| p.siblings[1].tombstone = false),
            ),
            (
                "value vs tombstone",
                Box::new(|p| {
                    p.siblings[0].tombstone = true;
                    p.siblings[0].value = Bytes::new();
                }),
            ),
            (
                "sibling timestamp",
                Box::new(|p| p.siblings[0].timestamp_ms = 101),
            ),
            (
                "sibling write id",
                Box::new(|p| {
                    p.siblings[0].write_id = Bytes::copy_from_slice(&12u128.to_be_bytes())
                }),
            ),
            ("sibling dot", Box::new(|p| p.siblings[0].counter = 2)),
            (
                "sibling dropped",
                Box::new(|p| {
                    p.siblings.remove(1);
                }),
            ),
            (
                "retired added",
                Box::new(|p| {
                    p.retired.push(pb::RetiredWrite {
                        write_id: Bytes::copy_from_slice(&9u128.to_be_bytes()),
                        retired_at_ms: 60,
                    })
                }),
            ),
            (
                "retired dropped",
                Box::new(|p| {
                    p.retired.remove(0);
                }),
            ),
        ];
        let mut seen = vec![d0];
        for (what, change) in variants {
            let mut p = base.clone();
            change(&mut p);
            let d = digest_of(&p);
            assert!(!seen.contains(&d), "{what}: digest unchanged or colliding");
            seen.push(d);
        }
        let state = VersionedState::from_proto(&base).expect("valid");
        assert_ne!(state_digest(b"k", &state), state_digest(b"k2", &state));
    }

    #[test]
    fn digest_encoding_is_unambiguous_across_value_boundaries() {
        let one = written(&[(A.0, Some(b"a"), false), (B.0, Some(b"bc"), false)], 1);
        let two = written(&[(A.0, Some(b"ab"), false), (B.0, Some(b"c"), false)], 1);
        assert_ne!(state_digest(b"k", &one), state_digest(b"k", &two));
        // A key's bytes cannot run into the state's.
        let empty = VersionedState::new();
        assert_ne!(state_digest(b"", &one), state_digest(b"\x01", &empty));
    }

    #[test]
    fn digest_agrees_on_states_merged_in_either_order() {
        let a = written(&[(A.0, Some(b"a1"), false), (A.0, Some(b"a2"), true)], 10);
        let b = written(&[(B.0, Some(b"b1"), false), (B.0, None, true)], 20);
        let mut ab = a.clone();
        ab.merge(&b, 100);
        let mut ba = b.clone();
        ba.merge(&a, 999);
        assert_eq!(state_digest(b"k", &ab), state_digest(b"k", &ba));
        assert_ne!(state_digest(b"k", &ab), state_digest(b"k", &a));
    }

    fn sample_states(n: usize) -> Vec<(Vec<u8>, VersionedState)> {
        (0..n)
            .map(|i| {
                let v = format!("v{i}").into_bytes();
                let s = written(&[(A.0, Some(&v), false), (B.0, None, i % 2 == 0)], i as u64);
                (key(i), s)
            })
            .collect()
    }

    #[test]
    fn update_and_its_inverse_restore_every_leaf_in_any_order() {
        let f = rebuild(16, sample_states(50));
        let before = all_leaves(&f);
        let newer = written(&[(A.0, Some(b"new"), false)], 7);
        let changes: Vec<(Vec<u8>, Option<VersionedState>, Option<VersionedState>)> =
            sample_states(50)
                .into_iter()
                .enumerate()
                .map(|(i, (k, s))| match i % 3 {
                    0 => (k, Some(s), None),
                    1 => (k, Some(s), Some(newer.clone())),
                    _ => (key(1000 + i), None, Some(newer.clone())),
                })
                .collect();
        for (k, old, new) in &changes {
            f.update(k, old.as_ref(), new.as_ref());
        }
        let after = all_leaves(&f);
        assert_ne!(before, after);
        // The same changes in reverse order on a fresh copy give the same leaves.
        let g = rebuild(16, sample_states(50));
        for (k, old, new) in changes.iter().rev() {
            g.update(k, old.as_ref(), new.as_ref());
        }
        assert_eq!(all_leaves(&g), after);
        // Undoing them, in yet another order, restores every leaf.
        for (k, old, new) in changes
            .iter()
            .step_by(2)
            .chain(changes.iter().skip(1).step_by(2))
        {
            f.update(k, new.as_ref(), old.as_ref());
        }
        assert_eq!(all_leaves(&f), before);
        f.update(b"absent", None, None);
        assert_eq!(all_leaves(&f), before);
    }

    #[test]
    fn rebuild_equals_incremental_and_order_does_not_matter() {
        let states = sample_states(200);
        let rebuilt = rebuild(64, states.clone());
        let incremental = MerkleForest::new(64);
        for (k, s) in states.iter().rev() {
            incremental.update(k, None, Some(s));
        }
        assert_eq!(all_leaves(&rebuilt), all_leaves(&incremental));
        for p in 0..64 {
            assert_eq!(rebuilt.partition_root(p), incremental.partition_root(p));
        }
    }

    #[test]
    fn one_differing_key_differs_in_exactly_one_leaf_of_one_partition() {
        let states = sample_states(300);
        for q in [1, 2, 1024] {
            let full = rebuild(q, states.clone());
            for (i, (k, _)) in states.iter().enumerate().step_by(37) {
                let mut fewer = states.clone();
                fewer.remove(i);
                let partial = rebuild(q, fewer);
                let (kp, kl) = full.leaf_of_key(k);
                let roots: Vec<u32> = (0..q)
                    .filter(|&p| full.partition_root(p) != partial.partition_root(p))
                    .collect();
                assert_eq!(roots, vec![kp], "Q = {q}, key {i}");
                let leaves = differing(&full.partition_leaves(kp), &partial.partition_leaves(kp));
                assert_eq!(leaves, vec![kl], "Q = {q}, key {i}");
            }
        }
    }

    #[test]
    fn empty_partitions_have_a_fixed_root() {
        for q in [1, 2, 1024] {
            let empty = MerkleForest::new(q);
            let other = MerkleForest::new(q);
            assert_eq!(empty.partition_root(q - 1), empty.empty_root());
            assert_eq!(empty.partition_root(0), other.partition_root(0));
            // A key and its removal leave the fixed value again.
            let s = written(&[(A.0, Some(b"x"), false)], 1);
            let (p, _) = empty.leaf_of_key(b"k");
            empty.update(b"k", None, Some(&s));
            assert_ne!(empty.partition_root(p), empty.empty_root());
            empty.update(b"k", Some(&s), None);
            assert_eq!(empty.partition_root(p), empty.empty_root());
        }
    }

    #[test]
    fn differing_compares_index_by_index() {
        assert!(differing(&[1, 2, 3], &[1, 2, 3]).is_empty());
        assert_eq!(differing(&[1, 2, 3], &[1, 5, 4]), vec![1, 2]);
        assert_eq!(differing(&[1, 2], &[1, 2, 3]), vec![2]);
        assert!(differing(&[], &[]).is_empty());
    }

    #[test]
    fn leaves_tile_each_partition_range_of_the_ring() {
        for q in [1, 2, 1024, MAX_PARTITIONS] {
            let ring = Ring::new(q, vec![Member::new("n", "h:1")]).expect("ring");
            let f = MerkleForest::new(q);
            assert_eq!(f.partitions(), q);
            let lpp = f.leaves_per_partition();
            assert_eq!(lpp * q as usize, 1 << MIN_LEAF_BITS.max(q.trailing_zeros()));
            let sample: Vec<u32> = if q <= 1024 {
                (0..q).collect()
            } else {
                vec![0, 1, 2, q / 2 - 1, q / 2, q - 2, q - 1]
            };
            for p in sample {
                let (start, end) = ring.partition_range(p);
                assert_eq!(f.leaf_range(p, 0).0, start, "Q = {q}, p = {p}");
                assert_eq!(f.leaf_range(p, lpp as u32 - 1).1, end, "Q = {q}, p = {p}");
                for l in 1..lpp as u32 {
                    assert_eq!(f.leaf_range(p, l - 1).1 + 1, f.leaf_range(p, l).0);
                }
            }
            for i in 0..2000 {
                let k = key(i);
                let (p, l) = f.leaf_of_key(&k);
                assert_eq!(p, ring.partition_of(&k));
                let (lo, hi) = f.leaf_range(p, l);
                assert!((lo..=hi).contains(&key_position(&k)));
            }
        }
    }

    #[test]
    fn debug_does_not_print_leaves_and_forest_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MerkleForest>();
        let text = format!("{:?}", MerkleForest::new(1024));
        assert!(
            text.contains("partitions: 1024") && text.len() < 200,
            "{text}"
        );
    }

    fn arb_state() -> impl Strategy<Value = VersionedState> {
        let write = (
            1u64..4,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        );
        (
            proptest::collection::vec((write, any::<bool>()), 1..5),
            0u64..1000,
        )
            .prop_map(|(writes, t0)| {
                let w: Vec<(u64, Option<&[u8]>, bool)> = writes
                    .iter()
                    .map(|((a, v), sup)| (*a, v.as_deref(), *sup))
                    .collect();
                written(&w, t0)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Forests fed the same final states, whether rebuilt in one order or updated
        /// incrementally through intermediate states in another, agree leaf for leaf.
        #[test]
        fn forests_built_in_any_order_agree(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6),
                (arb_state(), proptest::option::of(arb_state())),
                0..40,
            ),
            q_bits in 0u32..12,
            seed in any::<u64>(),
        ) {
            let q = 1 << q_bits;
            let finals: Vec<(Vec<u8>, VersionedState)> =
                entries.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect();
            let rebuilt = rebuild(q, finals.clone());

            // Incrementally, in a shuffled order, some keys passing through an earlier state.
            let mut order: Vec<usize> = (0..finals.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let incremental = MerkleForest::new(q);
            let earlier: Vec<_> = entries.values().map(|(_, e)| e.clone()).collect();
            for &i in &order {
                if let Some(e) = &earlier[i] {
                    incremental.update(&finals[i].0, None, Some(e));
                }
            }
            for &i in order.iter().rev() {
                let (k, s) = &finals[i];
                incremental.update(k, earlier[i].as_ref(), Some(s));
            }
            prop_assert_eq!(all_leaves(&rebuilt), all_leaves(&incremental));
            for p in 0..q {
                prop_assert_eq!(rebuilt.partition_root(p), incremental.partition_root(p));
            }
            if finals.is_empty() {
                prop_assert_eq!(rebuilt.partition_root(0), rebuilt.empty_root());
            }
        }
    }
}
