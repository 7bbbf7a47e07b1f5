//! The DynamoKV Swift SDK: uniffi bindings over client-core.
//!
//! Conversion code only. Defaults, validation, retries and deadlines live in client-core so the
//! Swift, Python and Node SDKs behave the same; this crate turns Swift values (`Data`, `[String]`,
//! optionals) into client-core calls and client-core results into uniffi records and errors.
//!
//! Async methods run on one shared multi-thread tokio runtime per process, created by the first
//! client. Swift awaits a task on it; cancelling the Swift task aborts the Rust call. (The
//! exported methods also carry uniffi's `async_runtime = "tokio"`, which only gives their own
//! bodies a tokio context; the client-core work itself always runs on the shared runtime.)

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use dynamokv_client as kv;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

mod error;
mod inspect;
mod resolver;

pub use error::DynamoKvError;
pub use inspect::{
    ClockEntry, ContextDescription, PreferenceList, describe_context, key_position, partition_of,
    preference_list,
};
pub use resolver::{ConflictResolver, ResolverError, SiblingResolver, Siblings};

uniffi::setup_scaffolding!();

/// Options for a [`DynamoKvClient`]. A field left `nil` keeps client-core's default.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct ClientOptions {
    /// Time allowed to connect to one node, in milliseconds.
    #[uniffi(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Deadline for a whole call, retries included, in milliseconds.
    #[uniffi(default)]
    pub request_timeout_ms: Option<u64>,
    /// Time one node gets to answer one attempt, in milliseconds; `nil` gives it the whole
    /// request timeout. A node silent for that long is marked down: the call goes on to another
    /// node, later calls try it last, and a background probe brings it back once it answers.
    #[uniffi(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// How many further nodes to try when one cannot be reached (0 tries one node only).
    #[uniffi(default)]
    pub max_retries: Option<u32>,
    /// Largest key the client sends, in bytes (the server checks its own limit too).
    #[uniffi(default)]
    pub max_key_bytes: Option<u64>,
    /// Largest value the client sends, in bytes (the server checks its own limit too).
    #[uniffi(default)]
    pub max_value_bytes: Option<u64>,
    /// Who coordinates requests: the client (`.client`, the default: it pulls the ring, reads
    /// from the key's replicas and writes straight to one) or a node (`.server`).
    #[uniffi(default)]
    pub coordination: Option<Coordination>,
    /// How often the client pulls the ring when nothing prompts it sooner, in milliseconds
    /// (10 000 by default).
    #[uniffi(default)]
    pub ring_refresh_interval_ms: Option<u64>,
    /// Hedged reads: a client-coordinated get that has not had its R answers after this many
    /// milliseconds asks one more replica. `nil` (the default) turns hedging off.
    #[uniffi(default)]
    pub hedge_after_ms: Option<u64>,
    /// How many keys of one batch call are in flight at once (32 by default).
    #[uniffi(default)]
    pub batch_concurrency: Option<u32>,
    /// The cluster's CA certificate, for a cluster that serves TLS: PEM text or the path of a
    /// PEM file. With it every connection is TLS.
    #[uniffi(default)]
    pub ca_cert: Option<String>,
    /// A client certificate (from `dynamokv cert user`): PEM text or a path. Needs `clientKey`.
    #[uniffi(default)]
    pub client_cert: Option<String>,
    /// The private key of `clientCert`: PEM text or a path.
    #[uniffi(default)]
    pub client_key: Option<String>,
    /// A token from `dynamokv admin user add`; sent only over TLS (needs `caCert`).
    #[uniffi(default)]
    pub token: Option<String>,
    /// Certificate files given as paths are read again when a connection is made at least
    /// this many milliseconds (2000 by default) after they were last read: certificates
    /// rotated on disk reach a running client's next connection. 0: every new connection.
    #[uniffi(default)]
    pub tls_reload_interval_ms: Option<u64>,
}

/// Who coordinates a client's requests (paper 6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Coordination {
    /// The client pulls the ring, coordinates reads itself and sends each write straight to a
    /// replica of the key.
    Client,
    /// Every request goes to one node (the seeds in turn), which coordinates it.
    Server,
}

