//! Certificates: the identity scheme, real TLS handshakes under it, files on disk.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn der(pem: &Pem) -> Vec<u8> {
    first_cert_der(&pem.cert, "test").unwrap()
}

fn node_id(cluster: &str, id: &str) -> Identity {
    Identity::Node {
        cluster: cluster.into(),
        node_id: id.into(),
    }
}

fn user_id(cluster: &str, name: &str) -> Identity {
    Identity::User {
        cluster: cluster.into(),
        name: name.into(),
    }
}

/// One CA with a node and a user certificate, made once (key generation is the slow part).
struct Fixture {
    ca: Pem,
    node: Pem,
    user: Pem,
    other_ca: Pem,
    other_user: Pem,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca = new_ca("prod", 30).unwrap();
        let node = issue_node(
            &ca,
            "prod",
            "node-1",
            &[
                "10.0.0.1".into(),
                "DB-1.example.com".into(),
                "fe80::1".into(),
            ],
            30,
        )
        .unwrap();
        let user = issue_user(&ca, "prod", "alice", 30).unwrap();
        let other_ca = new_ca("prod", 30).unwrap();
        let other_user = issue_user(&other_ca, "prod", "mallory", 30).unwrap();
        Fixture {
            ca,
            node,
            user,
            other_ca,
            other_user,
        }
    })
}

// ---- 1. The identity scheme ----

#[test]
fn names_are_checked() {
    for ok in [
        "a",
        "node-1",
        "Node_1.eu-west",
        "0",
        &"x".repeat(128),
        ".",
        "-",
    ] {
        assert!(valid_name(ok), "{ok:?}");
    }
    for bad in [
        "",
        &"x".repeat(129),
        "a/b",
        "a b",
        "a:b",
        "a@b",
        "é",
        "a\0",
        "a%2f",
        "a?b",
        "a#b",
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    let ca = &fixture().ca;
    let bad = |r: Result<Pem, CertError>| match r {
        Err(CertError::InvalidName { .. }) => {}
        other => panic!("expected InvalidName, got {other:?}"),
    };
    bad(new_ca("a/b", 30));
    bad(issue_node(ca, "prod", "node 1", &[], 30));
    bad(issue_node(ca, "pr/od", "node-1", &[], 30));
    bad(issue_user(ca, "prod", "", 30));
    bad(issue_user(ca, "prod", &"u".repeat(129), 30));
    let err = issue_user(ca, "prod", "al/ice", 30)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid user name \"al/ice\""), "{err}");
    assert!(err.contains("1 to 128 characters"), "{err}");
    for host in [
        "bad host",
        "-x.example",
        "a..b",
        "a/b",
        "",
        "10.0.0.256",
        "*.example.com",
    ] {
        match issue_node(ca, "prod", "n", &[host.into()], 30) {
            Err(CertError::InvalidHost(h)) => assert_eq!(h, host),
            other => panic!("{host:?}: {other:?}"),
        }
    }
    for days in [0, MAX_DAYS + 1] {
        assert!(matches!(
            issue_user(ca, "prod", "u", days),
            Err(CertError::InvalidDays(d)) if d == days
        ));
    }
}

#[test]
fn issued_certificates_carry_what_was_asked_and_the_ca_no_identity() {
    let f = fixture();
    assert_eq!(identity(&der(&f.ca)), None);
    assert_eq!(identity(&der(&f.node)), Some(node_id("prod", "node-1")));
    assert_eq!(identity(&der(&f.user)), Some(user_id("prod", "alice")));
    assert_eq!(
        identity(&der(&f.other_user)),
        Some(user_id("prod", "mallory"))
    );
    assert_eq!(
        node_id("prod", "node-1").uri(),
        "dynamokv://prod/node/node-1"
    );
    assert_eq!(user_id("prod", "alice").uri(), "dynamokv://prod/user/alice");
}

fn parsed(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(super::cli::describe_name)
                .collect()
        })
        .unwrap_or_default()
}

