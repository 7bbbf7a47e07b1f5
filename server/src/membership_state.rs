//! The membership state nodes gossip (paper 4.8.1, 4.8.2), as pure data with a deterministic
//! merge. Gossip itself (who talks to whom, how often, over what) is built on top.
//!
//! "Each node contacts a peer chosen at random every second and the two nodes efficiently
//! reconcile their persisted membership change histories." The state has two parts:
//! - **Member records**: each node's address, zone, weight and status (joining, up, leaving,
//!   removed), versioned per member. A record is changed by bumping its version; of two
//!   records of one member the higher version wins, and equal versions with different contents
//!   (two nodes changed it at once) are ordered by their contents, so every node picks the
//!   same one.
//! - **The ring version**: which members own partitions, as the last `commit` of a topology
//!   change set it (the partition assignment is a pure function of that set and Q,
//!   [`dynamokv_common::Ring`]). Of two ring versions the higher number wins, ties going to
//!   the greater committer id and owner list, so two changes committed at once on different
//!   nodes resolve to one of them everywhere: two rings never live side by side for longer than
//!   gossip takes to spread the winner.
//!
//! [`MembershipState::merge`] is a join: commutative, associative and idempotent. Nodes that
//! have exchanged everything hold equal states whatever the order of their exchanges; the
//! tests check this over random gossip schedules.

use std::collections::BTreeMap;

use dynamokv_common::{Member, Ring, RingError};
use dynamokv_proto::v1 as pb;

/// Where a member is in its life in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Admitted, receiving its partitions; not yet serving them alone.
    Joining,
    Up,
    /// Handing its partitions off before it stops owning anything.
    Leaving,
    /// Gone for good; kept as a record so that old views cannot bring it back.
    Removed,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "joining" => Status::Joining,
            "up" => Status::Up,
            "leaving" => Status::Leaving,
            "removed" => Status::Removed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Removed => "removed",
        }
    }
}

/// One member as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberRecord {
    /// Bumped by every change of the record; the higher wins.
    pub version: u64,
    pub id: String,
    pub address: String,
    pub zone: String,
    pub weight: u32,
    pub status: Status,
    /// The [`RingVersion::id`] of the ring for which this node has handed every partition it
    /// replicated under the previous ring to that partition's new replicas (key-range transfer,
    /// paper 4.9); 0 for none. Only the node itself sets it. An id, not a version number: two
    /// commits made at once carry the same number, and a handoff for the one that lost must
    /// not count for the one that won.
    pub handed_off: u64,
    /// The id of the ring this node routes by. Old owners hand partitions over only once every
    /// live member routes by the new ring, so that no write routed by the old one alone
    /// arrives after their last transfer.
    pub ring_seen: u64,
    /// The keys this node signs version contexts with, oldest first (its current one last),
    /// at most [`MAX_CONTEXT_KEYS`]; only the node itself adds one. Every node verifies the
    /// contexts of every other with these (see `context_keys.rs`).
    pub context_keys: Vec<ContextKeyRecord>,
}

/// How many context keys a member record keeps: the current one and those before it that may
/// still be in their grace period.
pub const MAX_CONTEXT_KEYS: usize = 3;

/// One key a member signs version contexts with. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContextKeyRecord {
    /// When the member made it (ms since the epoch); keys are ordered by it.
    pub created_ms: u64,
    pub id: u64,
    pub secret: [u8; dynamokv_common::context::SECRET_LEN],
}

impl std::fmt::Debug for ContextKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextKeyRecord")
            .field("id", &format_args!("{:016x}", self.id))
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

impl ContextKeyRecord {
    /// A fresh random key made at `now_ms`.
    pub fn generate(now_ms: u64) -> ContextKeyRecord {
        ContextKeyRecord {
            created_ms: now_ms,
            id: rand::random::<u64>().max(1),
            secret: rand::random(),
        }
    }
}

