//! Anti-entropy with Merkle trees (paper 4.7): replicas of a partition compare their trees and
//! exchange the keys that differ, so replicas that missed writes (for longer than hints cover,
//! or after losing their disk) converge without any client reading the keys.
//!
//! Every `anti_entropy_interval_ms` this node takes the next peer in turn that replicates
//! partitions with it, and compares top-down:
//! 1. the roots of every partition both replicate, in one call (`TreeRoots`);
//! 2. for each partition whose roots differ, its leaves (`TreeLeaves`);
//! 3. for each leaf that differs, the keys under it with their state digests (`LeafKeys`);
//! 4. for each key whose digests differ or that one side lacks: the peer's state is merged
//!    into this node's (never overwriting a newer or concurrent version: a merge keeps every
//!    version neither side has superseded), and the result is merged back into the peer unless
//!    it already has all of it. Both directions in one pass.
//!
//! The trees are kept up to date by every write ([`crate::merkle`]), and rebuilt from storage at
//! start, so an exchange of replicas in sync costs one call and a hash per shared partition.
//! Batches of work are admitted by [`Admission`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use dynamokv_common::{Member, VersionedState};
use dynamokv_proto::v1 as pb;

use crate::background::Shared;
use crate::merkle;
use crate::service::MAX_LEAF_KEYS;

/// Keys repaired at once.
const IN_FLIGHT: usize = 32;
/// Leaves whose keys are listed at once.
const LEAVES_IN_FLIGHT: usize = 8;

/// The last exchange with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSync {
    pub peer: String,
    pub at: Instant,
    pub partitions_compared: u32,
    pub partitions_differing: u32,
    pub keys_repaired: u64,
}

/// The anti-entropy worker.
#[derive(Debug)]
pub struct AntiEntropy {
    s: Shared,
    interval: Duration,
    last: Mutex<BTreeMap<String, PeerSync>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which way keys that differ travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both replicas end with the merge of both states (anti-entropy).
    Both,
    /// Only the peer is brought up to date (key-range transfer to a new replica).
    Push,
}

/// What one exchange found and did.
#[derive(Debug, Default)]
pub struct Tally {
    pub differing: u32,
    pub compared: u64,
    pub repaired: u64,
}

// The steps of a comparison that judge a peer's answers, as pure functions (the fuzz targets
// in `fuzz/` feed them decoded messages; see docs/fuzzing.md).

/// Step 1: pairs each partition of `shared` with the root the peer's `TreeRoots` answer gives
/// it, refusing an answer with another number of roots.
pub fn pair_roots<'a>(
    shared: &'a [u32],
    roots: &'a [u64],
) -> Result<impl Iterator<Item = (u32, u64)> + 'a, String> {
    if roots.len() != shared.len() {
        return Err(format!(
            "asked for {} roots, got {}",
            shared.len(),
            roots.len()
        ));
    }
    Ok(shared.iter().copied().zip(roots.iter().copied()))
}

/// Step 2: the leaves of partition `p` whose hashes differ between this node (`ours`) and the
/// peer's `TreeLeaves` answer (`theirs`), refusing an answer with another number of leaves.
pub fn differing_leaves(p: u32, ours: &[u64], theirs: &[u64]) -> Result<Vec<u32>, String> {
    if theirs.len() != ours.len() {
        return Err(format!(
            "partition {p}: {} leaves here, {} there",
            ours.len(),
            theirs.len()
        ));
    }
    Ok(merkle::differing(ours, theirs))
}

/// Step 3: takes one page of the peer's `LeafKeys` answer for the leaf covering ring positions
/// `leaf` (first and last), asked to continue after storage key `after` (empty: from the
/// start), into `theirs` (key to state digest). Returns the storage key the next page starts
/// after, or `None` once the peer has listed every key under the leaf.
///
/// Refuses the whole page if it lists a key outside the leaf, or keys not strictly after
/// `after` and each other in storage order: what the peer lists is repaired into this node,
/// and a listing whose pages did not advance would never end.
pub fn take_leaf_keys(
    theirs: &mut BTreeMap<Bytes, u64>,
    page: &pb::LeafKeysResponse,
    leaf: (u128, u128),
    after: &[u8],
) -> Result<Option<Bytes>, String> {
    let mut previous = after.to_vec();
    for k in &page.keys {
        if !(leaf.0..=leaf.1).contains(&dynamokv_common::key_position(&k.key)) {
            return Err("the peer listed a key of another leaf".into());
        }
        let storage_key = crate::storage::storage_key(&k.key);
        if storage_key <= previous {
            return Err("the peer listed keys out of order, or again".into());
        }
        previous = storage_key;
    }
    for k in &page.keys {
        theirs.insert(k.key.clone(), k.digest);
    }
    Ok(match page.keys.last() {
        Some(_) if page.more => Some(Bytes::from(previous)),
        _ => None,
    })
}

