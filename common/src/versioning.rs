//! Data versioning (paper 4.4) with dotted version vectors.
//!
//! A key's replica state is a [`VersionedState`]: a version vector (`clock`) summarising every
//! write this replica has seen for the key, the siblings (the causally concurrent versions still
//! alive, each tagged with the *dot* (actor, counter) of the one event that wrote it), and the
//! ids of recently superseded writes.
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
//! Four refinements make it exact under real failures:
//! - **Exact contexts.** A vector covers, per actor, every event up to a counter, plus single
//!   events beyond it (the *dot cloud*). The context a put returns is the writer's context plus
//!   the one new dot, so reusing it supersedes the writer's own write and what it had read, never
//!   another client's concurrent write from the same coordinator.
//! - **Dots are never reissued.** An actor is one incarnation of a node (a fresh random id at
//!   every process start, so storage that rolled back cannot make it reuse a dot) and draws
//!   counters from one node-wide sequence, so a dot names one write for good even after its
//!   clock entry was truncated. An actor's counters for one key still only grow, which is what
//!   lets one entry stand for all of its earlier events of that key.
//! - **Write ids.** Every sibling carries the id the client gave its write. A write retried after
//!   its answer was lost may be applied twice, under two dots; reads show it once, and a context
//!   that saw either copy supersedes both: the id joins the state's *retired* set, which merges
//!   by union and drops any other copy it meets.
//! - **Safe truncation.** A clock entry is dropped only when the clock is over its size target
//!   *and* the entry is older than the history horizon, its timestamp being refreshed whenever a
//!   write supersedes its events; an entry with a live sibling is never dropped. Replicas that
//!   catch up within the horizon therefore never see a superseded value come back.
//!
//! Deletes write a tombstone sibling so the delete itself has a dot and replicates like a put;
//! reads hide tombstones.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use dynamokv_proto::v1 as pb;

/// A writer of versions: one incarnation of a node (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Actor(pub u64);

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The largest counter a version vector may name. Counters count one incarnation's writes, so
/// no correct writer comes near it; a larger one would leave its actor no next event (the
/// counter would overflow).
pub const MAX_COUNTER: u64 = u64::MAX >> 1;

/// The identity of one write event: the `counter`-th event of `actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

/// The id a client gives one logical write, the same on every attempt of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u128);

impl WriteId {
    /// Length of the wire form.
    pub const LEN: usize = 16;

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id in `bytes`, which must be exactly 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<WriteId> {
        let b: [u8; 16] = bytes.try_into().ok()?;
        Some(WriteId(u128::from_be_bytes(b)))
    }

    /// The id of a sibling stored before write ids existed: unique per dot.
    fn legacy(dot: Dot) -> WriteId {
        WriteId((u128::from(dot.actor.0) << 64) | u128::from(dot.counter))
    }
}

impl std::fmt::Display for WriteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClockEntry {
    /// Every event of the actor up to this counter has been seen (0: none contiguously).
    counter: u64,
    /// Last use: a write by the actor or one that superseded its events (for truncation only).
    timestamp_ms: u64,
}

