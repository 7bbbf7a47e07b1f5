//! Node configuration: a TOML file holding every setting, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use dynamokv_common::limits::{
    DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_SIBLINGS, DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_WARN_OBJECT_BYTES, DEFAULT_WARN_SIBLINGS, MAX_MESSAGE_BYTES,
};
use dynamokv_common::ring::DEFAULT_PARTITIONS;
use dynamokv_common::versioning::{
    DEFAULT_HISTORY_HORIZON_MS, DEFAULT_MAX_RETIRED_WRITES, DEFAULT_MAX_VECTOR_ENTRIES,
    DEFAULT_RETIRED_GRACE_MS,
};
use dynamokv_common::{HistoryLimits, Limits};

/// Which storage engine holds the data (paper 4.1: pluggable local persistence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Durable, on disk (default).
    Rocksdb,
    /// Lost at exit; for tests.
    Memory,
}

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id: unique in the cluster and stable across restarts.
    pub node_id: String,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address other nodes and clients reach this node at; defaults to the bound address.
    pub advertise: Option<String>,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus) and `/health`; none by
    /// default. Port 0 picks a free port. Beyond loopback only with `metrics_token_file` (or
    /// `insecure`): what it shows (peers, request rates, errors) is no stranger's business.
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding a secret that `/metrics` and `/health` then require as `Authorization:
    /// Bearer <secret>` (Prometheus: `authorization: { credentials_file: ... }`). Read at every
    /// request, so it can be rotated in place.
    pub metrics_token_file: Option<PathBuf>,
    /// Serve without protection beyond loopback: plain text with no `[tls]`, or `/metrics`
    /// without `metrics_token_file`, on an address other machines may reach. Refused unless
    /// set (or `--insecure`): without TLS anyone who can connect reads and writes every key,
    /// calls the operator service and poses as a node.
    pub insecure: bool,
    /// Where the RocksDB engine keeps its files.
    pub data_dir: PathBuf,
    pub engine: Engine,
    /// RocksDB: fsync the write-ahead log on every write. Off, an acknowledged write survives a
    /// crash of the process (the log is in the OS page cache) and, with W >= 2, the loss of a
    /// whole machine (a node restarted after losing its unsynced log tail writes as a new actor,
    /// so it never reissues a version, and gets the lost writes back from the other replicas);
    /// on, it also survives power loss of every replica at once, at ~3.5 ms a write.
    pub sync_writes: bool,
    /// Threads serving requests; all cores when absent. Nodes sharing one machine (as
    /// `dynamokv dev` runs them) do better splitting the cores than each taking all of them.
    pub worker_threads: Option<usize>,
    /// RocksDB: size of the block cache (data blocks, indexes, Bloom filters), in MiB.
    pub block_cache_mb: usize,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    /// Deadline for a request to another replica, in milliseconds.
    pub replica_timeout_ms: u64,
    /// Version vectors longer than this lose their oldest entries, once those are older than
    /// `history_horizon_ms` (paper 4.4). At least N.
    pub max_vector_entries: usize,
    /// Superseded history younger than this is never forgotten (version-vector entries, ids of
    /// superseded writes), so a replica that catches up within it never sees a superseded or
    /// deleted value come back. A replica away for longer should be wiped before it rejoins.
    pub history_horizon_ms: u64,
    /// Background work that heals replicas: hinted handoff, anti-entropy, tombstone reaping,
    /// and the admission control that holds it back when requests slow down.
    pub background: BackgroundConfig,
    /// TLS on every connection, mutual between nodes (issue 11). Absent: plain text.
    pub tls: Option<TlsConfig>,
    /// Who may do what, when TLS is on.
    pub security: SecurityConfig,
}

