//! Resource limits (issue 11): past its cap of requests in flight or of connections a node
//! answers OVERLOADED at once, and serves again when the load goes; a request over the size
//! limit is refused and writes nothing.

use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use dynamokv_client::Error;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::admin_client::AdminClient;
use dynamokv_proto::v1::kv_client::KvClient;

use crate::support::{Cluster, eventually, sample, scrape};

type Held = tokio::task::JoinHandle<()>;
type Join = tokio::task::JoinHandle<Result<tonic::Response<pb::JoinResponse>, tonic::Status>>;

/// Holds one of node 0's request slots: an operator's join through a seed that accepts
/// connections and never answers, for as long as the first handle (the hole, holding the
/// connections) runs. Aborting it lets the join fail and the slot go. A join refused because
/// a request of the test's own held the slot at that moment is made again.
async fn hold_a_request_slot(cluster: &Cluster) -> (Held, Join) {
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let node = cluster.seed(0);
    let join = tokio::spawn(async move {
        let mut admin = AdminClient::connect(format!("http://{node}"))
            .await
            .unwrap();
        loop {
            let joined = admin
                .join(pb::JoinRequest {
                    seed: hole_addr.to_string(),
                })
                .await;
            // A request of the test's own in flight took the one slot first: try again.
            match &joined {
                Err(s) if s.message().contains("is overloaded") => continue,
                _ => return joined,
            }
        }
    });
    (holding, join)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_cap_are_refused_at_once_and_served_again_once_the_load_goes() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.max_concurrent_requests = 1;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let client = cluster.client_of(0);
    client.put(b"k", b"v".to_vec(), None).await.unwrap();

    let (holding, join) = hold_a_request_slot(&cluster).await;

    eventually(
        "a get over the cap to be refused",
        Duration::from_secs(10),
        || async { matches!(client.get(b"k").await, Err(Error::Overloaded { .. })) },
    )
    .await;
    let started = std::time::Instant::now();
    let e = client.get(b"k").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused after {:?}, not at once",
        started.elapsed()
    );
    assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
    assert!(
        e.to_string().contains("1 requests in flight, the cap is 1"),
        "{e}"
    );
    assert!(e.to_string().contains("retry later"), "{e}");
    let e = client.put(b"k2", b"v".to_vec(), None).await.unwrap_err();
    assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
    let metrics = scrape(&cluster, 0).await;
    assert!(
        sample(&metrics, "dynamokv_overloaded_total{cap=\"requests\"}") >= 2.0,
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "dynamokv_requests_in_flight"), 1.0);

    // The hole lets go: the join fails, its slot comes back, and requests are served again.
    holding.abort();
    let _ = holding.await;
    assert!(
        join.await.unwrap().is_err(),
        "the join through a hole succeeded"
    );
    eventually(
        "requests to be served again",
        Duration::from_secs(10),
        || async { client.get(b"k").await.is_ok() },
    )
    .await;
    assert!(
        client.get(b"k2").await.unwrap().values.is_empty(),
        "a refused put was written"
    );
    cluster.shutdown().await;
}