/// A version vector with exceptions: per actor, every event up to a counter, plus single
/// events beyond it (the dot cloud). Every actor of the cloud has an entry, so timestamps and
/// truncation stay per actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<Actor, ClockEntry>,
    cloud: BTreeSet<Dot>,
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

    /// The counter up to which every event of `actor` has been seen, 0 if none.
    pub fn counter(&self, actor: Actor) -> u64 {
        self.entries.get(&actor).map_or(0, |e| e.counter)
    }

    /// The highest event of `actor` seen, contiguous or not.
    pub fn max_counter(&self, actor: Actor) -> u64 {
        let cloud_max = self
            .cloud
            .range(
                Dot { actor, counter: 0 }..=Dot {
                    actor,
                    counter: u64::MAX,
                },
            )
            .next_back()
            .map_or(0, |d| d.counter);
        self.counter(actor).max(cloud_max)
    }

    /// Whether every counter is one a writer can issue (at most [`MAX_COUNTER`]): what
    /// [`from_proto`](Self::from_proto) accepts back.
    pub fn counters_in_range(&self) -> bool {
        self.entries.values().all(|e| e.counter <= MAX_COUNTER)
            && self.cloud.iter().all(|d| d.counter <= MAX_COUNTER)
    }

    /// Whether the event `dot` is in this vector's history.
    pub fn contains(&self, dot: Dot) -> bool {
        self.counter(dot.actor) >= dot.counter || self.cloud.contains(&dot)
    }

    /// Whether this vector has seen everything `other` has (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(actor, e)| self.counter(*actor) >= e.counter)
            && other.cloud.iter().all(|d| self.contains(*d))
    }

    /// Least upper bound: the history of both.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, theirs) in &other.entries {
            self.entries
                .entry(*actor)
                .and_modify(|ours| {
                    ours.counter = ours.counter.max(theirs.counter);
                    ours.timestamp_ms = ours.timestamp_ms.max(theirs.timestamp_ms);
                })
                .or_insert(*theirs);
        }
        self.cloud.extend(other.cloud.iter().copied());
        self.normalize();
    }

    /// Adds the single event `dot` (and nothing before it).
    pub fn add_dot(&mut self, dot: Dot) {
        self.entries.entry(dot.actor).or_insert(ClockEntry {
            counter: 0,
            timestamp_ms: 0,
        });
        self.cloud.insert(dot);
        self.normalize();
    }

    /// Issues `actor`'s next event for this key: a counter above both `floor` (the node-wide
    /// sequence, so a dot is never reissued even once truncation forgot the entry) and every
    /// event of the actor seen here. Only the actor's own coordinator calls this, on a state
    /// that holds all of the actor's earlier events for the key, so the entry may cover the gap.
    pub fn advance(&mut self, actor: Actor, floor: u64, now_ms: u64) -> Dot {
        let counter = floor.max(self.max_counter(actor) + 1);
        let entry = self.entries.entry(actor).or_insert(ClockEntry {
            counter: 0,
            timestamp_ms: now_ms,
        });
        entry.counter = counter;
        entry.timestamp_ms = entry.timestamp_ms.max(now_ms);
        self.cloud.retain(|d| d.actor != actor);
        Dot { actor, counter }
    }

    /// Marks `actor`'s entry as used at `now_ms` (it just superseded something).
    fn touch(&mut self, actor: Actor, now_ms: u64) {
        if let Some(e) = self.entries.get_mut(&actor) {
            e.timestamp_ms = e.timestamp_ms.max(now_ms);
        }
    }

    /// Forgets everything about `actor`.
    fn remove_actor(&mut self, actor: Actor) {
        self.entries.remove(&actor);
        self.cloud.retain(|d| d.actor != actor);
    }

    /// Sets an entry directly (tests and decoding).
    pub fn insert(&mut self, actor: Actor, counter: u64, timestamp_ms: u64) {
        self.entries.insert(
            actor,
            ClockEntry {
                counter,
                timestamp_ms,
            },
        );
        self.normalize();
    }

    /// The same history without timestamps, as handed to clients in contexts.
    pub fn without_timestamps(&self) -> VersionVector {
        let mut v = self.clone();
        for e in v.entries.values_mut() {
            e.timestamp_ms = 0;
        }
        v
    }

    /// The same history without its single events (and entries left without events).
    pub fn without_cloud(&self) -> VersionVector {
        let mut v = self.clone();
        v.cloud.clear();
        v.entries.retain(|_, e| e.counter > 0);
        v
    }

    /// Drops cloud dots that entries cover and folds those that extend an entry.
    fn normalize(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        // Sorted by (actor, counter), so chains of consecutive dots fold in one pass.
        for dot in cloud {
            let entry = self.entries.entry(dot.actor).or_insert(ClockEntry {
                counter: 0,
                timestamp_ms: 0,
            });
            if dot.counter <= entry.counter {
                continue;
            }
            if dot.counter == entry.counter + 1 {
                entry.counter += 1;
            } else {
                self.cloud.insert(dot);
            }
        }
    }

    /// `(actor, counter, timestamp_ms)` for every entry, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64, u64)> + '_ {
        self.entries
            .iter()
            .map(|(a, e)| (*a, e.counter, e.timestamp_ms))
    }

    /// The single events beyond their actor's entry.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
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
            cloud: self
                .cloud
                .iter()
                .map(|d| pb::Dot {
                    actor: d.actor.0,
                    counter: d.counter,
                })
                .collect(),
        }
    }

    /// Builds a vector from its wire form, refusing what no correct writer produces: duplicate
    /// actors, zero counters, cloud dots of an actor without an entry, empty entries, counters
    /// above [`MAX_COUNTER`].
    pub fn from_proto(pb: &pb::VersionVector) -> Result<Self, VersionError> {
        let counters = pb.entries.iter().map(|e| e.counter);
        if counters
            .chain(pb.cloud.iter().map(|d| d.counter))
            .any(|c| c > MAX_COUNTER)
        {
            return Err(VersionError::CounterTooLarge);
        }
        let mut vv = VersionVector::new();
        for e in &pb.entries {
            if vv.entries.contains_key(&Actor(e.actor)) {
                return Err(VersionError::DuplicateActor);
            }
            vv.entries.insert(
                Actor(e.actor),
                ClockEntry {
                    counter: e.counter,
                    timestamp_ms: e.timestamp_ms,
                },
            );
        }
        for d in &pb.cloud {
            if d.counter == 0 {
                return Err(VersionError::ZeroCounter);
            }
            if !vv.entries.contains_key(&Actor(d.actor)) {
                return Err(VersionError::CloudWithoutEntry);
            }
            vv.cloud.insert(Dot {
                actor: Actor(d.actor),
                counter: d.counter,
            });
        }
        for (actor, e) in &vv.entries {
            if e.counter == 0 && !vv.cloud.iter().any(|d| d.actor == *actor) {
                return Err(VersionError::ZeroCounter);
            }
        }
        vv.normalize();
        Ok(vv)
    }
}