/// The identity scheme, field by field, as the auth code relies on it.
#[test]
fn certificates_follow_the_identity_scheme() {
    let f = fixture();
    let now = now().unix_timestamp();
    let near = |got: i64, want: i64| (got - want).abs() <= 60;

    let ca_der = der(&f.ca);
    let ca = parsed(&ca_der);
    let subject = ca.subject().to_string();
    let id = subject
        .strip_prefix("CN=DynamoKV prod CA, O=DynamoKV, OU=CA ")
        .unwrap_or_else(|| panic!("{subject}"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{subject}"
    );
    // Another CA of the same cluster has another name.
    let other_der = der(&f.other_ca);
    assert_ne!(parsed(&other_der).subject(), ca.subject());
    assert_eq!(ca.issuer(), ca.subject());
    let bc = ca.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(!ku.digital_signature());
    assert!(sans(&ca).is_empty());
    assert!(near(ca.validity().not_before.timestamp(), now - 60));
    assert!(near(ca.validity().not_after.timestamp(), now + 30 * 86_400));
    assert!(ca.verify_signature(None).is_ok());

    let node_der = der(&f.node);
    let node = parsed(&node_der);
    assert_eq!(node.subject().to_string(), "CN=node-1");
    assert_eq!(node.issuer(), ca.subject());
    assert!(node.verify_signature(Some(ca.public_key())).is_ok());
    assert!(!node.is_ca());
    assert_eq!(
        sans(&node),
        [
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:::1",
            "IP:10.0.0.1",
            "DNS:db-1.example.com",
            "IP:fe80::1",
            "URI:dynamokv://prod/node/node-1",
        ]
    );
    let eku = node.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any && eku.other.is_empty());
    assert!(near(node.validity().not_before.timestamp(), now - 60));
    assert!(near(
        node.validity().not_after.timestamp(),
        now + 30 * 86_400
    ));

    let user_der = der(&f.user);
    let user = parsed(&user_der);
    assert_eq!(user.subject().to_string(), "CN=alice");
    assert_eq!(sans(&user), ["URI:dynamokv://prod/user/alice"]);
    let eku = user.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    assert!(user.verify_signature(Some(ca.public_key())).is_ok());
    assert_ne!(node.raw_serial(), user.raw_serial());

    // ECDSA P-256 keys everywhere.
    for pem in [&f.ca, &f.node, &f.user] {
        let key = KeyPair::from_pem(&pem.key).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    }
    // The CA's key is never shown by Debug.
    let shown = format!("{:?}", f.ca);
    assert!(!shown.contains("PRIVATE KEY") && shown.contains("[elided]"));
}

/// A self-signed certificate with exactly these URI SANs (and a DNS name).
fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::new(vec!["example.com".to_string()]).unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.to_string().try_into().unwrap()));
    }
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn identity_needs_exactly_one_well_formed_dynamokv_uri() {
    let cases: &[(&[&str], Option<Identity>)] = &[
        (&[], None),
        (&["https://example.com/x"], None),
        (&["dynamokv://c/node/n1"], Some(node_id("c", "n1"))),
        (
            &["https://example.com", "dynamokv://c/user/u", "spiffe://x/y"],
            Some(user_id("c", "u")),
        ),
        (&["dynamokv://c/node/n1", "dynamokv://c/node/n1"], None),
        (&["dynamokv://c/node/n1", "dynamokv://c/user/u"], None),
        (&["dynamokv://c/node/n1", "DynamoKV://c/node/n2"], None),
        (&["DYNAMOKV://c/node/n1"], None),
        (&["dynamokv://c/admin/n1"], None),
        (&["dynamokv://c/node/"], None),
        (&["dynamokv:///node/n1"], None),
        (&["dynamokv://c/node/n1/"], None),
        (&["dynamokv://c/node/n1/x"], None),
        (&["dynamokv://c/node"], None),
        (&["dynamokv:c/node/n1"], None),
        (&["dynamokv://c/node/n%31"], None),
        (&["dynamokv://c:1/node/n1"], None),
        (&["dynamokv://c/node/n1?x"], None),
        (&["dynamokv://c/Node/n1"], None),
    ];
    for (uris, want) in cases {
        assert_eq!(&identity(&cert_with_uris(uris)), want, "{uris:?}");
    }
    // Trailing bytes after the certificate: not a certificate.
    let mut der = der(&fixture().user);
    assert!(identity(&der).is_some());
    der.push(0);
    assert_eq!(identity(&der), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn identity_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = identity(&bytes);
    }

    /// Real certificates with a few bytes changed or cut, which gets the parser much further
    /// than random bytes do: whatever identity() says, it does not panic.
    #[test]
    fn identity_never_panics_on_mutated_certificates(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let f = fixture();
        let mut bytes = der([&f.node, &f.user, &f.ca][which]);
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = identity(&bytes);
    }
}

