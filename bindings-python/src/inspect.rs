//! client-core's `inspect` functions (pure, no I/O), for the conformance vectors; the facade
//! `dynamokv.conformance` gives them their Python shape. 128-bit positions and write ids are
//! Python ints.

use pyo3::prelude::*;

use dynamokv_client::inspect::{self, RingMember};

use crate::convert::{Blob, Key};
use crate::error;

/// A key's ring position: the MD5 digest of the key as a big-endian 128-bit integer.
#[pyfunction]
pub(crate) fn key_position(key: Key) -> u128 {
    inspect::key_position(&key.0)
}

/// The partition of `key` on a ring of `partitions` partitions.
#[pyfunction]
pub(crate) fn partition_of(key: Key, partitions: u32) -> PyResult<u32> {
    inspect::partition_of(&key.0, partitions).map_err(error::to_py)
}

/// `(replicas, fallbacks)` node ids of `key` on the ring of `members`, given as
/// `(id, address, zone, weight)` tuples.
#[pyfunction]
pub(crate) fn preference_list(
    members: Vec<(String, String, String, u32)>,
    partitions: u32,
    key: Key,
    n: u32,
) -> PyResult<(Vec<String>, Vec<String>)> {
    let members: Vec<RingMember> = members
        .into_iter()
        .map(|(id, address, zone, weight)| RingMember {
            id,
            address,
            zone,
            weight,
        })
        .collect();
    inspect::preference_list(&members, partitions, &key.0, n).map_err(error::to_py)
}

/// A context's contents as `(clock, cloud, seen_writes, fastest_replica)`: clock and cloud as
/// lists of `(actor, counter)`, the write ids as ints.
#[pyfunction]
#[allow(clippy::type_complexity)] // The tuple the facade unpacks.
pub(crate) fn describe_context(
    key: Key,
    context: Blob,
) -> PyResult<(Vec<(u64, u64)>, Vec<(u64, u64)>, Vec<u128>, Option<String>)> {
    let d = inspect::describe_context(&key.0, &context.0).map_err(error::to_py)?;
    Ok((d.clock, d.cloud, d.seen_writes, d.fastest_replica))
}
