//! Causality and retry correctness (issue 6): one regression test per defect found in review,
//! each named after it. Every test records the writes that were acknowledged and checks them at
//! the end, on every replica.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use dynamokv_client::{Client, Error};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;

use crate::proxy::{Mode, Proxy};
use crate::support::Cluster;

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn strings(v: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    out.sort();
    out
}

/// Waits until every running replica in `nodes` holds exactly `expected` (sorted) for `key`.
/// A get with R = 3 via `client`, once its node sees every replica up again (one just
/// restarted may still be marked down there, and R = 3 then fails fast as unavailable).
async fn get_from_all_three(client: &Client, key: &str) -> dynamokv_client::GetResult {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_with_quorum(key, Some(3)).await {
            Err(Error::Unavailable { .. }) if std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            got => return got.unwrap(),
        }
    }
}

async fn converges(cluster: &Cluster, nodes: &[usize], key: &str, expected: &[&str]) {
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    for &i in nodes {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let last = loop {
            let last = strings(&cluster.local_values(i, key.as_bytes()).await);
            if last == want || std::time::Instant::now() > end {
                break last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(last, want, "node-{i}'s copy of {key}");
    }
}

/// Defect 1: the context a put returns must cover what the writer's context covered plus the
/// new write, never other clients' concurrent writes. Run for puts and deletes, with the two
/// clients on one coordinator and on two.
#[tokio::test(flavor = "multi_thread")]
async fn defect1_a_put_reply_context_covers_only_what_the_writer_saw() {
    let cluster = Cluster::start(3).await;
    for (round, (via_a, via_b)) in [(0, 0), (0, 1), (2, 1)].into_iter().enumerate() {
        let (a, b) = (cluster.client_of(via_a), cluster.client_of(via_b));

        let key = format!("cart-{round}");
        a.put(&key, b"from-a".to_vec(), None).await.unwrap();
        let ctx_b = b.put(&key, b"from-b".to_vec(), None).await.unwrap();
        b.put(&key, b"from-b-2".to_vec(), Some(&ctx_b))
            .await
            .unwrap();
        let got = a.get_with_quorum(&key, Some(3)).await.unwrap();
        assert_eq!(
            strings(&got.values),
            ["from-a", "from-b-2"],
            "round {round}: B's second put superseded A's write it never saw"
        );
        converges(&cluster, &[0, 1, 2], &key, &["from-a", "from-b-2"]).await;

        // A delete with a put's reply context removes only that put's value.
        let key = format!("gone-{round}");
        a.put(&key, b"keep".to_vec(), None).await.unwrap();
        let ctx_b = b.put(&key, b"drop".to_vec(), None).await.unwrap();
        b.delete(&key, &ctx_b).await.unwrap();
        let got = a.get_with_quorum(&key, Some(3)).await.unwrap();
        assert_eq!(strings(&got.values), ["keep"], "round {round}");
        converges(&cluster, &[0, 1, 2], &key, &["keep"]).await;
    }
    cluster.shutdown().await;
}

/// Defect 2: a put whose answer is lost (the connection closes as the node starts its
/// response) was retried on the next seed and stored twice. It must be stored once, and the
/// caller told either that it succeeded or that its outcome is unknown.
#[tokio::test(flavor = "multi_thread")]
async fn defect2_a_write_whose_answer_was_lost_is_never_applied_twice() {
    let cluster = Cluster::start(3).await;
    let cut = Proxy::start().await;
    cut.point_at(cluster.addrs[0]);
    for (round, next) in [1usize, 0].into_iter().enumerate() {
        let client = Client::builder([cut.addr.to_string(), cluster.seed(next)])
            .coordination(dynamokv_client::Coordination::Server)
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let key = format!("once-{round}");
        let value = format!("CUT-ME-{round}");
        cut.set(Mode::CutResponseAfter(value.clone().into_bytes()));
        match client.put(&key, value.clone().into_bytes(), None).await {
            Ok(_) => {}
            Err(e) if e.code() == "OUTCOME_UNKNOWN" => {}
            Err(e) => panic!("round {round}: unexpected error {e:?}"),
        }
        assert_eq!(cut.mode(), Mode::Pass, "round {round}: no answer was lost");
        let got = client.get_with_quorum(&key, Some(3)).await.unwrap();
        assert_eq!(
            strings(&got.values),
            [value.as_str()],
            "round {round}: stored twice"
        );
        converges(&cluster, &[0, 1, 2], &key, &[value.as_str()]).await;
    }
    cluster.shutdown().await;
}

/// Defect 3: a forwarded put whose coordinator misses W must report the coordinator's verdict
/// (QuorumNotReached), not a forwarding timeout that invites a retry, and must be stored once.
/// Two of the key's three replicas hang, so that even the sloppy quorum (paper 4.6: the fourth
/// node takes a hung replica's copy as a hint) makes only 2 of W = 3.
#[tokio::test(flavor = "multi_thread")]
async fn defect3_a_forwarded_put_that_misses_its_quorum_says_so_and_is_stored_once() {
    let cluster = Cluster::start_proxied(4, |_| {}).await;
    let key = cluster.key_not_replicated_on(0, "fwd");
    let reps = cluster.replicas_of(key.as_bytes());
    for &r in &reps[1..] {
        cluster.proxy(r).set(Mode::Hang);
    }

    // Through the non-replica only.
    match cluster
        .client_of(0)
        .put_with_quorum(&key, b"v".to_vec(), None, Some(3))
        .await
    {
        Err(Error::QuorumNotReached { needed, got, .. }) => assert_eq!((needed, got), (3, 2)),
        other => panic!("expected QuorumNotReached, got {other:?}"),
    }
    for &r in &reps[1..] {
        cluster.proxy(r).set(Mode::Pass);
    }
    // With a second seed to fall back on: a key whose two hung replicas are neither seed.
    let seeds = [0, reps[0]];
    let two_seeds = Client::builder([cluster.seed(0), cluster.seed(reps[0])])
        .coordination(dynamokv_client::Coordination::Server)
        .request_timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let (key2, reps2) = (0..1000)
        .map(|i| format!("{key}-{i}"))
        .map(|k| {
            let r = cluster.replicas_of(k.as_bytes());
            (k, r)
        })
        .find(|(_, r)| r.iter().filter(|n| !seeds.contains(n)).count() == 2)
        .unwrap();
    let hung: Vec<usize> = reps2
        .iter()
        .copied()
        .filter(|n| !seeds.contains(n))
        .collect();
    for &h in &hung {
        cluster.proxy(h).set(Mode::Hang);
    }
    // Which error depends on whether the nodes already know the two are hung (then
    // `Unavailable` at once, or `OutcomeUnknown` once a forwarded attempt timed out), but W = 3
    // cannot be met, and the write is stored at most once.
    let result = two_seeds
        .put_with_quorum(&key2, b"w".to_vec(), None, Some(3))
        .await;
    assert!(result.is_err(), "{result:?}");
    for i in (0..4).filter(|i| !hung.contains(i)) {
        assert!(
            strings(&cluster.local_values(i, key2.as_bytes()).await).len() <= 1,
            "node-{i} holds the write twice"
        );
    }
    for &h in &hung {
        cluster.proxy(h).set(Mode::Pass);
    }
    let got = get_from_all_three(&two_seeds, &key2).await;
    assert!(
        strings(&got.values).len() <= 1,
        "{:?}",
        strings(&got.values)
    );
    cluster.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Defect 4: a node whose storage rolls back (here: its data directory restored from an
/// earlier copy, as a power cut that drops the unsynced log tail would) must never issue a
/// version it already issued, so both acknowledged writes survive on every replica.
#[tokio::test(flavor = "multi_thread")]
async fn defect4_a_node_whose_storage_rolls_back_never_reuses_a_version() {
    let mut cluster = Cluster::start(3).await;
    let backup = tempfile::tempdir().unwrap();
    let dir = cluster.configs[0].data_dir.clone();
    let c0 = cluster.client_of(0);
    c0.put_with_quorum("k", b"v0".to_vec(), None, Some(3))
        .await
        .unwrap();
    cluster.stop(0).await;
    copy_dir(&dir, backup.path());
    cluster.restart(0).await;
    c0.put_with_quorum("k", b"v1".to_vec(), None, Some(3))
        .await
        .unwrap();
    cluster.stop(0).await;
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(backup.path(), &dir);
    cluster.restart(0).await;
    c0.put_with_quorum("k", b"v2".to_vec(), None, Some(3))
        .await
        .unwrap();

    for i in 0..3 {
        let got = cluster
            .client_of(i)
            .get_with_quorum("k", Some(3))
            .await
            .unwrap();
        assert_eq!(
            strings(&got.values),
            ["v0", "v1", "v2"],
            "a get via node-{i}"
        );
    }
    converges(&cluster, &[0, 1, 2], "k", &["v0", "v1", "v2"]).await;
    cluster.shutdown().await;
}

/// Defect 5: truncating version vectors must never bring back a superseded or deleted value.
/// Settings that cannot work are refused; the rest keep superseded values gone on every
/// replica, also after a stale replica (down during the writes) is merged back in.
#[tokio::test(flavor = "multi_thread")]
async fn defect5_truncation_never_brings_back_a_superseded_value() {
    for max_entries in [1usize, 2, 3] {
        let mut probe = dynamokv_server::Config {
            max_vector_entries: max_entries,
            node_id: "node-0".into(),
            ..Default::default()
        };
        probe.cluster.members = (0..3)
            .map(|i| dynamokv_server::config::MemberConfig {
                id: format!("node-{i}"),
                address: format!("127.0.0.1:{}", 1000 + i),
                zone: String::new(),
                weight: 1,
            })
            .collect();
        if let Err(e) = probe.validate() {
            assert!(
                e.to_string().contains("max_vector_entries"),
                "refused with an unclear error: {e}"
            );
            continue;
        }
        let mut cluster = Cluster::start_with(3, |c| c.max_vector_entries = max_entries).await;
        // Many writers: each node, and each node again after a restart.
        for round in 0..2 {
            for i in 0..3 {
                cluster
                    .client_of(i)
                    .put_with_quorum("churn", format!("r{round}n{i}").into_bytes(), None, Some(3))
                    .await
                    .unwrap();
            }
            for i in 0..3 {
                cluster.stop(i).await;
                cluster.restart(i).await;
            }
        }
        // The stale replica misses the resolution and the delete.
        let c0 = cluster.client_of(0);
        c0.put_with_quorum("k", b"x".to_vec(), None, Some(3))
            .await
            .unwrap();
        cluster
            .client_of(1)
            .put_with_quorum("k", b"y".to_vec(), None, Some(3))
            .await
            .unwrap();
        let read = c0.get_with_quorum("k", Some(3)).await.unwrap();
        assert_eq!(strings(&read.values), ["x", "y"]);
        let churn = c0.get_with_quorum("churn", Some(3)).await.unwrap();
        cluster.stop(2).await;
        cluster
            .client_of(1)
            .put_with_quorum("k", b"z".to_vec(), Some(&read.context), Some(2))
            .await
            .unwrap();
        cluster
            .client_of(0)
            .delete_with_quorum("churn", &churn.context, Some(2))
            .await
            .unwrap();
        cluster.restart(2).await;
        for i in 0..3 {
            let c = cluster.client_of(i);
            assert_eq!(
                strings(&get_from_all_three(&c, "k").await.values),
                ["z"],
                "max_vector_entries = {max_entries}, via node-{i}"
            );
            assert!(
                get_from_all_three(&c, "churn").await.values.is_empty(),
                "max_vector_entries = {max_entries}: deleted values came back via node-{i}"
            );
        }
        converges(&cluster, &[0, 1, 2], "k", &["z"]).await;
        converges(&cluster, &[0, 1, 2], "churn", &[]).await;
        cluster.shutdown().await;
    }
}

/// Defect 6: a request carrying the forwarding marker must not make a node that is not among
/// the key's replicas coordinate it and count itself toward W.
#[tokio::test(flavor = "multi_thread")]
async fn defect6_the_forwarding_marker_never_makes_a_non_replica_count_toward_w() {
    let mut cluster = Cluster::start(4).await;
    let key = cluster.key_not_replicated_on(0, "marker");
    for r in cluster.replicas_of(key.as_bytes()) {
        cluster.stop(r).await;
    }
    let mut kv = KvClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::PutRequest {
        key: Some(Bytes::from(key.clone())),
        value: Some(Bytes::from_static(b"v")),
        w: Some(1),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dynamokv-forwarded", "1".parse().unwrap());
    let result = kv.put(req).await;
    assert!(
        result.is_err(),
        "a W=1 put was acknowledged with every replica down"
    );
    assert!(cluster.local_state(0, key.as_bytes()).await.is_none());
    cluster.shutdown().await;
}

/// Defect 7: blind puts of large values must not make a key unreadable. Past a limit they are
/// refused with an error that says to read and resolve, and the key can always be read and
/// resolved.
#[tokio::test(flavor = "multi_thread")]
async fn defect7_a_key_with_many_siblings_stays_readable_and_resolvable() {
    let cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    let client = Client::builder([cluster.seed(0)])
        .coordination(dynamokv_client::Coordination::Server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut accepted = 0;
    for i in 0..65u8 {
        match client.put("hot", vec![i; 1 << 20], None).await {
            Ok(_) => accepted += 1,
            Err(e) if e.code() == "SIBLING_LIMIT" => {
                assert!(e.to_string().contains("resolve"), "{e}");
            }
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
    let got = client.get("hot").await.unwrap();
    assert_eq!(got.values.len(), accepted);
    client
        .put("hot", b"resolved".to_vec(), Some(&got.context))
        .await
        .unwrap();
    assert_eq!(
        client.get("hot").await.unwrap().values,
        vec![b"resolved".to_vec()]
    );
    // Past the limit blind writes are refused, and the key is writable again once resolved.
    client.put("hot", b"after".to_vec(), None).await.unwrap();
    assert_eq!(
        sorted(client.get("hot").await.unwrap().values),
        vec![b"after".to_vec(), b"resolved".to_vec()]
    );
    cluster.shutdown().await;
}

/// Defect 8: when the first replica a non-replica forwards to hangs, the next one must be
/// tried, so a W=2 put succeeds with two healthy replicas, and the value ends up stored once
/// everywhere after the hung replica resumes.
#[tokio::test(flavor = "multi_thread")]
async fn defect8_forwarding_tries_the_next_replica_when_the_first_hangs() {
    let cluster = Cluster::start_proxied(4, |_| {}).await;
    let key = cluster.key_not_replicated_on(0, "hang");
    let reps = cluster.replicas_of(key.as_bytes());
    cluster.proxy(reps[0]).set(Mode::Hang);
    let client = cluster.client_of(0);
    client
        .put_with_quorum(&key, b"v".to_vec(), None, Some(2))
        .await
        .unwrap();
    converges(&cluster, &reps[1..], &key, &["v"]).await;
    cluster.proxy(reps[0]).set(Mode::Pass);
    let got = client.get_with_quorum(&key, Some(3)).await.unwrap();
    assert_eq!(strings(&got.values), ["v"]);
    converges(&cluster, &reps, &key, &["v"]).await;
    cluster.shutdown().await;
}

/// Also checked: a write whose request is cancelled while its coordinator is still writing it
/// locally must still reach the other replicas. Node 0's copy of the key is made large (30 MiB)
/// so that its local write takes a while, and the put is dropped during it.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_cancelled_during_its_local_write_still_reaches_every_replica() {
    use dynamokv_common::{Actor, CausalContext, VersionedState, WriteId};
    use dynamokv_proto::v1::replica_client::ReplicaClient;

    let cluster = Cluster::start(3).await;
    // A 30 MiB state of the key, as if from another replica.
    let mut big = VersionedState::new();
    for i in 0..30u128 {
        big.update(
            &CausalContext::new(),
            WriteId(i),
            Some(Bytes::from(vec![i as u8; 1 << 20])),
            Actor(7),
            1,
            1,
        );
    }
    let mut replica = ReplicaClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let mut kv = KvClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    replica
        .merge_local(pb::MergeLocalRequest {
            key: Some(Bytes::from_static(b"cancelled")),
            state: Some(big.to_proto()),
            sync: false,
        })
        .await
        .unwrap();
    // A small put of that key, stating no deadline, dropped 10 ms in: while node 0 is still
    // rewriting the 30 MiB state locally.
    let call = kv.put(pb::PutRequest {
        key: Some(Bytes::from_static(b"cancelled")),
        value: Some(Bytes::from_static(b"small")),
        w: Some(3),
        ..Default::default()
    });
    let _ = tokio::time::timeout(Duration::from_millis(10), call).await;
    for i in [1, 2] {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let values = cluster.local_values(i, b"cancelled").await;
            if values.contains(&b"small".to_vec()) {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "node-{i} never got the cancelled write (node-0 has it: {})",
                cluster
                    .local_values(0, b"cancelled")
                    .await
                    .contains(&b"small".to_vec())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.shutdown().await;
}