// ---- 2. Real handshakes ----

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Pem) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(der(ca))).unwrap();
    Arc::new(roots)
}

fn chain(pem: &Pem) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &Pem) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap()
}

/// A server presenting `cert`, requiring client certificates issued by `client_ca`.
fn server_config(cert: &Pem, client_ca: &Pem) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca), provider())
        .build()
        .unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(cert), key(cert))
            .unwrap(),
    )
}

/// A client presenting `cert`, trusting servers issued by `server_ca`.
fn client_config(
    cert: &Pem,
    server_ca: &Pem,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots(server_ca))
            .with_client_auth_cert(chain(cert), key(cert))
            .unwrap(),
    )
}

const ALL: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What each side saw: the identity of the peer's certificate, or why the handshake failed.
#[derive(Debug)]
struct Handshake {
    client: io::Result<Option<Identity>>,
    server: io::Result<Option<Identity>>,
}

async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> Handshake {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    // Each side keeps its stream until both are done: a TLS 1.3 server still writes its
    // session tickets after the client has finished.
    let server = async move {
        let tls = TlsAcceptor::from(server).accept(server_io).await?;
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity(c));
        Ok::<_, io::Error>((id, tls))
    };
    let client = async move {
        let tls = TlsConnector::from(client).connect(name, client_io).await?;
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| identity(c));
        Ok::<_, io::Error>((id, tls))
    };
    let (client, server) = tokio::join!(client, server);
    let (client, server) = (
        client.map(|(id, _stream)| id),
        server.map(|(id, _stream)| id),
    );
    Handshake { client, server }
}

