//! The opaque version context (paper 4.4: "context ... encodes system metadata such as the
//! version of the object").
//!
//! A context is what a read saw ([`CausalContext`]: the version vector it covers and the ids of
//! the writes it showed), bound to the key it was read from. Its bytes are
//! `"DKV" 0x02 | key tag (8 bytes) | prost CausalContext | CRC-32 (4 bytes, LE)`.
//! The key tag (the first 8 bytes of the key's MD5) lets the server refuse a context from
//! another key, and the checksum refuses truncated or hand-edited bytes; both would otherwise
//! make a put silently supersede the wrong versions. Clients treat contexts as opaque bytes.
//! A context of the current format decodes only from exactly the bytes its encoding gives.
//! Contexts of the first format (`"DKV" 0x01`, a bare version vector) are still accepted.

use prost::Message;
use thiserror::Error;

use crate::ring::key_position;
use crate::versioning::{CausalContext, VersionError, VersionVector};
use dynamokv_proto::v1 as pb;

const MAGIC: &[u8; 4] = b"DKV\x02";
const MAGIC_V1: &[u8; 4] = b"DKV\x01";
const TAG_LEN: usize = 8;
const CRC_LEN: usize = 4;

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error(
        "the version context is not a DynamoKV context (bad length, prefix or checksum): pass the context exactly as a get returned it"
    )]
    Malformed,
    #[error(
        "the version context belongs to another key: pass the context that a get of this key returned"
    )]
    WrongKey,
    #[error("the version context is corrupt ({0}): pass the context exactly as a get returned it")]
    Invalid(#[from] VersionError),
}

fn key_tag(key: &[u8]) -> [u8; TAG_LEN] {
    let pos = key_position(key).to_be_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&pos[..TAG_LEN]);
    tag
}

/// Encodes the context of `key` for what a read or write saw. The empty context encodes as no
/// bytes. Timestamps are dropped: they only matter inside replicas.
pub fn encode_context(key: &[u8], ctx: &CausalContext) -> Vec<u8> {
    encode_routed_context(key, ctx, None)
}

/// As [`encode_context`], recording `fastest_replica`, the node id of the replica that answered
/// the read first (read-your-writes, paper 5: the put that follows goes to it). Nodes ignore it.
pub fn encode_routed_context(
    key: &[u8],
    ctx: &CausalContext,
    fastest_replica: Option<&str>,
) -> Vec<u8> {
    if ctx.is_empty() {
        return Vec::new();
    }
    let mut proto = CausalContext {
        clock: ctx.clock.without_timestamps(),
        seen: ctx.seen.clone(),
    }
    .to_proto();
    proto.fastest_replica = fastest_replica.unwrap_or_default().to_string();
    let body = proto.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + TAG_LEN + body.len() + CRC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_tag(key));
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a context that a get or put of `key` returned. Empty bytes mean "no context".
pub fn decode_context(key: &[u8], bytes: &[u8]) -> Result<CausalContext, ContextError> {
    decode_routed_context(key, bytes).map(|(ctx, _)| ctx)
}

