//! The in-memory engine, for tests. It stores the same encoded bytes as RocksDB does, so the
//! encoding is exercised either way.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use super::{Entries, Space, Storage, StorageError};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    hints: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    tombstones: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    quarantine: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    meta: RwLock<HashMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    fn space(&self, space: Space) -> &RwLock<BTreeMap<Vec<u8>, Vec<u8>>> {
        match space {
            Space::Data => &self.data,
            Space::Hints => &self.hints,
            Space::Tombstones => &self.tombstones,
            Space::Quarantine => &self.quarantine,
        }
    }
}

fn poisoned<T>(_: T) -> StorageError {
    StorageError::Engine("memory engine lock poisoned by a panic".into())
}

impl Storage for MemoryStorage {
    fn get_in(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .space(space)
            .read()
            .map_err(poisoned)?
            .get(key)
            .cloned())
    }

    fn len_in(&self, space: Space, key: &[u8]) -> Result<Option<usize>, StorageError> {
        Ok(self
            .space(space)
            .read()
            .map_err(poisoned)?
            .get(key)
            .map(Vec::len))
    }

    fn put_in(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.space(space)
            .write()
            .map_err(poisoned)?
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete_in(&self, space: Space, key: &[u8]) -> Result<(), StorageError> {
        self.space(space).write().map_err(poisoned)?.remove(key);
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let map = self.space(space).read().map_err(poisoned)?;
        Ok(map
            .range(start.to_vec()..)
            .take_while(|(k, _)| end.is_none_or(|end| k.as_slice() < end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
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
