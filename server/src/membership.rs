//! Cluster membership (paper 4.8) as the rest of the node sees it: the current
//! [`ClusterView`], published through a watch channel whenever gossip or an operator changes
//! this node's [`MembershipState`].
//!
//! The view is kept in storage (`meta`), so a node restarts with the membership it last knew.
//! A node starts from, in order: its stored view; the static `cluster.members` of its
//! configuration (every node configured alike builds the same view); a joining view when it
//! has seeds (`cluster.seeds`, `serve --join`) and is not the first of them; or a cluster of
//! one.
//!
//! Gossip ([`Membership::run_gossip`]) calls a random live member about every
//! `gossip_interval_ms`, and a seed every tenth round (or whenever it knows no other member),
//! so that nodes started from the same seeds never stay separate rings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rand::Rng;
use rand::seq::IndexedRandom;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use dynamokv_common::Ring;
use dynamokv_proto::v1 as pb;

use crate::config::{ClusterConfig, Config, ConfigError, Quorums};
use crate::context_keys::Keyring;
use crate::gossip::{GossipTransport, Gossiper};
use crate::membership_state::{
    ContextKeyRecord, MemberRecord, MembershipState, MergeError, Status, ViewError, union_keys,
};
use crate::peers::Peers;
use crate::replica::now_ms;
use crate::storage::{Storage, StorageError};

/// Where the membership view is kept in the store's metadata.
const META_MEMBERSHIP: &str = "membership";

/// One consistent picture of the cluster.
#[derive(Debug)]
pub struct ClusterView {
    pub cluster_name: String,
    pub self_id: String,
    /// The ring requests are routed by. Before this node has joined a cluster, a ring of itself
    /// alone, with `ring_version` 0: it coordinates nothing.
    pub ring: Ring,
    pub quorums: Quorums,
    pub ring_version: u64,
    /// While partitions are handed over (paper 4.9): the previous ring and its N. Writes go to
    /// the replicas of both rings and reads consult both until the handover completes.
    pub previous: Option<(Ring, u32)>,
    /// The membership state this view was built from.
    pub state: MembershipState,
    /// The keys version contexts are signed and verified with.
    pub context_keys: Keyring,
}

impl ClusterView {
    /// Whether this node is part of a ring yet.
    pub fn joined(&self) -> bool {
        self.ring_version > 0
    }
}

/// Errors opening or changing the membership.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the stored membership view is unreadable: {0}")]
    Corrupt(String),
    #[error(
        "the data directory belongs to cluster {stored:?} with {stored_partitions} partitions, but the configuration says {configured:?} with {configured_partitions}"
    )]
    OtherCluster {
        stored: String,
        stored_partitions: u32,
        configured: String,
        configured_partitions: u32,
    },
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// The current view, and the gossip that keeps it current.
#[derive(Debug, Clone)]
pub struct Membership {
    inner: Arc<Inner>,
    rx: watch::Receiver<Arc<ClusterView>>,
}

#[derive(Debug)]
struct Inner {
    gossiper: Gossiper,
    tx: watch::Sender<Arc<ClusterView>>,
    store: Option<Arc<dyn Storage>>,
    cluster: ClusterConfig,
    self_id: String,
    /// This node's own record as it announces it (address, zone, weight).
    me: MemberRecord,
    /// The context keys this node made (see `context_keys.rs`), oldest first.
    own_keys: Mutex<Vec<ContextKeyRecord>>,
    /// When the newest of `own_keys` that an announce has carried to every node it reached
    /// was made (ms since the epoch; 0: none yet). The node signs with that key, not a newer
    /// one: a context it signs then verifies at the other nodes even if it hangs a moment
    /// later and cannot be asked for its key.
    keys_announced: watch::Sender<u64>,
    /// Wakes the gossip loop to announce this node's keys (a key was made).
    announce_now: tokio::sync::Notify,
    /// The state the published view was built from.
    published: Mutex<MembershipState>,
    /// Seeds given at run time (`admin join`), besides the configured ones.
    extra_seeds: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// N, R and W for a ring of `owners` members: the configured values, or by default N = 3, R =
/// W = 2 (capped by the number of owners; 1 for a single node).
pub fn quorums_for(cluster: &ClusterConfig, owners: usize) -> Quorums {
    let n = cluster.n.unwrap_or_else(|| 3.min(owners.max(1) as u32));
    let dq = if n == 1 { 1 } else { 2 };
    Quorums {
        n,
        r: cluster.r.unwrap_or(dq),
        w: cluster.w.unwrap_or(dq),
    }
}

/// The address the static member list gives `id`, if it lists it.
fn listed_address(cluster: &ClusterConfig, id: &str) -> Option<String> {
    cluster
        .members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.address.clone())
}

