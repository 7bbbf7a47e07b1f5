//! Operator commands: print the ring, a key's preference list, and one replica's local copy of
//! a key. They ask a running node over gRPC and compute placement with the same shared code
//! the node and clients use.

use std::fmt::Write as _;

use bytes::Bytes;

use dynamokv_common::{Member, Ring, VersionedState, key_position};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;

type AdminClient = dynamokv_proto::v1::admin_client::AdminClient<tonic::transport::Channel>;

/// How the operator commands of this process reach a cluster that serves TLS: the CA to trust
/// and a client certificate or token to present (`--ca-cert`, `--client-cert`, `--client-key`,
/// `--token`). Set once, by `main`, before any command runs.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub tls: Option<dynamokv_proto::tls::ClientTls>,
    pub token: Option<String>,
}

static CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Uses `credentials` for every operator command of this process.
pub fn set_credentials(credentials: Credentials) {
    let _ = CREDENTIALS.set(credentials);
}

fn credentials() -> Credentials {
    CREDENTIALS.get().cloned().unwrap_or_default()
}

/// A connection to the node at `addr`, over TLS when credentials say so.
async fn channel(addr: &str) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr:?} is not a host:port address: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5));
    let channel = match credentials().tls {
        None => endpoint.connect().await.map_err(|e| e.to_string()),
        Some(tls) => {
            let channel = dynamokv_proto::tls::connect_lazy(&endpoint, tls);
            Ok(channel)
        }
    };
    channel.map_err(|e| format!("cannot reach {addr}: {e}"))
}

