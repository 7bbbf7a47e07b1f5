//! The client: options, routing (client-driven or server-driven coordination, paper 6.4), and
//! the get/put/delete, resolving-get and batch calls.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use dynamokv_common::{Limits, Ring, inspect_context};
use dynamokv_proto::transport::is_silence;
use dynamokv_proto::v1 as pb;

use crate::Error;
use crate::error::Failure;
use crate::nodes::{Kv, Nodes, check_echo, endpoint};
use crate::read_coordination::{self, ReadFailure, ReadPlan};
use crate::reconciliation::{Resolver, Siblings};
use crate::routing::{RingView, Routing};

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
    /// The write time of each value (milliseconds since the epoch, by the clock of the node
    /// that coordinated that write), in the order of `values`.
    pub timestamps_ms: Vec<u64>,
    /// Whether a delete is concurrent with the values.
    pub tombstone: bool,
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
    /// The version of the ring `members` make.
    pub ring_version: u64,
}

/// Who coordinates a request (paper 6.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Coordination {
    /// The client pulls the ring, computes each key's preference list itself, coordinates
    /// reads (one parallel round to the key's replicas) and sends each write straight to a
    /// replica of the key, which coordinates it: no extra hop through a node that holds nothing
    /// of the key. The default.
    #[default]
    Client,
    /// Every request goes to one node (the seeds in turn), which coordinates it: a replica of
    /// the key or not. Use it where the client cannot reach every node directly.
    Server,
}

impl Coordination {
    pub fn as_str(self) -> &'static str {
        match self {
            Coordination::Client => "client",
            Coordination::Server => "server",
        }
    }

    /// `"client"` or `"server"`.
    pub fn parse(s: &str) -> Result<Coordination, Error> {
        match s {
            "client" => Ok(Coordination::Client),
            "server" => Ok(Coordination::Server),
            other => Err(Error::InvalidConfig {
                message: format!("coordination must be \"client\" or \"server\", not {other:?}"),
            }),
        }
    }
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
    coordination: Coordination,
    ring_refresh_interval: Duration,
    hedge_after: Option<Duration>,
    batch_concurrency: usize,
    ca_cert: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    token: Option<String>,
    tls_reload_interval: Duration,
}

