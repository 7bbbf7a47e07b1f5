//! Gossip (`server/src/gossip.rs`, `membership_state.rs`, `membership.rs`): the messages one
//! node's gossip sends another, decoded and used as the node uses them.
//!
//! Inputs: a `GossipRequest` a node answers (`Membership::handle_gossip`: the peer's digest and
//! delta merged into the node's view, which is then published and stored); the two
//! `GossipResponse`s an exchange the node opens gets back (`Gossiper::exchange` over a
//! transport that answers with them; the node's view then takes what it learned); a
//! `MembershipDigest` the node computes a delta for; a membership view found in the node's
//! store at start (`Membership::open`). Each is raw bytes or a message built from small
//! domains (few member ids, small versions), which the target encodes and the node decodes.
//! The node starts as a member of a static three-node cluster, as a node asking to join, or
//! as a cluster of one.
//!
//! Checks: no panic; what the node sends back (delta, digest) is something a peer's decoder
//! accepts; the node's view survives its encoding; answering the same request twice changes
//! nothing the second time; a view a node learned reopens from its store without a panic, and
//! without an error if the node had published it (it made a ring).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;

use dynamokv_fuzz::{PARTITIONS, block_on, config};
use dynamokv_proto::v1 as pb;
use dynamokv_server::config::Config;
use dynamokv_server::gossip::{GossipTransport, Gossiper};
use dynamokv_server::membership::{Membership, TopologyError};
use dynamokv_server::membership_state::{Digest, MembershipState};
use dynamokv_server::storage::{MemoryStorage, Storage};

/// Where the membership view is kept in a node's store (`membership.rs`).
const META_MEMBERSHIP: &str = "membership";

#[derive(Arbitrary, Debug)]
struct Record {
    version: u8,
    id: u8,
    address: u8,
    zone: u8,
    weight: u8,
    status: u8,
    handed_off: u8,
    ring_seen: u8,
}

