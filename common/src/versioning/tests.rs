use std::collections::BTreeSet;

use super::*;
use proptest::prelude::*;

const A: Actor = Actor(1);
const B: Actor = Actor(2);
const DAY: u64 = DEFAULT_HISTORY_HORIZON_MS;

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

fn w(n: u128) -> WriteId {
    WriteId(n)
}

/// A replica that coordinates as `actor`, drawing counters from its own sequence.
struct Node {
    state: VersionedState,
    actor: Actor,
    seq: u64,
}

impl Node {
    fn new(actor: Actor) -> Node {
        Node {
            state: VersionedState::new(),
            actor,
            seq: 1,
        }
    }

    fn write(
        &mut self,
        ctx: &CausalContext,
        id: u128,
        value: Option<Bytes>,
        now: u64,
    ) -> UpdateOutcome {
        let out = self
            .state
            .update(ctx, w(id), value, self.actor, self.seq, now);
        if let UpdateOutcome::Applied(d) = out {
            self.seq = d.counter + 1;
        }
        out
    }

    fn read(&self) -> CausalContext {
        CausalContext::of_read(&self.state)
    }
}

/// The state with bookkeeping times zeroed: what it knows, for comparing knowledge.
fn knowledge(s: &VersionedState) -> VersionedState {
    let mut k = s.clone();
    k.clock = k.clock.without_timestamps();
    for at in k.retired.values_mut() {
        *at = 0;
    }
    k
}

fn merged(a: &VersionedState, b: &VersionedState) -> VersionedState {
    let mut m = a.clone();
    m.merge(b, 0);
    m
}

#[test]
fn same_stale_context_gives_siblings_and_read_context_collapses_them() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1, v("base"), 1);
    let stale = n.read();
    n.write(&stale, 2, v("x"), 2);
    n.write(&stale, 3, v("y"), 3);
    assert_eq!(values(&n.state), vec!["x", "y"]);
    let read = n.read();
    n.write(&read, 4, v("z"), 4);
    assert_eq!(values(&n.state), vec!["z"]);
    assert_eq!(n.state.siblings().len(), 1);
}

#[test]
fn put_supersedes_exactly_what_its_context_saw() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1, v("one"), 1);
    let saw_one = n.read();
    n.write(&CausalContext::new(), 2, v("two"), 2); // concurrent, unseen by the reader
    n.write(&saw_one, 3, v("three"), 3);
    assert_eq!(values(&n.state), vec!["three", "two"]);
}

/// Defect 1: the context a put returns covers the writer's context and its own write, not
/// another client's write that the same coordinator made just before under the same actor.
#[test]
fn defect1_a_put_reply_context_covers_only_the_writers_context_and_write() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1, v("from-a"), 1);
    let out = n.write(&CausalContext::new(), 2, v("from-b"), 2);
    let reply = CausalContext::new().with_write(w(2), &out.dots());
    // The reply covers from-b's dot but not from-a's, though both are A's and from-a's is lower.
    assert!(reply.clock.contains(out.dots()[0]));
    assert!(!reply.clock.contains(n.state.siblings()[0].dot));
    n.write(&reply, 3, v("from-b-2"), 3);
    assert_eq!(values(&n.state), vec!["from-a", "from-b-2"]);
    // The same through a coordinator that has not yet seen from-b: it must still go once merged.
    let mut other = Node::new(B);
    let mut first = Node::new(A);
    first.write(&CausalContext::new(), 10, v("a"), 1);
    let out = first.write(&CausalContext::new(), 11, v("b"), 2);
    let reply = CausalContext::new().with_write(w(11), &out.dots());
    other.write(&reply, 12, v("b2"), 3);
    let mut m = other.state.clone();
    m.merge(&first.state, 4);
    assert_eq!(values(&m), vec!["a", "b2"]);
    let mut m2 = first.state.clone();
    m2.merge(&other.state, 4);
    assert_eq!(m, m2);
}

#[test]
fn a_chain_of_writes_each_with_the_last_reply_stays_small_and_exact() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1_000, v("other"), 0);
    let mut ctx = CausalContext::new();
    for i in 0..100u128 {
        let out = n.write(&ctx, i, v(&format!("c{i}")), i as u64);
        ctx = ctx.with_write(w(i), &out.dots());
        assert_eq!(ctx.seen.len(), 1);
        assert!(ctx.clock.len() <= 1 && ctx.clock.cloud().count() <= 1);
    }
    assert_eq!(values(&n.state), vec!["c99", "other"]);
}