impl From<Coordination> for kv::Coordination {
    fn from(c: Coordination) -> Self {
        match c {
            Coordination::Client => kv::Coordination::Client,
            Coordination::Server => kv::Coordination::Server,
        }
    }
}

impl From<kv::Coordination> for Coordination {
    fn from(c: kv::Coordination) -> Self {
        match c {
            kv::Coordination::Client => Coordination::Client,
            kv::Coordination::Server => Coordination::Server,
        }
    }
}

/// The result of a get: every causally concurrent value (siblings) and one opaque context
/// covering all of them. `values` is empty when the key does not exist or was deleted.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GetResult {
    pub values: Vec<Vec<u8>>,
    /// Hand this back, unchanged, with the put or delete that follows.
    pub context: Vec<u8>,
    /// The write time of each value, in milliseconds since the epoch (by the clock of the node
    /// that coordinated that write), in the order of `values`.
    pub timestamps_ms: Vec<u64>,
    /// Whether a delete is concurrent with the values.
    pub tombstone: bool,
}

/// The result of a resolving get: one value, however many siblings the get found.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Resolved {
    /// The only value, or the resolver's result; `nil` when the key has none.
    pub value: Option<Vec<u8>>,
    /// Covers everything resolved (and the write-back, when one was made): hand it to the
    /// next write of the key.
    pub context: Vec<u8>,
    /// How many concurrent values the get returned (the resolver ran only for 2 or more).
    pub siblings: u32,
    /// Whether the resolved value was written back.
    pub written_back: bool,
}

/// One write of a `putMany` batch.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PutItem {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The context of an earlier get of the key; `nil` for a blind write.
    #[uniffi(default)]
    pub context: Option<Vec<u8>>,
}

/// One key's outcome in a `getMany` batch.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum GetOutcome {
    Success { value: GetResult },
    Failure { error: DynamoKvError },
}

/// One key's outcome in a `getManyResolved` batch.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ResolvedOutcome {
    Success { value: Resolved },
    Failure { error: DynamoKvError },
}

/// One item's outcome in a `putMany` batch: the new context, or why it failed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum PutOutcome {
    Success { context: Vec<u8> },
    Failure { error: DynamoKvError },
}

/// One cluster member, as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub weight: u32,
}

/// Whether the client considers one of its seed nodes up (its own failure detector's view).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NodeHealth {
    /// The seed's `host:port`.
    pub address: String,
    /// False once the node failed to answer in time; true again when a probe gets an answer.
    pub up: bool,
}

/// The cluster as a node reported it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub partitions: u32,
    pub n: u32,
    pub r: u32,
    pub w: u32,
    pub members: Vec<MemberInfo>,
    /// The node that answered.
    pub answered_by: String,
    /// The version of the ring `members` make.
    pub ring_version: u64,
}

impl From<kv::GetResult> for GetResult {
    fn from(got: kv::GetResult) -> Self {
        GetResult {
            values: got.values,
            context: got.context.as_bytes().to_vec(),
            timestamps_ms: got.timestamps_ms,
            tombstone: got.tombstone,
        }
    }
}

impl From<kv::Resolved> for Resolved {
    fn from(r: kv::Resolved) -> Self {
        Resolved {
            value: r.value,
            context: r.context.as_bytes().to_vec(),
            siblings: u32::try_from(r.siblings).unwrap_or(u32::MAX),
            written_back: r.written_back,
        }
    }
}

impl From<Result<kv::GetResult, kv::Error>> for GetOutcome {
    fn from(r: Result<kv::GetResult, kv::Error>) -> Self {
        match r {
            Ok(got) => GetOutcome::Success { value: got.into() },
            Err(e) => GetOutcome::Failure { error: e.into() },
        }
    }
}

impl From<Result<kv::Resolved, kv::Error>> for ResolvedOutcome {
    fn from(r: Result<kv::Resolved, kv::Error>) -> Self {
        match r {
            Ok(resolved) => ResolvedOutcome::Success {
                value: resolved.into(),
            },
            Err(e) => ResolvedOutcome::Failure { error: e.into() },
        }
    }
}

