//! Siblings, contexts and deletes through the Rust client, on one node and across nodes.

use dynamokv_client::Client;

use crate::support::Cluster;

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

async fn sibling_lifecycle(client: &Client, key: &str) {
    client.put(key, b"v0".to_vec(), None).await.unwrap();
    let stale = client.get(key).await.unwrap().context;
    client.put(key, b"a".to_vec(), Some(&stale)).await.unwrap();
    client.put(key, b"b".to_vec(), Some(&stale)).await.unwrap();
    let both = client.get(key).await.unwrap();
    assert_eq!(
        sorted(both.values.clone()),
        vec![b"a".to_vec(), b"b".to_vec()]
    );

    client
        .put(key, b"c".to_vec(), Some(&both.context))
        .await
        .unwrap();
    let one = client.get(key).await.unwrap();
    assert_eq!(one.values, vec![b"c".to_vec()]);

    client.delete(key, &one.context).await.unwrap();
    let gone = client.get(key).await.unwrap();
    assert!(gone.values.is_empty());

    client.put(key, b"d".to_vec(), None).await.unwrap();
    assert_eq!(client.get(key).await.unwrap().values, vec![b"d".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn siblings_collapse_and_delete_on_one_node() {
    let cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    sibling_lifecycle(&cluster.client_of(0), "cart").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn siblings_collapse_and_delete_on_three_nodes() {
    let cluster = Cluster::start(3).await;
    for i in 0..3 {
        sibling_lifecycle(&cluster.client_of(i), &format!("cart-via-{i}")).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blind_put_is_a_sibling_of_what_is_stored() {
    let cluster = Cluster::start_with(1, |c| c.cluster.members.clear()).await;
    let client = cluster.client_of(0);
    client.put("k", b"x".to_vec(), None).await.unwrap();
    client.put("k", b"y".to_vec(), None).await.unwrap();
    let got = client.get("k").await.unwrap();
    assert_eq!(sorted(got.values), vec![b"x".to_vec(), b"y".to_vec()]);
    // The context a put returns covers the version it wrote.
    let ctx = client.put("k2", b"1".to_vec(), None).await.unwrap();
    client.put("k2", b"2".to_vec(), Some(&ctx)).await.unwrap();
    assert_eq!(client.get("k2").await.unwrap().values, vec![b"2".to_vec()]);
    cluster.shutdown().await;
}
