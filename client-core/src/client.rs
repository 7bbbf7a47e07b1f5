//! The client: options, connections to seed nodes, and the get/put/delete calls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_common::{Limits, Member, Ring};
use dynamokv_proto::transport::is_silence;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;

use crate::Error;
use crate::error::Failure;
use crate::failure_detector::{FailureDetector, next_backoff};

/// An opaque version context. Get one from [`Client::get`] and hand it back, unchanged, with
/// the put or delete that follows, so that the write supersedes exactly what the get saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Context(Bytes);

impl Context {
    /// The empty context: a write with it supersedes nothing.
    pub fn empty() -> Context {
        Context(Bytes::new())
    }

    /// A context from bytes an SDK stored; the server checks it.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Context {
        Context(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The result of a get: every causally concurrent value (siblings) and one context covering
/// all of them. `values` is empty when the key does not exist or was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub values: Vec<Vec<u8>>,
    pub context: Context,
}

impl GetResult {
    /// Whether the key has no live value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Per-call options of a put or delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write quorum for this call; `None` uses the cluster's W.
    pub w: Option<u32>,
    /// The write's id. Left `None`, the client draws a fresh one. Give the id an
    /// [`Error::OutcomeUnknown`] reported to retry that write: a write is never applied twice,
    /// however many times it is sent under one id.
    pub write_id: Option<u128>,
    /// How many of the W acknowledging replicas fsync their write-ahead log before the write is
    /// acknowledged (0 to W); `None` uses the cluster's `sync_replicas` (0 unless configured).
    /// 0 survives a crash of any process; 1 or more also a power cut of every replica at once.
    pub sync_replicas: Option<u32>,
}

impl WriteOptions {
    /// Options with a write quorum of `w`.
    pub fn with_quorum(w: Option<u32>) -> Self {
        WriteOptions {
            w,
            ..WriteOptions::default()
        }
    }
}

/// One cluster member, as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub weight: u32,
}

/// The cluster as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub partitions: u32,
    pub n: u32,
    pub r: u32,
    pub w: u32,
    pub members: Vec<MemberInfo>,
    /// The node that answered.
    pub answered_by: String,
}

/// Options for a [`Client`]. Every SDK exposes the same options with the same defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    seeds: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    attempt_timeout: Option<Duration>,
    max_retries: u32,
    limits: Limits,
}

/// Default time to establish a connection to a node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline for a whole call, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of further nodes tried when one cannot be reached.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

impl ClientBuilder {
    /// Options for a client of the cluster reachable at `seeds` (`host:port` each).
    pub fn new<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            seeds: seeds.into_iter().map(Into::into).collect(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            attempt_timeout: None,
            max_retries: DEFAULT_MAX_RETRIES,
            limits: Limits::default(),
        }
    }

    /// Time allowed to connect to one node.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for a whole call, retries included.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time one node gets to answer one attempt; by default the whole request timeout. A node
    /// silent for that long (dead, hung or cut off) is marked down: the call goes on to another
    /// node if time is left, later calls try it last, and a background probe brings it back
    /// once it answers. Keep it above the nodes' own replica timeout plus half a second, so
    /// that a node forwarding a write past a hung replica can still answer.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How many further nodes to try when one cannot be reached (0 tries one node only).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Key and value limits checked before sending (the server checks its own too).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the client. Connections are made on first use, so this does no I/O and needs no
    /// async runtime.
    pub fn build(self) -> Result<Client, Error> {
        if self.seeds.is_empty() {
            return Err(Error::InvalidConfig {
                message: "no seed addresses: give at least one host:port".into(),
            });
        }
        if self.connect_timeout.is_zero()
            || self.request_timeout.is_zero()
            || self.attempt_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(Error::InvalidConfig {
                message: "timeouts must be greater than zero".into(),
            });
        }
        if self.limits.max_key_bytes == 0 {
            return Err(Error::InvalidConfig {
                message: "max_key_bytes must be at least 1".into(),
            });
        }
        let mut endpoints = Vec::with_capacity(self.seeds.len());
        for seed in &self.seeds {
            endpoints.push(endpoint(seed, self.connect_timeout)?);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                health: FailureDetector::new(endpoints.len()),
                endpoints,
                channels: Mutex::new(HashMap::new()),
                next: AtomicUsize::new(0),
                options: self,
            }),
        })
    }
}

fn endpoint(seed: &str, connect_timeout: Duration) -> Result<(String, Endpoint), Error> {
    let trimmed = seed.trim();
    let bad = || Error::InvalidConfig {
        message: format!("seed {seed:?} is not a host:port address"),
    };
    let (host, port) = trimmed.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let ep = Endpoint::from_shared(format!("http://{trimmed}"))
        .map_err(|_| bad())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok((trimmed.to_string(), ep))
}