/// Step 3's comparison: the keys under one leaf whose digests differ between this node
/// (`ours`) and the peer (`theirs`), or that only one of them holds, in key order, and how many
/// keys were compared.
pub fn compare_keys(
    ours: &BTreeMap<Bytes, u64>,
    theirs: &BTreeMap<Bytes, u64>,
) -> (Vec<Bytes>, u64) {
    let all: BTreeSet<&Bytes> = ours.keys().chain(theirs.keys()).collect();
    let compared = all.len() as u64;
    let differing = all
        .into_iter()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .cloned()
        .collect();
    (differing, compared)
}

impl AntiEntropy {
    pub fn new(s: Shared, interval: Duration) -> AntiEntropy {
        AntiEntropy {
            s,
            interval,
            last: Mutex::default(),
        }
    }

    /// The last exchange with each peer.
    pub fn last_exchanges(&self) -> Vec<PeerSync> {
        lock(&self.last).values().cloned().collect()
    }

    /// Compares trees with one peer after another until the node shuts down.
    pub async fn run(self: Arc<Self>) {
        let mut turn = 0usize;
        loop {
            if !self.s.admission.sleep(self.interval).await
                || !self.s.admission.admit("anti_entropy").await
            {
                return;
            }
            let view = self.s.membership.current();
            let peers: Vec<Member> = view
                .ring
                .members()
                .iter()
                .filter(|m| m.id != view.self_id)
                .cloned()
                .collect();
            if peers.is_empty() {
                continue;
            }
            // The next peer this node can reach; a silent one waits for its probe.
            let Some(peer) = (0..peers.len())
                .map(|i| &peers[(turn + i) % peers.len()])
                .find(|m| self.s.peers.is_up(&m.address))
                .cloned()
            else {
                continue;
            };
            turn = peers.iter().position(|m| m.id == peer.id).unwrap_or(0) + 1;
            let started = Instant::now();
            match self.exchange(&peer).await {
                Ok(t) => {
                    self.s.metrics.anti_entropy.exchanges.inc();
                    if t.repaired > 0 {
                        tracing::info!(peer = %peer.id, partitions = t.differing, keys = t.repaired, took = ?started.elapsed(), "anti-entropy repaired keys");
                    }
                }
                Err(reason) => {
                    tracing::debug!(peer = %peer.id, %reason, "anti-entropy exchange failed")
                }
            }
        }
    }

    /// One comparison with `peer` of every partition both replicate.
    async fn exchange(&self, peer: &Member) -> Result<Tally, String> {
        let view = self.s.membership.current();
        let n = view.quorums.n as usize;
        let forest = self.s.local.forest();
        let q = forest.partitions();
        if view.ring.partition_count() != q {
            return Err("the ring's partition count changed since the trees were built".into());
        }
        let shared: Vec<u32> = (0..q)
            .filter(|&p| {
                let nodes = view.ring.preference_list_of_partition(p, n).nodes;
                nodes.iter().any(|m| m.id == view.self_id) && nodes.iter().any(|m| m.id == peer.id)
            })
            .collect();
        if shared.is_empty() {
            return Ok(Tally::default());
        }
        let request = pb::TreeRootsRequest {
            partitions: q,
            partition: shared.clone(),
        };
        let roots = self
            .s
            .peers
            .call(
                &peer.address,
                self.s.timeout,
                request,
                |mut c, r| async move { c.tree_roots(r).await },
            )
            .await?
            .roots;
        let mut tally = Tally::default();
        for (p, theirs) in pair_roots(&shared, &roots)? {
            if forest.partition_root(p) == theirs {
                continue;
            }
            tally.differing += 1;
            if !self.s.admission.admit("anti_entropy").await {
                break;
            }
            self.sync_partition(peer, p, &mut tally, Direction::Both)
                .await?;
        }
        self.s
            .metrics
            .anti_entropy
            .keys_compared
            .inc_by(tally.compared);
        lock(&self.last).insert(
            peer.id.clone(),
            PeerSync {
                peer: peer.id.clone(),
                at: Instant::now(),
                partitions_compared: shared.len() as u32,
                partitions_differing: tally.differing,
                keys_repaired: tally.repaired,
            },
        );
        Ok(tally)
    }

