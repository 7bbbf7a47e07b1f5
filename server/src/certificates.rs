//! Certificates: who a certificate says its holder is. (The development CA and `dynamokv cert`
//! land with the rest of this module.)

/// Who a certificate says its holder is (from its `dynamokv://` URI SAN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Node { cluster: String, node_id: String },
    User { cluster: String, name: String },
}

/// Whether `s` may be a node id, user or cluster name: 1 to 128 of `[A-Za-z0-9._-]`.
pub fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads the identity from a DER certificate; `None` if it has no `dynamokv://` URI SAN, a
/// malformed one, or more than one.
pub fn identity(cert_der: &[u8]) -> Option<Identity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix("dynamokv://")
        {
            if found.is_some() {
                return None;
            }
            let mut parts = rest.split('/');
            let (cluster, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || !valid_name(cluster) || !valid_name(id) {
                return None;
            }
            found = Some(match kind {
                "node" => Identity::Node {
                    cluster: cluster.to_string(),
                    node_id: id.to_string(),
                },
                "user" => Identity::User {
                    cluster: cluster.to_string(),
                    name: id.to_string(),
                },
                _ => return None,
            });
        }
    }
    found
}

/// A certificate and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("{0:?} cannot be named in a certificate: use 1 to 128 of A-Z, a-z, 0-9, '.', '_', '-'")]
    BadName(String),
    #[error("cannot read {path}: {source} (make a CA with `dynamokv cert ca --dir {dir}`)", dir = .path.parent().map_or_else(|| ".".into(), |p| p.display().to_string()))]
    NoCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists already: pass --force to replace it")]
    Exists(std::path::PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn check_name(s: &str) -> Result<(), CertError> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(CertError::BadName(s.to_string()))
    }
}

fn uri(cluster: &str, kind: &str, id: &str) -> Result<rcgen::SanType, CertError> {
    let text = format!("dynamokv://{cluster}/{kind}/{id}");
    Ok(rcgen::SanType::URI(text.try_into()?))
}

/// Parameters valid from a minute ago for `days` days.
fn params(common_name: &str, days: u32) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "DynamoKV");
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::days(i64::from(days.max(1)));
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    p
}

/// A new self-signed CA for `cluster`, valid for `days`.
pub fn new_ca(cluster: &str, days: u32) -> Result<Pem, CertError> {
    check_name(cluster)?;
    let mut p = params(&format!("DynamoKV {cluster} CA"), days);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn issue(ca: &Pem, mut p: rcgen::CertificateParams) -> Result<Pem, CertError> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for node `node_id` of `cluster`, for serving and for calling other nodes: it
/// names `localhost`, 127.0.0.1, ::1 and each of `hosts` (IP addresses or DNS names).
pub fn issue_node(
    ca: &Pem,
    cluster: &str,
    node_id: &str,
    hosts: &[String],
    days: u32,
) -> Result<Pem, CertError> {
    check_name(cluster)?;
    check_name(node_id)?;
    let mut p = params(node_id, days);
    let mut sans = vec![
        rcgen::SanType::DnsName("localhost".try_into()?),
        rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        rcgen::SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    for h in hosts {
        sans.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(h.as_str().try_into()?),
        });
    }
    sans.push(uri(cluster, "node", node_id)?);
    p.subject_alt_names = sans;
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(ca, p)
}

/// A client certificate for user `user` of `cluster`.
pub fn issue_user(ca: &Pem, cluster: &str, user: &str, days: u32) -> Result<Pem, CertError> {
    check_name(cluster)?;
    check_name(user)?;
    let mut p = params(user, days);
    p.subject_alt_names = vec![uri(cluster, "user", user)?];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    issue(ca, p)
}

/// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key`, the key readable by its owner only from
/// the moment it exists; refuses to replace either file unless `force`.
pub fn write_pair(
    dir: &std::path::Path,
    stem: &str,
    pem: &Pem,
    force: bool,
) -> Result<(std::path::PathBuf, std::path::PathBuf), CertError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CertError::Exists(p.clone()));
            }
        }
    }
    let write = |path: &std::path::Path, text: &str, mode: u32| {
        let err = |source| CertError::Write {
            path: path.to_path_buf(),
            source,
        };
        // Written aside and renamed into place, so a node reloading its files never reads
        // half of one.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    };
    write(&key_path, &pem.key, 0o600)?;
    write(&cert_path, &pem.cert, 0o644)?;
    Ok((cert_path, key_path))
}