/// Default time to establish a connection to a node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default deadline for a whole call, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of further nodes tried when one cannot be reached.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default interval between two pulls of the ring (paper 6.4 polls "every 10 seconds").
pub const DEFAULT_RING_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How often, by default, a client given certificate files checks them for changes (when it
/// connects).
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The first wait before a node that answered OVERLOADED in a call is tried again by it; each
/// further wait doubles, up to [`OVERLOAD_BACKOFF_MAX`], and is jittered (half of it at random)
/// so that refused clients do not come back together.
pub const OVERLOAD_BACKOFF_BASE: Duration = Duration::from_millis(20);
/// The longest wait before an overloaded node is tried again.
pub const OVERLOAD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many times one read follows a ring that moved on before it gives up.
const MAX_RING_MOVES: u32 = 8;
/// Default number of keys of one batch in flight at once.
pub const DEFAULT_BATCH_CONCURRENCY: usize = 32;

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
            coordination: Coordination::default(),
            ring_refresh_interval: DEFAULT_RING_REFRESH_INTERVAL,
            hedge_after: None,
            batch_concurrency: DEFAULT_BATCH_CONCURRENCY,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            token: None,
            tls_reload_interval: DEFAULT_TLS_RELOAD_INTERVAL,
        }
    }

    /// Connect over TLS, trusting the nodes whose certificates this CA signed: PEM text, or
    /// the path of a PEM file.
    pub fn ca_cert(mut self, pem_or_path: impl Into<String>) -> Self {
        self.ca_cert = Some(pem_or_path.into());
        self
    }

    /// Present this client certificate (PEM text or a path; see `dynamokv cert user`), with
    /// [`client_key`](Self::client_key). Needs [`ca_cert`](Self::ca_cert).
    pub fn client_cert(mut self, pem_or_path: impl Into<String>) -> Self {
        self.client_cert = Some(pem_or_path.into());
        self
    }

    /// The private key of [`client_cert`](Self::client_cert) (PEM text or a path).
    pub fn client_key(mut self, pem_or_path: impl Into<String>) -> Self {
        self.client_key = Some(pem_or_path.into());
        self
    }

    /// When `ca_cert`, `client_cert` or `client_key` is a path: a connection made at least this
    /// long after the files were last read reads them again, and uses them if they changed and
    /// load (certificates rotated on disk reach a running client's next connection; files
    /// caught half-written are ignored until they load). Default
    /// [`DEFAULT_TLS_RELOAD_INTERVAL`].
    pub fn tls_reload_interval(mut self, every: Duration) -> Self {
        self.tls_reload_interval = every;
        self
    }

    /// Authenticate with this token (from `dynamokv admin user add`). Sent only over TLS, so
    /// it needs [`ca_cert`](Self::ca_cert).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Takes `ca_cert`, `client_cert`, `client_key` and `token` from the environment variables
    /// `DYNAMOKV_CA_CERT`, `DYNAMOKV_CLIENT_CERT`, `DYNAMOKV_CLIENT_KEY` and `DYNAMOKV_TOKEN`
    /// where they are set (as `dynamokv dev --secure` sets them for its `--exec` command, and
    /// as the `dynamokv` command reads them).
    pub fn credentials_from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("DYNAMOKV_CA_CERT") {
            self.ca_cert = Some(v);
        }
        if let Some(v) = var("DYNAMOKV_CLIENT_CERT") {
            self.client_cert = Some(v);
        }
        if let Some(v) = var("DYNAMOKV_CLIENT_KEY") {
            self.client_key = Some(v);
        }
        if let Some(v) = var("DYNAMOKV_TOKEN") {
            self.token = Some(v);
        }
        self
    }

    /// The TLS configuration the options ask for, if any.
    fn tls(&self) -> Result<Option<dynamokv_proto::tls::ClientTls>, Error> {
        let invalid = |message: String| Error::InvalidConfig { message };
        let Some(ca) = &self.ca_cert else {
            if self.client_cert.is_some() || self.client_key.is_some() {
                return Err(invalid(
                    "client_cert and client_key need ca_cert (the CA that signed the nodes' certificates)".into(),
                ));
            }
            if self.token.is_some() {
                return Err(invalid(
                    "a token is sent only over TLS: give ca_cert too (the CA that signed the nodes' certificates)".into(),
                ));
            }
            return Ok(None);
        };
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid(
                "client_cert and client_key go together: give both or neither".into(),
            ));
        }
        let files = TlsFiles {
            ca: ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        };
        let (pems, config) = files.load()?;
        if !files.any_path() {
            return Ok(Some(dynamokv_proto::tls::ClientTls::new(config)));
        }
        // Files are read again when a connection is made and they may have changed: a
        // long-running client whose certificate is rotated on disk presents the new one on its
        // next connection. A rotation caught half-written (a key not matching its certificate)
        // keeps the old configuration until the files load.
        let last = std::sync::Mutex::new(pems);
        Ok(Some(dynamokv_proto::tls::ClientTls::reloading(
            config,
            self.tls_reload_interval,
            move || {
                let read = files.read();
                let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
                if read.as_ref().is_ok_and(|pems| *pems == *last) {
                    return None;
                }
                let outcome = read.and_then(|pems| {
                    *last = pems.clone();
                    files.config(&pems)
                });
                match outcome {
                    Ok(config) => {
                        tracing::info!("TLS files changed: new connections use them");
                        Some(config)
                    }
                    Err(e) => {
                        tracing::warn!(
                            "TLS files changed but do not load; new connections keep the previous ones: {e}"
                        );
                        None
                    }
                }
            },
        )))
    }

    /// Time allowed to connect to one node.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline for a whole call, retries included (for a batch: for the whole batch).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time one node gets to answer one attempt; by default the whole request timeout. A node
    /// silent for that long (dead, hung or cut off) is marked down: the call goes on to another
    /// node if time is left, later calls try it last, and a background probe brings it back
    /// once it answers. Keep it above the nodes' own replica timeout plus half a second, so
    /// that a node coordinating a write past a hung replica can still answer.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How many further attempts a call makes when a node cannot be reached or is overloaded
    /// (0: one only). Attempts go to the next node; one that comes back to a node that answered
    /// OVERLOADED first waits ([`OVERLOAD_BACKOFF_BASE`] doubling to [`OVERLOAD_BACKOFF_MAX`],
    /// jittered), within the request timeout.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Key and value limits checked before sending (the server checks its own too).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Who coordinates requests: the client ([`Coordination::Client`], the default) or a node.
    pub fn coordination(mut self, coordination: Coordination) -> Self {
        self.coordination = coordination;
        self
    }

    /// How often the client pulls the ring when nothing prompts it sooner (10 s by default).
    pub fn ring_refresh_interval(mut self, interval: Duration) -> Self {
        self.ring_refresh_interval = interval;
        self
    }

    /// Hedged reads: when a client-coordinated get has not had its R answers after `delay`,
    /// it asks one more replica (or fallback) and takes whichever answers first. Off by default.
    pub fn hedge_after(mut self, delay: Option<Duration>) -> Self {
        self.hedge_after = delay;
        self
    }

    /// How many keys of one batch call are in flight at once (32 by default).
    pub fn batch_concurrency(mut self, concurrency: usize) -> Self {
        self.batch_concurrency = concurrency;
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
            || self.ring_refresh_interval.is_zero()
            || self.hedge_after.is_some_and(|t| t.is_zero())
        {
            return Err(Error::InvalidConfig {
                message: "timeouts and intervals must be greater than zero".into(),
            });
        }
        if self.limits.max_key_bytes == 0 {
            return Err(Error::InvalidConfig {
                message: "max_key_bytes must be at least 1".into(),
            });
        }
        if self.batch_concurrency == 0 {
            return Err(Error::InvalidConfig {
                message: "batch_concurrency must be at least 1".into(),
            });
        }
        let mut seeds = Vec::with_capacity(self.seeds.len());
        for seed in &self.seeds {
            endpoint(seed, self.connect_timeout)?;
            seeds.push(seed.trim().to_string());
        }
        let probe_timeout = self.attempt_timeout.unwrap_or(self.request_timeout);
        let tls = self.tls()?;
        let credentials = crate::nodes::Credentials::token(self.token.as_deref())?;
        let (stop, _) = watch::channel(());
        Ok(Client {
            inner: Arc::new(Inner {
                nodes: Arc::new(Nodes::new(
                    self.connect_timeout,
                    probe_timeout,
                    tls,
                    credentials,
                )),
                seeds,
                routing: Routing::default(),
                next: AtomicUsize::new(0),
                refresher: std::sync::Once::new(),
                stop,
                options: self,
            }),
        })
    }
}

