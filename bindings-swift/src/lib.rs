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

pub use error::DynamoKvError;

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
    /// Who coordinates requests; `nil` is `.client`.
    #[uniffi(default)]
    pub coordination: Option<Coordination>,
}

/// Who coordinates a request (paper 6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Coordination {
    /// The client pulls the ring, reads each key's replicas itself and sends writes straight
    /// to a replica of the key.
    Client,
    /// Every request goes to one node (the seeds in turn), which coordinates it.
    Server,
}

/// The result of a get: every causally concurrent value (siblings) and one opaque context
/// covering all of them. `values` is empty when the key does not exist or was deleted.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct GetResult {
    pub values: Vec<Vec<u8>>,
    /// Hand this back, unchanged, with the put or delete that follows.
    pub context: Vec<u8>,
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
}

impl From<kv::GetResult> for GetResult {
    fn from(got: kv::GetResult) -> Self {
        GetResult {
            values: got.values,
            context: got.context.as_bytes().to_vec(),
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