/// A node owns its own record: once its state makes a ring it says it routes by it, and it
/// announces a changed address, zone or weight (or re-announces them when gossip brings back
/// an older shape of its record) as a new version. A removed node stays removed.
///
/// Its context keys are its own too: the record carries every key this node made and gossip
/// brought back (the newest few), so a record of an earlier shape (a wiped node's, arriving
/// from a peer) never takes a key away from it, and `own_keys` learns the older keys such a
/// record brings.
fn assert_own(
    state: &mut MembershipState,
    me: &MemberRecord,
    own_keys: &mut Vec<ContextKeyRecord>,
) {
    if state.ring_version().version > 0 && state.ring().is_ok() {
        state.set_ring_seen(&me.id);
    }
    if let Some(r) = state.member(&me.id).cloned()
        && r.status != Status::Removed
    {
        let keys = union_keys(&r.context_keys, own_keys);
        *own_keys = keys.clone();
        if r.address != me.address
            || r.zone != me.zone
            || r.weight != me.weight
            || r.context_keys != keys
        {
            state.set_member(MemberRecord {
                address: me.address.clone(),
                zone: me.zone.clone(),
                weight: me.weight,
                context_keys: keys,
                ..r
            });
        }
    }
}

fn own_record(config: &Config, advertised: &str) -> MemberRecord {
    let mut me = MemberRecord::new(config.node_id.clone(), advertised);
    if let Some(m) = config
        .cluster
        .members
        .iter()
        .find(|m| m.id == config.node_id)
    {
        me.zone = m.zone.clone();
        me.weight = m.weight;
    }
    me.zone = config.cluster.zone.clone().unwrap_or(me.zone);
    me.weight = config.cluster.weight.unwrap_or(me.weight);
    me
}

/// The view this node starts from when its store holds none.
fn initial_state(config: &Config, advertised: &str) -> MembershipState {
    let c = &config.cluster;
    let me = own_record(config, advertised);
    if !c.members.is_empty() {
        let records = c.members.iter().map(|m| {
            let mut r = MemberRecord::new(m.id.clone(), m.address.clone());
            r.zone = m.zone.clone();
            r.weight = m.weight;
            r
        });
        MembershipState::of_members(c.name.clone(), c.partitions, records)
    } else if c.seeds.first().is_some_and(|s| *s != me.address) {
        MembershipState::joining(c.name.clone(), c.partitions, me)
    } else {
        // No seeds, or this node is the first seed: every node may share one seed list, and
        // its first entry starts the cluster the others join.
        MembershipState::new_cluster(c.name.clone(), c.partitions, me)
    }
}

impl Membership {
    /// Opens the membership of a node: its stored view (updated with its current address, zone
    /// and weight), or the view its configuration describes.
    pub fn open(
        config: &Config,
        advertised: &str,
        store: Option<Arc<dyn Storage>>,
    ) -> Result<Membership, MembershipError> {
        // The address others reach this node at: `advertise`, else its entry in a static
        // member list (which may be a proxy or a load balancer), else the bound address.
        let advertised = config
            .advertise
            .clone()
            .or_else(|| listed_address(&config.cluster, &config.node_id))
            .unwrap_or_else(|| advertised.to_string());
        let advertised = advertised.as_str();
        let stored = match &store {
            Some(s) => s.get_meta(META_MEMBERSHIP)?,
            None => None,
        };
        let mut state = match stored {
            Some(raw) => {
                let proto = pb::MembershipState::decode(raw.as_slice())
                    .map_err(|e| MembershipError::Corrupt(e.to_string()))?;
                let state = MembershipState::from_proto(&proto)
                    .map_err(|e| MembershipError::Corrupt(e.to_string()))?;
                if state.cluster != config.cluster.name
                    || state.partitions != config.cluster.partitions
                {
                    return Err(MembershipError::OtherCluster {
                        stored: state.cluster,
                        stored_partitions: state.partitions,
                        configured: config.cluster.name.clone(),
                        configured_partitions: config.cluster.partitions,
                    });
                }
                state
            }
            None => initial_state(config, advertised),
        };
        let me = own_record(config, advertised);
        // The keys this node signed with before it restarted are in its stored record; a node
        // that has none (first start, wiped data) makes one now.
        let mut own_keys = state
            .member(&config.node_id)
            .map(|r| r.context_keys.clone())
            .unwrap_or_default();
        // Stored keys were announced in the node's earlier life (gossip had them); a key made
        // now waits for the first announce.
        let keys_announced = own_keys.last().map_or(0, |k| k.created_ms);
        if own_keys.is_empty() {
            own_keys.push(ContextKeyRecord::generate(now_ms()));
        }
        assert_own(&mut state, &me, &mut own_keys);
        let view = build_view(&state, &config.cluster, &config.node_id)?;
        let (tx, rx) = watch::channel(Arc::new(view));
        let membership = Membership {
            inner: Arc::new(Inner {
                gossiper: Gossiper::new(config.node_id.clone(), state.clone()),
                tx,
                store,
                cluster: config.cluster.clone(),
                self_id: config.node_id.clone(),
                me,
                own_keys: Mutex::new(own_keys),
                keys_announced: watch::Sender::new(keys_announced),
                announce_now: tokio::sync::Notify::new(),
                published: Mutex::new(state.clone()),
                extra_seeds: Mutex::new(Vec::new()),
            }),
            rx,
        };
        membership.persist(&state)?;
        Ok(membership)
    }

