//! This node's replica of the keys it holds: the read-modify-write steps of paper 4.4 done
//! atomically per key against local storage.
//!
//! A coordinator's write ([`LocalReplica::coordinate`]) and a merge of another replica's state
//! ([`LocalReplica::merge`]) both read the key's state, change it and write it back under a
//! per-key lock (striped), so concurrent writes to one key never lose each other.
//!
//! Storage calls run on the async worker that handles the request: a RocksDB point read or an
//! unsynced write costs microseconds (memtable, block cache, a write to the log in the page
//! cache), less than the two thread switches a hand-off to a blocking thread costs. Only
//! writes that wait for an fsync go to a blocking thread.
//!
//! Every process start is a new incarnation with a new random actor, and its dots come from one
//! node-wide counter: whatever the storage lost (an unsynced log tail after a power cut, a data
//! directory restored from a backup), this node never issues a version it issued before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use dynamokv_common::{
    Actor, CausalContext, HistoryLimits, UpdateOutcome, VersionedState, WriteId, key_position,
};

use crate::merkle::{self, MerkleForest};
use crate::metrics::Metrics;
use crate::storage::{self, GroupCommit, Space, Storage, StorageError};

const LOCK_STRIPES: usize = 1024;
const META_NODE_ID: &str = "node_id";
const META_INCARNATIONS: &str = "incarnations";

/// Limits on how big one key may grow through blind writes (see `LimitsConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiblingLimits {
    pub max_siblings: usize,
    pub warn_siblings: usize,
    pub max_object_bytes: usize,
    pub warn_object_bytes: usize,
}

/// Why a coordinator's write was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The write's context names an event of this node's actor that it never issued: no read
    /// could have seen it. Nothing was written (and the node's counter did not move).
    #[error("the context names a version this node never issued")]
    ContextNotIssued,
    /// The write would grow a key past its sibling limits; nothing was written.
    #[error(
        "nothing was written: the key holds {siblings} sibling(s) with {} of values, and this write would take it past the limit of {limit}. Read the key and resolve its siblings: write the resolved value with the read's context (a write that supersedes siblings is always accepted)",
        human_bytes(*.bytes)
    )]
    SiblingLimit {
        siblings: usize,
        bytes: usize,
        limit: String,
    },
}

/// This node's local replica.
#[derive(Debug)]
pub struct LocalReplica {
    store: Arc<dyn Storage>,
    actor: Actor,
    incarnation: u64,
    /// The next counter this incarnation may issue, for any key.
    next_counter: AtomicU64,
    stripes: Vec<Mutex<()>>,
    history: HistoryLimits,
    siblings: SiblingLimits,
    metrics: Arc<Metrics>,
    group_commit: GroupCommit,
    /// Merkle trees of the data (paper 4.7), updated under the key's lock by every write.
    forest: MerkleForest,
}

/// Keys with their states, and the storage key to continue from (`None`: the end).
pub type StatesPage = (Vec<(Bytes, VersionedState)>, Option<Vec<u8>>);