/// As [`decode_context`], with the fastest replica the context records, if any.
pub fn decode_routed_context(
    key: &[u8],
    bytes: &[u8],
) -> Result<(CausalContext, Option<String>), ContextError> {
    if bytes.is_empty() {
        return Ok((CausalContext::new(), None));
    }
    if bytes.len() < MAGIC.len() + TAG_LEN + CRC_LEN {
        return Err(ContextError::Malformed);
    }
    let v1 = bytes.starts_with(MAGIC_V1);
    if !v1 && !bytes.starts_with(MAGIC) {
        return Err(ContextError::Malformed);
    }
    let (signed, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let mut crc_bytes = [0u8; CRC_LEN];
    crc_bytes.copy_from_slice(crc);
    if crc32fast::hash(signed) != u32::from_le_bytes(crc_bytes) {
        return Err(ContextError::Malformed);
    }
    let tag = &signed[MAGIC.len()..MAGIC.len() + TAG_LEN];
    if tag != key_tag(key) {
        return Err(ContextError::WrongKey);
    }
    let body = &signed[MAGIC.len() + TAG_LEN..];
    if v1 {
        let proto = pb::VersionVector::decode(body).map_err(|_| ContextError::Malformed)?;
        let ctx = CausalContext {
            clock: VersionVector::from_proto(&proto)?,
            seen: Default::default(),
        };
        if ctx.is_empty() {
            // No writer of the first format sent the empty context as bytes either.
            return Err(ContextError::Malformed);
        }
        return Ok((ctx, None));
    }
    let proto = pb::CausalContext::decode(body).map_err(|_| ContextError::Malformed)?;
    let ctx = CausalContext::from_proto(&proto)?;
    if ctx.is_empty() {
        // No writer produces the empty context as bytes.
        return Err(ContextError::Malformed);
    }
    let fastest = Some(proto.fastest_replica).filter(|f| !f.is_empty());
    // A context has one byte string, its encoding. Other encodings of it behind a good
    // checksum (entries out of order, clock timestamps, unknown fields) were made by hand.
    if encode_routed_context(key, &ctx, fastest.as_deref()) != bytes {
        return Err(ContextError::Malformed);
    }
    Ok((ctx, fastest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, WriteId};

    fn sample() -> CausalContext {
        let mut clock = VersionVector::new();
        clock.insert(Actor(7), 3, 0);
        clock.insert(Actor(u64::MAX), 1, 0);
        clock.add_dot(Dot {
            actor: Actor(7),
            counter: 9,
        });
        CausalContext {
            clock,
            seen: [WriteId(1), WriteId(u128::MAX)].into_iter().collect(),
        }
    }

    #[test]
    fn round_trips_with_single_events_and_seen_writes() {
        let ctx = encode_context(b"cart:42", &sample());
        assert_eq!(decode_context(b"cart:42", &ctx), Ok(sample()));
    }

    #[test]
    fn the_fastest_replica_rides_along_and_changes_nothing_causal() {
        let bytes = encode_routed_context(b"cart:42", &sample(), Some("node-2"));
        assert_eq!(decode_context(b"cart:42", &bytes), Ok(sample()));
        assert_eq!(
            decode_routed_context(b"cart:42", &bytes),
            Ok((sample(), Some("node-2".to_string())))
        );
        let plain = encode_context(b"cart:42", &sample());
        assert_eq!(
            decode_routed_context(b"cart:42", &plain),
            Ok((sample(), None))
        );
    }

    #[test]
    fn timestamps_stay_inside_replicas() {
        let mut with_ts = sample();
        with_ts.clock.insert(Actor(7), 3, 123_456);
        let decoded = decode_context(b"k", &encode_context(b"k", &with_ts)).unwrap();
        assert!(decoded.clock.iter().all(|(_, _, ts)| ts == 0));
    }

    #[test]
    fn empty_context_is_empty_bytes() {
        assert!(encode_context(b"k", &CausalContext::new()).is_empty());
        assert_eq!(decode_context(b"k", b""), Ok(CausalContext::new()));
    }

    #[test]
    fn first_format_contexts_are_still_accepted() {
        let mut vv = VersionVector::new();
        vv.insert(Actor(7), 3, 1_000);
        let body = vv.to_proto().encode_to_vec();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&key_tag(b"k"));
        bytes.extend_from_slice(&body);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let ctx = decode_context(b"k", &bytes).unwrap();
        assert_eq!(ctx.clock.counter(Actor(7)), 3);
        assert!(ctx.seen.is_empty());
    }

    #[test]
    fn refuses_another_keys_context() {
        let ctx = encode_context(b"a", &sample());
        assert_eq!(decode_context(b"b", &ctx), Err(ContextError::WrongKey));
    }

    #[test]
    fn refuses_every_single_byte_corruption_and_truncation() {
        let ctx = encode_context(b"k", &sample());
        for i in 0..ctx.len() {
            let mut bad = ctx.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_context(b"k", &bad).is_err(),
                "flip at byte {i} accepted"
            );
            assert!(decode_context(b"k", &ctx[..i]).is_err() || i == 0);
        }
        assert!(decode_context(b"k", b"not a context").is_err());
    }
}
