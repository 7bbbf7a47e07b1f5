//! Request coordination (paper 4.5): quorum reads and writes over a key's preference list,
//! and read repair (paper 4.5, 5).
//!
//! - A **put** (or delete) is coordinated by a node among the key's top N. Any other node
//!   forwards it to the first of those that answers, trying the next when one fails. The
//!   coordinator writes the new version locally under a fresh dot of its own actor, sends the
//!   key's resulting state to the other N-1 replicas, and answers once W replicas (itself
//!   included) hold it. The write runs in a task of its own, so a request cancelled halfway
//!   still reaches every replica.
//! - Every write carries the client's **write id**, the same on each attempt. A retried write
//!   (attempt > 1) first gathers what the other replicas hold of the key, so an earlier attempt
//!   that was applied is found and the write is not applied again; where an earlier attempt
//!   cannot be found (its replica is down), the replicas' merges recognise the two copies as one
//!   write.
//! - Requests carry a **deadline** (gRPC's `grpc-timeout`). A coordinator answers before it,
//!   with its own verdict (such as `QuorumNotReached`), so a forwarder never mistakes a slow
//!   verdict for a lost request.
//! - A **get** asks all N replicas, answers after R replies with every concurrent version and
//!   one context covering them, and keeps listening for the late replies. Once all have
//!   answered (or timed out), every replica that was missing something is sent the merged state:
//!   read repair.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::Request;

use dynamokv_common::limits::{check_quorum, check_sync_replicas};
use dynamokv_common::{
    CausalContext, ContextError, InputError, Limits, Member, VersionedState, WriteId,
    decode_context, sign_context,
};
use dynamokv_proto::transport::certainly_not_sent;
use dynamokv_proto::v1 as pb;

use crate::error::{Error, ReplicaFailure};
use crate::load_shedding::ReadBudget;
use crate::membership::{ClusterView, Membership, PeerTransport};
use crate::metrics::{Metrics, Role};
use crate::peers::Peers;
use crate::replica::{LocalReplica, WriteError, now_ms};
use dynamokv_common::sloppy_quorum::{self, Acks, QuorumSets};

/// Metadata marking a put that a node forwarded to a coordinator, so it is never forwarded
/// twice. It gives the request no other power: a node that is not a replica refuses it.
pub const FORWARDED_METADATA: &str = "dynamokv-forwarded";

/// Deadline assumed for a request that states none.
pub const DEFAULT_REQUEST_BUDGET: Duration = Duration::from_secs(10);
/// How long before its caller's deadline a coordinator gives its verdict, so that the verdict
/// arrives in time.
const VERDICT_MARGIN: Duration = Duration::from_millis(200);
/// How long a node marked down gets to answer a ping before a request that needs it is refused.
const QUICK_PING: Duration = Duration::from_millis(200);
/// Longest a node's first signature waits for its first key to be announced (one gossip
/// exchange with every other node, each bounded by the replica timeout).
const KEY_ANNOUNCE_WAIT: Duration = Duration::from_secs(3);
/// What a forwarder gives a coordinator beyond the coordinator's own replica timeout.
const FORWARD_MARGIN: Duration = Duration::from_millis(500);

/// What a get returns.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub values: Vec<Bytes>,
    pub context: Bytes,
    /// The write time of each value, in the same order.
    pub timestamps_ms: Vec<u64>,
    /// Whether a delete is concurrent with the values.
    pub tombstone: bool,
}

/// A put (`value` set) or delete, as a client or a forwarding node sent it.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub key: Bytes,
    pub value: Option<Bytes>,
    /// The context bytes as sent (decoded and checked by the coordinator).
    pub context: Bytes,
    pub w: Option<u32>,
    /// How many acknowledging replicas fsync first; absent, the cluster's `sync_replicas`.
    pub sync_replicas: Option<u32>,
    /// The client's id of the write; absent, the node draws one.
    pub write_id: Option<WriteId>,
    /// 1 for a first attempt, more when an earlier attempt may have been applied.
    pub attempt: u32,
    /// Sent by another node's forwarding.
    pub forwarded: bool,
    /// Time left before the caller's deadline, if it stated one.
    pub budget: Option<Duration>,
}

/// Coordinates client requests on this node.
#[derive(Debug)]
pub struct Coordinator {
    membership: Membership,
    local: Arc<LocalReplica>,
    peers: Arc<Peers>,
    limits: Limits,
    timeout: Duration,
    /// The cluster's default for how many acknowledging replicas fsync before a write's answer.
    sync_replicas: u32,
    metrics: Arc<Metrics>,
    /// Work that outlives its request (the rest of a write, read repair), waited for at shutdown.
    tasks: TaskTracker,
    /// When this node last asked each signer for its context keys (at most once a second
    /// each, whatever contexts clients send).
    key_pulls: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Admits reads of large states (`load_shedding::ReadBudget`).
    reads: Arc<ReadBudget>,
    /// Sizes of large states this node coordinated reads of but holds no replica of, so the
    /// next read of one is admitted by size before it is made.
    large_keys: std::sync::Mutex<HashMap<Bytes, usize>>,
}