    /// The view in force now.
    pub fn current(&self) -> Arc<ClusterView> {
        Arc::clone(&self.rx.borrow())
    }

    /// A receiver that wakes whenever a new view is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.rx.clone()
    }

    /// This node's membership state now.
    pub fn state(&self) -> MembershipState {
        self.inner.gossiper.state()
    }

    /// Changes this node's membership state (an operator's join, leave, remove or commit, a
    /// finished handoff), then publishes and stores it. `f` may refuse the change with an
    /// error, which leaves the state as it was.
    pub fn update<T, E>(&self, f: impl FnOnce(&mut MembershipState) -> Result<T, E>) -> Result<T, E>
    where
        E: From<MembershipError>,
    {
        let mut out = None;
        self.inner.gossiper.update(|s| {
            let mut draft = s.clone();
            let r = f(&mut draft);
            if r.is_ok() {
                *s = draft;
            }
            out = Some(r);
        });
        let result = out.expect("update ran");
        if result.is_ok() {
            self.publish().map_err(E::from)?;
        }
        result
    }

    /// Answers a peer's gossip call, publishing whatever it taught this node.
    pub fn handle_gossip(
        &self,
        request: &pb::GossipRequest,
    ) -> Result<pb::GossipResponse, MergeError> {
        let response = self.inner.gossiper.handle(request)?;
        if request.delta.is_some()
            && let Err(e) = self.publish()
        {
            tracing::error!(error = %e, "cannot publish the membership view");
        }
        Ok(response)
    }

    /// Builds, publishes and stores the view of the current state, if it changed. A state that
    /// does not make a ring yet (an owner's record has not arrived) is stored but not
    /// published until it does.
    pub fn publish(&self) -> Result<(), MembershipError> {
        {
            let mut own_keys = lock(&self.inner.own_keys);
            self.inner
                .gossiper
                .update(|s| assert_own(s, &self.inner.me, &mut own_keys));
        }
        let state = self.inner.gossiper.state();
        {
            let mut published = lock(&self.inner.published);
            if *published == state {
                return Ok(());
            }
            *published = state.clone();
        }
        self.persist(&state)?;
        let before = self.current();
        match build_view(&state, &self.inner.cluster, &self.inner.self_id) {
            Ok(view) => {
                if view.ring_version != before.ring_version
                    || view.previous.is_some() != before.previous.is_some()
                {
                    tracing::info!(
                        ring_version = view.ring_version,
                        owners = view.ring.members().len(),
                        handover = view.previous.is_some(),
                        "membership view changed"
                    );
                }
                self.inner.tx.send_replace(Arc::new(view));
            }
            Err(e) => tracing::debug!(error = %e, "membership view not yet complete"),
        }
        Ok(())
    }

    fn persist(&self, state: &MembershipState) -> Result<(), MembershipError> {
        if let Some(store) = &self.inner.store {
            store.put_meta(META_MEMBERSHIP, &state.to_proto().encode_to_vec())?;
        }
        Ok(())
    }

    /// Gossips until `stop`: about every `interval` (±25%), one exchange with a random live
    /// member, or with a seed every tenth round and whenever no other member is known.
    pub async fn run_gossip<T: GossipTransport>(
        self,
        transport: T,
        interval: Duration,
        stop: CancellationToken,
        metrics: Arc<crate::metrics::Metrics>,
    ) {
        let mut round = 0u64;
        // This node's context keys reach every node it knows of at once, rather than over
        // a few rounds: a context it signs must verify at a node that cannot ask it (it may
        // hang a moment later). It signs with a new key only once this is done.
        self.announce(&transport, &metrics).await;
        loop {
            let view = self.current();
            let m = &metrics.membership;
            m.ring_version.set(view.ring_version as i64);
            m.members.set(view.ring.members().len() as i64);
            m.handover.set(i64::from(view.previous.is_some()));
            let jitter = rand::rng().random_range(0.75..1.25);
            tokio::select! {
                _ = stop.cancelled() => return,
                () = self.inner.announce_now.notified() => {
                    self.announce(&transport, &metrics).await;
                    continue;
                }
                _ = tokio::time::sleep(interval.mul_f64(jitter)) => {}
            }
            round += 1;
            // A key made now is announced at the top of the next iteration.
            if let Err(e) = self.rotate_context_key_if_due(now_ms()) {
                tracing::error!(error = %e, "cannot publish the membership view");
            }
            let Some(peer) = self.gossip_target(round) else {
                continue;
            };
            match self.inner.gossiper.exchange(&transport, &peer).await {
                Ok(true) => {
                    metrics.membership.gossip_exchanges.inc();
                    if let Err(e) = self.publish() {
                        tracing::error!(error = %e, "cannot publish the membership view");
                    }
                }
                Ok(false) => {}
                // A node that cannot join says why, every ten seconds or so: a wrong cluster
                // name or partition count never fixes itself.
                Err(reason) if !self.current().joined() && round % 10 == 1 => {
                    tracing::warn!(%peer, %reason, "cannot join the cluster through this node yet")
                }
                Err(reason) => tracing::debug!(%peer, %reason, "gossip exchange failed"),
            }
        }
    }

    /// Makes a new context key when the newest this node has is `context_key_rotation_ms` old
    /// (see `context_keys.rs`). Returns whether it made one.
    pub fn rotate_context_key_if_due(&self, now_ms: u64) -> Result<bool, MembershipError> {
        let due = lock(&self.inner.own_keys).last().is_none_or(|k| {
            now_ms.saturating_sub(k.created_ms) >= self.inner.cluster.context_key_rotation_ms
        });
        if due {
            self.rotate_context_key(now_ms)?;
        }
        Ok(due)
    }

    /// Makes a new context key now and signs with it from now on; the keys before it verify
    /// for `context_key_grace_ms` more.
    pub fn rotate_context_key(&self, now_ms: u64) -> Result<(), MembershipError> {
        {
            let mut own = lock(&self.inner.own_keys);
            // Keys are ordered by creation time: never make one that sorts before the newest.
            let created = own.last().map_or(now_ms, |k| now_ms.max(k.created_ms + 1));
            let fresh = ContextKeyRecord::generate(created);
            *own = union_keys(&own, &[fresh]);
        }
        tracing::info!(
            "made a new context key: contexts are signed with it once it has been announced to the other nodes"
        );
        self.publish()?;
        self.inner.announce_now.notify_one();
        Ok(())
    }

    /// When the newest of this node's keys that it may sign with was made: the newest that
    /// an announce has carried to the other nodes. A node whose first key has not been
    /// announced yet (it has just started for the first time) waits up to `wait` for that,
    /// then signs with it anyway (its gossip reaches no one: the verifiers ask it).
    pub async fn announced_keys(&self, wait: Duration) -> u64 {
        let announced = *self.inner.keys_announced.borrow();
        if announced > 0 {
            return announced;
        }
        let mut rx = self.inner.keys_announced.subscribe();
        if tokio::time::timeout(wait, rx.wait_for(|v| *v > 0))
            .await
            .is_err()
        {
            let newest = lock(&self.inner.own_keys)
                .last()
                .map_or(0, |k| k.created_ms);
            self.keys_announced(newest);
        }
        *self.inner.keys_announced.borrow()
    }

    /// Records that the keys up to the one made at `created_ms` have been announced.
    fn keys_announced(&self, created_ms: u64) {
        self.inner.keys_announced.send_if_modified(|v| {
            let newer = created_ms > *v;
            if newer {
                *v = created_ms;
            }
            newer
        });
    }

    /// One gossip exchange with the node at `address` now (a node that meets a context key it
    /// has not learnt asks the key's signer). Returns whether this node's view changed.
    pub async fn gossip_with<T: GossipTransport>(
        &self,
        transport: &T,
        address: &str,
    ) -> Result<bool, String> {
        let changed = self.inner.gossiper.exchange(transport, address).await?;
        if changed && let Err(e) = self.publish() {
            tracing::error!(error = %e, "cannot publish the membership view");
        }
        Ok(changed)
    }

    /// One exchange with every seed and live member at once (each push-pull, so they learn
    /// this node's records, its context keys among them, and it theirs); failures are left
    /// to the rounds that follow.
    async fn announce<T: GossipTransport>(&self, transport: &T, metrics: &crate::metrics::Metrics) {
        let newest = lock(&self.inner.own_keys)
            .last()
            .map_or(0, |k| k.created_ms);
        let me = &self.inner.me.address;
        let mut targets: Vec<String> = self
            .inner
            .gossiper
            .state()
            .live_members()
            .filter(|r| r.id != self.inner.self_id)
            .map(|r| {
                listed_address(&self.inner.cluster, &r.id).unwrap_or_else(|| r.address.clone())
            })
            .collect();
        targets.extend(self.inner.cluster.seeds.iter().cloned());
        targets.retain(|t| t != me);
        targets.sort();
        targets.dedup();
        let exchanges = targets
            .iter()
            .map(|t| self.inner.gossiper.exchange(transport, t));
        let changed = futures::future::join_all(exchanges)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        if changed > 0 {
            metrics.membership.gossip_exchanges.inc_by(changed as u64);
            if let Err(e) = self.publish() {
                tracing::error!(error = %e, "cannot publish the membership view");
            }
        }
        // Every node that answered holds the keys now; those that did not learn them by
        // gossip later, or ask this node when they meet one.
        self.keys_announced(newest);
    }

    /// Whom to gossip with in round `round`: an address.
    fn gossip_target(&self, round: u64) -> Option<String> {
        let state = self.inner.gossiper.state();
        let me = &self.inner.me.address;
        let members: Vec<String> = state
            .live_members()
            .filter(|r| r.id != self.inner.self_id && &r.address != me)
            .map(|r| {
                listed_address(&self.inner.cluster, &r.id).unwrap_or_else(|| r.address.clone())
            })
            .collect();
        let mut seeds: Vec<String> = self.inner.cluster.seeds.clone();
        seeds.extend(lock(&self.inner.extra_seeds).iter().cloned());
        seeds.retain(|s| s != me);
        let mut rng = rand::rng();
        if (members.is_empty() || round % 10 == 0)
            && let Some(seed) = seeds.choose(&mut rng)
        {
            return Some(seed.clone());
        }
        members.choose(&mut rng).cloned()
    }
}

