//! A client's local failure detection (paper 4.8.3): a node that stops answering (a hung
//! process: its connections stay open) is marked down after one silent attempt, later requests
//! do not wait on it, and a background probe brings it back once it answers.

use std::time::{Duration, Instant};

use dynamokv_client::Client;

use crate::proxy::Mode;
use crate::support::{Cluster, eventually};

fn client_of_all(cluster: &Cluster, attempt_timeout: Option<Duration>) -> Client {
    let mut b = Client::builder((0..3).map(|i| cluster.seed(i)))
        .request_timeout(Duration::from_secs(3))
        .max_retries(2);
    if let Some(t) = attempt_timeout {
        b = b.attempt_timeout(t);
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_node_is_avoided_after_one_silent_attempt_and_probed_back() {
    let cluster = Cluster::start_proxied(3, |_| {}).await;
    let client = client_of_all(&cluster, Some(Duration::from_millis(400)));
    cluster.proxy(1).set(Mode::Hang);

    // Every request succeeds: the one that meets the hung node first goes on to another node
    // after its attempt timeout; later ones do not wait on it at all.
    let mut slow = 0;
    for i in 0..12 {
        let started = Instant::now();
        let key = format!("fd-{i}");
        let ctx = client.put(&key, b"v".to_vec(), None).await.unwrap();
        assert!(!ctx.is_empty());
        assert_eq!(client.get(&key).await.unwrap().values, vec![b"v".to_vec()]);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "request {i} took {took:?}");
        if took >= Duration::from_millis(300) {
            slow += 1;
        }
    }
    assert!(slow <= 1, "{slow} requests waited on the hung node");
    let health = client.node_health();
    assert!(!health[1].up, "{health:?}");
    assert!(health[0].up && health[2].up, "{health:?}");

    // Resumed, it is probed back without any request paying for it.
    cluster.proxy(1).set(Mode::Pass);
    eventually(
        "the hung node is probed back",
        Duration::from_secs(10),
        || async { client.node_health().iter().all(|n| n.up) },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_attempt_timeout_only_the_first_request_pays_for_a_hung_node() {
    let cluster = Cluster::start_proxied(3, |_| {}).await;
    let client = client_of_all(&cluster, None);
    cluster.proxy(1).set(Mode::Hang);
    let mut failed = 0;
    for i in 0..9 {
        if client.get(format!("fd-{i}")).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} of 9 gets failed on the hung node");
    assert!(!client.node_health()[1].up);
    cluster.proxy(1).set(Mode::Pass);
    cluster.shutdown().await;
}
