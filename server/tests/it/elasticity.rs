//! Membership and elasticity (paper 4.8, 4.9): clusters formed by join, grown, shrunk by
//! leave, mended by remove and restarted node by node, under a continuous load of puts and
//! gets; every acknowledged write is then checked replica by replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use dynamokv_client::Client;
use dynamokv_common::Ring;
use dynamokv_server::admin;
use dynamokv_server::config::{Config, Engine};
use dynamokv_server::membership_state::MembershipState;
use dynamokv_server::{NodeHandle, start_on};

use dynamokv_proto::v1 as pb;

use crate::support::eventually;

const Q: u32 = 64;
const N: usize = 3;
const WRITERS: usize = 4;

/// In-process nodes, each started when the test asks: node `i` is `node-i`, its address
/// chosen (port 0) before any node starts so that clients can list every node from the start.
struct Nodes {
    addrs: Vec<SocketAddr>,
    listeners: Vec<Option<TcpListener>>,
    configs: Vec<Config>,
    handles: Vec<Option<NodeHandle>>,
    dirs: Vec<Option<tempfile::TempDir>>,
}

impl Nodes {
    async fn new(count: usize) -> Nodes {
        let mut n = Nodes {
            addrs: Vec::new(),
            listeners: Vec::new(),
            configs: Vec::new(),
            handles: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..count {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut c = Config {
                node_id: format!("node-{i}"),
                listen: addr,
                data_dir: dir.path().to_path_buf(),
                engine: Engine::Rocksdb,
                replica_timeout_ms: 1_000,
                ..Config::default()
            };
            c.cluster.name = "elastic".into();
            c.cluster.partitions = Q;
            c.cluster.n = Some(N as u32);
            c.cluster.gossip_interval_ms = 100;
            c.cluster.transfer_interval_ms = 200;
            c.background.handoff_interval_ms = 200;
            c.background.anti_entropy_interval_ms = 1_000;
            // Other tests share the machine's two cores: background work must not wait for
            // their latency to fall (admission control has tests of its own).
            c.background.latency_bound_ms = 1_000;
            n.addrs.push(addr);
            n.listeners.push(Some(l));
            n.configs.push(c);
            n.handles.push(None);
            n.dirs.push(Some(dir));
        }
        n
    }

    fn addr(&self, i: usize) -> String {
        self.addrs[i].to_string()
    }

    fn all(&self) -> Vec<String> {
        (0..self.addrs.len()).map(|i| self.addr(i)).collect()
    }

    /// Starts node `i`, joining through `seed` (none: alone, a cluster of one).
    async fn start(&mut self, i: usize, seed: Option<usize>) {
        if let Some(s) = seed {
            self.configs[i].cluster.seeds = vec![self.addr(s)];
        }
        let listener = match self.listeners[i].take() {
            Some(l) => l,
            None => TcpListener::bind(self.addrs[i]).await.unwrap(),
        };
        self.handles[i] = Some(start_on(self.configs[i].clone(), listener).await.unwrap());
    }

    async fn stop(&mut self, i: usize) {
        if let Some(h) = self.handles[i].take() {
            h.stop().await.unwrap();
        }
    }

    /// Stops node `i` for good and deletes its data directory.
    async fn destroy(&mut self, i: usize) {
        self.stop(i).await;
        self.dirs[i] = None;
    }

    fn client_of(&self, i: usize) -> Client {
        Client::builder([self.addr(i)])
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn running(&self) -> Vec<usize> {
        (0..self.handles.len())
            .filter(|i| self.handles[*i].is_some())
            .collect()
    }

    async fn membership(&self, i: usize) -> MembershipState {
        admin::fetch_membership(&self.addr(i)).await.unwrap()
    }

    /// Waits until node `at` knows every node of `ids`.
    async fn wait_known(&self, at: usize, ids: &[usize]) {
        let addr = self.addr(at);
        eventually(
            "the joining nodes to reach the seed",
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    let Ok(s) = admin::fetch_membership(&addr).await else {
                        return false;
                    };
                    ids.iter().all(|i| s.member(&format!("node-{i}")).is_some())
                }
            },
        )
        .await;
    }

