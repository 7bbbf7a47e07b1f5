//! Replication, quorums, coordination and read repair across real nodes (paper 4.3 to 4.5).

use std::time::Duration;

use dynamokv_client::Error;

use crate::support::{Cluster, eventually};

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_reaches_all_n_replicas() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client_of(1);
    client.put("everywhere", b"v".to_vec(), None).await.unwrap();
    for i in 0..3 {
        eventually(
            "replica to hold the put",
            Duration::from_secs(5),
            || async { cluster.local_values(i, b"everywhere").await == vec![b"v".to_vec()] },
        )
        .await;
    }
    cluster.shutdown().await;
}

/// With one node of three down, W = 2 and R = 2 succeed. W = 3 and R = 3 cannot: once the
/// coordinator knows the node is down (the first put's copy to it failed), it says so at once,
/// naming the node, and writes nothing, instead of waiting out the replica timeout for a
/// `QuorumNotReached` (the client would then try another node).
#[tokio::test(flavor = "multi_thread")]
async fn with_one_node_down_w2_r2_succeed_and_w3_fails_at_once_naming_it() {
    let mut cluster = Cluster::start(3).await;
    cluster.stop(2).await;
    let client = cluster.client_of(0);
    let ctx = client.put("k", b"v1".to_vec(), None).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().values, vec![b"v1".to_vec()]);
    assert_eq!(
        client.get_with_quorum("k", Some(2)).await.unwrap().values,
        vec![b"v1".to_vec()]
    );
    let started = std::time::Instant::now();
    match client
        .put_with_quorum("k", b"v2".to_vec(), Some(&ctx), Some(3))
        .await
    {
        Err(Error::Unavailable { message }) => {
            assert!(
                message.contains("node-2") && message.contains("nothing was done"),
                "the failure names the missing node: {message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match client.get_with_quorum("k", Some(3)).await {
        Err(Error::Unavailable { message }) => assert!(message.contains("node-2"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    for i in 0..2 {
        assert_eq!(
            cluster.local_values(i, b"k").await,
            vec![b"v1".to_vec()],
            "node-{i}: the refused write changed nothing"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn same_context_through_two_coordinators_gives_siblings_resolved_everywhere() {
    let cluster = Cluster::start(3).await;
    let (c0, c1) = (cluster.client_of(0), cluster.client_of(1));
    c0.put("cart", b"base".to_vec(), None).await.unwrap();
    let ctx = c0.get("cart").await.unwrap().context;
    c0.put("cart", b"from-0".to_vec(), Some(&ctx))
        .await
        .unwrap();
    c1.put("cart", b"from-1".to_vec(), Some(&ctx))
        .await
        .unwrap();

    let both = c1.get_with_quorum("cart", Some(3)).await.unwrap();
    assert_eq!(
        sorted(both.values.clone()),
        vec![b"from-0".to_vec(), b"from-1".to_vec()]
    );

    c0.put_with_quorum("cart", b"merged".to_vec(), Some(&both.context), Some(3))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            cluster.local_values(i, b"cart").await,
            vec![b"merged".to_vec()],
            "node-{i}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    let mut cluster = Cluster::start(3).await;
    cluster.stop(2).await;
    let client = cluster.client_of(0);
    client
        .put("repair-me", b"fresh".to_vec(), None)
        .await
        .unwrap();
    cluster.restart(2).await;
    assert!(cluster.local_values(2, b"repair-me").await.is_empty());

    let got = client.get_with_quorum("repair-me", Some(3)).await.unwrap();
    assert_eq!(got.values, vec![b"fresh".to_vec()]);
    eventually("read repair of node-2", Duration::from_secs(5), || async {
        cluster.local_values(2, b"repair-me").await == vec![b"fresh".to_vec()]
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_sent_outside_the_preference_list_is_forwarded() {
    // Five nodes, N = 3: for some keys node-0 is not a replica and must forward.
    let cluster = Cluster::start(5).await;
    let client = cluster.client_of(0);
    for k in 0..20 {
        let key = format!("fwd-{k}");
        client.put(&key, b"v".to_vec(), None).await.unwrap();
        let holders = {
            let mut n = 0;
            for i in 0..5 {
                if !cluster.local_values(i, key.as_bytes()).await.is_empty() {
                    n += 1;
                }
            }
            n
        };
        assert!(holders >= 2, "{key} held by {holders}");
        assert_eq!(client.get(&key).await.unwrap().values, vec![b"v".to_vec()]);
    }
    // node-0 holds only keys of its partitions: at most N of 5 nodes hold each key.
    let mut held_by_0 = 0;
    for k in 0..20 {
        if !cluster
            .local_values(0, format!("fwd-{k}").as_bytes())
            .await
            .is_empty()
        {
            held_by_0 += 1;
        }
    }
    assert!(
        held_by_0 < 20,
        "node-0 coordinated keys it does not replicate"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_are_exactly_the_preference_list_the_client_computes() {
    let cluster = Cluster::start(5).await;
    let client = cluster.client_of(3);
    let (ring, info) = client.ring().await.unwrap();
    assert_eq!((info.n, ring.members().len()), (3, 5));
    for k in 0..25 {
        let key = format!("placed-{k}");
        client
            .put_with_quorum(&key, b"v".to_vec(), None, Some(3))
            .await
            .unwrap();
        let expected: Vec<String> = ring
            .preference_list(key.as_bytes(), 3)
            .nodes
            .iter()
            .map(|m| m.id.clone())
            .collect();
        let mut holders = Vec::new();
        for i in 0..5 {
            if !cluster.local_values(i, key.as_bytes()).await.is_empty() {
                holders.push(format!("node-{i}"));
            }
        }
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(holders, expected_sorted, "{key}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_restart_writes_as_a_new_actor_with_or_without_its_disk() {
    use dynamokv_proto::v1::PingRequest;
    use dynamokv_proto::v1::replica_client::ReplicaClient;

    async fn actor(addr: std::net::SocketAddr) -> u64 {
        let mut c = ReplicaClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        c.ping(PingRequest {}).await.unwrap().into_inner().actor
    }

    let mut cluster = Cluster::start(3).await;
    let client = cluster.client_of(0);
    client.put("survivor", b"v1".to_vec(), None).await.unwrap();
    let before = actor(cluster.addrs[0]).await;
    cluster.stop(0).await;
    // Same disk: still a new actor, since the disk may have lost its last writes.
    cluster.restart(0).await;
    let same_disk = actor(cluster.addrs[0]).await;
    assert_ne!(same_disk, before);
    // Lost disk: a new actor, so its counters can never collide with the old ones.
    cluster.stop(0).await;
    std::fs::remove_dir_all(&cluster.configs[0].data_dir).unwrap();
    cluster.restart(0).await;
    let after = actor(cluster.addrs[0]).await;
    assert!(after != before && after != same_disk);
    // A write it coordinates with the context read from the others supersedes the old value.
    let got = client.get_with_quorum("survivor", Some(2)).await.unwrap();
    assert_eq!(got.values, vec![b"v1".to_vec()]);
    client
        .put_with_quorum("survivor", b"v2".to_vec(), Some(&got.context), Some(3))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            cluster.local_values(i, b"survivor").await,
            vec![b"v2".to_vec()],
            "node-{i}"
        );
    }
    cluster.shutdown().await;
}

async fn ping(addr: std::net::SocketAddr) -> dynamokv_proto::v1::PingResponse {
    let mut c =
        dynamokv_proto::v1::replica_client::ReplicaClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    c.ping(dynamokv_proto::v1::PingRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Reads `key` from all replicas and writes `value` over what the read saw, on all replicas.
async fn overwrite(client: &dynamokv_client::Client, key: &str, value: &str) {
    let read = client.get_with_quorum(key, Some(3)).await.unwrap();
    client
        .put_with_quorum(key, value.as_bytes().to_vec(), Some(&read.context), Some(3))
        .await
        .unwrap();
}

/// Clock entries older than the history horizon go once a clock is over its size target; they
/// are counted; the latest value is all that is left everywhere; and read repair stops once the
/// replicas agree (each replica truncates alike, so none looks stale to the others).
#[tokio::test(flavor = "multi_thread")]
async fn old_history_is_truncated_counted_and_read_repair_converges() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.max_vector_entries = 3;
        c.history_horizon_ms = 300;
    })
    .await;
    // Six actors write the key in turn: each node, and each node again after a restart.
    let mut last = String::new();
    for round in 0..2 {
        for i in 0..3 {
            last = format!("r{round}n{i}");
            overwrite(&cluster.client_of(i), "busy", &last).await;
        }
        if round == 0 {
            for i in 0..3 {
                cluster.stop(i).await;
                cluster.restart(i).await;
            }
        }
    }
    assert!(cluster.local_state(0, b"busy").await.unwrap().clock().len() > 3);
    // Once the entries are older than the horizon, the next write truncates them.
    let client = cluster.client_of(0);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        assert!(
            std::time::Instant::now() < end,
            "old entries were never truncated"
        );
        last = format!("late-{n}");
        overwrite(&client, "busy", &last).await;
        let mut truncated = 0;
        let mut longest = 0;
        for i in 0..3 {
            truncated += ping(cluster.addrs[i]).await.vector_truncations;
            longest = longest.max(cluster.local_state(i, b"busy").await.unwrap().clock().len());
        }
        if truncated > 0 && longest <= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        let state = cluster.local_state(i, b"busy").await.unwrap();
        assert!(state.clock().len() <= 3, "node-{i}: {:?}", state.clock());
        assert_eq!(
            cluster.local_values(i, b"busy").await,
            vec![last.clone().into_bytes()]
        );
    }
    // Replicas agree, so gets stop repairing them: three rounds of gets in a row repair nothing.
    let mut stable_rounds = 0;
    let mut before = 0;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while stable_rounds < 3 {
        assert!(std::time::Instant::now() < end, "read repair never stopped");
        for i in 0..3 {
            cluster
                .client_of(i)
                .get_with_quorum("busy", Some(3))
                .await
                .unwrap();
        }
        let mut now = 0;
        for i in 0..3 {
            now += ping(cluster.addrs[i]).await.read_repairs;
        }
        stable_rounds = if now == before { stable_rounds + 1 } else { 0 };
        before = now;
    }
    cluster.shutdown().await;
}
