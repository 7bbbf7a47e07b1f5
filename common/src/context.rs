//! The opaque version context (paper 4.4: "context ... encodes system metadata such as the
//! version of the object"), authenticated by the nodes that issue it.
//!
//! A context is what a read saw ([`CausalContext`]: the version vector it covers and the ids of
//! the writes it showed), bound to the key it was read from. A put with a context supersedes
//! what that context covers, so a context a client made up could make a node issue counters
//! past its own (no later write of it would fit) or count another node's future writes as
//! already seen (they would be silently superseded). Nodes therefore sign what they hand out:
//!
//! ```text
//! "DKV" 0x03 | key tag (8 bytes) | protobuf SignedContext { fragments, fastest_replica }
//! fragment = { signer (node id), key_id, body: protobuf CausalContext, mac (16 bytes) }
//! mac      = HMAC-SHA256(secret of key_id, "dynamokv context v3" 0 | len(key) | key | signer 0
//!                        | key_id | body), first 16 bytes
//! ```
//!
//! A node's answer carries one fragment, signed with that node's current context key. A client
//! that coordinates a read itself (paper 6.4) gets one fragment from each replica and puts them
//! side by side ([`combine_contexts`]); the context they make is the join of the fragments.
//! A node verifies every fragment with the key its signer gossiped ([`ContextKeys`]), so a
//! context decodes only if every part of it was issued by a node of the cluster for this very
//! key. The key tag (the first 8 bytes of the key's MD5) lets anyone tell a context of another
//! key without a secret. `fastest_replica` is routing advice a client adds (the put that
//! follows goes to that replica, paper 5); it is outside the MACs and nodes ignore it.
//!
//! A context has one byte string, its encoding: fragments sorted, none repeated, no unknown
//! fields. Unsigned contexts of earlier releases (`"DKV" 0x01`, `0x02`) are refused.

use prost::Message;
use ring::hmac;
use thiserror::Error;

use crate::ring::key_position;
use crate::versioning::{CausalContext, VersionError};
use dynamokv_proto::v1 as pb;

const MAGIC: &[u8; 4] = b"DKV\x03";
/// Unsigned contexts of earlier releases.
const OLD_MAGICS: [&[u8; 4]; 2] = [b"DKV\x01", b"DKV\x02"];
const TAG_LEN: usize = 8;
/// Bytes of a fragment's MAC: HMAC-SHA256 truncated to 128 bits.
pub const MAC_LEN: usize = 16;
/// Bytes of a context key's secret.
pub const SECRET_LEN: usize = 32;
/// The most fragments a context may carry: one per replica a client-coordinated read counted
/// (R, or R in each ring during a handover), with room to spare.
pub const MAX_FRAGMENTS: usize = 16;
const MAC_DOMAIN: &[u8] = b"dynamokv context v3\0";

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ContextError {
    #[error(
        "the version context is not a DynamoKV context (bad length, prefix or encoding): pass the context exactly as a get returned it"
    )]
    Malformed,
    #[error(
        "the version context belongs to another key: pass the context that a get of this key returned"
    )]
    WrongKey,
    #[error("the version context is corrupt ({0}): pass the context exactly as a get returned it")]
    Invalid(#[from] VersionError),
    #[error(
        "the version context was not issued by this cluster ({0}): pass the context exactly as a get of this key returned it, or read the key again"
    )]
    NotIssued(&'static str),
    #[error(
        "the version context was signed with a context key that was retired more than the grace period ago: read the key again for a fresh context"
    )]
    Expired,
    /// Signed with a key of `signer` this node has not learned yet (gossip may bring it): the
    /// caller may ask `signer` for its keys and try again, once.
    #[error(
        "the version context names context key {key_id:016x} of node {signer:?}, which this node does not know"
    )]
    UnknownKey { signer: String, key_id: u64 },
}

/// A secret a node signs contexts with. Its `Debug` shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextKey {
    /// The node that signs with it.
    pub signer: String,
    pub id: u64,
    pub secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextKey")
            .field("signer", &self.signer)
            .field("id", &format_args!("{:016x}", self.id))
            .finish_non_exhaustive()
    }
}