    /// Compares one partition's leaves with the peer's and repairs the keys under those that
    /// differ: both ways, or only the peer's copies with `Direction::Push`.
    pub async fn sync_partition(
        &self,
        peer: &Member,
        p: u32,
        tally: &mut Tally,
        direction: Direction,
    ) -> Result<(), String> {
        let forest = self.s.local.forest();
        let q = forest.partitions();
        let request = pb::TreeLeavesRequest {
            partitions: q,
            partition: p,
        };
        let theirs = self
            .s
            .peers
            .call(
                &peer.address,
                self.s.timeout,
                request,
                |mut c, r| async move { c.tree_leaves(r).await },
            )
            .await?
            .leaves;
        let ours = forest.partition_leaves(p);
        // Keys of several leaves are listed at once, and repaired together across leaves: a
        // replica that missed many writes has one or two of them under each of many leaves.
        let listed = futures::stream::iter(differing_leaves(p, &ours, &theirs)?)
            .map(|leaf| self.differing_keys(peer, p, leaf))
            .buffer_unordered(LEAVES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut keys = Vec::new();
        for leaf in listed {
            let (differing, compared) = leaf?;
            tally.compared += compared;
            keys.extend(differing);
        }
        let repaired = futures::stream::iter(keys)
            .map(|key| self.repair(peer, key, direction))
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        for r in repaired {
            r?;
            tally.repaired += 1;
            self.s.metrics.anti_entropy.keys_repaired.inc();
        }
        Ok(())
    }

    /// The keys under one leaf whose digests differ between this node and the peer, or that
    /// only one of them holds, and how many keys were compared.
    async fn differing_keys(
        &self,
        peer: &Member,
        p: u32,
        leaf: u32,
    ) -> Result<(Vec<Bytes>, u64), String> {
        let forest = self.s.local.forest();
        let q = forest.partitions();
        let (first, last) = forest.leaf_range(p, leaf);
        let mut theirs: BTreeMap<Bytes, u64> = BTreeMap::new();
        let mut after = Bytes::new();
        loop {
            let request = pb::LeafKeysRequest {
                partitions: q,
                partition: p,
                leaf,
                after: after.clone(),
                limit: MAX_LEAF_KEYS as u32,
            };
            let page = self
                .s
                .peers
                .call(
                    &peer.address,
                    self.s.timeout,
                    request,
                    |mut c, r| async move { c.leaf_keys(r).await },
                )
                .await?;
            match take_leaf_keys(&mut theirs, &page, (first, last), &after)? {
                Some(next) => after = next,
                None => break,
            }
        }
        let mut ours: BTreeMap<Bytes, u64> = BTreeMap::new();
        let mut after: Vec<u8> = Vec::new();
        loop {
            let (page, more) = self
                .s
                .local
                .key_digests(first, last, &after, MAX_LEAF_KEYS)
                .map_err(|e| e.to_string())?;
            if let (true, Some((k, _))) = (more, page.last()) {
                after = crate::storage::storage_key(k);
            }
            ours.extend(page);
            if !more {
                break;
            }
        }
        Ok(compare_keys(&ours, &theirs))
    }

    /// Makes this node and the peer hold the merge of both their states of `key` (with
    /// `Direction::Push`: makes the peer hold this node's state merged into its own).
    async fn repair(&self, peer: &Member, key: Bytes, direction: Direction) -> Result<(), String> {
        if direction == Direction::Push {
            let Some(ours) = self
                .s
                .local
                .read(key.clone())
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            return self
                .s
                .peers
                .merge(&peer.address, &key, &ours, true, self.s.timeout)
                .await;
        }
        let reply = self
            .s
            .peers
            .read(&peer.address, key.clone(), false, self.s.timeout)
            .await?;
        let theirs = reply
            .state
            .map(|s| VersionedState::from_proto(&s))
            .transpose()
            .map_err(|e| format!("the peer sent a bad state: {e}"))?;
        let merged = match &theirs {
            Some(state) => self
                .s
                .local
                .merge(key.clone(), state.clone(), false)
                .await
                .map_err(|e| e.to_string())?,
            None => match self
                .s
                .local
                .read(key.clone())
                .await
                .map_err(|e| e.to_string())?
            {
                Some(state) => state,
                None => return Ok(()),
            },
        };
        if theirs.as_ref().is_none_or(|t| !t.descends(&merged)) {
            self.s
                .peers
                .merge(&peer.address, &key, &merged, false, self.s.timeout)
                .await?;
        }
        Ok(())
    }
}