/// A topology change an operator asked for that cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("no member {0:?} in this node's view of the cluster")]
    UnknownMember(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// What `plan` shows: the staged change from the current ring to the next.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ring_version: u64,
    pub owners_before: Vec<String>,
    pub owners_after: Vec<String>,
    pub moves: Vec<crate::membership_state::Move>,
    /// Partitions each member owns (as coordinator) after the change.
    pub owned_after: Vec<(String, u32)>,
    /// Why it cannot be committed now, if it cannot.
    pub blocked: Option<String>,
    /// N of the ring before and after.
    pub n_before: u32,
    pub n_after: u32,
}

impl Membership {
    /// Stages the decommission of `id` (this node when empty): at the next commit it stops
    /// owning partitions and hands them off.
    pub fn stage_leave(&self, id: &str) -> Result<(), TopologyError> {
        let id = if id.is_empty() {
            self.inner.self_id.as_str()
        } else {
            id
        };
        self.update(|s| {
            let r = s
                .member(id)
                .cloned()
                .ok_or_else(|| TopologyError::UnknownMember(id.to_string()))?;
            match r.status {
                Status::Up | Status::Joining => {}
                Status::Leaving => return Ok(()),
                Status::Removed => {
                    return Err(TopologyError::Refused(format!("{id} was removed")));
                }
            }
            s.set_member(MemberRecord {
                status: Status::Leaving,
                ..r
            });
            Ok(())
        })
    }