/// `request` with the token of this process's credentials, if any.
fn authorized<T>(request: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(request);
    if let Some(token) = credentials().token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// A refusal as the operator reads it: the TLS layer's reason when the connection failed there.
fn refusal(addr: &str, what: &str, status: &tonic::Status) -> String {
    match dynamokv_proto::tls::describe_failure(status, &format!("the node at {addr}")) {
        Some(tls) => format!("{addr} refused {what}: {tls}"),
        None => format!("{addr} refused {what}: {}", status.message()),
    }
}

async fn admin_client(addr: &str) -> Result<AdminClient, String> {
    Ok(AdminClient::new(channel(addr).await?))
}

/// One admin call to the node at `addr`, with a 10 s deadline, its refusal as text.
async fn admin_call<Req, T, F, Fut>(addr: &str, what: &str, request: Req, f: F) -> Result<T, String>
where
    F: FnOnce(AdminClient, tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = admin_client(addr).await?;
    let mut req = authorized(request);
    req.set_timeout(std::time::Duration::from_secs(10));
    Ok(f(client, req)
        .await
        .map_err(|s| refusal(addr, what, &s))?
        .into_inner())
}

/// What the node at `addr` sees of the cluster.
pub async fn fetch_status(addr: &str) -> Result<pb::StatusResponse, String> {
    admin_call(
        addr,
        "the status call",
        pb::StatusRequest {},
        |mut c, r| async move { c.status(r).await },
    )
    .await
}

/// The membership state (every member record, the ring version) of the node at `addr`.
pub async fn fetch_membership(
    addr: &str,
) -> Result<crate::membership_state::MembershipState, String> {
    let reply = admin_call(
        addr,
        "the ring call",
        pb::RingRequest {},
        |mut c, r| async move { c.ring(r).await },
    )
    .await?;
    let state = reply.state.ok_or("the node sent no membership state")?;
    crate::membership_state::MembershipState::from_proto(&state).map_err(|e| e.to_string())
}

/// Adds user `name` on the cluster of the node at `addr`; its token, if one was asked for.
pub async fn user_add(
    addr: &str,
    name: &str,
    token: bool,
) -> Result<Option<(String, String)>, String> {
    let request = pb::UserAddRequest {
        name: name.to_string(),
        token,
    };
    let reply = admin_call(addr, "to add the user", request, |mut c, r| async move {
        c.user_add(r).await
    })
    .await?;
    Ok(Some((reply.token, reply.token_id)).filter(|(t, _)| !t.is_empty()))
}

/// Issues user `name` another token; the token and its id.
pub async fn token_add(addr: &str, name: &str) -> Result<(String, String), String> {
    let request = pb::TokenAddRequest {
        user: name.to_string(),
    };
    let reply = admin_call(addr, "to add a token", request, |mut c, r| async move {
        c.token_add(r).await
    })
    .await?;
    Ok((reply.token, reply.token_id))
}

/// Revokes the token of user `name` whose id is `id`; the user after.
pub async fn token_revoke(addr: &str, name: &str, id: &str) -> Result<pb::UserInfo, String> {
    let request = pb::TokenRevokeRequest {
        user: name.to_string(),
        token_id: id.to_string(),
    };
    let reply = admin_call(
        addr,
        "to revoke the token",
        request,
        |mut c, r| async move { c.token_revoke(r).await },
    )
    .await?;
    reply.user.ok_or_else(|| format!("{addr} sent no user"))
}

/// Every user of the cluster of the node at `addr`.
pub async fn user_list(addr: &str) -> Result<Vec<pb::UserInfo>, String> {
    let reply = admin_call(
        addr,
        "to list the users",
        pb::UserListRequest {},
        |mut c, r| async move { c.user_list(r).await },
    )
    .await?;
    Ok(reply.users)
}

/// Removes user `name`.
pub async fn user_remove(addr: &str, name: &str) -> Result<(), String> {
    let request = pb::UserRemoveRequest {
        name: name.to_string(),
    };
    admin_call(addr, "to remove the user", request, |mut c, r| async move {
        c.user_remove(r).await
    })
    .await?;
    Ok(())
}

/// Grants (or, with `grant` false, revokes) `permissions` of `user` on keys under `prefix`;
/// the user's grants after the change.
pub async fn grant(
    addr: &str,
    user: &str,
    prefix: &str,
    permissions: &[String],
    grant: bool,
) -> Result<pb::UserInfo, String> {
    let request = pb::GrantRequest {
        user: user.to_string(),
        prefix: prefix.to_string(),
        permissions: permissions.to_vec(),
    };
    let what = if grant { "the grant" } else { "the revoke" };
    let reply = admin_call(addr, what, request, |mut c, r| async move {
        if grant {
            c.grant(r).await
        } else {
            c.revoke(r).await
        }
    })
    .await?;
    reply.user.ok_or_else(|| format!("{addr} sent no user"))
}

/// Users and their grants as text.
pub fn describe_users(users: &[pb::UserInfo]) -> String {
    if users.is_empty() {
        return "no users\n".into();
    }
    let mut out = String::new();
    for u in users {
        let grants = if u.grants.is_empty() {
            "no grants".to_string()
        } else {
            u.grants
                .iter()
                .map(|g| {
                    let prefix = if g.prefix.is_empty() {
                        "every key".to_string()
                    } else {
                        format!("{:?}", g.prefix)
                    };
                    format!("{} on {prefix}", g.permissions.join("+"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tokens = if u.token_ids.is_empty() {
            u.tokens.to_string()
        } else {
            format!("{} ({})", u.tokens, u.token_ids.join(", "))
        };
        let _ = writeln!(out, "{}  tokens: {tokens}  {grants}", u.name);
    }
    out
}

/// Asks the node at `addr` (started alone) to join the cluster of `seed`.
pub async fn join(addr: &str, seed: &str) -> Result<pb::JoinResponse, String> {
    let request = pb::JoinRequest {
        seed: seed.to_string(),
    };
    admin_call(addr, "to join", request, |mut c, r| async move {
        c.join(r).await
    })
    .await
}

/// Makes the node at `addr` sign version contexts with a new key from now on.
pub async fn rotate_context_key(addr: &str) -> Result<pb::RotateContextKeyResponse, String> {
    admin_call(
        addr,
        "the context key rotation",
        pb::RotateContextKeyRequest {},
        |mut c, r| async move { c.rotate_context_key(r).await },
    )
    .await
}

/// Stages the decommission of `node_id` (empty: the node at `addr`).
pub async fn leave(addr: &str, node_id: &str) -> Result<(), String> {
    let request = pb::LeaveRequest {
        node_id: node_id.to_string(),
    };
    admin_call(addr, "the leave", request, |mut c, r| async move {
        c.leave(r).await
    })
    .await?;
    Ok(())
}

/// Stages the removal of `node_id`, a node gone for good.
pub async fn remove(addr: &str, node_id: &str) -> Result<(), String> {
    let request = pb::RemoveRequest {
        node_id: node_id.to_string(),
    };
    admin_call(addr, "the removal", request, |mut c, r| async move {
        c.remove(r).await
    })
    .await?;
    Ok(())
}

/// The staged topology change as the node at `addr` plans it.
pub async fn plan(addr: &str) -> Result<pb::PlanResponse, String> {
    admin_call(addr, "to plan", pb::PlanRequest {}, |mut c, r| async move {
        c.plan(r).await
    })
    .await
}

/// Commits the staged change planned at ring version `planned`; returns the new version.
pub async fn commit(addr: &str, planned: u64) -> Result<u64, String> {
    let request = pb::CommitRequest {
        ring_version: planned,
    };
    Ok(
        admin_call(addr, "the commit", request, |mut c, r| async move {
            c.commit(r).await
        })
        .await?
        .ring_version,
    )
}

/// A plan as text: the owners before and after, each node's partitions after, and every
/// partition whose replicas change (the first `list` of them) with totals per pair of nodes,
/// and the command that commits it on `node`.
pub fn describe_plan(plan: &pb::PlanResponse, list: usize, node: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan from ring version {}: owners {} (N = {}) -> {} (N = {})",
        plan.ring_version,
        plan.owners_before.join(", "),
        plan.n_before,
        plan.owners_after.join(", "),
        plan.n_after
    );
    let mut owned: Vec<(&String, &u32)> = plan.owned_after.iter().collect();
    owned.sort();
    let owned: Vec<String> = owned.iter().map(|(id, n)| format!("{id} {n}")).collect();
    let _ = writeln!(out, "partitions owned after: {}", owned.join(", "));
    let (keys, bytes): (u64, u64) = plan
        .moves
        .iter()
        .fold((0, 0), |(k, b), m| (k + m.keys, b + m.bytes));
    let estimated = plan.moves.iter().any(|m| m.estimated);
    let _ = writeln!(
        out,
        "{} partition(s) change replicas, about {keys} key(s) and {} to copy{}",
        plan.moves.len(),
        human_bytes(bytes),
        if estimated {
            " (partitions the planning node does not hold are estimated from those it does)"
        } else {
            ""
        }
    );
    // Totals per (from, to) pair.
    let mut pairs: std::collections::BTreeMap<(String, String), (u32, u64, u64)> =
        Default::default();
    for m in &plan.moves {
        let from = if m.from.is_empty() {
            "-".to_string()
        } else {
            m.from.join("+")
        };
        let to = if m.to.is_empty() {
            "-".to_string()
        } else {
            m.to.join("+")
        };
        let e = pairs.entry((from, to)).or_default();
        e.0 += 1;
        e.1 += m.keys;
        e.2 += m.bytes;
    }
    let _ = writeln!(
        out,
        "  {:<24} {:<24} {:>10} {:>10} {:>10}",
        "from", "to", "partitions", "keys", "bytes"
    );
    for ((from, to), (n, k, b)) in &pairs {
        let _ = writeln!(
            out,
            "  {from:<24} {to:<24} {n:>10} {k:>10} {:>10}",
            human_bytes(*b)
        );
    }
    let shown = plan.moves.len().min(list);
    if shown > 0 {
        let _ = writeln!(out, "  partition  from -> to (keys, bytes)");
    }
    for m in &plan.moves[..shown] {
        let _ = writeln!(
            out,
            "  {:>9}  {} -> {} ({}, {}{})",
            m.partition,
            m.from.join(","),
            m.to.join(","),
            m.keys,
            human_bytes(m.bytes),
            if m.estimated { ", estimated" } else { "" }
        );
    }
    if shown > 0 && shown < plan.moves.len() {
        let _ = writeln!(
            out,
            "  ... and {} more (--all lists every one)",
            plan.moves.len() - shown
        );
    }
    if plan.blocked.is_empty() {
        let _ = writeln!(
            out,
            "commit with: dynamokv admin commit --node {node} --ring-version {}",
            plan.ring_version
        );
    } else {
        let _ = writeln!(out, "cannot commit now: {}", plan.blocked);
    }
    out
}

/// A membership view as text: the ring version and each member record.
pub fn describe_membership(state: &crate::membership_state::MembershipState) -> String {
    let mut out = String::new();
    let ring = state.ring_version();
    let _ = writeln!(
        out,
        "cluster {:?}, {} partitions, ring version {} (committed by {}): owners {}",
        state.cluster,
        state.partitions,
        ring.version,
        if ring.committed_by.is_empty() {
            "-"
        } else {
            &ring.committed_by
        },
        ring.owners.join(", ")
    );
    if state.handover_in_progress() {
        let _ = writeln!(
            out,
            "handover from the previous owners ({}) in progress; waiting for {}",
            ring.previous.join(", "),
            state.awaiting_handoff().join(", ")
        );
    }
    let built = state.ring().ok();
    for r in state.members() {
        let owned = built
            .as_ref()
            .map_or(0, |ring| ring.partitions_of(&r.id).len());
        let _ = writeln!(
            out,
            "  {:<12} {:<22} {:<8} owns {:>5}  record v{}{}{}{}",
            r.id,
            r.address,
            state.status_of(&r.id),
            owned,
            r.version,
            if ring.previous.contains(&r.id) && state.handover_in_progress() {
                if state.has_handed_off(&r.id) {
                    " handed off"
                } else {
                    " handing off"
                }
            } else {
                ""
            },
            if r.zone.is_empty() {
                String::new()
            } else {
                format!(" zone {}", r.zone)
            },
            if r.weight != 1 {
                format!(" weight {}", r.weight)
            } else {
                String::new()
            }
        );
    }
    out
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", b as f64 / 1_073_741_824.0),
    }
}

/// A node's status as text: each member, its address and whether that node reaches it.
pub fn describe_status(status: &pb::StatusResponse) -> String {
    let mut out = String::new();
    let down = status.members.iter().filter(|m| !m.reachable).count();
    let _ = writeln!(
        out,
        "{} in cluster {:?}: ring version {}, owns {} and replicates {} of {} partitions (N = {}); {} of {} members reachable from here",
        status.node_id,
        status.cluster_name,
        status.ring_version,
        status.partitions_owned,
        status.partitions_replicated,
        status.partitions,
        status.n,
        status.members.len() - down,
        status.members.len()
    );
    for m in &status.members {
        let state = if m.is_self {
            "this node"
        } else if m.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        };
        let zone = if m.zone.is_empty() {
            String::new()
        } else {
            format!(" zone {}", m.zone)
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<22} {:<8} owns {:>5}  {state}{zone}",
            m.id, m.address, m.status, m.partitions_owned
        );
    }
    let _ = writeln!(
        out,
        "key-range transfer: {}; {} partition(s) still to hand over from here, {} holding data no longer replicated here; {} key(s) sent since start",
        if status.handover {
            "handover in progress"
        } else {
            "no handover"
        },
        status.transfers_pending,
        status.partitions_to_drop,
        status.keys_transferred
    );
    let _ = write!(
        out,
        "hinted handoff: {} hint(s) held here",
        status.hints_queued
    );
    if status.hints_queued > 0 {
        let _ = write!(out, ", the oldest {}", human_age(status.oldest_hint_age_ms));
    }
    let _ = writeln!(out);
    for b in &status.hint_backlog {
        let _ = writeln!(
            out,
            "  for {:<12} {} hint(s), oldest {}",
            b.owner,
            b.hints,
            human_age(b.oldest_age_ms)
        );
    }
    if let Some(ae) = &status.anti_entropy {
        let _ = writeln!(
            out,
            "anti-entropy: {} exchange(s), {} key(s) compared, {} repaired",
            ae.exchanges, ae.keys_compared, ae.keys_repaired
        );
        for p in &ae.peers {
            let _ = writeln!(
                out,
                "  with {:<12} {} ago: {} shared partition(s), {} differed, {} key(s) repaired",
                p.peer,
                human_age(p.last_exchange_age_ms),
                p.partitions_compared,
                p.partitions_differing,
                p.keys_repaired
            );
        }
    }
    let _ = writeln!(
        out,
        "tombstones reaped: {}; background work paused for foreground latency: {} time(s)",
        status.tombstones_reaped, status.background_pauses
    );
    out
}

/// Milliseconds as "850 ms", "12.5 s", "3.2 min" or "1.5 h".
fn human_age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{:.1} min", ms as f64 / 6e4),
        _ => format!("{:.1} h", ms as f64 / 3.6e6),
    }
}

