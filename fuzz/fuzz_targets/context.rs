//! Client contexts (`common/src/context.rs`): the opaque bytes a client hands back with a put,
//! signed fragment by fragment by the nodes that issued them (issue 19).
//!
//! Inputs: raw bytes; a body framed as an unsigned context of an earlier release (a good
//! checksum: what a client could forge before contexts were signed); a real context, signed by
//! one or two nodes and assembled as a client does, with its bytes edited; a real context's
//! fragment body edited and signed again by a node key holder. Checks: no panic; an unsigned
//! context never decodes; a context that verifies covers at most what its nodes signed, reads
//! the same to a client, has one encoding, and is refused under another key or other secrets.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_common::{
    CausalContext, ContextKey, combine_contexts, decode_context, inspect_context, key_position,
    sign_context,
};
use dynamokv_fuzz::{ContextParts, Edit, mutate};

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        key: Vec<u8>,
        bytes: Vec<u8>,
    },
    /// An unsigned context of an earlier release, under a good checksum.
    Unsigned {
        key: Vec<u8>,
        first_format: bool,
        body: Vec<u8>,
    },
    /// Real contexts of two nodes, assembled, then edited.
    Edited {
        key: Vec<u8>,
        a: ContextParts,
        b: ContextParts,
        fastest: Option<String>,
        edits: Vec<Edit>,
    },
}

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

fn unsigned(key: &[u8], first_format: bool, body: &[u8]) -> Vec<u8> {
    let mut out = if first_format { b"DKV\x01" } else { b"DKV\x02" }.to_vec();
    out.extend_from_slice(&key_position(key).to_be_bytes()[..8]);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// `bytes` as a context of `key`, against `signed`, the join of what its nodes signed.
fn check(key: &[u8], bytes: &[u8], signed: &CausalContext) {
    let Ok(ctx) = decode_context(key, bytes, keys().as_slice()) else {
        return;
    };
    if bytes.is_empty() {
        assert!(ctx.is_empty());
        return;
    }
    assert!(!ctx.is_empty(), "a non-empty context decoded as empty");
    assert!(
        signed.clock.descends(&ctx.clock) && ctx.seen.is_subset(&signed.seen),
        "a context decoded to more than its nodes signed"
    );
    let (read, fastest) = inspect_context(key, bytes).expect("what verifies, a client reads");
    assert_eq!(read, ctx);
    assert_eq!(
        combine_contexts(key, [bytes], fastest.as_deref()).expect("it combines"),
        bytes,
        "a context decoded but has another encoding"
    );
    let mut other = key.to_vec();
    other.push(0);
    if key_position(&other) >> 64 != key_position(key) >> 64 {
        assert!(decode_context(&other, bytes, keys().as_slice()).is_err());
    }
    let mut wrong = keys();
    wrong[0].secret[0] ^= 1;
    wrong[1].secret[0] ^= 1;
    assert!(decode_context(key, bytes, wrong.as_slice()).is_err());
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { key, bytes } => check(&key, &bytes, &CausalContext::new()),
        Input::Unsigned {
            key,
            first_format,
            body,
        } => {
            let bytes = unsigned(&key, first_format, &body);
            assert!(decode_context(&key, &bytes, keys().as_slice()).is_err());
            assert!(inspect_context(&key, &bytes).is_err());
        }
        Input::Edited {
            key,
            a,
            b,
            fastest,
            edits,
        } => {
            let (a, b) = (a.build(), b.build());
            let ks = keys();
            let parts = [sign_context(&key, &a, &ks[0]), sign_context(&key, &b, &ks[1])];
            let original = combine_contexts(&key, parts.iter().map(|p| p.as_slice()), fastest.as_deref())
                .expect("fresh contexts combine");
            let mut joined = a.clone();
            joined.join(&b);
            // What the nodes sign, a node verifies exactly.
            let decoded = decode_context(&key, &original, ks.as_slice());
            assert_eq!(
                decoded.as_ref().map(|c| c.clone()),
                Ok(joined.clone()),
                "a fresh context does not verify"
            );
            check(&key, &original, &joined);
            let edited = mutate(original, &edits);
            check(&key, &edited, &joined);
            let _ = pb_roundtrip(&edited);
        }
    }
});

/// The envelope of any bytes, parsed as protobuf behind the header: never a panic.
fn pb_roundtrip(bytes: &[u8]) -> Option<usize> {
    let body = bytes.get(12..)?;
    dynamokv_proto::v1::SignedContext::decode(body)
        .ok()
        .map(|s| s.fragments.len())
}