#[test]
fn deletes_are_hidden_tombstones_and_blind_puts_after_them_work() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1, v("x"), 1);
    let ctx = n.read();
    n.write(&ctx, 2, None, 2);
    assert!(n.state.live_values().is_empty());
    assert!(n.state.is_deleted());
    n.write(&CausalContext::new(), 3, v("again"), 3);
    assert_eq!(values(&n.state), vec!["again"]);
}

#[test]
fn replicas_converge_after_concurrent_writes() {
    let mut r1 = Node::new(A);
    let mut r2 = Node::new(B);
    r1.write(&CausalContext::new(), 1, v("from-a"), 1);
    r2.write(&CausalContext::new(), 2, v("from-b"), 1);
    let m1 = merged(&r1.state, &r2.state);
    let m2 = merged(&r2.state, &r1.state);
    assert_eq!(m1, m2);
    assert_eq!(values(&m1), vec!["from-a", "from-b"]);
    let mut r1m = Node {
        state: m1,
        actor: A,
        seq: 2,
    };
    let ctx = r1m.read();
    r1m.write(&ctx, 3, v("resolved"), 2);
    let mut r2s = r2.state.clone();
    r2s.merge(&r1m.state, 3);
    assert_eq!(values(&r2s), vec!["resolved"]);
    assert!(r1m.state.descends(&r1.state) && r1m.state.descends(&r2.state));
    assert!(!r1.state.descends(&r1m.state));
}

/// Defect 2 at the versioning level: a write applied twice (a retry after a lost answer) is
/// shown once, a second attempt where it is known adds nothing, and a context that saw either
/// copy supersedes both, whatever order the copies meet in.
#[test]
fn defect2_a_write_applied_twice_is_one_write() {
    let mut x = Node::new(A);
    let mut y = Node::new(B);
    x.write(&CausalContext::new(), 7, v("once"), 1);
    y.write(&CausalContext::new(), 7, v("once"), 2);
    let both = merged(&x.state, &y.state);
    assert_eq!(both.siblings().len(), 2);
    assert_eq!(values(&both), vec!["once"]);
    // A retry where the write is already known adds nothing and reports where it is.
    let mut z = Node {
        state: both.clone(),
        actor: Actor(3),
        seq: 1,
    };
    let again = z.write(&CausalContext::new(), 7, v("once"), 3);
    assert!(matches!(again, UpdateOutcome::AlreadyApplied(ref d) if d.len() == 2));
    assert_eq!(z.state, both);

    // A reader that saw only x's copy supersedes the write; y's copy must not come back.
    let saw_x = x.read();
    let mut s = Node::new(Actor(4));
    s.write(&saw_x, 8, v("next"), 4);
    for order in 0..3 {
        let m = match order {
            0 => merged(&merged(&s.state, &y.state), &x.state),
            1 => merged(&y.state, &s.state),
            _ => merged(&x.state, &merged(&y.state, &s.state)),
        };
        assert_eq!(values(&m), vec!["next"], "order {order}");
    }
    // A retry arriving after the supersession does not bring it back either.
    let mut late = Node {
        state: merged(&s.state, &y.state),
        actor: Actor(5),
        seq: 1,
    };
    assert_eq!(
        late.write(&CausalContext::new(), 7, v("once"), 5),
        UpdateOutcome::AlreadySuperseded
    );
    assert_eq!(values(&late.state), vec!["next"]);
}

/// Defect 4 at the versioning level: an actor's dots come from a node-wide sequence, so after
/// truncation forgot the actor's entry its next dot is still new.
#[test]
fn defect4_a_dot_is_never_reissued_even_after_truncation_forgot_its_entry() {
    let mut n = Node::new(A);
    let first = n.write(&CausalContext::new(), 1, v("old"), 0).dots()[0];
    let ctx = n.read();
    let mut other = Node::new(B);
    other.state = n.state.clone();
    other.write(&ctx, 2, v("new"), 1);
    n.state.merge(&other.state, 2);
    let limits = HistoryLimits {
        max_vector_entries: 1,
        horizon_ms: 10,
        max_retired_writes: 8,
        retired_grace_ms: 10,
    };
    n.state.truncate(&limits, 1_000);
    assert_eq!(n.state.clock().counter(A), 0, "A's entry was truncated");
    let next = n.write(&CausalContext::new(), 3, v("after"), 1_001).dots()[0];
    assert!(next.counter > first.counter);
}

