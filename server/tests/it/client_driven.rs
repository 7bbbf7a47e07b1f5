//! Client-driven coordination (paper 6.4) against real clusters: the client pulls the ring,
//! reads from the key's replicas itself and sends writes straight to one of them; every claim
//! is checked on the nodes' own request counters and replica states.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dynamokv_client::{
    Client, Coordination, Error, PutItem, Resolver, ResolverError, WriteOptions,
};
use dynamokv_common::inspect_context;

use crate::support::{Cluster, eventually, sample, scrape};

const READS: &str = "dynamokv_requests_total{op=\"read_replica\",outcome=\"ok\"}";
const PUTS: &str = "dynamokv_requests_total{op=\"put\",outcome=\"ok\"}";
const FORWARDED: &str = "dynamokv_request_duration_seconds_count{op=\"put\",role=\"forwarder\"}";
const COORDINATED_GETS: &str = "dynamokv_requests_total{op=\"get\",outcome=\"ok\"}";

async fn start(n: usize) -> Cluster {
    Cluster::start_with(n, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn client(cluster: &Cluster, seeds: &[usize]) -> Client {
    Client::builder(seeds.iter().map(|i| cluster.seed(*i)))
        .request_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// One counter on every node.
async fn counts(cluster: &Cluster, series: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..cluster.nodes.len() {
        if cluster.nodes[i].is_some() {
            out.push(sample(&scrape(cluster, i).await, series));
        } else {
            out.push(0.0);
        }
    }
    out
}

fn delta(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[tokio::test]
async fn gets_and_puts_reach_exactly_the_nodes_the_preference_list_names() {
    // Five nodes, N = 3: each key has replicas on three of them, so the counters show where
    // each request went. The client knows one seed only.
    let cluster = start(5).await;
    let client = client(&cluster, &[0]);
    client.refresh_ring().await.unwrap();
    for k in 0..20 {
        let key = format!("routed-{k}");
        let replicas = cluster.replicas_of(key.as_bytes());
        let (reads0, puts0, fwd0) = (
            counts(&cluster, READS).await,
            counts(&cluster, PUTS).await,
            counts(&cluster, FORWARDED).await,
        );
        client.put(&key, b"v".to_vec(), None).await.unwrap();
        let got = client.get(&key).await.unwrap();
        assert_eq!(got.values, vec![b"v".to_vec()]);
        let puts = delta(&counts(&cluster, PUTS).await, &puts0);
        let fwd = delta(&counts(&cluster, FORWARDED).await, &fwd0);
        // The put went straight to the first replica, which coordinated it: no forwarding.
        let mut expected = vec![0.0; 5];
        expected[replicas[0]] = 1.0;
        assert_eq!(
            puts, expected,
            "{key}: puts per node; replicas {replicas:?}"
        );
        assert_eq!(fwd, vec![0.0; 5], "{key}: a put was forwarded");
        // The get asked the key's replicas, each once, and no other node (late answers are
        // counted too, so wait for the third).
        let mut expected = vec![0.0; 5];
        for r in &replicas {
            expected[*r] = 1.0;
        }
        eventually(
            "the get's three replica reads",
            Duration::from_secs(5),
            || {
                let (cluster, reads0, expected) = (&cluster, &reads0, &expected);
                async move { &delta(&counts(cluster, READS).await, reads0) == expected }
            },
        )
        .await;
    }
    // No node coordinated a get: the client did.
    assert_eq!(counts(&cluster, COORDINATED_GETS).await, vec![0.0; 5]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_put_with_a_gets_context_goes_to_the_replica_that_answered_it_first() {
    // Read-your-writes (paper 5): the context names the fastest replica of the read.
    let cluster = start(3).await;
    let client = client(&cluster, &[0, 1, 2]);
    for k in 0..10 {
        let key = format!("ryw-{k}");
        client.put(&key, b"one".to_vec(), None).await.unwrap();
        let got = client.get(&key).await.unwrap();
        let (_, fastest) = inspect_context(key.as_bytes(), got.context.as_bytes()).unwrap();
        let fastest = fastest.expect("a client-coordinated get names its fastest replica");
        let at: usize = fastest.trim_start_matches("node-").parse().unwrap();
        let before = counts(&cluster, PUTS).await;
        client
            .put(&key, b"two".to_vec(), Some(&got.context))
            .await
            .unwrap();
        let puts = delta(&counts(&cluster, PUTS).await, &before);
        let mut expected = vec![0.0; 3];
        expected[at] = 1.0;
        assert_eq!(
            puts, expected,
            "{key}: the put went elsewhere than {fastest}"
        );
        assert_eq!(
            client.get(&key).await.unwrap().values,
            vec![b"two".to_vec()]
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stopped_node_is_routed_around() {
    let mut cluster = start(3).await;
    let client = client(&cluster, &[0, 1, 2]);
    for k in 0..10 {
        client
            .put(format!("around-{k}"), b"before".to_vec(), None)
            .await
            .unwrap();
    }
    cluster.stop(1).await;
    for k in 0..10 {
        let key = format!("around-{k}");
        let got = client.get(&key).await.unwrap();
        assert_eq!(got.values, vec![b"before".to_vec()], "{key}");
        client
            .put(&key, b"after".to_vec(), Some(&got.context))
            .await
            .unwrap();
        assert_eq!(
            client.get(&key).await.unwrap().values,
            vec![b"after".to_vec()]
        );
    }
    let health = client.node_health();
    assert!(
        health.iter().any(|h| h.address == cluster.seed(1) && !h.up),
        "the stopped node is marked down: {health:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_resolver_merges_siblings_and_the_write_back_leaves_one_version_everywhere() {
    let cluster = start(3).await;
    let client = client(&cluster, &[0]);
    // Two blind writes: concurrent siblings.
    client
        .put("cart", br#"["apple"]"#.to_vec(), None)
        .await
        .unwrap();
    client
        .put("cart", br#"["pear","apple"]"#.to_vec(), None)
        .await
        .unwrap();
    assert_eq!(client.get("cart").await.unwrap().values.len(), 2);
    let resolved = client
        .get_resolved("cart", &Resolver::UnionJson, None, true)
        .await
        .unwrap();
    assert_eq!(resolved.siblings, 2);
    assert!(resolved.written_back);
    assert_eq!(resolved.value.as_deref(), Some(&br#"["apple","pear"]"#[..]));
    // Every replica ends with the one merged version (W = 2 at once, the third by repair or
    // by the write's own replication).
    eventually(
        "one version on every replica",
        Duration::from_secs(10),
        || {
            let cluster = &cluster;
            async move {
                for i in 0..3 {
                    if cluster.local_values(i, b"cart").await
                        != vec![br#"["apple","pear"]"#.to_vec()]
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    // The resolved context supersedes the write-back itself: a put with it leaves one version.
    client
        .put("cart", br#"["fig"]"#.to_vec(), Some(&resolved.context))
        .await
        .unwrap();
    assert_eq!(
        client.get("cart").await.unwrap().values,
        vec![br#"["fig"]"#.to_vec()]
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_failing_resolver_gives_a_clear_error_and_writes_nothing() {
    let cluster = start(3).await;
    let client = client(&cluster, &[0]);
    client.put("k", b"a".to_vec(), None).await.unwrap();
    client.put("k", b"b".to_vec(), None).await.unwrap();
    let before: Vec<_> = futures_join(&cluster, b"k").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let failing = Resolver::from_fn(move |s| {
        counted.fetch_add(1, Ordering::SeqCst);
        assert_eq!(s.values.len(), 2);
        Err(ResolverError::new("cannot merge these"))
    });
    let err = client
        .get_resolved("k", &failing, None, true)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::ResolverFailed {
            message: "cannot merge these".into()
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // union_json over values that are not JSON arrays fails the same way.
    let err = client
        .get_resolved("k", &Resolver::UnionJson, None, true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ResolverFailed { .. }), "{err:?}");
    // Nothing was written: each replica's state is what it was (read repair aside, which only
    // adds what another replica had).
    let after: Vec<_> = futures_join(&cluster, b"k").await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let live = |s: &Option<dynamokv_common::VersionedState>| {
            s.as_ref().map(|s| s.live_values()).unwrap_or_default()
        };
        assert!(live(a).len() >= live(b).len(), "node-{i} lost a version");
        assert_eq!(live(a).len(), 2, "node-{i}: the siblings are still there");
    }
    cluster.shutdown().await;
}

async fn futures_join(
    cluster: &Cluster,
    key: &[u8],
) -> Vec<Option<dynamokv_common::VersionedState>> {
    let mut out = Vec::new();
    for i in 0..cluster.nodes.len() {
        out.push(cluster.local_state(i, key).await);
    }
    out
}

#[tokio::test]
async fn batches_route_each_key_and_one_bad_key_fails_alone() {
    let cluster = start(3).await;
    let client = client(&cluster, &[0]);
    let mut items: Vec<PutItem> = (0..50)
        .map(|i| PutItem {
            key: format!("batch-{i}").into_bytes(),
            value: format!("value-{i}").into_bytes(),
            context: None,
        })
        .collect();
    items[7].key = Vec::new();
    let results = client.put_many(items, WriteOptions::default()).await;
    assert_eq!(results.len(), 50);
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(matches!(r, Err(Error::EmptyKey { .. })), "{r:?}");
        } else {
            assert!(r.is_ok(), "batch-{i}: {r:?}");
        }
    }
    let keys: Vec<String> = (0..50).map(|i| format!("batch-{i}")).collect();
    let mut with_bad: Vec<Vec<u8>> = keys.iter().map(|k| k.clone().into_bytes()).collect();
    with_bad[7] = vec![b'x'; 5000];
    let got = client.get_many(&with_bad, None).await;
    for (i, r) in got.iter().enumerate() {
        match i {
            7 => assert!(matches!(r, Err(Error::KeyTooLarge { .. })), "{r:?}"),
            _ => assert_eq!(
                r.as_ref().unwrap().values,
                vec![format!("value-{i}").into_bytes()]
            ),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn server_driven_mode_sends_every_request_to_one_node() {
    let cluster = start(5).await;
    let client = Client::builder([cluster.seed(2)])
        .coordination(Coordination::Server)
        .build()
        .unwrap();
    let before = counts(&cluster, COORDINATED_GETS).await;
    for k in 0..10 {
        let key = format!("server-{k}");
        client.put(&key, b"v".to_vec(), None).await.unwrap();
        assert_eq!(client.get(&key).await.unwrap().values, vec![b"v".to_vec()]);
    }
    let gets = delta(&counts(&cluster, COORDINATED_GETS).await, &before);
    assert_eq!(gets, vec![0.0, 0.0, 10.0, 0.0, 0.0]);
    assert_eq!(counts(&cluster, READS).await, vec![0.0; 5]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shopping_cart_example_loses_nothing_while_a_node_is_stopped() {
    let cluster = crate::support::ProcCluster::start_with_sections(3, "", "").await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dynamokv")).with_file_name("shopping_cart");
    assert!(
        bin.is_file(),
        "{} is missing: build the examples first (`make build`, or `cargo build --release -p dynamokv-examples`)",
        bin.display()
    );
    let pid = cluster.procs[2].as_ref().unwrap().child.id();
    let out = tokio::process::Command::new(&bin)
        .arg("--pause-pid")
        .arg(pid.to_string())
        .args(cluster.seeds())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("stopped (SIGSTOP)"), "{stdout}");
    assert!(stdout.contains("2 concurrent versions"), "{stdout}");
    assert!(stdout.contains("nothing added was lost"), "{stdout}");
}

#[tokio::test]
async fn a_client_coordinated_read_repairs_a_stale_replica() {
    // Anti-entropy far off, so only the client's read repair can bring the write to node-2.
    let mut cluster = Cluster::start_with(3, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.background.anti_entropy_interval_ms = 600_000;
    })
    .await;
    let client = client(&cluster, &[0, 1]);
    cluster.stop(2).await;
    client.put("stale", b"new".to_vec(), None).await.unwrap();
    cluster.restart(2).await;
    assert!(
        cluster.local_values(2, b"stale").await.is_empty(),
        "node-2 was down for the write"
    );
    // The client may still see node-2 as down: wait until its probe brings it back, so that
    // the read asks it.
    eventually(
        "the client to see node-2 again",
        Duration::from_secs(15),
        || async { client.node_health().iter().all(|h| h.up) },
    )
    .await;
    eventually("a read to repair node-2", Duration::from_secs(10), || {
        let (cluster, client) = (&cluster, &client);
        async move {
            assert_eq!(
                client.get("stale").await.unwrap().values,
                vec![b"new".to_vec()]
            );
            cluster.local_values(2, b"stale").await == vec![b"new".to_vec()]
        }
    })
    .await;
    let repairs = sample(
        &scrape(&cluster, 2).await,
        "dynamokv_requests_total{op=\"repair_replica\",outcome=\"ok\"}",
    );
    assert!(
        repairs >= 1.0,
        "node-2 was repaired by the client: {repairs}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn hedged_reads_ask_r_replicas_and_one_more_only_when_they_are_slow() {
    let cluster = Cluster::start_proxied(3, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let client = Client::builder((0..3).map(|i| cluster.seed(i)))
        .hedge_after(Some(Duration::from_millis(50)))
        .attempt_timeout(Duration::from_secs(4))
        .request_timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    client.put("hedged", b"v".to_vec(), None).await.unwrap();
    // Without faults a hedged read asks R = 2 replicas, not N = 3.
    let before = counts(&cluster, READS).await;
    for _ in 0..10 {
        assert_eq!(
            client.get("hedged").await.unwrap().values,
            vec![b"v".to_vec()]
        );
    }
    let asked: f64 = delta(&counts(&cluster, READS).await, &before).iter().sum();
    assert!(
        asked <= 20.0 + 2.0,
        "hedged reads asked {asked} replicas for 10 gets"
    );
    // One of the first two replicas hangs: after 50 ms the third is asked, and the get
    // returns long before the 4 s attempt timeout.
    let first = cluster.replicas_of(b"hedged")[0];
    cluster.proxy(first).set(crate::proxy::Mode::Hang);
    let start = std::time::Instant::now();
    let got = client.get("hedged").await.unwrap();
    let took = start.elapsed();
    cluster.proxy(first).set(crate::proxy::Mode::Pass);
    assert_eq!(got.values, vec![b"v".to_vec()]);
    assert!(
        took < Duration::from_secs(2),
        "the hedged get took {took:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_resolver_that_never_finishes_times_the_call_out_and_writes_nothing() {
    let cluster = start(3).await;
    let client = Client::builder([cluster.seed(0)])
        .request_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    client.put("stuck", b"a".to_vec(), None).await.unwrap();
    client.put("stuck", b"b".to_vec(), None).await.unwrap();
    let never = Resolver::from_async(|_| std::future::pending());
    let err = client
        .get_resolved("stuck", &never, None, true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(client.get("stuck").await.unwrap().values.len(), 2);
    cluster.shutdown().await;
}
