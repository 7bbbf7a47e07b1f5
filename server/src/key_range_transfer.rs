//! Key-range transfer (paper 4.9): after a topology change, partitions move to their new
//! replicas while the cluster serves every read and write.
//!
//! "When a node is removed from the system, the reallocation of keys happens in a reverse
//! process [of adding one]": the nodes that held a key range before offer it to the nodes that
//! hold it now, and drop it once those confirmed. Here:
//! 1. **Handing over.** Each owner of the previous ring compares, partition by partition, its
//!    Merkle tree with those of the partition's new replicas, and sends them the keys they lack
//!    (the anti-entropy comparison, one way: [`Direction::Push`], merges synced to the log).
//!    When every partition it replicated has reached every new replica, it records that in its
//!    own member record (`handed_off` = the ring's id), which gossip spreads. Meanwhile
//!    writes go to old and new replicas and reads consult both
//!    ([`crate::coordinator`]). A node that restarts simply compares again: what already
//!    arrived is equal and costs nothing.
//! 2. **Completing.** Once every owner of the previous ring that is not removed has handed
//!    off, every view drops the previous ring (a pure function of the gossiped state).
//!    Partitions of a removed node are rebuilt from the survivors, which all hand them over.
//! 3. **Dropping.** A node holding keys of a partition it no longer replicates (it left the
//!    partition, or a write routed by an older ring reached it) sends them to the partition's
//!    current replicas, and only once all of them took them drops each key whose state is
//!    still the one sent. Nothing it held is lost, and a write that arrives meanwhile stays
//!    until the next round sends it too.
//!
//! All of it is background work under [`crate::admission`] control.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamokv_common::{Member, Ring};

use crate::anti_entropy::{AntiEntropy, Direction, Tally};
use crate::background::Shared;
use crate::membership::{ClusterView, MembershipError};
use crate::service::MAX_LEAF_KEYS;

/// What the worker last found, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStatus {
    /// Partitions still to hand to a new replica under the current ring version.
    pub pending: u32,
    /// Partitions holding data this node no longer replicates.
    pub to_drop: u32,
}