/// TOML section `[tls]`: the files of this node's TLS identity. With it, the node accepts and
/// makes TLS connections only (a plain-text client is answered "this node requires TLS"),
/// other nodes must present a certificate of this cluster naming a member, and clients must
/// authenticate (a client certificate from the same CA, or a token).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster's CA certificate (PEM; may hold several CAs while moving to a new one).
    pub ca: PathBuf,
    /// This node's certificate chain (PEM), issued by the CA, naming
    /// `dynamokv://<cluster>/node/<node_id>` (see `dynamokv cert node`).
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// How often the three files are read again, in milliseconds; when they change, new
    /// connections use the new certificates (no restart).
    #[serde(default = "default_reload_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_ms() -> u64 {
    2_000
}

/// TOML section `[security]`: access control, in force when `[tls]` is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Users with every permission on every key, whatever the stored grants say: how the first
    /// administrator gets in (with a client certificate naming the user) to create the others.
    pub superusers: Vec<String>,
    /// How long a node trusts what it read of a user (its token hashes and grants), in
    /// milliseconds, counted from when the read began: a revoked token or permission stops
    /// working on every node within this time of the revoke.
    pub cache_ms: u64,
    /// The most users a node caches, and as many names of users that do not exist (a token
    /// naming one is refused from the cache); the oldest entry goes first.
    pub cache_max_users: usize,
    /// Failed token authentications from one source (an IPv4 address, an IPv6 /64) within
    /// `auth_failure_window_ms` past which that source's tokens naming users this node does not
    /// know are refused at once, without reading the cluster, until the window ends.
    pub auth_failure_limit: u32,
    pub auth_failure_window_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            superusers: Vec::new(),
            cache_ms: 2_000,
            cache_max_users: crate::user_cache::DEFAULT_CACHE_MAX_USERS,
            auth_failure_limit: crate::user_cache::DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_window_ms: crate::user_cache::DEFAULT_AUTH_FAILURE_WINDOW_MS,
        }
    }
}

/// Hinted handoff (paper 4.6), anti-entropy (4.7), tombstone reaping and admission control of
/// all three (6.5). TOML section `[background]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackgroundConfig {
    /// How often hint delivery looks for owners that answer again, in milliseconds. Delivery
    /// to an owner that does not answer backs off from this to 30 s, and never gives up.
    pub handoff_interval_ms: u64,
    /// How often this node compares its Merkle trees with one replica peer (taking the peers
    /// in turn), in milliseconds. 0 turns anti-entropy off.
    pub anti_entropy_interval_ms: u64,
    /// A tombstone is removed once it is older than this and every replica of its key holds
    /// it, in milliseconds. Keep it longer than any replica may stay away or any hint may wait:
    /// a replica that comes back after its tombstones were reaped could bring deleted values
    /// back. 0 never reaps.
    pub tombstone_grace_ms: u64,
    /// How often this node walks its index of deleted keys for tombstones to reap, in
    /// milliseconds.
    pub reap_interval_ms: u64,
    /// Admission control: while the 99th percentile of this node's foreground request
    /// latency over the last second is above this, in milliseconds, background work pauses.
    pub latency_bound_ms: u64,
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        BackgroundConfig {
            handoff_interval_ms: 1_000,
            anti_entropy_interval_ms: 30_000,
            tombstone_grace_ms: 24 * 60 * 60 * 1000,
            reap_interval_ms: 60_000,
            latency_bound_ms: 50,
        }
    }
}