/// A DynamoKV client. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Whether a client considers one of its nodes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub address: String,
    /// False once the node failed to answer; true again when a probe gets an answer.
    pub up: bool,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<(String, Endpoint)>,
    health: FailureDetector,
    channels: Mutex<HashMap<usize, Channel>>,
    next: AtomicUsize,
    options: ClientBuilder,
}

impl Inner {
    fn kv(&self, index: usize) -> KvClient<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = channels
            .entry(index)
            .or_insert_with(|| self.endpoints[index].1.connect_lazy())
            .clone();
        KvClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Probes node `index` (a `Membership` call) with exponential backoff until it answers, then
/// marks it up. Ends when the client is dropped.
async fn probe(inner: Weak<Inner>, index: usize) {
    let mut backoff = None;
    loop {
        let wait = next_backoff(backoff);
        backoff = Some(wait);
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let timeout = inner
            .options
            .attempt_timeout
            .unwrap_or(inner.options.request_timeout)
            .min(wait.max(MIN_PROBE_TIMEOUT));
        let mut req = tonic::Request::new(pb::MembershipRequest {});
        req.set_timeout(timeout);
        let mut kv = inner.kv(index);
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, kv.membership(req)).await {
            if inner.health.record_answer(index) {
                tracing::info!(node = %inner.endpoints[index].0, "node answers again");
            }
            return;
        }
    }
}

/// The least time a probe waits for its answer.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