/// Defect 5: a write that supersedes old entries refreshes them, so truncation right after it
/// cannot drop what records the supersession, and a stale replica cannot bring values back.
#[test]
fn defect5_truncation_right_after_a_superseding_write_resurrects_nothing() {
    let limits = HistoryLimits {
        max_vector_entries: 1,
        horizon_ms: DAY,
        max_retired_writes: 8,
        retired_grace_ms: 0,
    };
    // x written long ago by A; the stale replica has only x.
    let mut a = Node::new(A);
    a.write(&CausalContext::new(), 1, v("x"), 0);
    let stale = a.state.clone();
    let ctx = a.read();
    // Two days later B deletes it with a full read context, and truncates at once.
    let mut b = Node::new(B);
    b.state = a.state.clone();
    let now = 2 * DAY;
    b.write(&ctx, 2, None, now);
    assert_eq!(b.state.truncate(&limits, now).clock_entries, 0);
    let mut back = stale.clone();
    back.merge(&b.state, now);
    assert!(back.live_values().is_empty(), "the delete was undone");
    // The same through a coordinator that never held x, with a first-format context (history
    // only, no write ids, no timestamps): the context's entries are refreshed as it is applied.
    let mut c = Node::new(Actor(3));
    let clock_only = CausalContext {
        clock: ctx.clock.without_timestamps(),
        seen: BTreeSet::new(),
    };
    c.write(&clock_only, 5, None, now);
    assert_eq!(c.state.truncate(&limits, now).clock_entries, 0);
    let mut back = stale.clone();
    back.merge(&c.state, now);
    assert!(back.live_values().is_empty(), "the delete was undone");
    // Once nothing is younger than the horizon, entries beyond the target go, counted.
    let t = b.state.truncate(&limits, now + DAY + 1);
    assert_eq!(t.clock_entries, 1);
    assert_eq!(b.state.clock().len(), 1);
    // Entries of live siblings stay, whatever their age.
    let mut c = Node::new(Actor(9));
    c.write(&CausalContext::new(), 3, v("p"), 0);
    let mut d = Node::new(Actor(10));
    d.write(&CausalContext::new(), 4, v("q"), 0);
    c.state.merge(&d.state, 0);
    assert_eq!(c.state.truncate(&limits, 10 * DAY).clock_entries, 0);
    assert_eq!(values(&c.state), vec!["p", "q"]);
}

#[test]
fn retired_writes_are_forgotten_after_the_horizon_and_capped() {
    let limits = HistoryLimits {
        max_vector_entries: 10,
        horizon_ms: 100,
        max_retired_writes: 2,
        retired_grace_ms: 5,
    };
    let mut n = Node::new(A);
    for i in 0..4u128 {
        let ctx = n.read();
        n.write(&ctx, i, v("x"), i as u64);
    }
    // Retired at 1, 2 and 3: within the grace period nothing is evicted, whatever the cap.
    assert_eq!(n.state.retired().count(), 3);
    assert_eq!(n.state.truncate(&limits, 3).retired_evicted, 0);
    assert_eq!(n.state.retired().count(), 3);
    // Past it the oldest go down to the cap; past the horizon all go.
    let t = n.state.truncate(&limits, 10);
    assert_eq!(t.retired_evicted, 1);
    assert_eq!(n.state.retired().collect::<Vec<_>>(), vec![w(1), w(2)]);
    assert_eq!(n.state.truncate(&limits, 1_000).retired_evicted, 0);
    assert_eq!(n.state.retired().count(), 0);
}

