//! Failure handling on in-process clusters (paper 4.6, 4.7): sloppy quorum with hinted
//! handoff, Merkle anti-entropy, tombstone reaping, and what `admin status` shows of them.
//! The fault campaigns on real processes are in `campaign.rs`.

use std::time::Duration;

use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::admin_client::AdminClient;

use crate::support::{Cluster, eventually, sample, scrape};

const DEADLINE: Duration = Duration::from_secs(30);

async fn status(cluster: &Cluster, i: usize) -> pb::StatusResponse {
    AdminClient::connect(format!("http://{}", cluster.addrs[i]))
        .await
        .unwrap()
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Paper 4.6: with two of a key's three replicas down, a W=2 write succeeds through a fallback
/// that keeps a hint, a R=2 read finds it there, and once the owners are back the hints are
/// delivered to them and deleted.
#[tokio::test(flavor = "multi_thread")]
async fn writes_to_down_replicas_go_to_fallbacks_as_hints_and_reach_the_owners_later() {
    let mut cluster = Cluster::start_with(5, |c| {
        c.background.handoff_interval_ms = 100;
        c.background.anti_entropy_interval_ms = 0;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let key = "hinted";
    let replicas = cluster.replicas_of(key.as_bytes());
    let (coordinator, down) = (replicas[0], [replicas[1], replicas[2]]);
    for i in down {
        cluster.stop(i).await;
    }
    let client = cluster.client_of(coordinator);
    client.put(key, b"v1".to_vec(), None).await.unwrap();
    let got = client.get(key).await.unwrap();
    assert_eq!(
        got.values,
        vec![b"v1".to_vec()],
        "the read found the hinted copy"
    );

    // The hints sit on two fallbacks, apart from their own data.
    eventually("hints counted on the fallbacks", DEADLINE, || async {
        let mut n = 0;
        for i in (0..5).filter(|i| !replicas.contains(i)) {
            n += status(&cluster, i).await.hints_queued;
        }
        n == 2
    })
    .await;
    for i in (0..5).filter(|i| !replicas.contains(i)) {
        assert!(
            cluster.local_state(i, key.as_bytes()).await.is_none(),
            "node-{i} stored a hint as its own data"
        );
        // `dynamokv admin status` names the owner each held hint waits for.
        let st = status(&cluster, i).await;
        let text = dynamokv_server::admin::describe_status(&st);
        for b in &st.hint_backlog {
            assert!(
                down.iter().any(|d| b.owner == format!("node-{d}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("for {:<12} 1 hint(s)", b.owner)),
                "{text}"
            );
        }
    }
    for i in down {
        assert!(cluster.nodes[i].is_none());
        cluster.restart(i).await;
    }
    eventually("the owners hold the write", DEADLINE, || async {
        let mut ok = true;
        for i in down {
            ok &= cluster.local_values(i, key.as_bytes()).await == [b"v1".to_vec()];
        }
        ok
    })
    .await;
    eventually("the hints are deleted once delivered", DEADLINE, || async {
        let mut n = 0.0;
        for i in (0..5).filter(|i| !replicas.contains(i)) {
            n += sample(&scrape(&cluster, i).await, "dynamokv_hints_queued");
        }
        n == 0.0
    })
    .await;
    let mut delivered = 0.0;
    for i in 0..5 {
        delivered += sample(&scrape(&cluster, i).await, "dynamokv_hints_delivered_total");
    }
    assert_eq!(delivered, 2.0);
    cluster.shutdown().await;
}

/// Paper 4.7: a replica that was down while keys were written (too few nodes for fallbacks, so
/// no hints) gets every key back from anti-entropy alone, with no client reading them.
#[tokio::test(flavor = "multi_thread")]
async fn anti_entropy_restores_what_a_replica_missed_without_any_read() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.background.anti_entropy_interval_ms = 200;
    })
    .await;
    cluster.stop(2).await;
    let client = cluster.client_of(0);
    let keys: Vec<String> = (0..300).map(|i| format!("ae-{i}")).collect();
    for k in &keys {
        client.put(k, k.clone().into_bytes(), None).await.unwrap();
    }
    cluster.restart(2).await;
    eventually("node-2 holds every key", DEADLINE, || async {
        for k in &keys {
            if cluster.local_values(2, k.as_bytes()).await != [k.clone().into_bytes()] {
                return false;
            }
        }
        true
    })
    .await;
    // An exchange counts its repairs once the batch they were in is applied, and records the
    // peer once it ends: the counts follow the data, so they are awaited too.
    eventually(
        "the exchanges to count every repair and node-2 to show its exchanges",
        DEADLINE,
        || async {
            let mut repaired = 0;
            for i in 0..3 {
                repaired += status(&cluster, i)
                    .await
                    .anti_entropy
                    .unwrap()
                    .keys_repaired;
            }
            let ae = status(&cluster, 2).await.anti_entropy.unwrap();
            repaired >= keys.len() as u64 && !ae.peers.is_empty()
        },
    )
    .await;
    // Once the replicas agree their trees do too: exchanges find nothing left to compare.
    eventually("every exchange finds the trees equal", DEADLINE, || async {
        for i in 0..3 {
            let peers = status(&cluster, i).await.anti_entropy.unwrap().peers;
            if peers.len() < 2 || peers.iter().any(|p| p.partitions_differing > 0) {
                return false;
            }
        }
        true
    })
    .await;
    cluster.shutdown().await;
}

/// A tombstone is reaped only once every replica holds it: not while one replica is down
/// (it could still hold the value), and afterwards from every replica, the value never coming
/// back.
#[tokio::test(flavor = "multi_thread")]
async fn tombstones_are_reaped_only_once_every_replica_holds_them() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.background.anti_entropy_interval_ms = 200;
        c.background.tombstone_grace_ms = 300;
        c.background.reap_interval_ms = 100;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let key = "doomed";
    let client = cluster.client_of(0);
    let ctx = client.put(key, b"v".to_vec(), None).await.unwrap();
    eventually("every replica holds the value", DEADLINE, || async {
        let mut ok = true;
        for i in 0..3 {
            ok &= cluster.local_values(i, key.as_bytes()).await == [b"v".to_vec()];
        }
        ok
    })
    .await;
    let outside = *cluster
        .replicas_of(key.as_bytes())
        .iter()
        .find(|&&i| i != 0)
        .unwrap();
    cluster.stop(outside).await;
    client.delete(key, &ctx).await.unwrap();
    // Well past the grace period, with a replica away, the tombstone stays (this waits on
    // purpose: it checks that something does not happen).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in (0..3).filter(|&i| i != outside) {
        let st = cluster.local_state(i, key.as_bytes()).await;
        assert!(
            st.as_ref().is_some_and(|s| s.is_deleted()),
            "node-{i} reaped with a replica away: {st:?}"
        );
    }
    cluster.restart(outside).await;
    eventually(
        "the tombstone is gone from every replica",
        DEADLINE,
        || async {
            let mut gone = true;
            for i in 0..3 {
                let st = cluster.local_state(i, key.as_bytes()).await;
                // The returning replica holds the old value until anti-entropy brings it the
                // tombstone; no other replica may ever hold it again.
                assert!(
                    i == outside || st.as_ref().is_none_or(|s| s.live_values().is_empty()),
                    "node-{i}: the deleted value came back: {st:?}"
                );
                gone &= st.is_none();
            }
            gone && client.get(key).await.unwrap().values.is_empty()
        },
    )
    .await;
    let mut reaped = 0.0;
    for i in 0..3 {
        reaped += sample(
            &scrape(&cluster, i).await,
            "dynamokv_tombstones_reaped_total",
        );
    }
    assert_eq!(reaped, 3.0, "each replica reaped its copy once");
    cluster.shutdown().await;
}