fn tls_error(result: &io::Result<Option<Identity>>) -> rustls::Error {
    match result {
        Ok(id) => panic!("the handshake succeeded ({id:?})"),
        Err(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .unwrap_or_else(|| panic!("not a TLS error: {e:?}"))
            .clone(),
    }
}

#[tokio::test]
async fn a_user_certificate_of_the_cluster_ca_is_accepted_and_identified() {
    let f = fixture();
    for versions in [&ALL[..1], &ALL[1..]] {
        let hs = handshake(
            server_config(&f.node, &f.ca),
            client_config(&f.user, &f.ca, versions),
            "localhost",
        )
        .await;
        assert_eq!(
            hs.server.unwrap(),
            Some(user_id("prod", "alice")),
            "{versions:?}"
        );
        assert_eq!(hs.client.unwrap(), Some(node_id("prod", "node-1")));
    }
}

#[tokio::test]
async fn a_node_certificate_works_as_a_client_and_for_every_name_it_lists() {
    let f = fixture();
    let hs = handshake(
        server_config(&f.node, &f.ca),
        client_config(&f.node, &f.ca, ALL),
        "localhost",
    )
    .await;
    assert_eq!(hs.server.unwrap(), Some(node_id("prod", "node-1")));
    assert_eq!(hs.client.unwrap(), Some(node_id("prod", "node-1")));
    for name in [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "db-1.example.com",
        "fe80::1",
    ] {
        let hs = handshake(
            server_config(&f.node, &f.ca),
            client_config(&f.user, &f.ca, ALL),
            name,
        )
        .await;
        assert!(hs.client.is_ok() && hs.server.is_ok(), "{name}: {hs:?}");
    }
    // A name the certificate does not list is refused by the client.
    let hs = handshake(
        server_config(&f.node, &f.ca),
        client_config(&f.user, &f.ca, ALL),
        "10.0.0.2",
    )
    .await;
    assert!(
        matches!(
            tls_error(&hs.client),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{hs:?}"
    );
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused_by_the_server() {
    let f = fixture();
    for versions in [&ALL[..1], &ALL[1..]] {
        let hs = handshake(
            server_config(&f.node, &f.ca),
            client_config(&f.other_user, &f.ca, versions),
            "localhost",
        )
        .await;
        assert_eq!(
            tls_error(&hs.server),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "{versions:?}: {hs:?}"
        );
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let f = fixture();
    let hs = handshake(
        server_config(&f.node, &f.ca),
        client_config(&f.user, &f.other_ca, ALL),
        "localhost",
    )
    .await;
    assert_eq!(
        tls_error(&hs.client),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        "{hs:?}"
    );
    assert!(hs.server.is_err(), "{hs:?}");
}

#[tokio::test]
async fn a_user_certificate_cannot_serve() {
    let f = fixture();
    // The user certificate lists no host name: let a user certificate that did (an operator's
    // own PKI could issue one) show that the refusal is for its purpose, not its names.
    let issuer = ca_issuer(&f.ca, "the CA").unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params = leaf_params(
        "bob",
        vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::URI("dynamokv://prod/user/bob".try_into().unwrap()),
        ],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        30,
    )
    .unwrap();
    let named_user = Pem {
        cert: params.signed_by(&key, &issuer).unwrap().pem(),
        key: key.serialize_pem(),
    };
    for server_cert in [&f.user, &named_user] {
        let hs = handshake(
            server_config(server_cert, &f.ca),
            client_config(&f.node, &f.ca, ALL),
            "localhost",
        )
        .await;
        assert!(
            matches!(
                tls_error(&hs.client),
                rustls::Error::InvalidCertificate(
                    CertificateError::InvalidPurpose
                        | CertificateError::InvalidPurposeContext { .. }
                )
            ),
            "{hs:?}"
        );
    }
}

// ---- 3. Files ----

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_pair_makes_a_private_key_file_and_never_overwrites_unasked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let f = fixture();
    let (cert, key) = write_pair(&dir, "user-alice", &f.user, false).unwrap();
    assert_eq!(cert, dir.join("user-alice.pem"));
    assert_eq!(key, dir.join("user-alice.key"));
    assert_eq!(fs::read_to_string(&cert).unwrap(), f.user.cert);
    assert_eq!(fs::read_to_string(&key).unwrap(), f.user.key);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir), 0o700);

    // Without force: refused, both files as they were.
    let err = write_pair(&dir, "user-alice", &f.node, false).unwrap_err();
    assert!(
        matches!(&err, CertError::Exists(p) if *p == cert),
        "{err:?}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(&cert).unwrap(), f.user.cert);
    assert_eq!(fs::read_to_string(&key).unwrap(), f.user.key);

    // Only the key there: still refused, and no certificate written beside it.
    fs::write(dir.join("lonely.key"), "old").unwrap();
    let err = write_pair(&dir, "lonely", &f.node, false).unwrap_err();
    assert!(matches!(&err, CertError::Exists(p) if *p == dir.join("lonely.key")));
    assert!(!dir.join("lonely.pem").exists());

    // With force: replaced, and a key file that was world-readable is 0600 afterwards.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    write_pair(&dir, "user-alice", &f.node, true).unwrap();
    assert_eq!(fs::read_to_string(&cert).unwrap(), f.node.cert);
    assert_eq!(fs::read_to_string(&key).unwrap(), f.node.key);
    assert_eq!(mode(&key), 0o600);
    // No temporary files left behind.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["lonely.key", "user-alice.key", "user-alice.pem"]);

    for bad in ["", "../x", "a/b"] {
        assert!(matches!(
            write_pair(&dir, bad, &f.user, true),
            Err(CertError::InvalidName { .. })
        ));
    }
}

#[test]
fn read_ca_names_what_is_missing_and_checks_the_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = read_ca(dir).unwrap_err();
    assert!(
        matches!(&err, CertError::MissingCa { missing, .. } if *missing == dir.join("ca.pem")),
        "{err:?}"
    );
    assert!(err.to_string().contains("dynamokv cert ca --dir"), "{err}");
    let f = fixture();
    write_pair(dir, "ca", &f.ca, false).unwrap();
    assert_eq!(read_ca(dir).unwrap(), f.ca);
    fs::remove_file(dir.join("ca.key")).unwrap();
    let err = read_ca(dir).unwrap_err();
    assert!(
        matches!(&err, CertError::MissingCa { missing, .. } if *missing == dir.join("ca.key")),
        "{err:?}"
    );
    // Another CA's key: refused.
    fs::write(dir.join("ca.key"), &f.other_ca.key).unwrap();
    let err = read_ca(dir).unwrap_err().to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    // A leaf is not a CA.
    write_pair(dir, "ca", &f.user, true).unwrap();
    let err = read_ca(dir).unwrap_err().to_string();
    assert!(err.contains("not a CA certificate"), "{err}");
    assert!(matches!(
        issue_user(&f.user, "prod", "x", 30),
        Err(CertError::InvalidCa { .. })
    ));
}

