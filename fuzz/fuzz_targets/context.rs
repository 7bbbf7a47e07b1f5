//! Client contexts (`common/src/context.rs`): the opaque bytes a client hands back with a put,
//! and the routed form that records the fastest replica.
//!
//! Inputs: raw bytes; a body sealed under the right prefix, key tag and checksum (what gets
//! past the checksum, so the body decoder behind it is reached); a real context with its bytes
//! edited; a real context's body edited and sealed again (a hand-made context: the checksum
//! catches corruption, not forgery). Checks: no panic; a context that decodes is not empty and
//! re-encodes to exactly its bytes (a first-format context, which carried clock timestamps, to
//! the current format, which decodes to the same context without them); a decoded context is
//! refused under another key.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_common::{decode_routed_context, encode_routed_context, key_position};
use dynamokv_fuzz::{ContextParts, Edit, mutate};

const V1: &[u8; 4] = b"DKV\x01";
const V2: &[u8; 4] = b"DKV\x02";

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        key: Vec<u8>,
        bytes: Vec<u8>,
    },
    Sealed {
        key: Vec<u8>,
        first_format: bool,
        body: Vec<u8>,
    },
    Edited {
        key: Vec<u8>,
        parts: ContextParts,
        fastest: Option<String>,
        edits: Vec<Edit>,
    },
    /// A real context's body edited, then sealed again under a good checksum.
    Resealed {
        key: Vec<u8>,
        parts: ContextParts,
        fastest: Option<String>,
        first_format: bool,
        edits: Vec<Edit>,
    },
}

/// `body` framed as a context of `key`: prefix, key tag, body, checksum.
fn seal(key: &[u8], magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&key_position(key).to_be_bytes()[..8]);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn check(key: &[u8], bytes: &[u8]) {
    let Ok((ctx, fastest)) = decode_routed_context(key, bytes) else {
        return;
    };
    if bytes.is_empty() {
        assert!(ctx.is_empty() && fastest.is_none());
        return;
    }
    assert!(!ctx.is_empty(), "a non-empty context decoded as empty");
    let again = encode_routed_context(key, &ctx, fastest.as_deref());
    if bytes.starts_with(V2) {
        assert_eq!(
            again, bytes,
            "a context decoded but re-encodes to other bytes"
        );
    } else {
        assert!(
            bytes.starts_with(V1),
            "a context without a known prefix decoded"
        );
        assert!(fastest.is_none() && ctx.seen.is_empty());
        let (back, none) = decode_routed_context(key, &again).expect("a re-encoded context");
        assert!(none.is_none());
        assert_eq!(
            back.clock,
            ctx.clock.without_timestamps(),
            "a first-format context does not survive its re-encoding"
        );
    }
    let mut other = key.to_vec();
    other.push(0);
    if key_position(&other) >> 64 != key_position(key) >> 64 {
        assert!(decode_routed_context(&other, bytes).is_err());
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { key, bytes } => check(&key, &bytes),
        Input::Sealed {
            key,
            first_format,
            body,
        } => check(&key, &seal(&key, if first_format { V1 } else { V2 }, &body)),
        Input::Edited {
            key,
            parts,
            fastest,
            edits,
        } => {
            let ctx = parts.build();
            let original = encode_routed_context(&key, &ctx, fastest.as_deref());
            // What the encoder writes, the decoder reads back exactly.
            let decoded = decode_routed_context(&key, &original);
            // The empty context is no bytes, fastest replica or not.
            let fastest = fastest.filter(|f| !f.is_empty() && !ctx.is_empty());
            assert_eq!(
                decoded,
                Ok((ctx, fastest)),
                "a fresh context does not decode"
            );
            check(&key, &original);
            check(&key, &mutate(original, &edits));
        }
        Input::Resealed {
            key,
            parts,
            fastest,
            first_format,
            edits,
        } => {
            let ctx = parts.build();
            let body = if first_format {
                ctx.clock.to_proto().encode_to_vec()
            } else {
                let mut p = ctx.to_proto();
                p.fastest_replica = fastest.unwrap_or_default();
                p.encode_to_vec()
            };
            let magic = if first_format { V1 } else { V2 };
            check(&key, &seal(&key, magic, &mutate(body, &edits)));
        }
    }
});
