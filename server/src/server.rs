//! Starting and stopping a node: open storage, build the coordinator, serve gRPC until the
//! shutdown token fires, then finish in-flight requests and flush storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_proto::v1::admin_server::AdminServer;
use dynamokv_proto::v1::kv_server::KvServer;
use dynamokv_proto::v1::replica_server::ReplicaServer;

use crate::access_control::AccessControl;
use crate::background::Background;
use crate::config::{Config, ConfigError, Engine};
use crate::connections::Connections;
use crate::coordinator::Coordinator;
use crate::guard::{Callers, Guarded};
use crate::intake::{Intake, IntakeLayer, IntakeLimits};
use crate::load_shedding::LoadShedding;
use crate::membership::Membership;
use crate::metrics::{HealthInfo, Metrics};
use crate::peers::Peers;
use crate::replica::LocalReplica;
use crate::service::{AdminService, KvService, ReplicaService};
use crate::storage::{MemoryStorage, Storage, StorageError};
use crate::tls::NodeTls;

/// A node that could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Membership(#[from] crate::membership::MembershipError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(String),
    #[error("the rocksdb engine is not compiled in (build with the `rocksdb` feature)")]
    NoRocksdb,
    #[error("TLS: {0}")]
    Tls(String),
}

fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, ServerError> {
    match config.engine {
        Engine::Memory => Ok(Arc::new(MemoryStorage::default())),
        #[cfg(feature = "rocksdb")]
        Engine::Rocksdb => Ok(Arc::new(crate::storage::RocksStorage::open_with_cache(
            &config.data_dir,
            config.sync_writes,
            config.block_cache_mb << 20,
        )?)),
        #[cfg(not(feature = "rocksdb"))]
        Engine::Rocksdb => Err(ServerError::NoRocksdb),
    }
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// The address it listens on (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Where it serves `/metrics` and `/health`, if it does.
    pub metrics_addr: Option<SocketAddr>,
    pub node_id: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl NodeHandle {
    /// Stops the node gracefully and waits for it.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        self.task
            .await
            .unwrap_or_else(|e| panic!("node task panicked: {e}"))
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Binds `config.listen` and starts serving in the background.
pub async fn start(config: Config) -> Result<NodeHandle, ServerError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    start_on(config, listener).await
}

/// Starts serving on an already bound listener (tests bind port 0 first, to learn every
/// node's address before building the membership).
pub async fn start_on(config: Config, listener: TcpListener) -> Result<NodeHandle, ServerError> {
    let shutdown = CancellationToken::new();
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let node_id = config.node_id.clone();
    let ready = prepare(&config, addr)?;
    let metrics_addr = ready.metrics_addr;
    let token = shutdown.clone();
    let task = tokio::spawn(async move { serve(ready, listener, token).await });
    Ok(NodeHandle {
        addr,
        metrics_addr,
        node_id,
        shutdown,
        task,
    })
}

/// Runs a node on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    Prepared::new(&config, listener)?.serve(shutdown).await
}

/// A node whose storage is open and whose listener is bound, not yet serving. `main` prints
/// its "listening" line only once this exists, so scripts never see a node that cannot start.
#[derive(Debug)]
pub struct Prepared {
    ready: Ready,
    listener: TcpListener,
    pub addr: SocketAddr,
    /// Where it will serve `/metrics` and `/health`, if configured to.
    pub metrics_addr: Option<SocketAddr>,
}

impl Prepared {
    pub fn new(config: &Config, listener: TcpListener) -> Result<Prepared, ServerError> {
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let ready = prepare(config, addr)?;
        Ok(Prepared {
            metrics_addr: ready.metrics_addr,
            ready,
            listener,
            addr,
        })
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        serve(self.ready, self.listener, shutdown).await
    }
}

#[derive(Debug)]
struct Ready {
    local: Arc<LocalReplica>,
    coordinator: Arc<Coordinator>,
    /// How long shutdown waits for writes and repairs still under way.
    drain_deadline: Duration,
    kv: KvService,
    replica: ReplicaService,
    admin: AdminService,
    /// Who may call what, for the standard services (health, reflection).
    access: Arc<AccessControl>,
    metrics: Arc<Metrics>,
    /// Ends the peers' exchange streams at shutdown.
    streams_stop: CancellationToken,
    /// The background workers: hint delivery, anti-entropy, tombstone reaping.
    background: Background,
    /// Bound at preparation, so that a busy port stops the node before it serves.
    metrics_listener: Option<std::net::TcpListener>,
    /// The node's TLS identity, when it serves TLS.
    tls: Option<Arc<NodeTls>>,
    connections: Arc<Connections>,
    intake: Arc<Intake>,
    max_request_bytes: usize,
    max_streams_per_connection: u32,
    tls_reload: Duration,
    metrics_addr: Option<SocketAddr>,
    /// The secret `/metrics` and `/health` require, if any (see `metrics_token_file`).
    metrics_token_file: Option<std::path::PathBuf>,
    node_id: String,
    addr: SocketAddr,
}

