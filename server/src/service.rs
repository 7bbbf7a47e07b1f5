//! The gRPC services: request conversion and nothing else. `Kv` hands client requests to the
//! [`Coordinator`]; `Replica` serves other nodes from the [`LocalReplica`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use dynamokv_common::{CausalContext, VersionedState, WriteId};
use dynamokv_proto::v1 as pb;

use crate::access_control::{AccessControl, Permission, UserRecord};
use crate::anti_entropy::AntiEntropy;
use crate::coordinator::{Coordinator, FORWARDED_METADATA, WriteRequest};
use crate::error::Error;
use crate::hinted_handoff::HintedHandoff;
use crate::key_range_transfer::KeyRangeTransfer;
use crate::load_shedding::{Admitted, LoadShedding};
use crate::membership::TopologyError;
use crate::metrics::{Metrics, Role};
use crate::replica::{LocalReplica, now_ms};

#[derive(Debug, Clone)]
pub struct KvService {
    coordinator: Arc<Coordinator>,
    access: Arc<AccessControl>,
    shedding: Arc<LoadShedding>,
}

impl KvService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        access: Arc<AccessControl>,
        shedding: Arc<LoadShedding>,
    ) -> Self {
        KvService {
            coordinator,
            access,
            shedding,
        }
    }
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, Status> {
    field.ok_or_else(|| Error::MissingField(name).into())
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_METADATA)
}

/// The time left before the caller's deadline, from gRPC's `grpc-timeout` header: up to eight
/// digits and a unit (H, M, S, m, u, n).
fn budget<T>(req: &Request<T>) -> Option<Duration> {
    let raw = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Who a read is counted against in the read budgets (`load_shedding::ReadBudget`): the
/// authenticated caller on a TLS node, else its address.
fn caller_of<T>(req: &Request<T>) -> String {
    use crate::access_control::Principal;
    match req.extensions().get::<crate::intake::Authenticated>() {
        Some(crate::intake::Authenticated(Principal::User { name, .. })) => format!("user:{name}"),
        Some(crate::intake::Authenticated(Principal::Node(id))) => format!("node:{id}"),
        _ => req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|c| c.remote)
            .map_or_else(|| "anyone".to_string(), |a| format!("address:{}", a.ip())),
    }
}

/// How long a large read may wait for its turn: until shortly before the caller's deadline.
fn read_wait<T>(req: &Request<T>) -> Duration {
    budget(req)
        .unwrap_or(crate::coordinator::DEFAULT_REQUEST_BUDGET)
        .saturating_sub(Duration::from_millis(200))
}

/// `answer` carrying `permit` until it is sent.
fn holding<T>(answer: T, permit: Option<crate::load_shedding::ReadPermit>) -> Response<T> {
    let mut response = Response::new(answer);
    if let Some(p) = permit {
        response
            .extensions_mut()
            .insert(crate::load_shedding::HeldRead(Arc::new(p)));
    }
    response
}

/// The client's write id: empty means none given.
fn write_id(raw: &[u8]) -> Result<Option<WriteId>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    WriteId::from_bytes(raw)
        .map(Some)
        .ok_or_else(|| Error::MalformedField("write_id must be empty or 16 bytes").into())
}

impl KvService {
    /// This node's ring version, and whether it is newer than the one `routed_by` (0: the
    /// client did not say) that the client routed the request by.
    fn ring_news(&self, routed_by: u64) -> Option<pb::RingNews> {
        let version = self.coordinator.membership().current().ring_version;
        Some(pb::RingNews {
            version,
            moved_on: routed_by != 0 && routed_by < version,
        })
    }
}

/// Admits `req` under the cap of requests in flight, authenticates its caller and checks
/// that it may `permission` on `key` (a request without a key fails its handler's own check
/// next). Client and operator calls alike. A node may make only a forward of a client's write
/// (`forwardable`: a put or delete, marked forwarded), as a member of the ring.
async fn admit<'a, T>(
    shedding: &'a LoadShedding,
    access: &Arc<AccessControl>,
    req: &Request<T>,
    permission: Permission,
    key: Option<&[u8]>,
    forwardable: bool,
) -> Result<Admitted<'a>, Status> {
    let admitted = shedding.admit(req)?;
    let who = access.authenticate(req).await?;
    access.check_node(&who, forwardable && forwarded(req))?;
    if let Some(key) = key {
        access.authorize(&who, permission, key)?;
    }
    Ok(admitted)
}