/// At the connection cap, connections that never said who they are make room for new ones
/// (issue 19: strangers cannot lock clients out); only when every connection has made a
/// request is a new one answered OVERLOADED and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_make_room_or_are_answered_overloaded_and_closed() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.max_connections = 2;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let node = cluster.addrs[0];
    // Two connections that say nothing hold both places...
    let first = TcpStream::connect(node).await.unwrap();
    let second = TcpStream::connect(node).await.unwrap();
    eventually(
        "both connections to count",
        Duration::from_secs(10),
        || async { sample(&scrape(&cluster, 0).await, "dynamokv_connections_open") >= 2.0 },
    )
    .await;
    // ...until a client comes: the oldest silent one is closed for it. (The metrics endpoint
    // is another port: the scrapes did not take a place.)
    let a = cluster.client_of(0);
    a.get(b"k").await.unwrap();
    let metrics = scrape(&cluster, 0).await;
    assert!(
        sample(
            &metrics,
            "dynamokv_connections_closed_total{reason=\"connections\"}"
        ) >= 1.0
    );
    let b = cluster.client_of(0);
    b.get(b"k").await.unwrap();
    drop((first, second));
    // Both places are held by connections that made requests: a third is refused.
    let c = cluster.client_of(0);
    let e = c.get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
    assert!(
        e.to_string().contains("connections open, the cap is 2"),
        "{e}"
    );
    let metrics = scrape(&cluster, 0).await;
    assert!(sample(&metrics, "dynamokv_overloaded_total{cap=\"connections\"}") >= 1.0);

    // One closes: the next connection is served.
    drop(a);
    eventually(
        "a new connection to be served",
        Duration::from_secs(10),
        || async { c.get(b"k").await.is_ok() },
    )
    .await;
    drop((b, c));
    // A connection that never sends a request does not keep the node from stopping.
    let silent = TcpStream::connect(node).await.unwrap();
    let stopping = tokio::time::timeout(Duration::from_secs(20), cluster.shutdown()).await;
    assert!(
        stopping.is_ok(),
        "the node did not stop with an idle connection open"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_refused_writes_nothing_and_the_node_serves_on() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.max_request_bytes = Some(64 << 10);
        c.limits.max_value_bytes = 16 << 10;
        c.limits.max_object_bytes = 32 << 10;
    })
    .await;
    let mut kv = KvClient::connect(format!("http://{}", cluster.seed(0)))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let status = kv
        .put(pb::PutRequest {
            key: Some(Bytes::from_static(b"big")),
            value: Some(Bytes::from(vec![7u8; 128 << 10])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    assert!(
        status.message().contains("65536"),
        "the limit is not named: {status:?}"
    );
    let client = cluster.client_of(0);
    assert!(
        client.get(b"big").await.unwrap().values.is_empty(),
        "written"
    );
    client.put(b"small", b"v".to_vec(), None).await.unwrap();
    assert_eq!(
        client.get(b"small").await.unwrap().values,
        vec![b"v".to_vec()]
    );
    cluster.shutdown().await;
}

#[test]
fn zero_caps_are_refused_by_the_config_check() {
    for set in [
        |c: &mut dynamokv_server::config::Config| c.limits.max_concurrent_requests = 0,
        |c: &mut dynamokv_server::config::Config| c.limits.max_connections = 0,
        |c: &mut dynamokv_server::config::Config| c.limits.max_request_bytes = Some(0),
    ] {
        let mut c = dynamokv_server::config::Config::default();
        set(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be positive"), "{e}");
    }
}

#[test]
fn a_request_limit_below_what_a_valid_write_carries_is_refused_by_the_config_check() {
    // A value at the value limit would pass the client's checks and then be refused by the
    // node as oversized: the config check says so at start instead. (A read repair no longer
    // carries a state: the node reads its sources itself.)
    let mut c = dynamokv_server::config::Config::default();
    c.limits.max_request_bytes = Some(c.limits.max_value_bytes);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("max_request_bytes"), "{e}");
    assert!(e.contains("max_value_bytes"), "{e}");
    c.limits.max_request_bytes = Some(c.limits.max_value_bytes + c.limits.max_key_bytes);
    c.validate().unwrap();
    assert_eq!(
        c.max_request_bytes(),
        c.limits.max_value_bytes + c.limits.max_key_bytes
    );
    // The default: a value, its key and 64 KiB for the context and the rest.
    let d = dynamokv_server::config::Config::default();
    assert_eq!(
        d.max_request_bytes(),
        d.limits.max_value_bytes + d.limits.max_key_bytes + (64 << 10)
    );
}

/// A client with retries to spare does not spend them all at once on an overloaded node: it
/// waits, a little longer each time, and its call succeeds once the load goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retrying_an_overloaded_node_backs_off_and_succeeds_once_the_load_goes() {
    let cluster = Cluster::start_with(1, |c| {
        c.limits.max_concurrent_requests = 1;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    cluster
        .client_of(0)
        .put(b"k", b"v".to_vec(), None)
        .await
        .unwrap();
    let (holding, join) = hold_a_request_slot(&cluster).await;
    let impatient = cluster.client_of(0);
    eventually("the slot to be held", Duration::from_secs(10), || async {
        matches!(impatient.get(b"k").await, Err(Error::Overloaded { .. }))
    })
    .await;
    let client = |retries: u32, timeout_ms: u64| {
        dynamokv_client::Client::builder([cluster.seed(0)])
            .coordination(dynamokv_client::Coordination::Server)
            .max_retries(retries)
            .request_timeout(Duration::from_millis(timeout_ms))
            .build()
            .unwrap()
    };
    // Three retries on a node that stays overloaded wait at least 10 + 20 + 40 ms (half of
    // each doubling wait), then report it overloaded.
    let started = std::time::Instant::now();
    let e = client(3, 10_000).get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(70),
        "no back-off: {:?}",
        started.elapsed()
    );
    // A wait that would outlast the deadline is not taken: still OVERLOADED, not a timeout.
    let e = client(8, 60).get(b"k").await.unwrap_err();
    assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");

    let refused = |m: &str| sample(m, "dynamokv_overloaded_total{cap=\"requests\"}");
    let before = refused(&scrape(&cluster, 0).await);

    // Eight retries to spare on the one node it knows.
    let patient = client(8, 10_000);
    let call = tokio::spawn(async move {
        let started = std::time::Instant::now();
        (patient.get(b"k").await, started.elapsed())
    });
    // Once the node has refused it, the load goes.
    eventually(
        "the patient client to be refused",
        Duration::from_secs(10),
        || async { refused(&scrape(&cluster, 0).await) > before },
    )
    .await;
    holding.abort();
    let _ = holding.await;
    let _ = join.await;
    let (got, took) = call.await.unwrap();
    assert_eq!(
        got.unwrap_or_else(|e| panic!("refused after {took:?}: {e}"))
            .values,
        vec![b"v".to_vec()]
    );
    cluster.shutdown().await;
}