/// The TLS options as given: PEM text or paths.
struct TlsFiles {
    ca: String,
    cert: Option<String>,
    key: Option<String>,
}

/// The PEM texts of [`TlsFiles`]: CA, then certificate and key if given.
type Pems = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

impl TlsFiles {
    fn any_path(&self) -> bool {
        [Some(&self.ca), self.cert.as_ref(), self.key.as_ref()]
            .into_iter()
            .flatten()
            .any(|v| !is_pem_text(v))
    }

    fn read(&self) -> Result<Pems, Error> {
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((pem(c, "client_cert")?, pem(k, "client_key")?)),
            _ => None,
        };
        Ok((pem(&self.ca, "ca_cert")?, identity))
    }

    fn config(&self, (ca, identity): &Pems) -> Result<rustls::ClientConfig, Error> {
        dynamokv_proto::tls::client_config(
            ca,
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(|message| Error::InvalidConfig { message })
    }

    fn load(&self) -> Result<(Pems, rustls::ClientConfig), Error> {
        let pems = self.read()?;
        let config = self.config(&pems)?;
        Ok((pems, config))
    }
}

fn is_pem_text(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

/// PEM bytes from an option: the text itself, or the file it names.
fn pem(value: &str, option: &str) -> Result<Vec<u8>, Error> {
    if is_pem_text(value) {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| Error::InvalidConfig {
        message: format!("{option}: cannot read the PEM file {value:?}: {e}"),
    })
}

/// A DynamoKV client. Cheap to clone and safe to share between threads and tasks: clones
/// share connections, the ring and the failure detector. Dropping the last clone stops its
/// background work (the ring refresh and node probes).
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

/// One write of a [`Client::put_many`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The context of an earlier get of the key; `None` for a blind write.
    pub context: Option<Context>,
}

/// The result of [`Client::get_resolved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The one value: the only one, or the resolver's result; `None` when the key has none.
    pub value: Option<Vec<u8>>,
    /// Covers everything resolved (and the write-back, when one was made): hand it to the next
    /// write of the key.
    pub context: Context,
    /// How many concurrent values the get returned.
    pub siblings: usize,
    /// Whether the resolved value was written back.
    pub written_back: bool,
}

#[derive(Debug)]
struct Inner {
    nodes: Arc<Nodes>,
    seeds: Vec<String>,
    routing: Routing,
    /// Round robin over the seeds (server-driven coordination).
    next: AtomicUsize,
    refresher: std::sync::Once,
    /// Dropped with the last clone: ends the ring refresh at once.
    stop: watch::Sender<()>,
    options: ClientBuilder,
}

