//! Reads coordinated by the client (paper 6.4): the client asks the key's first N healthy
//! replicas for their own state in parallel, returns after R answers with every causally
//! concurrent version and the context covering them, keeps collecting late answers, and sends
//! stale replicas a read repair (paper 4.7's read repair, here from the client). Which nodes
//! are asked and which answers count is decided by the same pure code a node's coordinator
//! uses (`dynamokv_common::sloppy_quorum`); only the fan-out is here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use dynamokv_common::limits::check_quorum;
use dynamokv_common::sloppy_quorum::{self, Acks};
use dynamokv_common::{Member, VersionedState, combine_contexts};
use dynamokv_proto::transport::{RING_VERSION_METADATA, is_silence};
use dynamokv_proto::v1 as pb;

use crate::Error;
use crate::client::{Context, GetResult};
use crate::nodes::{Nodes, check_echo};
use crate::routing::RingView;

/// Why a client-coordinated read failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// A node routed to by the client's ring says its ring is newer, or that it holds no
    /// replica of the key: pull the ring and route again.
    RingMoved(Error),
    Failed(Error),
}

/// How a read is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPlan {
    pub r: Option<u32>,
    pub deadline: Instant,
    /// Time one node gets to answer.
    pub attempt_timeout: Option<Duration>,
    /// Ask one more replica when R answers have not come within this.
    pub hedge_after: Option<Duration>,
}

type Reply = (Member, Result<pb::ReadReplicaResponse, NodeFailure>);

#[derive(Debug)]
enum NodeFailure {
    Moved(Error),
    Other(Error),
}