/// `a` and `b` together, oldest first, keeping the newest [`MAX_CONTEXT_KEYS`].
pub fn union_keys(a: &[ContextKeyRecord], b: &[ContextKeyRecord]) -> Vec<ContextKeyRecord> {
    let mut all: Vec<ContextKeyRecord> = a.iter().chain(b).cloned().collect();
    all.sort();
    all.dedup_by(|x, y| x.id == y.id);
    let drop = all.len().saturating_sub(MAX_CONTEXT_KEYS);
    all.drain(..drop);
    all
}

impl MemberRecord {
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> MemberRecord {
        MemberRecord {
            version: 1,
            id: id.into(),
            address: address.into(),
            zone: String::new(),
            weight: 1,
            status: Status::Up,
            handed_off: 0,
            ring_seen: 0,
            context_keys: Vec::new(),
        }
    }

    /// The record without its context keys' secrets (what an operator is shown).
    pub fn without_secrets(&self) -> MemberRecord {
        MemberRecord {
            context_keys: Vec::new(),
            ..self.clone()
        }
    }

    pub fn member(&self) -> Member {
        Member::new(self.id.clone(), self.address.clone())
            .with_zone(self.zone.clone())
            .with_weight(self.weight)
    }
}

/// Which members own partitions, as a commit set it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RingVersion {
    pub version: u64,
    /// The node whose commit made this version.
    pub committed_by: String,
    /// Ids of the members that own partitions, sorted.
    pub owners: Vec<String>,
    /// The owners before this version: where the partitions that changed replicas come from
    /// until the handover completes. Empty for the first ring.
    pub previous: Vec<String>,
}

impl RingVersion {
    /// A 64-bit identity of this exact ring (version, committer, owners, previous owners): two
    /// rings committed at once with the same version number have different ids. Never 0.
    pub fn id(&self) -> u64 {
        let mut text = format!("{}\0{}\0", self.version, self.committed_by);
        for o in &self.owners {
            text.push_str(o);
            text.push('\0');
        }
        text.push('\x01');
        for o in &self.previous {
            text.push_str(o);
            text.push('\0');
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes()).max(1)
    }
}

/// A view that does not make a ring (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    #[error("the ring names owner {0:?}, whose member record has not arrived yet")]
    UnknownOwner(String),
    #[error("this node has not joined a cluster yet")]
    NotJoined,
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Two states that can never be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    #[error("the other node belongs to cluster {theirs:?}, this one to {ours:?}")]
    OtherCluster { ours: String, theirs: String },
    #[error("the other node's ring has {theirs} partitions, this one {ours}")]
    OtherPartitioning { ours: u32, theirs: u32 },
    #[error("a malformed membership state: {0}")]
    Malformed(&'static str),
}

/// A node's view of the cluster's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipState {
    pub cluster: String,
    /// Q, fixed when the cluster is created.
    pub partitions: u32,
    members: BTreeMap<String, MemberRecord>,
    ring: RingVersion,
}

impl MembershipState {
    /// A new cluster of one: `me`, owning every partition.
    pub fn new_cluster(cluster: impl Into<String>, partitions: u32, me: MemberRecord) -> Self {
        let ring = RingVersion {
            version: 1,
            committed_by: me.id.clone(),
            owners: vec![me.id.clone()],
            previous: Vec::new(),
        };
        MembershipState {
            cluster: cluster.into(),
            partitions,
            members: BTreeMap::from([(me.id.clone(), me)]),
            ring,
        }
    }

    /// A node asking to join `cluster`: it knows only itself, as joining, and no ring (version
    /// 0, which any ring of the cluster beats). It owns nothing until a commit includes it.
    pub fn joining(cluster: impl Into<String>, partitions: u32, mut me: MemberRecord) -> Self {
        me.status = Status::Joining;
        MembershipState {
            cluster: cluster.into(),
            partitions,
            members: BTreeMap::from([(me.id.clone(), me)]),
            ring: RingVersion {
                version: 0,
                committed_by: String::new(),
                owners: Vec::new(),
                previous: Vec::new(),
            },
        }
    }