impl Inner {
    /// Pulls the ring from a random node: the ring's members first (healthy ones first), then
    /// the seeds. Returns the view installed.
    async fn pull_ring(&self, deadline: Instant) -> Result<Arc<RingView>, Error> {
        let mut candidates: Vec<String> = self
            .routing
            .current()
            .map(|v| v.addresses())
            .unwrap_or_default();
        {
            use rand::seq::SliceRandom;
            candidates.shuffle(&mut rand::rng());
        }
        for s in &self.seeds {
            if !candidates.contains(s) {
                candidates.push(s.clone());
            }
        }
        let order = self.nodes.health.order(&candidates);
        let mut failures = Vec::new();
        let (mut tls_failures, mut last_tls) = (0usize, None);
        for address in order.iter().take(self.options.max_retries as usize + 2) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let budget = self.options.attempt_timeout.map_or(left, |t| left.min(t));
            let mut kv = self.nodes.kv(address)?;
            let mut req = tonic::Request::new(pb::MembershipRequest {});
            req.set_timeout(budget);
            match tokio::time::timeout(budget, kv.membership(req)).await {
                Ok(Ok(reply)) => {
                    self.nodes.answered(address);
                    let view = RingView::from_membership(reply.into_inner())?;
                    if self.routing.install(view) {
                        if let Some(v) = self.routing.current() {
                            let mut keep = v.addresses();
                            keep.extend(self.seeds.iter().cloned());
                            self.nodes.retain(&keep);
                        }
                    }
                    if let Some(v) = self.routing.current() {
                        return Ok(v);
                    }
                }
                Ok(Err(status)) => {
                    if is_silence(&status) {
                        self.nodes.silent(address);
                    }
                    let err = Error::from_status(status, address);
                    if err.is_refusal() {
                        return Err(err);
                    }
                    failures.push(format!("{address}: {err}"));
                    tls_failures += usize::from(matches!(err, Error::Tls { .. }));
                    last_tls = matches!(err, Error::Tls { .. }).then_some(err);
                }
                Err(_) => {
                    self.nodes.silent(address);
                    failures.push(format!("{address}: no answer within {budget:?}"));
                }
            }
        }
        // Every node refused the handshake: the client's TLS settings are wrong, say how.
        if let Some(tls) = last_tls.filter(|_| tls_failures == failures.len()) {
            return Err(tls);
        }
        Err(Error::Unavailable {
            message: format!(
                "could not pull the ring from any node: {}",
                if failures.is_empty() {
                    "no time left".to_string()
                } else {
                    failures.join("; ")
                }
            ),
        })
    }
}