/// Whether a node's error is about the request rather than the node: input it refuses.
fn is_verdict(e: &Error) -> bool {
    matches!(
        e,
        Error::EmptyKey { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::InvalidContext { .. }
            | Error::InvalidQuorum { .. }
            | Error::MissingField { .. }
            | Error::InvalidInput { .. }
    ) || e.is_refusal()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One replica's own state of `key` (`hints`: as a fallback, with the hints it holds).
async fn read_one(
    nodes: Arc<Nodes>,
    m: Member,
    key: Bytes,
    hints: bool,
    ring_version: u64,
    budget: Duration,
) -> Reply {
    let result = async {
        let mut kv = nodes.kv(&m.address).map_err(NodeFailure::Other)?;
        let request_id = nodes.request_id();
        let mut req = tonic::Request::new(pb::ReadReplicaRequest {
            key: Some(key),
            include_hints: hints,
            ring_version,
            request_id,
        });
        req.set_timeout(budget);
        match tokio::time::timeout(budget, kv.read_replica(req)).await {
            Err(_) => {
                nodes.silent(&m.address);
                Err(NodeFailure::Other(Error::Unavailable {
                    message: format!("no answer within {budget:?}"),
                }))
            }
            Ok(Err(status)) => {
                if is_silence(&status) {
                    nodes.silent(&m.address);
                } else {
                    nodes.answered(&m.address);
                }
                let moved = status.metadata().contains_key(RING_VERSION_METADATA);
                let err = Error::from_status(status, &m.address);
                Err(if moved {
                    NodeFailure::Moved(err)
                } else {
                    NodeFailure::Other(err)
                })
            }
            Ok(Ok(reply)) => {
                nodes.answered(&m.address);
                let reply = reply.into_inner();
                check_echo(request_id, reply.request_id, &m.address).map_err(NodeFailure::Other)?;
                Ok(reply)
            }
        }
    }
    .await;
    (m, result)
}

/// A quorum read of `key` by `view`, coordinated here.
pub(crate) async fn get(
    nodes: &Arc<Nodes>,
    view: &RingView,
    key: Bytes,
    plan: ReadPlan,
) -> Result<GetResult, ReadFailure> {
    let r = plan.r.unwrap_or(view.r);
    check_quorum("R", r, view.n).map_err(|e| ReadFailure::Failed(e.into()))?;
    let sets = view.replica_sets(&key);
    if r as usize > sets.replicas.len() {
        let e = dynamokv_common::InputError::InvalidQuorum {
            name: "R",
            value: r,
            n: sets.replicas.len() as u32,
        };
        return Err(ReadFailure::Failed(e.into()));
    }
    let is_up = |m: &Member| nodes.is_up(&m.address);
    let (asked, extra) =
        sloppy_quorum::place_read(&sets.replicas, &sets.fallbacks, "", r as usize, is_up);

    let budget = || {
        let left = plan.deadline.saturating_duration_since(Instant::now());
        plan.attempt_timeout.map_or(left, |t| left.min(t))
    };
    let read = |m: Member, hints: bool| {
        read_one(
            Arc::clone(nodes),
            m,
            key.clone(),
            hints,
            view.version,
            budget(),
        )
    };
    let mut asked_ids: HashSet<String> = HashSet::new();
    let mut pending = FuturesUnordered::new();
    // Hedged reads ask R replicas first and keep the others in reserve: one more is asked
    // whenever one fails, and each time the hedge delay passes without R answers. Only
    // primaries hedge: a fallback's answer (its hints) counts as a replica's, so asking one
    // while a primary holding the latest write is merely slow could complete the quorum
    // without that write.
    let mut reserve: std::collections::VecDeque<Member> = Default::default();
    let mut asked = asked;
    if plan.hedge_after.is_some() && extra.is_empty() && asked.len() > r as usize {
        reserve.extend(asked.split_off(r as usize));
    }
    for m in asked {
        asked_ids.insert(m.id.clone());
        pending.push(read(m, false));
    }
    let mut asked_fallbacks = !extra.is_empty();
    for m in extra {
        asked_ids.insert(m.id.clone());
        pending.push(read(m, true));
    }

    let mut replies: Vec<(Member, Option<VersionedState>)> = Vec::new();
    // The signed context of each counted answer: the read's context is them side by side.
    let mut contexts: Vec<bytes::Bytes> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut moved: Option<Error> = None;
    let mut fastest: Option<String> = None;
    let mut answers = Acks::new(&sets.sets);
    let mut hedge_at = plan.hedge_after.map(|d| Instant::now() + d);
    let deadline = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(deadline);
    while !answers.met(r) {
        tokio::select! {
            next = pending.next() => match next {
                Some((m, Ok(reply))) => {
                    let state = match reply.state.as_ref().map(VersionedState::from_proto) {
                        None => None,
                        Some(Ok(s)) => Some(s),
                        Some(Err(e)) => {
                            failures.push(format!("{}: sent a malformed state ({e})", m.id));
                            continue;
                        }
                    };
                    if reply.ring.is_some_and(|n| n.moved_on) {
                        nodes.pull_ring.notify_one();
                    }
                    let primary = sets.replicas.iter().any(|p| p.id == m.id);
                    if fastest.is_none() && primary {
                        fastest = Some(m.id.clone());
                    }
                    answers.add(&m.id);
                    contexts.push(reply.context);
                    replies.push((m, state));
                }
                Some((m, Err(failure))) => {
                    match failure {
                        NodeFailure::Moved(e) => {
                            failures.push(format!("{}: {e}", m.id));
                            moved = Some(e);
                        }
                        // A node's verdict on the request itself (a key over its limits):
                        // every replica would give the same.
                        NodeFailure::Other(e) if is_verdict(&e) => {
                            return Err(ReadFailure::Failed(e));
                        }
                        NodeFailure::Other(e) => failures.push(format!("{}: {e}", m.id)),
                    }
                    if let Some(m) = reserve.pop_front() {
                        asked_ids.insert(m.id.clone());
                        pending.push(read(m, false));
                    }
                }
                // Replicas that looked up did not answer: the fallbacks that are up now. Not when
                // one refused because the ring moved on: it is up and holds the key, and a
                // fallback's answer (its hints only) must not stand in for it; the read is
                // routed again instead.
                None if !asked_fallbacks && moved.is_none() => {
                    asked_fallbacks = true;
                    let missing = sets.replicas.len().saturating_sub(replies.len());
                    let more: Vec<Member> = sets
                        .fallbacks
                        .iter()
                        .filter(|m| is_up(m) && !asked_ids.contains(&m.id))
                        .take(missing)
                        .cloned()
                        .collect();
                    for m in more {
                        asked_ids.insert(m.id.clone());
                        pending.push(read(m, true));
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(hedge_at.unwrap_or(plan.deadline)), if hedge_at.is_some() && !reserve.is_empty() => {
                // The first replicas are slow: ask one more, and again after another delay.
                if let Some(m) = reserve.pop_front() {
                    asked_ids.insert(m.id.clone());
                    pending.push(read(m, false));
                }
                hedge_at = plan.hedge_after.map(|d| Instant::now() + d);
            },
            _ = &mut deadline => {
                return Err(ReadFailure::Failed(Error::Timeout {
                    after: Duration::ZERO,
                }));
            }
        }
    }
    if !answers.met(r) {
        if let Some(e) = moved {
            return Err(ReadFailure::RingMoved(e));
        }
        if answers.all == 0 {
            // Not one replica answered: the cluster, as this client reaches it, is unavailable
            // for this key (what a node's coordinator says when it reaches too few replicas).
            return Err(ReadFailure::Failed(Error::Unavailable {
                message: format!(
                    "no replica of the key answered: {}",
                    if failures.is_empty() {
                        "no node could be asked".to_string()
                    } else {
                        failures.join("; ")
                    }
                ),
            }));
        }
        return Err(ReadFailure::Failed(Error::QuorumNotReached {
            needed: r,
            got: answers.all,
            message: format!(
                "get needed {r} replica(s) but only {} answered: {}",
                answers.all,
                if failures.is_empty() {
                    "no node could be asked".to_string()
                } else {
                    failures.join("; ")
                }
            ),
        }));
    }
    let now = now_ms();
    let merged = merge_all(&replies, now);
    // Each replica signed the context of its own answer; the read saw their join, which is
    // what a node verifying the fragments computes (common/src/context.rs).
    let context = combine_contexts(
        &key,
        contexts.iter().map(|c| c.as_ref()),
        fastest.as_deref(),
    )
    .map_err(|e| {
        ReadFailure::Failed(Error::InvalidContext {
            message: format!("a replica answered with a context that does not parse: {e}"),
        })
    })?;
    let result = GetResult {
        values: merged
            .live_values()
            .into_iter()
            .map(|b| b.to_vec())
            .collect(),
        context: Context::from_bytes(context),
        timestamps_ms: merged.live_timestamps(),
        tombstone: merged.has_tombstone(),
    };

    // Late answers and read repair happen after the caller has its answer.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let nodes = Arc::clone(nodes);
        let replicas = sets.replicas;
        let budget = budget();
        runtime.spawn(async move {
            while let Some((m, reply)) = pending.next().await {
                if let Ok(reply) = reply {
                    let state = reply
                        .state
                        .as_ref()
                        .map(VersionedState::from_proto)
                        .transpose();
                    if let Ok(state) = state {
                        replies.push((m, state));
                    }
                }
            }
            read_repair(&nodes, key, replies, &replicas, budget).await;
        });
    }
    Ok(result)
}

/// Every answered state merged into one.
fn merge_all(replies: &[(Member, Option<VersionedState>)], now: u64) -> VersionedState {
    let mut merged = VersionedState::new();
    for s in replies.iter().filter_map(|(_, s)| s.as_ref()) {
        merged.merge(s, now);
    }
    merged
}

/// The replicas among `replies` that hold something `stale` (another replica's answer) lacks:
/// what it should read to catch up.
fn sources_for<'a>(
    stale: &Option<VersionedState>,
    replies: &'a [(Member, Option<VersionedState>)],
    replicas: &[Member],
) -> Vec<&'a Member> {
    replies
        .iter()
        .filter(|(m, s)| {
            replicas.iter().any(|p| p.id == m.id)
                && s.as_ref().is_some_and(|s| {
                    !s.clock().is_empty() && stale.as_ref().is_none_or(|mine| !mine.descends(s))
                })
        })
        .map(|(m, _)| m)
        .collect()
}

/// Asks every replica whose answer lacked part of what others answered to read the key from
/// those others (the node reads them itself: a client names replicas, it never sends a
/// state, see `Kv.RepairReplica`).
async fn read_repair(
    nodes: &Arc<Nodes>,
    key: Bytes,
    replies: Vec<(Member, Option<VersionedState>)>,
    replicas: &[Member],
    budget: Duration,
) {
    let budget = budget.max(Duration::from_millis(500));
    for (m, s) in &replies {
        if !replicas.iter().any(|p| p.id == m.id) {
            continue;
        }
        let sources: Vec<String> = sources_for(s, &replies, replicas)
            .into_iter()
            .filter(|src| src.id != m.id)
            .map(|src| src.id.clone())
            .collect();
        if sources.is_empty() {
            continue;
        }
        tracing::debug!(node = %m.id, ?sources, "read repair from the client");
        let Ok(mut kv) = nodes.kv(&m.address) else {
            continue;
        };
        let request_id = nodes.request_id();
        let mut req = tonic::Request::new(pb::RepairReplicaRequest {
            key: Some(key.clone()),
            state: None,
            request_id,
            sources,
        });
        req.set_timeout(budget);
        match tokio::time::timeout(budget, kv.repair_replica(req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => tracing::debug!(node = %m.id, %status, "read repair failed"),
            Err(_) => tracing::debug!(node = %m.id, "read repair got no answer"),
        }
    }
}