/// What a node knows of one signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookup<'a> {
    /// A key that verifies contexts now.
    Valid(&'a [u8; SECRET_LEN]),
    /// A key its signer replaced more than the grace period ago.
    Expired,
    /// No key of that id and signer is known.
    Unknown,
}

/// The keys a node accepts contexts under.
pub trait ContextKeys {
    fn lookup(&self, signer: &str, key_id: u64) -> KeyLookup<'_>;
}

/// Every key given, valid forever (tests, tools).
impl ContextKeys for [ContextKey] {
    fn lookup(&self, signer: &str, key_id: u64) -> KeyLookup<'_> {
        self.iter()
            .find(|k| k.signer == signer && k.id == key_id)
            .map_or(KeyLookup::Unknown, |k| KeyLookup::Valid(&k.secret))
    }
}

fn key_tag(key: &[u8]) -> [u8; TAG_LEN] {
    let pos = key_position(key).to_be_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&pos[..TAG_LEN]);
    tag
}

fn mac(secret: &[u8; SECRET_LEN], key: &[u8], signer: &str, key_id: u64, body: &[u8]) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(MAC_DOMAIN);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key);
    ctx.update(signer.as_bytes());
    ctx.update(&[0]);
    ctx.update(&key_id.to_be_bytes());
    ctx.update(body);
    ctx.sign().as_ref()[..MAC_LEN].to_vec()
}

/// Equal byte strings, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn body_of(ctx: &CausalContext) -> Vec<u8> {
    CausalContext {
        clock: ctx.clock.without_timestamps(),
        seen: ctx.seen.clone(),
    }
    .to_proto()
    .encode_to_vec()
}

fn frame(key: &[u8], signed: &pb::SignedContext) -> Vec<u8> {
    let body = signed.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + TAG_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key_tag(key));
    out.extend_from_slice(&body);
    out
}

/// Sorts fragments into their one order and drops repeated bodies (two replicas that hold the
/// same state sign the same body; one signature of it is enough).
fn canonical(mut fragments: Vec<pb::ContextFragment>) -> Vec<pb::ContextFragment> {
    fragments.sort_by(|a, b| {
        (&a.body, &a.signer, a.key_id, &a.mac).cmp(&(&b.body, &b.signer, b.key_id, &b.mac))
    });
    fragments.dedup_by(|later, first| later.body == first.body);
    fragments
}

/// The context of `key` for what a read or write saw, signed with `signing`. The empty context
/// encodes as no bytes. Timestamps are dropped: they only matter inside replicas.
pub fn sign_context(key: &[u8], ctx: &CausalContext, signing: &ContextKey) -> Vec<u8> {
    if ctx.is_empty() {
        return Vec::new();
    }
    let body = body_of(ctx);
    let fragment = pb::ContextFragment {
        signer: signing.signer.clone(),
        key_id: signing.id,
        mac: mac(&signing.secret, key, &signing.signer, signing.id, &body).into(),
        body: body.into(),
    };
    frame(
        key,
        &pb::SignedContext {
            fragments: vec![fragment],
            fastest_replica: String::new(),
        },
    )
}

/// The envelope of a context of `key`, checked for shape only (no MAC is checked): `None` for
/// the empty context.
fn parse(key: &[u8], bytes: &[u8]) -> Result<Option<pb::SignedContext>, ContextError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() < MAGIC.len() + TAG_LEN {
        return Err(ContextError::Malformed);
    }
    if OLD_MAGICS.iter().any(|m| bytes.starts_with(*m)) {
        return Err(ContextError::NotIssued(
            "an unsigned context of an earlier release",
        ));
    }
    if !bytes.starts_with(MAGIC) {
        return Err(ContextError::Malformed);
    }
    if bytes[MAGIC.len()..MAGIC.len() + TAG_LEN] != key_tag(key) {
        return Err(ContextError::WrongKey);
    }
    let signed = pb::SignedContext::decode(&bytes[MAGIC.len() + TAG_LEN..])
        .map_err(|_| ContextError::Malformed)?;
    if signed.fragments.is_empty() || signed.fragments.len() > MAX_FRAGMENTS {
        return Err(ContextError::Malformed);
    }
    for f in &signed.fragments {
        if f.signer.is_empty() || f.mac.len() != MAC_LEN || f.body.is_empty() {
            return Err(ContextError::Malformed);
        }
    }
    // One byte string per context: other encodings of it (fragments out of order or repeated,
    // unknown fields) were made by hand.
    let again = pb::SignedContext {
        fragments: canonical(signed.fragments.clone()),
        fastest_replica: signed.fastest_replica.clone(),
    };
    if frame(key, &again) != bytes {
        return Err(ContextError::Malformed);
    }
    Ok(Some(signed))
}