/// What a client's read saw: the history it covers and the writes it showed. A write with this
/// context supersedes exactly those writes (every copy of them) and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    pub clock: VersionVector,
    pub seen: BTreeSet<WriteId>,
}

impl CausalContext {
    /// The empty context: a write with it supersedes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.seen.is_empty()
    }

    /// The context of a read that returned `state`.
    pub fn of_read(state: &VersionedState) -> CausalContext {
        CausalContext {
            clock: state.clock.without_timestamps(),
            seen: state.siblings.iter().map(|s| s.write_id).collect(),
        }
    }

    /// The context a write returns: this one's history plus the write itself, stored under
    /// `dots`. It keeps neither the single events of this context nor the writes it showed:
    /// the write just made superseded them wherever it is stored, so repeating them would only
    /// make chains of writes (each with the last one's reply) carry ever longer contexts.
    pub fn with_write(&self, write_id: WriteId, dots: &[Dot]) -> CausalContext {
        let mut clock = self.clock.without_cloud();
        for d in dots {
            clock.add_dot(*d);
        }
        CausalContext {
            clock,
            seen: [write_id].into_iter().collect(),
        }
    }

    /// Least upper bound: what either context saw (a context a client assembled from several
    /// replicas' answers).
    pub fn join(&mut self, other: &CausalContext) {
        self.clock.merge(&other.clock);
        self.seen.extend(other.seen.iter().copied());
    }

    pub fn to_proto(&self) -> pb::CausalContext {
        pb::CausalContext {
            clock: Some(self.clock.to_proto()),
            seen_writes: self
                .seen
                .iter()
                .map(|w| Bytes::copy_from_slice(&w.to_bytes()))
                .collect(),
            fastest_replica: String::new(),
        }
    }

    pub fn from_proto(pb: &pb::CausalContext) -> Result<Self, VersionError> {
        let clock = match &pb.clock {
            Some(c) => VersionVector::from_proto(c)?,
            None => VersionVector::new(),
        };
        let mut seen = BTreeSet::new();
        for w in &pb.seen_writes {
            seen.insert(WriteId::from_bytes(w).ok_or(VersionError::BadWriteId)?);
        }
        Ok(CausalContext { clock, seen })
    }
}

/// One concurrent version of a key. `value == None` is a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub dot: Dot,
    pub write_id: WriteId,
    pub value: Option<Bytes>,
    pub timestamp_ms: u64,
}

/// A stored or transmitted replica state that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    #[error("a version vector names the same actor twice")]
    DuplicateActor,
    #[error("a version vector entry or event has counter 0")]
    ZeroCounter,
    #[error("a version vector has single events of an actor it has no entry for")]
    CloudWithoutEntry,
    #[error("two siblings carry the same dot")]
    DuplicateDot,
    #[error("a sibling's dot is not covered by the state's clock")]
    DotOutsideClock,
    #[error("a write id is not 16 bytes")]
    BadWriteId,
    #[error("a sibling's write id is also among the retired writes")]
    LiveAndRetired,
    #[error("the state has no clock")]
    MissingClock,
    #[error("a version vector names a counter above the largest one any writer issues")]
    CounterTooLarge,
}

