//! Data versioning (paper 4.4) with dotted version vectors.
//!
//! A key's replica state is a [`VersionedState`]: a version vector (`clock`) summarising every
//! write this replica has seen for the key, and the siblings, the causally concurrent versions
//! still alive, each tagged with the *dot* (actor, counter) of the one event that wrote it.
//!
//! Plain version vectors tag a whole key with one clock, so two clients writing with the same
//! stale context make the server either lose one write or keep growing siblings it cannot tell
//! apart ("sibling explosion", which made Riak 2.0 adopt DVV sets). With a dot per sibling:
//! - a put with context `ctx` removes exactly the siblings whose dots `ctx` covers (what the
//!   client's read saw) and adds one new sibling with a fresh dot;
//! - two puts with the same stale context each get their own dot, so both survive;
//! - merging two replica states keeps a sibling unless the other side has seen its dot and
//!   dropped it. Merge is commutative, associative and idempotent (property-tested below), so
//!   replicas converge whatever order states arrive in (read repair, hinted handoff, anti-entropy).
//!
//! Deletes write a tombstone sibling so the delete itself has a dot and replicates like a put;
//! reads hide tombstones.

use std::collections::BTreeMap;

use bytes::Bytes;
use dynamokv_proto::v1 as pb;

/// A writer of versions: one incarnation of a node. A node draws a fresh random actor whenever
/// it starts on an empty data directory, so a node that lost its disk never reuses counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Actor(pub u64);

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The identity of one write event: the `counter`-th event of `actor` for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClockEntry {
    counter: u64,
    timestamp_ms: u64,
}

/// A version vector: for each actor, the highest counter seen. Dots are issued in order by the
/// actor that owns them and every actor stores its own writes first, so seeing counter `c` of
/// an actor means having seen (or superseded) all of its earlier dots for that key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<Actor, ClockEntry>,
}

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of actors in the vector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The highest counter of `actor` seen, 0 if none.
    pub fn counter(&self, actor: Actor) -> u64 {
        self.entries.get(&actor).map_or(0, |e| e.counter)
    }

    /// Whether the event `dot` is in this vector's history.
    pub fn contains(&self, dot: Dot) -> bool {
        self.counter(dot.actor) >= dot.counter
    }

    /// Whether this vector has seen everything `other` has (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(actor, e)| self.counter(*actor) >= e.counter)
    }

    /// Least upper bound: the history of both.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, theirs) in &other.entries {
            self.entries
                .entry(*actor)
                .and_modify(|ours| {
                    if (theirs.counter, theirs.timestamp_ms) > (ours.counter, ours.timestamp_ms) {
                        *ours = *theirs;
                    }
                })
                .or_insert(*theirs);
        }
    }

    /// Issues the next dot of `actor` and records it.
    pub fn advance(&mut self, actor: Actor, now_ms: u64) -> Dot {
        let entry = self.entries.entry(actor).or_insert(ClockEntry {
            counter: 0,
            timestamp_ms: now_ms,
        });
        entry.counter += 1;
        entry.timestamp_ms = entry.timestamp_ms.max(now_ms);
        Dot {
            actor,
            counter: entry.counter,
        }
    }

    /// Sets an entry directly; used when decoding.
    pub fn insert(&mut self, actor: Actor, counter: u64, timestamp_ms: u64) {
        self.entries.insert(
            actor,
            ClockEntry {
                counter,
                timestamp_ms,
            },
        );
    }

    /// `(actor, counter, timestamp_ms)` for every entry, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64, u64)> + '_ {
        self.entries
            .iter()
            .map(|(a, e)| (*a, e.counter, e.timestamp_ms))
    }

    pub fn to_proto(&self) -> pb::VersionVector {
        pb::VersionVector {
            entries: self
                .iter()
                .map(|(actor, counter, timestamp_ms)| pb::ClockEntry {
                    actor: actor.0,
                    counter,
                    timestamp_ms,
                })
                .collect(),
        }
    }

    /// Builds a vector from its wire form, refusing duplicate actors and zero counters, which
    /// no correct writer produces.
    pub fn from_proto(pb: &pb::VersionVector) -> Result<Self, VersionError> {
        let mut vv = VersionVector::new();
        for e in &pb.entries {
            if e.counter == 0 {
                return Err(VersionError::ZeroCounter);
            }
            if vv.entries.contains_key(&Actor(e.actor)) {
                return Err(VersionError::DuplicateActor);
            }
            vv.insert(Actor(e.actor), e.counter, e.timestamp_ms);
        }
        Ok(vv)
    }
}

