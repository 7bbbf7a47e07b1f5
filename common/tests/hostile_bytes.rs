//! Hardened decoders (issue 11): bytes from outside — a client's context, a peer's replica
//! state — are decoded without panicking and refused unless well formed. Arbitrary bytes, and
//! valid encodings mutated (bytes flipped, cut, inserted), are thrown at each decoder.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use dynamokv_common::versioning::{Actor, Dot, MAX_COUNTER, WriteId};
use dynamokv_common::{
    CausalContext, VersionVector, VersionedState, decode_routed_context, encode_routed_context,
    key_position,
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

/// `body` framed as a context of `key` in the first (`DKV` 1) or current (`DKV` 2) format,
/// with the right key tag and checksum: a hand-made context. The checksum catches corruption,
/// not forgery, so what is behind it must be checked as strictly as any outside input.
fn seal(key: &[u8], first_format: bool, body: &[u8]) -> Vec<u8> {
    let mut out = if first_format { b"DKV\x01" } else { b"DKV\x02" }.to_vec();
    out.extend_from_slice(&key_position(key).to_be_bytes()[..8]);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What a context that decodes must be (the fuzz target `context` checks the same): not
/// empty (the empty context is no bytes); in the current format, exactly the bytes its own
/// encoding gives; in the first format, a context without seen writes or fastest replica that
/// survives its re-encoding in the current format.
fn check_decoded(key: &[u8], bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok((ctx, fastest)) = decode_routed_context(key, bytes) else {
        return Ok(());
    };
    if bytes.is_empty() {
        prop_assert!(ctx.is_empty() && fastest.is_none());
        return Ok(());
    }
    prop_assert!(
        !ctx.is_empty(),
        "{:02x?} decoded as the empty context",
        bytes
    );
    let again = encode_routed_context(key, &ctx, fastest.as_deref());
    if bytes.starts_with(b"DKV\x02") {
        prop_assert_eq!(&again, &bytes.to_vec(), "decoded to {:?}", ctx);
    } else {
        prop_assert!(fastest.is_none() && ctx.seen.is_empty());
        let (back, none) = decode_routed_context(key, &again).unwrap();
        prop_assert!(none.is_none());
        prop_assert_eq!(back.clock, ctx.clock.without_timestamps());
    }
    Ok(())
}

#[test]
fn a_sealed_empty_body_is_not_a_context_in_either_format() {
    // Found by `cargo fuzz run context`: the first format took an empty version vector for the
    // empty context, which no writer ever sent as bytes (the current format refused it).
    for first_format in [true, false] {
        let bytes = seal(b"k", first_format, &[]);
        assert!(
            decode_routed_context(b"k", &bytes).is_err(),
            "first format: {first_format}"
        );
    }
}

#[test]
fn a_context_decodes_only_from_its_own_encoding() {
    // Found by `cargo fuzz run context` and `hand_sealed_contexts_decode_only_to_what_their_
    // bytes_say`: behind a good checksum, other encodings of a valid context decoded (entries
    // out of order, clock timestamps, which the encoder never writes, unknown fields), so one
    // context had many byte strings and hand-made timestamps reached the replicas' clocks.
    let key = b"k";
    let ctx = context(7);
    assert!(ctx.clock.len() >= 2);
    let good = ctx.to_proto();
    assert_eq!(
        decode_routed_context(key, &seal(key, false, &good.encode_to_vec())),
        Ok((ctx, None))
    );
    let mut reordered = good.clone();
    reordered.clock.as_mut().unwrap().entries.reverse();
    let mut timestamped = good.clone();
    timestamped.clock.as_mut().unwrap().entries[0].timestamp_ms = u64::MAX;
    let mut unknown_field = good.encode_to_vec();
    unknown_field.extend_from_slice(&[0x78, 0x01]);
    for body in [
        reordered.encode_to_vec(),
        timestamped.encode_to_vec(),
        unknown_field,
    ] {
        assert!(decode_routed_context(key, &seal(key, false, &body)).is_err());
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
        // A checksum guards every context: random bytes pass it once in four billion tries.
        prop_assert!(decode_routed_context(&key, &bytes).is_err());
    }

    #[test]
    fn a_mutated_context_is_refused_or_decodes_to_what_its_bytes_say(
        seed in any::<u64>(),
        ms in mutations(),
    ) {
        let key = format!("key-{seed}").into_bytes();
        let original = encode_routed_context(&key, &context(seed), Some("node-1"));
        let bytes = mutate(original.clone(), &ms);
        match decode_routed_context(&key, &bytes) {
            // Only the original bytes (mutations that cancelled out) or no bytes decode.
            Ok((ctx, fastest)) => {
                if bytes.is_empty() {
                    prop_assert!(ctx.is_empty() && fastest.is_none());
                } else {
                    prop_assert_eq!(&bytes, &original);
                    prop_assert_eq!(ctx, context(seed));
                }
            }
            Err(_) => prop_assert_ne!(&bytes, &original),
        }
    }

    #[test]
    fn hand_sealed_contexts_decode_only_to_what_their_bytes_say(
        seed in any::<u64>(),
        first_format in any::<bool>(),
        ms in mutations(),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = format!("key-{seed}").into_bytes();
        let ctx = context(seed);
        let body = if first_format {
            ctx.clock.to_proto().encode_to_vec()
        } else {
            let mut p = ctx.to_proto();
            p.fastest_replica = "node-1".into();
            p.encode_to_vec()
        };
        for body in [mutate(body, &ms), junk, Vec::new()] {
            check_decoded(&key, &seal(&key, first_format, &body))?;
        }
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