    /// A cluster of `members`, all up and owning partitions, as every node configured with the
    /// same static member list builds it (so all of them start from one identical view).
    pub fn of_members(
        cluster: impl Into<String>,
        partitions: u32,
        members: impl IntoIterator<Item = MemberRecord>,
    ) -> Self {
        let members: BTreeMap<String, MemberRecord> = members
            .into_iter()
            .map(|mut r| {
                r.status = Status::Up;
                (r.id.clone(), r)
            })
            .collect();
        MembershipState {
            cluster: cluster.into(),
            partitions,
            ring: RingVersion {
                version: 1,
                committed_by: "config".into(),
                owners: members.keys().cloned().collect(),
                previous: Vec::new(),
            },
            members,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values()
    }

    pub fn member(&self, id: &str) -> Option<&MemberRecord> {
        self.members.get(id)
    }

    pub fn ring_version(&self) -> &RingVersion {
        &self.ring
    }

    /// The ring the current ring version describes, with the owners' current addresses.
    /// Fails when an owner's record has not arrived yet (a view mid-gossip).
    pub fn ring(&self) -> Result<Ring, ViewError> {
        if self.ring.owners.is_empty() {
            return Err(ViewError::NotJoined);
        }
        self.ring_of(&self.ring.owners)
    }

    fn ring_of(&self, ids: &[String]) -> Result<Ring, ViewError> {
        let mut owners = Vec::with_capacity(ids.len());
        for id in ids {
            let r = self
                .members
                .get(id)
                .ok_or_else(|| ViewError::UnknownOwner(id.clone()))?;
            owners.push(r.member());
        }
        Ok(Ring::new(self.partitions, owners)?)
    }

    /// While partitions are handed over from the previous ring (paper 4.9): that ring. Writes
    /// go to the replicas of both and reads consult both until every owner of the previous
    /// ring that is not removed has handed its partitions to their new replicas.
    pub fn previous_ring(&self) -> Result<Option<Ring>, ViewError> {
        if !self.handover_in_progress() {
            return Ok(None);
        }
        self.ring_of(&self.ring.previous).map(Some)
    }

    /// Whether some owner of the previous ring still has partitions to hand over.
    pub fn handover_in_progress(&self) -> bool {
        !self.awaiting_handoff().is_empty()
    }

    /// The owners of the previous ring that have not yet handed their partitions over (removed
    /// members never will, and are not waited for: their partitions are rebuilt from the
    /// surviving replicas).
    pub fn awaiting_handoff(&self) -> Vec<&str> {
        self.ring
            .previous
            .iter()
            .filter(|id| {
                self.members
                    .get(*id)
                    .is_some_and(|r| r.status != Status::Removed && r.handed_off != self.ring.id())
            })
            .map(String::as_str)
            .collect()
    }

    /// The owners the staged change leaves: the current ones, plus members asking to join,
    /// less members leaving or removed.
    pub fn staged_owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = self
            .ring
            .owners
            .iter()
            .filter(|id| {
                self.members
                    .get(*id)
                    .is_some_and(|r| matches!(r.status, Status::Joining | Status::Up))
            })
            .cloned()
            .collect();
        for r in self.members.values() {
            if r.status == Status::Joining && !owners.contains(&r.id) {
                owners.push(r.id.clone());
            }
        }
        owners.sort();
        owners
    }

    /// Why the staged change cannot be committed now, if it cannot.
    pub fn commit_blocked(&self) -> Option<String> {
        let staged = self.staged_owners();
        if self.ring.owners.is_empty() {
            Some("this node has not joined a cluster yet".into())
        } else if self.handover_in_progress() {
            Some(format!(
                "ring version {} is still being handed over (waiting for {}); commit again once it completes",
                self.ring.version,
                self.awaiting_handoff().join(", ")
            ))
        } else if staged == self.ring.owners {
            Some("nothing is staged: join, leave or remove a node first".into())
        } else if staged.is_empty() {
            Some("the change would leave the cluster without members".into())
        } else if (self.partitions as usize) < staged.len() {
            Some(format!(
                "{} partitions cannot be spread over {} nodes",
                self.partitions,
                staged.len()
            ))
        } else {
            None
        }
    }