#[derive(Arbitrary, Debug)]
struct Ring {
    version: u8,
    committed_by: u8,
    owners: Vec<u8>,
    previous: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct View {
    other_cluster: bool,
    other_partitions: bool,
    members: Vec<Record>,
    ring: Option<Ring>,
}

#[derive(Arbitrary, Debug)]
struct DigestParts {
    members: Vec<(u8, u8)>,
    ring: Option<Ring>,
}

/// A message, as raw bytes or built.
#[derive(Arbitrary, Debug)]
enum Msg<T> {
    Raw(Vec<u8>),
    Built(T),
}

#[derive(Arbitrary, Debug)]
struct RequestParts {
    other_cluster: bool,
    other_partitions: bool,
    state_hash: Vec<u8>,
    digest: Option<DigestParts>,
    delta: Option<View>,
}

#[derive(Arbitrary, Debug)]
struct ResponseParts {
    in_sync: bool,
    delta: Option<View>,
    digest: Option<DigestParts>,
}

#[derive(Arbitrary, Debug)]
enum Case {
    Answer(Msg<RequestParts>),
    Open {
        opening: Msg<ResponseParts>,
        answer: Msg<ResponseParts>,
    },
    Digest(Msg<DigestParts>),
    Stored(Msg<View>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    start: u8,
    case: Case,
}

fn id(i: u8) -> String {
    match i % 6 {
        5 => String::new(),
        i => format!("node-{i}"),
    }
}

fn ring(r: &Ring) -> pb::RingVersion {
    pb::RingVersion {
        version: u64::from(r.version % 8),
        committed_by: id(r.committed_by),
        owners: r.owners.iter().take(6).map(|&i| id(i)).collect(),
        previous: r.previous.iter().take(6).map(|&i| id(i)).collect(),
    }
}

fn view(v: &View) -> pb::MembershipState {
    const STATUSES: [&str; 5] = ["joining", "up", "leaving", "removed", "bogus"];
    pb::MembershipState {
        cluster: if v.other_cluster { "other" } else { "fuzz" }.into(),
        partitions: if v.other_partitions { 32 } else { PARTITIONS },
        members: v
            .members
            .iter()
            .take(8)
            .map(|r| pb::MemberRecord {
                version: u64::from(r.version % 8),
                id: id(r.id),
                address: match r.address % 4 {
                    0 => String::new(),
                    a => format!("127.0.0.1:{}", 7000 + u16::from(a)),
                },
                zone: ["", "a", "b"][usize::from(r.zone % 3)].into(),
                weight: u32::from(r.weight % 4),
                status: STATUSES[usize::from(r.status) % STATUSES.len()].into(),
                handed_off: u64::from(r.handed_off % 2),
                ring_seen: u64::from(r.ring_seen % 2),
                // A member's context keys: none, one, or malformed ones (ids 0, short secrets,
                // out of order, too many).
                context_keys: (0..usize::from(r.ring_seen % 5))
                    .map(|i| pb::ContextKey {
                        id: u64::from(r.version % 3) + i as u64,
                        secret: vec![r.zone; if r.weight % 3 == 0 { 31 } else { 32 }].into(),
                        created_ms: u64::from(r.handed_off) * 10 + i as u64,
                    })
                    .collect(),
            })
            .collect(),
        ring: v.ring.as_ref().map(ring),
    }
}

fn digest(d: &DigestParts) -> pb::MembershipDigest {
    pb::MembershipDigest {
        members: d
            .members
            .iter()
            .take(8)
            .map(|&(i, v)| (id(i), u64::from(v % 8)))
            .collect(),
        ring: d.ring.as_ref().map(ring),
    }
}

/// `msg` as the bytes on the wire, decoded as the node decodes them.
fn decode<T, M: Message + Default>(msg: &Msg<T>, build: impl Fn(&T) -> M) -> Option<M> {
    let bytes = match msg {
        Msg::Raw(b) => b.clone(),
        Msg::Built(parts) => build(parts).encode_to_vec(),
    };
    M::decode(bytes.as_slice()).ok()
}

fn request(r: &RequestParts) -> pb::GossipRequest {
    pb::GossipRequest {
        cluster: if r.other_cluster { "other" } else { "fuzz" }.into(),
        partitions: if r.other_partitions { 32 } else { PARTITIONS },
        from: "node-1".into(),
        state_hash: r.state_hash.clone().into(),
        digest: r.digest.as_ref().map(digest),
        delta: r.delta.as_ref().map(view),
    }
}

fn response(r: &ResponseParts) -> pb::GossipResponse {
    pb::GossipResponse {
        in_sync: r.in_sync,
        delta: r.delta.as_ref().map(view),
        digest: r.digest.as_ref().map(digest),
    }
}

/// The node's configuration: a member of a static cluster of three, a node asking to join
/// through a seed, or the first node of a new cluster.
fn node_config(start: u8) -> Config {
    match start % 3 {
        0 => config(3),
        s => {
            let mut c = config(1);
            c.cluster.members.clear();
            if s == 1 {
                c.cluster.seeds = vec!["127.0.0.1:7001".into()];
            }
            c
        }
    }
}

/// A transport whose peer answers with the given responses, in turn.
struct Scripted(std::sync::Mutex<Vec<Option<pb::GossipResponse>>>);

impl GossipTransport for Scripted {
    async fn call(
        &self,
        _peer: &str,
        _request: pb::GossipRequest,
    ) -> Result<pb::GossipResponse, String> {
        let mut script = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if script.is_empty() {
            return Err("no more answers".into());
        }
        script.remove(0).ok_or_else(|| "undecodable answer".into())
    }
}

/// What every view a node holds must satisfy.
fn check_view(m: &Membership) {
    let state = m.state();
    assert_eq!(
        MembershipState::from_proto(&state.to_proto()).as_ref(),
        Ok(&state),
        "the node's view does not survive its encoding"
    );
    let view = m.current();
    assert!(!view.ring.members().is_empty());
    let _ = (
        state.staged_owners(),
        state.commit_blocked(),
        state.awaiting_handoff(),
    );
    for r in state.members() {
        let _ = state.status_of(&r.id);
    }
}

/// Whatever the node sends a peer, the peer can decode.
fn check_sent(delta: Option<&pb::MembershipState>, digest: Option<&pb::MembershipDigest>) {
    if let Some(d) = delta {
        let decoded = MembershipState::from_proto(d);
        assert!(
            decoded.is_ok(),
            "the node sent a view no peer accepts: {decoded:?}"
        );
    }
    if let Some(d) = digest {
        let decoded = Digest::from_proto(d);
        assert!(
            decoded.is_ok(),
            "the node sent a digest no peer accepts: {decoded:?}"
        );
    }
}

/// The node restarts from what it stored: an error or a node, never a panic; a node whose
/// view was published (its state made a ring) restarts.
fn reopen(c: &Config, store: &std::sync::Arc<dyn Storage>, published: bool) {
    match Membership::open(c, "127.0.0.1:7000", Some(store.clone())) {
        Ok(again) => check_view(&again),
        Err(e) => assert!(
            !published,
            "a node cannot restart from its published view: {e}"
        ),
    }
}

fuzz_target!(|input: Input| {
    let c = node_config(input.start);
    let store: std::sync::Arc<dyn Storage> = std::sync::Arc::new(MemoryStorage::default());
    if let Case::Stored(msg) = &input.case {
        let bytes = match msg {
            Msg::Raw(b) => b.clone(),
            Msg::Built(v) => view(v).encode_to_vec(),
        };
        store
            .put_meta(META_MEMBERSHIP, &bytes)
            .expect("memory write");
        reopen(&c, &store, false);
        return;
    }
    let m = Membership::open(&c, "127.0.0.1:7000", Some(store.clone()))
        .expect("the node's own configuration opens");
    assert!(
        store.get_meta(META_MEMBERSHIP).is_ok_and(|v| v.is_some()),
        "the node keeps its view under another name: update META_MEMBERSHIP"
    );
    check_view(&m);
    match &input.case {
        Case::Answer(msg) => {
            let Some(req) = decode(msg, request) else {
                return;
            };
            if let Ok(answer) = m.handle_gossip(&req) {
                check_sent(answer.delta.as_ref(), answer.digest.as_ref());
            }
            check_view(&m);
            let once = m.state();
            let _ = m.handle_gossip(&req);
            assert_eq!(m.state(), once, "the same gossip taught the node twice");
        }
        Case::Open { opening, answer } => {
            let script = vec![decode(opening, response), decode(answer, response)];
            let g = Gossiper::new("node-0", m.state());
            let learned = block_on(g.exchange(&Scripted(script.into()), "127.0.0.1:7001"));
            if learned.is_ok() {
                let learned = g.state();
                let _ = m.update(|s| {
                    s.merge(&learned)
                        .map_err(|e| TopologyError::Refused(e.to_string()))
                });
            }
            check_view(&m);
        }
        Case::Digest(msg) => {
            let Some(d) = decode(msg, digest) else {
                return;
            };
            if let Ok(d) = Digest::from_proto(&d) {
                let delta = m.state().delta_for(&d);
                check_sent(Some(&delta.to_proto()), Some(&d.to_proto()));
            }
        }
        Case::Stored(_) => unreachable!("handled above"),
    }
    let published = m.current().state == m.state();
    reopen(&c, &store, published);
});
