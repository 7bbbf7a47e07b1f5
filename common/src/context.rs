//! The opaque version context (paper 4.4: "context ... encodes system metadata such as the
//! version of the object").
//!
//! A context is the version vector of what a read saw, bound to the key it was read from. Its
//! bytes are `"DKV" 0x01 | key tag (8 bytes) | prost VersionVector | CRC-32 (4 bytes, LE)`.
//! The key tag (the first 8 bytes of the key's MD5) lets the server refuse a context from
//! another key, and the checksum refuses truncated or hand-edited bytes; both would otherwise
//! make a put silently supersede the wrong versions. Clients treat contexts as opaque bytes.

use prost::Message;
use thiserror::Error;

use crate::ring::key_position;
use crate::versioning::{VersionError, VersionVector};
use dynamokv_proto::v1 as pb;

const MAGIC: &[u8; 4] = b"DKV\x01";
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

/// Encodes the context of `key` for the history `vv`. The empty history encodes as no bytes.
pub fn encode_context(key: &[u8], vv: &VersionVector) -> Vec<u8> {
    if vv.is_empty() {
        return Vec::new();
    }
    let body = vv.to_proto().encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + TAG_LEN + body.len() + CRC_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_tag(key));
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a context that a get of `key` returned. Empty bytes mean "no context".
pub fn decode_context(key: &[u8], bytes: &[u8]) -> Result<VersionVector, ContextError> {
    if bytes.is_empty() {
        return Ok(VersionVector::new());
    }
    if bytes.len() < MAGIC.len() + TAG_LEN + CRC_LEN || !bytes.starts_with(MAGIC) {
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
    let proto = pb::VersionVector::decode(body).map_err(|_| ContextError::Malformed)?;
    Ok(VersionVector::from_proto(&proto)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::Actor;

    fn sample() -> VersionVector {
        let mut vv = VersionVector::new();
        vv.insert(Actor(7), 3, 1_000);
        vv.insert(Actor(u64::MAX), 1, 2_000);
        vv
    }

    #[test]
    fn round_trips() {
        let ctx = encode_context(b"cart:42", &sample());
        assert_eq!(decode_context(b"cart:42", &ctx), Ok(sample()));
    }

    #[test]
    fn empty_history_is_empty_bytes() {
        assert!(encode_context(b"k", &VersionVector::new()).is_empty());
        assert_eq!(decode_context(b"k", b""), Ok(VersionVector::new()));
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
