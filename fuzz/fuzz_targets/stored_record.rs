//! Stored records (`server/src/storage`): a key's state as the engine holds it, a format byte
//! then the state's encoding, read back by `storage::decode_state` on every read and write and
//! when the Merkle trees are rebuilt at start.
//!
//! Inputs: raw bytes; a valid record edited; a record built field by field. Checks: no panic;
//! a record that decodes is a valid state whose own record decodes to it again; the local
//! replica, finding the bytes under a key, reads it, lists its digest for anti-entropy and
//! writes on top of it (a put with a read's context, a blind delete), or refuses it as corrupt,
//! never panicking, and what it writes is valid.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_common::versioning::WriteId;
use dynamokv_common::{CausalContext, key_position};
use dynamokv_fuzz::{Edit, WireState, assert_valid, block_on, mutate, node, state};
use dynamokv_server::merkle::state_digest;
use dynamokv_server::storage::{self, Storage};

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Edited { seed: u64, edits: Vec<Edit> },
    Built { format: u8, state: WireState },
}

const KEY: &[u8] = b"fuzz-stored-record";

fuzz_target!(|input: Input| {
    let bytes = match input {
        Input::Raw(b) => b,
        Input::Edited { seed, edits } => mutate(storage::encode_state(&state(seed)), &edits),
        Input::Built { format, state } => {
            let mut b = vec![if format < 250 { 1 } else { format }];
            b.extend_from_slice(&state.to_proto().encode_to_vec());
            b
        }
    };
    let decoded = storage::decode_state(&bytes);
    if let Ok(s) = &decoded {
        assert_valid("decoded record", s);
        let _ = (s.live_values(), s.is_deleted(), state_digest(KEY, s));
    }

    // The same bytes found by the local replica under a key.
    let n = node();
    n.store
        .put_raw(&storage::storage_key(KEY), &bytes)
        .expect("memory write");
    let read = block_on(n.local.read(Bytes::from_static(KEY)));
    assert_eq!(read.is_ok(), decoded.is_ok());
    let position = key_position(KEY);
    let listed = n.local.key_digests(position, position, &[], 10);
    if let (Ok(s), Ok((keys, _))) = (&decoded, &listed) {
        assert_eq!(
            keys.as_slice(),
            &[(Bytes::from_static(KEY), state_digest(KEY, s))]
        );
    }
    let _ = n.local.read_with_hints(KEY);

    let context = match &decoded {
        Ok(s) => CausalContext::of_read(s),
        Err(_) => CausalContext::new(),
    };
    let put = block_on(n.local.coordinate(
        Bytes::from_static(KEY),
        context,
        WriteId(1),
        Some(Bytes::from_static(b"v")),
        false,
    ));
    if let Ok((s, _)) = &put {
        assert_valid("state after a put", s);
    }
    n.store
        .put_raw(&storage::storage_key(KEY), &bytes)
        .expect("memory write");
    let delete = block_on(n.local.coordinate(
        Bytes::from_static(KEY),
        CausalContext::new(),
        WriteId(2),
        None,
        false,
    ));
    if let Ok((s, _)) = &delete {
        assert_valid("state after a delete", s);
    }
});