#[test]
fn proto_round_trip_and_validation() {
    let mut n = Node::new(A);
    n.write(&CausalContext::new(), 1, v("x"), 1);
    let ctx = n.read();
    n.write(&ctx, 2, v("y"), 2);
    let mut m = Node::new(B);
    m.write(&CausalContext::new(), 3, None, 2);
    let mut s = n.state.clone();
    s.merge(&m.state, 3);
    s.clock.add_dot(Dot {
        actor: Actor(77),
        counter: 5,
    });
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
    let mut short_id = s.to_proto();
    short_id.siblings[0].write_id = Bytes::from_static(b"short");
    assert_eq!(
        VersionedState::from_proto(&short_id),
        Err(VersionError::BadWriteId)
    );
    let mut both = s.to_proto();
    both.retired.push(pb::RetiredWrite {
        write_id: both.siblings[0].write_id.clone(),
        retired_at_ms: 1,
    });
    assert_eq!(
        VersionedState::from_proto(&both),
        Err(VersionError::LiveAndRetired)
    );
    let mut orphan = s.to_proto();
    orphan.clock.as_mut().unwrap().cloud.push(pb::Dot {
        actor: 12345,
        counter: 3,
    });
    assert_eq!(
        VersionedState::from_proto(&orphan),
        Err(VersionError::CloudWithoutEntry)
    );
    // A sibling stored before write ids existed gets an id of its own.
    let mut legacy = s.to_proto();
    for sib in &mut legacy.siblings {
        sib.write_id = Bytes::new();
    }
    legacy.retired.clear();
    let old = VersionedState::from_proto(&legacy).unwrap();
    assert_eq!(values(&old), values(&s));
}

#[test]
fn the_dot_cloud_folds_into_entries() {
    let mut vv = VersionVector::new();
    vv.insert(A, 2, 0);
    vv.add_dot(Dot {
        actor: A,
        counter: 5,
    });
    assert!(vv.contains(Dot {
        actor: A,
        counter: 5
    }));
    assert!(!vv.contains(Dot {
        actor: A,
        counter: 4
    }));
    vv.add_dot(Dot {
        actor: A,
        counter: 3,
    });
    vv.add_dot(Dot {
        actor: A,
        counter: 4,
    });
    assert_eq!(vv.counter(A), 5);
    assert_eq!(vv.cloud().count(), 0);
    let mut only = VersionVector::new();
    only.add_dot(Dot {
        actor: B,
        counter: 9,
    });
    assert!(!VersionVector::new().descends(&only));
    assert!(only.descends(&VersionVector::new()));
    assert_eq!(VersionVector::from_proto(&only.to_proto()), Ok(only));
}

// --- Laws, on states generated by random histories of writes, retries and merges. ---

#[derive(Debug, Clone)]
enum Op {
    /// A write through replica `at` with the context of a read of `ctx_from` (or none).
    Write {
        at: usize,
        ctx_from: Option<usize>,
        delete: bool,
    },
    /// The write before last applied again through `at` with its context (a retry).
    Retry { at: usize },
    /// A write through `at` with the reply context of the previous write.
    WithReply { at: usize },
    /// Merge replica `from` into `into`.
    Sync { from: usize, into: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, proptest::option::of(0usize..3), any::<bool>())
            .prop_map(|(at, ctx_from, delete)| Op::Write { at, ctx_from, delete }),
        1 => (0usize..3).prop_map(|at| Op::Retry { at }),
        1 => (0usize..3).prop_map(|at| Op::WithReply { at }),
        3 => (0usize..3, 0usize..3).prop_map(|(from, into)| Op::Sync { from, into }),
    ]
}