/// The cluster this node belongs to. Membership is learnt by gossip and kept in the data
/// directory; `seeds` (or `members`, a static list all nodes share) say where it starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub name: String,
    /// Q, the number of equal partitions; a power of two fixed when the cluster is created.
    pub partitions: u32,
    /// Replication factor; defaults to 3, or 1 for a node without configured members.
    pub n: Option<u32>,
    /// Read quorum; defaults to 2, or 1 for a node without configured members.
    pub r: Option<u32>,
    /// Write quorum; defaults to 2, or 1 for a node without configured members.
    pub w: Option<u32>,
    /// How many of a write's W acknowledging replicas fsync their write-ahead log before it is
    /// acknowledged (paper 6.1), unless the request says otherwise. 0 (default): the log is
    /// written but not synced, which survives a crash of the process, not a power cut of every
    /// replica at once. Synced writes arriving together share one fsync (group commit).
    pub sync_replicas: u32,
    /// A static membership, every member and this node included, that every node configured
    /// with the same list starts from. Empty: the node starts from `seeds`, or alone.
    pub members: Vec<MemberConfig>,
    /// Addresses (`host:port`) of nodes of the cluster to join and to gossip with now and then,
    /// so that nodes started from the same seeds never form separate rings. Empty (and no
    /// `members`): the node starts as a cluster of one.
    pub seeds: Vec<String>,
    /// This node's failure domain (rack, zone); preference lists spread over zones.
    pub zone: Option<String>,
    /// This node's capacity weight: a node of weight 2 owns twice the partitions.
    pub weight: Option<u32>,
    /// How often a node gossips its membership view with a random peer, in milliseconds.
    pub gossip_interval_ms: u64,
    /// How often a node checks for partitions to hand to new replicas or to drop after a
    /// topology change, in milliseconds.
    pub transfer_interval_ms: u64,
    /// How often a node makes a new key to sign version contexts with, in milliseconds (7
    /// days; see `context_keys.rs`).
    pub context_key_rotation_ms: u64,
    /// How long contexts signed with a node's previous key stay valid after it made its next
    /// one, in milliseconds (7 days): a client holding a context longer must read the key
    /// again (INVALID_CONTEXT says so).
    pub context_key_grace_ms: u64,
}

/// The default `context_key_rotation_ms` and `context_key_grace_ms`: seven days.
pub const DEFAULT_CONTEXT_KEY_PERIOD_MS: u64 = 7 * 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: String,
    pub address: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Sibling guardrails (as Riak's): past `max_siblings` live values, or `max_object_bytes` of
    /// values in all, a write that would grow the key further is refused with an error that
    /// says to read and resolve it (a write that supersedes siblings is always accepted). The
    /// `warn_` thresholds log a warning.
    pub max_siblings: usize,
    pub warn_siblings: usize,
    pub max_object_bytes: usize,
    pub warn_object_bytes: usize,
    /// Client requests (the Kv and Admin services) in flight at once on this node; past it a
    /// request is refused at once with OVERLOADED ("retry later"), not queued. Node-to-node
    /// calls are not counted.
    pub max_concurrent_requests: usize,
    /// Connections open at once. Past it the oldest connection that has not yet authenticated
    /// is closed for the new one; when every one has, the new one is answered OVERLOADED and
    /// closed (see `connections.rs`).
    pub max_connections: usize,
    /// Connections that have not yet shown who they are (TLS handshake under way, no request
    /// authenticated yet); past it the oldest of them is closed for the new one.
    pub max_unauthenticated_connections: usize,
    /// The same, from one source address.
    pub max_unauthenticated_per_source: usize,
    /// How long a connection has to finish its handshake and make a request that
    /// authenticates (on a plain-text node: any request), in milliseconds.
    pub unauthenticated_timeout_ms: u64,
    /// A client connection that sends nothing for this long is closed, in milliseconds
    /// (connections of member nodes are not).
    pub idle_timeout_ms: u64,
    /// HTTP/2 streams (requests) one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// The largest request message the client-facing services decode, in bytes. Absent: the
    /// value limit plus the key limit plus 64 KiB (a put: its value, key and context).
    pub max_request_bytes: Option<usize>,
    /// Bytes of client request bodies a node receives at once, all connections together;
    /// past it a request is refused with OVERLOADED. Member nodes have a budget of their own.
    pub max_request_bytes_in_flight: usize,
    /// The same, for one connection.
    pub max_request_bytes_per_connection: usize,
    /// How long a request's body may take to arrive after its headers, in milliseconds.
    pub request_body_timeout_ms: u64,
    /// Bytes of large states (1 MiB or more) one caller may be reading at once; its next large
    /// read waits its turn, until its deadline (`load_shedding::ReadBudget`). At least
    /// `max_object_bytes`.
    pub max_read_bytes_per_caller: usize,
    /// The same, all callers and nodes together.
    pub max_read_bytes_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: "node-1".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise: None,
            metrics_listen: None,
            metrics_token_file: None,
            insecure: false,
            data_dir: PathBuf::from("dynamokv-data"),
            engine: Engine::Rocksdb,
            sync_writes: false,
            block_cache_mb: 128,
            worker_threads: None,
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            replica_timeout_ms: 2_000,
            max_vector_entries: DEFAULT_MAX_VECTOR_ENTRIES,
            history_horizon_ms: DEFAULT_HISTORY_HORIZON_MS,
            background: BackgroundConfig::default(),
            tls: None,
            security: SecurityConfig::default(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "dynamokv".to_string(),
            partitions: DEFAULT_PARTITIONS,
            n: None,
            r: None,
            w: None,
            sync_replicas: 0,
            members: Vec::new(),
            seeds: Vec::new(),
            zone: None,
            weight: None,
            gossip_interval_ms: 1_000,
            transfer_interval_ms: 1_000,
            context_key_rotation_ms: DEFAULT_CONTEXT_KEY_PERIOD_MS,
            context_key_grace_ms: DEFAULT_CONTEXT_KEY_PERIOD_MS,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_siblings: DEFAULT_MAX_SIBLINGS,
            warn_siblings: DEFAULT_WARN_SIBLINGS,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            warn_object_bytes: DEFAULT_WARN_OBJECT_BYTES,
            max_concurrent_requests: 1024,
            max_connections: 4096,
            max_unauthenticated_connections: 512,
            max_unauthenticated_per_source: 64,
            unauthenticated_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_streams_per_connection: 256,
            max_request_bytes: None,
            max_request_bytes_in_flight: 256 << 20,
            max_request_bytes_per_connection: 64 << 20,
            request_body_timeout_ms: 10_000,
            max_read_bytes_per_caller: 32 << 20,
            max_read_bytes_in_flight: 128 << 20,
        }
    }
}

