//! client-core's conformance helpers (`dynamokv_client::inspect`), for the SDK tests that check
//! them against `conformance/vectors.json`. Pure functions: no I/O, no size limits. Applications
//! have no need of them: contexts are opaque and routing is the client's business.

use dynamokv_client::inspect;

use crate::MemberInfo;
use crate::error::{DynamoKvError, id_bytes};

/// A key's replicas and, after them, the fallbacks a sloppy quorum uses (node ids).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PreferenceList {
    pub replicas: Vec<String>,
    pub fallbacks: Vec<String>,
}

/// One `(actor, counter)` entry of a version vector.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClockEntry {
    pub actor: u64,
    pub counter: u64,
}

/// What a version context says.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ContextDescription {
    /// Every clock entry, in actor order: every event of the actor up to `counter` was seen.
    pub clock: Vec<ClockEntry>,
    /// Every single event seen beyond its actor's entry, in order.
    pub cloud: Vec<ClockEntry>,
    /// The ids (16 bytes each, big-endian, like `writeId`) of the writes the read showed, in
    /// increasing order.
    pub seen_writes: Vec<Vec<u8>>,
    /// The node id of the replica that answered the read first, when the context records one.
    pub fastest_replica: Option<String>,
}

fn entries(dots: Vec<(u64, u64)>) -> Vec<ClockEntry> {
    dots.into_iter()
        .map(|(actor, counter)| ClockEntry { actor, counter })
        .collect()
}

/// A key's position on the ring (the MD5 digest of the key as a big-endian 128-bit integer),
/// as a decimal string: Swift has no 128-bit integer to carry it.
#[uniffi::export]
pub fn key_position(key: Vec<u8>) -> String {
    inspect::key_position(&key).to_string()
}

/// The partition holding `key` on a ring of `partitions` partitions (a power of two from 1 to
/// 2^20, else `InvalidConfig`).
#[uniffi::export]
pub fn partition_of(key: Vec<u8>, partitions: u32) -> Result<u32, DynamoKvError> {
    Ok(inspect::partition_of(&key, partitions)?)
}

/// The preference list of `key` on the ring of `members` with `partitions` partitions and `n`
/// replicas. A membership that forms no ring, or `n` = 0, is `InvalidConfig`.
#[uniffi::export]
pub fn preference_list(
    members: Vec<MemberInfo>,
    partitions: u32,
    key: Vec<u8>,
    n: u32,
) -> Result<PreferenceList, DynamoKvError> {
    let members: Vec<inspect::RingMember> = members
        .into_iter()
        .map(|m| inspect::RingMember {
            id: m.id,
            address: m.address,
            zone: m.zone,
            weight: m.weight,
        })
        .collect();
    let (replicas, fallbacks) = inspect::preference_list(&members, partitions, &key, n)?;
    Ok(PreferenceList {
        replicas,
        fallbacks,
    })
}

/// Decodes `context`, which a get or put of `key` returned (empty bytes: the empty context).
/// Bytes that are not a context of `key` are `InvalidContext`, with the message a node gives.
#[uniffi::export]
pub fn describe_context(
    key: Vec<u8>,
    context: Vec<u8>,
) -> Result<ContextDescription, DynamoKvError> {
    let d = inspect::describe_context(&key, &context)?;
    Ok(ContextDescription {
        clock: entries(d.clock),
        cloud: entries(d.cloud),
        seen_writes: d.seen_writes.into_iter().map(id_bytes).collect(),
        fastest_replica: d.fastest_replica,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_decimal_and_writes_are_16_bytes() {
        let position: u128 = key_position(b"cart:42".to_vec()).parse().expect("decimal");
        assert_eq!(position, inspect::key_position(b"cart:42"));
        assert_eq!(partition_of(b"cart:42".to_vec(), 1), Ok(0));
        assert!(matches!(
            partition_of(b"k".to_vec(), 3),
            Err(DynamoKvError::InvalidConfig { .. })
        ));
        let empty = describe_context(b"k".to_vec(), vec![]).expect("the empty context");
        assert!(empty.clock.is_empty() && empty.seen_writes.is_empty());
        assert!(matches!(
            describe_context(b"k".to_vec(), b"garbage".to_vec()),
            Err(DynamoKvError::InvalidContext { .. })
        ));
    }
}
