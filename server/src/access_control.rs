//! Access control (issue 11): who is calling, and whether they may do what they ask.
//!
//! In force when the node serves TLS (`[tls]`); a plain-text node serves anyone, as the
//! local demo wants, and warns at start when that is beyond loopback.
//!
//! **Who.** A peer proves who it is with the certificate it presented in the TLS handshake
//! (signed by the cluster's CA, naming `dynamokv://<cluster>/node/<id>` or
//! `dynamokv://<cluster>/user/<name>`) or with a bearer token (`authorization: Bearer
//! dkv1.<user>.<secret>`). Nodes store only the SHA-256 of each token.
//!
//! **What.** A user holds grants: permissions (`read`, `write`, `admin`) on key prefixes
//! (`cart:`; the empty prefix is every key). Gets and replica reads need `read` on the key;
//! puts, deletes and client repairs need `write`. The operator service needs `admin` on the
//! empty prefix, and granting on a prefix needs `admin` on it. Users named in
//! `security.superusers` hold every permission (how the first administrator gets in).
//!
//! **Nodes.** A node certificate is for node-to-node work only: the node-to-node service, and
//! of the client service only the forward of a client's write to its coordinator (a `Put` or
//! `Delete` marked `dynamokv-forwarded`, which the forwarding node authorized), any key; no
//! other client call and no operator call. Forwards and the node-to-node service's data calls
//! need the node to be a member of the ring; gossip and pings do not (a joining node gossips
//! before it is one). A removed node is refused everything.
//!
//! **Where grants live.** In the cluster itself, as records under the reserved key prefix
//! `\0dynamokv/` that no client may touch, written and read with the cluster's own quorums
//! (as Cassandra keeps its roles in `system_auth`). Each node caches what it read for
//! `security.cache_ms` (2 s by default, as Cassandra's `roles_validity`), counted from when the
//! read began: a revoked token or permission stops working on every node within that time of
//! the revoke. A user in use is read again in the background from half that age, so its
//! requests do not wait; concurrent reads of one user are one read; the cache is bounded and
//! names that are no user are cached too, apart; and a source whose tokens keep failing is
//! refused without a read (see `user_cache`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::Request;

use crate::certificates::{Identity, valid_name};
use crate::coordinator::{Coordinator, WriteRequest};
use crate::error::Error;
use crate::membership::Membership;
use crate::tls::{ConnInfo, Security};
use crate::user_cache::{Lookup, Source, Throttle, UserCache};

/// Keys starting with this hold the cluster's own records; no client may read or write them.
pub const RESERVED_PREFIX: &[u8] = b"\0dynamokv/";
const USER_KEY_PREFIX: &str = "\0dynamokv/user/";
const USER_INDEX_KEY: &str = "\0dynamokv/users";
/// The version of the token format, its first dot-separated part.
const TOKEN_PREFIX: &str = "dkv1.";

/// What a user may do with keys under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user as stored in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// SHA-256 of each of the user's tokens, lowercase hex.
    pub token_hashes: Vec<String>,
    /// Permissions by key prefix.
    pub grants: BTreeMap<String, BTreeSet<Permission>>,
    /// When it was last changed (ms since the epoch): of concurrent versions, the latest wins.
    pub updated_ms: u64,
}

impl UserRecord {
    fn may(&self, permission: Permission, key: &[u8]) -> bool {
        self.grants.iter().any(|(prefix, perms)| {
            key.starts_with(prefix.as_bytes()) && perms.contains(&permission)
        })
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Access control is off (a plain-text node).
    Anyone,
    /// A node of this cluster, by its certificate.
    Node(String),
    User {
        name: String,
        /// What the cluster holds of the user (none: a certificate user with no grants).
        record: Option<Arc<UserRecord>>,
        superuser: bool,
    },
}

impl Principal {
    /// The name a denial names.
    fn describe(&self) -> String {
        match self {
            Principal::Anyone => "anyone".into(),
            Principal::Node(id) => format!("node {id}"),
            Principal::User { name, .. } => format!("user {name}"),
        }
    }
}

/// Where a node stands in the membership, for what its certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Joining, up or leaving: a member of the ring.
    Member,
    /// Removed by an operator: refused everything.
    Removed,
    /// Never heard of (a node not yet known to this one, e.g. one that is about to join).
    Unknown,
}