/// Paper 6.5: background work yields to foreground requests. With a latency bound below what
/// puts of half a megabyte take, anti-entropy pauses (and says so in the metrics) while they
/// run, and resumes when they stop.
#[tokio::test(flavor = "multi_thread")]
async fn background_work_pauses_while_foreground_latency_is_above_the_bound() {
    let cluster = Cluster::start_with(3, |c| {
        c.background.anti_entropy_interval_ms = 50;
        c.background.latency_bound_ms = 1;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let series = "dynamokv_background_paused_total{worker=\"anti_entropy\"}";
    let client = cluster.client_of(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each put copies 512 KiB to two replicas: milliseconds, well above the 1 ms bound.
    let writer = {
        let (client, stop) = (client.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .put(format!("slow-{}", i % 50), vec![7u8; 512 << 10], None)
                    .await
                    .unwrap();
                i += 1;
            }
        })
    };
    eventually(
        "anti-entropy pauses for the slow writes",
        DEADLINE,
        || async { sample(&scrape(&cluster, 0).await, series) > 0.0 },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let exchanges = |text: String| sample(&text, "dynamokv_anti_entropy_exchanges_total");
    let before = exchanges(scrape(&cluster, 0).await);
    eventually(
        "anti-entropy resumes once requests stop",
        DEADLINE,
        || async { exchanges(scrape(&cluster, 0).await) > before + 2.0 },
    )
    .await;
    let st = status(&cluster, 0).await;
    assert!(st.background_pauses > 0, "{st:?}");
    cluster.shutdown().await;
}

/// A get coordinated by a fallback counts the hints that fallback holds itself: with every
/// primary of the key down, the hinted write is still read.
#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_coordinating_a_get_reads_its_own_hints() {
    let mut cluster = Cluster::start_with(5, |c| {
        c.background.handoff_interval_ms = 60_000;
        c.background.anti_entropy_interval_ms = 0;
    })
    .await;
    let key = "self-hinted";
    let replicas = cluster.replicas_of(key.as_bytes());
    // The first fallback in ring order takes the copy of the one primary that is down.
    let members: Vec<dynamokv_common::Member> = cluster.configs[0]
        .cluster
        .members
        .iter()
        .map(|m| dynamokv_common::Member::new(m.id.clone(), m.address.clone()))
        .collect();
    let ring = dynamokv_common::Ring::new(64, members).unwrap();
    let first_fallback: usize = ring.preference_list(key.as_bytes(), 3).fallbacks[0]
        .id
        .trim_start_matches("node-")
        .parse()
        .unwrap();
    assert!(!replicas.contains(&first_fallback));
    cluster.stop(replicas[1]).await;
    cluster
        .client_of(replicas[0])
        .put(key, b"v".to_vec(), None)
        .await
        .unwrap();
    for &r in &[replicas[0], replicas[2]] {
        cluster.stop(r).await;
    }
    let got = cluster.client_of(first_fallback).get(key).await.unwrap();
    assert_eq!(got.values, vec![b"v".to_vec()]);
    cluster.shutdown().await;
}
