//! Local persistence (paper 4.1: "a pluggable local persistence component").
//!
//! An engine stores, per key, the encoded [`VersionedState`] and a little node metadata. Keys
//! are laid out as `ring position (16 bytes, big-endian) | user key`, so each partition is one
//! contiguous key range: range transfer and Merkle trees work on whole partitions by scanning
//! one range.
//!
//! Engines are synchronous. The [`replica`](crate::replica) layer calls them inline for point
//! reads and unsynced writes (microseconds) and from blocking threads for writes that wait for
//! an fsync.

mod group_commit;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use group_commit::GroupCommit;
pub use memory::MemoryStorage;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStorage;

use bytes::Bytes;
use prost::Message;

use dynamokv_common::{VersionedState, key_position};
use dynamokv_proto::v1 as pb;

/// Format version byte in front of every stored state.
const STATE_FORMAT: u8 = 1;

/// A storage failure. Always a server-side problem, never the client's input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("stored state for a key is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "data directory {dir} belongs to node {found:?}, not {expected:?}: point --data-dir elsewhere or use that node id"
    )]
    WrongNode {
        dir: String,
        found: String,
        expected: String,
    },
}

impl StorageError {
    /// Whether a stored record did not decode (as opposed to the engine failing).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StorageError::Corrupt(_))
    }
}

/// The key spaces of an engine, kept apart (RocksDB column families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// This node's replica states, by storage key.
    Data,
    /// Hinted handoff (paper 4.6): states held for other replicas, by [`hint_key`]. Apart from
    /// the data so that they never mix with this node's own replicas, are never served as
    /// them, and never enter its Merkle trees.
    Hints,
    /// The storage keys of states that hold only tombstones (values empty): what tombstone
    /// reaping walks, instead of all the data.
    Tombstones,
    /// Records of `Data` that did not decode, moved aside as they were (by storage key) for an
    /// operator to look at; the key itself is restored from its replicas.
    Quarantine,
}

