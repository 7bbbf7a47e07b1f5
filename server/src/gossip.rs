//! Gossip (paper 4.8.1): "each node contacts a peer chosen at random every second and the two
//! nodes efficiently reconcile their persisted membership change histories."
//!
//! One exchange, push-pull, in at most two calls over a [`GossipTransport`]:
//! 1. The initiator sends a 128-bit hash of its whole view. Equal hashes end the exchange: a
//!    cluster at rest costs one call of a few dozen bytes a second per node. Otherwise the
//!    responder answers with its [`Digest`] (each member's record version, the ring version).
//! 2. The initiator sends its own digest and what the responder lacks; the responder merges it
//!    and answers with what the initiator lacks, which the initiator merges.
//!
//! Which peer to call is the caller's choice ([`Gossiper::exchange`]); the choice, the clock
//! and the transport are the seams a simulation drives. Tests run many nodes in one process
//! over [`InMemoryTransport`], counting the encoded bytes of every message. Why our own rather
//! than a crate: docs/design/gossip.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message;

use dynamokv_proto::v1 as pb;

use crate::membership_state::{Digest, MembershipState, MergeError};

/// Carries one gossip call to a peer and brings its answer back.
pub trait GossipTransport: Send + Sync + 'static {
    fn call(
        &self,
        peer: &str,
        request: pb::GossipRequest,
    ) -> impl std::future::Future<Output = Result<pb::GossipResponse, String>> + Send;
}

/// A node's side of gossip: its view, and the two halves of an exchange.
#[derive(Debug)]
pub struct Gossiper {
    id: String,
    state: Mutex<MembershipState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A 128-bit hash of a view's encoding (members sorted by id, so equal views hash equal).
fn state_hash(state: &MembershipState) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(
        &xxhash_rust::xxh3::xxh3_128(&state.to_proto().encode_to_vec()).to_le_bytes(),
    )
}

impl Gossiper {
    pub fn new(id: impl Into<String>, state: MembershipState) -> Gossiper {
        Gossiper {
            id: id.into(),
            state: Mutex::new(state),
        }
    }

    /// This node's view now.
    pub fn state(&self) -> MembershipState {
        lock(&self.state).clone()
    }

    /// Changes this node's view (an operator's join, leave or commit arrives here).
    pub fn update(&self, f: impl FnOnce(&mut MembershipState)) {
        f(&mut lock(&self.state));
    }

    fn merge_proto(&self, delta: Option<&pb::MembershipState>) -> Result<bool, MergeError> {
        let Some(delta) = delta else {
            return Ok(false);
        };
        let delta = MembershipState::from_proto(delta)?;
        lock(&self.state).merge(&delta)
    }

    /// One exchange with `peer` over `transport`. Returns whether this node's view changed.
    pub async fn exchange<T: GossipTransport>(
        &self,
        transport: &T,
        peer: &str,
    ) -> Result<bool, String> {
        let (cluster, partitions, hash) = {
            let state = lock(&self.state);
            (state.cluster.clone(), state.partitions, state_hash(&state))
        };
        let request = |state_hash, digest, delta| pb::GossipRequest {
            cluster: cluster.clone(),
            partitions,
            from: self.id.clone(),
            state_hash,
            digest,
            delta,
        };
        let opening = transport.call(peer, request(hash, None, None)).await?;
        if opening.in_sync {
            return Ok(false);
        }
        let theirs = opening
            .digest
            .as_ref()
            .ok_or("the peer's answer has no digest")?;
        let theirs = Digest::from_proto(theirs).map_err(|e| e.to_string())?;
        let (digest, delta) = {
            let state = lock(&self.state);
            (
                state.digest().to_proto(),
                state.delta_for(&theirs).to_proto(),
            )
        };
        let answer = transport
            .call(
                peer,
                request(bytes::Bytes::new(), Some(digest), Some(delta)),
            )
            .await?;
        self.merge_proto(answer.delta.as_ref())
            .map_err(|e| e.to_string())
    }