#[test]
fn dev_bundle_reuses_the_ca_and_issues_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let nodes: Vec<String> = vec!["node-1".into(), "node-2".into()];
    let first = dev_bundle(&dir, "dev", &nodes, &["alice".into()]).unwrap();
    assert_eq!(first.ca, dir.join("ca.pem"));
    let ca_pem = fs::read(dir.join("ca.pem")).unwrap();
    let ca_der = first_cert_der(std::str::from_utf8(&ca_pem).unwrap(), "").unwrap();
    let ca = parsed(&ca_der);
    let check = |path: &Path, want: Identity| {
        let der = first_cert_der(&fs::read_to_string(path).unwrap(), "").unwrap();
        let cert = parsed(&der);
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        assert_eq!(identity(&der), Some(want));
    };
    assert_eq!(first.nodes.len(), 2);
    for (id, cert, key) in &first.nodes {
        assert_eq!(*cert, dir.join(format!("node-{id}.pem")));
        assert_eq!(*key, dir.join(format!("node-{id}.key")));
        assert_eq!(mode(key), 0o600);
        check(cert, node_id("dev", id));
    }
    let (name, alice, _) = &first.users[0];
    assert_eq!(name, "alice");
    check(alice, user_id("dev", "alice"));
    let alice_pem = fs::read(alice).unwrap();
    let node1_pem = fs::read(&first.nodes[0].1).unwrap();

    // Again, with a user more: the same CA and leaves, and the new user's certificate.
    let second = dev_bundle(&dir, "dev", &nodes, &["alice".into(), "bob".into()]).unwrap();
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_pem);
    assert_eq!(fs::read(alice).unwrap(), alice_pem);
    assert_eq!(fs::read(&first.nodes[0].1).unwrap(), node1_pem);
    assert_eq!(second.nodes, first.nodes);
    assert_eq!(second.users.len(), 2);
    let (name, bob, bob_key) = &second.users[1];
    assert_eq!(name, "bob");
    check(bob, user_id("dev", "bob"));
    assert_eq!(mode(bob_key), 0o600);

    // A leaf of another identity (a wrong file copied in), or whose key is gone, is issued
    // again; the others are kept.
    fs::copy(alice, bob).unwrap();
    fs::remove_file(&first.nodes[1].2).unwrap();
    dev_bundle(&dir, "dev", &nodes, &["alice".into(), "bob".into()]).unwrap();
    check(bob, user_id("dev", "bob"));
    assert_eq!(fs::read(alice).unwrap(), alice_pem);
    assert_eq!(fs::read(&first.nodes[0].1).unwrap(), node1_pem);
    assert!(first.nodes[1].2.exists());

    // Bad names: an error, and nothing written.
    let empty = tmp.path().join("empty");
    assert!(matches!(
        dev_bundle(&empty, "dev", &["a b".into()], &[]),
        Err(CertError::InvalidName { .. })
    ));
    assert!(!empty.exists());
}

#[test]
fn dev_bundle_reissues_leaves_after_the_ca_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nodes: Vec<String> = vec!["n1".into()];
    let first = dev_bundle(dir, "dev", &nodes, &[]).unwrap();
    let old = fs::read(&first.nodes[0].1).unwrap();
    // The operator replaced the CA: the old leaf no longer verifies, so it is issued again.
    let new_ca = new_ca("dev", 30).unwrap();
    write_pair(dir, "ca", &new_ca, true).unwrap();
    let second = dev_bundle(dir, "dev", &nodes, &[]).unwrap();
    let new = fs::read_to_string(&second.nodes[0].1).unwrap();
    assert_ne!(new.as_bytes(), &old[..]);
    let ca_der = der(&new_ca);
    let leaf_der = first_cert_der(&new, "").unwrap();
    assert!(
        parsed(&leaf_der)
            .verify_signature(Some(parsed(&ca_der).public_key()))
            .is_ok()
    );
    assert_eq!(fs::read_to_string(dir.join("ca.pem")).unwrap(), new_ca.cert);
}
