//! Hinted handoff (paper 4.6): delivering the hints this node holds for other replicas.
//!
//! A coordinator that cannot reach one of a key's top N replicas sends that replica's copy to
//! a fallback node with a hint naming it ([`dynamokv_common::sloppy_quorum`]). The fallback keeps hints in
//! their own column family ([`crate::storage::Space::Hints`]), durable across its restarts, and
//! this worker delivers them: every `handoff_interval_ms` it walks the hints, merges each into
//! its owner (synced: the owner's acknowledgement means the copy is on its disk) and deletes
//! the hint only then, and only if no newer write merged into it meanwhile. An owner that does
//! not answer is retried with backoff (from the interval up to [`MAX_BACKOFF`]), for as long as
//! it takes: hints are never dropped for age.
//!
//! Work goes in batches, each admitted by [`Admission`]: delivery pauses while foreground
//! requests are slow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::background::Shared;
use crate::replica::now_ms;
use crate::storage::{self, StorageError};

/// Longest wait between delivery attempts to an owner that does not answer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Hints read from storage at a time.
const PAGE: usize = 256;
/// Deliveries in flight at once (synced merges share fsyncs on the owner).
const IN_FLIGHT: usize = 32;

/// The hints held for one owner, as of the last walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub owner: String,
    pub hints: u64,
    /// When the oldest was first stored, in milliseconds since the epoch.
    pub oldest_ms: u64,
}

/// A stored hint on its way to its owner.
#[derive(Debug)]
struct Hint {
    /// The owner's address.
    address: String,
    /// The hint's storage key and record, as read.
    key: Vec<u8>,
    raw: Vec<u8>,
}

impl Hint {
    /// The user key and the state the hint holds.
    fn decode(&self) -> Result<(bytes::Bytes, dynamokv_common::VersionedState), String> {
        let (key, _) = storage::parse_hint_key(&self.key).map_err(|e| e.to_string())?;
        let (_, state) = storage::decode_hint(&self.raw).map_err(|e| e.to_string())?;
        Ok((bytes::Bytes::copy_from_slice(key), state))
    }
}

/// When an owner that did not answer is tried next.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Instant,
    wait: Duration,
    /// The failure detector had the owner down when delivery failed.
    owner_was_down: bool,
}

/// Hints by the owner they are for.
type ByOwner = BTreeMap<String, Vec<Hint>>;

