//! Hints (`server/src/storage`): a state a fallback node keeps for an unreachable replica
//! (paper 4.6), stored under a hint key (key position, key length, key, owner) as a record
//! (creation time, then a stored state), read back by `parse_hint_key` and `decode_hint` when
//! hints are delivered, merged into reads and reaped.
//!
//! Inputs: raw keys and records; valid ones edited; records built field by field. Checks: no
//! panic; a hint key that parses is exactly the key `hint_key` makes of what it parsed to; a
//! record that decodes re-encodes to a record decoding to the same; the local replica, finding
//! the record under a key's hint key, merges it into reads, merges a new hint into it and lists
//! it for delivery, or refuses it as corrupt, never panicking.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_fuzz::{Edit, WireState, assert_valid, block_on, mutate, node, state};
use dynamokv_server::storage::{self, Space, Storage};

#[derive(Arbitrary, Debug)]
enum HintKey {
    Raw(Vec<u8>),
    Edited {
        key: Vec<u8>,
        owner: String,
        edits: Vec<Edit>,
    },
}

#[derive(Arbitrary, Debug)]
enum Record {
    Raw(Vec<u8>),
    Edited {
        created_ms: u64,
        seed: u64,
        edits: Vec<Edit>,
    },
    Built {
        created_ms: u64,
        state: WireState,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    key: HintKey,
    record: Record,
    incoming: u64,
}

const KEY: &[u8] = b"fuzz-hint";

fuzz_target!(|input: Input| {
    let hint_key = match input.key {
        HintKey::Raw(b) => b,
        HintKey::Edited { key, owner, edits } => mutate(storage::hint_key(&key, &owner), &edits),
    };
    if let Ok((key, owner)) = storage::parse_hint_key(&hint_key) {
        assert_eq!(
            storage::hint_key(key, owner),
            hint_key,
            "a hint key parsed, but is not the hint key of what it parsed to"
        );
    }

    let raw = match input.record {
        Record::Raw(b) => b,
        Record::Edited {
            created_ms,
            seed,
            edits,
        } => mutate(storage::encode_hint(created_ms, &state(seed)), &edits),
        Record::Built { created_ms, state } => {
            let mut b = created_ms.to_be_bytes().to_vec();
            b.push(1);
            b.extend_from_slice(&state.to_proto().encode_to_vec());
            b
        }
    };
    let decoded = storage::decode_hint(&raw);
    if let Ok((created, s)) = &decoded {
        assert_valid("decoded hint", s);
        let again = storage::decode_hint(&storage::encode_hint(*created, s));
        assert!(
            again.as_ref().is_ok_and(|a| a == &(*created, s.clone())),
            "a decoded hint does not survive its re-encoding: {again:?}"
        );
    }

    // The record found by the local replica as a hint for KEY.
    let n = node();
    let hk = storage::hint_key(KEY, "node-9");
    n.store
        .put_in(Space::Hints, &hk, &raw)
        .expect("memory write");
    let read = n.local.read_with_hints(KEY);
    assert_eq!(read.is_ok(), decoded.is_ok());
    if let Ok(Some(s)) = &read {
        assert_valid("read merged with a hint", s);
    }
    let listed = n.local.hints_from(&hk, 1).expect("memory scan");
    assert_eq!(listed, vec![(hk.clone(), raw.clone())]);
    let stored = block_on(n.local.store_hint(
        Bytes::from_static(KEY),
        "node-9".into(),
        state(input.incoming),
        false,
    ));
    assert_eq!(stored.is_ok(), decoded.is_ok());
    if stored.is_ok() {
        let (_, merged) = storage::decode_hint(
            &n.store
                .get_in(Space::Hints, &hk)
                .expect("memory read")
                .expect("the hint is there"),
        )
        .expect("a hint the replica wrote decodes");
        assert_valid("hint after a merge", &merged);
    }
    // A hint that changed since it was read is not forgotten.
    let changed = [raw.as_slice(), b"+"].concat();
    assert!(n.local.forget_hint(&hk, &changed).is_ok_and(|gone| !gone));
    n.store.delete_in(Space::Hints, &hk).expect("memory delete");
});