/// A key as a denial shows it: UTF-8 where it is, escaped elsewhere, at most 64 bytes.
fn show_key(key: &[u8]) -> String {
    let cut = &key[..key.len().min(64)];
    let mut s = String::from_utf8_lossy(cut).escape_debug().to_string();
    if key.len() > 64 {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Equal strings, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh token for `user`: `dkv1.<user>.<64 hex digits>` (256 random bits).
pub fn new_token(user: &str) -> String {
    let secret: [u8; 32] = rand::random();
    let mut token = format!("{TOKEN_PREFIX}{user}.");
    for b in secret {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// The most tokens one user may hold (two are enough to rotate one without a gap).
pub const MAX_TOKENS_PER_USER: usize = 8;

/// How a token is named once issued: the first 12 hex digits of its SHA-256 (which the nodes
/// keep; it tells nothing of the token itself).
pub fn token_id(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The id of `token` (see [`token_id`]).
pub fn id_of_token(token: &str) -> String {
    token_id(&sha256_hex(token.as_bytes())).to_string()
}

/// The user a token names, or why it is not a token.
fn token_user(token: &str) -> Result<&str, String> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or("the token is malformed (it does not start with dkv1.): use a token printed by `dynamokv admin user add`")?;
    let (user, secret) = rest
        .rsplit_once('.')
        .ok_or("the token is malformed (no secret part)")?;
    if !valid_name(user) || secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "the token is malformed: use a token printed by `dynamokv admin user add`".into(),
        );
    }
    Ok(user)
}

/// A read of a user under way, which every request for the user awaits: the user, or why the
/// read failed.
type UserRead = Shared<BoxFuture<'static, Result<Option<Arc<UserRecord>>, String>>>;

/// A node's access control: authentication of each request and the check of its permission.
#[derive(Debug)]
pub struct AccessControl {
    enabled: bool,
    cluster: String,
    superusers: HashSet<String>,
    membership: Membership,
    coordinator: Arc<Coordinator>,
    cache: Mutex<UserCache<Arc<UserRecord>>>,
    /// Reads under way, by user, each with an id so that only it removes itself.
    reads: Mutex<HashMap<String, (u64, UserRead)>>,
    next_read: std::sync::atomic::AtomicU64,
    throttle: Mutex<Throttle>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const NEEDS_TLS: &str = "this node requires TLS: connect over TLS with the cluster's CA certificate (the ca_cert option)";

impl AccessControl {
    /// Access control trusting what it read of a user for `validity` (`security.cache_ms`),
    /// with the default cache size and failure throttle (see [`with_limits`](Self::with_limits)).
    pub fn new(
        enabled: bool,
        cluster: &str,
        superusers: &[String],
        validity: Duration,
        membership: Membership,
        coordinator: Arc<Coordinator>,
    ) -> AccessControl {
        AccessControl {
            enabled,
            cluster: cluster.to_string(),
            superusers: superusers.iter().cloned().collect(),
            membership,
            coordinator,
            cache: Mutex::new(UserCache::new(
                validity,
                crate::user_cache::DEFAULT_CACHE_MAX_USERS,
            )),
            reads: Mutex::new(HashMap::new()),
            next_read: std::sync::atomic::AtomicU64::new(0),
            throttle: Mutex::new(Throttle::new(
                crate::user_cache::DEFAULT_AUTH_FAILURE_LIMIT,
                Duration::from_millis(crate::user_cache::DEFAULT_AUTH_FAILURE_WINDOW_MS),
            )),
        }
    }

    /// Caches at most `max_users` users (and as many unknown names), and throttles a source
    /// past `failure_limit` failed token authentications in `failure_window` (see
    /// `user_cache`).
    pub fn with_limits(
        self,
        max_users: usize,
        failure_limit: u32,
        failure_window: Duration,
    ) -> AccessControl {
        let validity = lock(&self.cache).validity();
        AccessControl {
            cache: Mutex::new(UserCache::new(validity, max_users)),
            throttle: Mutex::new(Throttle::new(failure_limit, failure_window)),
            ..self
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who made `req`, or why it is refused (`Unauthenticated`).
    pub async fn authenticate<T>(self: &Arc<Self>, req: &Request<T>) -> Result<Principal, Error> {
        let who = self.authenticate_unrecorded(req).await;
        self.record("client", who.as_ref().err());
        who
    }

    /// Counts a refusal (`access_refused_total{service, reason}`); other errors are not ones.
    fn record(&self, service: &'static str, err: Option<&Error>) {
        let reason = match err {
            Some(Error::Unauthenticated(_)) => "unauthenticated",
            Some(Error::PermissionDenied(_)) => "permission_denied",
            _ => return,
        };
        self.coordinator.metrics().access_refused(service, reason);
    }

    async fn authenticate_unrecorded<T>(
        self: &Arc<Self>,
        req: &Request<T>,
    ) -> Result<Principal, Error> {
        if !self.enabled {
            return Ok(Principal::Anyone);
        }
        // Authenticated already, from the headers, before the body was read (`intake.rs`).
        if let Some(crate::intake::Authenticated(who)) = req.extensions().get() {
            return Ok(who.clone());
        }
        let (presented, peer) = match req.extensions().get::<ConnInfo>().map(|i| &i.security) {
            Some(Security::Tls {
                presented_certificate,
                peer,
            }) => (*presented_certificate, peer.clone()),
            _ => return Err(Error::Unauthenticated(NEEDS_TLS.into())),
        };
        match peer {
            Some(Identity::Node { cluster, node_id }) if cluster == self.cluster => {
                return Ok(Principal::Node(node_id));
            }
            Some(Identity::Node { cluster, .. } | Identity::User { cluster, .. })
                if cluster != self.cluster =>
            {
                return Err(Error::Unauthenticated(format!(
                    "the client certificate is for cluster {cluster:?}, this is cluster {:?}",
                    self.cluster
                )));
            }
            _ => {}
        }
        if let Some(token) = bearer(req)? {
            let source = req
                .extensions()
                .get::<ConnInfo>()
                .and_then(|i| i.remote)
                .map(|a| Source::of(a.ip()));
            let user = match token_user(&token) {
                Ok(user) => user.to_string(),
                Err(why) => return Err(self.failed(source, Error::Unauthenticated(why))),
            };
            let record = self.user(&user, source).await?;
            let hash = sha256_hex(token.as_bytes());
            let known = record
                .as_ref()
                .is_some_and(|r| r.token_hashes.iter().any(|h| same(h, &hash)));
            if !known {
                return Err(self.failed(
                    source,
                    Error::Unauthenticated(
                        "the token is not valid: unknown, revoked, or its user was removed".into(),
                    ),
                ));
            }
            return Ok(Principal::User {
                superuser: self.superusers.contains(&user),
                name: user,
                record,
            });
        }
        match peer {
            // The certificate proved who it is: no throttle.
            Some(Identity::User { name, .. }) => Ok(Principal::User {
                superuser: self.superusers.contains(&name),
                record: self.user(&name, None).await?,
                name,
            }),
            _ if presented => Err(Error::Unauthenticated(
                "the client certificate names no DynamoKV user (it has no dynamokv://<cluster>/user/<name> name; issue one with `dynamokv cert user`)".into(),
            )),
            _ => Err(Error::Unauthenticated(
                "no credentials: this cluster needs a client certificate (client_cert and client_key) or a token".into(),
            )),
        }
    }

    /// Whether the caller of `req` may call the standard service `what` (health, reflection;
    /// see `guard`): any TLS client, or an authenticated user only. Refusals are counted as
    /// the client service's.
    pub async fn check_standard<T>(
        self: &Arc<Self>,
        req: &Request<T>,
        what: &str,
        callers: crate::guard::Callers,
    ) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        match callers {
            crate::guard::Callers::TlsClients => {
                let tls = matches!(
                    req.extensions().get::<ConnInfo>().map(|i| &i.security),
                    Some(Security::Tls { .. })
                );
                let allowed = if tls {
                    Ok(())
                } else {
                    Err(Error::Unauthenticated(NEEDS_TLS.into()))
                };
                self.record("client", allowed.as_ref().err());
                allowed
            }
            crate::guard::Callers::Users => match self.authenticate(req).await? {
                Principal::Node(id) => {
                    let refused = Error::PermissionDenied(format!(
                        "{what} answers users only; node {id:?} is none"
                    ));
                    self.record("client", Some(&refused));
                    Err(refused)
                }
                Principal::Anyone | Principal::User { .. } => Ok(()),
            },
        }
    }

    /// Refuses a node identity any call of the client and operator services but the forward of
    /// a client's write (`forward`: a `Put` or `Delete` marked `dynamokv-forwarded`), and that
    /// too unless the node is a member of the ring (not removed). Users pass.
    pub fn check_node(&self, who: &Principal, forward: bool) -> Result<(), Error> {
        let Principal::Node(id) = who else {
            return Ok(());
        };
        let refused = if !forward {
            Some(format!(
                "node {id:?} may only forward client writes: a node certificate carries no client or operator permission"
            ))
        } else {
            match self.standing(id) {
                Standing::Member => None,
                Standing::Removed => Some(format!(
                    "node {id:?} was removed from the cluster: it may not forward writes"
                )),
                Standing::Unknown => Some(format!(
                    "node {id:?} is not a member of the ring: it may not forward writes"
                )),
            }
        };
        let allowed = match refused {
            None => Ok(()),
            Some(why) => Err(Error::PermissionDenied(why)),
        };
        self.record("client", allowed.as_ref().err());
        allowed
    }

    /// Where node `id` stands in this node's view of the membership.
    fn standing(&self, id: &str) -> Standing {
        let view = self.membership.current();
        if view.state.is_removed(id) {
            Standing::Removed
        } else if view.state.member(id).is_some() {
            Standing::Member
        } else {
            Standing::Unknown
        }
    }

    /// Whether `who` may do `permission` on `key` (`Ok`), or a `PermissionDenied` naming what
    /// is missing.
    pub fn authorize(
        &self,
        who: &Principal,
        permission: Permission,
        key: &[u8],
    ) -> Result<(), Error> {
        let allowed = self.authorize_unrecorded(who, permission, key);
        self.record("client", allowed.as_ref().err());
        allowed
    }

    fn authorize_unrecorded(
        &self,
        who: &Principal,
        permission: Permission,
        key: &[u8],
    ) -> Result<(), Error> {
        let (name, record, superuser) = match who {
            Principal::Anyone | Principal::Node(_) => return Ok(()),
            Principal::User {
                name,
                record,
                superuser,
            } => (name, record, *superuser),
        };
        if key.starts_with(RESERVED_PREFIX) {
            return Err(Error::PermissionDenied(format!(
                "keys starting with \\0dynamokv/ hold the cluster's own records: no client may {permission} them"
            )));
        }
        if superuser || record.as_ref().is_some_and(|r| r.may(permission, key)) {
            return Ok(());
        }
        Err(Error::PermissionDenied(
            if permission == Permission::Admin && key.is_empty() {
                format!(
                    "{} has no admin permission on every key (the empty prefix), which operator calls need",
                    who.describe()
                )
            } else {
                format!(
                    "user {name} has no {permission} permission on key {} (grant it with `dynamokv admin grant {name} {permission} --prefix <prefix>`)",
                    show_key(key)
                )
            },
        ))
    }

    /// Refuses a call of the node-to-node service unless it comes from a node of this
    /// cluster that was not removed; `data` calls (replica reads and merges, hints,
    /// anti-entropy, transfers) also need the node to be a member of the ring (gossip and pings
    /// do not: a node that is joining gossips before it is one).
    pub fn check_peer<T>(&self, req: &Request<T>, what: &str, data: bool) -> Result<(), Error> {
        let allowed = self.check_peer_unrecorded(req, what, data);
        self.record("node", allowed.as_ref().err());
        allowed
    }

    fn check_peer_unrecorded<T>(
        &self,
        req: &Request<T>,
        what: &str,
        data: bool,
    ) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let peer = match req.extensions().get::<ConnInfo>().map(|i| &i.security) {
            Some(Security::Tls { peer, .. }) => peer.clone(),
            _ => return Err(Error::Unauthenticated(NEEDS_TLS.into())),
        };
        let refuse = |who: String| {
            Err(Error::PermissionDenied(format!(
                "{what} is a node-to-node call that only the nodes of cluster {:?} may make; {who} is not one",
                self.cluster
            )))
        };
        match peer {
            Some(Identity::Node { cluster, node_id }) if cluster == self.cluster => {
                match self.standing(&node_id) {
                    Standing::Removed => refuse(format!(
                        "node {node_id:?}, which was removed from the cluster,"
                    )),
                    Standing::Unknown if data => refuse(format!(
                        "node {node_id:?}, which is not a member of the ring,"
                    )),
                    Standing::Member | Standing::Unknown => Ok(()),
                }
            }
            Some(Identity::Node { cluster, node_id }) => {
                refuse(format!("node {node_id:?} of cluster {cluster:?}"))
            }
            Some(Identity::User { name, .. }) => refuse(format!("user {name:?} (a client)")),
            None => Err(Error::Unauthenticated(format!(
                "{what} is a node-to-node call: it needs the certificate of a node of cluster {:?}",
                self.cluster
            ))),
        }
    }

    /// Counts a failed token authentication of `source`; `refusal` is what the caller gets.
    fn failed(&self, source: Option<Source>, refusal: Error) -> Error {
        if let Some(source) = source {
            lock(&self.throttle).failed(source, Instant::now());
        }
        refusal
    }

    /// The user `name` as the cluster holds it: from the cache while what it holds is valid
    /// (reading it again in the background once past half its validity), else from a read,
    /// shared by every request for `name` meanwhile. A `source` past its failure limit is
    /// refused without a read for a name not known to be a user.
    async fn user(
        self: &Arc<Self>,
        name: &str,
        source: Option<Source>,
    ) -> Result<Option<Arc<UserRecord>>, Error> {
        let now = Instant::now();
        let lookup = lock(&self.cache).lookup(name, now);
        match lookup {
            Lookup::Fresh { value, refresh } => {
                if refresh {
                    // Not awaited: the read goes on by itself and fills the cache.
                    drop(self.read(name));
                }
                Ok(value)
            }
            Lookup::Read { known_user } => {
                let throttled = match source {
                    Some(source) if !known_user => {
                        let throttle = lock(&self.throttle);
                        throttle
                            .throttled(source, now)
                            .map(|left| (source, left, throttle.limits()))
                    }
                    _ => None,
                };
                if let Some((source, left, (limit, window))) = throttled {
                    return Err(Error::Unauthenticated(format!(
                        "too many failed authentications from {source} ({limit} within {} s): for the next {} ms its tokens naming users this node does not know are refused without being checked",
                        window.as_secs(),
                        left.as_millis()
                    )));
                }
                self.read(name).await.map_err(Error::CredentialsUnavailable)
            }
        }
    }

    /// The read of `name` under way, or a new one. A read runs in a task of its own, so it
    /// completes (and fills the cache) even if every request awaiting it goes away.
    fn read(self: &Arc<Self>, name: &str) -> UserRead {
        let mut reads = lock(&self.reads);
        if let Some((_, read)) = reads.get(name) {
            return read.clone();
        }
        let id = self
            .next_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (this, user) = (Arc::clone(self), name.to_string());
        // Its age counts from now, before the quorum read: what it finds is at least this new.
        let (began, epoch) = (Instant::now(), lock(&self.cache).epoch());
        let task = tokio::spawn(async move {
            let read = this.read_user(&user).await;
            if let Ok(found) = &read {
                lock(&this.cache).remember(&user, found.clone(), began, epoch);
            }
            let mut reads = lock(&this.reads);
            if reads.get(&user).is_some_and(|(i, _)| *i == id) {
                reads.remove(&user);
            }
            read.map_err(|e| match e {
                Error::CredentialsUnavailable(why) => why,
                other => other.to_string(),
            })
        });
        let read: UserRead = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the read of a user did not complete: {e}")))
        }
        .boxed()
        .shared();
        reads.insert(name.to_string(), (id, read.clone()));
        read
    }

    /// Forgets what this node cached of `name` (after it changed the user itself): the next
    /// request reads it anew, and no read that began before is kept.
    fn forget(&self, name: &str) {
        lock(&self.cache).forget(name);
        lock(&self.reads).remove(name);
    }

    /// Reads user `name` with the cluster's read quorum.
    async fn read_user(&self, name: &str) -> Result<Option<Arc<UserRecord>>, Error> {
        let (record, _) = self.read_record::<UserRecord>(&user_key(name)).await?;
        Ok(record.map(Arc::new))
    }

    /// A record under the reserved prefix and its context; of concurrent versions, the one
    /// changed last.
    async fn read_record<R: for<'de> Deserialize<'de> + Latest>(
        &self,
        key: &str,
    ) -> Result<(Option<R>, Bytes), Error> {
        let got = self
            .coordinator
            .get(Bytes::copy_from_slice(key.as_bytes()), None)
            .await
            .map_err(|e| Error::CredentialsUnavailable(e.to_string()))?;
        let mut best: Option<R> = None;
        for value in &got.values {
            match serde_json::from_slice::<R>(value) {
                Ok(r) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| r.updated_ms() > b.updated_ms())
                    {
                        best = Some(r);
                    }
                }
                Err(e) => {
                    tracing::error!(key = %key.escape_debug(), error = %e, "an access-control record does not parse: ignored");
                }
            }
        }
        Ok((best, got.context))
    }

    async fn write_record<R: Serialize>(
        &self,
        key: &str,
        record: Option<&R>,
        context: Bytes,
    ) -> Result<(), Error> {
        let value = match record {
            Some(r) => Some(Bytes::from(
                serde_json::to_vec(r).map_err(|e| Error::Internal(e.to_string()))?,
            )),
            None => None,
        };
        self.coordinator
            .put(WriteRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value,
                context,
                w: None,
                sync_replicas: None,
                write_id: None,
                attempt: 1,
                forwarded: false,
                budget: None,
            })
            .await?;
        Ok(())
    }

    fn needs_tls(&self) -> Result<(), Error> {
        if self.enabled {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "users and grants take effect only on a cluster that serves TLS (configure [tls]); a plain-text cluster lets anyone do anything".into(),
            ))
        }
    }

    /// Adds user `name` (an error if it exists); with `token`, issues its first token and
    /// returns it (the only time it is seen: nodes keep its hash).
    pub async fn add_user(&self, name: &str, token: bool) -> Result<Option<String>, Error> {
        self.needs_tls()?;
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "{name:?} is not a user name: use 1 to 128 of A-Z, a-z, 0-9, '.', '_', '-'"
            )));
        }
        let key = user_key(name);
        let (existing, context) = self.read_record::<UserRecord>(&key).await?;
        if existing.is_some() {
            return Err(Error::Invalid(format!(
                "user {name} exists already (remove it first, or grant it more)"
            )));
        }
        let token = token.then(|| new_token(name));
        let record = UserRecord {
            name: name.to_string(),
            token_hashes: token.iter().map(|t| sha256_hex(t.as_bytes())).collect(),
            grants: BTreeMap::new(),
            updated_ms: crate::replica::now_ms(),
        };
        self.write_record(&key, Some(&record), context).await?;
        self.update_index(|names| {
            names.insert(name.to_string());
        })
        .await?;
        self.forget(name);
        Ok(token)
    }

    /// Removes user `name`: its tokens stop working, and its certificate carries no grant.
    pub async fn remove_user(&self, name: &str) -> Result<(), Error> {
        self.needs_tls()?;
        let key = user_key(name);
        let (existing, context) = self.read_record::<UserRecord>(&key).await?;
        if existing.is_none() {
            return Err(no_such_user(name));
        }
        self.write_record::<UserRecord>(&key, None, context).await?;
        self.update_index(|names| {
            names.remove(name);
        })
        .await?;
        self.forget(name);
        Ok(())
    }

    /// Issues `name` another token, keeping those it has: a token is rotated by adding the new
    /// one, moving the applications to it, then revoking the old one by its id. The token, and
    /// its id.
    pub async fn add_token(&self, name: &str) -> Result<(String, String), Error> {
        self.needs_tls()?;
        let key = user_key(name);
        let (existing, context) = self.read_record::<UserRecord>(&key).await?;
        let mut record = existing.ok_or_else(|| no_such_user(name))?;
        if record.token_hashes.len() >= MAX_TOKENS_PER_USER {
            return Err(Error::Invalid(format!(
                "user {name} has {} tokens, the most it may: revoke one first (`dynamokv admin user token revoke {name} ID`; `dynamokv admin user list` shows the ids)",
                record.token_hashes.len()
            )));
        }
        let token = new_token(name);
        let id = id_of_token(&token);
        record.token_hashes.push(sha256_hex(token.as_bytes()));
        record.updated_ms = crate::replica::now_ms().max(record.updated_ms + 1);
        self.write_record(&key, Some(&record), context).await?;
        self.forget(name);
        Ok((token, id))
    }

    /// Revokes the token of `name` whose id is `id` (see [`token_id`]); the user after.
    pub async fn revoke_token(&self, name: &str, id: &str) -> Result<UserRecord, Error> {
        self.needs_tls()?;
        let key = user_key(name);
        let (existing, context) = self.read_record::<UserRecord>(&key).await?;
        let mut record = existing.ok_or_else(|| no_such_user(name))?;
        let before = record.token_hashes.len();
        record.token_hashes.retain(|h| token_id(h) != id);
        if record.token_hashes.len() == before {
            let ids: Vec<&str> = record.token_hashes.iter().map(|h| token_id(h)).collect();
            return Err(Error::Invalid(if ids.is_empty() {
                format!("user {name} has no token")
            } else {
                format!(
                    "user {name} has no token with id {id:?}; its tokens: {}",
                    ids.join(", ")
                )
            }));
        }
        record.updated_ms = crate::replica::now_ms().max(record.updated_ms + 1);
        self.write_record(&key, Some(&record), context).await?;
        self.forget(name);
        Ok(record)
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, Error> {
        self.needs_tls()?;
        let (index, _) = self.read_record::<UserIndex>(USER_INDEX_KEY).await?;
        let mut users = Vec::new();
        for name in index.map(|i| i.names).unwrap_or_default() {
            if let Some(r) = self.read_user(&name).await? {
                users.push((*r).clone());
            }
        }
        Ok(users)
    }

    /// Adds (`grant`) or takes away permissions of `name` on `prefix`.
    pub async fn change_grants(
        &self,
        name: &str,
        prefix: &str,
        permissions: &[Permission],
        grant: bool,
    ) -> Result<UserRecord, Error> {
        self.needs_tls()?;
        if permissions.is_empty() {
            return Err(Error::MissingField("permission"));
        }
        if prefix.as_bytes().starts_with(RESERVED_PREFIX) {
            return Err(Error::PermissionDenied(
                "the \\0dynamokv/ prefix holds the cluster's own records: it cannot be granted"
                    .into(),
            ));
        }
        let key = user_key(name);
        let (existing, context) = self.read_record::<UserRecord>(&key).await?;
        let mut record = existing.ok_or_else(|| no_such_user(name))?;
        let perms = record.grants.entry(prefix.to_string()).or_default();
        for p in permissions {
            if grant {
                perms.insert(*p);
            } else {
                perms.remove(p);
            }
        }
        if perms.is_empty() {
            record.grants.remove(prefix);
        }
        record.updated_ms = crate::replica::now_ms().max(record.updated_ms + 1);
        self.write_record(&key, Some(&record), context).await?;
        self.forget(name);
        Ok(record)
    }

    async fn update_index(&self, change: impl FnOnce(&mut BTreeSet<String>)) -> Result<(), Error> {
        // Concurrent versions of the index are merged by union: a name left behind by a
        // concurrent removal is skipped by `list_users`, which reads each user.
        let got = self
            .coordinator
            .get(Bytes::from_static(USER_INDEX_KEY.as_bytes()), None)
            .await
            .map_err(|e| Error::CredentialsUnavailable(e.to_string()))?;
        let mut names = BTreeSet::new();
        for v in &got.values {
            if let Ok(i) = serde_json::from_slice::<UserIndex>(v) {
                names.extend(i.names);
            }
        }
        change(&mut names);
        let index = UserIndex {
            names,
            updated_ms: crate::replica::now_ms(),
        };
        self.write_record(USER_INDEX_KEY, Some(&index), got.context)
            .await
    }
}

