//! The in-memory engine, for tests. It stores the same encoded bytes as RocksDB does, so the
//! encoding is exercised either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use super::{Storage, StorageError};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    meta: RwLock<HashMap<String, Vec<u8>>>,
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Engine("memory engine lock poisoned by a panic".into())
}

impl Storage for MemoryStorage {
    fn get_raw(&self, storage_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .data
            .read()
            .map_err(poisoned)?
            .get(storage_key)
            .cloned())
    }

    fn put_raw(&self, storage_key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.data
            .write()
            .map_err(poisoned)?
            .insert(storage_key.to_vec(), value.to_vec());
        Ok(())
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.read().map_err(poisoned)?.get(name).cloned())
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta
            .write()
            .map_err(poisoned)?
            .insert(name.to_string(), value.to_vec());
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
