//! What operators and their tools see of a live node: Prometheus metrics and `/health` over
//! HTTP, the standard gRPC health service and server reflection on the gRPC port.

use crate::support::{Cluster, http_get, sample};

#[tokio::test]
async fn metrics_of_a_live_node_move_as_requests_are_made() {
    let cluster = Cluster::start_with(3, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let node = cluster.nodes[0].as_ref().unwrap();
    let metrics = node.metrics_addr.expect("node-0 serves metrics");

    let (status, body) = http_get(metrics, "/health").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"node_id\":\"node-0\""), "{body}");

    let get_count = "dynamokv_request_duration_seconds_count{op=\"get\",role=\"coordinator\"}";
    let put_count = "dynamokv_request_duration_seconds_count{op=\"put\",role=\"coordinator\"}";
    let merge_count = "dynamokv_request_duration_seconds_count{op=\"merge\",role=\"replica\"}";
    let reads = "dynamokv_versions_per_read_count";
    let two_or_fewer = "dynamokv_versions_per_read_bucket{le=\"2.0\"}";
    let one_or_fewer = "dynamokv_versions_per_read_bucket{le=\"1.0\"}";
    let (_, before) = http_get(metrics, "/metrics").await;
    assert!(
        before.contains("# TYPE dynamokv_request_duration_seconds histogram"),
        "{before}"
    );
    assert!(before.contains("# TYPE dynamokv_versions_per_read histogram"));

    // A key node-0 replicates, so node-0 coordinates its writes.
    let key = (0..)
        .map(|i| format!("observed-{i}"))
        .find(|k| cluster.replicas_of(k.as_bytes()).contains(&0))
        .unwrap();
    let client = cluster.client_of(0);
    // Two blind writes: two siblings.
    client.put(&key, b"a".to_vec(), None).await.unwrap();
    client.put(&key, b"b".to_vec(), None).await.unwrap();
    for _ in 0..3 {
        assert_eq!(client.get(&key).await.unwrap().values.len(), 2);
    }
    let (_, after) = http_get(metrics, "/metrics").await;

    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved(put_count),
        2.0,
        "puts coordinated by node-0:\n{after}"
    );
    assert_eq!(
        moved(get_count),
        3.0,
        "gets coordinated by node-0:\n{after}"
    );
    assert_eq!(moved(reads), 3.0, "versions per read observed:\n{after}");
    assert_eq!(
        moved(two_or_fewer) - moved(one_or_fewer),
        3.0,
        "each read saw 2 versions"
    );
    assert_eq!(
        moved("dynamokv_requests_total{op=\"put\",outcome=\"ok\"}"),
        2.0
    );
    assert!(
        sample(
            &after,
            "dynamokv_request_duration_seconds_sum{op=\"get\",role=\"coordinator\"}"
        ) > 0.0
    );

    // Another node's metrics count the copies it merged as a replica.
    let other = cluster
        .replicas_of(key.as_bytes())
        .into_iter()
        .find(|&i| i != 0)
        .unwrap();
    let other_metrics = cluster.nodes[other].as_ref().unwrap().metrics_addr.unwrap();
    let (_, theirs) = http_get(other_metrics, "/metrics").await;
    assert!(sample(&theirs, merge_count) >= 2.0, "{theirs}");
}

#[tokio::test]
async fn grpc_health_and_reflection_answer_on_the_grpc_port() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(1).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.seed(0)))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "dynamokv.v1.Kv", "dynamokv.v1.Replica"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Older tools (grpcurl before 1.9) ask v1alpha.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaMessage;
        let request = AlphaRequest {
            host: String::new(),
            message_request: Some(AlphaMessage::ListServices(String::new())),
        };
        let mut replies = AlphaClient::new(channel.clone())
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = format!("{:?}", replies.message().await.unwrap().unwrap());
        assert!(reply.contains("dynamokv.v1.Kv"), "{reply}");
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "dynamokv.v1.Kv",
        "dynamokv.v1.Replica",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}