    /// Stages the removal of `id`, a member gone for good: at the next commit its partitions
    /// get new owners, rebuilt from the surviving replicas.
    pub fn stage_remove(&self, id: &str) -> Result<(), TopologyError> {
        if id == self.inner.self_id {
            return Err(TopologyError::Refused(
                "a node cannot remove itself: use leave to decommission a live node, or remove it from another member".into(),
            ));
        }
        self.update(|s| {
            let r = s
                .member(id)
                .cloned()
                .ok_or_else(|| TopologyError::UnknownMember(id.to_string()))?;
            if r.status != Status::Removed {
                s.set_member(MemberRecord {
                    status: Status::Removed,
                    ..r
                });
            }
            Ok(())
        })
    }

    /// The staged change: which partitions' replicas change, from which node to which.
    pub fn plan(&self) -> Result<Plan, TopologyError> {
        let state = self.state();
        let view = self.current();
        if !view.joined() {
            return Err(TopologyError::Refused(
                "this node has not joined a cluster yet".into(),
            ));
        }
        let owners_after = state.staged_owners();
        let blocked = state.commit_blocked();
        let mut next = state.clone();
        next.commit(owners_after.clone(), &self.inner.self_id);
        let (moves, owned_after, n_after) = match next.ring() {
            Ok(after) => {
                let n_after = quorums_for(&self.inner.cluster, after.members().len()).n;
                let moves = crate::membership_state::plan(
                    &view.ring,
                    view.quorums.n as usize,
                    &after,
                    n_after as usize,
                );
                let owned = after
                    .members()
                    .iter()
                    .map(|m| (m.id.clone(), after.partitions_of(&m.id).len() as u32))
                    .collect();
                (moves, owned, n_after)
            }
            Err(_) => (Vec::new(), Vec::new(), 0),
        };
        Ok(Plan {
            ring_version: view.ring_version,
            owners_before: state.ring_version().owners.clone(),
            owners_after,
            moves,
            owned_after,
            blocked,
            n_before: view.quorums.n,
            n_after,
        })
    }

