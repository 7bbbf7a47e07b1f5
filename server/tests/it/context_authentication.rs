//! Issue 19, item 1: version contexts are signed by the nodes that issue them, a context the
//! cluster did not issue is refused with INVALID_CONTEXT and changes nothing, no client input
//! moves a node's counter, and one bad stored record never stops a node.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use dynamokv_client::{Client, Error};
use dynamokv_common::context::SECRET_LEN;
use dynamokv_common::versioning::MAX_COUNTER;
use dynamokv_common::{Actor, CausalContext, ContextKey, Dot, inspect_context, sign_context};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::kv_client::KvClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;
use dynamokv_server::storage::{RocksStorage, Storage, encode_state, storage_key};

use crate::proxy::Mode;
use crate::support::{Cluster, eventually, sample, scrape};

const DEADLINE: Duration = Duration::from_secs(20);

/// The signer and key id of a context's first fragment (what anyone can read off one).
fn signer_of(context: &[u8]) -> (String, u64) {
    let signed = pb::SignedContext::decode(&context[12..]).unwrap();
    let f = &signed.fragments[0];
    (f.signer.clone(), f.key_id)
}

/// What an attacker can make: a context of `key` saying `ctx`, "signed" as `signer` under its
/// real key id with a secret of the attacker's choosing.
fn forge(key: &[u8], ctx: &CausalContext, signer: &str, key_id: u64) -> Vec<u8> {
    let forger = ContextKey {
        signer: signer.into(),
        id: key_id,
        secret: [7; SECRET_LEN],
    };
    sign_context(key, ctx, &forger)
}

async fn actor_of(cluster: &Cluster, i: usize) -> Actor {
    let mut c = ReplicaClient::connect(format!("http://{}", cluster.addrs[i]))
        .await
        .unwrap();
    Actor(c.ping(pb::PingRequest {}).await.unwrap().into_inner().actor)
}

async fn raw_put(
    cluster: &Cluster,
    i: usize,
    key: &str,
    value: &[u8],
    context: Vec<u8>,
) -> Result<Bytes, tonic::Status> {
    let mut kv = KvClient::connect(format!("http://{}", cluster.addrs[i]))
        .await
        .unwrap();
    kv.put(pb::PutRequest {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value)),
        context: context.into(),
        write_id: Bytes::copy_from_slice(&rand::random::<[u8; 16]>()),
        attempt: 1,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().context)
}

fn code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("dynamokv-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The attack of the issue: a context naming the coordinator's own actor at the largest
/// counter. On the old main it made every later write this node coordinated fail, stored
/// states the node could not read back, and the node exited at restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_context_is_refused_changes_nothing_and_the_node_stays_healthy() {
    let mut cluster = Cluster::start(3).await;
    let key = "cart:forged";
    let client = cluster.client_of(0);
    let ctx = client.put(key, b"v1".to_vec(), None).await.unwrap();
    let (signer, key_id) = signer_of(ctx.as_bytes());
    let coordinator = (0..3)
        .find(|&i| format!("node-{i}") == signer)
        .expect("a node signed");
    let actor = actor_of(&cluster, coordinator).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(cluster.local_state(i, key.as_bytes()).await);
    }

    let (mut forged_ctx, _) = inspect_context(key.as_bytes(), ctx.as_bytes()).unwrap();
    forged_ctx.clock.insert(actor, MAX_COUNTER, 0);
    let forged = forge(key.as_bytes(), &forged_ctx, &signer, key_id);
    for target in 0..3 {
        let refused = raw_put(&cluster, target, key, b"evil", forged.clone())
            .await
            .unwrap_err();
        assert_eq!(code(&refused), "INVALID_CONTEXT", "{refused:?}");
        assert!(
            refused.message().contains("not issued by this cluster"),
            "{}",
            refused.message()
        );
    }
    // Another actor's future counters: would make that node's later writes count as seen.
    let other = actor_of(&cluster, (coordinator + 1) % 3).await;
    let mut ahead = forged_ctx.clone();
    ahead.clock = Default::default();
    ahead.clock.add_dot(Dot {
        actor: other,
        counter: 1_000_000,
    });
    let refused = raw_put(
        &cluster,
        coordinator,
        key,
        b"evil",
        forge(key.as_bytes(), &ahead, &signer, key_id),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&refused), "INVALID_CONTEXT");

    for (i, was) in before.iter().enumerate() {
        assert_eq!(
            &cluster.local_state(i, key.as_bytes()).await,
            was,
            "node-{i} changed after a refused context"
        );
    }
    // The coordinator serves every other user and key as before, and its own contexts work.
    let other_key = "user:42";
    client.put(other_key, b"x".to_vec(), None).await.unwrap();
    let got = client.get(key).await.unwrap();
    let next = client
        .put(key, b"v2".to_vec(), Some(&got.context))
        .await
        .unwrap();
    assert_eq!(client.get(key).await.unwrap().values, vec![b"v2".to_vec()]);
    // And it restarts.
    cluster.stop(coordinator).await;
    cluster.restart(coordinator).await;
    let again = cluster.client_of(coordinator);
    assert_eq!(again.get(key).await.unwrap().values, vec![b"v2".to_vec()]);
    again.put(key, b"v3".to_vec(), Some(&next)).await.unwrap();
    cluster.shutdown().await;
}