/// Three replicas; replica `i` coordinates as actor `i`.
fn run(ops: &[Op]) -> Vec<VersionedState> {
    let mut nodes: Vec<Node> = (0..3).map(|i| Node::new(Actor(i as u64))).collect();
    // (id, value, context, reply context) of the writes so far.
    let mut writes: Vec<(u128, Option<Bytes>, CausalContext, CausalContext)> = Vec::new();
    for (t, o) in ops.iter().enumerate() {
        let now = t as u64;
        match *o {
            Op::Write {
                at,
                ctx_from,
                delete,
            } => {
                let ctx = ctx_from.map(|c| nodes[c].read()).unwrap_or_default();
                let val = (!delete).then(|| Bytes::from(format!("v{t}")));
                let out = nodes[at].write(&ctx, t as u128, val.clone(), now);
                let reply = ctx.with_write(w(t as u128), &out.dots());
                writes.push((t as u128, val, ctx, reply));
            }
            Op::Retry { at } => {
                if writes.len() >= 2 {
                    let (id, val, ctx, _) = writes[writes.len() - 2].clone();
                    nodes[at].write(&ctx, id, val, now);
                }
            }
            Op::WithReply { at } => {
                if let Some((_, _, _, reply)) = writes.last().cloned() {
                    let out = nodes[at].write(&reply, t as u128, v("r"), now);
                    let next = reply.with_write(w(t as u128), &out.dots());
                    writes.push((t as u128, v("r"), reply, next));
                }
            }
            Op::Sync { from, into } => {
                let src = nodes[from].state.clone();
                nodes[into].state.merge(&src, now);
            }
        }
    }
    nodes.into_iter().map(|n| n.state).collect()
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
        prop_assert!(a.descends(a));
        if a.descends(b) && b.descends(a) {
            prop_assert_eq!(knowledge(a), knowledge(b));
        }
        if a.descends(b) && b.descends(c) {
            prop_assert!(a.descends(c));
        }
        let (x, y, z) = (a.clock(), b.clock(), c.clock());
        prop_assert!(x.descends(x));
        if x.descends(y) && y.descends(z) { prop_assert!(x.descends(z)); }
        if x.descends(y) && y.descends(x) {
            prop_assert_eq!(x.without_timestamps(), y.without_timestamps());
        }
    }

    #[test]
    fn a_context_supersedes_exactly_what_it_saw(
        ops in proptest::collection::vec(op(), 0..40), writer in 0usize..3, reader in 0usize..3
    ) {
        let r = run(&ops);
        let ctx = CausalContext::of_read(&r[reader]);
        // What the read showed, and what its history had already superseded.
        let covered = |s: &Sibling| ctx.seen.contains(&s.write_id) || ctx.clock.contains(s.dot);
        let mut n = Node { state: r[writer].clone(), actor: Actor(writer as u64), seq: 10_000 };
        let gone: BTreeSet<WriteId> = n.state.siblings().iter().filter(|s| covered(s)).map(|s| s.write_id).collect();
        let before: BTreeSet<WriteId> = n.state.siblings().iter().map(|s| s.write_id).collect();
        let out = n.write(&ctx, u128::MAX, v("new"), 1_000);
        prop_assert!(matches!(out, UpdateOutcome::Applied(_)));
        let after: BTreeSet<WriteId> = n.state.siblings().iter().map(|s| s.write_id).collect();
        prop_assert!(after.contains(&WriteId(u128::MAX)));
        for id in before {
            // Gone if and only if the context covered one of its copies: no more, no less.
            prop_assert_eq!(after.contains(&id), !gone.contains(&id));
        }
        // And it stays so once the writer's state meets every other replica's: nothing the read
        // showed survives anywhere, while what it did not cover survives somewhere.
        let mut all = n.state.clone();
        for s in &r {
            all.merge(s, 1_001);
        }
        for id in &ctx.seen {
            prop_assert!(!all.siblings().iter().any(|s| s.write_id == *id));
        }
        for s in r.iter().flat_map(|s| s.siblings()) {
            let superseded_elsewhere = r.iter().any(|o| o.clock().contains(s.dot) && !o.siblings().iter().any(|x| x.dot == s.dot))
                || r.iter().any(|o| o.retired.contains_key(&s.write_id));
            if !covered(s) && !superseded_elsewhere {
                prop_assert!(all.siblings().iter().any(|x| x.write_id == s.write_id), "lost {:?}", s.write_id);
            }
        }
    }
}

// --- A model of a cluster: every write recorded, checked once the replicas converge. ---