impl KvService {
    /// Admits a client's read of `key` by its size (`load_shedding::ReadBudget`; small reads
    /// pass with no permit).
    async fn admit_read(
        &self,
        caller: &str,
        key: &[u8],
        copies: usize,
        wait: Duration,
    ) -> Result<Option<crate::load_shedding::ReadPermit>, Status> {
        Ok(self
            .coordinator
            .reads()
            .admit(Some(caller), self.coordinator.size_hint(key), copies, wait)
            .await?)
    }

    async fn admit<T>(
        &self,
        req: &Request<T>,
        permission: Permission,
        key: Option<&[u8]>,
    ) -> Result<Admitted<'_>, Status> {
        admit(&self.shedding, &self.access, req, permission, key, false).await
    }

    /// [`admit`] for a put or delete, which a member node may send as a forward.
    async fn admit_write<T>(
        &self,
        req: &Request<T>,
        key: Option<&[u8]>,
    ) -> Result<Admitted<'_>, Status> {
        admit(
            &self.shedding,
            &self.access,
            req,
            Permission::Write,
            key,
            true,
        )
        .await
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let _admitted = self
            .admit(&req, Permission::Read, req.get_ref().key.as_deref())
            .await?;
        let (caller, wait) = (caller_of(&req), read_wait(&req));
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let permit = self
            .admit_read(
                &caller,
                &key,
                crate::load_shedding::COORDINATED_READ_COPIES,
                wait,
            )
            .await?;
        let got = self.coordinator.get(key, req.r).await?;
        Ok(holding(
            pb::GetResponse {
                values: got.values,
                context: got.context,
                ring: self.ring_news(req.ring_version),
                request_id: req.request_id,
                timestamps_ms: got.timestamps_ms,
                tombstone: got.tombstone,
            },
            permit,
        ))
    }

    async fn read_replica(
        &self,
        req: Request<pb::ReadReplicaRequest>,
    ) -> Result<Response<pb::ReadReplicaResponse>, Status> {
        let _admitted = self
            .admit(&req, Permission::Read, req.get_ref().key.as_deref())
            .await?;
        let (caller, wait) = (caller_of(&req), read_wait(&req));
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let permit = self
            .admit_read(
                &caller,
                &key,
                crate::load_shedding::REPLICA_READ_COPIES,
                wait,
            )
            .await?;
        let state = self
            .coordinator
            .read_for_client(key.clone(), req.include_hints, req.ring_version)
            .await?;
        let view = self.coordinator.membership().current();
        let context = match &state {
            Some(s) => {
                self.coordinator
                    .sign(&view, &key, &CausalContext::of_read(s))
                    .await?
            }
            None => Default::default(),
        };
        Ok(holding(
            pb::ReadReplicaResponse {
                state: state.map(|s| s.to_proto()),
                node_id: view.self_id.clone(),
                ring: self.ring_news(req.ring_version),
                request_id: req.request_id,
                context,
            },
            permit,
        ))
    }

    async fn repair_replica(
        &self,
        req: Request<pb::RepairReplicaRequest>,
    ) -> Result<Response<pb::RepairReplicaResponse>, Status> {
        // A repair writes a replica state: the client must be able to write the key.
        let _admitted = self
            .admit(&req, Permission::Write, req.get_ref().key.as_deref())
            .await?;
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        if req.state.is_some() {
            // Whatever a client sends as a state could name versions no node issued, values
            // past every limit, history that never expires: replicas take states from
            // replicas only.
            return Err(Error::MalformedField(
                "state is no longer accepted: a read repair names the replicas to read from (sources), and the node reads them itself",
            )
            .into());
        }
        self.coordinator.repair_for_client(key, req.sources).await?;
        Ok(Response::new(pb::RepairReplicaResponse {
            request_id: req.request_id,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let _admitted = self.admit_write(&req, req.get_ref().key.as_deref()).await?;
        let (fwd, budget) = (forwarded(&req), budget(&req));
        let req = req.into_inner();
        let (routed_by, request_id) = (req.ring_version, req.request_id);
        let key = required(req.key, "key")?;
        let context = self
            .coordinator
            .put(WriteRequest {
                key,
                value: Some(required(req.value, "value")?),
                context: req.context,
                w: req.w,
                sync_replicas: req.sync_replicas,
                write_id: write_id(&req.write_id)?,
                attempt: req.attempt,
                forwarded: fwd,
                budget,
            })
            .await?;
        Ok(Response::new(pb::PutResponse {
            context,
            ring: self.ring_news(routed_by),
            request_id,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let _admitted = self.admit_write(&req, req.get_ref().key.as_deref()).await?;
        let (fwd, budget) = (forwarded(&req), budget(&req));
        let req = req.into_inner();
        let (routed_by, request_id) = (req.ring_version, req.request_id);
        let key = required(req.key, "key")?;
        let context = self
            .coordinator
            .put(WriteRequest {
                key,
                value: None,
                context: req.context,
                w: req.w,
                sync_replicas: req.sync_replicas,
                write_id: write_id(&req.write_id)?,
                attempt: req.attempt,
                forwarded: fwd,
                budget,
            })
            .await?;
        Ok(Response::new(pb::DeleteResponse {
            context,
            ring: self.ring_news(routed_by),
            request_id,
        }))
    }

    async fn membership(
        &self,
        req: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        // Any authenticated caller may learn the ring (clients route by it).
        let _admitted = self.admit(&req, Permission::Read, None).await?;
        let view = self.coordinator.membership().current();
        Ok(Response::new(pb::MembershipResponse {
            cluster_name: view.cluster_name.clone(),
            partitions: view.ring.partition_count(),
            n: view.quorums.n,
            r: view.quorums.r,
            w: view.quorums.w,
            members: view.ring.members().iter().map(|m| m.to_proto()).collect(),
            self_id: view.self_id.clone(),
            ring_version: view.ring_version,
            previous_members: view
                .previous
                .as_ref()
                .map(|(ring, _)| ring.members().iter().map(|m| m.to_proto()).collect())
                .unwrap_or_default(),
            previous_n: view.previous.as_ref().map_or(0, |(_, n)| *n),
            removed_members: view
                .previous
                .as_ref()
                .map(|(ring, _)| {
                    ring.members()
                        .iter()
                        .filter(|m| view.state.is_removed(&m.id))
                        .map(|m| m.id.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct ReplicaService {
    node_id: String,
    metrics: Arc<Metrics>,
    /// Ends the peers' exchange streams when the node shuts down (a stream never ends by
    /// itself, and graceful shutdown waits for every stream).
    shutdown: CancellationToken,
    local: Arc<LocalReplica>,
    coordinator: Arc<Coordinator>,
    access: Arc<AccessControl>,
}

impl ReplicaService {
    pub fn new(
        node_id: String,
        local: Arc<LocalReplica>,
        coordinator: Arc<Coordinator>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        access: Arc<AccessControl>,
    ) -> Self {
        ReplicaService {
            node_id,
            metrics,
            shutdown,
            local,
            coordinator,
            access,
        }
    }
}

impl ReplicaService {
    /// A replica read for another node; large ones are admitted by the node's read budget
    /// first (the permit is the caller's to keep until the answer is sent).
    async fn read(
        &self,
        req: pb::ReadLocalRequest,
    ) -> Result<
        (
            pb::ReadLocalResponse,
            Option<crate::load_shedding::ReadPermit>,
        ),
        Status,
    > {
        let start = std::time::Instant::now();
        let key = required(req.key, "key")?;
        let permit = self
            .coordinator
            .reads()
            .admit(
                None,
                self.local.stored_size(&key),
                crate::load_shedding::REPLICA_READ_COPIES,
                self.coordinator.replica_timeout(),
            )
            .await?;
        let state = if req.include_hints {
            self.local.read_with_hints(&key)
        } else {
            self.local.read(key).await
        }
        .map_err(Error::from)?;
        self.metrics.latency("read", Role::Replica, start.elapsed());
        Ok((
            pb::ReadLocalResponse {
                state: state.map(|s| s.to_proto()),
                actor: self.local.actor().0,
            },
            permit,
        ))
    }

    async fn merge(&self, req: pb::MergeLocalRequest) -> Result<pb::MergeLocalResponse, Status> {
        let start = std::time::Instant::now();
        let key = required(req.key, "key")?;
        let state = required(req.state, "state")?;
        let state = VersionedState::from_proto(&state)
            .map_err(|e| Status::invalid_argument(format!("bad replica state: {e}")))?;
        self.local
            .merge(key, state, req.sync)
            .await
            .map_err(Error::from)?;
        self.metrics
            .latency("merge", Role::Replica, start.elapsed());
        Ok(pb::MergeLocalResponse {})
    }

    /// Answers one request of an exchange stream.
    async fn answer(&self, req: pb::PeerRequest) -> pb::PeerResponse {
        use pb::peer_request::Op;
        use pb::peer_response::Result as Answer;
        let result = match req.op {
            // The permit is dropped with this answer, once it is built (it then waits in the
            // stream's queue, a message at a time).
            Some(Op::Read(r))
                if r.key.as_ref().is_some_and(|k| {
                    self.local.stored_size(k) >= crate::load_shedding::LARGE_STATE_BYTES
                }) =>
            {
                Err(Status::out_of_range(crate::peers::READ_BY_CALL))
            }
            Some(Op::Read(r)) => self.read(r).await.map(|(a, _permit)| Answer::Read(a)),
            Some(Op::Merge(m)) => self.merge(m).await.map(Answer::Merge),
            None => Err(Status::invalid_argument(
                "a peer request without an operation",
            )),
        };
        pb::PeerResponse {
            id: req.id,
            result: Some(result.unwrap_or_else(|status| {
                Answer::Failure(pb::PeerFailure {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                })
            })),
        }
    }
}

/// The answers of an exchange stream.
pub(crate) type PeerResponses =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::replica_server::Replica for ReplicaService {
    type ExchangeStream = PeerResponses;

    async fn exchange(
        &self,
        req: Request<tonic::Streaming<pb::PeerRequest>>,
    ) -> Result<Response<PeerResponses>, Status> {
        self.access.check_peer(&req, "Exchange", true)?;
        let mut requests = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    next = requests.message() => match next {
                        Ok(Some(req)) => req,
                        // The peer closed the stream or the connection broke.
                        _ => break,
                    },
                    () = this.shutdown.cancelled() => break,
                };
                let synced = matches!(&req.op, Some(pb::peer_request::Op::Merge(m)) if m.sync);
                if synced {
                    // Waits for an fsync: must not hold up the requests behind it.
                    let (this, tx) = (this.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Ok(this.answer(req).await));
                    });
                } else {
                    // Reads and unsynced merges take microseconds: answered in turn.
                    let _ = tx.send(Ok(this.answer(req).await));
                }
            }
            // Dropping the sender (once the spawned answers are sent) ends the response stream.
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        self.access.check_peer(&req, "Ping", false)?;
        Ok(Response::new(pb::PingResponse {
            node_id: self.node_id.clone(),
            actor: self.local.actor().0,
            vector_truncations: self.local.truncations(),
            read_repairs: self.coordinator.read_repairs(),
            retired_writes_evicted: self.local.retired_evicted(),
        }))
    }

    async fn read_local(
        &self,
        req: Request<pb::ReadLocalRequest>,
    ) -> Result<Response<pb::ReadLocalResponse>, Status> {
        self.access.check_peer(&req, "ReadLocal", true)?;
        let (answer, permit) = self.read(req.into_inner()).await?;
        Ok(holding(answer, permit))
    }

    async fn merge_local(
        &self,
        req: Request<pb::MergeLocalRequest>,
    ) -> Result<Response<pb::MergeLocalResponse>, Status> {
        self.access.check_peer(&req, "MergeLocal", true)?;
        Ok(Response::new(self.merge(req.into_inner()).await?))
    }

    async fn store_hint(
        &self,
        req: Request<pb::StoreHintRequest>,
    ) -> Result<Response<pb::StoreHintResponse>, Status> {
        self.access.check_peer(&req, "StoreHint", true)?;
        let start = std::time::Instant::now();
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let state = required(req.state, "state")?;
        let state = VersionedState::from_proto(&state)
            .map_err(|e| Status::invalid_argument(format!("bad replica state: {e}")))?;
        if req.owner.is_empty() || req.owner == self.node_id {
            return Err(Error::MalformedField("owner must name another node").into());
        }
        self.local
            .store_hint(key, req.owner, state, req.sync)
            .await
            .map_err(Error::from)?;
        self.metrics.hints.stored.inc();
        self.metrics.latency("hint", Role::Replica, start.elapsed());
        Ok(Response::new(pb::StoreHintResponse {}))
    }

    async fn tree_roots(
        &self,
        req: Request<pb::TreeRootsRequest>,
    ) -> Result<Response<pb::TreeRootsResponse>, Status> {
        self.access.check_peer(&req, "TreeRoots", true)?;
        let req = req.into_inner();
        let forest = self.local.forest();
        same_ring(forest.partitions(), req.partitions)?;
        let roots = req
            .partition
            .iter()
            .map(|&p| {
                partition_in(forest.partitions(), p)?;
                Ok(forest.partition_root(p))
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(pb::TreeRootsResponse { roots }))
    }

    async fn tree_leaves(
        &self,
        req: Request<pb::TreeLeavesRequest>,
    ) -> Result<Response<pb::TreeLeavesResponse>, Status> {
        self.access.check_peer(&req, "TreeLeaves", true)?;
        let req = req.into_inner();
        let forest = self.local.forest();
        same_ring(forest.partitions(), req.partitions)?;
        partition_in(forest.partitions(), req.partition)?;
        Ok(Response::new(pb::TreeLeavesResponse {
            leaves: forest.partition_leaves(req.partition),
        }))
    }

    async fn leaf_keys(
        &self,
        req: Request<pb::LeafKeysRequest>,
    ) -> Result<Response<pb::LeafKeysResponse>, Status> {
        self.access.check_peer(&req, "LeafKeys", true)?;
        let req = req.into_inner();
        let forest = self.local.forest();
        same_ring(forest.partitions(), req.partitions)?;
        partition_in(forest.partitions(), req.partition)?;
        if req.leaf as usize >= forest.leaves_per_partition() {
            return Err(Status::invalid_argument(format!(
                "leaf {} is outside the partition's {} leaves",
                req.leaf,
                forest.leaves_per_partition()
            )));
        }
        let (first, last) = forest.leaf_range(req.partition, req.leaf);
        let limit = (req.limit as usize).clamp(1, MAX_LEAF_KEYS);
        let (keys, more) = self
            .local
            .key_digests(first, last, &req.after, limit)
            .map_err(Error::from)?;
        Ok(Response::new(pb::LeafKeysResponse {
            keys: keys
                .into_iter()
                .map(|(key, digest)| pb::KeyDigest { key, digest })
                .collect(),
            more,
        }))
    }

    async fn reap(
        &self,
        req: Request<pb::ReapRequest>,
    ) -> Result<Response<pb::ReapResponse>, Status> {
        self.access.check_peer(&req, "Reap", true)?;
        let req = req.into_inner();
        let key = required(req.key, "key")?;
        let reaped = self.local.reap(&key, req.digest).map_err(Error::from)?;
        if reaped {
            self.metrics.tombstones_reaped.inc();
        }
        Ok(Response::new(pb::ReapResponse { reaped }))
    }

    async fn gossip(
        &self,
        req: Request<pb::GossipRequest>,
    ) -> Result<Response<pb::GossipResponse>, Status> {
        self.access.check_peer(&req, "Gossip", false)?;
        use crate::membership_state::MergeError;
        let req = req.into_inner();
        match self.coordinator.membership().handle_gossip(&req) {
            Ok(answer) => Ok(Response::new(answer)),
            Err(e @ (MergeError::OtherCluster { .. } | MergeError::OtherPartitioning { .. })) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}

/// Most keys one `LeafKeys` answer lists.
pub const MAX_LEAF_KEYS: usize = 4096;

/// Trees are compared only between nodes that cut the ring into the same partitions.
fn same_ring(ours: u32, theirs: u32) -> Result<(), Status> {
    if ours == theirs {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "this node's ring has {ours} partitions, the caller's {theirs}: their trees cannot be compared"
    )))
}

fn partition_in(partitions: u32, p: u32) -> Result<(), Status> {
    if p < partitions {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "partition {p} does not exist: the ring has {partitions}"
    )))
}

/// Operator calls.
#[derive(Debug, Clone)]
pub struct AdminService {
    coordinator: Arc<Coordinator>,
    local: Arc<LocalReplica>,
    handoff: Arc<HintedHandoff>,
    anti_entropy: Arc<AntiEntropy>,
    transfer: Arc<KeyRangeTransfer>,
    metrics: Arc<Metrics>,
    access: Arc<AccessControl>,
    shedding: Arc<LoadShedding>,
}

impl AdminService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        local: Arc<LocalReplica>,
        background: &crate::background::Background,
        metrics: Arc<Metrics>,
        access: Arc<AccessControl>,
        shedding: Arc<LoadShedding>,
    ) -> Self {
        AdminService {
            coordinator,
            local,
            handoff: Arc::clone(&background.handoff),
            anti_entropy: Arc::clone(&background.anti_entropy),
            transfer: Arc::clone(&background.transfer),
            metrics,
            access,
            shedding,
        }
    }

    /// Admits an operator call (see `load_shedding`) from someone with the admin permission
    /// on every key, or refuses it.
    async fn operator<T>(&self, req: &Request<T>) -> Result<Admitted<'_>, Status> {
        admit(
            &self.shedding,
            &self.access,
            req,
            Permission::Admin,
            Some(b""),
            false,
        )
        .await
    }
}

impl AdminService {
    /// Grant or revoke: needs the admin permission on the prefix itself.
    async fn change_grants(
        &self,
        req: Request<pb::GrantRequest>,
        grant: bool,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        let prefix = req.get_ref().prefix.as_bytes();
        let _admitted = admit(
            &self.shedding,
            &self.access,
            &req,
            Permission::Admin,
            Some(prefix),
            false,
        )
        .await?;
        let req = req.into_inner();
        let perms = permissions(&req.permissions)?;
        let record = self
            .access
            .change_grants(&req.user, &req.prefix, &perms, grant)
            .await?;
        Ok(Response::new(pb::GrantResponse {
            user: Some(user_info(&record)),
        }))
    }
}

fn user_info(r: &UserRecord) -> pb::UserInfo {
    pb::UserInfo {
        name: r.name.clone(),
        tokens: r.token_hashes.len() as u32,
        token_ids: r
            .token_hashes
            .iter()
            .map(|h| crate::access_control::token_id(h).to_string())
            .collect(),
        grants: r
            .grants
            .iter()
            .map(|(prefix, perms)| pb::PrefixGrant {
                prefix: prefix.clone(),
                permissions: perms.iter().map(|p| p.as_str().to_string()).collect(),
            })
            .collect(),
    }
}

fn permissions(names: &[String]) -> Result<Vec<Permission>, Status> {
    names
        .iter()
        .map(|n| {
            Permission::parse(n).ok_or_else(|| {
                Error::Invalid(format!(
                    "{n:?} is not a permission: use read, write or admin"
                ))
                .into()
            })
        })
        .collect()
}

impl From<TopologyError> for Status {
    fn from(e: TopologyError) -> Status {
        match e {
            TopologyError::UnknownMember(_) => Status::not_found(e.to_string()),
            TopologyError::Refused(_) => Status::failed_precondition(e.to_string()),
            TopologyError::Membership(_) => Status::internal(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn user_add(
        &self,
        req: Request<pb::UserAddRequest>,
    ) -> Result<Response<pb::UserAddResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let req = req.into_inner();
        let token = self.access.add_user(&req.name, req.token).await?;
        Ok(Response::new(pb::UserAddResponse {
            token_id: token
                .as_ref()
                .map(|t| crate::access_control::id_of_token(t))
                .unwrap_or_default(),
            token: token.unwrap_or_default(),
        }))
    }

    async fn token_add(
        &self,
        req: Request<pb::TokenAddRequest>,
    ) -> Result<Response<pb::TokenAddResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let (token, token_id) = self.access.add_token(&req.into_inner().user).await?;
        Ok(Response::new(pb::TokenAddResponse { token, token_id }))
    }

    async fn token_revoke(
        &self,
        req: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenRevokeResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let req = req.into_inner();
        let record = self.access.revoke_token(&req.user, &req.token_id).await?;
        Ok(Response::new(pb::TokenRevokeResponse {
            user: Some(user_info(&record)),
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::UserListRequest>,
    ) -> Result<Response<pb::UserListResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let users = self.access.list_users().await?;
        Ok(Response::new(pb::UserListResponse {
            users: users.iter().map(user_info).collect(),
        }))
    }

    async fn user_remove(
        &self,
        req: Request<pb::UserRemoveRequest>,
    ) -> Result<Response<pb::UserRemoveResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        self.access.remove_user(&req.into_inner().name).await?;
        Ok(Response::new(pb::UserRemoveResponse {}))
    }

    async fn grant(
        &self,
        req: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        self.change_grants(req, true).await
    }

    async fn revoke(
        &self,
        req: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::GrantResponse>, Status> {
        self.change_grants(req, false).await
    }

    async fn rotate_context_key(
        &self,
        req: Request<pb::RotateContextKeyRequest>,
    ) -> Result<Response<pb::RotateContextKeyResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let membership = self.coordinator.membership();
        membership
            .rotate_context_key(now_ms())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let view = membership.current();
        let me = view.state.member(&view.self_id);
        Ok(Response::new(pb::RotateContextKeyResponse {
            key_id: view.context_keys.signing().map_or(0, |k| k.id),
            keys: me.map_or(0, |m| m.context_keys.len() as u32),
        }))
    }

    async fn ring(
        &self,
        req: Request<pb::RingRequest>,
    ) -> Result<Response<pb::RingResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let view = self.coordinator.membership().current();
        Ok(Response::new(pb::RingResponse {
            // Context keys are for nodes only: the operator's view leaves them out.
            state: Some(view.state.without_secrets().to_proto()),
            handover: view.previous.is_some(),
        }))
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let seed = req.into_inner().seed;
        if seed.is_empty() {
            return Err(
                Error::MissingField("seed (the address of a member to join through)").into(),
            );
        }
        // Over this node's own connection to the seed: TLS with its node certificate when the
        // cluster speaks TLS. By gossip, the one call a node that is no member yet may make: a
        // digest that holds nothing asks for the seed's whole view and gives it nothing.
        let mut client = self
            .coordinator
            .peers()
            .replica(&seed)
            .map_err(|e| Status::unavailable(format!("cannot reach the seed {seed}: {e}")))?;
        let ours = self.coordinator.membership().state();
        let theirs = client
            .gossip(pb::GossipRequest {
                cluster: ours.cluster.clone(),
                partitions: ours.partitions,
                from: self.coordinator.membership().current().self_id.clone(),
                digest: Some(pb::MembershipDigest {
                    members: Default::default(),
                    ring: Some(pb::RingVersion::default()),
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                let why = format!("the seed {seed} refused: {}", e.message());
                match e.code() {
                    tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied => {
                        Status::failed_precondition(why)
                    }
                    _ => Status::unavailable(format!(
                        "the seed {seed} did not answer: {}",
                        e.message()
                    )),
                }
            })?
            .into_inner()
            .delta
            .ok_or_else(|| Status::internal("the seed sent no membership state"))?;
        let holds_data = (0..self.local.forest().partitions()).any(|p| {
            self.local
                .forest()
                .partition_leaves(p)
                .iter()
                .any(|l| *l != 0)
        });
        self.coordinator.membership().join(
            &seed,
            &theirs.cluster,
            theirs.partitions,
            holds_data,
        )?;
        Ok(Response::new(pb::JoinResponse {
            cluster_name: theirs.cluster,
            members: theirs.members.len() as u32,
        }))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        self.coordinator
            .membership()
            .stage_leave(&req.into_inner().node_id)?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let id = req.into_inner().node_id;
        if id.is_empty() {
            return Err(Error::MissingField("node_id (the node to remove)").into());
        }
        self.coordinator.membership().stage_remove(&id)?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn plan(
        &self,
        req: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let plan = self.coordinator.membership().plan()?;
        let view = self.coordinator.membership().current();
        let ring = &view.ring;
        // Keys and bytes this node holds of each moving partition; for partitions it does not
        // hold, the mean of those it does (an estimate, said so by `estimated`).
        let local = Arc::clone(&self.local);
        let ranges: Vec<(u32, (u128, u128))> = plan
            .moves
            .iter()
            .map(|m| (m.partition, ring.partition_range(m.partition)))
            .collect();
        let sizes = tokio::task::spawn_blocking(move || {
            ranges
                .into_iter()
                .map(|(p, (first, last))| Ok((p, local.range_size(first, last)?)))
                .collect::<Result<Vec<_>, crate::storage::StorageError>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Error::from)?;
        let n = view.quorums.n as usize;
        let mine = |p: u32| {
            ring.preference_list_of_partition(p, n)
                .nodes
                .iter()
                .any(|m| m.id == view.self_id)
        };
        let held: Vec<(u64, u64)> = sizes
            .iter()
            .filter(|(p, _)| mine(*p))
            .map(|(_, s)| *s)
            .collect();
        let mean = if held.is_empty() {
            (0, 0)
        } else {
            let k = held.len() as u64;
            (
                held.iter().map(|s| s.0).sum::<u64>() / k,
                held.iter().map(|s| s.1).sum::<u64>() / k,
            )
        };
        let moves = plan
            .moves
            .iter()
            .zip(&sizes)
            .map(|(m, (p, size))| {
                let estimated = !mine(*p);
                let (keys, bytes) = if estimated { mean } else { *size };
                pb::PartitionMove {
                    partition: m.partition,
                    from: m.from.clone(),
                    to: m.to.clone(),
                    keys,
                    bytes,
                    estimated,
                }
            })
            .collect();
        Ok(Response::new(pb::PlanResponse {
            ring_version: plan.ring_version,
            owners_before: plan.owners_before,
            owners_after: plan.owners_after,
            moves,
            blocked: plan.blocked.unwrap_or_default(),
            owned_after: plan.owned_after.into_iter().collect(),
            n_before: plan.n_before,
            n_after: plan.n_after,
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let version = self
            .coordinator
            .membership()
            .commit(req.into_inner().ring_version)?;
        Ok(Response::new(pb::CommitResponse {
            ring_version: version,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let _admitted = self.operator(&req).await?;
        let view = self.coordinator.membership().current();
        let peers = self.coordinator.peers();
        let n = view.quorums.n;
        let q = view.ring.partition_count();
        let replicated = (0..q)
            .filter(|&p| {
                view.ring
                    .preference_list_of_partition(p, n as usize)
                    .nodes
                    .iter()
                    .any(|m| m.id == view.self_id)
            })
            .count() as u32;
        let members = view
            .state
            .members()
            .map(|m| {
                let is_self = m.id == view.self_id;
                pb::MemberStatus {
                    id: m.id.clone(),
                    address: m.address.clone(),
                    zone: m.zone.clone(),
                    is_self,
                    reachable: is_self || peers.is_up(&m.address),
                    status: view.state.status_of(&m.id).to_string(),
                    partitions_owned: if view.joined() {
                        view.ring.partitions_of(&m.id).len() as u32
                    } else {
                        0
                    },
                }
            })
            .collect();
        let transfer = self.transfer.status();
        let now = now_ms();
        let backlog = self.handoff.backlog();
        let age = |at: u64| now.saturating_sub(at);
        let ae = &self.metrics.anti_entropy;
        Ok(Response::new(pb::StatusResponse {
            node_id: view.self_id.clone(),
            cluster_name: view.cluster_name.clone(),
            members,
            partitions: q,
            partitions_replicated: replicated,
            n,
            hints_queued: backlog.iter().map(|b| b.hints).sum(),
            oldest_hint_age_ms: backlog.iter().map(|b| age(b.oldest_ms)).max().unwrap_or(0),
            hint_backlog: backlog
                .iter()
                .map(|b| pb::HintBacklog {
                    owner: b.owner.clone(),
                    hints: b.hints,
                    oldest_age_ms: age(b.oldest_ms),
                })
                .collect(),
            anti_entropy: Some(pb::AntiEntropyStatus {
                exchanges: ae.exchanges.get(),
                keys_compared: ae.keys_compared.get(),
                keys_repaired: ae.keys_repaired.get(),
                peers: self
                    .anti_entropy
                    .last_exchanges()
                    .into_iter()
                    .map(|p| pb::PeerSync {
                        peer: p.peer,
                        last_exchange_age_ms: p.at.elapsed().as_millis() as u64,
                        partitions_compared: p.partitions_compared,
                        partitions_differing: p.partitions_differing,
                        keys_repaired: p.keys_repaired,
                    })
                    .collect(),
            }),
            tombstones_reaped: self.metrics.tombstones_reaped.get(),
            background_pauses: self.metrics.background_pauses(),
            ring_version: view.ring_version,
            handover: view.previous.is_some(),
            transfers_pending: transfer.pending,
            keys_transferred: self.metrics.membership.keys_transferred.get(),
            partitions_to_drop: transfer.to_drop,
            partitions_owned: if view.joined() {
                view.ring.partitions_of(&view.self_id).len() as u32
            } else {
                0
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_junk_is_ignored() {
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("grpc-timeout", v.parse().unwrap());
            budget(&r)
        };
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(with("7M"), Some(Duration::from_secs(420)));
        assert_eq!(with("10u"), Some(Duration::from_micros(10)));
        assert_eq!(with("10n"), Some(Duration::from_nanos(10)));
        assert_eq!(with("10x"), None);
        assert_eq!(with("S"), None);
        assert_eq!(with("123456789S"), None);
        assert_eq!(budget(&Request::new(())), None);
    }
}
