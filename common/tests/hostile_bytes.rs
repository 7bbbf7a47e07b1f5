//! Hardened decoders (issue 11): bytes from outside — a client's context, a peer's replica
//! state — are decoded without panicking and refused unless well formed. Arbitrary bytes, and
//! valid encodings mutated (bytes flipped, cut, inserted), are thrown at each decoder.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dynamokv_common::versioning::{Actor, Dot, MAX_COUNTER, WriteId};
use dynamokv_common::{
    CausalContext, ContextKey, VersionVector, VersionedState, combine_contexts, decode_context,
    inspect_context, key_position, sign_context,
};
use dynamokv_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

/// A valid context of `key` with a few entries, cloud dots and seen writes.
fn context(seed: u64) -> CausalContext {
    let mut clock = VersionVector::new();
    for i in 0..(seed % 5) {
        clock.insert(Actor(seed.wrapping_mul(31).wrapping_add(i)), i + 1, 0);
    }
    clock.add_dot(Dot {
        actor: Actor(seed ^ 0xabcd),
        counter: seed % 97 + 3,
    });
    CausalContext {
        clock,
        seen: [
            WriteId(u128::from(seed)),
            WriteId(u128::MAX - u128::from(seed)),
        ]
        .into_iter()
        .collect(),
    }
}

/// A valid replica state: a few writes by a few actors, one superseding another.
fn state(seed: u64) -> VersionedState {
    let mut s = VersionedState::new();
    for i in 0..(seed % 4 + 1) {
        let ctx = if i % 2 == 1 {
            CausalContext::of_read(&s)
        } else {
            CausalContext::new()
        };
        let value = (i != 3).then(|| Bytes::from(format!("value-{seed}-{i}")));
        let _ = s.update(
            &ctx,
            WriteId(u128::from(seed.wrapping_mul(10).wrapping_add(i))),
            value,
            Actor(seed % 3 + 1),
            0,
            1_000 + i,
        );
    }
    s
}

/// The keys two nodes sign contexts with.
fn keys() -> Vec<ContextKey> {
    vec![
        ContextKey {
            signer: "node-0".into(),
            id: 1,
            secret: [0x11; 32],
        },
        ContextKey {
            signer: "node-1".into(),
            id: 2,
            secret: [0x22; 32],
        },
    ]
}

/// A context a client assembled from two replicas' answers (one signed by each node).
fn assembled(key: &[u8], seed: u64) -> (Vec<u8>, CausalContext) {
    let ks = keys();
    let a = sign_context(key, &context(seed), &ks[0]);
    let b = sign_context(key, &context(seed ^ 0x5555), &ks[1]);
    let bytes = combine_contexts(key, [a.as_slice(), b.as_slice()], Some("node-1")).unwrap();
    let mut joined = context(seed);
    joined.join(&context(seed ^ 0x5555));
    (bytes, joined)
}

