//! Request coordination (paper 4.5): quorum reads and writes over a key's preference list,
//! and read repair (paper 4.5, 5).
//!
//! - A **put** (or delete) is coordinated by a node among the key's top N. Any other node
//!   forwards it to the first of those that answers. The coordinator writes the new version
//!   locally under a fresh dot of its own actor, sends the key's resulting state to the other
//!   N-1 replicas, and answers once W replicas (itself included) hold it.
//! - A **get** asks all N replicas, answers after R replies with every concurrent version and
//!   one context covering them, and keeps listening for the late replies. Once all have
//!   answered (or timed out), every replica that was missing something is sent the merged state:
//!   read repair.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::Request;

use dynamokv_common::limits::check_quorum;
use dynamokv_common::{
    Limits, Member, VersionVector, VersionedState, decode_context, encode_context,
};
use dynamokv_proto::v1 as pb;

use crate::error::{Error, ReplicaFailure};
use crate::membership::{ClusterView, Membership};
use crate::peers::Peers;
use crate::replica::LocalReplica;

/// Metadata marking a put that a node forwarded to a coordinator, so it is never forwarded
/// twice.
pub const FORWARDED_METADATA: &str = "dynamokv-forwarded";

/// What a get returns.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub values: Vec<Bytes>,
    pub context: Bytes,
}

/// Coordinates client requests on this node.
#[derive(Debug)]
pub struct Coordinator {
    membership: Membership,
    local: Arc<LocalReplica>,
    peers: Arc<Peers>,
    limits: Limits,
    timeout: Duration,
}

type ReplicaReply<T> = (String, Result<T, String>);