/// Key-value pairs in key order, as scans return them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value engine holding replica states, hints and node metadata.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// The raw bytes stored under a key of `space`.
    fn get_in(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// How many bytes are stored under a key of `space`, without copying them (a large state's
    /// read is admitted by size before it is made: `load_shedding::ReadBudget`).
    fn len_in(&self, space: Space, key: &[u8]) -> Result<Option<usize>, StorageError> {
        Ok(self.get_in(space, key)?.map(|v| v.len()))
    }
    /// Stores raw bytes under a key of `space`; durable per the engine's settings when it
    /// returns.
    fn put_in(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Removes a key of `space`.
    fn delete_in(&self, space: Space, key: &[u8]) -> Result<(), StorageError>;
    /// At most `limit` entries of `space` with keys from `start` (inclusive) to `end`
    /// (exclusive; `None`: to the end), in key order.
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError>;
    /// The raw bytes stored under a storage key of the data.
    fn get_raw(&self, storage_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_in(Space::Data, storage_key)
    }
    /// Stores raw bytes under a storage key of the data.
    fn put_raw(&self, storage_key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.put_in(Space::Data, storage_key, value)
    }
    /// A metadata value.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores a metadata value, synced to disk.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Flushes buffered writes; called at shutdown.
    fn flush(&self) -> Result<(), StorageError>;
    /// Makes every write that returned so far durable (an fsync of the write-ahead log).
    fn sync_wal(&self) -> Result<(), StorageError>;
}

/// The storage key of a user key: its ring position then the key itself.
pub fn storage_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + key.len());
    out.extend_from_slice(&key_position(key).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The storage key at which the keys of ring position `position` start.
pub fn position_start(position: u128) -> [u8; 16] {
    position.to_be_bytes()
}

/// The user key of a storage key.
pub fn user_key(storage_key: &[u8]) -> &[u8] {
    storage_key.get(16..).unwrap_or_default()
}

/// The key of a hint: the key's storage key (so a key's hints sort together, by ring
/// position), then the owner's node id. The user key's length sits between them, so that no
/// key and owner pair reads as another.
pub fn hint_key(key: &[u8], owner: &str) -> Vec<u8> {
    let mut out = hint_prefix(key);
    out.extend_from_slice(owner.as_bytes());
    out
}

/// What every hint key of `key` starts with.
pub fn hint_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 4 + key.len() + 16);
    out.extend_from_slice(&key_position(key).to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The user key and owner of a hint key, which must be exactly [`hint_key`] of them.
pub fn parse_hint_key(hint_key: &[u8]) -> Result<(&[u8], &str), StorageError> {
    let bad = || StorageError::Corrupt("malformed hint key".into());
    let len = hint_key.get(16..20).ok_or_else(bad)?;
    let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
    let key = hint_key.get(20..20 + len).ok_or_else(bad)?;
    let owner = std::str::from_utf8(&hint_key[20 + len..]).map_err(|_| bad())?;
    if hint_key[..16] != key_position(key).to_be_bytes() {
        return Err(bad());
    }
    Ok((key, owner))
}

/// A stored hint: when it was first stored (milliseconds since the epoch) and the state.
pub fn encode_hint(created_ms: u64, state: &VersionedState) -> Vec<u8> {
    let mut out = created_ms.to_be_bytes().to_vec();
    out.extend_from_slice(&encode_state(state));
    out
}

pub fn decode_hint(raw: &[u8]) -> Result<(u64, VersionedState), StorageError> {
    let (at, state) = raw
        .split_first_chunk::<8>()
        .ok_or_else(|| StorageError::Corrupt("short hint record".into()))?;
    Ok((u64::from_be_bytes(*at), decode_state(state)?))
}

/// Reads and decodes a key's state.
pub fn read_state(store: &dyn Storage, key: &[u8]) -> Result<Option<VersionedState>, StorageError> {
    let Some(raw) = store.get_raw(&storage_key(key))? else {
        return Ok(None);
    };
    decode_owned_state(raw).map(Some)
}

/// As [`decode_state`], taking the record: the state's values are slices of it, not copies
/// (a large state would otherwise be copied once more on every read).
pub fn decode_owned_state(raw: Vec<u8>) -> Result<VersionedState, StorageError> {
    match raw.first() {
        Some(&STATE_FORMAT) => {
            let body = Bytes::from(raw).slice(1..);
            let proto = pb::VersionedState::decode(body)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            VersionedState::from_proto(&proto).map_err(|e| StorageError::Corrupt(e.to_string()))
        }
        _ => decode_state(&raw),
    }
}

/// Encodes and writes a key's state.
pub fn write_state(
    store: &dyn Storage,
    key: &[u8],
    state: &VersionedState,
) -> Result<(), StorageError> {
    store.put_raw(&storage_key(key), &encode_state(state))
}

pub fn encode_state(state: &VersionedState) -> Vec<u8> {
    let proto = state.to_proto();
    let mut out = Vec::with_capacity(1 + proto.encoded_len());
    out.push(STATE_FORMAT);
    proto.encode(&mut out).expect("Vec grows as needed");
    out
}

pub fn decode_state(raw: &[u8]) -> Result<VersionedState, StorageError> {
    match raw.split_first() {
        Some((&STATE_FORMAT, body)) => {
            let proto = pb::VersionedState::decode(Bytes::copy_from_slice(body))
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            VersionedState::from_proto(&proto).map_err(|e| StorageError::Corrupt(e.to_string()))
        }
        Some((other, _)) => Err(StorageError::Corrupt(format!(
            "unknown format byte {other}"
        ))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamokv_common::{Actor, CausalContext, WriteId};

    pub(crate) fn exercise(store: &dyn Storage) {
        assert_eq!(read_state(store, b"k").unwrap(), None);
        let mut s = VersionedState::new();
        s.update(
            &CausalContext::new(),
            WriteId(1),
            Some(Bytes::from_static(b"v")),
            Actor(9),
            1,
            5,
        );
        write_state(store, b"k", &s).unwrap();
        assert_eq!(read_state(store, b"k").unwrap(), Some(s));
        assert_eq!(store.get_meta("m").unwrap(), None);
        store.put_meta("m", b"x").unwrap();
        assert_eq!(store.get_meta("m").unwrap(), Some(b"x".to_vec()));
        // Spaces are apart; scans are ordered and bounded; deletes delete.
        for i in 0..10u8 {
            store.put_in(Space::Hints, &[i], &[i]).unwrap();
        }
        assert_eq!(store.get_in(Space::Data, &[3]).unwrap(), None);
        let some = store.scan(Space::Hints, &[2], Some(&[6]), 3).unwrap();
        assert_eq!(
            some,
            vec![(vec![2], vec![2]), (vec![3], vec![3]), (vec![4], vec![4])]
        );
        let rest = store.scan(Space::Hints, &[8], None, 100).unwrap();
        assert_eq!(rest.len(), 2);
        store.delete_in(Space::Hints, &[8]).unwrap();
        assert_eq!(store.scan(Space::Hints, &[8], None, 100).unwrap().len(), 1);
        assert_eq!(store.scan(Space::Data, &[], None, 100).unwrap().len(), 1);
        store.flush().unwrap();
    }

    #[test]
    fn storage_keys_sort_by_ring_position() {
        let mut keys: Vec<Vec<u8>> = (0..100).map(|i| format!("k{i}").into_bytes()).collect();
        keys.sort_by_key(|k| storage_key(k));
        for w in keys.windows(2) {
            assert!(key_position(&w[0]) <= key_position(&w[1]));
        }
    }

    #[test]
    fn hint_keys_round_trip_and_sort_with_their_key() {
        let k = hint_key(b"ab", "node-1");
        assert_eq!(parse_hint_key(&k).unwrap(), (&b"ab"[..], "node-1"));
        assert!(k.starts_with(&hint_prefix(b"ab")));
        assert!(!hint_key(b"a", "bnode").starts_with(&hint_prefix(b"ab")));
        assert!(parse_hint_key(b"short").is_err());
        let mut s = VersionedState::new();
        s.update(&CausalContext::new(), WriteId(1), None, Actor(1), 1, 5);
        assert_eq!(decode_hint(&encode_hint(77, &s)).unwrap(), (77, s));
        assert!(decode_hint(b"1234").is_err());
    }

    #[test]
    fn memory_engine_round_trips() {
        exercise(&MemoryStorage::default());
    }

    #[test]
    fn corrupt_records_are_reported() {
        assert!(decode_state(b"").is_err());
        assert!(decode_state(&[9, 1, 2]).is_err());
        assert!(decode_state(&[STATE_FORMAT, 0xff, 0xff]).is_err());
    }
}
