//! Fault campaigns on real `dynamokv serve` processes: every acknowledged write is recorded and
//! checked at the end on every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamokv_client::Client;
use dynamokv_common::VersionedState;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_client::ReplicaClient;

use crate::support::ProcCluster;

/// How a write ended, as its writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// The client said it cannot know whether the write was applied.
    Unknown,
    /// Refused or failed: may still be stored on some replica, but at most once.
    Failed,
}

async fn live_values(
    client: &mut ReplicaClient<tonic::transport::Channel>,
    key: &str,
) -> Vec<Bytes> {
    let reply = client
        .read_local(pb::ReadLocalRequest {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            include_hints: false,
        })
        .await
        .unwrap()
        .into_inner();
    reply
        .state
        .map(|s| VersionedState::from_proto(&s).unwrap().live_values())
        .unwrap_or_default()
}

/// The end of every campaign: a quorum read of every key (which also read-repairs a node that
/// missed writes), then every replica's own copy: each acknowledged write exactly once on all
/// of them, and no write, acknowledged or not, stored twice anywhere.
async fn every_acknowledged_write_on_every_replica_once(
    cluster: &ProcCluster,
    outcomes: &[(String, Outcome)],
) {
    let reader = Client::builder(cluster.seeds())
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (key, outcome) in outcomes {
        let got = reader.get_with_quorum(key, Some(3)).await.unwrap();
        match outcome {
            Outcome::Acknowledged => {
                assert_eq!(got.values, vec![key.clone().into_bytes()], "{key}")
            }
            _ => assert!(got.values.len() <= 1, "{key} stored twice: {outcome:?}"),
        }
    }
    for (i, node) in cluster.procs.iter().enumerate() {
        let addr = node.as_ref().unwrap().addr;
        let mut replica = ReplicaClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for (key, outcome) in outcomes {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                let values = live_values(&mut replica, key).await;
                assert!(values.len() <= 1, "node-{i} holds {key} twice");
                if *outcome != Outcome::Acknowledged || values == [key.as_bytes()] {
                    break;
                }
                assert!(Instant::now() < end, "node-{i} lacks acknowledged {key}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Defect 2, the campaign that found it: four writers make blind puts to distinct keys while
/// one node of three is SIGKILLed and later restarted. No acknowledged write may be lost, and
/// no write, acknowledged or not, may be stored twice.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_blind_puts_loses_and_duplicates_nothing() {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 2_500;
    let mut cluster = ProcCluster::start(3, "").await;
    let seeds = cluster.seeds();
    let done = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (seeds, done) = (seeds.clone(), Arc::clone(&done));
        writers.push(tokio::spawn(async move {
            let client = Client::builder(seeds)
                .request_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut outcomes = Vec::with_capacity(PER_WRITER);
            for i in 0..PER_WRITER {
                let key = format!("w{w}-{i}");
                let outcome = match client.put(&key, key.clone().into_bytes(), None).await {
                    Ok(_) => Outcome::Acknowledged,
                    Err(e) if e.code() == "OUTCOME_UNKNOWN" => Outcome::Unknown,
                    Err(_) => Outcome::Failed,
                };
                outcomes.push((key, outcome));
                done.fetch_add(1, Ordering::Relaxed);
            }
            outcomes
        }));
    }
    let total = WRITERS * PER_WRITER;
    let wait_for = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            let end = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < end, "writers stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(total / 3).await;
    cluster.kill(1);
    wait_for(2 * total / 3).await;
    cluster.start_node(1);
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for w in writers {
        outcomes.extend(w.await.unwrap());
    }
    let acked = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Acknowledged)
        .count();
    assert!(
        acked > total / 2,
        "only {acked} of {total} puts acknowledged"
    );

    every_acknowledged_write_on_every_replica_once(&cluster, &outcomes).await;
}

/// Issue 8, scenario 2: one node of three hung with SIGSTOP for ten seconds (its connections
/// stay open), then resumed, under a put-and-get load from four clients. Requests keep
/// succeeding during the hang, none waits much more than the replica deadline (the clients'
/// attempt timeout is set to it), and afterwards every acknowledged write is on every replica
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sigstop_hang_keeps_requests_succeeding_and_loses_nothing() {
    const WRITERS: usize = 4;
    const REPLICA_DEADLINE: Duration = Duration::from_millis(1000);
    const HANG: Duration = Duration::from_secs(10);
    let cluster = ProcCluster::start(3, "").await;
    let seeds = cluster.seeds();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (seeds, stop, done) = (seeds.clone(), Arc::clone(&stop), Arc::clone(&done));
        writers.push(tokio::spawn(async move {
            let client = Client::builder(seeds)
                .request_timeout(Duration::from_secs(5))
                .attempt_timeout(REPLICA_DEADLINE)
                .build()
                .unwrap();
            // (key, outcome, when the put started, how long put and get took, get ok)
            let mut log = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("h{w}-{i}");
                i += 1;
                let t = Instant::now();
                let outcome = match client.put(&key, key.clone().into_bytes(), None).await {
                    Ok(_) => Outcome::Acknowledged,
                    Err(e) if e.code() == "OUTCOME_UNKNOWN" => Outcome::Unknown,
                    Err(_) => Outcome::Failed,
                };
                let put_took = t.elapsed();
                let t2 = Instant::now();
                let read_ok = match client.get(&key).await {
                    Ok(got) => outcome != Outcome::Acknowledged || got.values == [key.as_bytes()],
                    Err(_) => false,
                };
                log.push((key, outcome, t, put_took, t2.elapsed(), read_ok));
                done.fetch_add(1, Ordering::Relaxed);
            }
            log
        }));
    }
    let wait_for = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            let end = Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < end, "the load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(400).await;
    let hung = cluster.procs[1].as_ref().unwrap();
    hung.signal("STOP");
    let hang_start = Instant::now();
    tokio::time::sleep(HANG).await; // the fault's length, not a wait for anything
    hung.signal("CONT");
    let hang_end = Instant::now();
    let resumed = done.load(Ordering::Relaxed);
    wait_for(resumed + 400).await;
    stop.store(true, Ordering::Relaxed);
    let mut log = Vec::new();
    for w in writers {
        log.extend(w.await.unwrap());
    }

    // During the hang (requests under way at any moment of it, the ones caught in flight when
    // it began included): every request succeeded, none waited much past the replica deadline.
    let during: Vec<_> = log
        .iter()
        .filter(|(_, _, t, put, get, _)| *t < hang_end && *t + *put + *get > hang_start)
        .collect();
    assert!(
        during.len() > 100,
        "only {} requests during the hang",
        during.len()
    );
    let ok = during
        .iter()
        .filter(|(_, o, _, _, _, read_ok)| *o == Outcome::Acknowledged && *read_ok)
        .count();
    let mut latencies: Vec<Duration> = during
        .iter()
        .flat_map(|(_, _, _, p, g, _)| [*p, *g])
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    println!(
        "sigstop {HANG:?}: {} put-then-get pairs under way during the hang, {ok} fully succeeded ({:.1}%), p99 {p99:?}, max {max:?}; run took {:?}",
        during.len(),
        100.0 * ok as f64 / during.len() as f64,
        started.elapsed()
    );
    assert_eq!(ok, during.len(), "requests failed during the hang");
    assert!(
        max < REPLICA_DEADLINE + Duration::from_millis(1500),
        "a request took {max:?} during the hang"
    );

    // Afterwards (read repair brings the resumed node up to date):
    let outcomes: Vec<(String, Outcome)> = log
        .into_iter()
        .map(|(key, outcome, ..)| (key, outcome))
        .collect();
    every_acknowledged_write_on_every_replica_once(&cluster, &outcomes).await;
}