/// `body` framed as an unsigned context of an earlier release (`DKV` 1 or 2), with the right
/// key tag and checksum: what a client could make before contexts were signed.
fn seal(key: &[u8], first_format: bool, body: &[u8]) -> Vec<u8> {
    let mut out = if first_format { b"DKV\x01" } else { b"DKV\x02" }.to_vec();
    out.extend_from_slice(&key_position(key).to_be_bytes()[..8]);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn unsigned_contexts_of_earlier_releases_are_never_accepted() {
    // Issue 19: a checksum catches corruption, not forgery. A context naming the node's own
    // actor at the largest counter, behind a good checksum, poisoned the node that took it.
    let key = b"k";
    let mut poison = context(3);
    poison.clock.insert(Actor(42), MAX_COUNTER, 0);
    for first_format in [true, false] {
        for body in [
            poison.to_proto().encode_to_vec(),
            poison.clock.to_proto().encode_to_vec(),
            Vec::new(),
        ] {
            let bytes = seal(key, first_format, &body);
            assert!(
                decode_context(key, &bytes, keys().as_slice()).is_err(),
                "first format: {first_format}"
            );
            assert!(inspect_context(key, &bytes).is_err());
        }
    }
}

#[test]
fn a_counter_leaves_room_for_the_next_event_of_its_actor() {
    // Found by `cargo fuzz run replica_state`: a state naming an event of an actor at counter
    // u64::MAX decoded, and that actor's next write overflowed the counter (a panic in debug
    // builds; in release it wrapped to the node-wide floor, below the history the state names,
    // so a replica holding that history takes the new write for one already superseded).
    let entry = |counter| pb::ClockEntry {
        actor: 1,
        counter,
        timestamp_ms: 0,
    };
    let dot = |counter| pb::Dot { actor: 1, counter };
    let too_far = [
        pb::VersionVector {
            entries: vec![entry(u64::MAX)],
            cloud: vec![],
        },
        pb::VersionVector {
            entries: vec![entry(0)],
            cloud: vec![dot(u64::MAX)],
        },
        pb::VersionVector {
            entries: vec![entry(3)],
            cloud: vec![dot(MAX_COUNTER + 1)],
        },
    ];
    for clock in too_far {
        assert!(VersionVector::from_proto(&clock).is_err(), "{clock:?}");
        let state = pb::VersionedState {
            clock: Some(clock.clone()),
            ..Default::default()
        };
        assert!(VersionedState::from_proto(&state).is_err());
        let ctx = pb::CausalContext {
            clock: Some(clock),
            ..Default::default()
        };
        assert!(CausalContext::from_proto(&ctx).is_err());
    }
    // The last counter accepted leaves room for one more event, above every one named.
    for clock in [
        pb::VersionVector {
            entries: vec![entry(MAX_COUNTER)],
            cloud: vec![],
        },
        pb::VersionVector {
            entries: vec![entry(0)],
            cloud: vec![dot(MAX_COUNTER)],
        },
    ] {
        let state = pb::VersionedState {
            clock: Some(clock),
            ..Default::default()
        };
        let mut s = VersionedState::from_proto(&state).unwrap();
        let out = s.update(&CausalContext::new(), WriteId(1), None, Actor(1), 1, 5);
        let dots = out.dots();
        assert_eq!(dots.len(), 1);
        assert!(dots[0].counter > MAX_COUNTER, "{dots:?}");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, u8),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, x) => bytes[i % len] ^= x.max(1),
            Mutation::Cut(i) => bytes.truncate(i % len),
            Mutation::Insert(i, x) => bytes.insert(i % (len + 1), x),
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<usize>().prop_map(Mutation::Cut),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        ],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_are_never_a_context(
        key in prop::collection::vec(any::<u8>(), 1..64),
        bytes in prop::collection::vec(any::<u8>(), 1..512),
    ) {
        // A MAC guards every fragment: random bytes never verify.
        prop_assert!(decode_context(&key, &bytes, keys().as_slice()).is_err());
    }

    #[test]
    fn a_mutated_context_is_refused_or_decodes_to_what_its_nodes_signed(
        seed in any::<u64>(),
        ms in mutations(),
    ) {
        let key = format!("key-{seed}").into_bytes();
        let (original, joined) = assembled(&key, seed);
        let bytes = mutate(original.clone(), &ms);
        if let Ok(ctx) = decode_context(&key, &bytes, keys().as_slice()) {
            // What decodes is signed by the nodes: at most what the original covered (a cut at
            // a fragment's end drops the fragments after it; the fastest replica is unsigned
            // advice), and what a client reads of it is the same.
            prop_assert!(joined.clock.descends(&ctx.clock), "{:?} beyond {:?}", ctx, joined);
            prop_assert!(ctx.seen.is_subset(&joined.seen));
            prop_assert!(bytes.is_empty() || !ctx.is_empty());
            let (seen_by_client, _) = inspect_context(&key, &bytes).unwrap();
            prop_assert_eq!(seen_by_client, ctx);
            // And it has one encoding: putting it together again gives the same bytes.
            let (_, fastest) = inspect_context(&key, &bytes).unwrap();
            prop_assert_eq!(
                combine_contexts(&key, [bytes.as_slice()], fastest.as_deref()).unwrap(),
                bytes
            );
        }
    }

    #[test]
    fn a_context_never_verifies_under_another_key_or_secret(
        seed in any::<u64>(),
        secret in prop::array::uniform32(any::<u8>()),
    ) {
        let key = format!("key-{seed}").into_bytes();
        let (bytes, _) = assembled(&key, seed);
        let mut other_keys = keys();
        other_keys[seed as usize % 2].secret = secret;
        prop_assume!(other_keys != keys());
        prop_assert!(decode_context(&key, &bytes, other_keys.as_slice()).is_err());
        prop_assert!(decode_context(b"another key", &bytes, keys().as_slice()).is_err());
    }

    #[test]
    fn arbitrary_and_mutated_replica_states_decode_without_panicking(
        seed in any::<u64>(),
        ms in mutations(),
        junk in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let original = state(seed).to_proto().encode_to_vec();
        for bytes in [mutate(original, &ms), junk] {
            // Either refused by protobuf or by the state's own checks, or a state that can be
            // merged, read and encoded again: never a panic.
            if let Ok(proto) = pb::VersionedState::decode(bytes.as_slice())
                && let Ok(s) = VersionedState::from_proto(&proto)
            {
                let mut merged = state(seed);
                merged.merge(&s, 2_000);
                let _ = merged.live_values();
                let again = VersionedState::from_proto(&s.to_proto());
                prop_assert!(again.is_ok(), "a decoded state re-encodes: {:?}", again);
            }
            if let Ok(proto) = pb::CausalContext::decode(bytes.as_slice()) {
                let _ = CausalContext::from_proto(&proto);
            }
        }
    }
}
