//! The RocksDB engine (default).
//!
//! Two column families: `data` for replica states, `meta` for node metadata (actor, node id).
//! Every write goes through the write-ahead log before it is acknowledged, so it survives a
//! `kill -9` of the process; `sync_writes` adds an fsync per write for power loss.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteOptions};

use super::{Storage, StorageError};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";

pub struct RocksStorage {
    db: DB,
    sync_writes: bool,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.db.path())
            .field("sync_writes", &self.sync_writes)
            .finish()
    }
}

fn engine(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.into_string())
}

impl RocksStorage {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<RocksStorage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::Engine(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_DATA, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir.join("rocksdb"), cfs).map_err(engine)?;
        Ok(RocksStorage { db, sync_writes })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Engine(format!("column family {name} missing")))
    }

    fn write_opts(&self, sync: bool) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        w
    }
}

impl Storage for RocksStorage {
    fn get_raw(&self, storage_key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(CF_DATA)?, storage_key)
            .map_err(engine)
    }

    fn put_raw(&self, storage_key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(
                self.cf(CF_DATA)?,
                storage_key,
                value,
                &self.write_opts(self.sync_writes),
            )
            .map_err(engine)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(CF_META)?, name).map_err(engine)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.cf(CF_META)?, name, value, &self.write_opts(true))
            .map_err(engine)
    }

    fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine)?;
        for cf in [CF_DATA, CF_META] {
            self.db.flush_cf(self.cf(cf)?).map_err(engine)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_engine_round_trips_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RocksStorage::open(dir.path(), false).unwrap();
            super::super::tests::exercise(&store);
        }
        let store = RocksStorage::open(dir.path(), false).unwrap();
        assert_eq!(store.get_meta("m").unwrap(), Some(b"x".to_vec()));
    }
}
