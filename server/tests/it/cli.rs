//! The operator commands, run as a user would: `dynamokv dev`, `dynamokv ring`,
//! `dynamokv debug-read`, `dynamokv serve --join` and `dynamokv admin`.

use std::process::Command;
use std::time::Duration;

use crate::support::{Cluster, Process, eventually};

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

/// The operator's path, through the `dynamokv` command: a node started alone, a second one
/// started with `--join`, `admin plan` and `commit`, `status` and `ring` showing both, then a
/// `leave` planned and committed; bad requests refused with a clear message.
#[tokio::test(flavor = "multi_thread")]
async fn join_plan_commit_and_leave_through_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = Process::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "node-a",
        "--data-dir",
        da.to_str().unwrap(),
    ]);
    let b = Process::serve(&[
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "node-b",
        "--data-dir",
        db.to_str().unwrap(),
        "--join",
        &a.seed(),
    ]);
    let (sa, sb) = (a.seed(), b.seed());
    // node-b asks to join; node-a learns of it by gossip.
    eventually("node-a to hear of node-b", Duration::from_secs(20), || {
        let sa = sa.clone();
        async move {
            let (_, out, _) = dynamokv(&["admin", "ring", "--node", &sa]);
            out.contains("node-b") && out.contains("joining")
        }
    })
    .await;
    let (ok, plan, err) = dynamokv(&["admin", "plan", "--node", &sa]);
    assert!(ok, "{err}");
    assert!(
        plan.contains("owners node-a (N = 1) -> node-a, node-b (N = 2)"),
        "{plan}"
    );
    assert!(
        plan.contains("partitions owned after: node-a 512, node-b 512"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "commit with: dynamokv admin commit --node {sa} --ring-version 1"
        )),
        "{plan}"
    );
    // A commit made from a stale plan is refused.
    let (ok, _, err) = dynamokv(&["admin", "commit", "--node", &sa, "--ring-version", "7"]);
    assert!(!ok && err.contains("plan again"), "{err}");
    let (ok, out, err) = dynamokv(&["admin", "commit", "--node", &sa, "--ring-version", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("committed ring version 2"), "{out}");
    eventually(
        "node-b to own its share, the handover done",
        Duration::from_secs(30),
        || {
            let sb = sb.clone();
            async move {
                let (_, out, _) = dynamokv(&["admin", "status", "--node", &sb]);
                out.contains("ring version 2, owns 512") && out.contains("no handover")
            }
        },
    )
    .await;
    let (_, status, _) = dynamokv(&["admin", "status", "--node", &sa]);
    assert!(status.contains("node-b"), "{status}");
    assert!(status.contains("owns   512"), "{status}");
    // Bad input: an unknown member.
    let (ok, _, err) = dynamokv(&["admin", "remove", "--node", &sa, "node-z"]);
    assert!(!ok && err.contains("no member \"node-z\""), "{err}");
    // node-b leaves: staged, planned, committed; it ends owning nothing.
    let (ok, out, err) = dynamokv(&["admin", "leave", "--node", &sa, "node-b"]);
    assert!(ok && out.contains("leave of node-b staged"), "{out} {err}");
    let (_, plan, _) = dynamokv(&["admin", "plan", "--node", &sa]);
    assert!(plan.contains("-> node-a (N = 1)"), "{plan}");
    // Committed on the other member, once gossip has brought it the staged leave (until then
    // it says nothing is staged and changes nothing).
    eventually("the commit on node-b", Duration::from_secs(20), || {
        let sb = sb.clone();
        async move {
            let (ok, _, err) = dynamokv(&["admin", "commit", "--node", &sb]);
            assert!(ok || err.contains("nothing is staged"), "{err}");
            ok
        }
    })
    .await;
    eventually("node-b to have left", Duration::from_secs(30), || {
        let sa = sa.clone();
        async move {
            let (_, out, _) = dynamokv(&["admin", "ring", "--node", &sa]);
            out.lines()
                .any(|l| l.contains("node-b") && l.contains(" left ") && l.contains("owns     0"))
        }
    })
    .await;
    drop(b);
    drop(a);
}