/// What a coordinator's [`VersionedState::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The write is stored under this new dot.
    Applied(Dot),
    /// The write was already here (an earlier attempt of it), under these dots; nothing added.
    AlreadyApplied(Vec<Dot>),
    /// The write was applied earlier and has since been superseded; nothing added.
    AlreadySuperseded,
}

impl UpdateOutcome {
    /// The dots under which the write is stored.
    pub fn dots(&self) -> Vec<Dot> {
        match self {
            UpdateOutcome::Applied(d) => vec![*d],
            UpdateOutcome::AlreadyApplied(ds) => ds.clone(),
            UpdateOutcome::AlreadySuperseded => Vec::new(),
        }
    }
}

/// How much superseded history a replica keeps (see [`VersionedState::truncate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Clock entries kept before older ones may go (paper 4.4's threshold).
    pub max_vector_entries: usize,
    /// History younger than this is never forgotten: clock entries and retired write ids.
    pub horizon_ms: u64,
    /// Retired write ids kept per key once older than `retired_grace_ms`; the oldest beyond
    /// this go even within the horizon.
    pub max_retired_writes: usize,
    /// Retired write ids younger than this are always kept, whatever the cap: long enough for
    /// every retry of a write still in flight to be recognised.
    pub retired_grace_ms: u64,
}

/// Default size target of a key's clock: the paper's "say 10".
pub const DEFAULT_MAX_VECTOR_ENTRIES: usize = 10;
/// Default history horizon: one day, Riak's `old_vclock`.
pub const DEFAULT_HISTORY_HORIZON_MS: u64 = 24 * 60 * 60 * 1000;
/// Default number of retired write ids kept per key past the grace period.
pub const DEFAULT_MAX_RETIRED_WRITES: usize = 8;
/// Default grace period of retired write ids: far beyond any client's request deadline.
pub const DEFAULT_RETIRED_GRACE_MS: u64 = 10 * 60 * 1000;

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_vector_entries: DEFAULT_MAX_VECTOR_ENTRIES,
            horizon_ms: DEFAULT_HISTORY_HORIZON_MS,
            max_retired_writes: DEFAULT_MAX_RETIRED_WRITES,
            retired_grace_ms: DEFAULT_RETIRED_GRACE_MS,
        }
    }
}

/// What one [`VersionedState::truncate`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Clock entries dropped (all older than the horizon).
    pub clock_entries: usize,
    /// Retired write ids dropped for the per-key cap, past their grace period but within the
    /// horizon.
    pub retired_evicted: usize,
}