/// The CA of `dir` (`ca.pem` and `ca.key`).
pub fn read_ca(dir: &std::path::Path) -> Result<Pem, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| CertError::NoCa { path, source })
    };
    Ok(Pem {
        cert: read("ca.pem")?,
        key: read("ca.key")?,
    })
}

/// The files `dev_bundle` made.
#[derive(Debug, Clone)]
pub struct DevBundle {
    pub ca: std::path::PathBuf,
    /// Node id, certificate, key.
    pub nodes: Vec<(String, std::path::PathBuf, std::path::PathBuf)>,
    /// User, certificate, key.
    pub users: Vec<(String, std::path::PathBuf, std::path::PathBuf)>,
}

/// Everything a development cluster needs in `dir`: `ca.pem`/`ca.key` (an existing CA is kept,
/// so clients that trust it keep working across runs), `node-<id>.pem`/`.key` for each of
/// `node_ids` and `user-<name>.pem`/`.key` for each of `users`, issuing only what is missing.
pub fn dev_bundle(
    dir: &std::path::Path,
    cluster: &str,
    node_ids: &[String],
    users: &[String],
) -> Result<DevBundle, CertError> {
    let ca = match read_ca(dir) {
        Ok(ca) => ca,
        Err(CertError::NoCa { .. }) => {
            let ca = new_ca(cluster, 3650)?;
            write_pair(dir, "ca", &ca, false)?;
            ca
        }
        Err(e) => return Err(e),
    };
    let mut bundle = DevBundle {
        ca: dir.join("ca.pem"),
        nodes: Vec::new(),
        users: Vec::new(),
    };
    for id in node_ids {
        let stem = format!("node-{id}");
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        if !(cert.exists() && key.exists()) {
            write_pair(dir, &stem, &issue_node(&ca, cluster, id, &[], 365)?, true)?;
        }
        bundle.nodes.push((id.clone(), cert, key));
    }
    for user in users {
        let stem = format!("user-{user}");
        let (cert, key) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        if !(cert.exists() && key.exists()) {
            write_pair(dir, &stem, &issue_user(&ca, cluster, user, 365)?, true)?;
        }
        bundle.users.push((user.clone(), cert, key));
    }
    Ok(bundle)
}