    /// The display status of a member: its record's status, except that a joining member the
    /// ring includes is up and a leaving one that owns nothing any more has left.
    pub fn status_of(&self, id: &str) -> &'static str {
        let Some(r) = self.members.get(id) else {
            return "unknown";
        };
        let owns = self.ring.owners.contains(&r.id);
        match r.status {
            Status::Joining if owns => "up",
            Status::Leaving if !owns && !self.awaiting_handoff().contains(&id) => "left",
            s => s.as_str(),
        }
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|r| r.status == Status::Removed)
    }

    /// Members worth gossiping with: not removed, not departed.
    pub fn live_members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members
            .values()
            .filter(|r| !matches!(self.status_of(&r.id), "removed" | "left"))
    }

    /// Records that member `id` routes by the current ring.
    pub fn set_ring_seen(&mut self, id: &str) {
        let ring = self.ring.id();
        if let Some(r) = self.members.get(id).cloned()
            && r.ring_seen != ring
        {
            self.set_member(MemberRecord {
                ring_seen: ring,
                ..r
            });
        }
    }

    /// Live members that do not route by the current ring yet (as far as this view knows:
    /// one that routes by a newer ring this view has not heard of counts as not yet).
    pub fn not_routing_by_current(&self) -> Vec<&str> {
        let ring = self.ring.id();
        self.live_members()
            .filter(|r| r.ring_seen != ring)
            .map(|r| r.id.as_str())
            .collect()
    }

    /// Records that member `id` has handed everything over for the ring whose id is `ring`,
    /// if that is still the current ring. Returns whether it is.
    pub fn set_handed_off(&mut self, id: &str, ring: u64) -> bool {
        if self.ring.id() != ring {
            return false;
        }
        if let Some(r) = self.members.get(id).cloned()
            && r.handed_off != ring
        {
            self.set_member(MemberRecord {
                handed_off: ring,
                ..r
            });
        }
        true
    }

    /// Whether member `id` has handed everything over for the current ring.
    pub fn has_handed_off(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|r| r.handed_off == self.ring.id())
    }

    /// Sets a member's record (a node announcing itself or changing its address, an operator
    /// changing its status), as a new version above any this view has seen of it.
    pub fn set_member(&mut self, mut record: MemberRecord) {
        let seen = self.members.get(&record.id).map_or(0, |r| r.version);
        record.version = record.version.max(seen + 1);
        self.members.insert(record.id.clone(), record);
    }

    /// Commits a topology change: the members in `owners` own the partitions from now on.
    pub fn commit(&mut self, owners: impl IntoIterator<Item = String>, by: &str) {
        let mut owners: Vec<String> = owners.into_iter().collect();
        owners.sort();
        owners.dedup();
        let previous = std::mem::take(&mut self.ring.owners);
        self.ring = RingVersion {
            version: self.ring.version + 1,
            committed_by: by.to_string(),
            owners,
            previous,
        };
    }

    /// Joins `other` into this view. Returns whether anything changed.
    pub fn merge(&mut self, other: &MembershipState) -> Result<bool, MergeError> {
        if other.cluster != self.cluster {
            return Err(MergeError::OtherCluster {
                ours: self.cluster.clone(),
                theirs: other.cluster.clone(),
            });
        }
        if other.partitions != self.partitions {
            return Err(MergeError::OtherPartitioning {
                ours: self.partitions,
                theirs: other.partitions,
            });
        }
        let mut changed = false;
        for (id, theirs) in &other.members {
            match self.members.get(id) {
                Some(ours) if ours >= theirs => {}
                _ => {
                    self.members.insert(id.clone(), theirs.clone());
                    changed = true;
                }
            }
        }
        if other.ring > self.ring {
            self.ring = other.ring.clone();
            changed = true;
        }
        Ok(changed)
    }

    /// What a peer that holds `digest` lacks of this view: the records of members whose
    /// version there is lower or absent, and the ring version if newer. Gossip sends only this.
    pub fn delta_for(&self, digest: &Digest) -> MembershipState {
        let members = self
            .members
            .iter()
            .filter(|(id, r)| digest.members.get(*id).is_none_or(|v| *v < r.version))
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        MembershipState {
            cluster: self.cluster.clone(),
            partitions: self.partitions,
            members,
            ring: if self.ring > digest.ring {
                self.ring.clone()
            } else {
                digest.ring.clone()
            },
        }
    }

    /// This view with no context key secrets in it: what an operator is shown.
    pub fn without_secrets(&self) -> MembershipState {
        MembershipState {
            members: self
                .members
                .iter()
                .map(|(id, r)| (id.clone(), r.without_secrets()))
                .collect(),
            ..self.clone()
        }
    }

    /// The versions this view holds, for a peer to compute what to send.
    pub fn digest(&self) -> Digest {
        Digest {
            members: self
                .members
                .iter()
                .map(|(id, r)| (id.clone(), r.version))
                .collect(),
            ring: self.ring.clone(),
        }
    }
}