/// A configuration that cannot start a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// N, R and W after defaults, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorums {
    pub n: u32,
    pub r: u32,
    pub w: u32,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.limits.max_key_bytes,
            max_value_bytes: self.limits.max_value_bytes,
        }
    }

    pub fn replica_timeout(&self) -> Duration {
        Duration::from_millis(self.replica_timeout_ms)
    }

    /// The largest client request message decoded (see `LimitsConfig::max_request_bytes`).
    pub fn max_request_bytes(&self) -> usize {
        self.limits
            .max_request_bytes
            .unwrap_or(self.limits.max_value_bytes + self.limits.max_key_bytes + (64 << 10))
            .min(MAX_MESSAGE_BYTES)
    }

    /// The caps on connections (see `connections.rs`).
    pub fn connection_limits(&self) -> crate::connections::ConnectionLimits {
        let l = &self.limits;
        crate::connections::ConnectionLimits {
            max_connections: l.max_connections,
            max_unproven: l.max_unauthenticated_connections,
            max_unproven_per_source: l.max_unauthenticated_per_source,
            unproven_timeout: Duration::from_millis(l.unauthenticated_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            bytes_per_connection: l.max_request_bytes_per_connection,
        }
    }

    /// How much superseded history replicas keep.
    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            max_vector_entries: self.max_vector_entries,
            horizon_ms: self.history_horizon_ms,
            max_retired_writes: DEFAULT_MAX_RETIRED_WRITES,
            retired_grace_ms: DEFAULT_RETIRED_GRACE_MS.min(self.history_horizon_ms),
        }
    }

    /// How many siblings and bytes a key's state may hold, and when to warn.
    pub fn sibling_limits(&self) -> crate::replica::SiblingLimits {
        crate::replica::SiblingLimits {
            max_siblings: self.limits.max_siblings,
            warn_siblings: self.limits.warn_siblings,
            max_object_bytes: self.limits.max_object_bytes,
            warn_object_bytes: self.limits.warn_object_bytes,
        }
    }

    /// N, R, W with defaults applied, refusing impossible combinations.
    pub fn quorums(&self) -> Result<Quorums, ConfigError> {
        if self.cluster.members.is_empty() {
            // Membership is dynamic: N is capped by the ring's members when requests come.
            // Checked as the cluster will be once it has grown to N nodes; returned as a node
            // alone uses them.
            let q = crate::membership::quorums_for(&self.cluster, 3);
            if q.n == 0 {
                return Err(ConfigError::Invalid("cluster.n must be at least 1".into()));
            }
            for (name, v) in [("r", q.r), ("w", q.w)] {
                if v == 0 || v > q.n {
                    return Err(ConfigError::Invalid(format!(
                        "cluster.{name} = {v} must be between 1 and cluster.n = {}",
                        q.n
                    )));
                }
            }
            return Ok(crate::membership::quorums_for(&self.cluster, 1));
        }
        let single = self.cluster.members.is_empty();
        let d = if single {
            1
        } else {
            3.min(self.cluster.members.len() as u32)
        };
        let dq = if single { 1 } else { 2.min(d) };
        let n = self.cluster.n.unwrap_or(d);
        let r = self.cluster.r.unwrap_or(dq);
        let w = self.cluster.w.unwrap_or(dq);
        let members = self.cluster.members.len().max(1) as u32;
        if n == 0 || n > members {
            return Err(ConfigError::Invalid(format!(
                "cluster.n = {n} must be between 1 and the number of members ({members})"
            )));
        }
        for (name, v) in [("r", r), ("w", w)] {
            if v == 0 || v > n {
                return Err(ConfigError::Invalid(format!(
                    "cluster.{name} = {v} must be between 1 and cluster.n = {n}"
                )));
            }
        }
        Ok(Quorums { n, r, w })
    }

    /// Refuses to serve unprotected beyond loopback unless `insecure`: plain text (no
    /// `[tls]`) on `listen`, or `/metrics` without a token on `metrics_listen`.
    pub fn check_exposure(
        &self,
        listen: SocketAddr,
        metrics: Option<SocketAddr>,
    ) -> Result<(), ConfigError> {
        if self.insecure {
            return Ok(());
        }
        if self.tls.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "listen = {listen} is not a loopback address and [tls] is not configured: anyone who can connect could read and write every key, call the operator service and pose as a node. Configure [tls] (see `dynamokv cert`), listen on a loopback address, or pass --insecure (insecure = true) to serve plain text on a network only trusted machines reach"
            )));
        }
        if let Some(at) = metrics
            && self.metrics_token_file.is_none()
            && !at.ip().is_loopback()
        {
            return Err(ConfigError::Invalid(format!(
                "metrics_listen = {at} is not a loopback address: /metrics and /health would answer anyone (peers, request rates, errors). Set metrics_token_file to require a bearer token, listen on a loopback address, or pass --insecure (insecure = true)"
            )));
        }
        Ok(())
    }

    /// Checks what can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_exposure(self.listen, self.metrics_listen)?;
        if self.node_id.is_empty() {
            return Err(ConfigError::Invalid("node_id must not be empty".into()));
        }
        crate::merkle::check_partitions(self.cluster.partitions).map_err(ConfigError::Invalid)?;
        if self.worker_threads == Some(0) {
            return Err(ConfigError::Invalid(
                "worker_threads must be at least 1 (or absent: one per core)".into(),
            ));
        }
        let mut q = self.quorums()?;
        if self.cluster.members.is_empty() {
            q = crate::membership::quorums_for(&self.cluster, 3);
        }
        if self.cluster.sync_replicas > q.w {
            return Err(ConfigError::Invalid(format!(
                "cluster.sync_replicas = {} is more than cluster.w = {}: only replicas that acknowledge a write can fsync before it is acknowledged",
                self.cluster.sync_replicas, q.w
            )));
        }
        if !self.cluster.members.is_empty()
            && !self.cluster.members.iter().any(|m| m.id == self.node_id)
        {
            return Err(ConfigError::Invalid(format!(
                "node_id {:?} is not among cluster.members",
                self.node_id
            )));
        }
        let c = &self.cluster;
        if c.context_key_rotation_ms < 1_000
            || c.context_key_grace_ms > 2 * c.context_key_rotation_ms
        {
            // A node keeps its newest three keys: with a grace period longer than two rotation
            // periods, a key still in its grace period would be forgotten.
            return Err(ConfigError::Invalid(format!(
                "cluster.context_key_rotation_ms = {} must be at least 1000 and cluster.context_key_grace_ms = {} at most twice it",
                c.context_key_rotation_ms, c.context_key_grace_ms
            )));
        }
        let l = &self.limits;
        if l.max_key_bytes == 0 || l.max_value_bytes == 0 || l.max_siblings == 0 {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        if l.max_object_bytes < l.max_value_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.max_object_bytes = {} is below limits.max_value_bytes = {}: one value must fit in a key",
                l.max_object_bytes, l.max_value_bytes
            )));
        }
        // Replicas that each accepted writes up to the limit during a partition merge into a
        // larger state; keep room for N of them in a message so every key stays readable.
        let n = self.quorums()?.n as usize;
        if l.max_object_bytes.saturating_mul(n) > MAX_MESSAGE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "limits.max_object_bytes = {} is too large: N ({n}) keys of that size must fit in one message ({} bytes)",
                l.max_object_bytes, MAX_MESSAGE_BYTES
            )));
        }
        // A clock names up to N coordinators in ordinary operation; fewer entries than that
        // would truncate on every write.
        if self.max_vector_entries < n {
            return Err(ConfigError::Invalid(format!(
                "max_vector_entries = {} is below cluster.n = {n}: a key written through its N replicas needs N entries",
                self.max_vector_entries
            )));
        }
        let b = &self.background;
        if b.handoff_interval_ms == 0 || b.reap_interval_ms == 0 || b.latency_bound_ms == 0 {
            return Err(ConfigError::Invalid(
                "background.handoff_interval_ms, reap_interval_ms and latency_bound_ms must be positive".into(),
            ));
        }
        if l.max_concurrent_requests == 0
            || l.max_connections == 0
            || l.max_request_bytes == Some(0)
            || l.max_unauthenticated_connections == 0
            || l.max_unauthenticated_per_source == 0
            || l.unauthenticated_timeout_ms == 0
            || l.idle_timeout_ms == 0
            || l.max_streams_per_connection == 0
            || l.request_body_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_requests, max_connections, max_request_bytes, max_unauthenticated_connections, max_unauthenticated_per_source, unauthenticated_timeout_ms, idle_timeout_ms, max_streams_per_connection and request_body_timeout_ms must be positive".into(),
            ));
        }
        let request = self.max_request_bytes();
        if request < l.max_value_bytes.saturating_add(l.max_key_bytes) {
            // Refused as oversized, the largest value a client may write never could be.
            return Err(ConfigError::Invalid(format!(
                "limits.max_request_bytes ({request}) must hold a key and a value: at least max_value_bytes + max_key_bytes ({}); leave it out for that plus 64 KiB",
                l.max_value_bytes.saturating_add(l.max_key_bytes)
            )));
        }
        if l.max_read_bytes_per_caller == 0
            || l.max_read_bytes_in_flight < l.max_read_bytes_per_caller
        {
            return Err(ConfigError::Invalid(format!(
                "limits.max_read_bytes_per_caller ({}) must be positive and at most limits.max_read_bytes_in_flight ({})",
                l.max_read_bytes_per_caller, l.max_read_bytes_in_flight
            )));
        }
        if l.max_request_bytes_per_connection < request
            || l.max_request_bytes_in_flight < l.max_request_bytes_per_connection
        {
            return Err(ConfigError::Invalid(format!(
                "limits.max_request_bytes_per_connection ({}) must hold one request (max_request_bytes, {request}) and limits.max_request_bytes_in_flight ({}) one connection's",
                l.max_request_bytes_per_connection, l.max_request_bytes_in_flight
            )));
        }
        if let Some(tls) = &self.tls {
            if tls.reload_interval_ms == 0 {
                return Err(ConfigError::Invalid(
                    "tls.reload_interval_ms must be positive".into(),
                ));
            }
            // The node id and cluster name go into certificate names.
            for (what, name) in [
                ("node_id", &self.node_id),
                ("cluster.name", &self.cluster.name),
            ] {
                if !crate::certificates::valid_name(name) {
                    return Err(ConfigError::Invalid(format!(
                        "{what} {name:?} cannot be named in a certificate: with [tls], use 1 to 128 of A-Z, a-z, 0-9, '.', '_', '-'"
                    )));
                }
            }
        }
        let s = &self.security;
        if s.cache_max_users == 0 || s.auth_failure_limit == 0 || s.auth_failure_window_ms == 0 {
            return Err(ConfigError::Invalid(
                "security.cache_max_users, auth_failure_limit and auth_failure_window_ms must be positive".into(),
            ));
        }
        if let Some(bad) = self
            .security
            .superusers
            .iter()
            .find(|u| !crate::certificates::valid_name(u))
        {
            return Err(ConfigError::Invalid(format!(
                "security.superusers: {bad:?} is not a user name (1 to 128 of A-Z, a-z, 0-9, '.', '_', '-')"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_user_cache_or_failure_limit_is_refused() {
        for tweak in [
            |s: &mut SecurityConfig| s.cache_max_users = 0,
            |s: &mut SecurityConfig| s.auth_failure_limit = 0,
            |s: &mut SecurityConfig| s.auth_failure_window_ms = 0,
        ] {
            let mut c = Config::default();
            tweak(&mut c.security);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("cache_max_users"), "{err}");
        }
    }

    #[test]
    fn empty_file_is_a_working_single_node() {
        let c: Config = toml::from_str("").unwrap();
        c.validate().unwrap();
        assert_eq!(c.quorums().unwrap(), Quorums { n: 1, r: 1, w: 1 });
    }

    #[test]
    fn cluster_defaults_to_3_2_2_and_refuses_bad_quorums() {
        let text = r#"
            node_id = "a"
            [cluster]
            members = [
              { id = "a", address = "127.0.0.1:1" },
              { id = "b", address = "127.0.0.1:2" },
              { id = "c", address = "127.0.0.1:3", zone = "z", weight = 2 },
            ]
        "#;
        let mut c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.quorums().unwrap(), Quorums { n: 3, r: 2, w: 2 });
        c.cluster.w = Some(4);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cluster.w = 4")
        );
        c.cluster.w = None;
        c.node_id = "zz".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let three = r#"
            node_id = "a"
            [cluster]
            members = [
              { id = "a", address = "127.0.0.1:1" },
              { id = "b", address = "127.0.0.1:2" },
              { id = "c", address = "127.0.0.1:3" },
            ]
        "#;
        for bad in [1, 2] {
            let mut c: Config = toml::from_str(three).unwrap();
            c.max_vector_entries = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("max_vector_entries"), "{err}");
        }
        let mut c: Config = toml::from_str(three).unwrap();
        c.max_vector_entries = 3;
        c.validate().unwrap();
        c.limits.max_object_bytes = 1024;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_object_bytes")
        );
        c.limits.max_object_bytes = 100 << 20;
        c.cluster.n = Some(3);
        assert!(c.validate().unwrap_err().to_string().contains("too large"));
        // More replicas than members is refused outright, so W = N can always be met.
        let mut c: Config = toml::from_str(three).unwrap();
        c.cluster.members.pop();
        c.cluster.members.retain(|m| m.id == "a" || m.id == "b");
        c.cluster.n = Some(3);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cluster.n = 3")
        );
    }

    #[test]
    fn serving_unprotected_beyond_loopback_needs_insecure() {
        let mut c = Config {
            listen: "0.0.0.0:7070".parse().unwrap(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--insecure") && err.contains("[tls]"), "{err}");
        c.insecure = true;
        c.validate().unwrap();
        c.insecure = false;
        c.listen = "[::1]:7070".parse().unwrap();
        c.validate().unwrap();
        c.metrics_listen = Some("10.0.0.1:9100".parse().unwrap());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("metrics_token_file"), "{err}");
        c.metrics_token_file = Some("/etc/dynamokv/metrics.token".into());
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("node_idd = \"x\"").is_err());
    }
}
