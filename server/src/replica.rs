//! This node's replica of the keys it holds: the read-modify-write steps of paper 4.4 done
//! atomically per key against local storage.
//!
//! A coordinator's write ([`LocalReplica::coordinate`]) and a merge of another replica's state
//! ([`LocalReplica::merge`]) both read the key's state, change it and write it back under a
//! per-key lock (striped), so concurrent writes to one key never lose each other. Storage calls
//! run on blocking threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use dynamokv_common::{Actor, VersionVector, VersionedState, key_position};

use crate::storage::{self, Storage, StorageError};

const LOCK_STRIPES: usize = 1024;
const META_ACTOR: &str = "actor";
const META_NODE_ID: &str = "node_id";

/// This node's local replica.
#[derive(Debug)]
pub struct LocalReplica {
    store: Arc<dyn Storage>,
    actor: Actor,
    stripes: Vec<Mutex<()>>,
    max_vector_entries: usize,
    truncations: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl LocalReplica {
    /// Opens the replica on `store`, drawing a fresh actor if the store is new (a node that
    /// restarts on an empty data directory must never reuse its old counters) and refusing a
    /// store that belongs to another node id.
    pub fn open(
        store: Arc<dyn Storage>,
        node_id: &str,
        max_vector_entries: usize,
    ) -> Result<LocalReplica, StorageError> {
        match store.get_meta(META_NODE_ID)? {
            Some(found) if found != node_id.as_bytes() => {
                return Err(StorageError::WrongNode {
                    dir: format!("{store:?}"),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: node_id.to_string(),
                });
            }
            Some(_) => {}
            None => store.put_meta(META_NODE_ID, node_id.as_bytes())?,
        }
        let actor = match store.get_meta(META_ACTOR)? {
            Some(raw) if raw.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw);
                Actor(u64::from_be_bytes(b))
            }
            Some(_) => return Err(StorageError::Corrupt("actor metadata".into())),
            None => {
                let actor = Actor(rand::random::<u64>());
                store.put_meta(META_ACTOR, &actor.0.to_be_bytes())?;
                actor
            }
        };
        Ok(LocalReplica {
            store,
            actor,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            max_vector_entries,
            truncations: AtomicU64::new(0),
        })
    }

    /// The actor this incarnation writes versions as.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// How many version-vector entries were dropped by truncation since start.
    pub fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Relaxed)
    }

    fn stripe(&self, key: &[u8]) -> &Mutex<()> {
        &self.stripes[(key_position(key) % LOCK_STRIPES as u128) as usize]
    }

    /// Reads this replica's state of `key`.
    pub async fn read(
        self: &Arc<Self>,
        key: Bytes,
    ) -> Result<Option<VersionedState>, StorageError> {
        let this = Arc::clone(self);
        blocking(move || storage::read_state(this.store.as_ref(), &key)).await
    }

    /// A coordinator's write: a new version (or a tombstone, `value == None`) superseding what
    /// `context` saw, under a fresh dot of this node's actor. Returns the key's whole new state,
    /// which the coordinator then sends to the other replicas.
    pub async fn coordinate(
        self: &Arc<Self>,
        key: Bytes,
        context: VersionVector,
        value: Option<Bytes>,
    ) -> Result<VersionedState, StorageError> {
        let this = Arc::clone(self);
        blocking(move || {
            let _guard = this.stripe(&key).lock().unwrap_or_else(|p| p.into_inner());
            let mut state = storage::read_state(this.store.as_ref(), &key)?.unwrap_or_default();
            state.update(&context, value, this.actor, now_ms());
            this.truncate(&mut state);
            storage::write_state(this.store.as_ref(), &key, &state)?;
            Ok(state)
        })
        .await
    }

    /// Merges another replica's state of `key` into this one's, writing only if it changes
    /// anything. Returns the merged state.
    pub async fn merge(
        self: &Arc<Self>,
        key: Bytes,
        incoming: VersionedState,
    ) -> Result<VersionedState, StorageError> {
        let this = Arc::clone(self);
        blocking(move || {
            let _guard = this.stripe(&key).lock().unwrap_or_else(|p| p.into_inner());
            let current = storage::read_state(this.store.as_ref(), &key)?;
            let mut state = current.clone().unwrap_or_default();
            state.merge(&incoming);
            this.truncate(&mut state);
            if current.as_ref() != Some(&state) {
                storage::write_state(this.store.as_ref(), &key, &state)?;
            }
            Ok(state)
        })
        .await
    }

    fn truncate(&self, state: &mut VersionedState) {
        let dropped = state.truncate_clock(self.max_vector_entries, self.actor);
        if dropped > 0 {
            self.truncations
                .fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(dropped, "version vector truncated (paper 4.4 safety valve)");
        }
    }

    /// Flushes storage; called at shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.store.flush()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Engine(format!("storage task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn concurrent_blind_writes_to_one_key_all_survive_as_siblings() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let replica = Arc::new(LocalReplica::open(store, "n", 10).unwrap());
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let r = Arc::clone(&replica);
            tasks.push(tokio::spawn(async move {
                r.coordinate(
                    Bytes::from_static(b"k"),
                    VersionVector::new(),
                    Some(Bytes::from(i.to_string())),
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let state = replica
            .read(Bytes::from_static(b"k"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.live_values().len(), 50);
    }

    #[tokio::test]
    async fn actor_is_kept_across_reopen_and_store_is_bound_to_its_node() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let a = LocalReplica::open(Arc::clone(&store), "n1", 10)
            .unwrap()
            .actor();
        let b = LocalReplica::open(Arc::clone(&store), "n1", 10)
            .unwrap()
            .actor();
        assert_eq!(a, b);
        let err = LocalReplica::open(Arc::clone(&store), "n2", 10).unwrap_err();
        assert!(err.to_string().contains("belongs to node"));
        let fresh: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        assert_ne!(LocalReplica::open(fresh, "n1", 10).unwrap().actor(), a);
    }
}
