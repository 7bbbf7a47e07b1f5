//! What a node tells its operators: Prometheus metrics at `/metrics` and a liveness check at
//! `/health`, over plain HTTP on `metrics_listen` (loopback unless `metrics_token_file` or
//! `insecure`; with `metrics_token_file`, both ask for `Authorization: Bearer <its secret>`).
//!
//! Metrics are kept with `prometheus-client` (the Prometheus project's own Rust client: typed
//! counters and histograms updated with atomics, label families, and the text exposition
//! format), served by `axum`, which tonic already builds on. Every metric is named
//! `dynamokv_*`:
//!
//! - `requests_total{op, outcome}`: client requests by operation (get, put, delete) and
//!   outcome (`ok` or the error code a client sees).
//! - `request_duration_seconds{op, role}`: latency by operation and by this node's role in it:
//!   `coordinator` (it coordinated a client's request), `forwarder` (it passed a write on to a
//!   replica that coordinates) or `replica` (another node asked it to read or merge a key).
//! - `quorum_failures_total{op}`: requests answered with `QuorumNotReached`.
//! - `versions_per_read`: how many versions a get returned (the paper's divergence figure,
//!   section 6.3: in Amazon's shopping cart 99.94% of reads saw exactly one).
//! - `read_repairs_total`, `vector_clock_truncations_total`, `retired_writes_evicted_total`,
//!   `records_quarantined_total` (stored records that did not decode, moved aside).
//! - `overloaded_total{cap}`: requests refused at the cap of requests in flight or of
//!   connections; `requests_in_flight` and `connections_open`, where the caps apply;
//!   `connections_unauthenticated`, `connections_closed_total{reason}` and
//!   `requests_refused_before_decoding_total{reason}` (issue 19).
//! - With TLS: `tls_handshake_failures_total{reason}` (a client or node whose certificate
//!   the CA did not sign, `unknown_ca`; an expired or not yet valid one, `expired`; another
//!   certificate fault, `bad_certificate`; plain text is not counted here, it is answered
//!   UNAUTHENTICATED; `timeout`; `other`) and
//!   `tls_certificate_expiry_timestamp_seconds{certificate="node"|"ca"}`, to alert before the
//!   node's certificate or its CA expires.
//! - `access_refused_total{service, reason}`: calls refused by access control, `service`
//!   `client` (Kv and Admin) or `node` (the node-to-node service), `reason` `unauthenticated`
//!   or `permission_denied`.
//! - `peer_up{peer}`: 1 while this node can reach the peer, 0 once it marked it down.
//! - `wal_syncs_total` and `synced_writes_total`: fsyncs of the write-ahead log and the writes
//!   they made durable (their ratio is how many writes share one fsync in group commit).
//! - Hinted handoff (paper 4.6): `hints_queued` (hints this node holds for other replicas),
//!   `hint_oldest_age_seconds`, `hints_stored_total`, `hints_delivered_total`.
//! - Anti-entropy (paper 4.7): `anti_entropy_exchanges_total`,
//!   `anti_entropy_keys_compared_total`, `anti_entropy_keys_repaired_total`.
//! - `tombstones_reaped_total`: deleted keys removed once every replica held the tombstone.
//! - `background_paused_total{worker}`: times a background worker waited because foreground
//!   latency was above `latency_bound_ms` (admission control, paper 6.5).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a node did in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Coordinator,
    Forwarder,
    Replica,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Forwarder => "forwarder",
            Role::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    op: &'static str,
    role: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CapLabels {
    cap: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AccessLabels {
    service: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: &'static str,
}

/// Hinted handoff's counts.
#[derive(Debug, Default)]
pub struct HintMetrics {
    pub stored: Counter,
    pub delivered: Counter,
    pub queued: Gauge,
    pub oldest_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Membership and key-range transfer (paper 4.8, 4.9).
#[derive(Debug, Default)]
pub struct MembershipMetrics {
    pub ring_version: Gauge,
    pub members: Gauge,
    /// 1 while partitions are being handed over after a topology change.
    pub handover: Gauge,
    /// Partitions this node still has to hand to new replicas.
    pub transfers_pending: Gauge,
    /// Partitions this node holds data of and no longer replicates.
    pub partitions_to_drop: Gauge,
    pub keys_transferred: Counter,
    pub keys_dropped: Counter,
    pub gossip_exchanges: Counter,
}

/// Anti-entropy's counts.
#[derive(Debug, Default)]
pub struct AntiEntropyMetrics {
    pub exchanges: Counter,
    pub keys_compared: Counter,
    pub keys_repaired: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 us to about 13 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// A node's metrics. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    quorum_failures: Family<OpLabels, Counter>,
    versions_per_read: Histogram,
    pub read_repairs: Counter,
    pub truncations: Counter,
    pub retired_evicted: Counter,
    pub quarantined: Counter,
    pub wal_syncs: Counter,
    pub synced_writes: Counter,
    peer_up: Family<PeerLabels, Gauge>,
    pub hints: HintMetrics,
    pub anti_entropy: AntiEntropyMetrics,
    pub membership: MembershipMetrics,
    pub tombstones_reaped: Counter,
    background_paused: Family<WorkerLabels, Counter>,
    overloaded: Family<CapLabels, Counter>,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    access_refused: Family<AccessLabels, Counter>,
    tls_expiry: Family<CertificateLabels, Gauge>,
    /// Client requests (Kv and Admin) in flight.
    pub requests_in_flight: Gauge,
    /// Connections open (accepted and not yet closed, over-cap ones excluded).
    pub connections_open: Gauge,
    /// Open connections that have not yet shown who they are (`connections.rs`).
    pub connections_unauthenticated: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    /// Reads of large states admitted and not yet answered (`load_shedding::ReadBudget`).
    pub large_reads_in_flight: Gauge,
    /// KiB those reads hold of the node's budget.
    pub read_kib_in_flight: Gauge,
    /// Large reads that waited for a budget.
    pub large_reads_waited: Counter,
    request_bytes_refused: Family<ReasonLabels, Counter>,
    /// Foreground latency, as admission control of background work sees it.
    pub foreground: crate::admission::Foreground,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dynamokv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by operation and outcome (ok, or the error code the client got)",
            requests.clone(),
        );
        let latency: Family<LatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Request latency by operation and this node's role in it",
            Unit::Seconds,
            latency.clone(),
        );
        let quorum_failures = Family::<OpLabels, Counter>::default();
        registry.register(
            "quorum_failures",
            "Requests that could not reach their R or W replicas",
            quorum_failures.clone(),
        );
        let versions_per_read = Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 25.0, 100.0]);
        registry.register(
            "versions_per_read",
            "Versions (siblings) a get returned; 0 for a key that does not exist",
            versions_per_read.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let read_repairs = counter(
            &mut registry,
            "read_repairs",
            "Replicas sent a newer state after a get found them stale",
        );
        let truncations = counter(
            &mut registry,
            "vector_clock_truncations",
            "Version-vector entries dropped for max_vector_entries",
        );
        let retired_evicted = counter(
            &mut registry,
            "retired_writes_evicted",
            "Ids of superseded writes forgotten for the per-key cap",
        );
        let quarantined = counter(
            &mut registry,
            "records_quarantined",
            "Stored records that did not decode, moved aside (the key is restored from its replicas)",
        );
        let wal_syncs = counter(
            &mut registry,
            "wal_syncs",
            "fsyncs of the write-ahead log made for synced writes",
        );
        let synced_writes = counter(
            &mut registry,
            "synced_writes",
            "Writes acknowledged only after an fsync of the write-ahead log",
        );
        let overloaded = Family::<CapLabels, Counter>::default();
        registry.register(
            "overloaded",
            "Requests refused because the node was at a cap (requests in flight, or connections)",
            overloaded.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "Connections refused at the TLS handshake, by reason (unknown_ca, expired, bad_certificate, timeout, other)",
            tls_handshake_failures.clone(),
        );
        let access_refused = Family::<AccessLabels, Counter>::default();
        registry.register(
            "access_refused",
            "Calls refused by access control: service client (Kv, Admin) or node (the node-to-node service); reason unauthenticated or permission_denied",
            access_refused.clone(),
        );
        let tls_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate this node serves (node), or the first of its CAs (ca), stops being valid, in seconds since the epoch",
            tls_expiry.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Client requests (Kv and Admin) in flight",
            requests_in_flight.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Accepted connections open, not counting those refused over the cap",
            connections_open.clone(),
        );
        let connections_unauthenticated = Gauge::default();
        registry.register(
            "connections_unauthenticated",
            "Open connections that have not yet authenticated (TLS handshake, first request)",
            connections_unauthenticated.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the node closed: unauthenticated_timeout, idle_timeout, or to make room for a new one (source, unauthenticated, connections: the cap reached)",
            connections_closed.clone(),
        );
        let large_reads_in_flight = Gauge::default();
        registry.register(
            "large_reads_in_flight",
            "Reads of states of 1 MiB or more admitted and not yet answered",
            large_reads_in_flight.clone(),
        );
        let read_kib_in_flight = Gauge::default();
        registry.register(
            "read_kib_in_flight",
            "KiB of large states being read and answered",
            read_kib_in_flight.clone(),
        );
        let large_reads_waited = counter(
            &mut registry,
            "large_reads_waited",
            "Reads of large states that waited for the caller's or the node's read budget",
        );
        let request_bytes_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "requests_refused_before_decoding",
            "Requests refused before their body was read or while it was: too_large, bytes_in_flight (the node's budget), body_timeout",
            request_bytes_refused.clone(),
        );
        let peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_up",
            "Whether this node can reach the peer (1) or marked it down after it failed to answer (0)",
            peer_up.clone(),
        );
        let hints = HintMetrics::default();
        registry.register(
            "hints_queued",
            "Hints this node holds for replicas it could not reach (hinted handoff)",
            hints.queued.clone(),
        );
        registry.register_with_unit(
            "hint_oldest_age",
            "Age of the oldest hint this node holds",
            Unit::Seconds,
            hints.oldest_age_seconds.clone(),
        );
        registry.register(
            "hints_stored",
            "Hints stored here for other replicas",
            hints.stored.clone(),
        );
        registry.register(
            "hints_delivered",
            "Hints delivered to their replica (and then deleted here)",
            hints.delivered.clone(),
        );
        let anti_entropy = AntiEntropyMetrics::default();
        registry.register(
            "anti_entropy_exchanges",
            "Merkle tree comparisons with another replica",
            anti_entropy.exchanges.clone(),
        );
        registry.register(
            "anti_entropy_keys_compared",
            "Keys compared one by one under Merkle leaves that differed",
            anti_entropy.keys_compared.clone(),
        );
        registry.register(
            "anti_entropy_keys_repaired",
            "Keys whose versions anti-entropy exchanged between replicas",
            anti_entropy.keys_repaired.clone(),
        );
        let membership = MembershipMetrics::default();
        for (name, help, g) in [
            (
                "ring_version",
                "Version of the ring this node routes by (bumped by every committed topology change)",
                &membership.ring_version,
            ),
            (
                "members",
                "Members of the ring this node routes by",
                &membership.members,
            ),
            (
                "handover",
                "1 while partitions are handed over to new replicas after a topology change",
                &membership.handover,
            ),
            (
                "transfers_pending",
                "Partitions this node still has to hand to their new replicas",
                &membership.transfers_pending,
            ),
            (
                "partitions_to_drop",
                "Partitions this node holds data of but no longer replicates",
                &membership.partitions_to_drop,
            ),
        ] {
            registry.register(name, help, g.clone());
        }
        for (name, help, c) in [
            (
                "keys_transferred",
                "Keys this node sent to new replicas of their partitions (key-range transfer)",
                &membership.keys_transferred,
            ),
            (
                "keys_dropped",
                "Keys dropped here after their partition's current replicas confirmed holding them",
                &membership.keys_dropped,
            ),
            (
                "gossip_exchanges",
                "Membership gossip exchanges this node started that changed its view",
                &membership.gossip_exchanges,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        let tombstones_reaped = counter(
            &mut registry,
            "tombstones_reaped",
            "Tombstones removed here once every replica of the key held them",
        );
        let background_paused = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "background_paused",
            "Times a background worker paused because foreground latency was above the bound",
            background_paused.clone(),
        );
        for worker in crate::admission::WORKERS {
            drop(background_paused.get_or_create(&WorkerLabels { worker }));
        }
        // Series that exist from the start, at zero, so dashboards and alerts see them before
        // the first request (a family only shows the label sets created in it).
        for (op, role) in [
            ("get", Role::Coordinator),
            ("put", Role::Coordinator),
            ("delete", Role::Coordinator),
            ("put", Role::Forwarder),
            ("delete", Role::Forwarder),
            ("read", Role::Replica),
            ("merge", Role::Replica),
        ] {
            drop(latency.get_or_create(&LatencyLabels {
                op,
                role: role.as_str(),
            }));
        }
        for op in ["get", "put", "delete"] {
            drop(requests.get_or_create(&RequestLabels { op, outcome: "ok" }));
            drop(quorum_failures.get_or_create(&OpLabels { op }));
        }
        Metrics {
            registry,
            requests,
            latency,
            quorum_failures,
            versions_per_read,
            read_repairs,
            truncations,
            retired_evicted,
            quarantined,
            wal_syncs,
            synced_writes,
            peer_up,
            hints,
            anti_entropy,
            membership,
            tombstones_reaped,
            background_paused,
            overloaded,
            tls_handshake_failures,
            access_refused,
            tls_expiry,
            requests_in_flight,
            connections_open,
            connections_unauthenticated,
            connections_closed,
            large_reads_in_flight,
            read_kib_in_flight,
            large_reads_waited,
            request_bytes_refused,
            foreground: crate::admission::Foreground::default(),
        }
    }

    /// Records a request refused at cap `cap` ("requests" or "connections").
    pub fn overloaded(&self, cap: &'static str) {
        self.overloaded.get_or_create(&CapLabels { cap }).inc();
    }

    /// Records a connection the node closed, and why.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records a request refused before or while its body was read, and why.
    pub fn request_refused_early(&self, reason: &'static str) {
        self.request_bytes_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records a connection refused at the TLS handshake.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records a call refused by access control.
    pub fn access_refused(&self, service: &'static str, reason: &'static str) {
        self.access_refused
            .get_or_create(&AccessLabels { service, reason })
            .inc();
    }

    /// Records when `certificate` ("node" or "ca") stops being valid (seconds since the epoch).
    pub fn tls_certificate_expires(&self, certificate: &'static str, not_after: i64) {
        self.tls_expiry
            .get_or_create(&CertificateLabels { certificate })
            .set(not_after);
    }

    /// Records that background worker `worker` paused for foreground latency.
    pub fn background_paused(&self, worker: &'static str) {
        self.background_paused
            .get_or_create(&WorkerLabels { worker })
            .inc();
    }

    /// Pauses of every background worker since start.
    pub fn background_pauses(&self) -> u64 {
        crate::admission::WORKERS
            .iter()
            .map(|&worker| {
                self.background_paused
                    .get_or_create(&WorkerLabels { worker })
                    .get()
            })
            .sum()
    }

    /// Records whether the peer at `address` is reachable, as this node sees it.
    pub fn peer_reachable(&self, address: &str, up: bool) {
        self.peer_up
            .get_or_create(&PeerLabels {
                peer: address.to_string(),
            })
            .set(i64::from(up));
    }

    /// Records a client request: its outcome (`"ok"` or an error code) and latency.
    pub fn request(&self, op: &'static str, role: Role, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, outcome })
            .inc();
        self.latency(op, role, took);
        self.foreground.record(took);
        if outcome == "QUORUM_NOT_REACHED" {
            self.quorum_failures.get_or_create(&OpLabels { op }).inc();
        }
    }

    /// Records the latency of a step (a replica's read or merge).
    pub fn latency(&self, op: &'static str, role: Role, took: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                op,
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records how many versions a get returned.
    pub fn versions_read(&self, versions: usize) {
        self.versions_per_read.observe(versions as f64);
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What `/health` reports.
#[derive(Debug, Clone)]
pub struct HealthInfo {
    pub node_id: String,
    pub grpc_addr: SocketAddr,
    /// The file holding the secret both pages require, if any (`metrics_token_file`).
    pub token_file: Option<PathBuf>,
}

/// The secret in `path` (`metrics_token_file`): its text without surrounding whitespace. An
/// empty file is refused: it would let in whoever sends an empty token.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read metrics_token_file {}: {e}", path.display()),
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("metrics_token_file {} is empty", path.display()),
        ));
    }
    Ok(token.to_string())
}