/// A fragment's causal context, refusing bodies that are not exactly what a node signs.
fn fragment_context(f: &pb::ContextFragment) -> Result<CausalContext, ContextError> {
    let proto = pb::CausalContext::decode(f.body.as_ref()).map_err(|_| ContextError::Malformed)?;
    let ctx = CausalContext::from_proto(&proto)?;
    if ctx.is_empty() || body_of(&ctx) != f.body.as_ref() {
        return Err(ContextError::Malformed);
    }
    Ok(ctx)
}

/// Decodes and verifies a context that a get or put of `key` returned: every fragment must
/// carry the MAC of a key in `keys`. Empty bytes mean "no context". The result is the join of
/// the fragments.
pub fn decode_context(
    key: &[u8],
    bytes: &[u8],
    keys: &(impl ContextKeys + ?Sized),
) -> Result<CausalContext, ContextError> {
    let Some(signed) = parse(key, bytes)? else {
        return Ok(CausalContext::new());
    };
    let mut joined = CausalContext::new();
    for f in &signed.fragments {
        let secret = match keys.lookup(&f.signer, f.key_id) {
            KeyLookup::Valid(secret) => secret,
            KeyLookup::Expired => return Err(ContextError::Expired),
            KeyLookup::Unknown => {
                return Err(ContextError::UnknownKey {
                    signer: f.signer.clone(),
                    key_id: f.key_id,
                });
            }
        };
        if !same(&mac(secret, key, &f.signer, f.key_id, &f.body), &f.mac) {
            return Err(ContextError::NotIssued("its signature does not verify"));
        }
        joined.join(&fragment_context(f)?);
    }
    Ok(joined)
}

/// What a context of `key` says, WITHOUT checking its signatures: the join of its fragments
/// and the fastest replica it records. For clients (routing, conformance checks) and tools;
/// a node must use [`decode_context`].
pub fn inspect_context(
    key: &[u8],
    bytes: &[u8],
) -> Result<(CausalContext, Option<String>), ContextError> {
    let Some(signed) = parse(key, bytes)? else {
        return Ok((CausalContext::new(), None));
    };
    let mut joined = CausalContext::new();
    for f in &signed.fragments {
        joined.join(&fragment_context(f)?);
    }
    let fastest = Some(signed.fastest_replica).filter(|f| !f.is_empty());
    Ok((joined, fastest))
}

