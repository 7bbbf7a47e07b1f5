//! What a node exposes to other users of its machine and to its network by default: the modes
//! of its data files, plain text beyond loopback, and the HTTP metrics endpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dynamokv_client::Client;

use crate::support::{Process, http_get_with};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory under `root` (itself included) and every file, with its mode.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = vec![(root.display().to_string(), true, mode(root))];
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(modes(&path));
        } else {
            out.push((path.display().to_string(), false, mode(&path)));
        }
    }
    out
}

/// Asserts that nothing under `root` is open to the group or others.
fn owner_only(root: &Path) {
    let open: Vec<_> = modes(root)
        .into_iter()
        .filter(|(_, dir, m)| *m != if *dir { 0o700 } else { 0o600 })
        .collect();
    assert!(open.is_empty(), "not 0700/0600: {open:?}");
}

fn chmod_all(root: &Path, dirs: u32, files: u32) {
    for (path, dir, _) in modes(root) {
        let m = if dir { dirs } else { files };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
    }
}

async fn write_and_stop(mut node: Process) {
    let client = Client::connect([node.seed()]).await.unwrap();
    client.put("k", b"secret".to_vec(), None).await.unwrap();
    node.signal("TERM");
    assert!(node.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn data_files_are_readable_by_their_owner_only() {
    let base = tempfile::tempdir().unwrap();
    // A new data directory.
    let fresh = base.path().join("fresh");
    write_and_stop(Process::spawn(&fresh, &[])).await;
    owner_only(&fresh);
    // One an earlier version left open to everyone is closed at the next start.
    chmod_all(&fresh, 0o755, 0o644);
    write_and_stop(Process::spawn(&fresh, &[])).await;
    owner_only(&fresh);
}

/// Runs `dynamokv serve` with `args` and expects it to refuse to start: its exit status and
/// what it wrote to stderr. Fails if the node starts serving.
fn refuses_to_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A node that starts prints its "listening" line; one that refuses exits first.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    if line.contains("listening") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the node started: {line}");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_text_beyond_loopback_needs_an_explicit_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let common = [
        "--node-id",
        "open",
        "--engine",
        "memory",
        "--data-dir",
        data,
    ];
    let err = refuses_to_start(&[&["--listen", "0.0.0.0:0"], &common[..]].concat());
    assert!(err.contains("0.0.0.0"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
    assert!(err.contains("[tls]"), "{err}");
    // Asked for explicitly, it serves (and warns).
    let node = Process::serve(&[&["--listen", "0.0.0.0:0", "--insecure"], &common[..]].concat());
    let client = Client::connect([format!("127.0.0.1:{}", node.addr.port())])
        .await
        .unwrap();
    client.put("k", b"v".to_vec(), None).await.unwrap();
    // The metrics endpoint too: beyond loopback only with a token or insecure.
    let err = refuses_to_start(
        &[
            &["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"],
            &common[..],
        ]
        .concat(),
    );
    assert!(err.contains("metrics_listen"), "{err}");
    assert!(err.contains("metrics_token_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_endpoint_asks_for_its_token_when_given_one() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "s3cret-metrics-token\n").unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"m\"\nlisten = \"127.0.0.1:0\"\nengine = \"memory\"\n\
             metrics_listen = \"0.0.0.0:0\"\nmetrics_token_file = \"{}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    let node = Process::spawn_with_config(&config, &dir.path().join("node.log"));
    let port = node.metrics.expect("metrics served").port();
    let at: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for path in ["/metrics", "/health"] {
        let (status, _) = http_get_with(at, path, &[]).await;
        assert!(status.contains("401"), "{path} without a token: {status}");
        let (status, _) =
            http_get_with(at, path, &[("Authorization", "Bearer not-the-token")]).await;
        assert!(
            status.contains("401"),
            "{path} with a wrong token: {status}"
        );
        let (status, body) = http_get_with(
            at,
            path,
            &[("Authorization", "Bearer s3cret-metrics-token")],
        )
        .await;
        assert!(status.contains("200"), "{path}: {status}");
        assert!(body.contains("dynamokv") || body.contains("ok"), "{body}");
    }
}