/// Pulls the ring every refresh interval, and at once when asked to; ends when the last clone
/// of the client is dropped.
async fn refresh_ring(inner: Weak<Inner>, mut stop: watch::Receiver<()>) {
    let (interval, nodes) = match inner.upgrade() {
        Some(i) => (i.options.ring_refresh_interval, Arc::clone(&i.nodes)),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = nodes.pull_ring.notified() => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let deadline = Instant::now() + inner.options.request_timeout;
        if let Err(e) = inner.pull_ring(deadline).await {
            tracing::debug!(error = %e, "ring refresh failed");
        }
        drop(inner);
        // At most one prompted pull per 50 ms, however many nodes fall silent at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Client {
    /// Options for a client of the cluster at `seeds`.
    pub fn builder<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(seeds)
    }

    /// A client with default options that has reached at least one node (and, coordinating
    /// in the client, pulled the ring).
    pub async fn connect<I, S>(seeds: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(seeds).build()?.connected().await
    }

    /// Reaches the cluster once: pulls the ring (client-driven) or asks a node for the
    /// membership (server-driven). Returns the client for chaining.
    pub async fn connected(self) -> Result<Client, Error> {
        match self.inner.options.coordination {
            Coordination::Client => {
                self.refresh_ring().await?;
            }
            Coordination::Server => {
                self.cluster_info().await?;
            }
        }
        Ok(self)
    }

    /// The limits this client checks before sending.
    pub fn limits(&self) -> Limits {
        self.inner.options.limits
    }

    /// Who coordinates this client's requests.
    pub fn coordination(&self) -> Coordination {
        self.inner.options.coordination
    }

    /// Pulls the ring now and returns its version.
    pub async fn refresh_ring(&self) -> Result<u64, Error> {
        self.start_refresher();
        let deadline = Instant::now() + self.inner.options.request_timeout;
        Ok(self.inner.pull_ring(deadline).await?.version)
    }

    /// The version of the ring the client routes by (`None` before the first pull).
    pub fn ring_version(&self) -> Option<u64> {
        self.inner.routing.current().map(|v| v.version)
    }

    /// Starts the background ring refresh, once, if a runtime is at hand.
    fn start_refresher(&self) {
        if self.inner.options.coordination != Coordination::Client {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.inner.refresher.call_once(|| {
            runtime.spawn(refresh_ring(
                Arc::downgrade(&self.inner),
                self.inner.stop.subscribe(),
            ));
        });
    }

    /// The ring to route by: the one held, else one pulled now.
    async fn view(&self, deadline: Instant) -> Result<Arc<RingView>, Error> {
        self.start_refresher();
        match self.inner.routing.current() {
            Some(v) => Ok(v),
            None => self.inner.pull_ring(deadline).await,
        }
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            after: self.inner.options.request_timeout,
        }
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
        let deadline = Instant::now() + self.inner.options.request_timeout;
        self.get_until(key.as_ref(), r, deadline).await
    }

    async fn get_until(
        &self,
        key: &[u8],
        r: Option<u32>,
        deadline: Instant,
    ) -> Result<GetResult, Error> {
        self.inner.options.limits.check_key(key)?;
        check_override("R", r)?;
        let key = Bytes::copy_from_slice(key);
        match self.inner.options.coordination {
            Coordination::Client => self.get_coordinated(key, r, deadline).await,
            Coordination::Server => self.get_via_node(key, r, deadline).await,
        }
    }

    /// A get this client coordinates: on a ring that moved on, or when too few replicas
    /// answered, the ring is pulled again and the read retried while time and retries last.
    async fn get_coordinated(
        &self,
        key: Bytes,
        r: Option<u32>,
        deadline: Instant,
    ) -> Result<GetResult, Error> {
        let opts = &self.inner.options;
        let plan = ReadPlan {
            r,
            deadline,
            attempt_timeout: opts.attempt_timeout,
            hedge_after: opts.hedge_after,
        };
        let mut last = None;
        let (mut failed, mut moved) = (0, 0);
        while failed <= opts.max_retries && moved <= MAX_RING_MOVES {
            if (failed > 0 || moved > 0) && Instant::now() >= deadline {
                break;
            }
            let view = self.view(deadline).await?;
            match read_coordination::get(&self.inner.nodes, &view, key.clone(), plan).await {
                Ok(got) => return Ok(got),
                Err(ReadFailure::RingMoved(e)) => {
                    // Not a failure of any node: the ring changed under the client. Pull it
                    // and route again, as often as the deadline allows.
                    tracing::debug!(error = %e, "ring moved on: pulling it and reading again");
                    last = Some(e);
                    moved += 1;
                    if self
                        .inner
                        .pull_ring(deadline)
                        .await
                        .is_ok_and(|v| v.version == view.version)
                    {
                        // The nodes asked have not all heard of the commit yet: give gossip a
                        // moment rather than spin.
                        tokio::time::sleep(Duration::from_millis(20 * moved as u64)).await;
                    }
                }
                Err(ReadFailure::Failed(Error::Timeout { .. })) => {
                    return Err(self.timeout_error());
                }
                Err(ReadFailure::Failed(e)) if is_transient(&e) => {
                    tracing::debug!(error = %e, "read failed: trying again");
                    last = Some(e);
                    failed += 1;
                }
                Err(ReadFailure::Failed(e)) => return Err(e),
            }
        }
        if Instant::now() >= deadline {
            return Err(self.timeout_error());
        }
        Err(last.unwrap_or_else(|| self.timeout_error()))
    }

    /// A get coordinated by a node (server-driven): the seeds in turn.
    async fn get_via_node(
        &self,
        key: Bytes,
        r: Option<u32>,
        deadline: Instant,
    ) -> Result<GetResult, Error> {
        let targets = self.seed_order();
        let reply = self
            .read_via(&targets, deadline, move |mut kv, request_id, budget| {
                let mut req = tonic::Request::new(pb::GetRequest {
                    key: Some(key.clone()),
                    r,
                    ring_version: 0,
                    request_id,
                });
                req.set_timeout(budget);
                async move {
                    kv.get(req)
                        .await
                        .map(|r| r.into_inner())
                        .map(|r| (Some(r.request_id), r))
                }
            })
            .await?;
        Ok(GetResult {
            values: reply.values.into_iter().map(|b| b.to_vec()).collect(),
            context: Context(reply.context),
            timestamps_ms: reply.timestamps_ms,
            tombstone: reply.tombstone,
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
        let deadline = Instant::now() + self.inner.options.request_timeout;
        self.write_until(key.as_ref(), Some(value.into()), context, options, deadline)
            .await
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
        let deadline = Instant::now() + self.inner.options.request_timeout;
        self.write_until(key.as_ref(), None, Some(context), options, deadline)
            .await
    }

    /// A put (`value` set) or a delete, by the deadline.
    async fn write_until(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<&Context>,
        options: WriteOptions,
        deadline: Instant,
    ) -> Result<Context, Error> {
        let limits = self.inner.options.limits;
        limits.check_key(key)?;
        if let Some(v) = &value {
            limits.check_value(v)?;
        }
        check_override("W", options.w)?;
        let (w, sync_replicas) = (options.w, options.sync_replicas);
        if let (Some(s), Some(w)) = (sync_replicas, w) {
            dynamokv_common::limits::check_sync_replicas(s, w)?;
        }
        let (targets, ring_version) = self.write_targets(key, context, deadline).await?;
        let key = Bytes::copy_from_slice(key);
        let value = value.map(Bytes::from);
        let context = context.map(Context::to_bytes).unwrap_or_default();
        let write_id = options.write_id.unwrap_or_else(rand::random);
        let id_bytes = Bytes::copy_from_slice(&write_id.to_be_bytes());
        let reply = self
            .write_via(
                &targets,
                write_id,
                deadline,
                move |mut kv, attempt, request_id, budget| {
                    let (key, context, id_bytes) = (key.clone(), context.clone(), id_bytes.clone());
                    let value = value.clone();
                    async move {
                        let (context, ring, echoed) = match value {
                            Some(value) => {
                                let mut req = tonic::Request::new(pb::PutRequest {
                                    key: Some(key),
                                    value: Some(value),
                                    context,
                                    w,
                                    write_id: id_bytes,
                                    attempt,
                                    sync_replicas,
                                    ring_version,
                                    request_id,
                                });
                                req.set_timeout(budget);
                                let r = kv.put(req).await?.into_inner();
                                (r.context, r.ring, r.request_id)
                            }
                            None => {
                                let mut req = tonic::Request::new(pb::DeleteRequest {
                                    key: Some(key),
                                    context,
                                    w,
                                    write_id: id_bytes,
                                    attempt,
                                    sync_replicas,
                                    ring_version,
                                    request_id,
                                });
                                req.set_timeout(budget);
                                let r = kv.delete(req).await?.into_inner();
                                (r.context, r.ring, r.request_id)
                            }
                        };
                        Ok((echoed, (context, ring.is_some_and(|n| n.moved_on))))
                    }
                },
            )
            .await?;
        let (context, moved_on) = reply;
        if moved_on {
            self.inner.nodes.pull_ring.notify_one();
        }
        Ok(Context(context))
    }

    /// The nodes a write goes to, in order, and the ring version it is routed by. Coordinating
    /// in the client: the replica the context names as the read's fastest (read-your-writes,
    /// paper 5), then the key's replicas in preference-list order, then its fallbacks (which
    /// forward to a replica); healthy ones first. Server-driven: the seeds in turn.
    async fn write_targets(
        &self,
        key: &[u8],
        context: Option<&Context>,
        deadline: Instant,
    ) -> Result<(Vec<String>, u64), Error> {
        if self.inner.options.coordination == Coordination::Server {
            return Ok((self.seed_order(), 0));
        }
        let view = self.view(deadline).await?;
        let sets = view.replica_sets(key);
        let fastest = context
            .filter(|c| !c.is_empty())
            .and_then(|c| inspect_context(key, c.as_bytes()).ok())
            .and_then(|(_, f)| f);
        let mut targets: Vec<String> = Vec::with_capacity(sets.replicas.len() + 1);
        if let Some(m) = fastest.and_then(|f| sets.replicas.iter().find(|m| m.id == f)) {
            targets.push(m.address.clone());
        }
        for m in sets.replicas.iter().chain(sets.fallbacks.iter()) {
            if !targets.contains(&m.address) {
                targets.push(m.address.clone());
            }
        }
        Ok((self.inner.nodes.health.order(&targets), view.version))
    }

    /// The seeds, starting the round robin at the next one; those that answer first.
    fn seed_order(&self) -> Vec<String> {
        let seeds = &self.inner.seeds;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let rotated: Vec<String> = (0..seeds.len())
            .map(|k| seeds[(start + k) % seeds.len()].clone())
            .collect();
        self.inner.nodes.health.order(&rotated)
    }

    /// `key`'s value resolved to one: when the get returns several concurrent values (or a
    /// value and a concurrent delete), `resolver` makes one of them and, with `write_back`,
    /// it is written under the context covering them all, so the key converges to that one
    /// version on every replica. A resolver that fails writes nothing
    /// ([`Error::ResolverFailed`]).
    pub async fn get_resolved(
        &self,
        key: impl AsRef<[u8]>,
        resolver: &Resolver,
        r: Option<u32>,
        write_back: bool,
    ) -> Result<Resolved, Error> {
        let key = key.as_ref();
        let deadline = Instant::now() + self.inner.options.request_timeout;
        let got = self.get_until(key, r, deadline).await?;
        self.resolve(key, got, resolver, write_back, deadline).await
    }

    async fn resolve(
        &self,
        key: &[u8],
        got: GetResult,
        resolver: &Resolver,
        write_back: bool,
        deadline: Instant,
    ) -> Result<Resolved, Error> {
        let siblings = got.values.len();
        let divergent = siblings > 1 || (siblings == 1 && got.tombstone);
        if !divergent {
            return Ok(Resolved {
                value: got.values.into_iter().next(),
                context: got.context,
                siblings,
                written_back: false,
            });
        }
        let value = if siblings == 1 {
            got.values[0].clone()
        } else {
            // The call's deadline covers the resolver too: one that never finishes times the
            // call out (and writes nothing) instead of leaving it pending for ever.
            let resolved = tokio::time::timeout_at(
                deadline,
                resolver.resolve(Siblings {
                    key: key.to_vec(),
                    values: got.values,
                    timestamps_ms: got.timestamps_ms,
                    tombstone: got.tombstone,
                }),
            )
            .await;
            resolved.map_err(|_| self.timeout_error())??
        };
        self.inner
            .options
            .limits
            .check_value(&value)
            .map_err(|e| Error::ResolverFailed {
                message: format!("the resolved value cannot be stored: {}", Error::from(e)),
            })?;
        if !write_back {
            return Ok(Resolved {
                value: Some(value),
                context: got.context,
                siblings,
                written_back: false,
            });
        }
        let context = self
            .write_until(
                key,
                Some(value.clone()),
                Some(&got.context),
                WriteOptions::default(),
                deadline,
            )
            .await?;
        Ok(Resolved {
            value: Some(value),
            context,
            siblings,
            written_back: true,
        })
    }

    /// Gets many keys at once, each from its own replicas, at most `batch_concurrency` in
    /// flight: one result per key, in the order given; one key failing does not fail the
    /// others. The request timeout bounds the whole batch.
    pub async fn get_many<I, K>(&self, keys: I, r: Option<u32>) -> Vec<Result<GetResult, Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        futures::stream::iter(keys)
            .map(|k| async move { self.get_until(&k, r, deadline).await })
            .buffered(self.inner.options.batch_concurrency)
            .collect()
            .await
    }

    /// As [`get_many`](Self::get_many), each key resolved as by
    /// [`get_resolved`](Self::get_resolved).
    pub async fn get_many_resolved<I, K>(
        &self,
        keys: I,
        resolver: &Resolver,
        r: Option<u32>,
        write_back: bool,
    ) -> Vec<Result<Resolved, Error>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        futures::stream::iter(keys)
            .map(|k| async move {
                let got = self.get_until(&k, r, deadline).await?;
                self.resolve(&k, got, resolver, write_back, deadline).await
            })
            .buffered(self.inner.options.batch_concurrency)
            .collect()
            .await
    }

    /// Puts many keys at once, each to its own replicas, at most `batch_concurrency` in
    /// flight: one result per item, in the order given; one failing does not fail the others.
    /// The request timeout bounds the whole batch.
    pub async fn put_many(
        &self,
        items: Vec<PutItem>,
        options: WriteOptions,
    ) -> Vec<Result<Context, Error>> {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        let options = WriteOptions {
            // One write id names one write: each item draws its own.
            write_id: None,
            ..options
        };
        futures::stream::iter(items)
            .map(|item| async move {
                self.write_until(
                    &item.key,
                    Some(item.value),
                    item.context.as_ref(),
                    options,
                    deadline,
                )
                .await
            })
            .buffered(self.inner.options.batch_concurrency)
            .collect()
            .await
    }

    /// The cluster's membership and settings, as one node reports them.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        Ok(self.fetch_view().await?.info.clone())
    }

    /// The cluster's ring, computed here from the membership a node reports, with the same
    /// shared code the nodes use: `ring.preference_list(key, n)` names the replicas of a key.
    pub async fn ring(&self) -> Result<(Ring, ClusterInfo), Error> {
        let view = self.fetch_view().await?;
        Ok((view.ring.clone(), view.info.clone()))
    }

    /// A membership answer as a ring view: pulled and installed for routing (client-driven),
    /// else asked of the seeds in turn.
    async fn fetch_view(&self) -> Result<Arc<RingView>, Error> {
        let deadline = Instant::now() + self.inner.options.request_timeout;
        if self.inner.options.coordination == Coordination::Client {
            return self.inner.pull_ring(deadline).await;
        }
        let targets = self.seed_order();
        let reply = self
            .read_via(&targets, deadline, |mut kv, _, budget| async move {
                let mut req = tonic::Request::new(pb::MembershipRequest {});
                req.set_timeout(budget);
                kv.membership(req).await.map(|r| (None, r.into_inner()))
            })
            .await?;
        Ok(Arc::new(RingView::from_membership(reply)?))
    }

    /// The client's own view of its nodes: which answer, which it avoids (paper 4.8.3). The
    /// seeds and, coordinating in the client, every member of the ring it routes by.
    pub fn node_health(&self) -> Vec<NodeHealth> {
        let mut addresses = self.inner.seeds.clone();
        if let Some(v) = self.inner.routing.current() {
            for a in v.addresses() {
                if !addresses.contains(&a) {
                    addresses.push(a);
                }
            }
        }
        addresses
            .into_iter()
            .map(|address| NodeHealth {
                up: self.inner.nodes.is_up(&address),
                address,
            })
            .collect()
    }

    /// Runs a read against one node after another of `targets` until one answers, the retries
    /// run out, or the deadline passes. Each node gets at most the attempt timeout; `f` gets a
    /// node, a request id and that budget, and returns the id its answer echoed with it (`None`
    /// for an answer that carries none, a membership).
    async fn read_via<T, F, Fut>(
        &self,
        targets: &[String],
        deadline: Instant,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Kv, u64, Duration) -> Fut,
        Fut: Future<Output = Result<(Option<u64>, T), tonic::Status>>,
    {
        let opts = &self.inner.options;
        let nodes = &self.inner.nodes;
        let attempts = opts.max_retries as usize + 1;
        let mut failures: Vec<String> = Vec::new();
        let mut overloaded: Option<Error> = None;
        for (attempt, node) in targets.iter().cycle().take(attempts).enumerate() {
            if let Some(err) = overloaded.take()
                && attempt % targets.len() == 0
                && !back_off(attempt / targets.len(), deadline).await
            {
                return Err(err);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timeout_error());
            }
            let budget = opts.attempt_timeout.map_or(left, |t| left.min(t));
            let request_id = nodes.request_id();
            let err =
                match tokio::time::timeout(budget, f(nodes.kv(node)?, request_id, budget)).await {
                    Err(_) => {
                        nodes.silent(node);
                        Error::Unavailable {
                            message: format!("no answer within {budget:?}"),
                        }
                    }
                    Ok(Ok((echoed, value))) => {
                        nodes.answered(node);
                        if let Some(echoed) = echoed {
                            check_echo(request_id, echoed, node)?;
                        }
                        return Ok(value);
                    }
                    Ok(Err(status)) => {
                        if is_silence(&status) {
                            nodes.silent(node);
                        } else {
                            nodes.answered(node);
                        }
                        Error::from_status(status, node)
                    }
                };
            if !is_transient(&err) {
                return Err(err);
            }
            failures.push(format!("{node}: {err}"));
            if matches!(err, Error::Overloaded { .. }) {
                overloaded = Some(err.clone());
            }
            if attempt + 1 < attempts {
                tracing::debug!(%node, error = %err, "retrying on another node");
            } else if !matches!(err, Error::Unavailable { .. }) {
                return Err(err);
            }
        }
        if Instant::now() >= deadline {
            return Err(self.timeout_error());
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }

    /// Runs a write against one node after another of `targets` until one answers with a
    /// verdict, the retries run out, or the deadline passes, each for at most the attempt
    /// timeout. A node that certainly did not get the write is skipped as if never tried;
    /// after one that may have applied it (a silent one included), the next is sent the same
    /// write id as a further attempt (`f` gets a node, the attempt number, a request id and the
    /// time it has), so the write is applied at most once. When the client cannot tell whether
    /// it was, the error says so: [`Error::OutcomeUnknown`].
    async fn write_via<T, F, Fut>(
        &self,
        targets: &[String],
        write_id: u128,
        deadline: Instant,
        f: F,
    ) -> Result<T, Error>
    where
        F: Fn(Kv, u32, u64, Duration) -> Fut,
        Fut: Future<Output = Result<(u64, T), tonic::Status>>,
    {
        let opts = &self.inner.options;
        let nodes = &self.inner.nodes;
        let tries = opts.max_retries as usize + 1;
        let mut attempt = 1u32;
        let mut maybe_applied = false;
        let mut last_overloaded = false;
        let mut last_tls = None;
        let mut failures: Vec<String> = Vec::new();
        for (i, node) in targets.iter().cycle().take(tries).enumerate() {
            if last_overloaded
                && i % targets.len() == 0
                && !back_off(i / targets.len(), deadline).await
            {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let budget = opts.attempt_timeout.map_or(left, |t| left.min(t));
            let request_id = nodes.request_id();
            let call = f(nodes.kv(node)?, attempt, request_id, budget);
            let status = match tokio::time::timeout(budget, call).await {
                Ok(Ok((echoed, value))) => {
                    nodes.answered(node);
                    check_echo(request_id, echoed, node)?;
                    return Ok(value);
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    // The request was in flight: it may have been applied.
                    nodes.silent(node);
                    failures.push(format!("{node}: no answer within {budget:?}"));
                    maybe_applied = true;
                    attempt += 1;
                    continue;
                }
            };
            if is_silence(&status) {
                nodes.silent(node);
            } else {
                nodes.answered(node);
            }
            let err = Error::from_status(status.clone(), node);
            if err.is_refusal() {
                return Err(err);
            }
            last_overloaded = matches!(err, Error::Overloaded { .. });
            last_tls = matches!(err, Error::Tls { .. }).then(|| err.clone());
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
            Error::OutcomeUnknown {
                write_id,
                message: failures.join("; "),
            }
        } else if last_overloaded {
            Error::Overloaded {
                message: failures.join("; "),
            }
        } else if let Some(tls) = last_tls {
            tls
        } else if Instant::now() >= deadline && failures.is_empty() {
            self.timeout_error()
        } else {
            Error::Unavailable {
                message: failures.join("; "),
            }
        })
    }
}

/// Waits before a call's `pass`-th round over its nodes (1 for the second) when the last node
/// answered OVERLOADED: [`OVERLOAD_BACKOFF_BASE`] doubled each round up to
/// [`OVERLOAD_BACKOFF_MAX`], half of it at random. False, without waiting, when the wait would
/// not end before the call's deadline: the caller reports the node overloaded rather than a
/// timeout.
async fn back_off(pass: usize, deadline: Instant) -> bool {
    let doubled = OVERLOAD_BACKOFF_BASE.saturating_mul(1u32 << pass.saturating_sub(1).min(16));
    let ceiling = doubled.min(OVERLOAD_BACKOFF_MAX);
    let half = ceiling / 2;
    let wait = half + half.mul_f64(rand::random::<f64>());
    if Instant::now() + wait >= deadline {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

/// Whether another node may serve what this one could not (an overloaded node, or one whose
/// certificate the client refused, included: the client tries the next and, if every one
/// fails so, reports that).
fn is_transient(err: &Error) -> bool {
    matches!(
        err,
        Error::Unavailable { .. }
            | Error::QuorumNotReached { .. }
            | Error::Overloaded { .. }
            | Error::Tls { .. }
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