impl Coordinator {
    pub fn new(
        membership: Membership,
        local: Arc<LocalReplica>,
        peers: Arc<Peers>,
        limits: Limits,
        timeout: Duration,
    ) -> Self {
        Coordinator {
            membership,
            local,
            peers,
            limits,
            timeout,
        }
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// A quorum read of `key`.
    pub async fn get(self: &Arc<Self>, key: Bytes, r: Option<u32>) -> Result<GetResult, Error> {
        self.limits.check_key(&key)?;
        let view = self.membership.current();
        let n = view.quorums.n;
        let r = r.unwrap_or(view.quorums.r);
        check_quorum("R", r, n)?;
        let replicas = top_n(&view, &key);

        let mut pending: FuturesUnordered<_> = replicas
            .iter()
            .map(|m| {
                let (this, m, key) = (Arc::clone(self), m.clone(), key.clone());
                async move { this.read_replica(m, key).await }
            })
            .collect();
        let mut replies: Vec<(String, Option<VersionedState>)> = Vec::new();
        let mut failures = Vec::new();
        while (replies.len() as u32) < r {
            match pending.next().await {
                Some((node, Ok(state))) => replies.push((node, state)),
                Some((node, Err(reason))) => failures.push(ReplicaFailure { node, reason }),
                None => break,
            }
        }
        if (replies.len() as u32) < r {
            return Err(Error::QuorumNotReached {
                op: "get",
                needed: r,
                got: replies.len() as u32,
                failures,
            });
        }
        let mut merged = VersionedState::new();
        for (_, state) in &replies {
            if let Some(s) = state {
                merged.merge(s);
            }
        }
        let result = GetResult {
            values: merged.live_values(),
            context: Bytes::from(encode_context(&key, merged.clock())),
        };

        // Late replies and read repair happen after the client has its answer.
        let local = Arc::clone(&self.local);
        let peers = Arc::clone(&self.peers);
        let self_id = view.self_id.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            while let Some((node, reply)) = pending.next().await {
                if let Ok(state) = reply {
                    replies.push((node, state));
                }
            }
            read_repair(key, replies, &replicas, &self_id, &local, &peers, timeout).await;
        });
        Ok(result)
    }

    /// A quorum write of `value` (a delete when `None`) superseding what `context` saw.
    pub async fn put(
        self: &Arc<Self>,
        key: Bytes,
        value: Option<Bytes>,
        context: &[u8],
        w: Option<u32>,
        forwarded: bool,
    ) -> Result<Bytes, Error> {
        self.limits.check_key(&key)?;
        if let Some(v) = &value {
            self.limits.check_value(v)?;
        }
        let context = decode_context(&key, context)?;
        let view = self.membership.current();
        let n = view.quorums.n;
        let w = w.unwrap_or(view.quorums.w);
        check_quorum("W", w, n)?;
        let op = if value.is_some() { "put" } else { "delete" };
        let replicas = top_n(&view, &key);

        if !forwarded && !replicas.iter().any(|m| m.id == view.self_id) {
            return self.forward(op, key, value, context, w, &replicas).await;
        }

        let state = self.local.coordinate(key.clone(), context, value).await?;
        let reply_context = Bytes::from(encode_context(&key, state.clock()));
        let mut acks = 1u32;
        let mut failures = Vec::new();
        let mut pending: FuturesUnordered<_> = replicas
            .iter()
            .filter(|m| m.id != view.self_id)
            .map(|m| {
                let (this, m, key, state) =
                    (Arc::clone(self), m.clone(), key.clone(), state.clone());
                async move { this.write_replica(m, key, state).await }
            })
            .collect();
        while acks < w {
            match pending.next().await {
                Some((_, Ok(()))) => acks += 1,
                Some((node, Err(reason))) => failures.push(ReplicaFailure { node, reason }),
                None => break,
            }
        }
        // The remaining replicas still get the write; nobody waits for them.
        tokio::spawn(async move { while pending.next().await.is_some() {} });
        if acks < w {
            return Err(Error::QuorumNotReached {
                op,
                needed: w,
                got: acks,
                failures,
            });
        }
        Ok(reply_context)
    }

    /// Sends a write this node may not coordinate to the first replica that takes it.
    async fn forward(
        &self,
        op: &'static str,
        key: Bytes,
        value: Option<Bytes>,
        context: VersionVector,
        w: u32,
        replicas: &[Member],
    ) -> Result<Bytes, Error> {
        let ctx = Bytes::from(encode_context(&key, &context));
        let mut failures = Vec::new();
        for m in replicas {
            let mut client = match self.peers.kv(&m.address) {
                Ok(c) => c,
                Err(reason) => {
                    failures.push(ReplicaFailure {
                        node: m.id.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let result = match &value {
                Some(v) => {
                    let mut req = Request::new(pb::PutRequest {
                        key: Some(key.clone()),
                        value: Some(v.clone()),
                        context: ctx.clone(),
                        w: Some(w),
                    });
                    mark_forwarded(&mut req);
                    client.put(req).await.map(|r| r.into_inner().context)
                }
                None => {
                    let mut req = Request::new(pb::DeleteRequest {
                        key: Some(key.clone()),
                        context: ctx.clone(),
                        w: Some(w),
                    });
                    mark_forwarded(&mut req);
                    client.delete(req).await.map(|r| r.into_inner().context)
                }
            };
            match result {
                Ok(context) => return Ok(context),
                // The coordinator answered with a verdict (e.g. its own quorum failed): pass it on.
                Err(status) if status.code() != tonic::Code::Unavailable || is_ours(&status) => {
                    return Err(Error::Remote(status));
                }
                Err(status) => failures.push(ReplicaFailure {
                    node: m.id.clone(),
                    reason: status.message().to_string(),
                }),
            }
        }
        Err(Error::QuorumNotReached {
            op,
            needed: w,
            got: 0,
            failures,
        })
    }

    async fn read_replica(&self, m: Member, key: Bytes) -> ReplicaReply<Option<VersionedState>> {
        let view_self = self.membership.current().self_id.clone();
        let result = if m.id == view_self {
            self.local.read(key).await.map_err(|e| e.to_string())
        } else {
            remote_read(&self.peers, &m, key, self.timeout).await
        };
        (m.id, result)
    }

    async fn write_replica(
        &self,
        m: Member,
        key: Bytes,
        state: VersionedState,
    ) -> ReplicaReply<()> {
        let result = remote_merge(&self.peers, &m, key, &state, self.timeout).await;
        (m.id, result)
    }
}

/// The key's N replicas: the top of its preference list.
fn top_n(view: &ClusterView, key: &[u8]) -> Vec<Member> {
    view.ring
        .preference_list(key, view.quorums.n as usize)
        .nodes
        .into_iter()
        .cloned()
        .collect()
}

fn mark_forwarded<T>(req: &mut Request<T>) {
    req.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

/// Whether a status came from a DynamoKV node's own verdict rather than the transport.
fn is_ours(status: &tonic::Status) -> bool {
    status
        .metadata()
        .contains_key(dynamokv_common::error_code::ERROR_CODE_METADATA)
}

async fn remote_read(
    peers: &Peers,
    m: &Member,
    key: Bytes,
    timeout: Duration,
) -> Result<Option<VersionedState>, String> {
    let mut client = peers.replica(&m.address)?;
    let call = client.read_local(pb::ReadLocalRequest { key: Some(key) });
    let reply = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    reply
        .state
        .map(|s| VersionedState::from_proto(&s).map_err(|e| format!("sent a bad state: {e}")))
        .transpose()
}

async fn remote_merge(
    peers: &Peers,
    m: &Member,
    key: Bytes,
    state: &VersionedState,
    timeout: Duration,
) -> Result<(), String> {
    let mut client = peers.replica(&m.address)?;
    let call = client.merge_local(pb::MergeLocalRequest {
        key: Some(key),
        state: Some(state.to_proto()),
    });
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(())
}

/// Sends the merged state to every replica whose reply lacked part of it.
async fn read_repair(
    key: Bytes,
    replies: Vec<(String, Option<VersionedState>)>,
    replicas: &[Member],
    self_id: &str,
    local: &Arc<LocalReplica>,
    peers: &Peers,
    timeout: Duration,
) {
    let mut merged = VersionedState::new();
    for (_, s) in replies.iter() {
        if let Some(s) = s {
            merged.merge(s);
        }
    }
    if merged.clock().is_empty() {
        return;
    }
    for (node, state) in &replies {
        let stale = state.as_ref().is_none_or(|s| !s.descends(&merged));
        if !stale {
            continue;
        }
        let Some(m) = replicas.iter().find(|m| &m.id == node) else {
            continue;
        };
        tracing::debug!(node = %m.id, "read repair");
        let result = if m.id == self_id {
            local
                .merge(key.clone(), merged.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            remote_merge(peers, m, key.clone(), &merged, timeout).await
        };
        if let Err(reason) = result {
            tracing::debug!(node = %m.id, %reason, "read repair failed");
        }
    }
}
