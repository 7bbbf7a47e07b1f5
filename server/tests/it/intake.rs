//! Issue 19, items 2 and 3: a node knows who calls before it reads a request's body, bounds
//! what it reads and for how long, and keeps room for clients that prove who they are, however
//! many idle connections strangers open.
//!
//! Raw HTTP/2 (the `h2` crate) plays the hostile client: it sends what a gRPC client never
//! would (a body declared huge and sent slowly, headers with no body, connections that say
//! nothing).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use dynamokv_client::Client;

use crate::support::{Cluster, sample, scrape, secure_cluster};

const DEADLINE: Duration = Duration::from_secs(10);

type Send = h2::client::SendRequest<Bytes>;

/// An HTTP/2 connection over plain TCP.
async fn h2_plain(addr: SocketAddr) -> Send {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// An HTTP/2 connection over TLS trusting `ca`, presenting no certificate.
async fn h2_tls(addr: SocketAddr, ca: &Path) -> Send {
    let config = dynamokv_proto::tls::client_config(&std::fs::read(ca).unwrap(), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A gRPC request line for `path` (a body follows, unless the caller ends the stream).
fn grpc(path: &str, authority: SocketAddr) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The 5-byte gRPC message header of an uncompressed message of `len` bytes.
fn message_header(len: u32) -> Bytes {
    let mut h = vec![0u8];
    h.extend_from_slice(&len.to_be_bytes());
    Bytes::from(h)
}

/// The gRPC status of an answer: from its headers (a trailers-only answer) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> (String, String) {
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("an answer before the deadline")
        .unwrap();
    let header = |h: &http::HeaderMap, n: &str| {
        h.get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    if response.headers().contains_key("grpc-status") {
        return (
            header(response.headers(), "grpc-status"),
            header(response.headers(), "dynamokv-error"),
        );
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk;
    }
    let trailers = tokio::time::timeout(DEADLINE, body.trailers())
        .await
        .expect("trailers before the deadline")
        .unwrap()
        .unwrap_or_default();
    (
        header(&trailers, "grpc-status"),
        header(&trailers, "dynamokv-error"),
    )
}

/// On a TLS node, a caller without credentials is answered before it sends its body: the
/// node never reads (let alone decodes) a stranger's 200 MiB message. On the old main the
/// node waited for the whole body, decoding up to 256 MiB per message for anyone.
#[tokio::test(flavor = "multi_thread")]
async fn a_strangers_call_is_answered_before_its_body_is_read() {
    let (cluster, dir) = secure_cluster(3, |_| {}).await;
    let addr = cluster.addrs[0];
    let mut send = h2_tls(addr, &dir.path().join("ca.pem")).await;
    for (path, want) in [
        // The node-to-node service: only nodes of the cluster.
        ("/dynamokv.v1.Replica/MergeLocal", "16"),
        // The client service: only authenticated users.
        ("/dynamokv.v1.Kv/Put", "16"),
    ] {
        let (response, mut body) = send.send_request(grpc(path, addr), false).unwrap();
        // The node may answer (and reset the stream) before these are even sent.
        let _ = body.send_data(message_header(200 << 20), false);
        let _ = body.send_data(Bytes::from(vec![7u8; 16 << 10]), false);
        // The body is still open (and mostly unsent) when the answer comes.
        let (status, _) = grpc_status(response).await;
        assert_eq!(status, want, "{path}");
    }
    cluster.shutdown().await;
}

/// Request bodies are counted as they arrive against a budget per connection and per node:
/// past it the request is refused with OVERLOADED while its body is still arriving, and the
/// bytes are given back. On the old main, four streams of one connection made a node hold
/// about 1 GB.
#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_past_the_budget_are_refused_while_they_arrive() {
    // Budgets of a few MiB, so the test sends that much rather than the defaults' hundreds.
    let cluster = Cluster::start_with(1, |c| {
        c.limits.max_request_bytes_in_flight = 6 << 20;
        c.limits.max_request_bytes_per_connection = 4 << 20;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = cluster.addrs[0];
    let send = h2_plain(addr).await;
    let chunk = Bytes::from(vec![1u8; 256 << 10]);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut s = send.clone().ready().await.unwrap();
        let (response, mut body) = s
            .send_request(grpc("/dynamokv.v1.Replica/MergeLocal", addr), false)
            .unwrap();
        body.send_data(message_header(100 << 20), false).unwrap();
        streams.push((response, body));
    }
    // Send on every stream, flow control permitting, until each is refused.
    let mut sent = 0usize;
    let mut answers = Vec::new();
    for (response, mut body) in streams {
        let feeder = {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                for _ in 0..400 {
                    body.reserve_capacity(chunk.len());
                    match futures::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                        Some(Ok(cap)) if cap > 0 => {}
                        _ => break,
                    }
                    if body.send_data(chunk.clone(), false).is_err() {
                        break;
                    }
                    n += chunk.len();
                }
                n
            })
        };
        answers.push((response, feeder));
    }
    for (response, feeder) in answers {
        let (status, code) = grpc_status(response).await;
        assert_eq!((status.as_str(), code.as_str()), ("8", "OVERLOADED"));
        sent += tokio::time::timeout(DEADLINE, feeder)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        sent < 100 << 20,
        "the node read {sent} bytes before refusing: it buffered far past its budget"
    );
    let refused = sample(
        &scrape(&cluster, 0).await,
        "dynamokv_requests_refused_before_decoding_total{reason=\"bytes_in_flight\"}",
    );
    assert!(refused >= 1.0, "refusals counted: {refused}");
    // Every byte went back: an ordinary request goes through.
    let client = cluster.client_of(0);
    client.put("after", b"v".to_vec(), None).await.unwrap();
    cluster.shutdown().await;
}

