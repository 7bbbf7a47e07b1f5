//! What the client computes from the shared code (`dynamokv-common`), as plain functions: a
//! key's ring position and partition, a key's preference list on a given membership, and what
//! a version context says.
//!
//! These exist for the SDKs' conformance tests: the Python and Node.js bindings wrap them
//! thinly, and their test suites check them against `conformance/vectors.json` (see
//! `conformance/README.md`), as this module's tests do. Applications have no need of them:
//! contexts are opaque and routing is the client's business. None of them checks the key
//! against the size limits, and none touches the network.

use dynamokv_common::{Member, Ring, inspect_context};

use crate::Error;

/// A key's position on the ring: the MD5 digest of the key as a big-endian 128-bit integer.
pub fn key_position(key: &[u8]) -> u128 {
    dynamokv_common::key_position(key)
}

/// The partition holding `key` on a ring of `partitions` partitions (the top `log2 partitions`
/// bits of its position). `partitions` must be a power of two from 1 to 2^20, else
/// [`Error::InvalidConfig`]. It costs as much as building a ring of one node (linear in
/// `partitions`), since it asks the shared ring code.
pub fn partition_of(key: &[u8], partitions: u32) -> Result<u32, Error> {
    let ring = ring(
        partitions,
        vec![Member::new("partition-of", "partition-of:0")],
    )?;
    Ok(ring.partition_of(key))
}

/// A node of a membership, as [`preference_list`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    /// Stable, unique, non-empty name.
    pub id: String,
    /// `host:port`, non-empty (only checked, never connected to).
    pub address: String,
    /// Failure domain; empty when zones are not used.
    pub zone: String,
    /// Capacity weight, at least 1.
    pub weight: u32,
}

/// The preference list of `key` on the ring of `members` with `partitions` partitions and `n`
/// replicas: the ids of the replicas (the partition's owner first, spread over zones when the
/// members have zones), then the ids of the fallbacks a sloppy quorum uses, in ring order.
/// `n` above the number of members is capped.
///
/// A membership that cannot form a ring (no members, a duplicate or empty id, an empty
/// address, weight 0, fewer partitions than members, a partition count that is not a power of
/// two from 1 to 2^20), or `n` = 0, is an [`Error::InvalidConfig`].
pub fn preference_list(
    members: &[RingMember],
    partitions: u32,
    key: &[u8],
    n: u32,
) -> Result<(Vec<String>, Vec<String>), Error> {
    if n == 0 {
        return Err(Error::InvalidConfig {
            message: "n, the number of replicas, must be at least 1".to_string(),
        });
    }
    let members = members
        .iter()
        .map(|m| Member {
            id: m.id.clone(),
            address: m.address.clone(),
            zone: m.zone.clone(),
            weight: m.weight,
        })
        .collect();
    let ring = ring(partitions, members)?;
    let list = ring.preference_list(key, n as usize);
    let ids = |ms: &[&Member]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    Ok((ids(&list.nodes), ids(&list.fallbacks)))
}

/// What a version context says, as [`describe_context`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextDescription {
    /// `(actor, counter)` of every clock entry, in actor order: every event of the actor up to
    /// `counter` was seen (0 when only single events of the actor were, in `cloud`).
    pub clock: Vec<(u64, u64)>,
    /// `(actor, counter)` of every single event seen beyond its actor's entry, in order.
    pub cloud: Vec<(u64, u64)>,
    /// The ids of the writes the read showed, in increasing order.
    pub seen_writes: Vec<u128>,
    /// The node id of the replica that answered the read first, when the context records one.
    pub fastest_replica: Option<String>,
}

