//! An acknowledged write survives `kill -9`; SIGTERM shuts down cleanly.

use std::time::Duration;

use dynamokv_client::Client;

use crate::support::Process;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_put_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Process::spawn(dir.path(), &[]);
    let client = Client::connect([node.seed()]).await.unwrap();
    let ctx = client
        .put("durable", b"before-crash".to_vec(), None)
        .await
        .unwrap();
    client
        .put("durable", b"second".to_vec(), Some(&ctx))
        .await
        .unwrap();
    for i in 0..100u32 {
        client
            .put(format!("bulk-{i}"), i.to_be_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    let mut node = node;
    node.signal("KILL");
    node.wait(Duration::from_secs(10));
    drop(node);

    let node = Process::spawn(dir.path(), &[]);
    let client = Client::connect([node.seed()]).await.unwrap();
    let got = client.get("durable").await.unwrap();
    assert_eq!(got.values, vec![b"second".to_vec()]);
    for i in 0..100u32 {
        let got = client.get(format!("bulk-{i}")).await.unwrap();
        assert_eq!(got.values, vec![i.to_be_bytes().to_vec()], "bulk-{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_zero_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Process::spawn(dir.path(), &[]);
    let client = Client::connect([node.seed()]).await.unwrap();
    client.put("k", b"v".to_vec(), None).await.unwrap();
    node.signal("TERM");
    let status = node.wait(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    drop(node);
    let node = Process::spawn(dir.path(), &[]);
    let client = Client::connect([node.seed()]).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().values, vec![b"v".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_refuses_another_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Process::spawn(dir.path(), &[]);
    node.signal("TERM");
    assert!(node.wait(Duration::from_secs(10)).success());
    drop(node);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "other",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to node \"solo\""), "{err}");
}