impl MembershipState {
    pub fn to_proto(&self) -> pb::MembershipState {
        pb::MembershipState {
            cluster: self.cluster.clone(),
            partitions: self.partitions,
            members: self.members.values().map(record_to_proto).collect(),
            ring: Some(ring_to_proto(&self.ring)),
        }
    }

    /// Decodes a state another node sent, refusing anything malformed.
    pub fn from_proto(m: &pb::MembershipState) -> Result<MembershipState, MergeError> {
        let mut members = BTreeMap::new();
        for r in &m.members {
            let status = Status::parse(&r.status).ok_or(MergeError::Malformed("unknown status"))?;
            if r.id.is_empty() || r.address.is_empty() || r.version == 0 || r.weight == 0 {
                return Err(MergeError::Malformed(
                    "a member record without id, address, version or weight",
                ));
            }
            if r.context_keys.len() > MAX_CONTEXT_KEYS {
                return Err(MergeError::Malformed(
                    "a member record with too many context keys",
                ));
            }
            let mut context_keys = Vec::with_capacity(r.context_keys.len());
            for k in &r.context_keys {
                let secret =
                    <[u8; dynamokv_common::context::SECRET_LEN]>::try_from(k.secret.as_ref())
                        .map_err(|_| {
                            MergeError::Malformed("a context key whose secret is not 32 bytes")
                        })?;
                if k.id == 0 {
                    return Err(MergeError::Malformed("a context key with id 0"));
                }
                context_keys.push(ContextKeyRecord {
                    created_ms: k.created_ms,
                    id: k.id,
                    secret,
                });
            }
            // One encoding per record: oldest first, no id twice.
            if union_keys(&context_keys, &[]) != context_keys {
                return Err(MergeError::Malformed(
                    "context keys out of order or repeated",
                ));
            }
            let record = MemberRecord {
                version: r.version,
                id: r.id.clone(),
                address: r.address.clone(),
                zone: r.zone.clone(),
                weight: r.weight,
                status,
                handed_off: r.handed_off,
                ring_seen: r.ring_seen,
                context_keys,
            };
            if members.insert(r.id.clone(), record).is_some() {
                return Err(MergeError::Malformed("a member listed twice"));
            }
        }
        Ok(MembershipState {
            cluster: m.cluster.clone(),
            partitions: m.partitions,
            members,
            ring: ring_from_proto(m.ring.as_ref())?,
        })
    }
}

