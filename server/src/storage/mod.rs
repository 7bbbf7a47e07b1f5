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

/// A key-value engine holding replica states and node metadata.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// The raw bytes stored under a storage key.
    fn get_raw(&self, storage_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores raw bytes under a storage key; durable per the engine's settings when it returns.
    fn put_raw(&self, storage_key: &[u8], value: &[u8]) -> Result<(), StorageError>;
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

/// Reads and decodes a key's state.
pub fn read_state(store: &dyn Storage, key: &[u8]) -> Result<Option<VersionedState>, StorageError> {
    let Some(raw) = store.get_raw(&storage_key(key))? else {
        return Ok(None);
    };
    decode_state(&raw).map(Some)
}

/// Encodes and writes a key's state.
pub fn write_state(
    store: &dyn Storage,
    key: &[u8],
    state: &VersionedState,
) -> Result<(), StorageError> {
    store.put_raw(&storage_key(key), &encode_state(state))
}

fn encode_state(state: &VersionedState) -> Vec<u8> {
    let proto = state.to_proto();
    let mut out = Vec::with_capacity(1 + proto.encoded_len());
    out.push(STATE_FORMAT);
    proto.encode(&mut out).expect("Vec grows as needed");
    out
}

fn decode_state(raw: &[u8]) -> Result<VersionedState, StorageError> {
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
