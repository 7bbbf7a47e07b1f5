//! Replica states as another replica sends them (`MergeLocal`, read answers, hints delivered,
//! anti-entropy): a `VersionedState` message decoded by `VersionedState::from_proto`.
//!
//! Inputs: raw bytes; a valid state's encoding edited; a state built field by field from small
//! domains. Checks: no panic; a decoded state re-decodes to itself; merged into a valid state
//! it gives a valid state, which merging it again does not change and which descends from
//! both; reads, digests, truncation and a new write on the merged state work and keep it
//! valid; the local replica merges it and stores a record that reads back as what it returned.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_common::versioning::{Actor, MAX_COUNTER, WriteId};
use dynamokv_common::{CausalContext, HistoryLimits, UpdateOutcome, VersionedState};
use dynamokv_fuzz::{Edit, WireState, assert_valid, block_on, mutate, node, state};
use dynamokv_proto::v1 as pb;
use dynamokv_server::merkle::state_digest;
use dynamokv_server::storage;

#[derive(Arbitrary, Debug)]
enum Source {
    Raw(Vec<u8>),
    Edited { seed: u64, edits: Vec<Edit> },
    Built(WireState),
}

#[derive(Arbitrary, Debug)]
struct Input {
    source: Source,
    /// Which valid state it is merged into.
    base: u64,
    now_ms: u64,
}

const KEY: &[u8] = b"fuzz-replica-state";

fuzz_target!(|input: Input| {
    let bytes = match input.source {
        Source::Raw(b) => b,
        Source::Edited { seed, edits } => mutate(state(seed).to_proto().encode_to_vec(), &edits),
        Source::Built(w) => w.to_proto().encode_to_vec(),
    };
    let Ok(proto) = pb::VersionedState::decode(bytes.as_slice()) else {
        return;
    };
    let Ok(theirs) = VersionedState::from_proto(&proto) else {
        return;
    };
    assert_valid("decoded state", &theirs);
    let now = input.now_ms;
    let base = state(input.base);

    let mut merged = base.clone();
    merged.merge(&theirs, now);
    assert_valid("merged state", &merged);
    // Where the two states give one dot to different writes (a dot names one write for good:
    // no correct pair of replicas disagrees so), merging is not a join; otherwise it is.
    let agree = theirs
        .siblings()
        .iter()
        .all(|t| base.siblings().iter().all(|b| b.dot != t.dot || b == t));
    if agree {
        let mut twice = merged.clone();
        twice.merge(&theirs, now);
        assert_eq!(twice, merged, "merging the same state twice changed it");
        assert!(merged.descends(&theirs) && merged.descends(&base));
    }

    let _ = (
        merged.live_values(),
        merged.live_timestamps(),
        merged.is_deleted(),
    );
    let _ = state_digest(KEY, &merged);
    assert_valid("state without values", &merged.without_values());

    let mut truncated = merged.clone();
    truncated.truncate(&HistoryLimits::default(), now);
    assert_valid("truncated state", &truncated);

    // A put on top of it, by an actor of the state's small domain, with the context of a read
    // of it and with the other side's history as a client's context. Its dot is above every
    // event of the writer the state names. (A state naming the writer's event at MAX_COUNTER,
    // 2^63 - 1 writes of one incarnation, leaves it one more, and then none the decoder
    // accepts: that state is not checked for validity.)
    let writer = Actor(1);
    let named = merged.clock().max_counter(writer);
    for ctx in [
        CausalContext::of_read(&merged),
        CausalContext::of_read(&theirs),
    ] {
        let mut written = merged.clone();
        let outcome = written.update(
            &ctx,
            WriteId(u128::MAX),
            Some(Bytes::from_static(b"new")),
            writer,
            1,
            now,
        );
        if let UpdateOutcome::Applied(dot) = outcome {
            assert!(
                dot.counter > named,
                "a write reissued an event of its actor"
            );
        }
        if named < MAX_COUNTER {
            assert_valid("state after a write", &written);
        }
    }

    // The local replica's merge: what it stores reads back as what it returned.
    let n = node();
    storage::write_state(n.store.as_ref(), KEY, &base).expect("memory write");
    let stored = block_on(n.local.merge(Bytes::from_static(KEY), theirs, false))
        .expect("an in-memory merge succeeds");
    assert_valid("state the replica stored", &stored);
    let read = storage::read_state(n.store.as_ref(), KEY).expect("record readable");
    assert_eq!(read.as_ref(), Some(&stored));
});
