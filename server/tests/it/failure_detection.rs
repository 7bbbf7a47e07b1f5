//! A client's local failure detection (paper 4.8.3): a node that stops answering (a hung
//! process: its connections stay open) is marked down after one silent attempt, later requests
//! do not wait on it, and a background probe brings it back once it answers.

use std::time::{Duration, Instant};

use dynamokv_client::Client;

use crate::proxy::Mode;
use crate::support::{Cluster, eventually};

fn client_of_all(cluster: &Cluster, attempt_timeout: Option<Duration>) -> Client {
    let mut b = Client::builder((0..3).map(|i| cluster.seed(i)))
        .coordination(dynamokv_client::Coordination::Server)
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
    // Thresholds far apart, so that a loaded machine does not blur them: a request that waited
    // on the hung node took at least the attempt timeout; others take milliseconds.
    let attempt = Duration::from_millis(1000);
    let client = client_of_all(&cluster, Some(attempt));
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
        assert!(took < attempt * 3, "request {i} took {took:?}");
        if took >= attempt * 9 / 10 {
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

/// A node's own failure detection: a forwarding node whose first choice of replica hangs
/// waits for it once, then goes straight to the next replica, and reads leave it out; its
/// `/metrics` shows the peer down, and up again once a probe gets an answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_avoids_a_hung_peer_after_one_timeout_and_probes_it_back() {
    use crate::support::{sample, scrape};

    let cluster = Cluster::start_proxied(4, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let hung = 1;
    // Keys node-0 does not replicate, whose first replica is the hung node: node-0 forwards
    // their writes, to the hung node first unless it knows better.
    let keys: Vec<String> = (0..)
        .map(|i| format!("fwd-{i}"))
        .filter(|k| {
            let reps = cluster.replicas_of(k.as_bytes());
            !reps.contains(&0) && reps[0] == hung
        })
        .take(6)
        .collect();
    let up_series = format!("dynamokv_peer_up{{peer=\"{}\"}}", cluster.seed(hung));
    assert_eq!(sample(&scrape(&cluster, 0).await, &up_series), 1.0);

    cluster.proxy(hung).set(Mode::Hang);
    let client = cluster.client_of(0);
    let mut slow = 0;
    for key in &keys {
        let started = Instant::now();
        client.put(key, b"v".to_vec(), None).await.unwrap();
        assert_eq!(client.get(key).await.unwrap().values, vec![b"v".to_vec()]);
        // A write that waited on the hung replica took its replica timeout (1 s) at least.
        if started.elapsed() >= Duration::from_millis(900) {
            slow += 1;
        }
    }
    assert_eq!(
        slow, 1,
        "only the first write should wait on the hung replica"
    );
    assert_eq!(sample(&scrape(&cluster, 0).await, &up_series), 0.0);

    // `dynamokv admin status` shows node-0's own view: node-1 unreachable, the others not.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .args(["admin", "status", "--node", &cluster.addrs[0].to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 of 4 members reachable"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("  {id} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("node-1").contains("UNREACHABLE"), "{text}");
    assert!(line("node-0").contains("this node"), "{text}");
    for id in ["node-2", "node-3"] {
        assert!(
            line(id).ends_with("reachable") && !line(id).contains("UNREACHABLE"),
            "{text}"
        );
    }
    // With 4 nodes and N = 3, node-0 holds a replica of about three quarters of the partitions.
    let status = dynamokv_server::admin::fetch_status(&cluster.addrs[0].to_string())
        .await
        .unwrap();
    let q = status.partitions;
    assert_eq!(q, cluster.configs[0].cluster.partitions);
    assert!(
        status.partitions_replicated > q * 6 / 10 && status.partitions_replicated < q * 9 / 10,
        "{status:?}"
    );

    cluster.proxy(hung).set(Mode::Pass);
    eventually(
        "node-0 probes the peer back",
        Duration::from_secs(15),
        || async { sample(&scrape(&cluster, 0).await, &up_series) == 1.0 },
    )
    .await;
    let status = dynamokv_server::admin::fetch_status(&cluster.addrs[0].to_string())
        .await
        .unwrap();
    assert!(status.members.iter().all(|m| m.reachable), "{status:?}");
    cluster.shutdown().await;
}
