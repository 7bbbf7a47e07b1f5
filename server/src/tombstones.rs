//! Tombstone reaping: removing deleted keys once no replica could bring them back.
//!
//! A delete leaves a tombstone (a version without a value) that supersedes the value, so that a
//! replica still holding the value cannot resurrect it through read repair, hints or
//! anti-entropy. Kept forever, tombstones pile up; removed too early, the value comes back from
//! a replica that missed the delete. This worker removes one only when both hold:
//! - it is older than `tombstone_grace_ms` (Cassandra's `gc_grace_seconds`, Riak's
//!   `delete_mode`), which should exceed how long a replica may stay away and a hint may wait;
//! - every one of the key's N replicas answers, each holding exactly this tombstone (equal
//!   state digests) or nothing (a replica that reaped it in an earlier, unfinished round), and
//!   none holds a hint for the key.
//!
//! The worker walks the tombstone index (a column family of the keys whose state holds only
//! tombstones, kept by every write and mended at start), not the data.
//!
//! One node decides for each key: the first of its preference list (the partition's owner).
//! It asks the other replicas to reap first (each removes the key only if its state is still
//! that tombstone, under the key's lock), and removes its own copy last, only when all of them
//! did; a round cut short leaves the owner's tombstone, so the next round finishes the job.
//! Anti-entropy brings a tombstone back to an owner that lacks it, so a reap can never be left
//! half done.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use dynamokv_common::{Member, VersionedState};
use dynamokv_proto::v1 as pb;

use crate::background::Shared;
use crate::merkle;
use crate::replica::now_ms;

/// Keys examined per batch.
const PAGE: usize = 1024;

/// The tombstone reaper.
#[derive(Debug)]
pub struct TombstoneReaper {
    s: Shared,
    grace_ms: u64,
    interval: Duration,
}

impl TombstoneReaper {
    pub fn new(s: Shared, grace: Duration, interval: Duration) -> TombstoneReaper {
        TombstoneReaper {
            s,
            grace_ms: grace.as_millis() as u64,
            interval,
        }
    }

    /// Walks the tombstone index for tombstones to reap, a batch at a time, until the node
    /// shuts down.
    pub async fn run(self: Arc<Self>) {
        if self.grace_ms == 0 {
            return;
        }
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            if !self.s.admission.sleep(self.interval).await {
                return;
            }
            // One pass over the tombstone index per interval, a page at a time.
            loop {
                if !self.s.admission.admit("tombstone_reaper").await {
                    return;
                }
                let from = cursor.take().unwrap_or_default();
                let (states, next) = match self.s.local.tombstones_from(&from, PAGE) {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "tombstone reaping stopped by a storage error");
                        break;
                    }
                };
                for (key, state) in states {
                    if self.due(&state) {
                        self.reap(key, &state).await;
                    }
                }
                cursor = next;
                if cursor.is_none() {
                    break;
                }
            }
        }
    }

    /// Whether `state` is a tombstone older than the grace period.
    fn due(&self, state: &VersionedState) -> bool {
        if !state.is_deleted() {
            return false;
        }
        let newest = state
            .siblings()
            .iter()
            .map(|s| s.timestamp_ms)
            .chain(state.clock().iter().map(|(_, _, at)| at))
            .max()
            .unwrap_or(0);
        now_ms().saturating_sub(newest) >= self.grace_ms
    }

    /// Reaps `key` everywhere if this node is its owner and every replica holds the tombstone.
    async fn reap(&self, key: Bytes, state: &VersionedState) {
        let view = self.s.membership.current();
        let list = view.ring.preference_list(&key, view.quorums.n as usize);
        if list.nodes.first().is_none_or(|m| m.id != view.self_id) {
            return;
        }
        let others: Vec<&Member> = list
            .nodes
            .iter()
            .copied()
            .filter(|m| m.id != view.self_id)
            .collect();
        if others.iter().any(|m| !self.s.peers.is_up(&m.address)) {
            return;
        }
        let digest = merkle::state_digest(&key, state);
        for m in &others {
            let held = match self
                .s
                .peers
                .read(&m.address, key.clone(), false, self.s.timeout)
                .await
            {
                Ok(reply) => reply.state,
                Err(_) => return,
            };
            let same = match held {
                None => true,
                Some(s) => VersionedState::from_proto(&s)
                    .is_ok_and(|s| merkle::state_digest(&key, &s) == digest),
            };
            if !same {
                return; // anti-entropy makes them agree first
            }
        }
        for m in &others {
            let request = pb::ReapRequest {
                key: Some(key.clone()),
                digest,
            };
            let reaped = self
                .s
                .peers
                .call(&m.address, self.s.timeout, request, |mut c, r| async move {
                    c.reap(r).await
                })
                .await;
            if !matches!(reaped, Ok(pb::ReapResponse { reaped: true })) {
                return;
            }
        }
        match self.s.local.reap(&key, digest) {
            Ok(true) => {
                self.s.metrics.tombstones_reaped.inc();
                tracing::debug!(key = %String::from_utf8_lossy(&key), "tombstone reaped on every replica");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not reap a tombstone"),
        }
    }
}
