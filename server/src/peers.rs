//! Connections to the other nodes: one lazily connected HTTP/2 channel per address, and on it
//! one long-lived exchange stream that carries this node's replica reads and merges to that
//! node.
//!
//! A unary call costs a whole HTTP/2 request each way (headers, a new stream, a task on each
//! side); on the exchange stream a request is one message each way, matched to its answer by
//! id, and requests in flight together share the socket's writes. Merges of large states still
//! go as calls of their own, so that one big message never holds up the small ones behind it
//! on the stream. A peer that does not know the stream (an older version during a rolling
//! upgrade) is served by the unary calls.
//!
//! **Local failure detection (paper 4.8.3).** Each node keeps its own view of which peers
//! answer. A peer that lets a request time out, or whose connection fails, is marked down; a
//! background probe (`Ping`) retries it with exponential backoff and marks it up when it
//! answers. Coordinators ask peers that are up first and leave down ones out where others
//! suffice, so later requests do not wait on a peer known to be silent. A hung process (its
//! connections stay open) is found by its silence, like a dead one.
//!
//! Channels have no overall timeout: each request sets its own (a replica read or merge gets
//! the replica timeout, a forwarded write enough for its coordinator to give a verdict).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;

/// What a node answers on the exchange stream to a read of a large state (1 MiB or more):
/// ask again by a call of its own. Megabytes on the shared stream would hold up every small
/// read and merge queued behind them (issue 19: a storm of large reads delayed every write's
/// replication).
pub const READ_BY_CALL: &str = "a large state: read it by a call of its own";

/// Merges whose encoded state is larger than this go as unary calls, not on the stream.
pub const STREAMED_MERGE_MAX_BYTES: usize = 256 << 10;

/// Bytes of requests that may wait to be sent on one stream. A peer that stops reading (a
/// hung process keeps its connection open) fills HTTP/2's window; past this, requests to it
/// fail at once instead of piling up in memory until it wakes.
pub const STREAM_BACKLOG_BYTES: usize = 64 << 20;

/// The answer to a request sent on an exchange stream, or why there is none.
type Answer = Result<pb::peer_response::Result, String>;

#[derive(Debug, Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// The stream ended: no answer will come, and no request may be added.
    closed: bool,
}

/// One exchange stream to a peer.
#[derive(Debug)]
struct Link {
    requests: mpsc::UnboundedSender<pb::PeerRequest>,
    pending: Arc<Mutex<Pending>>,
    /// Encoded bytes of the requests sent to the stream and not yet taken by the transport.
    backlog: Arc<AtomicUsize>,
}

#[derive(Debug)]
enum LinkState {
    Open(Arc<Link>),
    /// The peer does not serve `Exchange`: use unary calls.
    Unsupported,
}

/// How often a request may ping a peer marked down ([`Peers::recheck`]).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// First wait before probing a peer marked down; doubles up to [`MAX_PROBE_BACKOFF`].
pub const MIN_PROBE_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Peers {
    /// Addresses of the peers marked down.
    down: Mutex<std::collections::HashSet<String>>,
    /// How many peers are marked down: while none is, `is_up` answers without the lock (every
    /// request asks it for each replica).
    down_count: AtomicUsize,
    /// Where reachability changes are reported.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    channels: Mutex<HashMap<String, Channel>>,
    links: Mutex<HashMap<String, LinkState>>,
    next_id: AtomicU64,
    timeout: Duration,
    backlog_limit: usize,
    /// When each peer marked down was last pinged on a request's behalf.
    pinged: Mutex<HashMap<String, tokio::time::Instant>>,
    /// This node's TLS client identity, when the cluster speaks TLS: each new connection
    /// takes the current one, so reloaded certificates are used without a restart.
    tls: Option<dynamokv_proto::tls::ClientTls>,
}