    /// Answers a peer's call: the responder's half of an exchange.
    pub fn handle(&self, request: &pb::GossipRequest) -> Result<pb::GossipResponse, MergeError> {
        {
            let state = lock(&self.state);
            if request.cluster != state.cluster {
                return Err(MergeError::OtherCluster {
                    ours: state.cluster.clone(),
                    theirs: request.cluster.clone(),
                });
            }
            if request.partitions != state.partitions {
                return Err(MergeError::OtherPartitioning {
                    ours: state.partitions,
                    theirs: request.partitions,
                });
            }
        }
        match &request.digest {
            // The opening: equal hashes end the exchange; otherwise say what this node holds.
            None => {
                let state = lock(&self.state);
                if request.state_hash == state_hash(&state) {
                    return Ok(pb::GossipResponse {
                        in_sync: true,
                        ..Default::default()
                    });
                }
                Ok(pb::GossipResponse {
                    in_sync: false,
                    delta: None,
                    digest: Some(state.digest().to_proto()),
                })
            }
            // The second call: what this node lacked, and what the caller lacks in return.
            Some(theirs) => {
                let theirs = Digest::from_proto(theirs)?;
                self.merge_proto(request.delta.as_ref())?;
                let state = lock(&self.state);
                Ok(pb::GossipResponse {
                    in_sync: false,
                    delta: Some(state.delta_for(&theirs).to_proto()),
                    digest: None,
                })
            }
        }
    }
}

/// Nodes in one process, calling each other directly, with every message's encoded size
/// counted, and nodes that can be cut off (no call to or from them goes through).
#[derive(Debug, Default)]
pub struct InMemoryTransport {
    nodes: RwLock<HashMap<String, Arc<Gossiper>>>,
    cut: RwLock<std::collections::HashSet<String>>,
    /// Encoded bytes of requests and responses.
    pub bytes: AtomicU64,
}

impl InMemoryTransport {
    pub fn add(&self, address: impl Into<String>, node: Arc<Gossiper>) {
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.into(), node);
    }

    /// Makes `address` unreachable (or reachable again).
    pub fn set_cut(&self, address: &str, cut: bool) {
        let mut set = self.cut.write().unwrap_or_else(|p| p.into_inner());
        if cut {
            set.insert(address.to_string());
        } else {
            set.remove(address);
        }
    }
}

impl GossipTransport for InMemoryTransport {
    async fn call(
        &self,
        peer: &str,
        request: pb::GossipRequest,
    ) -> Result<pb::GossipResponse, String> {
        {
            let cut = self.cut.read().unwrap_or_else(|p| p.into_inner());
            if cut.contains(peer) || cut.contains(&request.from) {
                return Err(format!("the link from {} to {peer} is cut", request.from));
            }
        }
        let node = self
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
            .ok_or_else(|| format!("no node at {peer}"))?;
        self.bytes
            .fetch_add(request.encoded_len() as u64, Ordering::Relaxed);
        let response = node.handle(&request).map_err(|e| e.to_string())?;
        self.bytes
            .fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership_state::MemberRecord;
    use rand::{Rng, SeedableRng};

    fn record(i: usize) -> MemberRecord {
        MemberRecord::new(
            format!("node-{i}"),
            format!("10.0.{}.{}:7070", i / 250, i % 250),
        )
    }

    /// `n` nodes that agree on an `n`-node cluster, over one in-memory transport.
    fn settled(n: usize) -> (Vec<Arc<Gossiper>>, Arc<InMemoryTransport>) {
        let mut state = MembershipState::new_cluster("c", 1024, record(0));
        for i in 1..n {
            state.set_member(record(i));
        }
        state.commit((0..n).map(|i| format!("node-{i}")), "node-0");
        // Every node routes by that ring, and the first handover is over.
        let version = state.ring_version().id();
        for i in 0..n {
            state.set_ring_seen(&format!("node-{i}"));
            state.set_handed_off(&format!("node-{i}"), version);
        }
        let transport = Arc::new(InMemoryTransport::default());
        let nodes: Vec<Arc<Gossiper>> = (0..n)
            .map(|i| {
                let g = Arc::new(Gossiper::new(format!("node-{i}"), state.clone()));
                transport.add(format!("node-{i}"), Arc::clone(&g));
                g
            })
            .collect();
        (nodes, transport)
    }

    /// One gossip round: every node exchanges with one random other node (a seed, node-0,
    /// now and then).
    async fn round(
        nodes: &[Arc<Gossiper>],
        transport: &InMemoryTransport,
        rng: &mut rand::rngs::StdRng,
    ) {
        let n = nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let mut peer = rng.random_range(0..n - 1);
            if peer >= i {
                peer += 1;
            }
            if i != 0 && rng.random_bool(0.1) {
                peer = 0;
            }
            let _ = node.exchange(transport, &format!("node-{peer}")).await;
            // As `Membership` does: a node that learnt a newer ring routes by it and says so in
            // its own record, which gossip spreads too.
            node.update(|s| {
                if s.ring().is_ok() {
                    s.set_ring_seen(&format!("node-{i}"));
                }
            });
        }
    }

