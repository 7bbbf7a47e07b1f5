//! Client-driven coordination's membership pull (paper 6.4: "a client periodically picks a
//! random Dynamo node and downloads its current view of Dynamo membership state. Using this
//! information the client can determine which set of nodes form the preference list for any
//! given key").
//!
//! The client keeps the last ring it pulled, as a [`RingView`], and pulls again from a random
//! member every refresh interval (10 s by default), at once when a node says the ring moved on
//! or stops answering, and before a request when it has no ring yet. Preference lists are
//! computed with the same shared code as the nodes' (`dynamokv_common::ring` and
//! `sloppy_quorum`), so client and server agree on every key's replicas.

use std::sync::{Arc, RwLock};

use dynamokv_common::sloppy_quorum::{self, ReplicaSets};
use dynamokv_common::{Member, Ring};
use dynamokv_proto::v1 as pb;

use crate::Error;
use crate::client::{ClusterInfo, MemberInfo};

/// A ring a client routes by, as one node reported it.
#[derive(Debug, Clone)]
pub(crate) struct RingView {
    /// The ring version (bumped by every committed topology change).
    pub version: u64,
    pub ring: Ring,
    pub n: u32,
    pub r: u32,
    /// While partitions are handed over after a topology change: the ring before it, and its
    /// replication factor.
    pub previous: Option<(Ring, u32)>,
    /// Previous members that were removed (left out of the previous ring's replicas).
    pub removed: Vec<String>,
    pub info: ClusterInfo,
}

fn members(list: &[pb::Member]) -> Vec<Member> {
    list.iter().map(Member::from_proto).collect()
}

impl RingView {
    /// The view a node's membership answer describes.
    pub(crate) fn from_membership(reply: pb::MembershipResponse) -> Result<RingView, Error> {
        let bad = |what: &str, e: &dyn std::fmt::Display| Error::Internal {
            message: format!("the cluster reported a {what} membership that forms no ring: {e}"),
        };
        let ring =
            Ring::new(reply.partitions, members(&reply.members)).map_err(|e| bad("current", &e))?;
        let previous = if reply.previous_members.is_empty() {
            None
        } else {
            let prev = Ring::new(reply.partitions, members(&reply.previous_members))
                .map_err(|e| bad("previous", &e))?;
            let pn = if reply.previous_n == 0 {
                reply.n
            } else {
                reply.previous_n
            };
            Some((prev, pn))
        };
        let info = ClusterInfo {
            cluster_name: reply.cluster_name,
            partitions: reply.partitions,
            n: reply.n,
            r: reply.r,
            w: reply.w,
            members: reply
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id,
                    address: m.address,
                    zone: m.zone,
                    weight: m.weight,
                })
                .collect(),
            answered_by: reply.self_id,
            ring_version: reply.ring_version,
        };
        Ok(RingView {
            version: reply.ring_version,
            ring,
            n: reply.n,
            r: reply.r,
            previous,
            removed: reply.removed_members,
            info,
        })
    }

    /// The replicas, fallbacks and quorum sets of `key`.
    pub(crate) fn replica_sets(&self, key: &[u8]) -> ReplicaSets {
        let previous = self.previous.as_ref().map(|(ring, n)| (ring, *n));
        sloppy_quorum::replica_sets(
            &self.ring,
            self.n,
            previous,
            |id| self.removed.iter().any(|r| r == id),
            key,
        )
    }

    /// The address of every member of the ring (and of the previous one, during a handover).
    pub(crate) fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ring
            .members()
            .iter()
            .map(|m| m.address.clone())
            .collect();
        if let Some((prev, _)) = &self.previous {
            for m in prev.members() {
                if !out.contains(&m.address) {
                    out.push(m.address.clone());
                }
            }
        }
        out
    }
}

/// The ring the client routes by, replaced as newer ones are pulled.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    current: RwLock<Option<Arc<RingView>>>,
}

impl Routing {
    pub(crate) fn current(&self) -> Option<Arc<RingView>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs `view` unless the client already routes by a newer ring (a node that has not
    /// heard of the last commit yet may answer a pull). Returns whether it was installed.
    pub(crate) fn install(&self, view: RingView) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.version > view.version) {
            return false;
        }
        let changed = current.as_ref().is_none_or(|c| c.version != view.version);
        if changed {
            tracing::debug!(version = view.version, "routing by a new ring");
        }
        *current = Some(Arc::new(view));
        true
    }
}