/// Everything one replica knows about one key (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedState {
    clock: VersionVector,
    /// Kept sorted by dot so that equal states compare equal.
    siblings: Vec<Sibling>,
    /// Superseded writes, with the time this replica learned it.
    retired: BTreeMap<WriteId, u64>,
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

    /// All siblings, tombstones and second copies of retried writes included, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Ids of writes known to be superseded.
    pub fn retired(&self) -> impl Iterator<Item = WriteId> + '_ {
        self.retired.keys().copied()
    }

    /// One sibling per write (the first copy of a retried write), tombstones included, in the
    /// order they were written.
    fn distinct_writes(&self) -> Vec<&Sibling> {
        let mut all: Vec<&Sibling> = self.siblings.iter().collect();
        all.sort_by_key(|s| (s.timestamp_ms, s.dot));
        let mut seen = HashSet::new();
        all.retain(|s| seen.insert(s.write_id));
        all
    }

    /// The values a read returns: one per live write, in the order they were written.
    pub fn live_values(&self) -> Vec<Bytes> {
        self.distinct_writes()
            .into_iter()
            .filter_map(|s| s.value.clone())
            .collect()
    }

    /// The write time (milliseconds since the epoch, by the coordinating node's clock) of each
    /// value [`live_values`](Self::live_values) returns, in the same order.
    pub fn live_timestamps(&self) -> Vec<u64> {
        self.distinct_writes()
            .into_iter()
            .filter(|s| s.value.is_some())
            .map(|s| s.timestamp_ms)
            .collect()
    }

    /// Whether a delete (a tombstone) is among the concurrent versions.
    pub fn has_tombstone(&self) -> bool {
        self.siblings.iter().any(|s| s.value.is_none())
    }

    /// How many live values a read returns.
    pub fn live_count(&self) -> usize {
        self.distinct_writes()
            .into_iter()
            .filter(|s| s.value.is_some())
            .count()
    }

    /// Bytes of every stored value, second copies included (what a state costs to ship).
    pub fn value_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, Bytes::len))
            .sum()
    }

    /// Whether nothing but tombstones (or nothing at all) is stored.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|s| s.value.is_none())
    }

    /// A coordinator's write (a put, or a delete with `value == None`) by `actor`: supersedes
    /// the siblings `context` covers (and every other copy of their writes), then adds the new
    /// version under a fresh dot, unless this write (`write_id`) is already here or was already
    /// superseded, as when a retry of it arrives.
    pub fn update(
        &mut self,
        context: &CausalContext,
        write_id: WriteId,
        value: Option<Bytes>,
        actor: Actor,
        counter_floor: u64,
        now_ms: u64,
    ) -> UpdateOutcome {
        let superseded: Vec<(WriteId, Actor)> = self
            .siblings
            .iter()
            .filter(|s| context.clock.contains(s.dot) || context.seen.contains(&s.write_id))
            .map(|s| (s.write_id, s.dot.actor))
            .collect();
        // Whether the writer saw something this replica has not received: then only the
        // context's entries record which events those were.
        let unseen_here = context.seen.is_empty()
            || context
                .seen
                .iter()
                .any(|w| !self.retired.contains_key(w) && !superseded.iter().any(|(s, _)| s == w));
        for (w, a) in superseded {
            self.retire(w, now_ms);
            // The entry that covers a superseded value must outlive the horizon from now, or a
            // stale replica's copy could come back.
            self.clock.touch(a, now_ms);
        }
        // What the writer saw is superseded even where this replica has not received it yet.
        for w in &context.seen {
            self.retire(*w, now_ms);
        }
        self.clock.merge(&context.clock);
        if unseen_here {
            for (actor, _, _) in context.clock.iter() {
                self.clock.touch(actor, now_ms);
            }
        }
        self.drop_retired_siblings();
        if self.retired.contains_key(&write_id) {
            return UpdateOutcome::AlreadySuperseded;
        }
        let copies: Vec<Dot> = self
            .siblings
            .iter()
            .filter(|s| s.write_id == write_id)
            .map(|s| s.dot)
            .collect();
        if !copies.is_empty() {
            return UpdateOutcome::AlreadyApplied(copies);
        }
        let dot = self.clock.advance(actor, counter_floor, now_ms);
        self.siblings.push(Sibling {
            dot,
            write_id,
            value,
            timestamp_ms: now_ms,
        });
        self.siblings.sort_by_key(|s| s.dot);
        UpdateOutcome::Applied(dot)
    }

    /// Joins another replica's state into this one (the DVV "sync"). A sibling one side has
    /// dropped although the other still holds it was superseded there: its write is retired.
    pub fn merge(&mut self, other: &VersionedState, now_ms: u64) {
        let mut kept: Vec<Sibling> = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let mut newly_retired = Vec::new();
        for s in &self.siblings {
            if !other.clock.contains(s.dot) || other.has_dot(s.dot) {
                kept.push(s.clone());
            } else {
                newly_retired.push(s.write_id);
            }
        }
        for s in &other.siblings {
            if self.has_dot(s.dot) {
                continue; // decided above
            }
            if !self.clock.contains(s.dot) {
                kept.push(s.clone());
            } else {
                newly_retired.push(s.write_id);
            }
        }
        for (w, at) in &other.retired {
            let e = self.retired.entry(*w).or_insert(*at);
            *e = (*e).max(*at);
        }
        for w in newly_retired {
            self.retire(w, now_ms);
        }
        kept.sort_by_key(|s| s.dot);
        self.siblings = kept;
        self.drop_retired_siblings();
        self.clock.merge(&other.clock);
    }

    fn retire(&mut self, w: WriteId, now_ms: u64) {
        let at = self.retired.entry(w).or_insert(now_ms);
        *at = (*at).max(now_ms);
    }

    fn drop_retired_siblings(&mut self) {
        let retired = &self.retired;
        self.siblings.retain(|s| !retired.contains_key(&s.write_id));
    }

    fn has_dot(&self, dot: Dot) -> bool {
        self.siblings.binary_search_by_key(&dot, |s| s.dot).is_ok()
    }

    /// Whether this state has seen everything `other` has, so merging `other` in changes
    /// nothing (read repair skips replicas for which this holds).
    pub fn descends(&self, other: &VersionedState) -> bool {
        if !self.clock.descends(&other.clock)
            || !other.retired.keys().all(|w| self.retired.contains_key(w))
        {
            return false;
        }
        let mut merged = self.clone();
        merged.merge(other, 0);
        merged.siblings == self.siblings && merged.retired.len() == self.retired.len()
    }

    /// Forgets old history (paper 4.4's safety valve), deterministically, so every replica
    /// given the same state and time keeps the same:
    /// - while the clock has more than `max_vector_entries` entries, the oldest entry goes, if it
    ///   is older than the horizon and no sibling here is its actor's;
    /// - retired write ids older than the horizon go, and beyond `max_retired_writes` the
    ///   oldest past their grace period go too (counted in [`Truncated::retired_evicted`]).
    pub fn truncate(&mut self, limits: &HistoryLimits, now_ms: u64) -> Truncated {
        let mut out = Truncated::default();
        let old = |ts: u64| ts.saturating_add(limits.horizon_ms) <= now_ms;
        while self.clock.len() > limits.max_vector_entries {
            let victim = self
                .clock
                .entries
                .iter()
                .filter(|(_, e)| old(e.timestamp_ms))
                .filter(|(actor, _)| !self.siblings.iter().any(|s| s.dot.actor == **actor))
                .min_by_key(|(actor, e)| (e.timestamp_ms, **actor))
                .map(|(actor, _)| *actor);
            match victim {
                Some(actor) => {
                    self.clock.remove_actor(actor);
                    out.clock_entries += 1;
                }
                None => break,
            }
        }
        self.retired.retain(|_, at| !old(*at));
        if self.retired.len() > limits.max_retired_writes {
            let mut evictable: Vec<(u64, WriteId)> = self
                .retired
                .iter()
                .filter(|(_, at)| at.saturating_add(limits.retired_grace_ms) <= now_ms)
                .map(|(w, at)| (*at, *w))
                .collect();
            evictable.sort();
            let excess = self.retired.len() - limits.max_retired_writes;
            for (_, w) in evictable.into_iter().take(excess) {
                self.retired.remove(&w);
                out.retired_evicted += 1;
            }
        }
        out
    }

    /// The same state without values (tombstone flags kept), for reads that need only versions.
    pub fn without_values(&self) -> VersionedState {
        let mut s = self.clone();
        for sib in &mut s.siblings {
            if sib.value.is_some() {
                sib.value = Some(Bytes::new());
            }
        }
        s
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
                    write_id: Bytes::copy_from_slice(&s.write_id.to_bytes()),
                })
                .collect(),
            retired: self
                .retired
                .iter()
                .map(|(w, at)| pb::RetiredWrite {
                    write_id: Bytes::copy_from_slice(&w.to_bytes()),
                    retired_at_ms: *at,
                })
                .collect(),
        }
    }

    /// Builds a state from its wire form, checking the invariants a correct writer keeps.
    pub fn from_proto(pb: &pb::VersionedState) -> Result<Self, VersionError> {
        let clock =
            VersionVector::from_proto(pb.clock.as_ref().ok_or(VersionError::MissingClock)?)?;
        let mut siblings = Vec::with_capacity(pb.siblings.len());
        for s in &pb.siblings {
            let dot = Dot {
                actor: Actor(s.actor),
                counter: s.counter,
            };
            let write_id = if s.write_id.is_empty() {
                WriteId::legacy(dot)
            } else {
                WriteId::from_bytes(&s.write_id).ok_or(VersionError::BadWriteId)?
            };
            siblings.push(Sibling {
                dot,
                write_id,
                value: (!s.tombstone).then(|| s.value.clone()),
                timestamp_ms: s.timestamp_ms,
            });
        }
        siblings.sort_by_key(|s| s.dot);
        if siblings.windows(2).any(|w| w[0].dot == w[1].dot) {
            return Err(VersionError::DuplicateDot);
        }
        if siblings
            .iter()
            .any(|s| s.dot.counter == 0 || !clock.contains(s.dot))
        {
            return Err(VersionError::DotOutsideClock);
        }
        let mut retired = BTreeMap::new();
        for r in &pb.retired {
            let w = WriteId::from_bytes(&r.write_id).ok_or(VersionError::BadWriteId)?;
            retired.insert(w, r.retired_at_ms);
        }
        if siblings.iter().any(|s| retired.contains_key(&s.write_id)) {
            return Err(VersionError::LiveAndRetired);
        }
        Ok(VersionedState {
            clock,
            siblings,
            retired,
        })
    }
}

#[cfg(test)]
mod tests;