/// Large keys remembered by a coordinator that does not replicate them.
const MAX_LARGE_KEYS: usize = 1024;

/// The most replicas a client's read repair may name as sources.
const MAX_REPAIR_SOURCES: usize = 8;

/// How often a node asks one signer for context keys it does not know.
const KEY_PULL_INTERVAL: Duration = Duration::from_secs(1);

type ReplicaReply<T> = (String, Result<T, String>);

impl Coordinator {
    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn new(
        membership: Membership,
        local: Arc<LocalReplica>,
        peers: Arc<Peers>,
        limits: Limits,
        timeout: Duration,
        sync_replicas: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        let metrics_for_reads = Arc::clone(&metrics);
        Coordinator {
            membership,
            local,
            peers,
            limits,
            timeout,
            sync_replicas,
            metrics,
            tasks: TaskTracker::new(),
            key_pulls: std::sync::Mutex::new(HashMap::new()),
            reads: Arc::new(ReadBudget::new(
                "this node",
                128 << 20,
                32 << 20,
                Arc::clone(&metrics_for_reads),
            )),
            large_keys: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Admits large reads with `reads` (the node's configured budgets).
    pub fn with_read_budget(mut self, reads: Arc<ReadBudget>) -> Self {
        self.reads = reads;
        self
    }

    /// How long a replica gets to answer.
    pub fn replica_timeout(&self) -> Duration {
        self.timeout
    }

    /// The budgets large reads are admitted by.
    pub fn reads(&self) -> &Arc<ReadBudget> {
        &self.reads
    }

    /// About how many bytes a read of `key` answers: this node's own replica's size, or what
    /// an earlier read it coordinated found (0: small or unknown).
    pub fn size_hint(&self, key: &[u8]) -> usize {
        let local = self.local.stored_size(key);
        if local > 0 {
            return local;
        }
        self.large_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn remember_size(&self, key: &Bytes, bytes: usize) {
        let mut known = self.large_keys.lock().unwrap_or_else(|p| p.into_inner());
        if bytes < crate::load_shedding::LARGE_STATE_BYTES {
            known.remove(key);
            return;
        }
        if known.len() >= MAX_LARGE_KEYS && !known.contains_key(key) {
            known.clear();
        }
        known.insert(key.clone(), bytes);
    }

    /// The context of `key` for `ctx`, signed with this node's newest context key that the
    /// other nodes have been told of (on a node's first start, its first context waits up to
    /// [`KEY_ANNOUNCE_WAIT`] for that).
    pub async fn sign(
        &self,
        view: &ClusterView,
        key: &[u8],
        ctx: &CausalContext,
    ) -> Result<Bytes, Error> {
        let announced = self.membership.announced_keys(KEY_ANNOUNCE_WAIT).await;
        let signing = view
            .context_keys
            .signing_as_of(announced)
            .ok_or_else(|| Error::Internal("this node has no context key to sign with".into()))?;
        Ok(Bytes::from(sign_context(key, ctx, signing)))
    }

    /// Decodes and verifies a client's context of `key` (see `context_keys.rs`). A context
    /// signed with a key this node has not learnt yet (its signer made it a moment ago) makes
    /// this node ask the signer for its keys, once, then decide.
    pub async fn verify_context(&self, key: &[u8], bytes: &[u8]) -> Result<CausalContext, Error> {
        let decode = || {
            let view = self.membership.current();
            decode_context(key, bytes, &view.context_keys.at(now_ms()))
        };
        let Err(ContextError::UnknownKey { signer, .. }) = decode() else {
            return Ok(decode()?);
        };
        // The signer first; if it cannot tell (hung, down, partitioned away: its key may not
        // have reached this node by gossip before it stopped), the other live members, any of
        // which may have learnt the key from it already.
        self.learn_context_keys(&signer).await;
        if !matches!(decode(), Err(ContextError::UnknownKey { .. })) {
            return Ok(decode()?);
        }
        let view = self.membership.current();
        let others: Vec<String> = view
            .ring
            .members()
            .iter()
            .filter(|m| m.id != signer && m.id != view.self_id && self.peers.is_up(&m.address))
            .map(|m| m.id.clone())
            .collect();
        for other in others {
            self.learn_context_keys(&other).await;
            if !matches!(decode(), Err(ContextError::UnknownKey { .. })) {
                return Ok(decode()?);
            }
        }
        Err(
            ContextError::NotIssued("it names a context key that no node of the cluster holds")
                .into(),
        )
    }

    /// Asks member `signer` for its context keys (one gossip exchange), unless this node asked
    /// it less than a second ago. Names that are no member are not asked: a client cannot make
    /// this node call anyone.
    async fn learn_context_keys(&self, signer: &str) {
        let view = self.membership.current();
        let Some(address) = view
            .state
            .member(signer)
            .filter(|_| !view.state.is_removed(signer) && signer != view.self_id)
            .map(|m| {
                view.ring
                    .members()
                    .iter()
                    .chain(view.previous.iter().flat_map(|(r, _)| r.members()))
                    .find(|x| x.id == signer)
                    .map_or_else(|| m.address.clone(), |x| x.address.clone())
            })
        else {
            return;
        };
        let slot = {
            let mut pulls = self.key_pulls.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(pulls.entry(signer.to_string()).or_default())
        };
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t.elapsed() < KEY_PULL_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let transport = PeerTransport {
            peers: Arc::clone(&self.peers),
            timeout: self.timeout.min(KEY_PULL_INTERVAL),
        };
        if let Err(e) = self.membership.gossip_with(&transport, &address).await {
            tracing::debug!(%signer, error = %e, "could not ask a node for its context keys");
        }
    }

    /// Lets the work that outlives requests finish, for at most `deadline`; called at shutdown
    /// once no request is being served, so that writes reach their replicas before storage
    /// closes.
    pub async fn drain(&self, deadline: Duration) {
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "shutting down with background work unfinished"
            );
        }
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// This node's connections to, and view of, its peers.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Read repairs sent since start.
    pub fn read_repairs(&self) -> u64 {
        self.metrics.read_repairs.get()
    }

    /// A quorum read of `key`.
    pub async fn get(self: &Arc<Self>, key: Bytes, r: Option<u32>) -> Result<GetResult, Error> {
        let start = Instant::now();
        let result = self.get_inner(key, r).await;
        if let Ok(got) = &result {
            self.metrics.versions_read(got.values.len());
        }
        self.metrics
            .request("get", Role::Coordinator, outcome(&result), start.elapsed());
        result
    }

    async fn get_inner(self: &Arc<Self>, key: Bytes, r: Option<u32>) -> Result<GetResult, Error> {
        self.limits.check_key(&key)?;
        let view = self.membership.current();
        check_joined(&view)?;
        let n = view.quorums.n;
        let r = r.unwrap_or(view.quorums.r);
        check_quorum("R", r, n)?;
        let (replicas, fallbacks, sets) = preference_list(&view, &key);
        check_replica_count("R", r, &replicas)?;
        self.check_reachable("get", r, &replicas, &fallbacks, &view.self_id)
            .await?;

        // The primaries this node can reach (itself included); when those are too few for R,
        // every primary and, in their stead, fallbacks holding hints (sloppy quorum, paper
        // 4.6). A read never waits on a known-silent peer while others suffice.
        let is_up = |m: &Member| self.peers.is_up(&m.address);
        let (mut asked, extra) =
            sloppy_quorum::place_read(&replicas, &fallbacks, &view.self_id, r as usize, is_up);
        // A large state is read from R replicas only, this node first when it is one, and
        // from another in reserve whenever one fails: every replica more asked would move
        // megabytes for an answer the quorum does not wait for (issue 19's read storm).
        let mut reserve = std::collections::VecDeque::new();
        if self.size_hint(&key) >= crate::load_shedding::LARGE_STATE_BYTES
            && !sets.handover()
            && extra.is_empty()
            && asked.len() > r as usize
        {
            asked.sort_by_key(|m| m.id != view.self_id);
            reserve.extend(asked.split_off(r as usize));
        }
        let read = |m: Member, hints: bool| {
            let (this, key) = (Arc::clone(self), key.clone());
            async move { this.read_replica(m, key, hints).await }
        };
        let mut pending: FuturesUnordered<_> = FuturesUnordered::new();
        for m in asked {
            pending.push(read(m, false));
        }
        // Whether the fallbacks were asked: at once when the primaries that look up are too
        // few, or later, when those that looked up do not all answer.
        let mut asked_fallbacks = !extra.is_empty();
        for m in extra {
            pending.push(read(m, true));
        }
        let mut replies: Vec<(String, Option<VersionedState>)> = Vec::new();
        let mut failures = Vec::new();
        // R answers (during a handover, R among the previous replicas and R among the new).
        let mut answers = Acks::new(&sets);
        while !answers.met(r) {
            match pending.next().await {
                Some((node, Ok(state))) => {
                    answers.add(&node);
                    replies.push((node, state));
                }
                Some((node, Err(reason))) => {
                    failures.push(ReplicaFailure { node, reason });
                    if let Some(m) = reserve.pop_front() {
                        pending.push(read(m, false));
                    }
                }
                None if !reserve.is_empty() => {
                    let m = reserve.pop_front().expect("not empty");
                    pending.push(read(m, false));
                }
                None if !asked_fallbacks => {
                    // Primaries that looked up did not answer: the fallbacks that are up now.
                    asked_fallbacks = true;
                    let missing = replicas.len().saturating_sub(replies.len());
                    for m in fallbacks.iter().filter(|m| is_up(m)).take(missing) {
                        pending.push(read(m.clone(), true));
                    }
                }
                None => break,
            }
        }
        if !answers.met(r) {
            return Err(Error::QuorumNotReached {
                op: "get",
                needed: r,
                got: answers.all,
                failures,
            });
        }
        let merged = merge_all(replies.iter().filter_map(|(_, s)| s.as_ref()));
        if self.local.stored_size(&key) == 0 {
            self.remember_size(&key, merged.value_bytes());
        }
        let result = GetResult {
            values: merged.live_values(),
            timestamps_ms: merged.live_timestamps(),
            tombstone: merged.has_tombstone(),
            context: self
                .sign(&view, &key, &CausalContext::of_read(&merged))
                .await?,
        };

        // Late replies and read repair happen after the client has its answer.
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            while let Some((node, reply)) = pending.next().await {
                if let Ok(state) = reply {
                    replies.push((node, state));
                }
            }
            this.read_repair(key, replies, &replicas).await;
        });
        Ok(result)
    }

    /// A quorum write: a put, or a delete when `value` is `None`, superseding what the
    /// request's context saw. Returns the context covering that and the new write.
    pub async fn put(self: &Arc<Self>, req: WriteRequest) -> Result<Bytes, Error> {
        let start = Instant::now();
        let op = if req.value.is_some() { "put" } else { "delete" };
        let mut role = Role::Coordinator;
        let result = self.put_inner(req, &mut role).await;
        self.metrics
            .request(op, role, outcome(&result), start.elapsed());
        result
    }

    async fn put_inner(
        self: &Arc<Self>,
        req: WriteRequest,
        role: &mut Role,
    ) -> Result<Bytes, Error> {
        let key = req.key.clone();
        self.limits.check_key(&key)?;
        if let Some(v) = &req.value {
            self.limits.check_value(v)?;
        }
        let context = self.verify_context(&key, &req.context).await?;
        let view = self.membership.current();
        check_joined(&view)?;
        let n = view.quorums.n;
        let w = req.w.unwrap_or(view.quorums.w);
        check_quorum("W", w, n)?;
        let sync = req.sync_replicas.unwrap_or(self.sync_replicas);
        check_sync_replicas(sync, w)?;
        let op = if req.value.is_some() { "put" } else { "delete" };
        let (replicas, fallbacks, sets) = preference_list(&view, &key);
        check_replica_count("W", w, &replicas)?;
        self.check_reachable(op, w, &replicas, &fallbacks, &view.self_id)
            .await?;
        let budget = req.budget.unwrap_or(DEFAULT_REQUEST_BUDGET);
        let verdict_at = Instant::now() + budget.saturating_sub(VERDICT_MARGIN);

        if !replicas.iter().any(|m| m.id == view.self_id) {
            if req.forwarded {
                // The forwarder thinks this node is a replica and it is not: their views of the
                // membership differ. Never count a non-replica toward W.
                return Err(Error::NotReplica {
                    node: view.self_id.clone(),
                });
            }
            *role = Role::Forwarder;
            return self.forward(op, req, w, sync, &replicas, verdict_at).await;
        }

        let write_id = req.write_id.unwrap_or_else(|| WriteId(rand::random()));
        if req.attempt > 1 {
            self.gather_earlier_attempts(&key, &replicas, &view.self_id, verdict_at)
                .await;
        }
        // The write runs to the end in its own task, whatever becomes of this request.
        let (tx, rx) = oneshot::channel();
        let this = Arc::clone(self);
        let self_id = view.self_id.clone();
        self.tasks.spawn(async move {
            let write = Write {
                op,
                key,
                context,
                write_id,
                value: req.value,
                w,
                sync,
                sets,
            };
            this.write(write, replicas, fallbacks, self_id, verdict_at, tx)
                .await;
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::Internal(
                "the write task ended without a verdict".into(),
            ))
        })
    }