    /// Plans and commits the staged change on node `at`; returns the plan and the new version.
    async fn change(&self, at: usize) -> (dynamokv_proto::v1::PlanResponse, u64) {
        let plan = admin::plan(&self.addr(at)).await.unwrap();
        assert!(plan.blocked.is_empty(), "plan blocked: {}", plan.blocked);
        let version = admin::commit(&self.addr(at), plan.ring_version)
            .await
            .unwrap();
        assert_eq!(version, plan.ring_version + 1);
        (plan, version)
    }

    /// Waits until every running node routes by ring `version` with its handover complete and
    /// nothing left to hand over or drop.
    async fn settle(&self, version: u64, deadline: Duration) {
        let addrs: Vec<String> = self.running().iter().map(|i| self.addr(*i)).collect();
        let end = Instant::now() + deadline;
        loop {
            let mut lagging = Vec::new();
            for a in &addrs {
                match admin::fetch_status(a).await {
                    Ok(s)
                        if s.ring_version == version
                            && !s.handover
                            && s.transfers_pending == 0
                            && s.partitions_to_drop == 0 => {}
                    Ok(s) => lagging.push(format!(
                        "{}: ring v{} handover {} pending {} to drop {}",
                        s.node_id,
                        s.ring_version,
                        s.handover,
                        s.transfers_pending,
                        s.partitions_to_drop
                    )),
                    Err(e) => lagging.push(e),
                }
            }
            if lagging.is_empty() {
                return;
            }
            if Instant::now() > end {
                let view = admin::fetch_membership(&addrs[0])
                    .await
                    .map(|s| admin::describe_membership(&s));
                panic!(
                    "the nodes did not settle on ring version {version} within {deadline:?}: {lagging:?}\n{}",
                    view.unwrap_or_else(|e| e)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Forms a cluster of nodes `0..n` the way an operator does: node 0 alone, the others
    /// joining through it, then plan and commit.
    async fn form(&mut self, n: usize) -> u64 {
        self.start(0, None).await;
        for i in 1..n {
            self.start(i, Some(0)).await;
        }
        self.wait_known(0, &(0..n).collect::<Vec<_>>()).await;
        let (_, version) = self.change(0).await;
        self.settle(version, Duration::from_secs(30)).await;
        version
    }

    async fn shutdown(mut self) {
        for i in 0..self.handles.len() {
            self.stop(i).await;
        }
    }
}

/// One put and the get after it.
#[derive(Debug, Clone)]
struct Pair {
    key: String,
    acked: bool,
    put_at: Instant,
    put_took: Duration,
    put_ok: bool,
    get: Option<(Instant, Duration, bool)>,
    /// Why the put or the get failed, if one did.
    error: Option<String>,
}

/// Writers putting fresh keys and reading each back, through clients that know every node.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<Vec<Pair>>>,
}

impl Load {
    fn start(seeds: Vec<String>, prefix: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let client = Client::builder(seeds.clone())
                .request_timeout(Duration::from_secs(5))
                .attempt_timeout(Duration::from_millis(1500))
                .build()
                .unwrap();
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            writers.push(tokio::spawn(async move {
                let mut log = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("{prefix}-w{w}-{i}");
                    let t = Instant::now();
                    let put = client.put(&key, key.clone().into_bytes(), None).await;
                    let put_took = t.elapsed();
                    let acked = put.is_ok();
                    let mut error = put.err().map(|e| format!("put: {e}"));
                    let g = Instant::now();
                    let ok = match client.get(&key).await {
                        Ok(got) if acked => got.values == [key.as_bytes()],
                        Ok(got) => got.values.is_empty() || got.values == [key.as_bytes()],
                        Err(e) => {
                            error.get_or_insert(format!("get: {e}"));
                            false
                        }
                    };
                    if !ok && error.is_none() {
                        error = Some("get: did not show the acknowledged value".into());
                    }
                    log.push(Pair {
                        key,
                        acked,
                        put_at: t,
                        put_took,
                        put_ok: acked,
                        get: Some((g, g.elapsed(), ok)),
                        error,
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                }
                log
            }));
        }
        Load {
            stop,
            done,
            writers,
        }
    }

    async fn run_for(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let end = Instant::now() + Duration::from_secs(60);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < end, "the load stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> Vec<Pair> {
        self.stop.store(true, Ordering::Relaxed);
        let mut pairs = Vec::new();
        for w in self.writers {
            pairs.extend(w.await.unwrap());
        }
        pairs
    }
}

/// The distinct failures of `pairs` (their first 100 characters) with their counts.
fn failures(pairs: &[Pair]) -> Vec<(String, usize)> {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for e in pairs.iter().filter_map(|p| p.error.as_ref()) {
        *by.entry(e.chars().take(100).collect()).or_default() += 1;
    }
    by.into_iter().collect()
}

/// Requests (puts and gets) under way during `[from, to]`, and how many succeeded.
fn during(pairs: &[Pair], from: Instant, to: Instant) -> (usize, usize) {
    let mut total = 0;
    let mut ok = 0;
    let overlaps = |start: Instant, took: Duration| start <= to && start + took >= from;
    for p in pairs {
        if overlaps(p.put_at, p.put_took) {
            total += 1;
            ok += usize::from(p.put_ok);
        }
        if let Some((at, took, good)) = p.get
            && overlaps(at, took)
        {
            total += 1;
            ok += usize::from(good);
        }
    }
    (total, ok)
}

/// Every acknowledged key is held, with its value, by each of its N replicas in `ring`; no
/// running node outside a key's replicas holds it (acknowledged or not). Polls while replicas
/// converge; returns how long that took.
async fn check_placement(
    nodes: &Nodes,
    ring: &Ring,
    pairs: &[Pair],
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    let running = nodes.running();
    let mut clients = std::collections::HashMap::new();
    for &i in &running {
        let c = pb::replica_client::ReplicaClient::connect(format!("http://{}", nodes.addrs[i]))
            .await
            .unwrap();
        clients.insert(i, c);
    }
    let mut left: Vec<&Pair> = pairs.iter().collect();
    loop {
        let mut still = Vec::new();
        let mut problems = Vec::new();
        for p in &left {
            let replicas: Vec<usize> = ring
                .preference_list(p.key.as_bytes(), N)
                .nodes
                .iter()
                .map(|m| m.id.trim_start_matches("node-").parse().unwrap())
                .collect();
            let mut bad = false;
            for &i in &running {
                let state = clients
                    .get_mut(&i)
                    .unwrap()
                    .read_local(pb::ReadLocalRequest {
                        key: Some(p.key.clone().into()),
                        include_hints: false,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .state
                    .map(|s| dynamokv_common::VersionedState::from_proto(&s).unwrap());
                let values: Vec<Vec<u8>> = state
                    .map(|s| s.live_values().into_iter().map(|b| b.to_vec()).collect())
                    .unwrap_or_default();
                if replicas.contains(&i) {
                    if p.acked && values != [p.key.as_bytes()] {
                        bad = true;
                        problems.push(format!("replica node-{i} of {} holds {values:?}", p.key));
                    }
                } else if !values.is_empty() {
                    bad = true;
                    problems.push(format!(
                        "node-{i} holds {} but its replicas are {replicas:?}",
                        p.key
                    ));
                }
            }
            if bad {
                still.push(*p);
            }
        }
        if still.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{} key(s) misplaced after {deadline:?}; first problems: {:?}",
            still.len(),
            &problems[..problems.len().min(10)]
        );
        left = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Hints held by the nodes at `addrs`, as their last delivery walks counted them.
async fn hints_queued(addrs: &[String]) -> u64 {
    let mut hints = 0;
    for a in addrs {
        hints += admin::fetch_status(a).await.unwrap().hints_queued;
    }
    hints
}

/// Every member owns between floor and ceil of its share of Q partitions.
fn check_balance(ring: &Ring) {
    let members = ring.members().len() as u32;
    let (lo, hi) = (Q / members, Q.div_ceil(members));
    for m in ring.members() {
        let owned = ring.partitions_of(&m.id).len() as u32;
        assert!(
            (lo..=hi).contains(&owned),
            "{} owns {owned} partitions, not {lo}..={hi}",
            m.id
        );
    }
}

fn report(line: String) {
    println!("{line}");
    let path = std::env::temp_dir().join("dynamokv-elasticity.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_from_3_to_5_then_shrink_to_4_by_leave_under_load() {
    let mut nodes = Nodes::new(5).await;
    nodes.form(3).await;
    let load = Load::start(nodes.all(), "elastic");
    load.run_for(200).await;

    // Grow: nodes 3 and 4 join through node 1; one plan, one commit.
    let grow_from = Instant::now();
    nodes.start(3, Some(1)).await;
    nodes.start(4, Some(1)).await;
    nodes.wait_known(2, &[3, 4]).await;
    let (plan, version) = nodes.change(2).await;
    report(format!(
        "plan for the join of node-3 and node-4:\n{}",
        admin::describe_plan(&plan, 12, &nodes.addr(2))
    ));
    assert!(!plan.moves.is_empty());
    nodes.settle(version, Duration::from_secs(60)).await;
    let grow_to = Instant::now();
    load.run_for(200).await;

    // Shrink: node-1 leaves, staged and committed on node-4.
    let shrink_from = Instant::now();
    admin::leave(&nodes.addr(4), "node-1").await.unwrap();
    let (_, version) = nodes.change(4).await;
    nodes.settle(version, Duration::from_secs(60)).await;
    let left = nodes.membership(0).await;
    assert_eq!(left.status_of("node-1"), "left");
    let shrink_to = Instant::now();
    load.run_for(200).await;
    let pairs = load.finish().await;
    // The departed node is stopped; it holds nothing any more.
    nodes.stop(1).await;

    let state = nodes.membership(0).await;
    let ring = state.ring().unwrap();
    assert_eq!(ring.members().len(), 4);
    check_balance(&ring);
    let acked = pairs.iter().filter(|p| p.acked).count();
    let converged = check_placement(&nodes, &ring, &pairs, Duration::from_secs(60)).await;
    for (what, from, to) in [
        ("grow 3 -> 5", grow_from, grow_to),
        ("shrink 5 -> 4 (leave)", shrink_from, shrink_to),
    ] {
        let (total, ok) = during(&pairs, from, to);
        let rate = ok as f64 * 100.0 / total.max(1) as f64;
        report(format!(
            "{what}: {:.1} s, {total} requests during the change, {ok} succeeded ({rate:.3}%)",
            (to - from).as_secs_f64()
        ));
        assert!(total > 100, "too little load during {what}: {total}");
        assert!(
            rate >= 99.9,
            "{what}: only {rate:.2}% of requests succeeded; failures: {:?}",
            failures(&pairs)
        );
    }
    report(format!(
        "elasticity: {} puts, {acked} acknowledged, every one on each of its {N} replicas and nowhere else (checked key by key on every node in {converged:.1?}); failures: {:?}",
        pairs.len(),
        failures(&pairs)
    ));
    // Reads during a handover need R among the old replicas and R among the new: a get that
    // follows its acknowledged put always sees it, whichever view each coordinator had.
    let stale = pairs
        .iter()
        .filter(|p| p.error.as_deref() == Some("get: did not show the acknowledged value"))
        .count();
    assert_eq!(
        stale, 0,
        "gets that missed the write acknowledged before them"
    );
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_of_a_destroyed_node_restores_every_keys_replicas() {
    let mut nodes = Nodes::new(4).await;
    nodes.form(4).await;
    let load = Load::start(nodes.all(), "removed");
    load.run_for(600).await;
    // node-3 is gone for good: process stopped, data directory deleted. Writes go on, and
    // its copies wait as hints on the others.
    nodes.destroy(3).await;
    load.run_for(600).await;
    let pairs = load.finish().await;
    // The backlog shows once a delivery walk has counted the hints.
    let addrs: Vec<String> = (0..3).map(|i| nodes.addr(i)).collect();
    eventually(
        "hints for the destroyed node (else the test proves nothing)",
        Duration::from_secs(20),
        || {
            let addrs = addrs.clone();
            async move { hints_queued(&addrs).await > 0 }
        },
    )
    .await;
    let hints = hints_queued(&addrs).await;

    admin::remove(&nodes.addr(0), "node-3").await.unwrap();
    let (plan, version) = nodes.change(0).await;
    assert!(plan.owners_after.iter().all(|o| o != "node-3"));
    nodes.settle(version, Duration::from_secs(60)).await;

    let ring = nodes.membership(1).await.ring().unwrap();
    assert_eq!(ring.members().len(), 3);
    check_balance(&ring);
    // Every key's replicas (now the three survivors) hold every acknowledged write.
    check_placement(&nodes, &ring, &pairs, Duration::from_secs(60)).await;
    // The hints for node-3 went to the keys' current replicas rather than waiting for it.
    eventually(
        "the hints for the removed node to be handed on",
        Duration::from_secs(30),
        || {
            let addrs = addrs.clone();
            async move { hints_queued(&addrs).await == 0 }
        },
    )
    .await;
    report(format!(
        "remove: {} acknowledged writes each on all {N} replicas after node-3 was destroyed and removed; the {hints} hints left for it were handed to the keys' replicas",
        pairs.iter().filter(|p| p.acked).count(),
    ));
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handover_resumes_after_an_old_owner_restarts_midway() {
    let mut nodes = Nodes::new(4).await;
    nodes.form(3).await;
    let load = Load::start(nodes.all()[..3].to_vec(), "resume");
    load.run_for(1500).await;
    let pairs = load.finish().await;
    nodes.start(3, Some(0)).await;
    nodes.wait_known(1, &[3]).await;
    let (_, version) = nodes.change(1).await;
    // node-0, an owner of the previous ring, stops before it has handed its partitions over
    // (it waits for every node to route by the new ring, then twice the replica timeout).
    nodes.stop(0).await;
    let seen = nodes.membership(1).await;
    assert!(seen.handover_in_progress());
    assert!(
        !seen.has_handed_off("node-0"),
        "node-0 stopped after its handoff: the test proves nothing"
    );
    nodes.start(0, None).await;
    nodes.settle(version, Duration::from_secs(60)).await;
    let ring = nodes.membership(2).await.ring().unwrap();
    check_placement(&nodes, &ring, &pairs, Duration::from_secs(60)).await;
    nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_five_nodes_under_load_loses_nothing() {
    let mut nodes = Nodes::new(5).await;
    let version = nodes.form(5).await;
    let load = Load::start(nodes.all(), "rolling");
    load.run_for(200).await;
    let from = Instant::now();
    for i in 0..5 {
        nodes.stop(i).await;
        // Down while a few thousand requests go by, so writes need its fallbacks.
        load.run_for(3000).await;
        nodes.start(i, None).await;
        // Back, with its stored view: it routes by the same ring at once.
        let addr = nodes.addr(i);
        eventually(
            "the restarted node to answer",
            Duration::from_secs(20),
            || {
                let addr = addr.clone();
                async move {
                    admin::fetch_status(&addr)
                        .await
                        .is_ok_and(|s| s.ring_version == version)
                }
            },
        )
        .await;
        load.run_for(3000).await;
    }
    let to = Instant::now();
    let pairs = load.finish().await;
    let (total, ok) = during(&pairs, from, to);
    let rate = ok as f64 * 100.0 / total.max(1) as f64;
    let ring = nodes.membership(0).await.ring().unwrap();
    let converged = check_placement(&nodes, &ring, &pairs, Duration::from_secs(60)).await;
    report(format!(
        "rolling restart of 5 nodes: {:.1} s, {total} requests, {ok} succeeded ({rate:.3}%); {} acknowledged writes all on their {N} replicas (checked in {converged:.1?}); failures: {:?}",
        (to - from).as_secs_f64(),
        pairs.iter().filter(|p| p.acked).count(),
        failures(&pairs)
    ));
    assert!(rate >= 99.0, "only {rate:.2}% of requests succeeded");
    nodes.shutdown().await;
}

#[tokio::test]
async fn a_request_routed_by_an_older_ring_is_answered_and_says_the_ring_moved_on() {
    let mut nodes = Nodes::new(2).await;
    let version = nodes.form(2).await;
    let mut kv = pb::kv_client::KvClient::connect(format!("http://{}", nodes.addr(1)))
        .await
        .unwrap();
    let put = kv
        .put(pb::PutRequest {
            key: Some("k".into()),
            value: Some("v".into()),
            ring_version: version - 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        put.ring,
        Some(pb::RingNews {
            version,
            moved_on: true
        })
    );
    let got = kv
        .get(pb::GetRequest {
            key: Some("k".into()),
            ring_version: version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.values, vec![bytes::Bytes::from("v")]);
    assert_eq!(
        got.ring,
        Some(pb::RingNews {
            version,
            moved_on: false
        })
    );
    nodes.shutdown().await;
}

#[tokio::test]
async fn topology_changes_that_cannot_work_are_refused_and_change_nothing() {
    let mut nodes = Nodes::new(3).await;
    nodes.form(2).await;
    let a = nodes.addr(0);
    let before = nodes.membership(0).await;
    // Nothing staged.
    let err = admin::commit(&a, 0).await.unwrap_err();
    assert!(err.contains("nothing is staged"), "{err}");
    // Unknown members, removing oneself.
    let err = admin::remove(&a, "node-9").await.unwrap_err();
    assert!(err.contains("node-9"), "{err}");
    let err = admin::remove(&a, "node-0").await.unwrap_err();
    assert!(err.contains("cannot remove itself"), "{err}");
    let err = admin::leave(&a, "node-9").await.unwrap_err();
    assert!(err.contains("node-9"), "{err}");
    // A stale plan: the ring moved since.
    let err = admin::commit(&a, 99).await.unwrap_err();
    assert!(err.contains("plan again"), "{err}");
    assert_eq!(nodes.membership(0).await, before);
    // Gossip from a node of another cluster is refused and changes nothing.
    let mut other = MembershipState::new_cluster(
        "other",
        Q,
        dynamokv_server::membership_state::MemberRecord::new("node-9", "127.0.0.1:1"),
    );
    other.set_member(dynamokv_server::membership_state::MemberRecord::new(
        "node-8",
        "127.0.0.1:2",
    ));
    let mut replica = pb::replica_client::ReplicaClient::connect(format!("http://{a}"))
        .await
        .unwrap();
    let refused = replica
        .gossip(pb::GossipRequest {
            cluster: "other".into(),
            partitions: Q,
            from: "node-9".into(),
            digest: Some(other.digest().to_proto()),
            delta: Some(other.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("other"), "{refused:?}");
    assert_eq!(nodes.membership(0).await, before);
    // A member holding data cannot join another cluster by `admin join`.
    let c = nodes.client_of(0);
    c.put("x", b"y".to_vec(), None).await.unwrap();
    nodes.start(2, None).await;
    let err = admin::join(&a, &nodes.addr(2)).await.unwrap_err();
    assert!(err.contains("already a member"), "{err}");
    assert_eq!(
        nodes.membership(0).await.ring_version(),
        before.ring_version()
    );
    nodes.shutdown().await;
}

#[tokio::test]
async fn a_client_picks_up_a_changed_ring_without_a_restart() {
    let mut nodes = Nodes::new(5).await;
    let first = nodes.form(3).await;
    // Client-driven coordination (the default), knowing one seed, pulling the ring often.
    let client = Client::builder([nodes.addr(0)])
        .request_timeout(Duration::from_secs(5))
        .ring_refresh_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(client.refresh_ring().await.unwrap(), first);
    for k in 0..20 {
        client
            .put(format!("moving-{k}"), b"v".to_vec(), None)
            .await
            .unwrap();
    }
    nodes.start(3, Some(0)).await;
    nodes.start(4, Some(0)).await;
    nodes.wait_known(0, &[0, 1, 2, 3, 4]).await;
    let (_, version) = nodes.change(0).await;
    eventually(
        "the client to route by the new ring",
        Duration::from_secs(10),
        || async { client.ring_version() == Some(version) },
    )
    .await;
    nodes.settle(version, Duration::from_secs(60)).await;
    // Keys the new nodes now lead: the client sends their puts to them.
    let ring = nodes.membership(0).await.ring().unwrap();
    let mut led = 0;
    for k in 0..200 {
        let key = format!("new-{k}");
        let first = ring.preference_list(key.as_bytes(), N).nodes[0].id.clone();
        if first != "node-3" && first != "node-4" {
            continue;
        }
        led += 1;
        client.put(&key, b"new".to_vec(), None).await.unwrap();
        let i: usize = first.trim_start_matches("node-").parse().unwrap();
        let held = crate::support::read_local(nodes.addrs[i], key.as_bytes()).await;
        assert!(
            held.is_some_and(|s| s.live_values() == vec![bytes::Bytes::from("new")]),
            "{key}: its first replica {first} did not coordinate the put"
        );
    }
    assert!(led > 10, "only {led} keys led by the new nodes");
    for k in 0..20 {
        let got = client.get(format!("moving-{k}")).await.unwrap();
        assert_eq!(got.values, vec![b"v".to_vec()]);
    }
    nodes.shutdown().await;
}
