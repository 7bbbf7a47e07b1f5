//! `dynamokv cert`, run as a user would: a CA, a node and a user certificate in a directory,
//! `cert show` of each, and the refusals (no CA, an existing file, a bad name) with exit code 2
//! and nothing written.

use std::path::Path;
use std::process::Command;

/// Runs `dynamokv cert ARGS`: (exit code, stdout, stderr).
fn cert(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .arg("cert")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn cert_makes_a_ca_a_node_and_a_user_and_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();

    let (code, out, err) = cert(&["ca", "--dir", d, "--cluster", "prod"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("wrote {d}/ca.pem")), "{out}");
    assert!(out.contains(&format!("wrote {d}/ca.key")), "{out}");
    let (code, out, err) = cert(&[
        "node",
        "n1",
        "--dir",
        d,
        "--cluster",
        "prod",
        "--host",
        "10.0.0.1",
        "--host",
        "db1.internal",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("wrote {d}/node-n1.pem")), "{out}");
    assert!(out.contains(&format!("wrote {d}/node-n1.key")), "{out}");
    let (code, out, err) = cert(&["user", "alice", "--dir", d, "--cluster", "prod"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("wrote {d}/user-alice.pem")), "{out}");
    assert_eq!(
        files(&dir),
        [
            "ca.key",
            "ca.pem",
            "node-n1.key",
            "node-n1.pem",
            "user-alice.key",
            "user-alice.pem"
        ]
    );

    let show = |file: &str| {
        let (code, out, err) = cert(&["show", &format!("{d}/{file}")]);
        assert_eq!(code, Some(0), "{out}{err}");
        out
    };
    let ca = show("ca.pem");
    assert!(
        ca.contains("subject:  CN=DynamoKV prod CA, O=DynamoKV, OU=CA "),
        "{ca}"
    );
    assert!(ca.contains("identity: none"), "{ca}");
    assert!(ca.contains("CA:       yes (path length 0)"), "{ca}");
    assert!(ca.contains("(valid now)"), "{ca}");
    let node = show("node-n1.pem");
    assert!(
        node.contains("identity: node n1 of cluster prod (dynamokv://prod/node/n1)"),
        "{node}"
    );
    assert!(
        node.contains(
            "SANs:     DNS:localhost, IP:127.0.0.1, IP:::1, IP:10.0.0.1, DNS:db1.internal, \
             URI:dynamokv://prod/node/n1"
        ),
        "{node}"
    );
    assert!(
        node.contains("issuer:   CN=DynamoKV prod CA, O=DynamoKV, OU=CA "),
        "{node}"
    );
    assert!(node.contains("CA:       no"), "{node}");
    assert!(node.contains("extended: serverAuth, clientAuth"), "{node}");
    let user = show("user-alice.pem");
    assert!(
        user.contains("identity: user alice of cluster prod (dynamokv://prod/user/alice)"),
        "{user}"
    );
    assert!(user.contains("extended: clientAuth\n"), "{user}");

    // A key file is not a certificate.
    let (code, _, err) = cert(&["show", &format!("{d}/ca.key")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds no certificate"), "{err}");

    // Existing files are kept unless --force.
    let before = std::fs::read(dir.join("node-n1.pem")).unwrap();
    let (code, _, err) = cert(&["node", "n1", "--dir", d, "--cluster", "prod"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{d}/node-n1.pem already exists: pass --force")),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("node-n1.pem")).unwrap(), before);
    let (code, _, err) = cert(&["node", "n1", "--dir", d, "--cluster", "prod", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_ne!(std::fs::read(dir.join("node-n1.pem")).unwrap(), before);
    let (code, _, err) = cert(&["ca", "--dir", d]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ca.pem already exists"), "{err}");

    // A leaf for another cluster than the CA's is refused (a forgotten --cluster).
    let (code, _, err) = cert(&["user", "bob", "--dir", d]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pass --cluster prod"), "{err}");
    assert!(!dir.join("user-bob.pem").exists());
}

#[test]
fn cert_refuses_without_a_ca_or_with_a_bad_name_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();

    let (code, out, err) = cert(&["node", "n1", "--dir", d]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains(&format!("{d}/ca.pem is missing")), "{err}");
    assert!(err.contains("dynamokv cert ca --dir"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(files(&dir).is_empty());
    let (code, _, err) = cert(&["user", "alice", "--dir", d]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ca.pem is missing"), "{err}");

    for args in [
        &["ca", "--dir", d, "--cluster", "my cluster"][..],
        &["ca", "--dir", d, "--cluster", "a/b"][..],
        &["ca", "--dir", d, "--days", "0"][..],
    ] {
        let (code, _, err) = cert(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.starts_with("dynamokv: invalid"), "{err}");
        assert!(files(&dir).is_empty(), "{args:?}");
    }
    let (code, _, err) = cert(&["ca", "--dir", d]);
    assert_eq!(code, Some(0), "{err}");
    for (args, says) in [
        (&["node", "n/1", "--dir", d][..], "invalid node id \"n/1\""),
        (&["node", "n 1", "--dir", d][..], "invalid node id \"n 1\""),
        (
            &["user", "al:ice", "--dir", d][..],
            "invalid user name \"al:ice\"",
        ),
        (&["user", "", "--dir", d][..], "invalid user name \"\""),
        (
            &["node", "n1", "--dir", d, "--host", "not a host"][..],
            "invalid host",
        ),
    ] {
        let (code, _, err) = cert(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.contains("1 to 128 characters") || says == "invalid host",
            "{err}"
        );
    }
    assert_eq!(files(&dir), ["ca.key", "ca.pem"]);
}
