//! What a node exposes to other users of its machine and to its network by default: the modes
//! of its data files, plain text beyond loopback, and the HTTP metrics endpoint.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use dynamokv_client::Client;

use crate::support::Process;

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