/// The checks a client can make itself, before any node: contexts of earlier releases and
/// made-up bytes are refused, with nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn unsigned_and_malformed_contexts_are_refused() {
    let cluster = Cluster::start(3).await;
    let key = "k";
    let mut old = b"DKV\x02".to_vec();
    old.extend_from_slice(&[0; 8]);
    old.extend_from_slice(&[1, 2, 3, 4]);
    for bad in [old, b"DKV\x03 nonsense".to_vec(), vec![0xff; 40]] {
        let refused = raw_put(&cluster, 0, key, b"v", bad).await.unwrap_err();
        assert_eq!(code(&refused), "INVALID_CONTEXT", "{refused:?}");
    }
    for i in 0..3 {
        assert!(cluster.local_state(i, key.as_bytes()).await.is_none());
    }
    cluster.shutdown().await;
}

/// Paper 6.4: a client that coordinates a read gets each replica's answer signed by that
/// replica and puts the contexts side by side. When the replicas disagree, the context it
/// assembles still verifies on any node and supersedes everything the read saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_context_assembled_from_replicas_that_disagree_verifies_everywhere() {
    let mut cluster = Cluster::start(3).await;
    let key = "cart:assembled";
    let server = cluster.client_of(0);
    server.put(key, b"v1".to_vec(), None).await.unwrap();
    eventually("every replica holds v1", DEADLINE, || async {
        let mut all = true;
        for i in 0..3 {
            all &= cluster.local_values(i, key.as_bytes()).await == [b"v1".to_vec()];
        }
        all
    })
    .await;
    // A concurrent write with node-2 away: node-2 keeps only v1.
    cluster.stop(2).await;
    let writer = cluster.client_of(0);
    writer.put(key, b"v2".to_vec(), None).await.unwrap();
    cluster.restart(2).await;
    assert_eq!(
        cluster.local_values(2, key.as_bytes()).await,
        [b"v1".to_vec()]
    );

    let seeds: Vec<String> = (0..3).map(|i| cluster.seed(i)).collect();
    let client = Client::builder(seeds).build().unwrap();
    let got = client.get_with_quorum(key, Some(3)).await.unwrap();
    assert_eq!(got.values.len(), 2, "{:?}", got.values);
    let signed = pb::SignedContext::decode(&got.context.as_bytes()[12..]).unwrap();
    assert_eq!(
        signed.fragments.len(),
        2,
        "two different answers, two fragments: {signed:?}"
    );
    // Node-2 verifies both fragments (one signed by another node), and the write supersedes
    // both siblings.
    let resolved = cluster
        .client_of(2)
        .put(key, b"resolved".to_vec(), Some(&got.context))
        .await
        .unwrap();
    assert!(!resolved.is_empty());
    assert_eq!(
        client.get_with_quorum(key, Some(3)).await.unwrap().values,
        vec![b"resolved".to_vec()]
    );
    cluster.shutdown().await;
}

