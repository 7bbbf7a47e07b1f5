//! The RocksDB engine (default).
//!
//! Four column families: `data` for replica states, `hints` for states held for other
//! replicas (hinted handoff), `tombstones` indexing the deleted keys, `meta` for node metadata
//! (actor, node id).
//! Every write goes through the write-ahead log before it is acknowledged, so it survives a
//! `kill -9` of the process; `sync_writes` adds an fsync per write for power loss.
//!
//! The data directory and the database directory in it are the owner's only (0700), and the
//! files in it too (0600): values, hints and user records are no other local user's to read.
//! RocksDB creates its files with the process umask, which `dynamokv serve` sets to 0077; a
//! directory left open by an earlier version is closed at the next start.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DataBlockIndexType, Options, WriteOptions,
};

use super::{Entries, Space, Storage, StorageError};

const CF_DATA: &str = "data";
const CF_HINTS: &str = "hints";
const CF_TOMBSTONES: &str = "tombstones";
const CF_META: &str = "meta";
const CF_QUARANTINE: &str = "quarantine";

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

/// Memory of all memtables of a node together.
pub const MEMTABLE_BYTES: usize = 64 << 20;

/// Block cache of a node unless configured otherwise (`block_cache_mb`).
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 128 << 20;

/// Options of the data column family, tuned for point reads and writes of whole keys (every
/// request) while keeping ordered range scans (partition transfer and Merkle trees):
/// - a Bloom filter (10 bits a key, about 1% false positives) in every table, so a get reads
///   only the tables that may hold the key; filters and indexes live in the block cache, those
///   of level 0 pinned there;
/// - a hash index inside each data block next to the binary one, so a lookup in a block is one
///   probe instead of a binary search (range scans still use the binary index);
/// - a whole-key Bloom filter on the memtable, so a get of a key not written lately skips the
///   memtable's skip list;
/// - level sizes that follow the data (`level_compaction_dynamic_level_bytes`), which bounds
///   space amplification.
fn data_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    table.set_data_block_hash_ratio(0.75);
    table.set_format_version(5);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts
}

/// Takes the group's and others' permissions off `path` (setting `mode`), if it has any;
/// whether it had.
fn restrict(path: &Path, mode: u32) -> Result<bool, StorageError> {
    let failed = |e: std::io::Error| {
        StorageError::Engine(format!(
            "cannot make {} readable by its owner only: {e}",
            path.display()
        ))
    };
    let now = std::fs::symlink_metadata(path).map_err(failed)?;
    if now.file_type().is_symlink() || now.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    Ok(true)
}

/// [`restrict`] on the directory `dir` (0700) and everything in it (files 0600); how many
/// were open to others.
fn restrict_tree(dir: &Path) -> Result<usize, StorageError> {
    let mut opened = usize::from(restrict(dir, 0o700)?);
    let listing =
        |e: std::io::Error| StorageError::Engine(format!("cannot list {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let entry = entry.map_err(listing)?;
        let path = entry.path();
        opened += if entry.file_type().map_err(listing)?.is_dir() {
            restrict_tree(&path)?
        } else {
            usize::from(restrict(&path, 0o600)?)
        };
    }
    Ok(opened)
}

impl RocksStorage {
    /// Opens (creating if needed) the database under `dir`, with the default block cache.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<RocksStorage, StorageError> {
        Self::open_with_cache(dir, sync_writes, DEFAULT_BLOCK_CACHE_BYTES)
    }

    /// Opens (creating if needed) the database under `dir` with a block cache of
    /// `block_cache_bytes`.
    pub fn open_with_cache(
        dir: &Path,
        sync_writes: bool,
        block_cache_bytes: usize,
    ) -> Result<RocksStorage, StorageError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StorageError::Engine(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
        let mut opened = usize::from(restrict(dir, 0o700)?);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.increase_parallelism(2);
        // Memtables of every column family together stay under this (RocksDB's write buffer
        // manager flushes the largest past it): with large values each write of a key is a
        // whole new state in the memtable, and the default of 64 MiB per column family, two
        // each, let a node grow by hundreds of MiB (issue 19's large-value storm).
        opts.set_db_write_buffer_size(MEMTABLE_BYTES);
        let cache = Cache::new_lru_cache(block_cache_bytes).map_err(engine)?;
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_DATA, data_options(&cache)),
            ColumnFamilyDescriptor::new(CF_HINTS, Options::default()),
            ColumnFamilyDescriptor::new(CF_TOMBSTONES, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_QUARANTINE, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir.join("rocksdb"), cfs).map_err(engine)?;
        opened += restrict_tree(&dir.join("rocksdb"))?;
        if opened > 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                "{opened} data files and directories were readable by other local users: made them the owner's only (0600 files, 0700 directories)"
            );
        }
        Ok(RocksStorage { db, sync_writes })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Engine(format!("column family {name} missing")))
    }

    fn space(&self, space: Space) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.cf(match space {
            Space::Data => CF_DATA,
            Space::Hints => CF_HINTS,
            Space::Tombstones => CF_TOMBSTONES,
            Space::Quarantine => CF_QUARANTINE,
        })
    }

    fn write_opts(&self, sync: bool) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        w
    }
}

impl Storage for RocksStorage {
    fn get_in(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.space(space)?, key).map_err(engine)
    }

    fn len_in(&self, space: Space, key: &[u8]) -> Result<Option<usize>, StorageError> {
        // Pinned in the block cache or memtable: no copy of the value.
        Ok(self
            .db
            .get_pinned_cf(self.space(space)?, key)
            .map_err(engine)?
            .map(|v| v.len()))
    }

    fn put_in(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(
                self.space(space)?,
                key,
                value,
                &self.write_opts(self.sync_writes),
            )
            .map_err(engine)
    }

    fn delete_in(&self, space: Space, key: &[u8]) -> Result<(), StorageError> {
        self.db
            .delete_cf_opt(self.space(space)?, key, &self.write_opts(self.sync_writes))
            .map_err(engine)
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        // A scan reads many blocks once: keep them from evicting the point reads' working set.
        opts.fill_cache(false);
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.space(space)?, opts, mode) {
            if out.len() == limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
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
        for cf in [CF_DATA, CF_HINTS, CF_TOMBSTONES, CF_META, CF_QUARANTINE] {
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