/// Removes a request's entry when its caller stops waiting (timeout or cancellation).
struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiting.remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Peers {
    pub fn new(timeout: Duration) -> Peers {
        Peers {
            down: Mutex::new(std::collections::HashSet::new()),
            down_count: AtomicUsize::new(0),
            metrics: None,
            channels: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            timeout,
            backlog_limit: STREAM_BACKLOG_BYTES,
            pinged: Mutex::new(HashMap::new()),
            tls: None,
        }
    }

    /// Reports the peers' reachability to `metrics` (`dynamokv_peer_up`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Peers {
        self.metrics = Some(metrics);
        self
    }

    /// Connects to peers over TLS, with the identity `tls` holds when each connection is made.
    pub fn with_tls(mut self, tls: dynamokv_proto::tls::ClientTls) -> Peers {
        self.tls = Some(tls);
        self
    }

    /// Notes a peer this node talks to, reachable until it proves otherwise.
    pub fn know(&self, address: &str) {
        if let Some(m) = &self.metrics {
            m.peer_reachable(address, self.is_up(address));
        }
    }

    /// Whether this node currently considers the peer at `address` reachable.
    pub fn is_up(&self, address: &str) -> bool {
        self.down_count.load(Ordering::Acquire) == 0 || !lock(&self.down).contains(address)
    }

    /// Records a call's outcome: the peer answered (a verdict of its own counts) or was
    /// silent (a timeout, `status == None`, or a transport failure).
    pub fn record_call(self: &Arc<Self>, address: &str, status: Option<&tonic::Status>) {
        match status.map(PeerError::of) {
            None | Some(PeerError::Silent(_)) => self.silent(address),
            Some(PeerError::Refused(_)) => self.answered(address),
        }
    }

    /// Records that the peer answered (a verdict of its own counts).
    pub fn answered(&self, address: &str) {
        let removed = {
            let mut down = lock(&self.down);
            let removed = down.remove(address);
            self.down_count.store(down.len(), Ordering::Release);
            removed
        };
        if removed {
            tracing::info!(peer = %address, "peer answers again");
            if let Some(m) = &self.metrics {
                m.peer_reachable(address, true);
            }
        }
    }

    /// Records that the peer did not answer: marks it down and starts probing it.
    fn silent(self: &Arc<Self>, address: &str) {
        let inserted = {
            let mut down = lock(&self.down);
            let inserted = down.insert(address.to_string());
            self.down_count.store(down.len(), Ordering::Release);
            inserted
        };
        if !inserted {
            return;
        }
        tracing::warn!(peer = %address, "peer does not answer: marked down, probing it");
        if let Some(m) = &self.metrics {
            m.peer_reachable(address, false);
        }
        tokio::spawn(probe(Arc::downgrade(self), address.to_string()));
    }

    /// As [`new`](Self::new), with another limit on the bytes waiting on a stream.
    pub fn with_backlog_limit(timeout: Duration, backlog_limit: usize) -> Peers {
        Peers {
            backlog_limit,
            ..Peers::new(timeout)
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut map = lock(&self.channels);
        if let Some(ch) = map.get(address) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad peer address {address:?}: {e}"))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        let ch = match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => dynamokv_proto::tls::connect_lazy(&endpoint, tls.clone()),
        };
        map.insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    /// The operator service of the node at `address`, over this node's connection to it.
    pub fn admin(
        &self,
        address: &str,
    ) -> Result<dynamokv_proto::v1::admin_client::AdminClient<Channel>, String> {
        Ok(dynamokv_proto::v1::admin_client::AdminClient::new(
            self.channel(address)?,
        ))
    }

    pub fn replica(&self, address: &str) -> Result<ReplicaClient<Channel>, String> {
        Ok(ReplicaClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn kv(&self, address: &str) -> Result<KvClient<Channel>, String> {
        Ok(KvClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The open exchange stream to `address`, opening one if there is none (or the last one
    /// ended); `None` when the peer does not support streams.
    fn link(&self, address: &str) -> Result<Option<Arc<Link>>, String> {
        let mut links = lock(&self.links);
        match links.get(address) {
            Some(LinkState::Unsupported) => return Ok(None),
            Some(LinkState::Open(link)) if !lock(&link.pending).closed => {
                return Ok(Some(Arc::clone(link)));
            }
            _ => {}
        }
        let client = self.replica(address)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            requests: tx,
            pending: Arc::new(Mutex::new(Pending::default())),
            backlog: Arc::new(AtomicUsize::new(0)),
        });
        links.insert(address.to_string(), LinkState::Open(Arc::clone(&link)));
        let pending = Arc::clone(&link.pending);
        let backlog = Arc::clone(&link.backlog);
        // A request leaves the backlog when the transport takes it from the stream.
        let requests = UnboundedReceiverStream::new(rx).map(move |req: pb::PeerRequest| {
            backlog.fetch_sub(req.encoded_len(), Ordering::Relaxed);
            req
        });
        tokio::spawn(run_link(client, requests, pending, address.to_string()));
        Ok(Some(link))
    }

    /// Marks `address` as a peer without exchange streams.
    fn unsupported(&self, address: &str) {
        tracing::info!(peer = %address, "peer does not serve exchange streams; using unary calls");
        lock(&self.links).insert(address.to_string(), LinkState::Unsupported);
    }

    /// Sends one request on the exchange stream to `address` and waits for its answer, at most
    /// `timeout`. `Ok(None)`: the peer has no exchange streams, use a unary call.
    async fn exchange(
        &self,
        address: &str,
        op: pb::peer_request::Op,
        timeout: Duration,
    ) -> Result<Option<pb::peer_response::Result>, String> {
        let Some(link) = self.link(address)? else {
            return Ok(None);
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let req = pb::PeerRequest { id, op: Some(op) };
        let size = req.encoded_len();
        let waiting = link.backlog.fetch_add(size, Ordering::Relaxed);
        if waiting + size > self.backlog_limit {
            link.backlog.fetch_sub(size, Ordering::Relaxed);
            return Err(format!(
                "{} MiB of requests already wait to be sent on the stream to the peer: it is not reading",
                waiting >> 20
            ));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&link.pending);
            if pending.closed {
                link.backlog.fetch_sub(size, Ordering::Relaxed);
                return Err("the stream to the peer closed".into());
            }
            pending.waiting.insert(id, tx);
        }
        let _forget = Forget {
            pending: &link.pending,
            id,
        };
        link.requests.send(req).map_err(|_| {
            link.backlog.fetch_sub(size, Ordering::Relaxed);
            "the stream to the peer closed".to_string()
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(_)) => Err("the stream to the peer closed".into()),
            Ok(Ok(Err(reason))) if reason == UNIMPLEMENTED => {
                self.unsupported(address);
                Ok(None)
            }
            Ok(Ok(answer)) => answer.map(Some),
        }
    }

    /// A replica read of `key` on the node at `address`; with `include_hints`, merged with the
    /// hints that node holds for the key (a fallback's answer to a sloppy-quorum read).
    pub async fn read(
        self: &Arc<Self>,
        address: &str,
        key: bytes::Bytes,
        include_hints: bool,
        timeout: Duration,
    ) -> Result<pb::ReadLocalResponse, String> {
        let result = self.read_once(address, key, include_hints, timeout).await;
        self.note(address, &result);
        result.map_err(PeerError::into_message)
    }

    /// A merge of a key's state into the node at `address`.
    pub async fn merge(
        self: &Arc<Self>,
        address: &str,
        key: &bytes::Bytes,
        state: &dynamokv_common::VersionedState,
        sync: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let request = || pb::MergeLocalRequest {
            key: Some(key.clone()),
            state: Some(state.to_proto()),
            sync,
        };
        let result = self.merge_once(address, request, timeout).await;
        self.note(address, &result);
        result.map_err(PeerError::into_message)
    }

    /// A unary call `f` of `request` to the node at `address` with a deadline of `timeout`,
    /// noting whether the node answered.
    pub async fn call<Req, T, F, Fut>(
        self: &Arc<Self>,
        address: &str,
        timeout: Duration,
        request: Req,
        f: F,
    ) -> Result<T, String>
    where
        F: FnOnce(ReplicaClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let result = match self.replica(address) {
            Err(reason) => Err(PeerError::Refused(reason)),
            Ok(client) => match tokio::time::timeout(timeout, f(client, request)).await {
                Err(_) => Err(PeerError::Silent(format!("no answer within {timeout:?}"))),
                Ok(r) => r
                    .map(tonic::Response::into_inner)
                    .map_err(|s| PeerError::of(&s)),
            },
        };
        self.note(address, &result);
        result.map_err(PeerError::into_message)
    }

    /// Pings the peers at `addresses` that are marked down, at most once a
    /// [`RECHECK_INTERVAL`] each, waiting at most `timeout`: a peer that answers is marked up.
    /// For a request that cannot proceed without them, so that a peer that just came back is
    /// found before the probe's backoff runs out, while a peer that stays silent costs the
    /// requests of the following interval nothing.
    pub async fn recheck(self: &Arc<Self>, addresses: &[&str], timeout: Duration) {
        let now = tokio::time::Instant::now();
        let due: Vec<&str> = {
            let mut pinged = lock(&self.pinged);
            addresses
                .iter()
                .copied()
                .filter(|a| !self.is_up(a))
                .filter(|a| {
                    let due = pinged
                        .get(*a)
                        .is_none_or(|at| now.duration_since(*at) >= RECHECK_INTERVAL);
                    if due {
                        pinged.insert(a.to_string(), now);
                    }
                    due
                })
                .collect()
        };
        futures::future::join_all(due.into_iter().map(|a| {
            self.call(a, timeout, pb::PingRequest {}, |mut c, r| async move {
                c.ping(r).await
            })
        }))
        .await;
    }

    /// Hands `state` of `key` to the node at `address` as a hint for the replica `owner`.
    pub async fn store_hint(
        self: &Arc<Self>,
        address: &str,
        key: &bytes::Bytes,
        owner: &str,
        state: &dynamokv_common::VersionedState,
        sync: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let req = pb::StoreHintRequest {
            key: Some(key.clone()),
            state: Some(state.to_proto()),
            owner: owner.to_string(),
            sync,
        };
        self.call(address, timeout, req, |mut c, r| async move {
            c.store_hint(r).await
        })
        .await
        .map(|_| ())
    }

    fn note<T>(self: &Arc<Self>, address: &str, result: &Result<T, PeerError>) {
        match result {
            Ok(_) | Err(PeerError::Refused(_)) => self.answered(address),
            Err(PeerError::Silent(_)) => self.silent(address),
        }
    }

    async fn read_once(
        &self,
        address: &str,
        key: bytes::Bytes,
        include_hints: bool,
        timeout: Duration,
    ) -> Result<pb::ReadLocalResponse, PeerError> {
        let req = pb::ReadLocalRequest {
            key: Some(key),
            include_hints,
        };
        match self
            .exchange(address, pb::peer_request::Op::Read(req.clone()), timeout)
            .await
            .map_err(PeerError::Silent)?
        {
            Some(pb::peer_response::Result::Read(r)) => return Ok(r),
            Some(pb::peer_response::Result::Failure(f)) if f.message == READ_BY_CALL => {}
            Some(other) => return Err(unexpected(other)),
            None => {}
        }
        let mut client = self.replica(address).map_err(PeerError::Refused)?;
        let mut req = tonic::Request::new(req);
        req.set_timeout(timeout);
        tokio::time::timeout(timeout, client.read_local(req))
            .await
            .map_err(|_| PeerError::Silent(format!("no answer within {timeout:?}")))?
            .map(tonic::Response::into_inner)
            .map_err(|s| PeerError::of(&s))
    }

    /// `request` builds the request; it is called again only for the rare unary fallback,
    /// so that the common path encodes the state once and copies nothing.
    async fn merge_once(
        &self,
        address: &str,
        request: impl Fn() -> pb::MergeLocalRequest,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let mut req = request();
        if req.encoded_len() <= STREAMED_MERGE_MAX_BYTES {
            match self
                .exchange(address, pb::peer_request::Op::Merge(req), timeout)
                .await
                .map_err(PeerError::Silent)?
            {
                Some(pb::peer_response::Result::Merge(_)) => return Ok(()),
                Some(other) => return Err(unexpected(other)),
                None => req = request(),
            }
        }
        let mut client = self.replica(address).map_err(PeerError::Refused)?;
        let mut req = tonic::Request::new(req);
        req.set_timeout(timeout);
        tokio::time::timeout(timeout, client.merge_local(req))
            .await
            .map_err(|_| PeerError::Silent(format!("no answer within {timeout:?}")))?
            .map_err(|s| PeerError::of(&s))?;
        Ok(())
    }
}

/// How a peer without exchange streams answers (the reason a stream's requests get).
const UNIMPLEMENTED: &str = "Unimplemented";

fn unexpected(answer: pb::peer_response::Result) -> PeerError {
    PeerError::Refused(match answer {
        pb::peer_response::Result::Failure(f) => {
            format!("{:?}: {}", tonic::Code::from_i32(f.code), f.message)
        }
        other => format!("the peer answered with the wrong kind of reply: {other:?}"),
    })
}

/// Why a request to a peer failed: it did not answer (counts against its reachability), or
/// it answered with an error of its own.
#[derive(Debug)]
enum PeerError {
    Silent(String),
    Refused(String),
}

impl PeerError {
    /// A failed call: the transport's failures and timeouts are silence; anything with a
    /// DynamoKV error code (or a code only a server sends) is the peer's own answer.
    fn of(status: &tonic::Status) -> PeerError {
        let message = format!("{:?}: {}", status.code(), status.message());
        if dynamokv_proto::transport::is_silence(status) {
            PeerError::Silent(message)
        } else {
            PeerError::Refused(message)
        }
    }

    fn into_message(self) -> String {
        match self {
            PeerError::Silent(m) | PeerError::Refused(m) => m,
        }
    }
}

/// Probes the peer at `address` with `Ping` until it answers, waiting longer each time, then
/// marks it up. Ends when the node's `Peers` is dropped.
async fn probe(peers: std::sync::Weak<Peers>, address: String) {
    let mut wait = MIN_PROBE_BACKOFF;
    loop {
        tokio::time::sleep(wait).await;
        let Some(peers) = peers.upgrade() else {
            return;
        };
        if peers.is_up(&address) {
            return;
        }
        let timeout = peers.timeout.min(wait.max(MIN_PROBE_BACKOFF));
        if let Ok(mut client) = peers.replica(&address) {
            let mut req = tonic::Request::new(pb::PingRequest {});
            req.set_timeout(timeout);
            if let Ok(Ok(_)) = tokio::time::timeout(timeout, client.ping(req)).await {
                peers.answered(&address);
                return;
            }
        }
        wait = (wait * 2).min(MAX_PROBE_BACKOFF);
    }
}

/// Drives one exchange stream: delivers answers to their waiting requests until the stream
/// ends, then fails whatever is still waiting (its requests may or may not have been applied,
/// as with a call whose connection broke).
async fn run_link(
    mut client: ReplicaClient<Channel>,
    requests: impl futures::Stream<Item = pb::PeerRequest> + Send + 'static,
    pending: Arc<Mutex<Pending>>,
    address: String,
) {
    let reason = match client.exchange(requests).await {
        Ok(answers) => {
            let mut answers = answers.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        let waiter = lock(&pending).waiting.remove(&answer.id);
                        if let (Some(waiter), Some(result)) = (waiter, answer.result) {
                            let _ = waiter.send(Ok(result));
                        }
                    }
                    Ok(None) => break "the peer ended the stream".to_string(),
                    Err(status) => break format!("{:?}: {}", status.code(), status.message()),
                }
            }
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => UNIMPLEMENTED.to_string(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    };
    tracing::debug!(peer = %address, %reason, "exchange stream ended");
    let waiting = {
        let mut p = lock(&pending);
        p.closed = true;
        std::mem::take(&mut p.waiting)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(reason.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tonic::{Request, Response, Status};

    /// A stand-in peer: an older version without exchange streams (`deaf == false`), or a hung
    /// process whose exchange stream is open but never read (`deaf == true`). Counts its unary
    /// calls.
    #[derive(Debug, Default, Clone)]
    struct FakePeer {
        deaf: bool,
        unary: Arc<AtomicUsize>,
    }

    use crate::service::PeerResponses as NoStream;

    #[tonic::async_trait]
    impl pb::replica_server::Replica for FakePeer {
        type ExchangeStream = NoStream;

        async fn ping(
            &self,
            _: Request<pb::PingRequest>,
        ) -> Result<Response<pb::PingResponse>, Status> {
            Err(Status::unimplemented("ping"))
        }

        async fn read_local(
            &self,
            _: Request<pb::ReadLocalRequest>,
        ) -> Result<Response<pb::ReadLocalResponse>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(pb::ReadLocalResponse {
                state: None,
                actor: 42,
            }))
        }

        async fn merge_local(
            &self,
            _: Request<pb::MergeLocalRequest>,
        ) -> Result<Response<pb::MergeLocalResponse>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(pb::MergeLocalResponse {}))
        }

        async fn store_hint(
            &self,
            _: Request<pb::StoreHintRequest>,
        ) -> Result<Response<pb::StoreHintResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn tree_roots(
            &self,
            _: Request<pb::TreeRootsRequest>,
        ) -> Result<Response<pb::TreeRootsResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn tree_leaves(
            &self,
            _: Request<pb::TreeLeavesRequest>,
        ) -> Result<Response<pb::TreeLeavesResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn leaf_keys(
            &self,
            _: Request<pb::LeafKeysRequest>,
        ) -> Result<Response<pb::LeafKeysResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn reap(
            &self,
            _: Request<pb::ReapRequest>,
        ) -> Result<Response<pb::ReapResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn gossip(
            &self,
            _: Request<pb::GossipRequest>,
        ) -> Result<Response<pb::GossipResponse>, Status> {
            Err(Status::unimplemented("an older version"))
        }

        async fn exchange(
            &self,
            req: Request<tonic::Streaming<pb::PeerRequest>>,
        ) -> Result<Response<NoStream>, Status> {
            if !self.deaf {
                return Err(Status::unimplemented(
                    "this version has no exchange streams",
                ));
            }
            let held = req.into_inner();
            tokio::spawn(async move {
                let _never_read = held;
                std::future::pending::<()>().await;
            });
            Ok(Response::new(Box::pin(futures::stream::pending())))
        }
    }

    /// Serves `peer` on a fresh loopback port.
    async fn serve(peer: FakePeer) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(pb::replica_server::ReplicaServer::new(peer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_peer_without_exchange_streams_is_served_by_unary_calls() {
        let old = FakePeer::default();
        let (addr, server) = serve(old.clone()).await;
        let peers = Arc::new(Peers::new(Duration::from_secs(5)));
        let t = Duration::from_secs(5);
        for _ in 0..3 {
            let read = peers
                .read(&addr, bytes::Bytes::from_static(b"k"), false, t)
                .await;
            assert_eq!(read.unwrap().actor, 42);
            let state = dynamokv_common::VersionedState::new();
            peers
                .merge(&addr, &bytes::Bytes::from_static(b"k"), &state, false, t)
                .await
                .unwrap();
        }
        assert_eq!(old.unary.load(Ordering::SeqCst), 6);
        assert!(matches!(
            lock(&peers.links).get(&addr),
            Some(LinkState::Unsupported)
        ));
        server.abort();
    }

    #[tokio::test]
    async fn requests_waiting_on_a_stream_that_ends_fail_and_the_next_opens_a_new_one() {
        // Nothing listens: the stream fails to open, its request fails at once (not at the
        // timeout), and the next request tries a fresh stream.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let peers = Arc::new(Peers::new(Duration::from_secs(5)));
        let started = std::time::Instant::now();
        let err = peers
            .read(
                &addr,
                bytes::Bytes::from_static(b"k"),
                false,
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4), "{err}");
        let first = match lock(&peers.links).get(&addr) {
            Some(LinkState::Open(link)) => Arc::clone(link),
            other => panic!("{other:?}"),
        };
        assert!(lock(&first.pending).closed);
        let _ = peers
            .read(
                &addr,
                bytes::Bytes::from_static(b"k"),
                false,
                Duration::from_secs(5),
            )
            .await;
        let second = match lock(&peers.links).get(&addr) {
            Some(LinkState::Open(link)) => Arc::clone(link),
            other => panic!("{other:?}"),
        };
        assert!(!Arc::ptr_eq(&first, &second), "a closed stream was reused");
    }

    #[tokio::test]
    async fn requests_to_a_peer_that_stopped_reading_fail_fast_past_the_backlog_limit() {
        let (addr, server) = serve(FakePeer {
            deaf: true,
            ..FakePeer::default()
        })
        .await;
        let limit = 2 << 20;
        let peers = Arc::new(Peers::with_backlog_limit(Duration::from_secs(5), limit));
        let key = bytes::Bytes::from(vec![7u8; 100_000]);
        let started = std::time::Instant::now();
        let mut calls = Vec::new();
        for _ in 0..60 {
            let (peers, addr, key) = (Arc::clone(&peers), addr.clone(), key.clone());
            calls.push(tokio::spawn(async move {
                let t = std::time::Instant::now();
                let r = peers.read(&addr, key, false, Duration::from_secs(3)).await;
                (r.map(|_| ()), t.elapsed())
            }));
        }
        let mut refused_fast = 0;
        for c in calls {
            let (result, took) = c.await.unwrap();
            let err = result.expect_err("a deaf peer answers nothing");
            if err.contains("not reading") {
                assert!(took < Duration::from_secs(1), "refused only after {took:?}");
                refused_fast += 1;
            }
        }
        // 60 requests of 100 kB: 6 MB, more than the HTTP/2 windows and the 2 MiB backlog.
        assert!(refused_fast > 0, "nothing was refused for the backlog");
        let link = match lock(&peers.links).get(&addr) {
            Some(LinkState::Open(link)) => Arc::clone(link),
            other => panic!("{other:?}"),
        };
        assert!(link.backlog.load(Ordering::Relaxed) <= limit);
        assert!(started.elapsed() < Duration::from_secs(10));
        server.abort();
    }
}
