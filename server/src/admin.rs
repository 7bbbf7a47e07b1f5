//! Operator commands: print the ring, a key's preference list, and one replica's local copy of
//! a key. They ask a running node over gRPC and compute placement with the same shared code
//! the node and clients use.

use std::fmt::Write as _;

use bytes::Bytes;

use dynamokv_common::{Member, Ring, VersionedState, key_position};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;

/// What the node at `addr` sees of the cluster.
pub async fn fetch_status(addr: &str) -> Result<pb::StatusResponse, String> {
    let mut admin =
        dynamokv_proto::v1::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(std::time::Duration::from_secs(10));
    Ok(admin
        .status(req)
        .await
        .map_err(|s| format!("{addr} refused the status call: {}", s.message()))?
        .into_inner())
}

/// A node's status as text: each member, its address and whether that node reaches it.
pub fn describe_status(status: &pb::StatusResponse) -> String {
    let mut out = String::new();
    let down = status.members.iter().filter(|m| !m.reachable).count();
    let _ = writeln!(
        out,
        "{} in cluster {:?}: replicates {} of {} partitions (N = {}); {} of {} members reachable from here",
        status.node_id,
        status.cluster_name,
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
        let _ = writeln!(out, "  {:<12} {:<22} {state}{zone}", m.id, m.address);
    }
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
    let mut kv = KvClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let view = kv
        .membership(pb::MembershipRequest {})
        .await
        .map_err(|s| format!("{addr} refused the membership call: {}", s.message()))?
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
    let mut client = ReplicaClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let reply = client
        .read_local(pb::ReadLocalRequest {
            key: Some(Bytes::copy_from_slice(key)),
            include_hints: false,
        })
        .await
        .map_err(|s| format!("{addr} refused the read: {}", s.message()))?
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