    fn agree(nodes: &[Arc<Gossiper>]) -> bool {
        let first = nodes[0].state();
        nodes[1..].iter().all(|g| g.state() == first)
    }

    /// Paper 4.8.1's figure, measured: a node asks to join through a seed, the seed commits
    /// the larger ring, and gossip spreads it (and every node's acknowledgement that it routes
    /// by it). Reported: the rounds (seconds, at the default one exchange a second) until
    /// every view agrees, and the gossip bytes per node per second while spreading and at
    /// rest, for 5, 20 and 100 nodes.
    #[tokio::test]
    async fn a_join_spreads_to_every_node_in_a_few_rounds() {
        for n in [5usize, 20, 100] {
            let (mut nodes, transport) = settled(n);
            let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
            // At rest: one hash a second each.
            transport.bytes.store(0, Ordering::Relaxed);
            round(&nodes, &transport, &mut rng).await;
            let idle = transport.bytes.swap(0, Ordering::Relaxed) as f64 / n as f64;
            assert!(agree(&nodes));
            // A new node asks to join through node-0 (its seed), which then commits the
            // staged change.
            let newcomer = Arc::new(Gossiper::new(
                format!("node-{n}"),
                MembershipState::joining("c", 1024, record(n)),
            ));
            transport.add(format!("node-{n}"), Arc::clone(&newcomer));
            newcomer.exchange(&*transport, "node-0").await.unwrap();
            assert!(
                newcomer.state().ring().is_ok(),
                "the newcomer learnt the ring"
            );
            nodes[0].update(|s| {
                assert!(s.commit_blocked().is_none(), "{:?}", s.commit_blocked());
                let owners = s.staged_owners();
                assert_eq!(owners.len(), n + 1);
                s.commit(owners, "node-0");
            });
            nodes.push(newcomer);
            transport.bytes.store(0, Ordering::Relaxed);
            let mut rounds = 0;
            let mut ring_rounds = None;
            let target = nodes[0].state().ring_version().clone();
            while !agree(&nodes) {
                round(&nodes, &transport, &mut rng).await;
                rounds += 1;
                if ring_rounds.is_none()
                    && nodes.iter().all(|g| *g.state().ring_version() == target)
                {
                    ring_rounds = Some(rounds);
                }
                assert!(rounds < 40, "{n} nodes: no agreement after 40 rounds");
            }
            let ring_rounds = ring_rounds.unwrap_or(rounds);
            let per_node =
                transport.bytes.load(Ordering::Relaxed) as f64 / rounds as f64 / (n + 1) as f64;
            println!(
                "gossip, {n} nodes + 1 joining: every node has the new ring after {ring_rounds} round(s), every view agrees (every node's acknowledgement included) after {rounds} ({rounds} s at the default 1 s interval); {per_node:.0} bytes per node per second while spreading, {idle:.0} at rest"
            );
            let bound = 2 * (usize::BITS - n.leading_zeros()) as usize + 4;
            assert!(
                rounds <= bound,
                "{n} nodes: {rounds} rounds, more than {bound}"
            );
            assert!(nodes[0].state().ring().is_ok());
        }
    }

    #[tokio::test]
    async fn a_node_cut_off_catches_up_after_the_heal_and_other_clusters_are_refused() {
        let (nodes, transport) = settled(10);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        transport.set_cut("node-9", true);
        nodes[0].update(|s| {
            let mut r = s.member("node-3").unwrap().clone();
            r.status = crate::membership_state::Status::Leaving;
            s.set_member(r);
        });
        for _ in 0..15 {
            round(&nodes, &transport, &mut rng).await;
        }
        assert!(agree(&nodes[..9]), "the others agree");
        assert!(
            !agree(&nodes),
            "the cut-off node did not hear of the change"
        );
        transport.set_cut("node-9", false);
        let mut rounds = 0;
        while !agree(&nodes) {
            round(&nodes, &transport, &mut rng).await;
            rounds += 1;
            assert!(rounds < 20);
        }
        let stranger = Gossiper::new("x", MembershipState::new_cluster("other", 1024, record(50)));
        let err = stranger.exchange(&*transport, "node-0").await.unwrap_err();
        assert!(err.contains("cluster"), "{err}");
        assert!(agree(&nodes), "a stranger's call changed nothing");
    }
}