/// `dynamokv cert`: a development certificate authority and the certificates of nodes and
/// users, made with rcgen. Any other PKI works as well, if its leaf certificates carry the
/// `dynamokv://<cluster>/node/<id>` or `dynamokv://<cluster>/user/<name>` URI name.
#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Makes a CA: <dir>/ca.pem and <dir>/ca.key.
    Ca {
        #[arg(long, default_value = "certs")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issues node NODE_ID's certificate, signed by the CA in --dir: <dir>/node-<id>.pem/.key.
    /// It names localhost, 127.0.0.1, ::1 and each --host (where others reach the node).
    Node {
        node_id: String,
        #[arg(long, default_value = "certs")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Issues user NAME's client certificate, signed by the CA in --dir:
    /// <dir>/user-<name>.pem/.key.
    User {
        name: String,
        #[arg(long, default_value = "certs")]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Prints what a certificate says: subject, identity, names, issuer, validity.
    Show { file: std::path::PathBuf },
}

/// Runs a `dynamokv cert` command; what it did, as lines to print.
pub fn run(cmd: CertCommand) -> Result<String, String> {
    let wrote = |(c, k): (std::path::PathBuf, std::path::PathBuf)| {
        format!(
            "wrote {}\nwrote {} (private key, mode 0600)\n",
            c.display(),
            k.display()
        )
    };
    match cmd {
        CertCommand::Ca {
            dir,
            cluster,
            days,
            force,
        } => {
            let ca = new_ca(&cluster, days).map_err(|e| e.to_string())?;
            write_pair(&dir, "ca", &ca, force)
                .map(wrote)
                .map_err(|e| e.to_string())
        }
        CertCommand::Node {
            node_id,
            dir,
            cluster,
            hosts,
            days,
            force,
        } => {
            let ca = read_ca(&dir).map_err(|e| e.to_string())?;
            let pem =
                issue_node(&ca, &cluster, &node_id, &hosts, days).map_err(|e| e.to_string())?;
            write_pair(&dir, &format!("node-{node_id}"), &pem, force)
                .map(wrote)
                .map_err(|e| e.to_string())
        }
        CertCommand::User {
            name,
            dir,
            cluster,
            days,
            force,
        } => {
            let ca = read_ca(&dir).map_err(|e| e.to_string())?;
            let pem = issue_user(&ca, &cluster, &name, days).map_err(|e| e.to_string())?;
            write_pair(&dir, &format!("user-{name}"), &pem, force)
                .map(wrote)
                .map_err(|e| e.to_string())
        }
        CertCommand::Show { file } => {
            let text =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let certs = dynamokv_proto::tls::certificates(&text, &file.display().to_string())?;
            let mut out = String::new();
            for der in &certs {
                out.push_str(&describe(der)?);
            }
            Ok(out)
        }
    }
}

/// A certificate in words.
fn describe(der: &[u8]) -> Result<String, String> {
    use std::fmt::Write as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "subject:  {}", cert.subject());
    let _ = writeln!(out, "issuer:   {}", cert.issuer());
    let _ = writeln!(
        out,
        "valid:    {} to {}",
        cert.validity().not_before,
        cert.validity().not_after
    );
    let _ = writeln!(out, "ca:       {}", cert.is_ca());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| {
                use x509_parser::extensions::GeneralName as G;
                match n {
                    G::DNSName(d) => format!("DNS:{d}"),
                    G::URI(u) => format!("URI:{u}"),
                    G::IPAddress(b) => match b.len() {
                        4 => format!("IP:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            format!("IP:{}", std::net::Ipv6Addr::from(a))
                        }
                        _ => format!("{n}"),
                    },
                    other => format!("{other}"),
                }
            })
            .collect();
        let _ = writeln!(out, "names:    {}", names.join(", "));
    }
    let who = match identity(der) {
        Some(Identity::Node { cluster, node_id }) => format!("node {node_id} of cluster {cluster}"),
        Some(Identity::User { cluster, name }) => format!("user {name} of cluster {cluster}"),
        None => "none (no dynamokv:// name)".into(),
    };
    let _ = writeln!(out, "identity: {who}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn issued_certificates_name_who_was_asked_and_the_ca_names_no_one() {
        let ca = new_ca("c1", 10).unwrap();
        let der = |pem: &Pem| {
            dynamokv_proto::tls::certificates(pem.cert.as_bytes(), "cert").unwrap()[0].to_vec()
        };
        assert_eq!(identity(&der(&ca)), None);
        let node = issue_node(
            &ca,
            "c1",
            "node-7",
            &["10.0.0.1".into(), "db.example".into()],
            1,
        )
        .unwrap();
        assert_eq!(
            identity(&der(&node)),
            Some(Identity::Node {
                cluster: "c1".into(),
                node_id: "node-7".into()
            })
        );
        let text = describe(&der(&node)).unwrap();
        assert!(
            text.contains("10.0.0.1") && text.contains("db.example"),
            "{text}"
        );
        let user = issue_user(&ca, "c1", "alice", 1).unwrap();
        assert_eq!(
            identity(&der(&user)),
            Some(Identity::User {
                cluster: "c1".into(),
                name: "alice".into()
            })
        );
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(matches!(
                issue_user(&ca, "c1", bad, 1),
                Err(CertError::BadName(_))
            ));
        }
    }

    #[test]
    fn keys_are_private_files_are_not_replaced_unforced_and_the_dev_ca_is_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = dev_bundle(dir.path(), "c1", &["n1".into()], &["admin".into()]).unwrap();
        let mode = std::fs::metadata(&first.users[0].2)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = std::fs::read(&first.ca).unwrap();
        let again = dev_bundle(
            dir.path(),
            "c1",
            &["n1".into()],
            &["admin".into(), "bob".into()],
        )
        .unwrap();
        assert_eq!(std::fs::read(&again.ca).unwrap(), ca, "the CA was replaced");
        assert!(again.users[1].1.exists());
        let pem = read_ca(dir.path()).unwrap();
        assert!(matches!(
            write_pair(dir.path(), "ca", &pem, false),
            Err(CertError::Exists(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(read_ca(empty.path()), Err(CertError::NoCa { .. })));
    }

    proptest! {
        #[test]
        fn identity_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = identity(&bytes);
        }
    }
}