/// One concurrent version of a key. `value == None` is a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub dot: Dot,
    pub value: Option<Bytes>,
    pub timestamp_ms: u64,
}

/// A stored or transmitted replica state that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error("a version vector names the same actor twice")]
    DuplicateActor,
    #[error("a version vector entry has counter 0")]
    ZeroCounter,
    #[error("two siblings carry the same dot")]
    DuplicateDot,
    #[error("a sibling's dot is not covered by the state's clock")]
    DotOutsideClock,
    #[error("the state has no clock")]
    MissingClock,
}

/// Everything one replica knows about one key (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedState {
    clock: VersionVector,
    /// Kept sorted by dot so that equal states compare equal.
    siblings: Vec<Sibling>,
}

impl VersionedState {
    /// The state of a key never written.
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal history: what a client's context must be to supersede every sibling.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// All siblings, tombstones included, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The values a read returns: live siblings in the order they were written.
    pub fn live_values(&self) -> Vec<Bytes> {
        let mut live: Vec<&Sibling> = self.siblings.iter().filter(|s| s.value.is_some()).collect();
        live.sort_by_key(|s| (s.timestamp_ms, s.dot));
        live.into_iter().filter_map(|s| s.value.clone()).collect()
    }

    /// Whether nothing but tombstones (or nothing at all) is stored.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|s| s.value.is_none())
    }

    /// A coordinator's write (a put, or a delete with `value == None`): supersedes the siblings
    /// `context` covers and adds the new version under a fresh dot of `actor`. Returns the dot.
    pub fn update(
        &mut self,
        context: &VersionVector,
        value: Option<Bytes>,
        actor: Actor,
        now_ms: u64,
    ) -> Dot {
        self.siblings.retain(|s| !context.contains(s.dot));
        self.clock.merge(context);
        let dot = self.clock.advance(actor, now_ms);
        self.siblings.push(Sibling {
            dot,
            value,
            timestamp_ms: now_ms,
        });
        self.siblings.sort_by_key(|s| s.dot);
        dot
    }

    /// Joins another replica's state into this one (the DVV "sync").
    pub fn merge(&mut self, other: &VersionedState) {
        let mut kept: Vec<Sibling> = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        for s in &self.siblings {
            if !other.clock.contains(s.dot) || other.has_dot(s.dot) {
                kept.push(s.clone());
            }
        }
        for s in &other.siblings {
            if !self.clock.contains(s.dot) {
                kept.push(s.clone());
            }
        }
        kept.sort_by_key(|s| s.dot);
        kept.dedup_by_key(|s| s.dot);
        self.siblings = kept;
        self.clock.merge(&other.clock);
    }

    fn has_dot(&self, dot: Dot) -> bool {
        self.siblings.binary_search_by_key(&dot, |s| s.dot).is_ok()
    }

    /// Whether this state has seen everything `other` has, so merging `other` in changes
    /// nothing (read repair skips replicas for which this holds).
    pub fn descends(&self, other: &VersionedState) -> bool {
        if !self.clock.descends(&other.clock) {
            return false;
        }
        let mut merged = self.clone();
        merged.merge(other);
        merged == *self
    }

    /// Truncates the clock to at most `max_entries` by dropping the entries with the oldest
    /// timestamps (paper 4.4's safety valve). Never dropped: an actor that still has a sibling
    /// here, and `keep`, the local node's own actor, whose counter it must never reissue.
    /// Returns how many entries were dropped.
    pub fn truncate_clock(&mut self, max_entries: usize, keep: Actor) -> usize {
        let mut dropped = 0;
        while self.clock.len() > max_entries {
            let victim = self
                .clock
                .entries
                .iter()
                .filter(|(actor, _)| **actor != keep)
                .filter(|(actor, _)| !self.siblings.iter().any(|s| s.dot.actor == **actor))
                .min_by_key(|(actor, e)| (e.timestamp_ms, **actor))
                .map(|(actor, _)| *actor);
            match victim {
                Some(actor) => {
                    self.clock.entries.remove(&actor);
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }

    pub fn to_proto(&self) -> pb::VersionedState {
        pb::VersionedState {
            clock: Some(self.clock.to_proto()),
            siblings: self
                .siblings
                .iter()
                .map(|s| pb::Sibling {
                    actor: s.dot.actor.0,
                    counter: s.dot.counter,
                    value: s.value.clone().unwrap_or_default(),
                    tombstone: s.value.is_none(),
                    timestamp_ms: s.timestamp_ms,
                })
                .collect(),
        }
    }

    /// Builds a state from its wire form, checking the invariants a correct writer keeps.
    pub fn from_proto(pb: &pb::VersionedState) -> Result<Self, VersionError> {
        let clock =
            VersionVector::from_proto(pb.clock.as_ref().ok_or(VersionError::MissingClock)?)?;
        let mut siblings: Vec<Sibling> = pb
            .siblings
            .iter()
            .map(|s| Sibling {
                dot: Dot {
                    actor: Actor(s.actor),
                    counter: s.counter,
                },
                value: (!s.tombstone).then(|| s.value.clone()),
                timestamp_ms: s.timestamp_ms,
            })
            .collect();
        siblings.sort_by_key(|s| s.dot);
        if siblings.windows(2).any(|w| w[0].dot == w[1].dot) {
            return Err(VersionError::DuplicateDot);
        }
        if siblings
            .iter()
            .any(|s| !clock.contains(s.dot) || s.dot.counter == 0)
        {
            return Err(VersionError::DotOutsideClock);
        }
        Ok(VersionedState { clock, siblings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    fn v(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn values(s: &VersionedState) -> Vec<String> {
        let mut out: Vec<String> = s
            .live_values()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn same_stale_context_gives_siblings_and_read_context_collapses_them() {
        let mut s = VersionedState::new();
        s.update(&VersionVector::new(), v("base"), A, 1);
        let stale = s.clock().clone();
        s.update(&stale, v("x"), A, 2);
        s.update(&stale, v("y"), A, 3);
        assert_eq!(values(&s), vec!["x", "y"]);
        let read = s.clock().clone();
        s.update(&read, v("z"), A, 4);
        assert_eq!(values(&s), vec!["z"]);
        assert_eq!(s.siblings().len(), 1);
    }

    #[test]
    fn put_supersedes_exactly_what_its_context_saw() {
        let mut s = VersionedState::new();
        s.update(&VersionVector::new(), v("one"), A, 1);
        let saw_one = s.clock().clone();
        s.update(&VersionVector::new(), v("two"), B, 2); // concurrent, unseen by the reader
        s.update(&saw_one, v("three"), A, 3);
        assert_eq!(values(&s), vec!["three", "two"]);
    }

    #[test]
    fn deletes_are_hidden_tombstones_and_blind_puts_after_them_work() {
        let mut s = VersionedState::new();
        s.update(&VersionVector::new(), v("x"), A, 1);
        let ctx = s.clock().clone();
        s.update(&ctx, None, A, 2);
        assert!(s.live_values().is_empty());
        assert!(s.is_deleted());
        s.update(&VersionVector::new(), v("again"), A, 3);
        assert_eq!(values(&s), vec!["again"]);
    }

    #[test]
    fn replicas_converge_after_concurrent_writes() {
        let mut r1 = VersionedState::new();
        let mut r2 = VersionedState::new();
        r1.update(&VersionVector::new(), v("from-a"), A, 1);
        r2.update(&VersionVector::new(), v("from-b"), B, 1);
        let mut m1 = r1.clone();
        m1.merge(&r2);
        let mut m2 = r2.clone();
        m2.merge(&r1);
        assert_eq!(m1, m2);
        assert_eq!(values(&m1), vec!["from-a", "from-b"]);
        // A write with the merged context resolves them everywhere once merged back.
        let ctx = m1.clock().clone();
        m1.update(&ctx, v("resolved"), A, 2);
        r2.merge(&m1);
        assert_eq!(values(&r2), vec!["resolved"]);
        assert!(m1.descends(&r1) && m1.descends(&r2));
        assert!(!r1.descends(&m1));
    }

    #[test]
    fn truncation_drops_oldest_entries_but_keeps_sibling_actors() {
        let mut s = VersionedState::new();
        for i in 0..15u64 {
            let ctx = s.clock().clone();
            s.update(&ctx, v("x"), Actor(100 + i), i);
        }
        assert_eq!(s.clock().len(), 15);
        let dropped = s.truncate_clock(10, Actor(101));
        assert_eq!(dropped, 5);
        assert_eq!(s.clock().len(), 10);
        // The oldest went (actors 100 and 102..=105); the protected local actor (101) and the
        // live sibling's actor (114) stayed.
        assert_eq!(s.clock().counter(Actor(100)), 0);
        assert_eq!(s.clock().counter(Actor(101)), 1);
        assert_eq!(s.clock().counter(Actor(105)), 0);
        assert_eq!(s.clock().counter(Actor(106)), 1);
        assert_eq!(s.clock().counter(Actor(114)), 1);
        assert_eq!(values(&s), vec!["x"]);
    }

    #[test]
    fn proto_round_trip_and_validation() {
        let mut s = VersionedState::new();
        s.update(&VersionVector::new(), v("x"), A, 1);
        s.update(&VersionVector::new(), None, B, 2);
        assert_eq!(VersionedState::from_proto(&s.to_proto()), Ok(s.clone()));
        let mut bad = s.to_proto();
        bad.siblings[0].counter = 99;
        assert_eq!(
            VersionedState::from_proto(&bad),
            Err(VersionError::DotOutsideClock)
        );
        let mut dup = s.to_proto();
        let first = dup.siblings[0].clone();
        dup.siblings.push(first);
        assert_eq!(
            VersionedState::from_proto(&dup),
            Err(VersionError::DuplicateDot)
        );
    }

    // --- Laws, on states generated by random histories of writes and merges. ---

    #[derive(Debug, Clone)]
    enum Op {
        /// Write by actor `a` (at replica `a`) with the context of replica `ctx_from` (or none).
        Write {
            a: u64,
            ctx_from: Option<usize>,
            delete: bool,
        },
        /// Merge replica `from` into `into`.
        Sync { from: usize, into: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..3, proptest::option::of(0usize..3), any::<bool>()).prop_map(
                |(a, ctx_from, delete)| Op::Write {
                    a,
                    ctx_from,
                    delete
                }
            ),
            (0usize..3, 0usize..3).prop_map(|(from, into)| Op::Sync { from, into }),
        ]
    }

    /// Three replicas; actor `a` writes only at replica `a` (each node coordinates with its
    /// own actor, which is what keeps dots unique).
    fn run(ops: &[Op]) -> Vec<VersionedState> {
        let mut reps = vec![VersionedState::new(); 3];
        for (t, o) in ops.iter().enumerate() {
            match *o {
                Op::Write {
                    a,
                    ctx_from,
                    delete,
                } => {
                    let r = a as usize;
                    let ctx = ctx_from
                        .map(|c| reps[c].clock().clone())
                        .unwrap_or_default();
                    let val = (!delete).then(|| Bytes::from(format!("v{t}")));
                    reps[r].update(&ctx, val, Actor(a), t as u64);
                }
                Op::Sync { from, into } => {
                    let src = reps[from].clone();
                    reps[into].merge(&src);
                }
            }
        }
        reps
    }

    fn merged(a: &VersionedState, b: &VersionedState) -> VersionedState {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(ops in proptest::collection::vec(op(), 0..40)) {
            let r = run(&ops);
            let (a, b, c) = (&r[0], &r[1], &r[2]);
            prop_assert_eq!(merged(a, b), merged(b, a));
            prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
            prop_assert_eq!(merged(a, a), a.clone());
        }

        #[test]
        fn merge_result_descends_both_and_descends_is_a_partial_order(
            ops in proptest::collection::vec(op(), 0..40)
        ) {
            let r = run(&ops);
            let (a, b, c) = (&r[0], &r[1], &r[2]);
            let m = merged(a, b);
            prop_assert!(m.descends(a) && m.descends(b));
            // Reflexive.
            prop_assert!(a.descends(a));
            // Antisymmetric.
            if a.descends(b) && b.descends(a) {
                prop_assert_eq!(a, b);
            }
            // Transitive.
            if a.descends(b) && b.descends(c) {
                prop_assert!(a.descends(c));
            }
            // Same for plain vectors.
            let (x, y, z) = (a.clock(), b.clock(), c.clock());
            prop_assert!(x.descends(x));
            if x.descends(y) && y.descends(z) { prop_assert!(x.descends(z)); }
            if x.descends(y) && y.descends(x) { prop_assert_eq!(x, y); }
        }

        #[test]
        fn a_context_supersedes_exactly_what_it_saw(
            ops in proptest::collection::vec(op(), 0..40), writer in 0u64..3, reader in 0usize..3
        ) {
            let mut r = run(&ops);
            let seen: Vec<Dot> = r[reader].siblings().iter().map(|s| s.dot).collect();
            let ctx = r[reader].clock().clone();
            let before: Vec<Dot> = r[writer as usize].siblings().iter().map(|s| s.dot).collect();
            let new_dot = r[writer as usize].update(&ctx, v("new"), Actor(writer), 1_000);
            let after: Vec<Dot> = r[writer as usize].siblings().iter().map(|s| s.dot).collect();
            prop_assert!(after.contains(&new_dot));
            for d in before {
                // Gone if and only if the context covered it.
                prop_assert_eq!(after.contains(&d), !ctx.contains(d));
            }
            for d in seen {
                prop_assert!(!after.contains(&d));
            }
        }
    }
}