/// Fetches the cluster view from the node at `addr` and builds its ring.
pub async fn fetch_ring(addr: &str) -> Result<(pb::MembershipResponse, Ring), String> {
    let mut kv = KvClient::new(channel(addr).await?);
    let view = kv
        .membership(authorized(pb::MembershipRequest {}))
        .await
        .map_err(|s| refusal(addr, "the membership call", &s))?
        .into_inner();
    let members = view.members.iter().map(Member::from_proto).collect();
    let ring = Ring::new(view.partitions, members).map_err(|e| e.to_string())?;
    Ok((view, ring))
}

/// Contiguous runs of partitions, as "a-b" or "a".
fn runs(parts: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let start = parts[i];
        let mut end = start;
        while i + 1 < parts.len() && parts[i + 1] == end + 1 {
            i += 1;
            end = parts[i];
        }
        out.push(if start == end {
            format!("{start}")
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    const SHOWN: usize = 16;
    if out.len() > SHOWN {
        let more = out.len() - SHOWN;
        out.truncate(SHOWN);
        out.push(format!("... ({more} more runs)"));
    }
    out.join(",")
}

/// The ring as text: each node's partitions, and with `key`, its preference list.
pub fn describe_ring(view: &pb::MembershipResponse, ring: &Ring, key: Option<&[u8]>) -> String {
    let mut out = String::new();
    let q = ring.partition_count();
    let _ = writeln!(
        out,
        "cluster {:?}: {} nodes, Q = {q} partitions, N = {}, R = {}, W = {}",
        view.cluster_name,
        ring.members().len(),
        view.n,
        view.r,
        view.w
    );
    for m in ring.members() {
        let parts = ring.partitions_of(&m.id);
        let zone = if m.zone.is_empty() {
            String::new()
        } else {
            format!(" zone {}", m.zone)
        };
        let _ = writeln!(
            out,
            "  {} at {}{zone} weight {}: {} partitions ({:.1}%): {}",
            m.id,
            m.address,
            m.weight,
            parts.len(),
            100.0 * parts.len() as f64 / q as f64,
            runs(&parts)
        );
    }
    if let Some(key) = key {
        let pl = ring.preference_list(key, view.n as usize);
        let (start, end) = ring.partition_range(pl.partition);
        let _ = writeln!(
            out,
            "key {:?}: position {:032x}, partition {} [{start:032x}..{end:032x}]",
            String::from_utf8_lossy(key),
            key_position(key),
            pl.partition
        );
        let ids = |ms: &[&Member]| {
            ms.iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "  preference list (top N): {}", ids(&pl.nodes));
        let _ = writeln!(out, "  fallbacks: {}", ids(&pl.fallbacks));
    }
    out
}

/// One replica's local state of `key`, read without coordination.
pub async fn debug_read(
    addr: &str,
    key: &[u8],
) -> Result<(String, Option<VersionedState>), String> {
    let mut client = ReplicaClient::new(channel(addr).await?);
    let reply = client
        .read_local(authorized(pb::ReadLocalRequest {
            key: Some(Bytes::copy_from_slice(key)),
            include_hints: false,
        }))
        .await
        .map_err(|s| {
            refusal(
                addr,
                "the read (on a TLS cluster, a node-to-node call needs a node certificate)",
                &s,
            )
        })?
        .into_inner();
    let state = reply
        .state
        .map(|s| VersionedState::from_proto(&s).map_err(|e| e.to_string()))
        .transpose()?;
    Ok((format!("{:016x}", reply.actor), state))
}

/// A replica state as text.
pub fn describe_state(actor: &str, state: Option<&VersionedState>) -> String {
    let mut out = format!("replica actor {actor}\n");
    let Some(state) = state else {
        out.push_str("  no local copy\n");
        return out;
    };
    let mut clock: Vec<String> = state
        .clock()
        .iter()
        .filter(|(_, c, _)| *c > 0)
        .map(|(a, c, _)| format!("{a}:{c}"))
        .collect();
    clock.extend(
        state
            .clock()
            .cloud()
            .map(|d| format!("{}:{} (single)", d.actor, d.counter)),
    );
    let _ = writeln!(out, "  clock [{}]", clock.join(", "));
    for s in state.siblings() {
        let what = match &s.value {
            Some(v) => format!(
                "{} bytes {:?}",
                v.len(),
                String::from_utf8_lossy(&v[..v.len().min(64)])
            ),
            None => "tombstone".to_string(),
        };
        let _ = writeln!(
            out,
            "  sibling {}:{} write {} at {} ms: {what}",
            s.dot.actor, s.dot.counter, s.write_id, s.timestamp_ms
        );
    }
    let retired = state.retired().count();
    if retired > 0 {
        let _ = writeln!(out, "  {retired} superseded write id(s) remembered");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_compress_consecutive_partitions() {
        assert_eq!(runs(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(runs(&[]), "");
        let spread: Vec<u32> = (0..40).map(|i| i * 2).collect();
        assert!(
            runs(&spread).ends_with(",30,... (24 more runs)"),
            "{}",
            runs(&spread)
        );
    }

    #[test]
    fn ring_description_names_every_node_and_the_keys_list() {
        let members = vec![
            Member::new("a", "h:1"),
            Member::new("b", "h:2"),
            Member::new("c", "h:3"),
        ];
        let ring = Ring::new(16, members).unwrap();
        let view = pb::MembershipResponse {
            cluster_name: "t".into(),
            partitions: 16,
            n: 2,
            r: 1,
            w: 1,
            members: vec![],
            self_id: "a".into(),
            ..Default::default()
        };
        let text = describe_ring(&view, &ring, Some(b"k"));
        for id in [
            "a at h:1",
            "b at h:2",
            "c at h:3",
            "preference list (top N)",
            "fallbacks",
        ] {
            assert!(text.contains(id), "{text}");
        }
    }
}