/// Keys scanned per storage read when walking the data (tree rebuild, leaf listings).
const SCAN_PAGE: usize = 1024;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl LocalReplica {
    /// Opens the replica on `store` as a new incarnation with a fresh actor, refusing a store
    /// that belongs to another node id, and rebuilds the Merkle trees of the ring's
    /// `partitions` partitions from what the store holds.
    pub fn open(
        store: Arc<dyn Storage>,
        node_id: &str,
        partitions: u32,
        history: HistoryLimits,
        siblings: SiblingLimits,
        metrics: Arc<Metrics>,
    ) -> Result<LocalReplica, StorageError> {
        match store.get_meta(META_NODE_ID)? {
            Some(found) if found != node_id.as_bytes() => {
                return Err(StorageError::WrongNode {
                    dir: format!("{store:?}"),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: node_id.to_string(),
                });
            }
            Some(_) => {}
            None => store.put_meta(META_NODE_ID, node_id.as_bytes())?,
        }
        // Counted for operators only; uniqueness comes from the random actor, which must not
        // depend on anything storage could have rolled back.
        let incarnation = match store.get_meta(META_INCARNATIONS)? {
            Some(raw) => <[u8; 8]>::try_from(raw.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("incarnation count".into()))?,
            None => 0,
        } + 1;
        store.put_meta(META_INCARNATIONS, &incarnation.to_be_bytes())?;
        let started = std::time::Instant::now();
        let forest = MerkleForest::new(partitions);
        let mut keys = 0u64;
        let mut from = Vec::new();
        loop {
            let page = store.scan(Space::Data, &from, None, SCAN_PAGE)?;
            for (k, v) in &page {
                let key = storage::user_key(k);
                let state = match storage::decode_state(v) {
                    Ok(state) => state,
                    Err(e) => {
                        // One bad record never stops a node: it is moved aside, the key counts
                        // as absent here (not in the Merkle trees), and anti-entropy or a read
                        // repair brings it back from its replicas.
                        set_aside(store.as_ref(), &metrics, k, v, &e)?;
                        continue;
                    }
                };
                forest.add(key, merkle::state_digest(key, &state));
                if state.is_deleted() {
                    // Writes index their tombstones; a crash between the two writes is mended
                    // here.
                    store.put_in(Space::Tombstones, k, &[])?;
                }
                keys += 1;
            }
            match page.last() {
                Some((k, _)) if page.len() == SCAN_PAGE => from = after(k),
                _ => break,
            }
        }
        tracing::info!(keys, took = ?started.elapsed(), "Merkle trees rebuilt from storage");
        Ok(LocalReplica {
            forest,
            store,
            actor: Actor(rand::random::<u64>()),
            incarnation,
            next_counter: AtomicU64::new(1),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            history,
            siblings,
            group_commit: GroupCommit::new(
                metrics.wal_syncs.clone(),
                metrics.synced_writes.clone(),
            ),
            metrics,
        })
    }

    /// The actor this incarnation writes versions as.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// How many times this data directory has been opened, this time included.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// How many version-vector entries were dropped by truncation since start.
    pub fn truncations(&self) -> u64 {
        self.metrics.truncations.get()
    }

    /// How many retired write ids were dropped for the per-key cap since start.
    pub fn retired_evicted(&self) -> u64 {
        self.metrics.retired_evicted.get()
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        &self.stripes[(key_position(key) % LOCK_STRIPES as u128) as usize]
    }

    /// Runs `op` on `key`; if it fails on a stored record of the key that does not decode,
    /// sets the record aside ([`quarantine`](Self::quarantine)) and runs `op` once more, the
    /// key then absent here. Called with no stripe held.
    fn healing<T, E>(
        &self,
        key: &[u8],
        is_corrupt: impl Fn(&E) -> bool,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        match op() {
            Err(e) if is_corrupt(&e) => match self.quarantine(key) {
                Ok(true) => op(),
                Ok(false) => Err(e),
                Err(q) => {
                    tracing::error!(error = %q, "could not set a corrupt record aside");
                    Err(e)
                }
            },
            done => done,
        }
    }

    /// Moves `key`'s stored record aside if it does not decode, then recomputes the Merkle
    /// leaf holding the key from what storage holds (the record's digest, added when it was
    /// written, cannot be taken out any other way). Holds every stripe meanwhile, so that no
    /// write is between its storage write and its Merkle update. Returns whether it moved it.
    pub fn quarantine(&self, key: &[u8]) -> Result<bool, StorageError> {
        let _all: Vec<_> = self
            .stripes
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let sk = storage::storage_key(key);
        let Some(raw) = self.store.get_in(Space::Data, &sk)? else {
            return Ok(false);
        };
        let Err(e) = storage::decode_state(&raw) else {
            return Ok(false);
        };
        set_aside(self.store.as_ref(), &self.metrics, &sk, &raw, &e)?;
        // The leaf again, from storage; other undecodable records under it go aside too.
        let (p, leaf) = self.forest.leaf_of_key(key);
        let (first, last) = self.forest.leaf_range(p, leaf);
        let end = last.checked_add(1).map(storage::position_start);
        let mut from = storage::position_start(first).to_vec();
        let mut digest = 0u64;
        loop {
            let page =
                self.store
                    .scan(Space::Data, &from, end.as_ref().map(|e| &e[..]), SCAN_PAGE)?;
            for (k, v) in &page {
                match storage::decode_state(v) {
                    Ok(state) => digest ^= merkle::state_digest(storage::user_key(k), &state),
                    Err(e) => set_aside(self.store.as_ref(), &self.metrics, k, v, &e)?,
                }
            }
            match page.last() {
                Some((k, _)) if page.len() == SCAN_PAGE => from = after(k),
                _ => break,
            }
        }
        self.forest.set_leaf_of(key, digest);
        Ok(true)
    }

    /// How many bytes this replica stores for `key` (0: none), read without copying them.
    pub fn stored_size(&self, key: &[u8]) -> usize {
        self.store
            .len_in(Space::Data, &storage::storage_key(key))
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Reads this replica's state of `key`. A large state (1 MiB or more) is read and decoded
    /// on a blocking thread, off the request threads: copying megabytes there would hold up
    /// every other request of the node.
    pub async fn read(
        self: &Arc<Self>,
        key: Bytes,
    ) -> Result<Option<VersionedState>, StorageError> {
        if self.stored_size(&key) < crate::load_shedding::LARGE_STATE_BYTES {
            return self.healing(&key, StorageError::is_corrupt, || {
                storage::read_state(self.store.as_ref(), &key)
            });
        }
        let this = Arc::clone(self);
        durably(move || {
            this.healing(&key, StorageError::is_corrupt, || {
                storage::read_state(this.store.as_ref(), &key)
            })
        })
        .await
    }

    /// A coordinator's write: a new version (or a tombstone, `value == None`) superseding what
    /// `context` saw, under a fresh dot of this incarnation, unless the write (`write_id`) is
    /// already here. Returns the key's whole new state, which the coordinator then sends to the
    /// other replicas, and what happened to the write. With `sync`, returns only once the
    /// key's state is in the synced write-ahead log.
    pub async fn coordinate(
        self: &Arc<Self>,
        key: Bytes,
        context: CausalContext,
        write_id: WriteId,
        value: Option<Bytes>,
        sync: bool,
    ) -> Result<(VersionedState, UpdateOutcome), WriteError> {
        let corrupt = |e: &WriteError| matches!(e, WriteError::Storage(s) if s.is_corrupt());
        if !sync {
            return self.healing(&key, corrupt, || {
                self.apply_update(&key, &context, write_id, value.clone())
            });
        }
        let this = Arc::clone(self);
        durably(move || {
            let done = this.healing(&key, corrupt, || {
                this.apply_update(&key, &context, write_id, value.clone())
            })?;
            // Outside the key's lock: other writes of the key may share the fsync. An unchanged
            // state (a retry finding its write) was written earlier, perhaps unsynced: sync too.
            this.group_commit.sync(this.store.as_ref())?;
            Ok(done)
        })
        .await
    }

    /// The read-modify-write of a coordinator's write, under the key's lock.
    fn apply_update(
        &self,
        key: &[u8],
        context: &CausalContext,
        write_id: WriteId,
        value: Option<Bytes>,
    ) -> Result<(VersionedState, UpdateOutcome), WriteError> {
        // Contexts are signed by the nodes that issue them, so a client cannot name events
        // that never happened; but whatever a context says, this node's counter moves only by
        // the events it issues itself: a context naming one of this actor's events that it
        // never issued is refused before anything changes.
        if context.clock.max_counter(self.actor) >= self.next_counter.load(Ordering::Relaxed) {
            return Err(WriteError::ContextNotIssued);
        }
        let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
        let stored = storage::read_state(self.store.as_ref(), key)?;
        let existed = stored.is_some();
        let current = stored.unwrap_or_default();
        let mut state = current.clone();
        let floor = self.next_counter.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let outcome = state.update(context, write_id, value, self.actor, floor, now);
        if let UpdateOutcome::Applied(dot) = outcome {
            // The dot is `floor` unless the key's state holds a later event of this actor,
            // which only this incarnation's own writes (counted by the sequence) can be.
            self.next_counter
                .fetch_max(dot.counter + 1, Ordering::Relaxed);
            self.check_growth(key, &current, &state)?;
        }
        self.truncate(&mut state, now);
        if state != current {
            self.store_state(key, existed.then_some(&current), &state)?;
        }
        Ok((state, outcome))
    }

    /// Refuses a write that grows a key past its limits; warns past the warning thresholds.
    fn check_growth(
        &self,
        key: &[u8],
        before: &VersionedState,
        after: &VersionedState,
    ) -> Result<(), WriteError> {
        let l = &self.siblings;
        let (count, bytes) = (after.live_count(), after.value_bytes());
        let over = if count > l.max_siblings && count > before.live_count() {
            Some(format!("{} siblings", l.max_siblings))
        } else if bytes > l.max_object_bytes && bytes > before.value_bytes() {
            Some(format!("{} of values", human_bytes(l.max_object_bytes)))
        } else {
            None
        };
        if let Some(limit) = over {
            return Err(WriteError::SiblingLimit {
                siblings: before.live_count(),
                bytes: before.value_bytes(),
                limit,
            });
        }
        if count >= l.warn_siblings || bytes >= l.warn_object_bytes {
            tracing::warn!(
                key = %String::from_utf8_lossy(key),
                siblings = count,
                bytes,
                "key is growing large: read it and resolve its siblings"
            );
        }
        Ok(())
    }

    /// Merges another replica's state of `key` into this one's, writing only if it changes
    /// anything. Returns the merged state; with `sync`, once it is in the synced write-ahead log.
    pub async fn merge(
        self: &Arc<Self>,
        key: Bytes,
        incoming: VersionedState,
        sync: bool,
    ) -> Result<VersionedState, StorageError> {
        if !sync {
            return self.healing(&key, StorageError::is_corrupt, || {
                self.apply_merge(&key, &incoming)
            });
        }
        let this = Arc::clone(self);
        durably(move || {
            let state = this.healing(&key, StorageError::is_corrupt, || {
                this.apply_merge(&key, &incoming)
            })?;
            this.group_commit.sync(this.store.as_ref())?;
            Ok(state)
        })
        .await
    }

    /// The read-modify-write of a merge, under the key's lock.
    fn apply_merge(
        &self,
        key: &[u8],
        incoming: &VersionedState,
    ) -> Result<VersionedState, StorageError> {
        let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
        let current = storage::read_state(self.store.as_ref(), key)?;
        let mut state = current.clone().unwrap_or_default();
        let now = now_ms();
        state.merge(incoming, now);
        self.truncate(&mut state, now);
        if current.as_ref() != Some(&state) {
            self.store_state(key, current.as_ref(), &state)?;
        }
        Ok(state)
    }

    /// Writes a key's new state (it was `before`), keeping the Merkle trees and the tombstone
    /// index in step; under the key's lock.
    fn store_state(
        &self,
        key: &[u8],
        before: Option<&VersionedState>,
        after: &VersionedState,
    ) -> Result<(), StorageError> {
        // Never store what this node could not read back.
        if !after.clock().counters_in_range() {
            return Err(StorageError::Corrupt(
                "refused to store a state naming a counter no writer issues".into(),
            ));
        }
        storage::write_state(self.store.as_ref(), key, after)?;
        self.forest.update(key, before, Some(after));
        let was_deleted = before.is_some_and(VersionedState::is_deleted);
        if after.is_deleted() != was_deleted {
            let sk = storage::storage_key(key);
            if after.is_deleted() {
                self.store.put_in(Space::Tombstones, &sk, &[])?;
            } else {
                self.store.delete_in(Space::Tombstones, &sk)?;
            }
        }
        Ok(())
    }

    /// This node's Merkle trees.
    pub fn forest(&self) -> &MerkleForest {
        &self.forest
    }

    /// The keys stored from ring position `first` to `last` (inclusive) with their state
    /// digests, in storage order, at most `limit`, starting after storage key `after` (empty:
    /// from `first`; a key before `first` counts as empty). The second value tells whether more
    /// follow.
    pub fn key_digests(
        &self,
        first: u128,
        last: u128,
        after: &[u8],
        limit: usize,
    ) -> Result<(Vec<(Bytes, u64)>, bool), StorageError> {
        let start = storage::position_start(first).to_vec();
        let start = if after.is_empty() {
            start
        } else {
            self::after(after).max(start)
        };
        let end = last.checked_add(1).map(storage::position_start);
        let page = self
            .store
            .scan(Space::Data, &start, end.as_ref().map(|e| &e[..]), limit)?;
        let more = page.len() == limit;
        let mut out = Vec::with_capacity(page.len());
        let mut corrupt = Vec::new();
        for (k, v) in page {
            let key = Bytes::copy_from_slice(storage::user_key(&k));
            match storage::decode_state(&v) {
                Ok(state) => out.push((key.clone(), merkle::state_digest(&key, &state))),
                // Listed as absent: the peer's copy comes back in its stead.
                Err(_) => corrupt.push(key),
            }
        }
        for key in corrupt {
            self.quarantine(&key)?;
        }
        Ok((out, more))
    }

    /// How many keys, and how many bytes of stored state, this replica holds from ring
    /// position `first` to `last` (inclusive).
    pub fn range_size(&self, first: u128, last: u128) -> Result<(u64, u64), StorageError> {
        let end = last.checked_add(1).map(storage::position_start);
        let mut from = storage::position_start(first).to_vec();
        let (mut keys, mut bytes) = (0u64, 0u64);
        loop {
            let page =
                self.store
                    .scan(Space::Data, &from, end.as_ref().map(|e| &e[..]), SCAN_PAGE)?;
            for (k, v) in &page {
                keys += 1;
                bytes += (k.len() + v.len()) as u64;
            }
            match page.last() {
                Some((k, _)) if page.len() == SCAN_PAGE => from = after(k),
                _ => return Ok((keys, bytes)),
            }
        }
    }

    /// Up to `limit` keys of the tombstone index from storage key `from` on, with their
    /// states, and the storage key to continue from (`None`: the end). Entries whose key no
    /// longer holds only tombstones (written again since) are dropped from the index.
    pub fn tombstones_from(&self, from: &[u8], limit: usize) -> Result<StatesPage, StorageError> {
        let page = self.store.scan(Space::Tombstones, from, None, limit)?;
        let next = match page.last() {
            Some((k, _)) if page.len() == limit => Some(after(k)),
            _ => None,
        };
        let mut out = Vec::with_capacity(page.len());
        for (sk, _) in page {
            let key = storage::user_key(&sk);
            let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
            match storage::read_state(self.store.as_ref(), key)? {
                Some(state) if state.is_deleted() => {
                    out.push((Bytes::copy_from_slice(key), state));
                }
                _ => self.store.delete_in(Space::Tombstones, &sk)?,
            }
        }
        Ok((out, next))
    }

    /// Removes `key` if this replica's state of it is still the tombstone `digest` names (or it
    /// holds nothing) and no hint for the key waits here. Returns whether the key is gone.
    pub fn reap(&self, key: &[u8], digest: u64) -> Result<bool, StorageError> {
        self.remove_if_unchanged(key, digest, true)
    }

    /// Removes `key` if this replica's state of it still has the state digest `digest` (or it
    /// holds nothing): a partition this node no longer replicates is dropped key by key this
    /// way once its new replicas hold it, so a write that arrived since is never dropped.
    pub fn drop_if_unchanged(&self, key: &[u8], digest: u64) -> Result<bool, StorageError> {
        self.remove_if_unchanged(key, digest, false)
    }

    fn remove_if_unchanged(
        &self,
        key: &[u8],
        digest: u64,
        reaping: bool,
    ) -> Result<bool, StorageError> {
        let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
        if reaping && !self.hints_of(key)?.is_empty() {
            return Ok(false);
        }
        let Some(current) = storage::read_state(self.store.as_ref(), key)? else {
            return Ok(true);
        };
        if (reaping && !current.is_deleted()) || merkle::state_digest(key, &current) != digest {
            return Ok(false);
        }
        let sk = storage::storage_key(key);
        self.store.delete_in(Space::Data, &sk)?;
        self.store.delete_in(Space::Tombstones, &sk)?;
        self.forest.update(key, Some(&current), None);
        Ok(true)
    }

    /// Hinted handoff (paper 4.6): keeps `state` for the replica `owner`, merged with any hint
    /// for it already here. With `sync`, returns once the hint is in the synced log.
    pub async fn store_hint(
        self: &Arc<Self>,
        key: Bytes,
        owner: String,
        state: VersionedState,
        sync: bool,
    ) -> Result<(), StorageError> {
        if !sync {
            return self.apply_hint(&key, &owner, &state);
        }
        let this = Arc::clone(self);
        durably(move || {
            this.apply_hint(&key, &owner, &state)?;
            this.group_commit.sync(this.store.as_ref())
        })
        .await
    }

    fn apply_hint(
        &self,
        key: &[u8],
        owner: &str,
        incoming: &VersionedState,
    ) -> Result<(), StorageError> {
        let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
        let hk = storage::hint_key(key, owner);
        let now = now_ms();
        let (created, mut state) = match self.store.get_in(Space::Hints, &hk)? {
            Some(raw) => storage::decode_hint(&raw)?,
            None => (now, VersionedState::new()),
        };
        state.merge(incoming, now);
        self.truncate(&mut state, now);
        self.store
            .put_in(Space::Hints, &hk, &storage::encode_hint(created, &state))
    }

    /// The hints held here for `key`, whatever their owner: (owner, state).
    fn hints_of(&self, key: &[u8]) -> Result<Vec<(String, VersionedState)>, StorageError> {
        let prefix = storage::hint_prefix(key);
        // Owner ids are UTF-8, which never holds the byte 0xff: every hint key of `key` sorts
        // below this bound, and the scan stops there without reading deleted hints beyond it.
        let mut end = prefix.clone();
        end.push(0xff);
        let mut out = Vec::new();
        for (k, v) in self
            .store
            .scan(Space::Hints, &prefix, Some(&end), usize::MAX)?
        {
            let (_, owner) = storage::parse_hint_key(&k)?;
            out.push((owner.to_string(), storage::decode_hint(&v)?.1));
        }
        Ok(out)
    }

    /// This replica's state of `key` merged with every hint held here for it: what a fallback
    /// answers to a sloppy-quorum read.
    pub fn read_with_hints(&self, key: &[u8]) -> Result<Option<VersionedState>, StorageError> {
        let mut state = self.healing(key, StorageError::is_corrupt, || {
            storage::read_state(self.store.as_ref(), key)
        })?;
        let now = now_ms();
        for (_, hint) in self.hints_of(key)? {
            state
                .get_or_insert_with(VersionedState::new)
                .merge(&hint, now);
        }
        Ok(state)
    }

    /// Up to `limit` hints from hint key `from` on: (hint key, raw record).
    pub fn hints_from(&self, from: &[u8], limit: usize) -> Result<storage::Entries, StorageError> {
        self.store.scan(Space::Hints, from, None, limit)
    }

    /// Deletes a delivered hint, unless it changed since it was read as `raw` (a newer write
    /// for the owner merged into it: that one is delivered next time).
    pub fn forget_hint(&self, hint_key: &[u8], raw: &[u8]) -> Result<bool, StorageError> {
        let (key, _) = storage::parse_hint_key(hint_key)?;
        let _guard = self.stripe(key).lock().unwrap_or_else(|p| p.into_inner());
        if self.store.get_in(Space::Hints, hint_key)?.as_deref() != Some(raw) {
            return Ok(false);
        }
        self.store.delete_in(Space::Hints, hint_key)?;
        Ok(true)
    }

    /// Applies the history limits to a state, as every replica does before storing one.
    pub fn truncate(&self, state: &mut VersionedState, now: u64) {
        let t = state.truncate(&self.history, now);
        if t.clock_entries > 0 {
            self.metrics.truncations.inc_by(t.clock_entries as u64);
            tracing::debug!(
                dropped = t.clock_entries,
                "version vector truncated (paper 4.4)"
            );
        }
        if t.retired_evicted > 0 {
            self.metrics
                .retired_evicted
                .inc_by(t.retired_evicted as u64);
        }
    }

    /// Flushes storage; called at shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.store.flush()
    }
}