/// Decodes `context`, a context that a get or put of `key` returned, as a client can: its
/// signatures are not checked (only nodes hold the keys; a node refuses a context it did not
/// sign). Empty bytes are the empty context (everything empty). Bytes that are not a DynamoKV
/// context, that belong to another key or that hold a version vector no writer produces are
/// an [`Error::InvalidContext`], with the message a node would refuse them with.
pub fn describe_context(key: &[u8], context: &[u8]) -> Result<ContextDescription, Error> {
    let (ctx, fastest_replica) =
        inspect_context(key, context).map_err(|e| Error::InvalidContext {
            message: e.to_string(),
        })?;
    Ok(ContextDescription {
        clock: ctx.clock.iter().map(|(a, c, _)| (a.0, c)).collect(),
        cloud: ctx.clock.cloud().map(|d| (d.actor.0, d.counter)).collect(),
        seen_writes: ctx.seen.iter().map(|w| w.0).collect(),
        fastest_replica,
    })
}

fn ring(partitions: u32, members: Vec<Member>) -> Result<Ring, Error> {
    Ring::new(partitions, members).map_err(|e| Error::InvalidConfig {
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamokv_common::ContextError;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../../conformance/vectors.json");

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("conformance/vectors.json parses")
    }

    fn list<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
        v[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} is not an array in {v}"))
    }

    fn text<'a>(v: &'a Value, field: &str) -> &'a str {
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
    }

    fn number(v: &Value, field: &str) -> u64 {
        v[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
    }

    fn unhex(s: &str) -> Vec<u8> {
        assert_eq!(s.len() % 2, 0, "odd-length hex {s:?}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn key(v: &Value) -> Vec<u8> {
        unhex(text(v, "key_hex"))
    }

    fn strings(v: &Value, field: &str) -> Vec<String> {
        list(v, field)
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    }

    fn dots(v: &Value, field: &str) -> Vec<(u64, u64)> {
        list(v, field)
            .iter()
            .map(|d| {
                let actor = text(d, "actor").parse().expect("a u64 actor");
                (actor, number(d, "counter"))
            })
            .collect()
    }

    fn description(v: &Value) -> ContextDescription {
        ContextDescription {
            clock: dots(v, "clock"),
            cloud: dots(v, "cloud"),
            seen_writes: strings(v, "seen_writes")
                .iter()
                .map(|w| {
                    assert_eq!(w.len(), 32, "write id {w:?}");
                    u128::from_str_radix(w, 16).expect("a hex write id")
                })
                .collect(),
            fastest_replica: v["fastest_replica"].as_str().map(str::to_string),
        }
    }

    #[test]
    fn key_positions_and_partitions_match_the_vectors() {
        let keys = list(&vectors(), "keys").clone();
        assert!(keys.len() >= 20);
        for v in &keys {
            let name = text(v, "name");
            let k = key(v);
            let position: u128 = text(v, "position").parse().expect("a u128 position");
            assert_eq!(key_position(&k), position, "keys/{name}: position");
            let partitions = v["partition"].as_object().expect("partition object");
            assert_eq!(partitions.len(), 3, "keys/{name}");
            for (q, p) in partitions {
                let q: u32 = q.parse().expect("a partition count");
                assert_eq!(
                    partition_of(&k, q),
                    Ok(p.as_u64().expect("a partition") as u32),
                    "keys/{name}: partition for Q = {q}"
                );
            }
        }
    }

    #[test]
    fn preference_lists_match_the_vectors() {
        let rings = list(&vectors(), "rings").clone();
        assert!(rings.len() >= 4);
        for r in &rings {
            let name = text(r, "name");
            let members: Vec<RingMember> = list(r, "members")
                .iter()
                .map(|m| RingMember {
                    id: text(m, "id").to_string(),
                    address: text(m, "address").to_string(),
                    zone: text(m, "zone").to_string(),
                    weight: number(m, "weight") as u32,
                })
                .collect();
            let partitions = number(r, "partitions") as u32;
            let n = number(r, "n") as u32;
            for v in list(r, "keys") {
                let at = format!("rings/{name}/keys/{}", text(v, "name"));
                let k = key(v);
                assert_eq!(
                    partition_of(&k, partitions),
                    Ok(number(v, "partition") as u32),
                    "{at}: partition"
                );
                let (replicas, fallbacks) =
                    preference_list(&members, partitions, &k, n).expect("a valid membership");
                assert_eq!(
                    replicas,
                    strings(v, "preference_list"),
                    "{at}: preference_list"
                );
                assert_eq!(fallbacks, strings(v, "fallbacks"), "{at}: fallbacks");
            }
        }
    }

    #[test]
    fn contexts_decode_as_the_vectors_say() {
        let contexts = list(&vectors(), "contexts").clone();
        assert!(contexts.len() >= 8);
        for v in &contexts {
            let name = text(v, "name");
            let got = describe_context(&key(v), &unhex(text(v, "bytes_hex")));
            assert_eq!(got, Ok(description(&v["decoded"])), "contexts/{name}");
        }
    }

    #[test]
    fn invalid_contexts_are_refused_as_the_vectors_say() {
        let invalid = list(&vectors(), "invalid_contexts").clone();
        assert!(invalid.len() >= 6);
        for v in &invalid {
            let name = text(v, "name");
            let message = match describe_context(&key(v), &unhex(text(v, "bytes_hex"))) {
                Err(Error::InvalidContext { message }) => message,
                other => panic!("invalid_contexts/{name}: {other:?}, not InvalidContext"),
            };
            let (malformed, wrong_key) = (
                ContextError::Malformed.to_string(),
                ContextError::WrongKey.to_string(),
            );
            match text(v, "error") {
                "malformed" => assert_eq!(message, malformed, "invalid_contexts/{name}"),
                "wrong_key" => assert_eq!(message, wrong_key, "invalid_contexts/{name}"),
                "invalid" => assert!(
                    message != malformed && message != wrong_key,
                    "invalid_contexts/{name}: {message}"
                ),
                "not_issued" => assert!(
                    message.contains("not issued by this cluster"),
                    "invalid_contexts/{name}: {message}"
                ),
                kind => panic!("invalid_contexts/{name}: unknown error kind {kind:?}"),
            }
        }
    }

    #[test]
    fn the_empty_context_describes_nothing() {
        let empty = ContextDescription {
            clock: vec![],
            cloud: vec![],
            seen_writes: vec![],
            fastest_replica: None,
        };
        assert_eq!(describe_context(b"k", b""), Ok(empty));
    }

    #[test]
    fn partition_counts_from_one_to_two_to_the_twentieth_are_accepted() {
        let position = key_position(b"cart:42");
        assert_eq!(partition_of(b"cart:42", 1), Ok(0));
        assert_eq!(partition_of(b"cart:42", 2), Ok((position >> 127) as u32));
        assert_eq!(
            partition_of(b"cart:42", 1 << 20),
            Ok((position >> 108) as u32)
        );
        for bad in [0, 3, 100, 1 << 21, u32::MAX] {
            match partition_of(b"cart:42", bad) {
                Err(Error::InvalidConfig { message }) => {
                    assert!(message.contains("power of two"), "{message}")
                }
                other => panic!("{bad} partitions: {other:?}"),
            }
        }
    }

    #[test]
    fn memberships_that_form_no_ring_are_invalid_config() {
        let m = |id: &str, weight: u32| RingMember {
            id: id.to_string(),
            address: format!("{id}:7070"),
            zone: String::new(),
            weight,
        };
        let bad: Vec<(Vec<RingMember>, u32, u32)> = vec![
            (vec![], 8, 3),
            (vec![m("a", 1), m("a", 1)], 8, 3),
            (vec![m("a", 1), m("", 1)], 8, 3),
            (vec![m("a", 0)], 8, 3),
            (vec![m("a", 1), m("b", 1), m("c", 1)], 2, 3),
            (vec![m("a", 1)], 12, 3),
            (vec![m("a", 1)], 8, 0),
        ];
        for (members, partitions, n) in bad {
            let got = preference_list(&members, partitions, b"k", n);
            assert!(
                matches!(got, Err(Error::InvalidConfig { .. })),
                "{members:?}, Q = {partitions}, N = {n}: {got:?}"
            );
        }
        // N above the cluster size is capped.
        let (replicas, fallbacks) =
            preference_list(&[m("a", 1), m("b", 1)], 8, b"k", 5).expect("a valid membership");
        assert_eq!((replicas.len(), fallbacks.len()), (2, 0));
    }
}