/// Replica 0 is the faulty one: it may crash and come back with its storage rolled back to an
/// earlier snapshot (a power cut that drops the unsynced log tail). Writes reach their
/// coordinator and the replicas in `copies`; a write held by a replica other than 0 is
/// acknowledged (W >= 2 or a non-faulty coordinator).
#[derive(Debug, Clone)]
enum Step {
    Write {
        at: usize,
        read: u8,
        delete: bool,
        copies: u8,
    },
    /// A write with the reply context of write `of` (mod the writes so far).
    WithReply {
        at: usize,
        of: usize,
        copies: u8,
    },
    /// Write `of` applied again through `at`: a retry after its answer was lost.
    Retry {
        at: usize,
        of: usize,
        copies: u8,
    },
    Sync {
        from: usize,
        into: usize,
    },
    Snapshot,
    /// Replica 0 crashes; with `rollback` its storage returns to the last snapshot.
    Crash {
        rollback: bool,
    },
    /// Any replica restarts cleanly (a new actor, the same data).
    Restart {
        at: usize,
    },
    Truncate {
        at: usize,
        max_entries: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..3, 0u8..8, any::<bool>(), 0u8..8).prop_map(|(at, read, delete, copies)| {
            Step::Write { at, read, delete: delete && read != 0, copies }
        }),
        2 => (0usize..3, any::<usize>(), 0u8..8).prop_map(|(at, of, copies)| Step::WithReply { at, of, copies }),
        2 => (0usize..3, any::<usize>(), 0u8..8).prop_map(|(at, of, copies)| Step::Retry { at, of, copies }),
        5 => (0usize..3, 0usize..3).prop_map(|(from, into)| Step::Sync { from, into }),
        1 => Just(Step::Snapshot),
        1 => any::<bool>().prop_map(|rollback| Step::Crash { rollback }),
        1 => (0usize..3).prop_map(|at| Step::Restart { at }),
        2 => (0usize..3, 1usize..4).prop_map(|(at, max_entries)| Step::Truncate { at, max_entries }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    id: WriteId,
    /// When the write was first attempted.
    at: u64,
    value: Option<Bytes>,
    ctx: CausalContext,
    reply: CausalContext,
    /// The writes this one's context showed, which it supersedes.
    saw: BTreeSet<WriteId>,
    acked: bool,
}

struct Cluster {
    nodes: Vec<Node>,
    snapshot: (VersionedState, u64),
    writes: Vec<Rec>,
    incarnations: u64,
    now: u64,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            nodes: (0..3).map(|i| Node::new(Actor(i))).collect(),
            snapshot: (VersionedState::new(), 0),
            writes: Vec::new(),
            incarnations: 3,
            now: 0,
        }
    }

    /// Coordinates a write through `at`, copies the result to `copies`.
    fn coordinate(
        &mut self,
        at: usize,
        id: WriteId,
        value: Option<Bytes>,
        ctx: &CausalContext,
        copies: u8,
    ) -> (UpdateOutcome, bool) {
        let n = &mut self.nodes[at];
        let out = n.state.update(ctx, id, value, n.actor, n.seq, self.now);
        if let UpdateOutcome::Applied(d) = out {
            n.seq = d.counter + 1;
        }
        let state = self.nodes[at].state.clone();
        let mut held_by_sound = at != 0;
        for r in 0..3 {
            if r != at && copies & (1 << r) != 0 {
                self.nodes[r].state.merge(&state, self.now);
                held_by_sound |= r != 0;
            }
        }
        (out, held_by_sound)
    }

    /// A new write through `at` with `ctx`, recorded.
    fn new_write(&mut self, at: usize, ctx: CausalContext, delete: bool, copies: u8) {
        let id = WriteId(self.writes.len() as u128);
        let value = (!delete).then(|| Bytes::from(format!("v{}", self.writes.len())));
        let (out, acked) = self.coordinate(at, id, value.clone(), &ctx, copies);
        let reply = ctx.with_write(id, &out.dots());
        self.writes.push(Rec {
            id,
            at: self.now,
            value,
            saw: ctx.seen.clone(),
            ctx,
            reply,
            acked,
        });
    }

    fn apply(&mut self, s: &Step, limits: &HistoryLimits) {
        self.now += 1;
        match *s {
            Step::Write {
                at,
                read,
                delete,
                copies,
            } => {
                let mut seen = VersionedState::new();
                for r in 0..3 {
                    if read & (1 << r) != 0 {
                        seen.merge(&self.nodes[r].state, self.now);
                    }
                }
                self.new_write(at, CausalContext::of_read(&seen), delete, copies);
            }
            Step::WithReply { at, of, copies } => {
                if self.writes.is_empty() {
                    return;
                }
                let ctx = self.writes[of % self.writes.len()].reply.clone();
                self.new_write(at, ctx, false, copies);
            }
            Step::Retry { at, of, copies } => {
                if self.writes.is_empty() {
                    return;
                }
                let i = of % self.writes.len();
                let rec = self.writes[i].clone();
                // Attempts of a write come within the grace period of retired ids (a client
                // deadline is seconds; the grace period minutes).
                if rec.at + limits.retired_grace_ms < self.now {
                    return;
                }
                let (_, acked) = self.coordinate(at, rec.id, rec.value, &rec.ctx, copies);
                self.writes[i].acked |= acked;
            }
            Step::Sync { from, into } => {
                let src = self.nodes[from].state.clone();
                self.nodes[into].state.merge(&src, self.now);
            }
            Step::Snapshot => self.snapshot = (self.nodes[0].state.clone(), self.now),
            Step::Crash { rollback } => {
                self.incarnations += 1;
                self.nodes[0].actor = Actor(self.incarnations);
                self.nodes[0].seq = 1;
                // Only snapshots younger than the horizon: a replica away longer must be wiped.
                if rollback && self.snapshot.1 + limits.horizon_ms / 2 > self.now {
                    self.nodes[0].state = self.snapshot.0.clone();
                }
            }
            Step::Restart { at } => {
                self.incarnations += 1;
                self.nodes[at].actor = Actor(self.incarnations);
                self.nodes[at].seq = 1;
            }
            Step::Truncate { at, max_entries } => {
                let l = HistoryLimits {
                    max_vector_entries: max_entries,
                    ..*limits
                };
                self.nodes[at].state.truncate(&l, self.now);
            }
        }
    }

    fn sync_all(&mut self) {
        for _ in 0..2 {
            for from in 0..3 {
                for into in 0..3 {
                    let src = self.nodes[from].state.clone();
                    self.nodes[into].state.merge(&src, self.now);
                }
            }
        }
    }

    /// Checks the converged replicas against the record of writes.
    fn check(&self) -> Result<(), TestCaseError> {
        let first = &self.nodes[0].state;
        for n in &self.nodes[1..] {
            prop_assert_eq!(&n.state, first, "replicas did not converge");
        }
        let saw_any: BTreeSet<WriteId> = self
            .writes
            .iter()
            .flat_map(|r| r.saw.iter().copied())
            .collect();
        let saw_acked: BTreeSet<WriteId> = self
            .writes
            .iter()
            .filter(|r| r.acked)
            .flat_map(|r| r.saw.iter().copied())
            .collect();
        let shown: Vec<&Sibling> = first.distinct_writes();
        let shown_ids: BTreeSet<WriteId> = shown.iter().map(|s| s.write_id).collect();
        prop_assert_eq!(shown.len(), shown_ids.len(), "a write appears twice");
        for r in &self.writes {
            if r.acked && !saw_any.contains(&r.id) {
                prop_assert!(
                    shown_ids.contains(&r.id),
                    "acknowledged write {} lost",
                    r.id
                );
            }
            if saw_acked.contains(&r.id) {
                prop_assert!(
                    !shown_ids.contains(&r.id),
                    "superseded write {} came back",
                    r.id
                );
            }
        }
        for s in shown {
            let rec = &self.writes[s.write_id.0 as usize];
            prop_assert_eq!(
                &s.value,
                &rec.value,
                "write {} has another value",
                s.write_id
            );
        }
        Ok(())
    }
}