/// The context of a read a client coordinated (paper 6.4): the fragments of `contexts` (each a
/// replica's answer for `key`; empty ones are skipped) side by side, with `fastest_replica`,
/// the node id of the replica that answered first. Nothing is signed here: every fragment
/// keeps the signature of the node that issued it.
pub fn combine_contexts<'a>(
    key: &[u8],
    contexts: impl IntoIterator<Item = &'a [u8]>,
    fastest_replica: Option<&str>,
) -> Result<Vec<u8>, ContextError> {
    let mut fragments = Vec::new();
    for bytes in contexts {
        if let Some(signed) = parse(key, bytes)? {
            fragments.extend(signed.fragments);
        }
    }
    if fragments.is_empty() {
        return Ok(Vec::new());
    }
    let fragments = canonical(fragments);
    if fragments.len() > MAX_FRAGMENTS {
        return Err(ContextError::Malformed);
    }
    Ok(frame(
        key,
        &pb::SignedContext {
            fragments,
            fastest_replica: fastest_replica.unwrap_or_default().to_string(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, VersionVector, WriteId};

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

    fn other() -> CausalContext {
        let mut clock = VersionVector::new();
        clock.insert(Actor(8), 5, 0);
        CausalContext {
            clock,
            seen: [WriteId(2)].into_iter().collect(),
        }
    }

    fn key_of(signer: &str, id: u64, fill: u8) -> ContextKey {
        ContextKey {
            signer: signer.into(),
            id,
            secret: [fill; SECRET_LEN],
        }
    }

    fn keys() -> Vec<ContextKey> {
        vec![key_of("node-a", 1, 0xaa), key_of("node-b", 2, 0xbb)]
    }

    #[test]
    fn round_trips_with_single_events_and_seen_writes() {
        let ks = keys();
        let ctx = sign_context(b"cart:42", &sample(), &ks[0]);
        assert_eq!(
            decode_context(b"cart:42", &ctx, ks.as_slice()),
            Ok(sample())
        );
        assert_eq!(inspect_context(b"cart:42", &ctx), Ok((sample(), None)));
    }

    #[test]
    fn a_client_combines_replicas_fragments_and_the_node_joins_them() {
        let ks = keys();
        let a = sign_context(b"k", &sample(), &ks[0]);
        let b = sign_context(b"k", &other(), &ks[1]);
        let combined =
            combine_contexts(b"k", [a.as_slice(), b.as_slice(), &[]], Some("node-b")).unwrap();
        let mut want = sample();
        want.join(&other());
        assert_eq!(
            decode_context(b"k", &combined, ks.as_slice()),
            Ok(want.clone())
        );
        assert_eq!(
            inspect_context(b"k", &combined),
            Ok((want, Some("node-b".to_string())))
        );
        // The same in any order, and a repeated body once.
        let again = combine_contexts(
            b"k",
            [b.as_slice(), a.as_slice(), a.as_slice()],
            Some("node-b"),
        )
        .unwrap();
        assert_eq!(again, combined);
        let same_state = sign_context(b"k", &sample(), &ks[1]);
        let one = combine_contexts(b"k", [a.as_slice(), same_state.as_slice()], None).unwrap();
        assert_eq!(parse(b"k", &one).unwrap().unwrap().fragments.len(), 1);
    }

    #[test]
    fn timestamps_stay_inside_replicas() {
        let mut with_ts = sample();
        with_ts.clock.insert(Actor(7), 3, 123_456);
        let ks = keys();
        let decoded =
            decode_context(b"k", &sign_context(b"k", &with_ts, &ks[0]), ks.as_slice()).unwrap();
        assert!(decoded.clock.iter().all(|(_, _, ts)| ts == 0));
    }

    #[test]
    fn empty_context_is_empty_bytes() {
        let ks = keys();
        assert!(sign_context(b"k", &CausalContext::new(), &ks[0]).is_empty());
        assert_eq!(
            decode_context(b"k", b"", ks.as_slice()),
            Ok(CausalContext::new())
        );
        assert_eq!(combine_contexts(b"k", [&b""[..]], None), Ok(Vec::new()));
    }

    #[test]
    fn refuses_another_keys_context() {
        let ks = keys();
        let ctx = sign_context(b"a", &sample(), &ks[0]);
        assert_eq!(
            decode_context(b"b", &ctx, ks.as_slice()),
            Err(ContextError::WrongKey)
        );
    }

    #[test]
    fn a_context_forged_without_the_secret_is_not_issued() {
        let ks = keys();
        // Whoever lacks the secret can only guess: another secret, the same key id.
        let forger = key_of("node-a", 1, 0x00);
        let forged = sign_context(b"k", &sample(), &forger);
        assert_eq!(
            decode_context(b"k", &forged, ks.as_slice()),
            Err(ContextError::NotIssued("its signature does not verify"))
        );
        // A genuine fragment next to a forged one does not carry it.
        let genuine = sign_context(b"k", &other(), &ks[1]);
        let mixed = combine_contexts(b"k", [genuine.as_slice(), forged.as_slice()], None).unwrap();
        assert!(decode_context(b"k", &mixed, ks.as_slice()).is_err());
        // A key id nobody gossiped is reported so the node can ask the signer, once.
        let unknown = sign_context(b"k", &sample(), &key_of("node-c", 9, 1));
        assert_eq!(
            decode_context(b"k", &unknown, ks.as_slice()),
            Err(ContextError::UnknownKey {
                signer: "node-c".into(),
                key_id: 9
            })
        );
        // The signature binds the whole key, not only its tag.
        let ctx = sign_context(b"k", &sample(), &ks[0]);
        let mut parsed = parse(b"k", &ctx).unwrap().unwrap();
        let body = parsed.fragments[0].body.clone();
        parsed.fragments[0].mac = mac(&ks[0].secret, b"other key", "node-a", 1, &body).into();
        assert!(decode_context(b"k", &frame(b"k", &parsed), ks.as_slice()).is_err());
    }

    #[test]
    fn unsigned_contexts_of_earlier_releases_are_refused() {
        let ks = keys();
        for magic in OLD_MAGICS {
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&key_tag(b"k"));
            bytes.extend_from_slice(&sample().to_proto().encode_to_vec());
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            assert!(matches!(
                decode_context(b"k", &bytes, ks.as_slice()),
                Err(ContextError::NotIssued(_))
            ));
        }
    }

    #[test]
    fn refuses_every_single_byte_corruption_and_truncation() {
        let ks = keys();
        let a = sign_context(b"k", &sample(), &ks[0]);
        let b = sign_context(b"k", &other(), &ks[1]);
        let ctx = combine_contexts(b"k", [a.as_slice(), b.as_slice()], Some("node-a")).unwrap();
        let fastest_at = ctx.len() - "node-a".len();
        for i in 0..ctx.len() {
            let mut bad = ctx.clone();
            bad[i] ^= 0x40;
            // The fastest replica is unsigned routing advice: another name there is still
            // a valid context (of the same causal content).
            if i >= fastest_at {
                assert_eq!(
                    decode_context(b"k", &bad, ks.as_slice()).ok(),
                    decode_context(b"k", &ctx, ks.as_slice()).ok()
                );
                continue;
            }
            assert!(
                decode_context(b"k", &bad, ks.as_slice()).is_err(),
                "flip at byte {i} accepted"
            );
            // A cut at a fragment's end drops what follows: the rest is still what nodes
            // signed, a context covering less.
            if i > 0
                && let Ok(less) = decode_context(b"k", &ctx[..i], ks.as_slice())
            {
                let full = decode_context(b"k", &ctx, ks.as_slice()).unwrap();
                assert!(full.clock.descends(&less.clock) && less.seen.is_subset(&full.seen));
            }
        }
        assert!(decode_context(b"k", b"not a context", ks.as_slice()).is_err());
    }

    #[test]
    fn a_signed_body_decodes_only_from_its_own_encoding() {
        // Whatever a key holder signs, a body is taken only in the one encoding nodes write:
        // entries in order, no timestamps, no unknown fields, no fastest replica inside.
        let ks = keys();
        let good = sample().to_proto();
        let mut reordered = good.clone();
        reordered.clock.as_mut().unwrap().entries.reverse();
        let mut timestamped = good.clone();
        timestamped.clock.as_mut().unwrap().entries[0].timestamp_ms = u64::MAX;
        let mut routed = good.clone();
        routed.fastest_replica = "node-a".into();
        let mut unknown_field = good.encode_to_vec();
        unknown_field.extend_from_slice(&[0x78, 0x01]);
        for body in [
            reordered.encode_to_vec(),
            timestamped.encode_to_vec(),
            routed.encode_to_vec(),
            unknown_field,
            Vec::new(),
        ] {
            let k = &ks[0];
            let fragment = pb::ContextFragment {
                signer: k.signer.clone(),
                key_id: k.id,
                mac: mac(&k.secret, b"k", &k.signer, k.id, &body).into(),
                body: body.into(),
            };
            let bytes = frame(
                b"k",
                &pb::SignedContext {
                    fragments: vec![fragment],
                    fastest_replica: String::new(),
                },
            );
            assert!(decode_context(b"k", &bytes, ks.as_slice()).is_err());
        }
    }

    #[test]
    fn too_many_fragments_are_refused() {
        let ks: Vec<ContextKey> = (0..=MAX_FRAGMENTS as u64)
            .map(|i| key_of(&format!("n{i}"), i, i as u8))
            .collect();
        let parts: Vec<Vec<u8>> = ks
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut c = other();
                c.clock.insert(Actor(100 + i as u64), 1, 0);
                sign_context(b"k", &c, k)
            })
            .collect();
        assert_eq!(
            combine_contexts(b"k", parts.iter().map(|p| p.as_slice()), None),
            Err(ContextError::Malformed)
        );
    }
}