    /// Commits the staged change as the next ring version, if the ring is still at `planned`
    /// (0: whatever it is). Returns the new version.
    pub fn commit(&self, planned: u64) -> Result<u64, TopologyError> {
        let by = self.inner.self_id.clone();
        self.update(|s| {
            let at = s.ring_version().version;
            if planned != 0 && planned != at {
                return Err(TopologyError::Refused(format!(
                    "the ring moved from version {planned} to {at} since the plan: plan again"
                )));
            }
            if let Some(why) = s.commit_blocked() {
                return Err(TopologyError::Refused(why));
            }
            let owners = s.staged_owners();
            s.commit(owners, &by);
            Ok(s.ring_version().version)
        })
    }

    /// Turns a node that is a cluster of one, holding no data, into one joining the cluster
    /// `cluster` (with `partitions` partitions) that `seed` belongs to.
    pub fn join(
        &self,
        seed: &str,
        cluster: &str,
        partitions: u32,
        holds_data: bool,
    ) -> Result<(), TopologyError> {
        let me = self.inner.self_id.clone();
        self.update(|s| {
            if partitions != s.partitions {
                return Err(TopologyError::Refused(format!(
                    "the cluster at {seed} has {partitions} partitions, this node {}: set cluster.partitions to match",
                    s.partitions
                )));
            }
            if s.members().count() > 1 || s.ring_version().version > 1 {
                return Err(TopologyError::Refused(
                    "this node is already a member of a cluster of several nodes".into(),
                ));
            }
            if holds_data {
                return Err(TopologyError::Refused(
                    "this node holds data of its own: only an empty node can join a cluster".into(),
                ));
            }
            let record = s
                .member(&me)
                .cloned()
                .ok_or_else(|| TopologyError::UnknownMember(me.clone()))?;
            *s = MembershipState::joining(cluster, partitions, record);
            Ok(())
        })?;
        lock(&self.inner.extra_seeds).push(seed.to_string());
        Ok(())
    }
}

fn build_view(
    state: &MembershipState,
    cluster: &ClusterConfig,
    self_id: &str,
) -> Result<ClusterView, MembershipError> {
    let (ring, version) = match state.ring() {
        Ok(ring) => (ring, state.ring_version().version),
        Err(ViewError::NotJoined) => {
            let me = state
                .member(self_id)
                .ok_or(ViewError::UnknownOwner(self_id.to_string()))?;
            (
                Ring::new(state.partitions, vec![me.member()]).map_err(ViewError::from)?,
                0,
            )
        }
        Err(e) => return Err(e.into()),
    };
    let ring = local_addresses(ring, cluster, self_id)?;
    let quorums = quorums_for(cluster, ring.members().len());
    let previous = match state.previous_ring()? {
        Some(r) => {
            let n = quorums_for(cluster, r.members().len()).n;
            Some((local_addresses(r, cluster, self_id)?, n))
        }
        None => None,
    };
    Ok(ClusterView {
        cluster_name: state.cluster.clone(),
        self_id: self_id.to_string(),
        ring,
        quorums,
        ring_version: version,
        previous,
        context_keys: Keyring::of_state(state, self_id, cluster.context_key_grace_ms),
        state: state.clone(),
    })
}