fn record_to_proto(r: &MemberRecord) -> pb::MemberRecord {
    pb::MemberRecord {
        version: r.version,
        id: r.id.clone(),
        address: r.address.clone(),
        zone: r.zone.clone(),
        weight: r.weight,
        status: r.status.as_str().to_string(),
        handed_off: r.handed_off,
        ring_seen: r.ring_seen,
        context_keys: r
            .context_keys
            .iter()
            .map(|k| pb::ContextKey {
                id: k.id,
                secret: k.secret.to_vec().into(),
                created_ms: k.created_ms,
            })
            .collect(),
    }
}

fn ring_to_proto(r: &RingVersion) -> pb::RingVersion {
    pb::RingVersion {
        version: r.version,
        committed_by: r.committed_by.clone(),
        owners: r.owners.clone(),
        previous: r.previous.clone(),
    }
}

fn ring_from_proto(r: Option<&pb::RingVersion>) -> Result<RingVersion, MergeError> {
    let r = r.ok_or(MergeError::Malformed("no ring version"))?;
    let sorted = |ids: &[String]| {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        ids
    };
    Ok(RingVersion {
        version: r.version,
        committed_by: r.committed_by.clone(),
        owners: sorted(&r.owners),
        previous: sorted(&r.previous),
    })
}

impl Digest {
    pub fn to_proto(&self) -> pb::MembershipDigest {
        pb::MembershipDigest {
            members: self.members.clone().into_iter().collect(),
            ring: Some(ring_to_proto(&self.ring)),
        }
    }

    pub fn from_proto(d: &pb::MembershipDigest) -> Result<Digest, MergeError> {
        Ok(Digest {
            members: d.members.clone().into_iter().collect(),
            ring: ring_from_proto(d.ring.as_ref())?,
        })
    }
}

/// The versions a view holds: what one side of a gossip exchange sends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub members: BTreeMap<String, u64>,
    pub ring: RingVersion,
}

/// One partition whose replicas change between two rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub partition: u32,
    /// Nodes that replicate it before and not after.
    pub from: Vec<String>,
    /// Nodes that replicate it after and not before.
    pub to: Vec<String>,
}

