//! Hardened decoders (issue 11), node side: a stored record, a hint, a gossiped membership view
//! or digest, a config file. Arbitrary bytes and mutated valid encodings are decoded without a
//! panic, and a view that decodes is one the node can merge and compute a ring from.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use dynamokv_common::versioning::{Actor, WriteId};
use dynamokv_common::{CausalContext, VersionedState};
use dynamokv_proto::v1 as pb;
use dynamokv_server::config::Config;
use dynamokv_server::membership_state::{Digest, MemberRecord, MembershipState};
use dynamokv_server::storage;

fn state(seed: u64) -> VersionedState {
    let mut s = VersionedState::new();
    for i in 0..(seed % 3 + 1) {
        let _ = s.update(
            &CausalContext::new(),
            WriteId(u128::from(seed) << 8 | u128::from(i)),
            Some(Bytes::from(format!("v{seed}-{i}"))),
            Actor(seed % 5 + 1),
            0,
            1_000 + i,
        );
    }
    s
}

fn view(seed: u64) -> MembershipState {
    let n = (seed % 4 + 1) as usize;
    let mut v = MembershipState::of_members(
        "hostile",
        64,
        (0..n).map(|i| MemberRecord::new(format!("node-{i}"), format!("127.0.0.1:{}", 7000 + i))),
    );
    v.set_ring_seen("node-0");
    v
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, x, how) in edits {
        if bytes.is_empty() {
            bytes.push(x);
            continue;
        }
        let i = at % bytes.len();
        match how % 3 {
            0 => bytes[i] ^= x.max(1),
            1 => bytes.truncate(i),
            _ => bytes.insert(i, x),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

#[test]
fn a_hint_key_parses_only_if_it_is_the_hint_key_of_what_it_names() {
    // Found by `cargo fuzz run hint`: the key's ring position at the front was not checked, so
    // a hint key with another position parsed, naming a key whose hints are never found there.
    let good = storage::hint_key(b"cart", "node-2");
    assert_eq!(
        storage::parse_hint_key(&good).unwrap(),
        (&b"cart"[..], "node-2")
    );
    let mut moved = good.clone();
    moved[0] ^= 1;
    assert!(storage::parse_hint_key(&moved).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn hint_keys_parse_only_as_the_hint_key_of_what_they_name(
        key in prop::collection::vec(any::<u8>(), 0..16),
        owner in "[a-z0-9-]{0,12}",
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        for bytes in [mutate(storage::hint_key(&key, &owner), &e), junk] {
            if let Ok((k, o)) = storage::parse_hint_key(&bytes) {
                prop_assert_eq!(storage::hint_key(k, o), bytes.clone());
            }
        }
    }

    #[test]
    fn stored_records_and_hints_decode_without_panicking(
        seed in any::<u64>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let record = storage::encode_state(&state(seed));
        let hint = storage::encode_hint(42, &state(seed));
        for bytes in [mutate(record, &e), mutate(hint, &e), junk] {
            if let Ok(s) = storage::decode_state(&bytes) {
                let _ = storage::encode_state(&s);
                let _ = s.live_values();
            }
            let _ = storage::decode_hint(&bytes);
            let _ = storage::parse_hint_key(&bytes);
        }
    }

    #[test]
    fn gossiped_views_and_digests_decode_without_panicking_and_a_decoded_view_is_usable(
        seed in any::<u64>(),
        e in edits(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let ours = view(seed);
        let theirs = mutate(view(seed.wrapping_add(1)).to_proto().encode_to_vec(), &e);
        let digest = mutate(ours.digest().to_proto().encode_to_vec(), &e);
        for bytes in [theirs, digest, junk] {
            if let Ok(proto) = pb::MembershipState::decode(bytes.as_slice())
                && let Ok(other) = MembershipState::from_proto(&proto)
            {
                let mut merged = ours.clone();
                let _ = merged.merge(&other);
                let _ = merged.ring();
                let _ = merged.previous_ring();
                let _ = merged.digest();
            }
            if let Ok(proto) = pb::MembershipDigest::decode(bytes.as_slice())
                && let Ok(d) = Digest::from_proto(&proto)
            {
                let _ = ours.delta_for(&d);
            }
        }
    }

    #[test]
    fn config_text_is_parsed_or_refused_without_panicking(
        e in edits(),
        junk in "\\PC{0,200}",
    ) {
        let base = "node_id = \"node-1\"\nlisten = \"127.0.0.1:7070\"\n[cluster]\nname = \"c\"\npartitions = 64\nseeds = [\"127.0.0.1:7071\"]\n[limits]\nmax_key_bytes = 4096\n";
        let mutated = String::from_utf8_lossy(&mutate(base.as_bytes().to_vec(), &e)).into_owned();
        for text in [mutated, junk] {
            if let Ok(c) = toml::from_str::<Config>(&text) {
                let _ = c.validate();
            }
        }
    }
}