/// The ring with the addresses this node's static `members` list gives its peers, where it
/// lists them: a node may reach a peer through an address of its own (a proxy, a NAT), while
/// gossip carries the address each node announces for itself.
fn local_addresses(
    ring: Ring,
    cluster: &ClusterConfig,
    self_id: &str,
) -> Result<Ring, MembershipError> {
    let local = |id: &str| {
        (id != self_id)
            .then(|| listed_address(cluster, id))
            .flatten()
    };
    if !ring
        .members()
        .iter()
        .any(|m| local(&m.id).is_some_and(|a| a != m.address))
    {
        return Ok(ring);
    }
    let members = ring
        .members()
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(a) = local(&m.id) {
                m.address = a;
            }
            m
        })
        .collect();
    Ok(Ring::new(ring.partition_count(), members).map_err(ViewError::from)?)
}

/// Gossip over the node-to-node gRPC service.
#[derive(Debug, Clone)]
pub struct PeerTransport {
    pub peers: Arc<Peers>,
    pub timeout: Duration,
}

impl GossipTransport for PeerTransport {
    async fn call(
        &self,
        peer: &str,
        request: pb::GossipRequest,
    ) -> Result<pb::GossipResponse, String> {
        self.peers
            .call(peer, self.timeout, request, |mut c, r| async move {
                c.gossip(r).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamokv_common::context::{ContextKeys, KeyLookup};

    fn config(seeds: &[&str]) -> Config {
        let mut c = Config {
            node_id: "me".into(),
            ..Config::default()
        };
        c.cluster.seeds = seeds.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn the_first_seed_starts_the_cluster_and_the_others_join_it() {
        let me = "10.0.0.1:7070";
        let alone = initial_state(&config(&[]), me);
        assert_eq!(alone.ring_version().owners, vec!["me".to_string()]);
        let first = initial_state(&config(&[me, "10.0.0.2:7070"]), me);
        assert_eq!(first.ring_version().version, 1);
        assert_eq!(first.status_of("me"), "up");
        let other = initial_state(&config(&["10.0.0.2:7070", me]), me);
        assert_eq!(other.ring_version().version, 0);
        assert_eq!(other.status_of("me"), "joining");
        assert!(other.ring_version().owners.is_empty());
    }

    /// A static member list: `ids`, each listed at `address(id)`.
    fn listing(c: &mut Config, ids: &[&str], address: impl Fn(&str) -> String) {
        c.cluster.members = ids
            .iter()
            .map(|id| crate::config::MemberConfig {
                id: id.to_string(),
                address: address(id),
                zone: String::new(),
                weight: 1,
            })
            .collect();
    }

    #[test]
    fn a_node_reaches_peers_at_the_addresses_its_own_member_list_gives() {
        let mut c = config(&[]);
        listing(&mut c, &["me", "peer"], |id| format!("proxy-to-{id}:1"));
        let m = Membership::open(&c, "10.0.0.1:7070", None).unwrap();
        // Gossip brings the address the peer announces for itself.
        m.update(|s| -> Result<(), MembershipError> {
            let r = s.member("peer").unwrap().clone();
            s.set_member(MemberRecord {
                address: "10.0.0.2:7070".into(),
                ..r
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(m.state().member("peer").unwrap().address, "10.0.0.2:7070");
        let view = m.current();
        assert_eq!(view.ring.member("peer").unwrap().address, "proxy-to-peer:1");
        assert_eq!(view.ring.member("me").unwrap().address, "proxy-to-me:1");
    }

    /// Calls reach `to` only once `open` is true, as a peer whose answers are held up.
    struct Held {
        to: Membership,
        open: watch::Receiver<bool>,
    }

    impl GossipTransport for Held {
        async fn call(
            &self,
            _peer: &str,
            request: pb::GossipRequest,
        ) -> Result<pb::GossipResponse, String> {
            let _ = self.open.clone().wait_for(|open| *open).await;
            self.to.handle_gossip(&request).map_err(|e| e.to_string())
        }
    }

    fn pair(id: &str) -> Config {
        let mut c = config(&[]);
        c.node_id = id.into();
        listing(&mut c, &["a", "b"], |id| format!("{id}:1"));
        c
    }

    /// The key `a` signs with, as its coordinator picks it now.
    fn signing_id(a: &Membership) -> u64 {
        let announced = *a.inner.keys_announced.borrow();
        a.current()
            .context_keys
            .signing_as_of(announced)
            .unwrap()
            .id
    }

    #[tokio::test]
    async fn a_node_signs_only_with_keys_its_peers_were_told_of() {
        let a = Membership::open(&pair("a"), "a:1", None).unwrap();
        let b = Membership::open(&pair("b"), "b:1", None).unwrap();
        let first = a.current().context_keys.signing().unwrap().id;
        let knows = |b: &Membership, id: u64| {
            matches!(
                b.current().context_keys.at(now_ms()).lookup("a", id),
                KeyLookup::Valid(_)
            )
        };
        assert!(!knows(&b, first));
        let (open, held) = watch::channel(false);
        let stop = CancellationToken::new();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let gossip = tokio::spawn(a.clone().run_gossip(
            Held {
                to: b.clone(),
                open: held,
            },
            Duration::from_secs(3600),
            stop.clone(),
            metrics,
        ));
        // A first start: the first signature waits for the announce, which b holds up.
        let signer = {
            let a = a.clone();
            tokio::spawn(async move { a.announced_keys(Duration::from_secs(3600)).await })
        };
        tokio::task::yield_now().await;
        assert!(!signer.is_finished());
        assert_eq!(*a.inner.keys_announced.borrow(), 0);
        open.send_replace(true);
        assert!(signer.await.unwrap() > 0);
        assert!(knows(&b, first), "a signs with a key b does not hold");
        assert_eq!(signing_id(&a), first);

        // A rotation: the old key signs until the new one reached b.
        open.send_replace(false);
        a.rotate_context_key(now_ms()).unwrap();
        let second = a.current().context_keys.signing().unwrap().id;
        assert_ne!(second, first);
        tokio::task::yield_now().await;
        assert_eq!(signing_id(&a), first);
        assert!(!knows(&b, second));
        open.send_replace(true);
        let made = lock(&a.inner.own_keys).last().unwrap().created_ms;
        let mut announced = a.inner.keys_announced.subscribe();
        tokio::time::timeout(Duration::from_secs(10), announced.wait_for(|v| *v >= made))
            .await
            .unwrap()
            .unwrap();
        assert!(knows(&b, second));
        assert_eq!(signing_id(&a), second);
        stop.cancel();
        gossip.await.unwrap();
    }

    #[tokio::test]
    async fn a_node_that_reaches_no_one_signs_after_a_bounded_wait() {
        let a = Membership::open(&pair("a"), "a:1", None).unwrap();
        // No gossip runs: the announce never comes.
        assert!(a.announced_keys(Duration::from_millis(20)).await > 0);
        assert_eq!(
            signing_id(&a),
            a.current().context_keys.signing().unwrap().id
        );
    }

    #[test]
    fn a_stored_view_of_another_cluster_is_refused() {
        let store: Arc<dyn Storage> = Arc::new(crate::storage::MemoryStorage::default());
        let c = config(&[]);
        Membership::open(&c, "10.0.0.1:7070", Some(Arc::clone(&store))).unwrap();
        let mut other = c.clone();
        other.cluster.name = "elsewhere".into();
        let err = Membership::open(&other, "10.0.0.1:7070", Some(store)).unwrap_err();
        assert!(matches!(err, MembershipError::OtherCluster { .. }), "{err}");
    }

    #[test]
    fn a_restarted_node_keeps_its_view_and_announces_a_new_address() {
        let store: Arc<dyn Storage> = Arc::new(crate::storage::MemoryStorage::default());
        let c = config(&["10.0.0.9:7070"]);
        let m = Membership::open(&c, "10.0.0.1:7070", Some(Arc::clone(&store))).unwrap();
        assert!(!m.current().joined());
        let before = m.state().member("me").unwrap().version;
        drop(m);
        let m = Membership::open(&c, "10.0.0.1:7071", Some(store)).unwrap();
        let r = m.state().member("me").unwrap().clone();
        assert_eq!(r.address, "10.0.0.1:7071");
        assert!(r.version > before);
        assert_eq!(r.status, Status::Joining, "still asking to join");
    }
}