fn prepare(config: &Config, addr: SocketAddr) -> Result<Ready, ServerError> {
    config.validate()?;
    let advertised = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let (metrics_listener, metrics_addr) = match config.metrics_listen {
        None => (None, None),
        Some(want) => {
            let bind_err = |source| ServerError::MetricsBind { addr: want, source };
            let l = std::net::TcpListener::bind(want).map_err(bind_err)?;
            l.set_nonblocking(true).map_err(bind_err)?;
            let bound = l.local_addr().map_err(bind_err)?;
            (Some(l), Some(bound))
        }
    };
    // Where the node really listens (a listener handed in may not be `config.listen`).
    config.check_exposure(addr, metrics_addr)?;
    if let Some(path) = &config.metrics_token_file {
        crate::metrics::read_token(path).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    let metrics = Arc::new(Metrics::new());
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(
            NodeTls::load(
                files,
                &config.cluster.name,
                &config.node_id,
                Arc::clone(&metrics),
            )
            .map_err(ServerError::Tls)?,
        ),
    };
    let streams_stop = CancellationToken::new();
    let store = open_storage(config)?;
    let local = Arc::new(LocalReplica::open(
        Arc::clone(&store),
        &config.node_id,
        config.cluster.partitions,
        config.history_limits(),
        config.sibling_limits(),
        Arc::clone(&metrics),
    )?);
    // After the replica's check that the store is this node's.
    let membership = Membership::open(config, &advertised, Some(store))?;
    let mut peers = Peers::new(config.replica_timeout()).with_metrics(Arc::clone(&metrics));
    if let Some(tls) = &tls {
        peers = peers.with_tls(tls.client.clone());
    }
    let peers = Arc::new(peers);
    for m in membership.state().members() {
        if m.id != config.node_id {
            peers.know(&m.address);
        }
    }
    let background = Background::new(
        Arc::clone(&local),
        Arc::clone(&peers),
        membership.clone(),
        Arc::clone(&metrics),
        config,
    );
    let reads = Arc::new(crate::load_shedding::ReadBudget::new(
        &config.node_id,
        config.limits.max_read_bytes_in_flight,
        config.limits.max_read_bytes_per_caller,
        Arc::clone(&metrics),
    ));
    let coordinator = Arc::new(
        Coordinator::new(
            membership.clone(),
            Arc::clone(&local),
            peers,
            config.limits(),
            config.replica_timeout(),
            config.cluster.sync_replicas,
            Arc::clone(&metrics),
        )
        .with_read_budget(reads),
    );
    tracing::info!(
        node_id = %config.node_id,
        %addr,
        actor = %local.actor(),
        incarnation = local.incarnation(),
        engine = ?config.engine,
        data_dir = %config.data_dir.display(),
        "node ready"
    );
    let shedding = Arc::new(LoadShedding::new(
        &config.node_id,
        config.limits.max_concurrent_requests,
        Arc::clone(&metrics),
    ));
    let access = Arc::new(
        AccessControl::new(
            tls.is_some(),
            &config.cluster.name,
            &config.security.superusers,
            Duration::from_millis(config.security.cache_ms),
            membership,
            Arc::clone(&coordinator),
        )
        .with_limits(
            config.security.cache_max_users,
            config.security.auth_failure_limit,
            Duration::from_millis(config.security.auth_failure_window_ms),
        ),
    );
    Ok(Ready {
        kv: KvService::new(
            Arc::clone(&coordinator),
            Arc::clone(&access),
            Arc::clone(&shedding),
        ),
        admin: AdminService::new(
            Arc::clone(&coordinator),
            Arc::clone(&local),
            &background,
            Arc::clone(&metrics),
            Arc::clone(&access),
            shedding,
        ),
        connections: Connections::new(config.connection_limits(), Arc::clone(&metrics)),
        intake: Intake::new(
            &config.node_id,
            tls.is_some(),
            Arc::clone(&access),
            IntakeLimits {
                max_request_bytes: config.max_request_bytes(),
                max_node_message_bytes: MAX_MESSAGE_BYTES,
                body_timeout: Duration::from_millis(config.limits.request_body_timeout_ms),
            },
            config.limits.max_request_bytes_in_flight,
            Arc::clone(&metrics),
        ),
        max_request_bytes: config.max_request_bytes(),
        max_streams_per_connection: config.limits.max_streams_per_connection,
        replica: ReplicaService::new(
            config.node_id.clone(),
            Arc::clone(&local),
            Arc::clone(&coordinator),
            Arc::clone(&metrics),
            streams_stop.clone(),
            Arc::clone(&access),
        ),
        access,
        tls,
        tls_reload: Duration::from_millis(
            config.tls.as_ref().map_or(2_000, |t| t.reload_interval_ms),
        ),
        streams_stop,
        background,
        metrics,
        metrics_listener,
        metrics_addr,
        metrics_token_file: config.metrics_token_file.clone(),
        node_id: config.node_id.clone(),
        addr,
        coordinator,
        drain_deadline: config.replica_timeout() * 2,
        local,
    })
}