    /// Fails fast when fewer of the key's primaries and fallbacks answer than `needed` (or, for
    /// a write, no primary does, to coordinate it): waiting would only end in
    /// `QuorumNotReached` after the replica timeout, while another node (the client tries one
    /// next) may reach them. Nodes this one has marked down are pinged first, briefly and at
    /// most once a second each ([`Peers::recheck`]), so that a node that just came back is not
    /// refused for the length of its probe's backoff.
    async fn check_reachable(
        &self,
        op: &'static str,
        needed: u32,
        replicas: &[Member],
        fallbacks: &[Member],
        self_id: &str,
    ) -> Result<(), Error> {
        let up = |m: &Member| m.id == self_id || self.peers.is_up(&m.address);
        let enough = || {
            let reachable = replicas.iter().chain(fallbacks).filter(|m| up(m)).count() as u32;
            let coordinator = op == "get" || replicas.iter().any(up);
            (reachable >= needed && coordinator, reachable)
        };
        if enough().0 {
            return Ok(());
        }
        let down: Vec<&str> = replicas
            .iter()
            .chain(fallbacks)
            .filter(|m| !up(m))
            .map(|m| m.address.as_str())
            .collect();
        self.peers.recheck(&down, QUICK_PING).await;
        let (ok, reachable) = enough();
        if ok {
            return Ok(());
        }
        Err(Error::TooFewReachable {
            op,
            needed,
            reachable,
            unreachable: replicas
                .iter()
                .chain(fallbacks)
                .filter(|m| !up(m))
                .map(|m| m.id.clone())
                .collect(),
        })
    }