/// The key-range transfer worker.
#[derive(Debug)]
pub struct KeyRangeTransfer {
    s: Shared,
    anti_entropy: Arc<AntiEntropy>,
    interval: Duration,
    status: Mutex<TransferStatus>,
    /// Since when every live member has routed by the ring version noted.
    all_routing_since: Mutex<Option<(u64, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn replicas(ring: &Ring, p: u32, n: u32) -> Vec<Member> {
    ring.preference_list_of_partition(p, n as usize)
        .nodes
        .into_iter()
        .cloned()
        .collect()
}

impl KeyRangeTransfer {
    pub fn new(s: Shared, anti_entropy: Arc<AntiEntropy>, interval: Duration) -> Self {
        KeyRangeTransfer {
            s,
            anti_entropy,
            interval,
            status: Mutex::default(),
            all_routing_since: Mutex::default(),
        }
    }

    pub fn status(&self) -> TransferStatus {
        lock(&self.status).clone()
    }

    /// Hands over and drops partitions until the node shuts down: every interval, and at once
    /// when the membership view changes.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.s.membership.subscribe();
        loop {
            tokio::select! {
                _ = self.s.admission.sleep(self.interval) => {}
                _ = changes.changed() => {}
            }
            if self.s.admission.stopping() || !self.s.admission.admit("transfer").await {
                return;
            }
            self.round().await;
        }
    }

    /// One pass over the partitions.
    async fn round(&self) {
        let view = self.s.membership.current();
        if !view.joined() {
            return;
        }
        let pending = self.hand_over(&view).await;
        let to_drop = self.drop_departed(&view).await;
        *lock(&self.status) = TransferStatus { pending, to_drop };
        let m = &self.s.metrics.membership;
        m.transfers_pending.set(pending as i64);
        m.partitions_to_drop.set(to_drop as i64);
    }

    /// Sends each partition this node replicated under the previous ring to its new replicas,
    /// then records the handoff. Returns the partitions still to send.
    async fn hand_over(&self, view: &ClusterView) -> u32 {
        let Some((previous, pn)) = &view.previous else {
            return 0;
        };
        let me = &view.self_id;
        let version = view.ring_version;
        let ring_id = view.state.ring_version().id();
        let was_owner = view.state.ring_version().previous.contains(me);
        let done = view.state.has_handed_off(me);
        if !was_owner || done {
            return 0;
        }
        // (partition, its new replicas that were not replicas before)
        let work: Vec<(u32, Vec<Member>)> = (0..view.ring.partition_count())
            .filter_map(|p| {
                let before = replicas(previous, p, *pn);
                if !before.iter().any(|m| &m.id == me) {
                    return None;
                }
                let targets: Vec<Member> = replicas(&view.ring, p, view.quorums.n)
                    .into_iter()
                    .filter(|m| !before.iter().any(|b| b.id == m.id))
                    .collect();
                Some((p, targets))
            })
            .collect();
        // The last transfer must come after every write routed by the previous ring alone: only
        // once every live member routes by this one, and in-flight requests have had time to
        // finish.
        if !view.state.not_routing_by_current().is_empty() {
            *lock(&self.all_routing_since) = None;
            return work.len() as u32;
        }
        let since = *lock(&self.all_routing_since).get_or_insert((version, Instant::now()));
        if since.0 != version {
            *lock(&self.all_routing_since) = Some((version, Instant::now()));
            return work.len() as u32;
        }
        if since.1.elapsed() < self.s.timeout * 2 {
            return work.len() as u32;
        }
        let mut pending = 0;
        for (p, targets) in &work {
            let p = *p;
            let mut sent_all = true;
            for target in targets {
                if !self.s.admission.admit("transfer").await {
                    return pending + 1;
                }
                if let Err(reason) = self.push(target, p).await {
                    tracing::debug!(partition = p, to = %target.id, %reason, "transfer incomplete");
                    sent_all = false;
                }
            }
            if !sent_all {
                pending += 1;
            }
        }
        if pending == 0 {
            let handed = self
                .s
                .membership
                .update(|s| -> Result<bool, MembershipError> { Ok(s.set_handed_off(me, ring_id)) });
            match handed {
                Ok(false) => tracing::info!(
                    ring_version = version,
                    "the ring changed during the handover: handing over again"
                ),
                Ok(true) => tracing::info!(
                    ring_version = version,
                    "handed every partition over to its new replicas"
                ),
                Err(e) => tracing::error!(error = %e, "cannot record the handoff"),
            }
        }
        pending
    }

    /// Sends this node's keys of partition `p` that `target` lacks or holds older, synced.
    async fn push(&self, target: &Member, p: u32) -> Result<(), String> {
        if !self.s.peers.is_up(&target.address) {
            return Err("unreachable".into());
        }
        let mut tally = Tally::default();
        self.anti_entropy
            .sync_partition(target, p, &mut tally, Direction::Push)
            .await?;
        self.s
            .metrics
            .membership
            .keys_transferred
            .inc_by(tally.repaired);
        Ok(())
    }

    /// Sends the keys of partitions this node no longer replicates to their current replicas,
    /// then drops those still unchanged. Waits while a handover is under way (this node may be
    /// one of the previous ring's replicas that reads still consult). Returns the partitions
    /// with data left to drop.
    async fn drop_departed(&self, view: &ClusterView) -> u32 {
        if view.previous.is_some() {
            return 0;
        }
        let forest = self.s.local.forest();
        let mut left = 0;
        for p in 0..view.ring.partition_count() {
            let now = replicas(&view.ring, p, view.quorums.n);
            if now.iter().any(|m| m.id == view.self_id) {
                continue;
            }
            if forest.partition_leaves(p).iter().all(|l| *l == 0) {
                continue;
            }
            if !self.s.admission.admit("transfer").await {
                return left + 1;
            }
            let mut sent_all = true;
            for target in &now {
                if let Err(reason) = self.push(target, p).await {
                    tracing::debug!(partition = p, to = %target.id, %reason, "cannot hand a departed partition over yet");
                    sent_all = false;
                    break;
                }
            }
            if !sent_all {
                left += 1;
                continue;
            }
            match self.drop_partition(view, p) {
                Ok(true) => {}
                Ok(false) => left += 1,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "cannot drop a departed partition");
                    left += 1;
                }
            }
        }
        left
    }

    /// Drops the keys of partition `p` whose state is still the one sent. Returns whether the
    /// partition is now empty here.
    fn drop_partition(
        &self,
        view: &ClusterView,
        p: u32,
    ) -> Result<bool, crate::storage::StorageError> {
        let (first, last) = view.ring.partition_range(p);
        let mut after: Vec<u8> = Vec::new();
        let mut empty = true;
        loop {
            let (page, more) = self
                .s
                .local
                .key_digests(first, last, &after, MAX_LEAF_KEYS)?;
            if let (true, Some((k, _))) = (more, page.last()) {
                after = crate::storage::storage_key(k);
            }
            for (key, digest) in &page {
                if self.s.local.drop_if_unchanged(key, *digest)? {
                    self.s.metrics.membership.keys_dropped.inc();
                } else {
                    empty = false;
                }
            }
            if !more {
                break;
            }
        }
        Ok(empty)
    }
}