async fn serve(
    ready: Ready,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    // The metrics endpoint outlives the gRPC server a little, until shutdown has drained.
    let http_stop = CancellationToken::new();
    let http = match ready.metrics_listener {
        None => None,
        Some(l) => {
            let listener = TcpListener::from_std(l).map_err(|source| ServerError::MetricsBind {
                addr: ready.metrics_addr.unwrap_or(ready.addr),
                source,
            })?;
            let info = HealthInfo {
                node_id: ready.node_id.clone(),
                grpc_addr: ready.addr,
                token_file: ready.metrics_token_file.clone(),
            };
            let metrics = Arc::clone(&ready.metrics);
            let stop = http_stop.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve_http(listener, metrics, info, stop).await {
                    tracing::error!(error = %e, "metrics endpoint failed");
                }
            }))
        }
    };
    // The standard gRPC health service (for grpc_health_probe and load balancers) and server
    // reflection (for grpcurl), on the gRPC port.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<ReplicaServer<ReplicaService>>().await;
    // Both versions of reflection: v1, and v1alpha that older grpcurl and tools still ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dynamokv_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    // On a TLS node: health for TLS clients, reflection for users (see `guard`).
    let access = &ready.access;
    let health_service = Guarded::new(health_service, Arc::clone(access), Callers::TlsClients);
    let reflection_v1 = Guarded::new(reflection_v1, Arc::clone(access), Callers::Users);
    let reflection_v1alpha = Guarded::new(reflection_v1alpha, Arc::clone(access), Callers::Users);
    ready.background.start();
    if let Some(tls) = &ready.tls {
        tls.watch(ready.tls_reload, http_stop.clone());
    }
    let shutting_down = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        let streams_stop = ready.streams_stop.clone();
        let background_stop = ready.background.stop.clone();
        async move {
            shutdown.cancelled().await;
            streams_stop.cancel();
            background_stop.cancel();
            health.set_not_serving::<KvServer<KvService>>().await;
            health
                .set_not_serving::<ReplicaServer<ReplicaService>>()
                .await;
        }
    };
    ready.connections.run_reaper(http_stop.clone());
    let server = tonic::transport::Server::builder()
        // Streams one connection may hold open, and the headers of one request (16 KiB: a
        // token and a few metadata entries need far less).
        .max_concurrent_streams(ready.max_streams_per_connection)
        .http2_max_header_list_size(16 * 1024)
        // The caller is known, and the body bounded, before the body is read (`intake.rs`).
        .layer(IntakeLayer(Arc::clone(&ready.intake)))
        .add_service(health_service)
        .add_service(
            AdminServer::new(ready.admin).max_decoding_message_size(ready.max_request_bytes),
        )
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            KvServer::new(ready.kv)
                .max_decoding_message_size(ready.max_request_bytes)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ReplicaServer::new(ready.replica)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            crate::tls::accept(
                incoming(listener),
                ready.tls.clone(),
                Arc::clone(&ready.connections),
            ),
            shutting_down,
        );
    // Graceful shutdown waits for every connection to close, and a connection that never
    // sends a request (a client that connected and went quiet, a half-open socket) never
    // does: past the drain deadline the node stops waiting for them.
    let result = tokio::select! {
        r = server => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(ready.drain_deadline).await;
        } => {
            tracing::warn!(
                "connections still open {:?} after shutdown began: stopping without them",
                ready.drain_deadline
            );
            Ok(())
        }
    };
    // In-flight requests have finished; let the background workers end their batch and the
    // copies and repairs requests started finish too, then make what they wrote durable
    // before exiting.
    ready.background.wait(ready.drain_deadline).await;
    ready.coordinator.drain(ready.drain_deadline).await;
    let flushed = ready.local.flush();
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    tracing::info!("node stopped");
    result?;
    flushed?;
    Ok(())
}

/// How often an idle accepted connection is probed, so that connections of clients that
/// vanished (a machine powered off, a cable pulled) are closed rather than held forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connections accepted on `listener`, each with `TCP_NODELAY` and keepalive set.
///
/// The server builder's own `tcp_nodelay` applies only to listeners it binds itself, not to a
/// stream of connections handed to it; without `TCP_NODELAY` a response whose HTTP/2 frames
/// leave in several small writes waits for the client's delayed ACK, about 40 ms a hop.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let conn = accepted.next().await.unwrap().unwrap();
        assert!(
            conn.nodelay().unwrap(),
            "TCP_NODELAY not set on an accepted connection"
        );
        let sock = socket2::SockRef::from(&conn);
        assert!(sock.keepalive().unwrap(), "SO_KEEPALIVE not set");
    }
}
