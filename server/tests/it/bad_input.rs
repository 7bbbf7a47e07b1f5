//! Every class of bad input gets its own error and changes nothing, checked both where
//! client-core refuses it before sending and where the server refuses it.

use std::time::Duration;

use bytes::Bytes;
use dynamokv_client::{Client, Context, Error, Limits};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;

use crate::support::Cluster;

/// A client whose own limits are far above the server's, so the server's checks are tested.
fn lax_client(cluster: &Cluster) -> Client {
    Client::builder([cluster.seed(0)])
        .coordination(dynamokv_client::Coordination::Server)
        .limits(Limits {
            max_key_bytes: 1 << 20,
            max_value_bytes: 8 << 20,
        })
        .build()
        .unwrap()
}

async fn assert_unchanged(client: &Client, key: &str, expected: &[u8]) {
    let got = client.get(key).await.unwrap();
    assert_eq!(got.values, vec![expected.to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_input_class_is_refused_and_changes_nothing() {
    let cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    for (round, client) in [cluster.client_of(0), lax_client(&cluster)]
        .into_iter()
        .enumerate()
    {
        let existing = format!("existing-{round}");
        let existing = existing.as_str();
        let ctx = client
            .put(existing, b"original".to_vec(), None)
            .await
            .unwrap();

        // Empty key.
        assert!(matches!(client.get("").await, Err(Error::EmptyKey { .. })));
        assert!(matches!(
            client.put("", b"x".to_vec(), None).await,
            Err(Error::EmptyKey { .. })
        ));
        assert!(matches!(
            client.delete("", &ctx).await,
            Err(Error::EmptyKey { .. })
        ));

        // Key over the limit.
        let long_key = vec![b'k'; 4097];
        match client.put(&long_key, b"x".to_vec(), None).await {
            Err(Error::KeyTooLarge {
                size: 4097,
                max: 4096,
            }) => {}
            other => panic!("expected KeyTooLarge, got {other:?}"),
        }
        assert!(matches!(
            client.get(&long_key).await,
            Err(Error::KeyTooLarge { .. })
        ));

        // Value over the limit, even with a valid context.
        let big = vec![0u8; 1024 * 1024 + 1];
        match client.put(existing, big, Some(&ctx)).await {
            Err(Error::ValueTooLarge {
                size: 1_048_577,
                max: 1_048_576,
            }) => {}
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
        assert_unchanged(&client, existing, b"original").await;

        // A context that does not decode, and one from another key.
        let garbage = Context::from_bytes(b"garbage".to_vec());
        assert!(matches!(
            client.put(existing, b"x".to_vec(), Some(&garbage)).await,
            Err(Error::InvalidContext { .. })
        ));
        let other_ctx = client.put("other-key", b"o".to_vec(), None).await.unwrap();
        match client.put(existing, b"x".to_vec(), Some(&other_ctx)).await {
            Err(Error::InvalidContext { message }) => assert!(message.contains("another key")),
            other => panic!("expected InvalidContext, got {other:?}"),
        }
        assert!(matches!(
            client.delete(existing, &garbage).await,
            Err(Error::InvalidContext { .. })
        ));
        // A context with one byte flipped fails its checksum.
        let mut flipped = ctx.as_bytes().to_vec();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(matches!(
            client
                .put(existing, b"x".to_vec(), Some(&Context::from_bytes(flipped)))
                .await,
            Err(Error::InvalidContext { .. })
        ));

        // Quorums outside 1..=N (N = 1 here): 0 is refused by the client, 2 by the server.
        assert!(matches!(
            client.get_with_quorum(existing, Some(0)).await,
            Err(Error::InvalidQuorum { .. })
        ));
        assert!(matches!(
            client.get_with_quorum(existing, Some(2)).await,
            Err(Error::InvalidQuorum { .. })
        ));
        assert!(matches!(
            client
                .put_with_quorum(existing, b"x".to_vec(), Some(&ctx), Some(2))
                .await,
            Err(Error::InvalidQuorum { .. })
        ));

        assert_unchanged(&client, existing, b"original").await;
    }
    cluster.shutdown().await;
}

/// A single node, and a client of it, holding key `existing` = `original` (which every
/// refused request must leave as it is).
async fn one_node_holding_existing() -> (Cluster, dynamokv_client::Client) {
    let cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    let client = cluster.client_of(0);
    client
        .put("existing", b"original".to_vec(), None)
        .await
        .unwrap();
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_missing_required_fields_are_refused() {
    let (cluster, client) = one_node_holding_existing().await;
    let mut raw = KvClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let no_key = raw
        .get(pb::GetRequest {
            key: None,
            r: None,
            ring_version: 0,
            request_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(no_key.code(), tonic::Code::InvalidArgument);
    assert!(matches!(Error::from(no_key), Error::MissingField { .. }));
    let no_value = raw
        .put(pb::PutRequest {
            key: Some(Bytes::from_static(b"existing")),
            value: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    match Error::from(no_value) {
        Error::MissingField { message } => assert!(message.contains("value"), "{message}"),
        other => panic!("expected MissingField, got {other:?}"),
    }
    let bad_write_id = raw
        .put(pb::PutRequest {
            key: Some(Bytes::from_static(b"existing")),
            value: Some(Bytes::from_static(b"changed")),
            write_id: Bytes::from_static(b"short"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    match Error::from(bad_write_id) {
        Error::InvalidInput { message } => assert!(message.contains("write_id"), "{message}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_unchanged(&client, "existing", b"original").await;
    cluster.shutdown().await;
}

/// The stable code a node attached to `status` (`dynamokv-error`).
fn wire_code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("dynamokv-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_fields_are_invalid_input_not_missing_field() {
    let (cluster, client) = one_node_holding_existing().await;
    let channel = format!("http://{}", cluster.addrs[0]);
    let mut raw = KvClient::connect(channel.clone()).await.unwrap();
    // A write id one byte short, on a put and on a delete.
    let short = Bytes::from(vec![7u8; 15]);
    let put = raw
        .put(pb::PutRequest {
            key: Some(Bytes::from_static(b"existing")),
            value: Some(Bytes::from_static(b"changed")),
            write_id: short.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let delete = raw
        .delete(pb::DeleteRequest {
            key: Some(Bytes::from_static(b"existing")),
            write_id: short,
            ..Default::default()
        })
        .await
        .unwrap_err();
    // An operator request naming no permission there is.
    let mut admin = dynamokv_proto::v1::admin_client::AdminClient::connect(channel)
        .await
        .unwrap();
    let grant = admin
        .grant(pb::GrantRequest {
            user: "alice".into(),
            prefix: String::new(),
            permissions: vec!["fly".into()],
        })
        .await
        .unwrap_err();
    for (what, status, says) in [
        ("put", &put, "write_id"),
        ("delete", &delete, "write_id"),
        ("grant", &grant, "not a permission"),
    ] {
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert_eq!(wire_code(status), "INVALID_INPUT", "{what}: {status:?}");
        assert!(status.message().contains(says), "{what}: {status:?}");
        let e = Error::from(status.clone());
        assert!(matches!(e, Error::InvalidInput { .. }), "{what}: {e:?}");
        assert_eq!(e.code(), "INVALID_INPUT");
    }
    // A field left out is still MISSING_FIELD.
    let no_value = raw
        .put(pb::PutRequest {
            key: Some(Bytes::from_static(b"existing")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wire_code(&no_value), "MISSING_FIELD", "{no_value:?}");
    assert_unchanged(&client, "existing", b"original").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_configuration_errors_and_unreachable_nodes() {
    assert!(matches!(
        Client::builder(Vec::<String>::new()).build(),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        Client::builder(["no-port"]).build(),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        Client::builder(["127.0.0.1:1"])
            .coordination(dynamokv_client::Coordination::Server)
            .request_timeout(Duration::ZERO)
            .build(),
        Err(Error::InvalidConfig { .. })
    ));
    let mut cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    let client = cluster.client_of(0);
    client.put("k", b"v".to_vec(), None).await.unwrap();
    cluster.stop(0).await;
    let err = client.get("k").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.code(),
        if matches!(err, Error::Timeout { .. }) {
            "TIMEOUT"
        } else {
            "UNAVAILABLE"
        }
    );
}

/// The node-to-node calls of failure handling (hints, Merkle trees, reaping) refuse malformed
/// requests with a clear error and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_hint_tree_and_reap_calls_are_refused_and_change_nothing() {
    use dynamokv_proto::v1::replica_client::ReplicaClient;
    let cluster = Cluster::start(3).await;
    let client = cluster.client_of(0);
    // W = 3: every replica holds it before the checks below read each one.
    client
        .put_with_quorum("kept", b"v".to_vec(), None, Some(3))
        .await
        .unwrap();
    let mut peer = ReplicaClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let state = cluster.local_state(0, b"kept").await.unwrap().to_proto();
    let hint = |owner: &str| pb::StoreHintRequest {
        key: Some(Bytes::from_static(b"never-hinted")),
        state: Some(state.clone()),
        owner: owner.to_string(),
        sync: false,
    };
    for (what, result) in [
        (
            "a hint without an owner",
            peer.store_hint(hint("")).await.map(|_| ()),
        ),
        (
            "a hint for the node itself",
            peer.store_hint(hint("node-0")).await.map(|_| ()),
        ),
        (
            "a hint without a key",
            peer.store_hint(pb::StoreHintRequest {
                key: None,
                ..hint("node-1")
            })
            .await
            .map(|_| ()),
        ),
        (
            "roots of a ring cut differently",
            peer.tree_roots(pb::TreeRootsRequest {
                partitions: 128,
                partition: vec![0],
            })
            .await
            .map(|_| ()),
        ),
        (
            "roots of a partition that does not exist",
            peer.tree_roots(pb::TreeRootsRequest {
                partitions: 64,
                partition: vec![64],
            })
            .await
            .map(|_| ()),
        ),
        (
            "leaves of a partition that does not exist",
            peer.tree_leaves(pb::TreeLeavesRequest {
                partitions: 64,
                partition: 1 << 20,
            })
            .await
            .map(|_| ()),
        ),
        (
            "keys of a leaf outside its partition",
            peer.leaf_keys(pb::LeafKeysRequest {
                partitions: 64,
                partition: 0,
                leaf: 1 << 20,
                after: Bytes::new(),
                limit: 10,
            })
            .await
            .map(|_| ()),
        ),
        (
            "a reap without a key",
            peer.reap(pb::ReapRequest {
                key: None,
                digest: 0,
            })
            .await
            .map(|_| ()),
        ),
    ] {
        let status = result.expect_err(what);
        assert!(
            matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
            ),
            "{what}: {status:?}"
        );
        assert!(!status.message().is_empty(), "{what}: no message");
    }
    // A reap of a live key is refused by its state, not by its form: nothing is removed.
    let reaped = peer
        .reap(pb::ReapRequest {
            key: Some(Bytes::from_static(b"kept")),
            digest: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reaped.reaped);
    for i in 0..3 {
        assert_eq!(cluster.local_values(i, b"kept").await, vec![b"v".to_vec()]);
    }
    let hinted = peer
        .read_local(pb::ReadLocalRequest {
            key: Some(Bytes::from_static(b"never-hinted")),
            include_hints: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hinted.state, None, "no refused hint was stored");
    cluster.shutdown().await;
}