/// Which partitions' replica sets change from `before` (N = `n_before`) to `after`: what
/// `plan` shows before a `commit`.
pub fn plan(before: &Ring, n_before: usize, after: &Ring, n_after: usize) -> Vec<Move> {
    let replicas = |ring: &Ring, p: u32, n: usize| -> Vec<String> {
        let mut ids: Vec<String> = ring
            .preference_list_of_partition(p, n)
            .nodes
            .iter()
            .map(|m| m.id.clone())
            .collect();
        ids.sort();
        ids
    };
    (0..before.partition_count())
        .filter_map(|p| {
            let (b, a) = (replicas(before, p, n_before), replicas(after, p, n_after));
            let from: Vec<String> = b.iter().filter(|id| !a.contains(id)).cloned().collect();
            let to: Vec<String> = a.iter().filter(|id| !b.contains(id)).cloned().collect();
            (!from.is_empty() || !to.is_empty()).then_some(Move {
                partition: p,
                from,
                to,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(i: usize) -> MemberRecord {
        MemberRecord::new(format!("node-{i}"), format!("10.0.0.{i}:7070"))
    }

    /// A cluster of `n` nodes as node-0 would build it, one join at a time.
    fn cluster(n: usize) -> MembershipState {
        let mut s = MembershipState::new_cluster("c", 64, node(0));
        for i in 1..n {
            s.set_member(node(i));
        }
        s.commit((0..n).map(|i| format!("node-{i}")), "node-0");
        s
    }

    #[test]
    fn the_higher_version_wins_and_equal_versions_resolve_the_same_everywhere() {
        let base = cluster(3);
        let (mut a, mut b) = (base.clone(), base.clone());
        let mut moved = node(1);
        moved.address = "10.0.1.1:7070".into();
        a.set_member(moved.clone());
        let mut leaving = node(1);
        leaving.status = Status::Leaving;
        b.set_member(leaving);
        // Both changed node-1 to the same version at once: each side picks the same record.
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b).unwrap();
        ba.merge(&a).unwrap();
        assert_eq!(ab, ba);
        // A later change beats both.
        let mut later = ab.member("node-1").unwrap().clone();
        later.status = Status::Up;
        a.set_member(later);
        let v = a.member("node-1").unwrap().version;
        assert!(v > ab.member("node-1").unwrap().version);
        ab.merge(&a).unwrap();
        assert_eq!(ab.member("node-1").unwrap().status, Status::Up);
    }

    /// Two nodes commit different joins on `base` at once: node-0 adds node-3, node-2 adds
    /// node-4.
    fn concurrent_commits(base: &MembershipState) -> (MembershipState, MembershipState) {
        let (mut a, mut b) = (base.clone(), base.clone());
        a.set_member(node(3));
        a.commit((0..4).map(|i| format!("node-{i}")), "node-0");
        b.set_member(node(4));
        b.commit(
            ["node-0", "node-1", "node-2", "node-4"].map(String::from),
            "node-2",
        );
        (a, b)
    }

    #[test]
    fn concurrent_commits_resolve_to_one_ring_everywhere() {
        let base = cluster(3);
        let (a, b) = concurrent_commits(&base);
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b).unwrap();
        ba.merge(&a).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(
            ab.ring_version().committed_by,
            "node-2",
            "the greater committer"
        );
        assert!(ab.ring().is_ok());
    }

    #[test]
    fn a_handoff_for_a_ring_that_lost_a_concurrent_commit_does_not_count_for_the_winner() {
        let mut base = cluster(3);
        for i in 0..3 {
            base.set_ring_seen(&format!("node-{i}"));
            let id = base.ring_version().id();
            base.set_handed_off(&format!("node-{i}"), id);
        }
        assert!(!base.handover_in_progress());
        let (mut a, b) = concurrent_commits(&base);
        assert_eq!(a.ring_version().version, b.ring_version().version);
        // Every old owner hands over for a's ring (the one that will lose).
        let lost = a.ring_version().id();
        for i in 0..3 {
            assert!(a.set_handed_off(&format!("node-{i}"), lost));
        }
        assert!(!a.handover_in_progress());
        a.merge(&b).unwrap();
        assert_eq!(a.ring_version().committed_by, "node-2", "b's ring wins");
        assert!(
            a.handover_in_progress(),
            "handoffs for the losing ring must not complete the winner's"
        );
        assert!(!a.set_handed_off("node-0", lost), "the lost ring is gone");
    }

    #[test]
    fn a_ring_naming_an_owner_whose_record_has_not_arrived_says_so() {
        let mut s = cluster(3);
        s.commit(["node-0", "node-7"].map(String::from), "node-0");
        assert_eq!(
            s.ring().unwrap_err(),
            ViewError::UnknownOwner("node-7".into())
        );
    }

    #[test]
    fn views_of_other_clusters_or_partitionings_are_refused_and_change_nothing() {
        let mut a = cluster(3);
        let before = a.clone();
        let other = MembershipState::new_cluster("other", 64, node(9));
        assert!(matches!(
            a.merge(&other),
            Err(MergeError::OtherCluster { .. })
        ));
        let other = MembershipState::new_cluster("c", 128, node(9));
        assert!(matches!(
            a.merge(&other),
            Err(MergeError::OtherPartitioning { .. })
        ));
        assert_eq!(a, before);
    }

    #[test]
    fn a_delta_for_a_digest_brings_the_peer_level_and_nothing_more() {
        let old = cluster(3);
        let mut new = old.clone();
        new.set_member(node(3));
        new.commit((0..4).map(|i| format!("node-{i}")), "node-1");
        let delta = new.delta_for(&old.digest());
        assert_eq!(delta.members().count(), 1, "only node-3's record travels");
        let mut caught_up = old.clone();
        caught_up.merge(&delta).unwrap();
        assert_eq!(caught_up, new);
        assert_eq!(new.delta_for(&new.digest()).members().count(), 0);
    }

    #[test]
    fn a_plan_lists_exactly_the_partitions_whose_replicas_change() {
        let three = cluster(3).ring().unwrap();
        let mut s = cluster(3);
        s.set_member(node(3));
        s.commit((0..4).map(|i| format!("node-{i}")), "node-0");
        let four = s.ring().unwrap();
        let moves = plan(&three, 3, &four, 3);
        assert!(!moves.is_empty());
        for m in &moves {
            assert_eq!(m.to, vec!["node-3".to_string()], "{m:?}");
            assert_eq!(m.from.len(), 1, "{m:?}");
        }
        // With N = 3 on 3 nodes every node held everything: a partition moves exactly when
        // node-3 now replicates it, about 3/4 of them.
        let holds = (0..64)
            .filter(|&p| {
                four.preference_list_of_partition(p, 3)
                    .nodes
                    .iter()
                    .any(|m| m.id == "node-3")
            })
            .count();
        assert_eq!(moves.len(), holds);
        assert!((44..=52).contains(&holds), "{holds}");
        assert!(plan(&four, 3, &four, 3).is_empty());
    }

    #[test]
    fn states_and_digests_round_trip_and_malformed_ones_are_refused() {
        let mut s = cluster(4);
        let mut r = node(2);
        r.status = Status::Leaving;
        r.zone = "b".into();
        s.set_member(r);
        assert_eq!(MembershipState::from_proto(&s.to_proto()).unwrap(), s);
        assert_eq!(
            Digest::from_proto(&s.digest().to_proto()).unwrap(),
            s.digest()
        );
        let mut bad = s.to_proto();
        bad.members[0].status = "asleep".into();
        assert!(MembershipState::from_proto(&bad).is_err());
        let mut bad = s.to_proto();
        bad.members.push(bad.members[0].clone());
        assert!(MembershipState::from_proto(&bad).is_err());
        let mut bad = s.to_proto();
        bad.ring = None;
        assert!(MembershipState::from_proto(&bad).is_err());
    }

    proptest! {
        /// Random changes on random nodes, then random pairwise merges until everyone has
        /// heard everything: every node ends with the same state, whatever the order.
        #[test]
        fn gossip_in_any_order_converges_on_one_state(
            changes in proptest::collection::vec((0usize..5, 0u8..4, 0usize..7), 1..30),
            exchanges in proptest::collection::vec((0usize..5, 0usize..5), 0..60),
        ) {
            let mut views: Vec<MembershipState> = (0..5).map(|_| cluster(3)).collect();
            for (at, what, who) in changes {
                let v = &mut views[at];
                match what {
                    0 => {
                        let mut r = v.member(&format!("node-{who}")).cloned().unwrap_or_else(|| node(who));
                        r.address = format!("10.9.{at}.{who}:7070");
                        v.set_member(r);
                    }
                    1 => {
                        let mut r = v.member(&format!("node-{who}")).cloned().unwrap_or_else(|| node(who));
                        r.status = Status::Leaving;
                        v.set_member(r);
                    }
                    2 => {
                        v.set_member(node(who));
                        let mut owners = v.ring_version().owners.clone();
                        owners.push(format!("node-{who}"));
                        v.commit(owners, &format!("node-{at}"));
                    }
                    _ => {
                        let owners: Vec<String> = v.ring_version().owners.iter().filter(|o| **o != format!("node-{who}")).cloned().collect();
                        if !owners.is_empty() {
                            v.commit(owners, &format!("node-{at}"));
                        }
                    }
                }
            }
            for (a, b) in exchanges {
                let theirs = views[b].clone();
                views[a].merge(&theirs).unwrap();
            }
            // Then a full round both ways: everything has been heard everywhere.
            for a in 0..5 {
                for b in 0..5 {
                    let theirs = views[b].clone();
                    views[a].merge(&theirs).unwrap();
                }
            }
            for v in &views[1..] {
                prop_assert_eq!(v, &views[0]);
            }
            // And merging is idempotent.
            let mut again = views[0].clone();
            prop_assert!(!again.merge(&views[1]).unwrap());
        }
    }
}