/// Moves the stored record `raw` of storage key `sk`, which does not decode (`why`), from the
/// data to the quarantine space, where an operator can look at it; counted and logged with
/// its key.
fn set_aside(
    store: &dyn Storage,
    metrics: &Metrics,
    sk: &[u8],
    raw: &[u8],
    why: &StorageError,
) -> Result<(), StorageError> {
    store.put_in(Space::Quarantine, sk, raw)?;
    store.delete_in(Space::Data, sk)?;
    store.delete_in(Space::Tombstones, sk)?;
    metrics.quarantined.inc();
    tracing::error!(
        key = %String::from_utf8_lossy(storage::user_key(sk)).escape_debug(),
        error = %why,
        "a stored record does not decode: set aside in the quarantine space; the key is restored from its replicas"
    );
    Ok(())
}

/// The smallest key after `key` in byte order.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// `n` bytes in the largest binary unit that keeps it at least 1 (e.g. "32.0 MiB").
fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Runs a synced write on a blocking thread: it waits for an fsync (milliseconds), which must
/// not hold up the async runtime's workers.
async fn durably<T: Send + 'static, E: From<StorageError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Engine(format!("storage task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn limits() -> SiblingLimits {
        SiblingLimits {
            max_siblings: 100,
            warn_siblings: 25,
            max_object_bytes: 1 << 20,
            warn_object_bytes: 1 << 19,
        }
    }

    /// A blind write (empty context) of `value` (`None`: a delete) under write id `id`.
    async fn blind(
        replica: &Arc<LocalReplica>,
        key: &Bytes,
        id: u128,
        value: Option<&'static [u8]>,
    ) -> Result<(VersionedState, UpdateOutcome), WriteError> {
        replica
            .coordinate(
                key.clone(),
                CausalContext::new(),
                WriteId(id),
                value.map(Bytes::from_static),
                false,
            )
            .await
    }

    fn open(store: &Arc<dyn Storage>, node: &str) -> Result<LocalReplica, StorageError> {
        LocalReplica::open(
            Arc::clone(store),
            node,
            64,
            HistoryLimits::default(),
            limits(),
            Arc::default(),
        )
    }

    #[tokio::test]
    async fn concurrent_blind_writes_to_one_key_all_survive_as_siblings() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(open(&store, "n").unwrap());
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let r = Arc::clone(&replica);
            tasks.push(tokio::spawn(async move {
                r.coordinate(
                    Bytes::from_static(b"k"),
                    CausalContext::new(),
                    WriteId(u128::from(i)),
                    Some(Bytes::from(i.to_string())),
                    false,
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let state = replica
            .read(Bytes::from_static(b"k"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.live_values().len(), 50);
    }

    #[tokio::test]
    async fn every_start_is_a_new_actor_and_the_store_is_bound_to_its_node() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let a = open(&store, "n1").unwrap();
        let b = open(&store, "n1").unwrap();
        assert_ne!(a.actor(), b.actor());
        assert_eq!((a.incarnation(), b.incarnation()), (1, 2));
        let err = open(&store, "n2").unwrap_err();
        assert!(err.to_string().contains("belongs to node"));
    }

    #[tokio::test]
    async fn blind_writes_past_the_limits_are_refused_and_resolving_writes_are_not() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let l = SiblingLimits {
            max_siblings: 3,
            warn_siblings: 2,
            max_object_bytes: 1 << 20,
            warn_object_bytes: 1 << 20,
        };
        let replica = Arc::new(
            LocalReplica::open(store, "n", 64, HistoryLimits::default(), l, Arc::default())
                .unwrap(),
        );
        let key = Bytes::from_static(b"k");
        for i in 0..3u128 {
            blind(&replica, &key, i, Some(b"v")).await.unwrap();
        }
        let refused = blind(&replica, &key, 9, Some(b"v")).await.unwrap_err();
        assert!(
            matches!(refused, WriteError::SiblingLimit { siblings: 3, .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("3 siblings"), "{refused}");
        assert_eq!(human_bytes(33_554_432), "32.0 MiB");
        assert_eq!(human_bytes(100), "100 bytes");
        let state = replica.read(key.clone()).await.unwrap().unwrap();
        assert_eq!(state.live_count(), 3, "a refused write changes nothing");
        let ctx = CausalContext::of_read(&state);
        let (state, _) = replica
            .coordinate(
                key,
                ctx,
                WriteId(10),
                Some(Bytes::from_static(b"resolved")),
                false,
            )
            .await
            .unwrap();
        assert_eq!(state.live_values(), vec![Bytes::from_static(b"resolved")]);
    }

    #[tokio::test]
    async fn hints_merge_per_owner_are_read_by_fallback_reads_and_are_forgotten_only_unchanged() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(open(&store, "fallback").unwrap());
        let key = Bytes::from_static(b"k");
        let write = |id: u128, v: &'static [u8]| {
            let mut s = VersionedState::new();
            s.update(
                &CausalContext::new(),
                WriteId(id),
                Some(Bytes::from_static(v)),
                Actor(id as u64),
                1,
                5,
            );
            s
        };
        replica
            .store_hint(key.clone(), "a".into(), write(1, b"x"), false)
            .await
            .unwrap();
        replica
            .store_hint(key.clone(), "a".into(), write(2, b"y"), true)
            .await
            .unwrap();
        replica
            .store_hint(key.clone(), "b".into(), write(3, b"z"), false)
            .await
            .unwrap();
        assert_eq!(
            replica.read(key.clone()).await.unwrap(),
            None,
            "hints are not data"
        );
        let seen = replica.read_with_hints(&key).unwrap().unwrap();
        assert_eq!(seen.live_count(), 3);
        let hints = replica.hints_from(&[], 100).unwrap();
        assert_eq!(hints.len(), 2, "one hint per owner and key");
        let (hint_key, raw) = &hints[0];
        // A write that joined the hint after it was read keeps it.
        replica
            .store_hint(key.clone(), "a".into(), write(4, b"w"), false)
            .await
            .unwrap();
        assert!(!replica.forget_hint(hint_key, raw).unwrap());
        let fresh = replica.hints_from(&[], 100).unwrap();
        assert!(replica.forget_hint(&fresh[0].0, &fresh[0].1).unwrap());
        assert_eq!(replica.hints_from(&[], 100).unwrap().len(), 1);
        // Hints survive a reopen of the store.
        let reopened = open(&store, "fallback").unwrap();
        assert_eq!(reopened.hints_from(&[], 100).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn only_the_exact_tombstone_is_reaped_and_never_while_a_hint_for_it_waits() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(open(&store, "n").unwrap());
        let key = Bytes::from_static(b"k");
        let (live, _) = blind(&replica, &key, 1, Some(b"v")).await.unwrap();
        let digest = merkle::state_digest(&key, &live);
        assert!(
            !replica.reap(&key, digest).unwrap(),
            "a live value is never reaped"
        );
        let (dead, _) = replica
            .coordinate(
                key.clone(),
                CausalContext::of_read(&live),
                WriteId(2),
                None,
                false,
            )
            .await
            .unwrap();
        let digest = merkle::state_digest(&key, &dead);
        let indexed = |r: &LocalReplica| r.tombstones_from(&[], 10).unwrap().0;
        assert_eq!(
            indexed(&replica).len(),
            1,
            "the delete is indexed for reaping"
        );
        assert!(
            !replica.reap(&key, digest ^ 1).unwrap(),
            "another tombstone's digest"
        );
        replica
            .store_hint(key.clone(), "other".into(), live.clone(), false)
            .await
            .unwrap();
        assert!(
            !replica.reap(&key, digest).unwrap(),
            "a hint for the key waits here"
        );
        let hints = replica.hints_from(&[], 10).unwrap();
        replica.forget_hint(&hints[0].0, &hints[0].1).unwrap();
        // An index lost in a crash is mended when the store is opened.
        store
            .delete_in(Space::Tombstones, &storage::storage_key(&key))
            .unwrap();
        assert!(indexed(&replica).is_empty());
        assert_eq!(indexed(&open(&store, "n").unwrap()).len(), 1);
        assert!(replica.reap(&key, digest).unwrap());
        assert_eq!(replica.read(key.clone()).await.unwrap(), None);
        assert!(indexed(&replica).is_empty(), "reaped keys leave the index");
        assert!(
            replica.reap(&key, digest).unwrap(),
            "nothing left is reaped already"
        );
        let empty = MerkleForest::new(64);
        let p = replica.forest().leaf_of_key(&key).0;
        assert_eq!(replica.forest().partition_root(p), empty.partition_root(p));
    }

    #[tokio::test]
    async fn a_key_written_again_after_its_delete_leaves_the_tombstone_index() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(open(&store, "n").unwrap());
        let key = Bytes::from_static(b"k");
        let (dead, _) = blind(&replica, &key, 1, None).await.unwrap();
        assert_eq!(replica.tombstones_from(&[], 10).unwrap().0.len(), 1);
        replica
            .coordinate(
                key.clone(),
                CausalContext::of_read(&dead),
                WriteId(2),
                Some(Bytes::from_static(b"back")),
                false,
            )
            .await
            .unwrap();
        assert!(replica.tombstones_from(&[], 10).unwrap().0.is_empty());
        assert!(
            store
                .scan(Space::Tombstones, &[], None, 10)
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn trees_follow_every_write_and_equal_a_rebuild_from_storage() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(open(&store, "n").unwrap());
        let other_store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let other = Arc::new(open(&other_store, "m").unwrap());
        for i in 0..200u32 {
            let key = Bytes::from(format!("k{}", i % 70));
            let (state, _) = replica
                .coordinate(
                    key.clone(),
                    CausalContext::new(),
                    WriteId(u128::from(i)),
                    Some(Bytes::from(i.to_string())),
                    false,
                )
                .await
                .unwrap();
            other.merge(key, state, false).await.unwrap();
        }
        let rebuilt = open(&store, "n").unwrap();
        for p in 0..64 {
            let root = replica.forest().partition_root(p);
            assert_eq!(root, rebuilt.forest().partition_root(p), "partition {p}");
            assert_eq!(
                root,
                other.forest().partition_root(p),
                "partition {p} on the replica"
            );
        }
    }
}