/// A body that stops arriving is refused once the body timeout passes, instead of holding
/// its stream and bytes for as long as the sender likes (slowloris).
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_is_refused_after_the_body_timeout() {
    // Half a second rather than the default 10 s, so the test does not wait that long.
    let cluster = Cluster::start_with(1, |c| c.limits.request_body_timeout_ms = 500).await;
    let addr = cluster.addrs[0];
    let mut send = h2_plain(addr).await;
    let (response, mut body) = send
        .send_request(grpc("/dynamokv.v1.Kv/Put", addr), false)
        .unwrap();
    body.send_data(message_header(1000), false).unwrap();
    body.send_data(Bytes::from_static(b"\x0a\x01"), false)
        .unwrap();
    let (status, _) = grpc_status(response).await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    drop(body);
    cluster.shutdown().await;
}

/// One connection may hold at most `limits.max_streams_per_connection` (256) requests open at
/// once; on the old main the node advertised no limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_may_open_a_bounded_number_of_streams() {
    let cluster = Cluster::start(1).await;
    let addr = cluster.addrs[0];
    let send = h2_plain(addr).await;
    // One round trip, so the node's settings have arrived.
    let mut s = send.clone().ready().await.unwrap();
    let (response, _) = s
        .send_request(grpc("/grpc.health.v1.Health/Check", addr), true)
        .unwrap();
    let _ = grpc_status(response).await;
    assert_eq!(send.current_max_send_streams(), 256);
    cluster.shutdown().await;
}

