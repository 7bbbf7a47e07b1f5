//! Fault campaigns on real `dynamokv serve` processes: every acknowledged write is recorded and
//! checked at the end on every replica.

use std::collections::HashMap;
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
        })
        .await
        .unwrap()
        .into_inner();
    reply
        .state
        .map(|s| VersionedState::from_proto(&s).unwrap().live_values())
        .unwrap_or_default()
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
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    for w in writers {
        outcomes.extend(w.await.unwrap());
    }
    let acked = outcomes
        .values()
        .filter(|o| **o == Outcome::Acknowledged)
        .count();
    assert!(
        acked > total / 2,
        "only {acked} of {total} puts acknowledged"
    );

    // A quorum read of every key (which also read-repairs the restarted node)...
    let reader = Client::builder(cluster.seeds())
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for (key, outcome) in &outcomes {
        let got = reader.get_with_quorum(key, Some(3)).await.unwrap();
        match outcome {
            Outcome::Acknowledged => {
                assert_eq!(got.values, vec![key.clone().into_bytes()], "{key}")
            }
            _ => assert!(got.values.len() <= 1, "{key} stored twice: {outcome:?}"),
        }
    }
    // ...then every replica's own copy: each acknowledged write exactly once on all three.
    for i in 0..3 {
        let addr = cluster.procs[i].as_ref().unwrap().addr;
        let mut replica = ReplicaClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for (key, outcome) in &outcomes {
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