impl From<Result<kv::Context, kv::Error>> for PutOutcome {
    fn from(r: Result<kv::Context, kv::Error>) -> Self {
        match r {
            Ok(context) => PutOutcome::Success {
                context: context.as_bytes().to_vec(),
            },
            Err(e) => PutOutcome::Failure { error: e.into() },
        }
    }
}

impl From<kv::MemberInfo> for MemberInfo {
    fn from(m: kv::MemberInfo) -> Self {
        MemberInfo {
            id: m.id,
            address: m.address,
            zone: m.zone,
            weight: m.weight,
        }
    }
}

impl From<kv::NodeHealth> for NodeHealth {
    fn from(h: kv::NodeHealth) -> Self {
        NodeHealth {
            address: h.address,
            up: h.up,
        }
    }
}

impl From<kv::ClusterInfo> for ClusterInfo {
    fn from(c: kv::ClusterInfo) -> Self {
        ClusterInfo {
            cluster_name: c.cluster_name,
            partitions: c.partitions,
            n: c.n,
            r: c.r,
            w: c.w,
            members: c.members.into_iter().map(MemberInfo::from).collect(),
            answered_by: c.answered_by,
            ring_version: c.ring_version,
        }
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl ClientOptions {
    /// Applies only the options that were set, so unset ones keep client-core's defaults.
    fn apply(self, mut builder: kv::ClientBuilder) -> kv::ClientBuilder {
        if let Some(ms) = self.connect_timeout_ms {
            builder = builder.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.request_timeout_ms {
            builder = builder.request_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.attempt_timeout_ms {
            builder = builder.attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_retries {
            builder = builder.max_retries(n);
        }
        if let Some(c) = self.coordination {
            builder = builder.coordination(match c {
                Coordination::Client => kv::Coordination::Client,
                Coordination::Server => kv::Coordination::Server,
            });
        }
        if self.max_key_bytes.is_some() || self.max_value_bytes.is_some() {
            let mut limits = kv::Limits::default();
            if let Some(n) = self.max_key_bytes {
                limits.max_key_bytes = to_usize(n);
            }
            if let Some(n) = self.max_value_bytes {
                limits.max_value_bytes = to_usize(n);
            }
            builder = builder.limits(limits);
        }
        if let Some(c) = self.coordination {
            builder = builder.coordination(c.into());
        }
        if let Some(ms) = self.ring_refresh_interval_ms {
            builder = builder.ring_refresh_interval(Duration::from_millis(ms));
        }
        if let Some(ms) = self.hedge_after_ms {
            builder = builder.hedge_after(Some(Duration::from_millis(ms)));
        }
        if let Some(n) = self.batch_concurrency {
            builder = builder.batch_concurrency(to_usize(u64::from(n)));
        }
        if let Some(pem) = &self.ca_cert {
            builder = builder.ca_cert(pem.clone());
        }
        if let Some(pem) = &self.client_cert {
            builder = builder.client_cert(pem.clone());
        }
        if let Some(pem) = &self.client_key {
            builder = builder.client_key(pem.clone());
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        if let Some(ms) = self.tls_reload_interval_ms {
            builder = builder.tls_reload_interval(Duration::from_millis(ms));
        }
        builder
    }
}

/// A put's or delete's per-call options.
fn write_options(
    w: Option<u32>,
    write_id: Option<Vec<u8>>,
    sync_replicas: Option<u32>,
) -> Result<kv::WriteOptions, DynamoKvError> {
    Ok(kv::WriteOptions {
        sync_replicas,
        w,
        write_id: write_id.as_deref().map(error::write_id).transpose()?,
    })
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime. Called from the (synchronous) constructor, never inside a runtime,
/// so losing the initialisation race drops the spare runtime where that is allowed.
fn runtime() -> Result<&'static Runtime, DynamoKvError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dynamokv-swift")
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// A task on the shared runtime that is aborted when the awaiting Swift task is cancelled
/// (uniffi then drops this future), as dropping a client-core future would cancel it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A DynamoKV client. Cheap to share between tasks; all calls share its connections.
#[derive(Debug, uniffi::Object)]
pub struct DynamoKvClient {
    inner: kv::Client,
    runtime: &'static Runtime,
}

impl DynamoKvClient {
    async fn run<T, F>(&self, call: F) -> Result<T, DynamoKvError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, kv::Error>> + Send + 'static,
    {
        Ok(AbortOnDrop(self.runtime.spawn(call)).await??)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl DynamoKvClient {
    /// A client of the cluster reachable at `seeds` (`host:port` each). Connects on first use,
    /// so this does no I/O; it throws `InvalidConfig` for bad seeds or options.
    #[uniffi::constructor(default(options = None))]
    pub fn new(
        seeds: Vec<String>,
        options: Option<ClientOptions>,
    ) -> Result<Arc<Self>, DynamoKvError> {
        let builder = options
            .unwrap_or_default()
            .apply(kv::Client::builder(seeds));
        let inner = builder.build()?;
        Ok(Arc::new(DynamoKvClient {
            inner,
            runtime: runtime()?,
        }))
    }

    /// Every concurrent value of `key` and one context covering them. `r` overrides the
    /// cluster's read quorum for this call.
    #[uniffi::method(default(r = None))]
    pub async fn get(&self, key: Vec<u8>, r: Option<u32>) -> Result<GetResult, DynamoKvError> {
        let client = self.inner.clone();
        let got = self
            .run(async move { client.get_with_quorum(key, r).await })
            .await?;
        Ok(got.into())
    }

    /// Writes `value` under `key`. With the context of a get it supersedes exactly what that get
    /// saw; without one it becomes a sibling of whatever is stored. Returns the new context.
    /// `w` overrides the cluster's write quorum for this call. `writeId` (16 bytes) names the
    /// write; `nil` draws a fresh one. Pass the `writeId` of an `OutcomeUnknown` error to retry
    /// that write: one write id is applied at most once, however often it is sent.
    /// `syncReplicas` is how many of the W acknowledging replicas fsync their write-ahead log
    /// before the write is acknowledged, 0 to W; `nil` uses the cluster's `sync_replicas` (0
    /// unless configured). More than W throws `InvalidQuorum` and writes nothing.
    #[uniffi::method(default(context = None, w = None, write_id = None, sync_replicas = None))]
    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        context: Option<Vec<u8>>,
        w: Option<u32>,
        write_id: Option<Vec<u8>>,
        sync_replicas: Option<u32>,
    ) -> Result<Vec<u8>, DynamoKvError> {
        let client = self.inner.clone();
        let context = context.map(kv::Context::from_bytes);
        let options = write_options(w, write_id, sync_replicas)?;
        let written = self
            .run(async move {
                client
                    .put_with_options(key, value, context.as_ref(), options)
                    .await
            })
            .await?;
        Ok(written.as_bytes().to_vec())
    }

    /// Deletes what `context` (from a get) saw of `key`. Returns the tombstone's context.
    /// `w`, `writeId` and `syncReplicas` as for `put`.
    #[uniffi::method(default(w = None, write_id = None, sync_replicas = None))]
    pub async fn delete(
        &self,
        key: Vec<u8>,
        context: Vec<u8>,
        w: Option<u32>,
        write_id: Option<Vec<u8>>,
        sync_replicas: Option<u32>,
    ) -> Result<Vec<u8>, DynamoKvError> {
        let client = self.inner.clone();
        let context = kv::Context::from_bytes(context);
        let options = write_options(w, write_id, sync_replicas)?;
        let deleted = self
            .run(async move { client.delete_with_options(key, &context, options).await })
            .await?;
        Ok(deleted.as_bytes().to_vec())
    }

    /// `key`'s value resolved to one. When the get returns two or more concurrent values,
    /// `resolver` makes one of them (with one value and a concurrent delete, that value is
    /// taken) and, with `writeBack` (the default), it is written under the context covering
    /// them all, so the key converges to that one version on every replica. A failing resolver
    /// throws `ResolverFailed` and writes nothing.
    #[uniffi::method(default(r = None, write_back = true))]
    pub async fn get_resolved(
        &self,
        key: Vec<u8>,
        resolver: Arc<ConflictResolver>,
        r: Option<u32>,
        write_back: bool,
    ) -> Result<Resolved, DynamoKvError> {
        let client = self.inner.clone();
        let resolved = self
            .run(async move {
                client
                    .get_resolved(key, &resolver.inner, r, write_back)
                    .await
            })
            .await?;
        Ok(resolved.into())
    }

    /// Gets many keys at once, each from its own replicas: one outcome per key, in the order
    /// given; one key failing does not fail the others. The request timeout bounds the batch.
    #[uniffi::method(default(r = None))]
    pub async fn get_many(
        &self,
        keys: Vec<Vec<u8>>,
        r: Option<u32>,
    ) -> Result<Vec<GetOutcome>, DynamoKvError> {
        let client = self.inner.clone();
        let got = self
            .run(async move { Ok(client.get_many(keys, r).await) })
            .await?;
        Ok(got.into_iter().map(GetOutcome::from).collect())
    }

    /// As `getMany`, each key resolved as by `getResolved`.
    #[uniffi::method(default(r = None, write_back = true))]
    pub async fn get_many_resolved(
        &self,
        keys: Vec<Vec<u8>>,
        resolver: Arc<ConflictResolver>,
        r: Option<u32>,
        write_back: bool,
    ) -> Result<Vec<ResolvedOutcome>, DynamoKvError> {
        let client = self.inner.clone();
        let got = self
            .run(async move {
                Ok(client
                    .get_many_resolved(keys, &resolver.inner, r, write_back)
                    .await)
            })
            .await?;
        Ok(got.into_iter().map(ResolvedOutcome::from).collect())
    }

    /// Puts many items at once, each to its own replicas: one outcome per item, in the order
    /// given; one failing does not fail the others. Each item gets a fresh write id; `w` and
    /// `syncReplicas` apply to every item, as for `put`.
    #[uniffi::method(default(w = None, sync_replicas = None))]
    pub async fn put_many(
        &self,
        items: Vec<PutItem>,
        w: Option<u32>,
        sync_replicas: Option<u32>,
    ) -> Result<Vec<PutOutcome>, DynamoKvError> {
        let client = self.inner.clone();
        let options = write_options(w, None, sync_replicas)?;
        let items: Vec<kv::PutItem> = items
            .into_iter()
            .map(|item| kv::PutItem {
                key: item.key,
                value: item.value,
                context: item.context.map(kv::Context::from_bytes),
            })
            .collect();
        let put = self
            .run(async move { Ok(client.put_many(items, options).await) })
            .await?;
        Ok(put.into_iter().map(PutOutcome::from).collect())
    }

    /// Reaches the cluster once: pulls the ring (client coordination) or asks a node for the
    /// membership (server coordination). Optional: calls do it on first use.
    pub async fn connect(&self) -> Result<(), DynamoKvError> {
        let client = self.inner.clone();
        self.run(async move { client.connected().await.map(|_| ()) })
            .await
    }

    /// Pulls the ring now; returns its version.
    pub async fn refresh_ring(&self) -> Result<u64, DynamoKvError> {
        let client = self.inner.clone();
        self.run(async move { client.refresh_ring().await }).await
    }

    /// The version of the ring the client routes by; `nil` before the first pull (and always
    /// with server coordination). Local state only: no I/O.
    pub fn ring_version(&self) -> Option<u64> {
        self.inner.ring_version()
    }

    /// Who coordinates this client's requests.
    pub fn coordination(&self) -> Coordination {
        self.inner.coordination().into()
    }

    /// The cluster's membership and settings, as one node reports them.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, DynamoKvError> {
        let client = self.inner.clone();
        let info = self.run(async move { client.cluster_info().await }).await?;
        Ok(info.into())
    }

    /// The client's own view of its seed nodes, one entry per seed in order: which answer and
    /// which it avoids. Local state only: no I/O.
    pub fn node_health(&self) -> Vec<NodeHealth> {
        self.inner
            .node_health()
            .into_iter()
            .map(NodeHealth::from)
            .collect()
    }
}