fn no_such_user(name: &str) -> Error {
    Error::Invalid(format!(
        "there is no user {name} (add it with `dynamokv admin user add {name}`)"
    ))
}

/// The names of every user, so that they can be listed without a scan.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UserIndex {
    names: BTreeSet<String>,
    updated_ms: u64,
}

trait Latest {
    fn updated_ms(&self) -> u64;
}

impl Latest for UserRecord {
    fn updated_ms(&self) -> u64 {
        self.updated_ms
    }
}

impl Latest for UserIndex {
    fn updated_ms(&self) -> u64 {
        self.updated_ms
    }
}

fn user_key(name: &str) -> String {
    format!("{USER_KEY_PREFIX}{name}")
}

/// The bearer token of `req`, if it has one; a malformed `authorization` header is refused.
fn bearer<T>(req: &Request<T>) -> Result<Option<String>, Error> {
    let Some(value) = req.metadata().get("authorization") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
    let token = text.strip_prefix("Bearer ").ok_or_else(|| {
        Error::Unauthenticated("the authorization header is not `Bearer <token>`".into())
    })?;
    Ok(Some(token.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_user_and_malformed_ones_are_refused() {
        let t = new_token("alice.b");
        assert_eq!(token_user(&t), Ok("alice.b"));
        assert_ne!(new_token("alice"), new_token("alice"));
        for bad in [
            "",
            "dkv1.",
            "dkv1.alice",
            "dkv2.alice.00",
            &t[..t.len() - 1],
            &format!("{}g", &t[..t.len() - 1]),
            "dkv1.bad name.0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(token_user(bad).is_err(), "{bad:?} taken as a token");
        }
    }

    #[test]
    fn grants_cover_keys_by_prefix_and_permission() {
        let mut r = UserRecord::default();
        r.grants
            .insert("cart:".into(), [Permission::Read].into_iter().collect());
        assert!(r.may(Permission::Read, b"cart:1"));
        assert!(!r.may(Permission::Write, b"cart:1"));
        assert!(!r.may(Permission::Read, b"user:1"));
        assert!(!r.may(Permission::Read, b"cart"));
        r.grants
            .insert(String::new(), [Permission::Write].into_iter().collect());
        assert!(r.may(Permission::Write, b"user:1"));
    }

    #[test]
    fn hashes_and_comparisons() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(show_key(b"cart:1"), "\"cart:1\"");
        assert!(show_key(&[b'x'; 100]).ends_with("...\""));
    }
}