    /// Coordinates a write: local update, then copies to the other replicas (or, for those
    /// this node sees as down, hints on fallbacks: sloppy quorum), answering `tx` once W hold
    /// it or at `verdict_at`, and carrying on with the remaining copies after. A copy that
    /// fails moves to the next fallback as a hint, so the write still reaches N nodes.
    async fn write(
        self: Arc<Self>,
        w: Write,
        replicas: Vec<Member>,
        fallbacks: Vec<Member>,
        self_id: String,
        verdict_at: Instant,
        tx: oneshot::Sender<Result<Bytes, Error>>,
    ) {
        let (state, outcome) = match self
            .local
            .coordinate(
                w.key.clone(),
                w.context.clone(),
                w.write_id,
                w.value,
                w.sync >= 1,
            )
            .await
        {
            Ok(done) => done,
            Err(WriteError::Storage(e)) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
            Err(e @ WriteError::SiblingLimit { .. }) => {
                let _ = tx.send(Err(Error::SiblingLimit(e.to_string())));
                return;
            }
            Err(WriteError::ContextNotIssued) => {
                let _ = tx.send(Err(ContextError::NotIssued(
                    "it names a version of this node that this node never issued",
                )
                .into()));
                return;
            }
        };
        let view = self.membership.current();
        let reply = match self
            .sign(
                &view,
                &w.key,
                &w.context.with_write(w.write_id, &outcome.dots()),
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let mut tx = Some(tx);
        let mut acks = Acks::new(&w.sets);
        acks.add(&self_id);
        let mut failures = Vec::new();
        if acks.met(w.w) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(Ok(reply.clone()));
            }
        }
        let (copies, mut spare) =
            sloppy_quorum::place_write(&replicas, &fallbacks, &self_id, |m| {
                self.peers.is_up(&m.address)
            });
        // The coordinator's own copy is the first synced one; beyond it, every other replica
        // syncs, so whichever acknowledge first count.
        let sync = w.sync >= 2;
        let send = |copy: sloppy_quorum::Copy| {
            let (peers, key, state, timeout) = (
                Arc::clone(&self.peers),
                w.key.clone(),
                state.clone(),
                self.timeout,
            );
            async move {
                let result = match &copy.hint_for {
                    None => {
                        peers
                            .merge(&copy.to.address, &key, &state, sync, timeout)
                            .await
                    }
                    Some(owner) => {
                        peers
                            .store_hint(&copy.to.address, &key, &owner.id, &state, sync, timeout)
                            .await
                    }
                };
                (copy, result)
            }
        };
        let mut pending: FuturesUnordered<_> = copies.into_iter().map(send).collect();
        let deadline = tokio::time::sleep_until(verdict_at);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    None => break,
                    Some((copy, Ok(()))) => {
                        acks.add(&copy.hint_for.as_ref().unwrap_or(&copy.to).id);
                        if acks.met(w.w) {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Ok(reply.clone()));
                            }
                        }
                    }
                    Some((copy, Err(reason))) => {
                        if let Some(next) = sloppy_quorum::replace_copy(&copy, &mut spare) {
                            tracing::debug!(failed = %copy.to.id, to = %next.to.id, "copy failed: handing it to a fallback");
                            pending.push(send(next));
                        }
                        failures.push(ReplicaFailure { node: copy.to.id, reason });
                    }
                },
                () = &mut deadline, if tx.is_some() => {
                    let mut failures = failures.clone();
                    failures.push(ReplicaFailure {
                        node: format!("{} other replica(s)", pending.len()),
                        reason: "no answer before the request's deadline".into(),
                    });
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(Error::QuorumNotReached { op: w.op, needed: w.w, got: acks.all, failures }));
                    }
                }
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(Err(Error::QuorumNotReached {
                op: w.op,
                needed: w.w,
                got: acks.all,
                failures,
            }));
        }
    }

    /// For a retried write: merges what the other replicas hold of the key into this one, so
    /// that an earlier attempt applied elsewhere is found rather than applied again. Waits at
    /// most half the time left; a replica that does not answer by then is left to the merges.
    async fn gather_earlier_attempts(
        self: &Arc<Self>,
        key: &Bytes,
        replicas: &[Member],
        self_id: &str,
        verdict_at: Instant,
    ) {
        let left = verdict_at.saturating_duration_since(Instant::now());
        let wait = (left / 2).min(self.timeout);
        // A replica known to be silent would only hold the write up until the wait ends.
        let mut pending: FuturesUnordered<_> = replicas
            .iter()
            .filter(|m| m.id != self_id && self.peers.is_up(&m.address))
            .map(|m| remote_read(&self.peers, m, key.clone(), false, wait))
            .collect();
        while let Some(reply) = pending.next().await {
            if let Ok(Some(state)) = reply {
                if let Err(e) = self.local.merge(key.clone(), state, false).await {
                    tracing::warn!(error = %e, "could not merge an earlier attempt's state");
                }
            }
        }
    }

    /// Sends a write this node does not replicate to the first replica that takes it. When a
    /// replica fails after the request may have reached it, the next one gets the same write id
    /// as a further attempt, so the write is applied once whichever replicas end up holding it.
    async fn forward(
        &self,
        op: &'static str,
        req: WriteRequest,
        w: u32,
        sync_replicas: u32,
        replicas: &[Member],
        verdict_at: Instant,
    ) -> Result<Bytes, Error> {
        let write_id = req.write_id.unwrap_or_else(|| WriteId(rand::random()));
        let mut attempt = req.attempt.max(1);
        let mut unknown = false;
        let mut failures = Vec::new();
        // Replicas this node can reach first: a replica known to be silent is tried last.
        let mut ordered: Vec<&Member> = replicas.iter().collect();
        ordered.sort_by_key(|m| !self.peers.is_up(&m.address));
        for m in ordered {
            let left = verdict_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Room for the coordinator's own replica timeout, so that its verdict comes back.
            let budget = left.min(self.timeout + FORWARD_MARGIN);
            let mut client = match self.peers.kv(&m.address) {
                Ok(c) => c,
                Err(reason) => {
                    failures.push(ReplicaFailure {
                        node: m.id.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let (key, context, write_id) = (
                req.key.clone(),
                req.context.clone(),
                Bytes::copy_from_slice(&write_id.to_bytes()),
            );
            let call = async {
                match &req.value {
                    Some(v) => {
                        let mut r = Request::new(pb::PutRequest {
                            key: Some(key),
                            value: Some(v.clone()),
                            context,
                            w: Some(w),
                            write_id,
                            attempt,
                            sync_replicas: Some(sync_replicas),
                            ring_version: 0,
                            request_id: 0,
                        });
                        mark_forwarded(&mut r, budget);
                        client.put(r).await.map(|r| r.into_inner().context)
                    }
                    None => {
                        let mut r = Request::new(pb::DeleteRequest {
                            key: Some(key),
                            context,
                            w: Some(w),
                            write_id,
                            attempt,
                            sync_replicas: Some(sync_replicas),
                            ring_version: 0,
                            request_id: 0,
                        });
                        mark_forwarded(&mut r, budget);
                        client.delete(r).await.map(|r| r.into_inner().context)
                    }
                }
            };
            let status = match tokio::time::timeout(budget, call).await {
                Ok(Ok(context)) => {
                    self.peers.answered(&m.address);
                    return Ok(context);
                }
                Ok(Err(status)) => {
                    self.peers.record_call(&m.address, Some(&status));
                    status
                }
                Err(_) => {
                    self.peers.record_call(&m.address, None);
                    tonic::Status::deadline_exceeded(format!("no answer within {budget:?}"))
                }
            };
            let reason = format!("{:?}: {}", status.code(), status.message());
            if is_ours(&status) {
                // The coordinator's own verdict: pass it on, unless it refused the request
                // before doing anything (not a replica after all, shutting down).
                if status_code(&status) != Some(dynamokv_common::ErrorCode::Unavailable) {
                    return Err(Error::Remote(status));
                }
            } else if !certainly_not_sent(&status) {
                // It may have been applied: the next replica gets it as a further attempt.
                unknown = true;
                attempt += 1;
            }
            failures.push(ReplicaFailure {
                node: m.id.clone(),
                reason,
            });
        }
        if unknown {
            return Err(Error::OutcomeUnknown { op, failures });
        }
        Err(Error::QuorumNotReached {
            op,
            needed: w,
            got: 0,
            failures,
        })
    }

    /// A client's read of this node's own replica of `key`, for a read the client coordinates
    /// itself (paper 6.4); with `hints`, as a fallback, with the hints it holds merged in.
    /// Refused, and nothing read, when the client routed it by an older ring than this node's,
    /// or when by this node's ring it holds no replica of the key and was not asked as a
    /// fallback: the client's answer would otherwise count a node that may miss the key's data.
    pub async fn read_for_client(
        &self,
        key: Bytes,
        hints: bool,
        routed_by: u64,
    ) -> Result<Option<VersionedState>, Error> {
        let start = Instant::now();
        let result = self.read_for_client_inner(key, hints, routed_by).await;
        self.metrics.request(
            "read_replica",
            Role::Replica,
            outcome(&result),
            start.elapsed(),
        );
        result
    }

    async fn read_for_client_inner(
        &self,
        key: Bytes,
        hints: bool,
        routed_by: u64,
    ) -> Result<Option<VersionedState>, Error> {
        self.limits.check_key(&key)?;
        let view = self.membership.current();
        check_joined(&view)?;
        let moved = |reason| Error::RingMoved {
            node: view.self_id.clone(),
            version: view.ring_version,
            reason,
        };
        if routed_by < view.ring_version {
            return Err(moved("the client routed by an older ring"));
        }
        if hints {
            return Ok(self.local.read_with_hints(&key)?);
        }
        // A client routing by a newer ring than this node's (gossip has not brought the commit
        // here yet) is answered: by that ring this node is a replica, which its data will reach
        // by transfer, and the client counts its answer among the new ring's replicas only.
        let (replicas, _, _) = preference_list(&view, &key);
        if routed_by == view.ring_version && !replicas.iter().any(|m| m.id == view.self_id) {
            return Err(moved("holds no replica of this key"));
        }
        Ok(self.local.read(key).await?)
    }

    /// A client's read repair: this node, a replica of `key`, reads the key from `sources`
    /// (other replicas whose answers held what this one lacked) and merges what they hold into
    /// its own state. Only states replicas hold reach this node: a client names nodes, never
    /// versions. Refused, with nothing read, when this node or a source is no replica of the
    /// key by this node's ring (the client routes by another: it pulls the ring again).
    pub async fn repair_for_client(&self, key: Bytes, sources: Vec<String>) -> Result<(), Error> {
        let start = Instant::now();
        let result = async {
            self.limits.check_key(&key)?;
            let view = self.membership.current();
            check_joined(&view)?;
            if sources.is_empty() {
                return Err(Error::MissingField("sources"));
            }
            let mut sources = sources;
            sources.sort();
            sources.dedup();
            if sources.len() > MAX_REPAIR_SOURCES {
                return Err(Error::MalformedField(
                    "sources names more replicas than a key has (at most 8)",
                ));
            }
            let moved = |reason| Error::RingMoved {
                node: view.self_id.clone(),
                version: view.ring_version,
                reason,
            };
            let (replicas, _, _) = preference_list(&view, &key);
            if !replicas.iter().any(|m| m.id == view.self_id) {
                return Err(moved("holds no replica of this key"));
            }
            let mut from = Vec::with_capacity(sources.len());
            for id in &sources {
                match replicas.iter().find(|m| &m.id == id) {
                    Some(m) if m.id != view.self_id => from.push(m.clone()),
                    Some(_) => {
                        return Err(Error::MalformedField(
                            "sources names the node asked to repair itself",
                        ));
                    }
                    None => return Err(moved("counts a source that is no replica of this key")),
                }
            }
            let reads: FuturesUnordered<_> = from
                .iter()
                .map(|m| remote_read(&self.peers, m, key.clone(), false, self.timeout))
                .collect();
            let states: Vec<_> = reads.collect().await;
            for state in states {
                match state {
                    Ok(Some(state)) => {
                        self.local.merge(key.clone(), state, false).await?;
                    }
                    Ok(None) => {}
                    Err(reason) => tracing::debug!(%reason, "read repair: a source did not answer"),
                }
            }
            self.metrics.read_repairs.inc();
            Ok(())
        }
        .await;
        self.metrics.request(
            "repair_replica",
            Role::Replica,
            outcome(&result),
            start.elapsed(),
        );
        result
    }

    /// A replica's state of `key`; with `hints`, a fallback's hints for it too.
    async fn read_replica(
        &self,
        m: Member,
        key: Bytes,
        hints: bool,
    ) -> ReplicaReply<Option<VersionedState>> {
        let view_self = self.membership.current().self_id.clone();
        let result = if m.id == view_self && hints {
            self.local.read_with_hints(&key).map_err(|e| e.to_string())
        } else if m.id == view_self {
            self.local.read(key).await.map_err(|e| e.to_string())
        } else {
            remote_read(&self.peers, &m, key, hints, self.timeout).await
        };
        (m.id, result)
    }

    /// Sends the merged state to every replica whose reply lacked part of it.
    async fn read_repair(
        &self,
        key: Bytes,
        replies: Vec<(String, Option<VersionedState>)>,
        replicas: &[Member],
    ) {
        let mut merged = merge_all(replies.iter().filter_map(|(_, s)| s.as_ref()));
        if merged.clock().is_empty() {
            return;
        }
        // Compare against what a replica would store after merging: truncated as it would be.
        self.local.truncate(&mut merged, now_ms());
        let self_id = self.membership.current().self_id.clone();
        for (node, state) in &replies {
            let stale = state.as_ref().is_none_or(|s| !s.descends(&merged));
            if !stale {
                continue;
            }
            let Some(m) = replicas.iter().find(|m| &m.id == node) else {
                continue;
            };
            self.metrics.read_repairs.inc();
            tracing::debug!(node = %m.id, "read repair");
            let result = if m.id == self_id {
                self.local
                    .merge(key.clone(), merged.clone(), false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                self.peers
                    .merge(&m.address, &key, &merged, false, self.timeout)
                    .await
            };
            if let Err(reason) = result {
                tracing::debug!(node = %m.id, %reason, "read repair failed");
            }
        }
    }
}

/// A request's outcome as counted in the metrics: `ok` or the client's error code.
fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    }
}

/// A write being coordinated.
struct Write {
    op: &'static str,
    key: Bytes,
    context: CausalContext,
    write_id: WriteId,
    value: Option<Bytes>,
    w: u32,
    /// Acknowledging replicas that fsync first.
    sync: u32,
    /// What W is counted over (two sets during a handover).
    sets: QuorumSets,
}

fn merge_all<'a>(states: impl Iterator<Item = &'a VersionedState>) -> VersionedState {
    let now = now_ms();
    let mut merged = VersionedState::new();
    for s in states {
        merged.merge(s, now);
    }
    merged
}

/// The key's replicas, fallbacks and quorum sets by this node's view (shared with clients
/// that coordinate their reads: [`sloppy_quorum::replica_sets`]).
pub(crate) fn preference_list(
    view: &ClusterView,
    key: &[u8],
) -> (Vec<Member>, Vec<Member>, QuorumSets) {
    let previous = view.previous.as_ref().map(|(ring, n)| (ring, *n));
    let sets = sloppy_quorum::replica_sets(
        &view.ring,
        view.quorums.n,
        previous,
        |id| view.state.is_removed(id),
        key,
    );
    (sets.replicas, sets.fallbacks, sets.sets)
}

/// Refuses requests on a node that is not part of a ring yet.
fn check_joined(view: &ClusterView) -> Result<(), Error> {
    if view.joined() {
        Ok(())
    } else {
        Err(Error::NotJoined {
            node: view.self_id.clone(),
        })
    }
}

/// A quorum can never be met by more replicas than the key has.
fn check_replica_count(name: &'static str, q: u32, replicas: &[Member]) -> Result<(), Error> {
    if q as usize > replicas.len() {
        return Err(InputError::InvalidQuorum {
            name,
            value: q,
            n: replicas.len() as u32,
        }
        .into());
    }
    Ok(())
}

fn mark_forwarded<T>(req: &mut Request<T>, budget: Duration) {
    req.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    req.set_timeout(budget);
}

/// Whether a status came from a DynamoKV node's own verdict rather than the transport.
fn is_ours(status: &tonic::Status) -> bool {
    status
        .metadata()
        .contains_key(dynamokv_common::error_code::ERROR_CODE_METADATA)
}

fn status_code(status: &tonic::Status) -> Option<dynamokv_common::ErrorCode> {
    status
        .metadata()
        .get(dynamokv_common::error_code::ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(dynamokv_common::ErrorCode::parse)
}

async fn remote_read(
    peers: &Arc<Peers>,
    m: &Member,
    key: Bytes,
    include_hints: bool,
    timeout: Duration,
) -> Result<Option<VersionedState>, String> {
    let reply = peers.read(&m.address, key, include_hints, timeout).await?;
    reply
        .state
        .map(|s| VersionedState::from_proto(&s).map_err(|e| format!("sent a bad state: {e}")))
        .transpose()
}