/// The hint delivery worker.
#[derive(Debug)]
pub struct HintedHandoff {
    s: Shared,
    interval: Duration,
    backoff: Mutex<HashMap<String, Backoff>>,
    backlog: Mutex<Vec<Backlog>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HintedHandoff {
    pub fn new(s: Shared, interval: Duration) -> HintedHandoff {
        HintedHandoff {
            s,
            interval,
            backoff: Mutex::default(),
            backlog: Mutex::default(),
        }
    }

    /// The hint backlog per owner, as of the last walk.
    pub fn backlog(&self) -> Vec<Backlog> {
        lock(&self.backlog).clone()
    }

    /// Delivers hints until the node shuts down.
    pub async fn run(self: Arc<Self>) {
        // A first walk at once: hints kept over a restart show in the metrics straight away.
        loop {
            if !self.s.admission.admit("hinted_handoff").await {
                return;
            }
            if let Err(e) = self.deliver_all().await {
                tracing::warn!(error = %e, "hint delivery stopped by a storage error");
            }
            if !self.s.admission.sleep(self.interval).await {
                return;
            }
        }
    }

    /// One walk over every hint: delivers those whose owner is not backing off, and records
    /// what is left.
    async fn deliver_all(&self) -> Result<(), StorageError> {
        let mut left: BTreeMap<String, Backlog> = BTreeMap::new();
        let mut from = Vec::new();
        loop {
            let page = self.s.local.hints_from(&from, PAGE)?;
            let full = page.len() == PAGE;
            if let Some((k, _)) = page.last() {
                from = k.clone();
                from.push(0);
            }
            let (ready, orphans) = self.sort(page, &mut left);
            for (owner, hints) in ready {
                let delivered = self.deliver_to(&owner, hints).await;
                if let Some(b) = left.get_mut(&owner) {
                    b.hints -= delivered;
                }
            }
            for (owner, hint) in orphans {
                match self.rehome(&hint).await {
                    Ok(true) => {
                        self.s.metrics.hints.delivered.inc();
                        if let Some(b) = left.get_mut(&owner) {
                            b.hints -= 1;
                        }
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        tracing::debug!(%owner, %reason, "cannot hand a departed owner's hint to the key's replicas yet")
                    }
                }
            }
            if !full || !self.s.admission.admit("hinted_handoff").await {
                break;
            }
        }
        self.publish(left);
        Ok(())
    }

    /// Counts a page of hints into the backlog per owner, and returns those that may be
    /// delivered now, by owner, and those whose owner has left the cluster (or was removed),
    /// which go to the key's current replicas instead.
    fn sort(
        &self,
        page: crate::storage::Entries,
        backlog: &mut BTreeMap<String, Backlog>,
    ) -> (ByOwner, Vec<(String, Hint)>) {
        let view = self.s.membership.current();
        let mut ready: BTreeMap<String, Vec<Hint>> = BTreeMap::new();
        let mut orphans = Vec::new();
        for (key, raw) in page {
            let (owner, created) = match (storage::parse_hint_key(&key), storage::decode_hint(&raw))
            {
                (Ok((_, owner)), Ok((created, _))) => (owner.to_string(), created),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "a stored hint is unreadable: kept, not delivered");
                    continue;
                }
            };
            let b = backlog.entry(owner.clone()).or_insert(Backlog {
                owner: owner.clone(),
                hints: 0,
                oldest_ms: created,
            });
            b.hints += 1;
            b.oldest_ms = b.oldest_ms.min(created);
            // An owner still in the ring (or in the previous one, during a handover) gets its
            // hints; those of an owner that left or was removed go to the key's replicas now.
            let address = view
                .ring
                .member(&owner)
                .or_else(|| view.previous.as_ref().and_then(|(r, _)| r.member(&owner)))
                .filter(|_| !view.state.is_removed(&owner))
                .map(|m| m.address.clone());
            let Some(address) = address else {
                if view.joined() {
                    orphans.push((
                        owner,
                        Hint {
                            address: String::new(),
                            key,
                            raw,
                        },
                    ));
                }
                continue;
            };
            if self.ready(&owner, &address) {
                ready
                    .entry(owner)
                    .or_default()
                    .push(Hint { address, key, raw });
            }
        }
        (ready, orphans)
    }

    /// Hands a hint whose owner left the cluster to every current replica of its key (this
    /// node's own copy merged locally), then deletes it unless it changed meanwhile.
    async fn rehome(&self, hint: &Hint) -> Result<bool, String> {
        let (key, state) = hint.decode()?;
        let view = self.s.membership.current();
        let (replicas, _, _) = crate::coordinator::preference_list(&view, &key);
        for m in &replicas {
            if m.id == view.self_id {
                self.s
                    .local
                    .merge(key.clone(), state.clone(), true)
                    .await
                    .map_err(|e| e.to_string())?;
            } else {
                self.s
                    .peers
                    .merge(&m.address, &key, &state, true, self.s.timeout)
                    .await?;
            }
        }
        self.forget(hint)
    }

    /// Delivers `hints` to `owner`: one first, as a probe, and the rest together once it went
    /// through. Returns how many were delivered and deleted.
    async fn deliver_to(&self, owner: &str, mut hints: Vec<Hint>) -> u64 {
        let rest = hints.split_off(1);
        let Some(first) = hints.pop() else {
            return 0;
        };
        let mut results = vec![self.deliver(&first).await];
        if results[0].is_ok() {
            results.extend(
                futures::stream::iter(rest)
                    .map(|h| async move { self.deliver(&h).await })
                    .buffer_unordered(IN_FLIGHT)
                    .collect::<Vec<_>>()
                    .await,
            );
        }
        let mut delivered = 0;
        for result in results {
            match result {
                Ok(deleted) => {
                    self.answered(owner);
                    if deleted {
                        self.s.metrics.hints.delivered.inc();
                        delivered += 1;
                    }
                }
                Err(reason) => {
                    tracing::debug!(%owner, %reason, "hint delivery failed: backing off");
                    self.failed(owner, &first.address);
                }
            }
        }
        delivered
    }

    /// Records what a walk left: metrics and the backlog `admin status` shows.
    fn publish(&self, mut left: BTreeMap<String, Backlog>) {
        left.retain(|_, b| b.hints > 0);
        let queued: u64 = left.values().map(|b| b.hints).sum();
        let oldest = left.values().map(|b| b.oldest_ms).min();
        let hints = &self.s.metrics.hints;
        hints.queued.set(queued as i64);
        hints
            .oldest_age_seconds
            .set(oldest.map_or(0.0, |at| now_ms().saturating_sub(at) as f64 / 1000.0));
        *lock(&self.backlog) = left.into_values().collect();
    }

    /// Merges one hint into its owner, then deletes it unless it changed meanwhile.
    /// `Ok(false)`: delivered, but a newer write for the owner joined the hint; kept for the
    /// next walk.
    async fn deliver(&self, hint: &Hint) -> Result<bool, String> {
        let (key, state) = hint.decode()?;
        self.s
            .peers
            .merge(&hint.address, &key, &state, true, self.s.timeout)
            .await?;
        self.forget(hint)
    }

    /// Deletes a delivered hint unless it changed since it was read.
    fn forget(&self, hint: &Hint) -> Result<bool, String> {
        self.s
            .local
            .forget_hint(&hint.key, &hint.raw)
            .map_err(|e| e.to_string())
    }

    /// Whether delivery to `owner` (at `address`) may be tried now: its backoff has run out,
    /// or the node's failure detector saw it answer again since (its probe backs off to 10 s,
    /// not 30).
    fn ready(&self, owner: &str, address: &str) -> bool {
        let Some(b) = lock(&self.backoff).get(owner).copied() else {
            return true;
        };
        Instant::now() >= b.next || (b.owner_was_down && self.s.peers.is_up(address))
    }

    fn answered(&self, owner: &str) {
        lock(&self.backoff).remove(owner);
    }

    fn failed(&self, owner: &str, address: &str) {
        let owner_was_down = !self.s.peers.is_up(address);
        let mut backoff = lock(&self.backoff);
        let wait = backoff
            .get(owner)
            .map_or(self.interval, |b| (b.wait * 2).min(MAX_BACKOFF));
        backoff.insert(
            owner.to_string(),
            Backoff {
                next: Instant::now() + wait,
                wait,
                owner_was_down,
            },
        );
    }
}