/// A context signed with a key that was replaced more than the grace period ago is refused,
/// saying to read again; within the grace period it works; a new key signs once the nodes
/// that answer were told of it, and one that did not answer then learns it the first time it
/// meets a context signed with it (no gossip round needed).
#[tokio::test(flavor = "multi_thread")]
async fn rotated_keys_verify_for_their_grace_period_and_nodes_learn_new_keys_on_demand() {
    let cluster = Cluster::start_proxied(3, |c| {
        c.cluster.context_key_grace_ms = 1_500;
        // No gossip round during the test: a new key can only travel by being asked for.
        c.cluster.gossip_interval_ms = 600_000;
    })
    .await;
    let key = "cart:rotation";
    let via0 = cluster.client_of(0);
    let old_ctx = via0.put(key, b"v1".to_vec(), None).await.unwrap();
    assert_eq!(signer_of(old_ctx.as_bytes()).0, "node-0");

    let admin = |i: usize| cluster.seed(i);
    // Node-1 does not answer while node-0 rotates: node-0's announce of its new key misses it.
    cluster.proxy(1).set(Mode::Hang);
    let rotated = dynamokv_server::admin::rotate_context_key(&admin(0))
        .await
        .unwrap();
    assert_eq!(rotated.keys, 2);
    assert_ne!(rotated.key_id, signer_of(old_ctx.as_bytes()).1);
    // Signed with the new key once the announce is done (node-2 has it)...
    let end = std::time::Instant::now() + DEADLINE;
    let fresh = loop {
        let context = via0.get(key).await.unwrap().context;
        if signer_of(context.as_bytes()) == ("node-0".into(), rotated.key_id) {
            break context;
        }
        assert!(
            std::time::Instant::now() < end,
            "contexts are not signed with the new key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.proxy(1).set(Mode::Pass);
    // ...which node-1 has not learnt, and verifies anyway by asking node-0.
    let via1 = cluster.client_of(1);
    via1.put(key, b"v2".to_vec(), Some(&fresh)).await.unwrap();
    assert_eq!(via1.get(key).await.unwrap().values, vec![b"v2".to_vec()]);

    // The old key verifies for the grace period after the rotation, then not.
    eventually(
        "a context of the replaced key is refused past the grace period",
        DEADLINE,
        || async {
            match via0.put(key, b"late".to_vec(), Some(&old_ctx)).await {
                Err(Error::InvalidContext { message }) => {
                    assert!(message.contains("read the key again"), "{message}");
                    true
                }
                Ok(_) => false,
                Err(e) => panic!("{e}"),
            }
        },
    )
    .await;
    let again = via0.get(key).await.unwrap();
    via0.put(key, b"v3".to_vec(), Some(&again.context))
        .await
        .unwrap();
    cluster.shutdown().await;
}

/// A context a client sends as raw bytes of another node's key id and signer, signed with a
/// key that does not exist, costs at most one key request a second per signer, and is refused.
#[tokio::test(flavor = "multi_thread")]
async fn contexts_under_unknown_keys_are_refused() {
    let cluster = Cluster::start(3).await;
    let key = "cart:unknown";
    let ctx = CausalContext {
        clock: Default::default(),
        seen: [dynamokv_common::WriteId(5)].into_iter().collect(),
    };
    for (signer, id) in [("node-1", 99), ("nobody", 1)] {
        let refused = raw_put(
            &cluster,
            0,
            key,
            b"v",
            forge(key.as_bytes(), &ctx, signer, id),
        )
        .await
        .unwrap_err();
        assert_eq!(code(&refused), "INVALID_CONTEXT", "{refused:?}");
    }
    cluster.shutdown().await;
}

/// One record this node cannot decode (here: the form the old forged-context attack left on
/// disk, a counter past the largest) never stops it: at start it is set aside, counted and
/// logged, every other key is served, and anti-entropy brings the key back from its replicas.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_stored_record_is_quarantined_and_restored_from_the_replicas() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.background.anti_entropy_interval_ms = 200;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let client = cluster.client_of(0);
    let keys: Vec<String> = (0..20).map(|i| format!("stored-{i}")).collect();
    for k in &keys {
        client.put(k, k.as_bytes().to_vec(), None).await.unwrap();
    }
    let victim = keys[7].clone();
    let holder = cluster.replicas_of(victim.as_bytes())[1];
    eventually("the holder has every key", DEADLINE, || async {
        let mut all = true;
        for k in &keys {
            if cluster.replicas_of(k.as_bytes()).contains(&holder) {
                all &= cluster.local_state(holder, k.as_bytes()).await.is_some();
            }
        }
        all
    })
    .await;
    cluster.stop(holder).await;
    {
        let store = RocksStorage::open(&cluster.configs[holder].data_dir, true).unwrap();
        // A state naming a counter past MAX_COUNTER: what the old attack stored.
        let mut proto = dynamokv_common::VersionedState::new().to_proto();
        proto.clock = Some(pb::VersionVector {
            entries: vec![pb::ClockEntry {
                actor: 1,
                counter: MAX_COUNTER + 1,
                timestamp_ms: 0,
            }],
            cloud: vec![],
        });
        let mut raw = vec![encode_state(&dynamokv_common::VersionedState::new())[0]];
        raw.extend(proto.encode_to_vec());
        store
            .put_raw(&storage_key(victim.as_bytes()), &raw)
            .unwrap();
        store.flush().unwrap();
    }
    cluster.restart(holder).await;
    assert_eq!(
        sample(
            &scrape(&cluster, holder).await,
            "dynamokv_records_quarantined_total"
        ),
        1.0
    );
    // Every other key is served by the node.
    let local = cluster.client_of(holder);
    for k in keys.iter().filter(|k| **k != victim) {
        assert_eq!(
            local.get(k).await.unwrap().values,
            vec![k.as_bytes().to_vec()]
        );
    }
    eventually("anti-entropy restores the key", DEADLINE, || async {
        cluster.local_values(holder, victim.as_bytes()).await == [victim.as_bytes().to_vec()]
    })
    .await;
    cluster.shutdown().await;
}

/// A client's read repair names replicas, never a state: a repair carrying a state (which
/// could hold anything: versions no node issued, values past every limit) is refused, and
/// nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_carrying_a_state_is_refused() {
    let cluster = Cluster::start(3).await;
    let key = "cart:repair";
    let mut state = dynamokv_common::VersionedState::new();
    state.update(
        &CausalContext::new(),
        dynamokv_common::WriteId(1),
        Some(Bytes::from_static(b"evil")),
        Actor(1),
        1,
        u64::MAX,
    );
    let mut kv = KvClient::connect(format!("http://{}", cluster.addrs[0]))
        .await
        .unwrap();
    let refused = kv
        .repair_replica(pb::RepairReplicaRequest {
            key: Some(Bytes::from_static(key.as_bytes())),
            state: Some(state.to_proto()),
            request_id: 0,
            sources: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("no longer accepted"),
        "{refused:?}"
    );
    for i in 0..3 {
        assert!(cluster.local_state(i, key.as_bytes()).await.is_none());
    }
    // Naming a node that is no replica (or no member) reads nothing and changes nothing.
    let replicas = cluster.replicas_of(key.as_bytes());
    let target = replicas[0];
    let mut kv = KvClient::connect(format!("http://{}", cluster.addrs[target]))
        .await
        .unwrap();
    for sources in [
        vec!["nobody".to_string()],
        vec![format!("node-{target}")],
        vec![],
    ] {
        assert!(
            kv.repair_replica(pb::RepairReplicaRequest {
                key: Some(Bytes::from_static(key.as_bytes())),
                state: None,
                request_id: 0,
                sources,
            })
            .await
            .is_err()
        );
    }
    cluster.shutdown().await;
}