/// 512 cases in `make test`; `MODEL_CASES=N` runs more.
fn model_cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(model_cases()))]

    /// Arbitrary interleavings of writes (with read and reply contexts), retries, merges,
    /// clean restarts, crashes with rolled-back storage and truncation: once the replicas
    /// converge, no acknowledged write that nobody saw is lost, nothing an acknowledged write
    /// saw comes back, no write is shown twice and every value is the one written.
    #[test]
    fn no_write_is_lost_duplicated_or_resurrected(
        steps in proptest::collection::vec(step(), 0..60)
    ) {
        let limits = HistoryLimits {
            max_vector_entries: 1,
            horizon_ms: u64::MAX / 4,
            max_retired_writes: 0,
            retired_grace_ms: u64::MAX / 4,
        };
        let mut c = Cluster::new();
        for s in &steps {
            c.apply(s, &limits);
        }
        c.sync_all();
        c.check()?;
    }

    /// The same with a short history horizon, where replicas exchange state more often than
    /// the horizon (the cases the horizon is for): truncation that really drops entries and
    /// retired ids still brings nothing back.
    #[test]
    fn truncation_within_the_horizon_brings_nothing_back(
        steps in proptest::collection::vec(step(), 0..80)
    ) {
        // A cap of 0 retired ids past a grace period as long as the horizon: the cap never
        // applies to history young enough to matter.
        let limits = HistoryLimits {
            max_vector_entries: 1,
            horizon_ms: 24,
            max_retired_writes: 0,
            retired_grace_ms: 24,
        };
        let mut c = Cluster::new();
        for (i, s) in steps.iter().enumerate() {
            c.apply(s, &limits);
            if i % 10 == 9 {
                c.sync_all();
            }
        }
        c.sync_all();
        c.check()?;
    }
}