/// The refusal of a request without the bearer token of `metrics_token_file`, when one is
/// set. The file is read at each request, so a rotated secret takes effect at once.
fn refusal(s: &HttpState, headers: &HeaderMap) -> Option<Response> {
    use sha2::{Digest as _, Sha256};
    let path = s.health.token_file.as_ref()?;
    let want = match read_token(path) {
        Ok(want) => want,
        Err(e) => {
            tracing::error!(error = %e, "refusing a metrics request");
            return Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the node cannot read its metrics_token_file\n",
                )
                    .into_response(),
            );
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compared as digests, in time that does not depend on where they differ.
    let same = given.is_some_and(|g| {
        Sha256::digest(g.as_bytes())
            .iter()
            .zip(Sha256::digest(want.as_bytes()).iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if same {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"dynamokv\"")],
            "this endpoint needs `Authorization: Bearer <the secret in the node's metrics_token_file>`\n",
        )
            .into_response(),
    )
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    health: Arc<HealthInfo>,
}

async fn metrics_page(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&s, &headers) {
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn health_page(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&s, &headers) {
        return refused;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ok\",\"node_id\":{:?},\"grpc\":\"{}\"}}\n",
            s.health.node_id, s.health.grpc_addr
        ),
    )
        .into_response()
}

/// Serves `/metrics` and `/health` on `listener` until `shutdown` fires.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: HealthInfo,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .with_state(HttpState {
            metrics,
            health: Arc::new(health),
        });
    // Like the gRPC port's connections: answers leave at once, without waiting for ACKs.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a metrics connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_requests_show_in_the_text_format() {
        let m = Metrics::new();
        m.request("get", Role::Coordinator, "ok", Duration::from_micros(300));
        m.request(
            "put",
            Role::Coordinator,
            "QUORUM_NOT_REACHED",
            Duration::from_millis(3),
        );
        m.versions_read(2);
        m.read_repairs.inc();
        let text = m.encode();
        for want in [
            "dynamokv_requests_total{op=\"get\",outcome=\"ok\"} 1",
            "dynamokv_request_duration_seconds_count{op=\"get\",role=\"coordinator\"} 1",
            "dynamokv_request_duration_seconds_bucket{le=\"0.0004\",op=\"get\",role=\"coordinator\"} 1",
            "dynamokv_quorum_failures_total{op=\"put\"} 1",
            "dynamokv_versions_per_read_bucket{le=\"2.0\"} 1",
            "dynamokv_versions_per_read_bucket{le=\"1.0\"} 0",
            "dynamokv_read_repairs_total 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