/// Whether the node closed `stream` (it reads end-of-stream or an error).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Idle connections of strangers cannot lock clients out: the oldest stranger is closed to
/// make room, and a client that proves itself (a certificate, or a token with its first
/// request) is served. On the old main, connections past `max_connections` were refused,
/// the superuser's included, for as long as the strangers held theirs.
#[tokio::test(flavor = "multi_thread")]
async fn idle_strangers_cannot_lock_authenticated_clients_out() {
    // Caps of dozens instead of thousands, so the test opens dozens of sockets.
    let (cluster, dir) = secure_cluster(3, |c| {
        c.limits.max_connections = 48;
        c.limits.max_unauthenticated_connections = 24;
        c.limits.max_unauthenticated_per_source = 16;
    })
    .await;
    let addr = cluster.addrs[0];
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let path = |n: &str| dir.path().join(n).display().to_string();
    let admin = Client::builder([cluster.seed(0)])
        .coordination(dynamokv_client::Coordination::Server)
        .ca_cert(path("ca.pem"))
        .client_cert(path("user-admin.pem"))
        .client_key(path("user-admin.key"))
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    admin.put("cart:1", b"v".to_vec(), None).await.unwrap();
    // A token client: it proves itself with its first request.
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    let tls = dynamokv_proto::tls::ClientTls::new(
        dynamokv_proto::tls::client_config(
            &read("ca.pem"),
            Some((&read("user-admin.pem"), &read("user-admin.key"))),
        )
        .unwrap(),
    );
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.seed(0))).unwrap();
    let mut operator = dynamokv_proto::v1::admin_client::AdminClient::new(
        dynamokv_proto::tls::connect_lazy(&endpoint, tls),
    );
    let token = operator
        .user_add(dynamokv_proto::v1::UserAddRequest {
            name: "alice".into(),
            token: true,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    operator
        .grant(dynamokv_proto::v1::GrantRequest {
            user: "alice".into(),
            prefix: "cart:".into(),
            permissions: vec!["read".into(), "write".into()],
        })
        .await
        .unwrap();
    let alice = Client::builder([cluster.seed(0)])
        .coordination(dynamokv_client::Coordination::Server)
        .ca_cert(path("ca.pem"))
        .token(token)
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    alice.put("cart:2", b"w".to_vec(), None).await.unwrap();
    assert_eq!(
        admin.get("cart:1").await.unwrap().values,
        vec![b"v".to_vec()]
    );
    // The strangers beyond the per-source cap were closed.
    let mut gone = 0;
    for s in &mut idle {
        gone += usize::from(closed(s).await);
    }
    assert!(gone >= 80 - 16, "only {gone} of 80 idle connections closed");
    let scraped = scrape(&cluster, 0).await;
    assert!(
        sample(
            &scraped,
            "dynamokv_connections_closed_total{reason=\"source\"}"
        ) >= 64.0
    );
    cluster.shutdown().await;
}

/// A connection that never proves itself is closed after `unauthenticated_timeout_ms`;
/// one that did is not.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_authenticates_is_closed_after_the_timeout() {
    // Half a second rather than 10 s, so the test does not wait that long.
    let cluster = Cluster::start_with(1, |c| {
        c.limits.unauthenticated_timeout_ms = 500;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut stranger = TcpStream::connect(cluster.addrs[0]).await.unwrap();
    let client = cluster.client_of(0);
    client.put("k", b"v".to_vec(), None).await.unwrap();
    let end = tokio::time::Instant::now() + DEADLINE;
    while !closed(&mut stranger).await {
        assert!(
            tokio::time::Instant::now() < end,
            "the stranger's connection is still open"
        );
    }
    // The client's connection, proven by its request, is still there well past the timeout.
    let before = sample(
        &scrape(&cluster, 0).await,
        "dynamokv_connections_closed_total{reason=\"unauthenticated_timeout\"}",
    );
    assert!(before >= 1.0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client.get("k").await.unwrap();
    let scraped = scrape(&cluster, 0).await;
    assert_eq!(
        sample(
            &scraped,
            "dynamokv_connections_closed_total{reason=\"unauthenticated_timeout\"}"
        ),
        before,
        "a proven connection was closed as unauthenticated"
    );
    cluster.shutdown().await;
}

/// Item 7: a storm of reads of one large key (24 values of 1 MiB, made with ordinary puts)
/// takes its turn: one caller's large reads go one at a time (its read budget, 32 MiB), each
/// waiting until the last one's answer is sent, while small reads never wait. On the old main
/// forty such gets ran at once, a node holding gigabytes and serving no one else for seconds.
#[tokio::test(flavor = "multi_thread")]
async fn large_reads_take_their_turn_and_small_reads_do_not_wait() {
    let cluster = Cluster::start_with(3, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let writer = cluster.client_of(0);
    for n in 0..24u8 {
        writer.put("big", vec![n; 1 << 20], None).await.unwrap();
    }
    writer.put("small", b"s".to_vec(), None).await.unwrap();
    let reader = Client::builder([cluster.seed(0)])
        .coordination(dynamokv_client::Coordination::Server)
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let storm: Vec<_> = (0..40)
        .map(|_| {
            let r = reader.clone();
            tokio::spawn(async move { r.get("big").await.map(|g| g.values.len()) })
        })
        .collect();
    // While the storm runs: small reads are answered, and never more than one large read (the
    // caller's budget holds one 24 MiB state) is in flight on the coordinator.
    let mut most = 0.0f64;
    let mut small_reads = 0;
    while !storm.iter().all(|t| t.is_finished()) {
        assert_eq!(
            writer.get("small").await.unwrap().values,
            vec![b"s".to_vec()]
        );
        small_reads += 1;
        most = most.max(sample(
            &scrape(&cluster, 0).await,
            "dynamokv_large_reads_in_flight",
        ));
    }
    for t in storm {
        assert_eq!(t.await.unwrap().unwrap(), 24);
    }
    assert!(most <= 1.0, "{most} large reads in flight at once");
    let scraped = scrape(&cluster, 0).await;
    assert!(
        sample(&scraped, "dynamokv_large_reads_waited_total") >= 1.0,
        "no large read waited its turn"
    );
    assert_eq!(sample(&scraped, "dynamokv_large_reads_in_flight"), 0.0);
    assert_eq!(sample(&scraped, "dynamokv_read_kib_in_flight"), 0.0);
    assert!(small_reads >= 1);
    cluster.shutdown().await;
}
