//! The operator commands, run as a user would: `dynamokv dev`, `dynamokv ring`,
//! `dynamokv debug-read`.

use std::process::Command;

use crate::support::Cluster;

fn dynamokv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ring_and_debug_read_show_placement_and_replica_copies() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client_of(0);
    client
        .put("cart:42", b"apple".to_vec(), None)
        .await
        .unwrap();
    let seed = cluster.seed(1);

    let (ok, out, err) = dynamokv(&["ring", "--node", &seed, "--key", "cart:42"]);
    assert!(ok, "{err}");
    for i in 0..3 {
        assert!(
            out.contains(&format!("node-{i} at {}", cluster.addrs[i])),
            "{out}"
        );
    }
    let (ring, _) = client.ring().await.unwrap();
    let pl = ring.preference_list(b"cart:42", 3);
    let names: Vec<&str> = pl.nodes.iter().map(|m| m.id.as_str()).collect();
    assert!(
        out.contains(&format!("preference list (top N): {}", names.join(", "))),
        "{out}"
    );
    assert!(
        out.contains(&format!("partition {}", pl.partition)),
        "{out}"
    );

    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        dynamokv(&["debug-read", "--node", &seed, "--key", "cart:42"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("5 bytes \"apple\""), "{out}");
    assert!(out.contains("clock ["), "{out}");

    let (ok, _, err) = dynamokv(&["ring", "--node", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
    cluster.shutdown().await;
}

#[test]
fn dev_starts_a_cluster_of_processes_runs_a_command_and_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let seeds_file = dir.path().join("seeds");
    let exec = format!(
        "\"{}\" ring --node \"${{DYNAMOKV_SEEDS%%,*}}\" > \"{}\"",
        env!("CARGO_BIN_EXE_dynamokv"),
        seeds_file.display()
    );
    let base = dir.path().join("data");
    let (ok, out, err) = dynamokv(&[
        "dev",
        "--nodes",
        "3",
        "--base-port",
        "0",
        "--base-dir",
        base.to_str().unwrap(),
        "--exec",
        &exec,
        "--exit-after-exec",
    ]);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    for id in ["node-1", "node-2", "node-3"] {
        assert!(
            out.lines().any(|l| l.starts_with(id) && l.contains("pid ")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{id} stopped (exit status: 0)")),
            "{out}"
        );
        assert!(base.join(id).join("rocksdb").exists());
    }
    assert!(out.contains("cluster up: 3 node(s)"), "{out}");
    let ring = std::fs::read_to_string(&seeds_file).unwrap();
    assert!(
        ring.contains("3 nodes, Q = 1024 partitions, N = 3, R = 2, W = 2"),
        "{ring}"
    );
}