impl Client {
    /// Options for a client of the cluster at `seeds`.
    pub fn builder<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(seeds)
    }

    /// A client with default options that has reached at least one node.
    pub async fn connect<I, S>(seeds: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let client = ClientBuilder::new(seeds).build()?;
        client.cluster_info().await?;
        Ok(client)
    }

    /// The limits this client checks before sending.
    pub fn limits(&self) -> Limits {
        self.inner.options.limits
    }

    /// Every concurrent value of `key` and one context covering them, with the cluster's R.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<GetResult, Error> {
        self.get_with_quorum(key, None).await
    }

    /// As [`get`](Self::get) with a read quorum of `r` replicas for this call.
    pub async fn get_with_quorum(
        &self,
        key: impl AsRef<[u8]>,
        r: Option<u32>,
    ) -> Result<GetResult, Error> {
        let key = key.as_ref();
        self.inner.options.limits.check_key(key)?;
        check_override("R", r)?;
        let key = Bytes::copy_from_slice(key);
        let reply = self
            .read(move |mut kv, budget| {
                let mut req = tonic::Request::new(pb::GetRequest {
                    key: Some(key.clone()),
                    r,
                    // Routing by ring version is the client-driven coordination work (issue 10).
                    ring_version: 0,
                });
                req.set_timeout(budget);
                async move { kv.get(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(GetResult {
            values: reply.values.into_iter().map(|b| b.to_vec()).collect(),
            context: Context(reply.context),
        })
    }

    /// Writes `value` under `key`. With the context of a get it supersedes exactly what that get
    /// saw; with `None` it becomes a sibling of whatever is stored. Returns the new version's
    /// context.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        context: Option<&Context>,
    ) -> Result<Context, Error> {
        self.put_with_quorum(key, value, context, None).await
    }

    /// As [`put`](Self::put) with a write quorum of `w` replicas for this call.
    pub async fn put_with_quorum(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        context: Option<&Context>,
        w: Option<u32>,
    ) -> Result<Context, Error> {
        self.put_with_options(key, value, context, WriteOptions::with_quorum(w))
            .await
    }

    /// As [`put`](Self::put) with per-call options.
    pub async fn put_with_options(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        context: Option<&Context>,
        options: WriteOptions,
    ) -> Result<Context, Error> {
        let key = key.as_ref();
        let value: Vec<u8> = value.into();
        let limits = self.inner.options.limits;
        limits.check_key(key)?;
        limits.check_value(&value)?;
        check_override("W", options.w)?;
        let (key, value) = (Bytes::copy_from_slice(key), Bytes::from(value));
        let context = context.map(Context::to_bytes).unwrap_or_default();
        let write_id = options.write_id.unwrap_or_else(rand::random);
        let id_bytes = Bytes::copy_from_slice(&write_id.to_be_bytes());
        let (w, sync_replicas) = (options.w, options.sync_replicas);
        if let (Some(s), Some(w)) = (sync_replicas, w) {
            dynamokv_common::limits::check_sync_replicas(s, w)?;
        }
        let reply = self
            .write(write_id, move |mut kv, attempt, budget| {
                let mut req = tonic::Request::new(pb::PutRequest {
                    key: Some(key.clone()),
                    value: Some(value.clone()),
                    context: context.clone(),
                    w,
                    write_id: id_bytes.clone(),
                    attempt,
                    sync_replicas,
                    // Routing by ring version is the client-driven coordination work (issue 10).
                    ring_version: 0,
                });
                req.set_timeout(budget);
                async move { kv.put(req).await.map(|r| r.into_inner().context) }
            })
            .await?;
        Ok(Context(reply))
    }

    /// Deletes what `context` saw of `key` (a tombstone; gets no longer show those values).
    pub async fn delete(&self, key: impl AsRef<[u8]>, context: &Context) -> Result<Context, Error> {
        self.delete_with_quorum(key, context, None).await
    }

    /// As [`delete`](Self::delete) with a write quorum of `w` replicas for this call.
    pub async fn delete_with_quorum(
        &self,
        key: impl AsRef<[u8]>,
        context: &Context,
        w: Option<u32>,
    ) -> Result<Context, Error> {
        self.delete_with_options(key, context, WriteOptions::with_quorum(w))
            .await
    }

    /// As [`delete`](Self::delete) with per-call options.
    pub async fn delete_with_options(
        &self,
        key: impl AsRef<[u8]>,
        context: &Context,
        options: WriteOptions,
    ) -> Result<Context, Error> {
        let key = key.as_ref();
        self.inner.options.limits.check_key(key)?;
        check_override("W", options.w)?;
        let key = Bytes::copy_from_slice(key);
        let context = context.to_bytes();
        let write_id = options.write_id.unwrap_or_else(rand::random);
        let id_bytes = Bytes::copy_from_slice(&write_id.to_be_bytes());
        let (w, sync_replicas) = (options.w, options.sync_replicas);
        if let (Some(s), Some(w)) = (sync_replicas, w) {
            dynamokv_common::limits::check_sync_replicas(s, w)?;
        }
        let reply = self
            .write(write_id, move |mut kv, attempt, budget| {
                let mut req = tonic::Request::new(pb::DeleteRequest {
                    key: Some(key.clone()),
                    context: context.clone(),
                    w,
                    write_id: id_bytes.clone(),
                    attempt,
                    sync_replicas,
                    // Routing by ring version is the client-driven coordination work (issue 10).
                    ring_version: 0,
                });
                req.set_timeout(budget);
                async move { kv.delete(req).await.map(|r| r.into_inner().context) }
            })
            .await?;
        Ok(Context(reply))
    }

    /// The cluster's membership and settings, as one node reports them.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        let reply = self
            .read(|mut kv, budget| async move {
                let mut req = tonic::Request::new(pb::MembershipRequest {});
                req.set_timeout(budget);
                kv.membership(req).await.map(|r| r.into_inner())
            })
            .await?;
        Ok(ClusterInfo {
            cluster_name: reply.cluster_name,
            partitions: reply.partitions,
            n: reply.n,
            r: reply.r,
            w: reply.w,
            members: reply
                .members
                .into_iter()
                .map(|m| MemberInfo {
                    id: m.id,
                    address: m.address,
                    zone: m.zone,
                    weight: m.weight,
                })
                .collect(),
            answered_by: reply.self_id,
        })
    }

    /// The cluster's ring, computed here from the membership a node reports, with the same
    /// shared code the nodes use: `ring.preference_list(key, n)` names the replicas of a key.
    pub async fn ring(&self) -> Result<(Ring, ClusterInfo), Error> {
        let info = self.cluster_info().await?;
        let members = info
            .members
            .iter()
            .map(|m| {
                Member::new(m.id.clone(), m.address.clone())
                    .with_zone(m.zone.clone())
                    .with_weight(m.weight)
            })
            .collect();
        let ring = Ring::new(info.partitions, members).map_err(|e| Error::Internal {
            message: format!("the cluster reported a membership that forms no ring: {e}"),
        })?;
        Ok((ring, info))
    }

    fn kv(&self, index: usize) -> KvClient<Channel> {
        self.inner.kv(index)
    }

    /// The client's own view of its nodes: which answer, which it avoids (paper 4.8.3).
    pub fn node_health(&self) -> Vec<NodeHealth> {
        self.inner
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, (address, _))| NodeHealth {
                address: address.clone(),
                up: self.inner.health.is_up(i),
            })
            .collect()
    }

    /// Marks node `index` down after it failed to answer, and starts probing it.
    fn silent(&self, index: usize) {
        if !self.inner.health.record_silence(index) {
            return;
        }
        tracing::info!(node = %self.inner.endpoints[index].0, "node does not answer: avoided until a probe gets an answer");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(probe(Arc::downgrade(&self.inner), index));
    }

    fn answered(&self, index: usize) {
        if self.inner.health.record_answer(index) {
            tracing::info!(node = %self.inner.endpoints[index].0, "node answers again");
        }
    }

    /// Runs a read against one node after another until one answers, the retries run out, or
    /// the deadline passes: nodes that answer first (round robin), those marked down last.
    /// Each node gets at most the attempt timeout; `f` gets a node and that budget.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(KvClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let opts = &self.inner.options;
        let deadline = Instant::now() + opts.request_timeout;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let attempts = opts.max_retries as usize + 1;
        let mut failures: Vec<String> = Vec::new();
        let order = self.inner.health.order(start);
        for (attempt, &index) in order.iter().cycle().take(attempts).enumerate() {
            let node = &self.inner.endpoints[index].0;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    after: opts.request_timeout,
                });
            }
            let budget = opts.attempt_timeout.map_or(left, |t| left.min(t));
            let err = match tokio::time::timeout(budget, f(self.kv(index), budget)).await {
                Err(_) => {
                    self.silent(index);
                    Error::Unavailable {
                        message: format!("no answer within {budget:?}"),
                    }
                }
                Ok(Ok(value)) => {
                    self.answered(index);
                    return Ok(value);
                }
                Ok(Err(status)) => {
                    if is_silence(&status) {
                        self.silent(index);
                    } else {
                        self.answered(index);
                    }
                    Error::from(status)
                }
            };
            if !is_transient(&err) {
                return Err(err);
            }
            failures.push(format!("{node}: {err}"));
            if attempt + 1 < attempts {
                tracing::debug!(%node, error = %err, "retrying on another node");
            } else if !matches!(err, Error::Unavailable { .. }) {
                return Err(err);
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                after: opts.request_timeout,
            });
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }

    /// Runs a write against one node after another until one answers with a verdict, the
    /// retries run out, or the deadline passes: nodes that answer first, those marked down last,
    /// each for at most the attempt timeout. A node that certainly did not get the write is
    /// skipped as if never tried; after one that may have applied it (a silent one included),
    /// the next is sent the same write id as a further attempt (`f` gets a node, the attempt
    /// number and the time it has), so the write is applied at most once. When the client
    /// cannot tell whether it was, the error says so: [`Error::OutcomeUnknown`].
    async fn write<F, Fut>(&self, write_id: u128, f: F) -> Result<Bytes, Error>
    where
        F: Fn(KvClient<Channel>, u32, Duration) -> Fut,
        Fut: Future<Output = Result<Bytes, tonic::Status>>,
    {
        let opts = &self.inner.options;
        let deadline = Instant::now() + opts.request_timeout;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let tries = opts.max_retries as usize + 1;
        let mut attempt = 1u32;
        let mut maybe_applied = false;
        let mut failures: Vec<String> = Vec::new();
        let unknown = |failures: &[String]| Error::OutcomeUnknown {
            write_id,
            message: failures.join("; "),
        };
        let order = self.inner.health.order(start);
        for &index in order.iter().cycle().take(tries) {
            let node = &self.inner.endpoints[index].0;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let budget = opts.attempt_timeout.map_or(left, |t| left.min(t));
            let call = f(self.kv(index), attempt, budget);
            let status = match tokio::time::timeout(budget, call).await {
                Ok(Ok(context)) => {
                    self.answered(index);
                    return Ok(context);
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    // The request was in flight: it may have been applied.
                    self.silent(index);
                    failures.push(format!("{node}: no answer within {budget:?}"));
                    maybe_applied = true;
                    attempt += 1;
                    continue;
                }
            };
            if is_silence(&status) {
                self.silent(index);
            } else {
                self.answered(index);
            }
            let err = Error::from(status.clone());
            match Failure::of(&status, &err) {
                Failure::Verdict => return Err(err),
                Failure::NotApplied => {}
                Failure::MaybeApplied => {
                    maybe_applied = true;
                    attempt += 1;
                }
            }
            failures.push(format!("{node}: {err}"));
            tracing::debug!(%node, error = %err, attempt, "retrying the write on another node");
        }
        Err(if maybe_applied {
            unknown(&failures)
        } else {
            Error::Unavailable {
                message: failures.join("; "),
            }
        })
    }
}

fn is_transient(err: &Error) -> bool {
    matches!(
        err,
        Error::Unavailable { .. } | Error::QuorumNotReached { .. }
    )
}

/// A per-call quorum is checked against N on the server; 0 is refused here already.
fn check_override(name: &'static str, value: Option<u32>) -> Result<(), Error> {
    match value {
        Some(0) => Err(Error::InvalidQuorum {
            message: format!(
                "{name} = 0 is invalid: a quorum must be between 1 and N, the replication factor"
            ),
        }),
        _ => Ok(()),
    }
}
