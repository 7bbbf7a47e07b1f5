//! Development certificates (issue 11): a cluster certificate authority, node certificates and
//! client (user) certificates, made with `rcgen`, and the identity a certificate carries.
//!
//! The identity scheme, which authorization relies on:
//! - CA: self-signed, CN `DynamoKV <cluster> CA`, O `DynamoKV` (and OU `CA <random id>`, so
//!   that no two CAs share a name), basicConstraints CA with pathlen 0, key usages keyCertSign
//!   and cRLSign.
//! - Node: CN `<node-id>`; SANs DNS `localhost`, IP `127.0.0.1`, IP `::1`, every host given, and
//!   URI `dynamokv://<cluster>/node/<node-id>`; EKU serverAuth and clientAuth.
//! - User: CN `<user>`; SAN URI `dynamokv://<cluster>/user/<user>`; EKU clientAuth only.
//!
//! Every key is ECDSA P-256. [`identity`] reads the `dynamokv://` URI SAN of any certificate,
//! whichever CA issued it, so an operator's own PKI works as long as its leaf certificates carry
//! that URI.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

mod cli;
#[cfg(test)]
mod tests;

pub use cli::{CertCommand, run};

/// The URI scheme of the identity SAN.
pub const URI_SCHEME: &str = "dynamokv";
/// Default validity of a CA certificate, in days.
pub const CA_DAYS: u32 = 3650;
/// Default validity of a node or user certificate, in days.
pub const LEAF_DAYS: u32 = 365;

/// Who a certificate says its holder is (from its `dynamokv://` URI SAN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Node { cluster: String, node_id: String },
    User { cluster: String, name: String },
}

impl Identity {
    /// The cluster the identity belongs to.
    pub fn cluster(&self) -> &str {
        match self {
            Identity::Node { cluster, .. } | Identity::User { cluster, .. } => cluster,
        }
    }

    /// The URI SAN that carries this identity, `dynamokv://<cluster>/node/<id>` or
    /// `dynamokv://<cluster>/user/<name>`.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node { cluster, node_id } => {
                format!("{URI_SCHEME}://{cluster}/node/{node_id}")
            }
            Identity::User { cluster, name } => format!("{URI_SCHEME}://{cluster}/user/{name}"),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { cluster, node_id } => {
                write!(f, "node {node_id} of cluster {cluster}")
            }
            Identity::User { cluster, name } => write!(f, "user {name} of cluster {cluster}"),
        }
    }
}

/// Whether `s` may be a node id, user name or cluster name: 1 to 128 characters among
/// `A-Z a-z 0-9 . _ -` (they go inside a URI and file names).
pub fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reads the identity from a DER certificate; None if it has no (or a malformed, or more than
/// one) dynamokv URI SAN. Pure; never panics on any bytes.
pub fn identity(cert_der: &[u8]) -> Option<Identity> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    identity_of(&cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Option<Identity> {
    // An error here is a SAN extension that is malformed or present twice: no identity.
    let san = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        // Any URI of our scheme counts (the scheme is case-insensitive), well formed or not:
        // a second one, or a malformed one, makes the certificate's identity ambiguous.
        let ours = uri
            .get(..URI_SCHEME.len() + 1)
            .is_some_and(|p| p.eq_ignore_ascii_case("dynamokv:"));
        if !ours {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(parse_identity_uri(uri)?);
    }
    found
}

/// `dynamokv://<cluster>/node/<id>` or `dynamokv://<cluster>/user/<name>`, exactly.
fn parse_identity_uri(uri: &str) -> Option<Identity> {
    let rest = uri.strip_prefix("dynamokv://")?;
    let mut parts = rest.split('/');
    let (cluster, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_name(cluster) || !valid_name(name) {
        return None;
    }
    let (cluster, name) = (cluster.to_string(), name.to_string());
    match kind {
        "node" => Some(Identity::Node {
            cluster,
            node_id: name,
        }),
        "user" => Some(Identity::User { cluster, name }),
        _ => None,
    }
}

/// A certificate and its private key, both PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl fmt::Debug for Pem {
    /// Shows the certificate, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .field("key", &"[elided]")
            .finish()
    }
}

/// What went wrong making, reading or writing certificates; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "invalid {what} {name:?}: use 1 to 128 characters among A-Z a-z 0-9 . _ - \
         (it goes inside the certificate's dynamokv:// URI)"
    )]
    InvalidName { what: &'static str, name: String },
    #[error(
        "invalid host {0:?}: give an IP address or a DNS name (labels of letters, digits and \
         hyphens separated by dots)"
    )]
    InvalidHost(String),
    #[error("invalid validity of {0} days: give --days between 1 and {MAX_DAYS}")]
    InvalidDays(u32),
    #[error(
        "no CA in {dir}: {missing} is missing; create the CA with `dynamokv cert ca --dir {dir}` \
         (or put your own CA's certificate and key there as ca.pem and ca.key)",
        dir = dir.display(), missing = missing.display()
    )]
    MissingCa { dir: PathBuf, missing: PathBuf },
    #[error(
        "the CA in {dir} is cluster {ca_cluster:?}'s, not {cluster:?}'s: pass --cluster \
         {ca_cluster}, or use another --dir for cluster {cluster:?}",
        dir = dir.display()
    )]
    ClusterMismatch {
        dir: PathBuf,
        ca_cluster: String,
        cluster: String,
    },
    #[error("{} already exists: pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error(
        "{what} cannot issue certificates: {detail}; create a new CA with \
         `dynamokv cert ca --force` (nodes and clients must then trust the new ca.pem)"
    )]
    InvalidCa { what: String, detail: String },
    #[error("cannot read {what}: {detail}")]
    Unreadable { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The longest validity `--days` may ask for (100 years).
pub const MAX_DAYS: u32 = 36_500;

fn check_name(what: &'static str, name: &str) -> Result<(), CertError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(CertError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// not_before = now - 1 minute (some clock skew), not_after = now + days.
fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(CertError::InvalidDays(days));
    }
    let now = now();
    let not_before = now - time::Duration::minutes(1);
    let not_after = now + time::Duration::days(i64::from(days));
    Ok((not_before, not_after))
}

fn now() -> OffsetDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive INTEGER
    bytes[0] |= 0x01; // of full length
    SerialNumber::from_slice(&bytes)
}

fn new_key() -> Result<KeyPair, CertError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

/// A new self-signed CA for `cluster`, valid for `days`.
pub fn new_ca(cluster: &str, days: u32) -> Result<Pem, CertError> {
    check_name("cluster name", cluster)?;
    let (not_before, not_after) = validity(days)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("DynamoKV {cluster} CA"));
    dn.push(DnType::OrganizationName, "DynamoKV");
    // A random id, so that two CAs of one cluster name (every `dev --secure` directory, say)
    // have different names: certificate paths are built by name, and a certificate of another
    // CA with the same name is refused as a bad signature instead of an unknown issuer.
    dn.push(
        DnType::OrganizationalUnitName,
        format!("CA {:016x}", rand::random::<u64>()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The first certificate of a PEM text, as DER.
fn first_cert_der(pem: &str, what: &str) -> Result<Vec<u8>, CertError> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertError::Unreadable {
            what: what.to_string(),
            detail: format!("malformed PEM ({e})"),
        })?;
        if block.label == "CERTIFICATE" {
            return Ok(block.contents);
        }
    }
    Err(CertError::Unreadable {
        what: what.to_string(),
        detail: "no CERTIFICATE block in it".into(),
    })
}

/// The CA as an issuer: checks that its certificate parses, is a CA that may sign
/// certificates, has not expired, and that the key is the certificate's.
fn ca_issuer(ca: &Pem, what: &str) -> Result<Issuer<'static, KeyPair>, CertError> {
    let invalid = |detail: String| CertError::InvalidCa {
        what: what.to_string(),
        detail,
    };
    let der = first_cert_der(&ca.cert, what)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(format!("its certificate does not parse ({e})")))?;
    if !cert.is_ca() {
        return Err(invalid(
            "its certificate is not a CA certificate (no basicConstraints CA:TRUE)".into(),
        ));
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(invalid(
            "its certificate's key usage does not allow signing certificates".into(),
        ));
    }
    let not_after = cert.validity().not_after;
    if not_after.timestamp() <= now().unix_timestamp() {
        return Err(invalid(format!("its certificate expired on {not_after}")));
    }
    let key = KeyPair::from_pem(&ca.key).map_err(|e| {
        invalid(format!(
            "its private key does not parse ({e}): the key must be unencrypted PKCS#8 PEM \
             (`openssl pkcs8 -topk8 -nocrypt -in KEY -out ca.key` converts one)"
        ))
    })?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err(invalid(
            "the private key does not belong to the certificate".into(),
        ));
    }
    Issuer::from_ca_cert_der(&der.into(), key)
        .map_err(|e| invalid(format!("its certificate cannot issue ({e})")))
}

fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
) -> Result<CertificateParams, CertError> {
    let (not_before, not_after) = validity(days)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn issue(ca: &Pem, params: CertificateParams) -> Result<Pem, CertError> {
    let issuer = ca_issuer(ca, "the CA")?;
    let key = new_key()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn uri_san(uri: String) -> Result<SanType, CertError> {
    Ok(SanType::URI(uri.try_into()?))
}

/// A DNS name as a SAN may hold it (without a trailing dot): labels of 1 to 63 letters,
/// digits, hyphens (and underscores), not starting or ending with a hyphen, at most 253
/// characters, the last label not all digits (`10.0.0.256` is a mistyped address, not a name).
fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A node certificate for `node_id` of `cluster`, signed by `ca`: usable as a server and as a
/// client (nodes call each other). `hosts` are extra names: an IP address becomes an IP SAN,
/// anything else a DNS SAN.
pub fn issue_node(
    ca: &Pem,
    cluster: &str,
    node_id: &str,
    hosts: &[String],
    days: u32,
) -> Result<Pem, CertError> {
    check_name("cluster name", cluster)?;
    check_name("node id", node_id)?;
    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::IpAddress(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
    ];
    for host in hosts {
        // A fully qualified name's trailing dot is dropped: TLS names never carry it.
        let name = host.strip_suffix('.').unwrap_or(host);
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if valid_dns_name(name) => {
                SanType::DnsName(name.to_ascii_lowercase().try_into()?)
            }
            Err(_) => return Err(CertError::InvalidHost(host.clone())),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    sans.push(uri_san(
        Identity::Node {
            cluster: cluster.into(),
            node_id: node_id.into(),
        }
        .uri(),
    )?);
    let params = leaf_params(
        node_id,
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        days,
    )?;
    issue(ca, params)
}

/// A client certificate for user `user` of `cluster`, signed by `ca`: client use only.
pub fn issue_user(ca: &Pem, cluster: &str, user: &str, days: u32) -> Result<Pem, CertError> {
    check_name("cluster name", cluster)?;
    check_name("user name", user)?;
    let uri = Identity::User {
        cluster: cluster.into(),
        name: user.into(),
    }
    .uri();
    let params = leaf_params(
        user,
        vec![uri_san(uri)?],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        days,
    )?;
    issue(ca, params)
}

fn io_error(what: impl fmt::Display, path: &Path) -> impl FnOnce(std::io::Error) -> CertError {
    let what = format!("cannot {what} {}", path.display());
    move |source| CertError::Io { what, source }
}

/// Creates `dir` (and its parents) if missing, readable by its owner only.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create the directory", dir))
}

/// Writes `contents` to a new file at `path` with `mode` from its creation (never wider, even
/// for a moment); fails if `path` exists.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists(path.to_path_buf())
            } else {
                io_error("create", path)(e)
            }
        })?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(io_error("write", path)(e));
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    path.with_file_name(name)
}

/// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key file mode 0600, created so it is
/// never readable by others even briefly); refuses to overwrite existing files unless `force`.
/// `dir` is created (mode 0700) if missing. On an error nothing is left half written.
pub fn write_pair(
    dir: &Path,
    stem: &str,
    pem: &Pem,
    force: bool,
) -> Result<(PathBuf, PathBuf), CertError> {
    if stem.is_empty()
        || !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(CertError::InvalidName {
            what: "file name",
            name: stem.to_string(),
        });
    }
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    if !force {
        for path in [&cert_path, &key_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(CertError::Exists(path.clone()));
            }
        }
    }
    create_dir(dir)?;
    if force {
        // New files renamed over the old ones: a replaced key file gets mode 0600 even if the
        // old one was wider, and each file is either the old one or the new one, whole.
        let (cert_tmp, key_tmp) = (temp_path(&cert_path), temp_path(&key_path));
        write_new(&key_tmp, &pem.key, 0o600)?;
        let renamed = write_new(&cert_tmp, &pem.cert, 0o644)
            .and_then(|()| fs::rename(&key_tmp, &key_path).map_err(io_error("replace", &key_path)))
            .and_then(|()| {
                fs::rename(&cert_tmp, &cert_path).map_err(io_error("replace", &cert_path))
            });
        if let Err(e) = renamed {
            let _ = fs::remove_file(&key_tmp);
            let _ = fs::remove_file(&cert_tmp);
            return Err(e);
        }
    } else {
        write_new(&key_path, &pem.key, 0o600)?;
        if let Err(e) = write_new(&cert_path, &pem.cert, 0o644) {
            let _ = fs::remove_file(&key_path);
            return Err(e);
        }
    }
    Ok((cert_path, key_path))
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

/// Reads `<dir>/ca.pem` and `<dir>/ca.key`, and checks that they make a CA that can issue
/// (a CA certificate, not expired, and the key that belongs to it).
pub fn read_ca(dir: &Path) -> Result<Pem, CertError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    for path in [&cert_path, &key_path] {
        if !path.exists() {
            return Err(CertError::MissingCa {
                dir: dir.to_path_buf(),
                missing: path.clone(),
            });
        }
    }
    let pem = Pem {
        cert: read_text(&cert_path)?,
        key: read_text(&key_path)?,
    };
    ca_issuer(
        &pem,
        &format!(
            "the CA in {} and {}",
            cert_path.display(),
            key_path.display()
        ),
    )?;
    Ok(pem)
}

/// The files [`dev_bundle`] made or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevBundle {
    /// `ca.pem`: what nodes and clients trust.
    pub ca: PathBuf,
    /// (node id, certificate, key) for each node id asked for.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
    /// (user name, certificate, key) for each user asked for.
    pub users: Vec<(String, PathBuf, PathBuf)>,
}

/// Whether the leaf at `cert_path` with the key at `key_path` can be kept: issued by this CA's
/// key, not expired (nor within a day of it), carrying `want`, the key its own.
fn leaf_current(
    ca_cert: &X509Certificate<'_>,
    cert_path: &Path,
    key_path: &Path,
    want: &Identity,
) -> bool {
    let (Ok(text), Ok(key)) = (fs::read_to_string(cert_path), fs::read_to_string(key_path)) else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(&key) else {
        return false;
    };
    let Ok(der) = first_cert_der(&text, "") else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let now = now().unix_timestamp();
    cert.issuer() == ca_cert.subject()
        && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
        && cert.validity().not_before.timestamp() <= now
        && cert.validity().not_after.timestamp() > now + 86_400
        && identity_of(&cert).as_ref() == Some(want)
        && key.subject_public_key_info() == cert.public_key().raw
}

/// Everything `dev --secure` needs in one call: in `dir`, ca.pem/ca.key, node-<id>.pem/.key for
/// each node id, user-<name>.pem/.key for each user. Reuses an existing CA in `dir` (so
/// restarting `dev --secure` keeps certificates clients already trust), issues any missing leaf.
/// A leaf that is there but not current (another CA's, another identity's, expired or expiring
/// within a day, unreadable) is issued again in its place.
pub fn dev_bundle(
    dir: &Path,
    cluster: &str,
    node_ids: &[String],
    users: &[String],
) -> Result<DevBundle, CertError> {
    check_name("cluster name", cluster)?;
    for id in node_ids {
        check_name("node id", id)?;
    }
    for user in users {
        check_name("user name", user)?;
    }
    let ca_path = dir.join("ca.pem");
    let ca = if ca_path.exists() || dir.join("ca.key").exists() {
        read_ca(dir)?
    } else {
        let ca = new_ca(cluster, CA_DAYS)?;
        write_pair(dir, "ca", &ca, false)?;
        ca
    };
    let ca_der = first_cert_der(&ca.cert, "ca.pem")?;
    let (_, ca_cert) =
        x509_parser::parse_x509_certificate(&ca_der).map_err(|e| CertError::Unreadable {
            what: ca_path.display().to_string(),
            detail: e.to_string(),
        })?;
    let leaf = |stem: String, want: Identity| -> Result<(PathBuf, PathBuf), CertError> {
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        if leaf_current(&ca_cert, &cert_path, &key_path, &want) {
            return Ok((cert_path, key_path));
        }
        let pem = match &want {
            Identity::Node { node_id, .. } => issue_node(&ca, cluster, node_id, &[], LEAF_DAYS)?,
            Identity::User { name, .. } => issue_user(&ca, cluster, name, LEAF_DAYS)?,
        };
        write_pair(dir, &stem, &pem, true)
    };
    let mut bundle = DevBundle {
        ca: ca_path.clone(),
        nodes: Vec::new(),
        users: Vec::new(),
    };
    for id in node_ids {
        let want = Identity::Node {
            cluster: cluster.into(),
            node_id: id.clone(),
        };
        let (cert, key) = leaf(format!("node-{id}"), want)?;
        bundle.nodes.push((id.clone(), cert, key));
    }
    for user in users {
        let want = Identity::User {
            cluster: cluster.into(),
            name: user.clone(),
        };
        let (cert, key) = leaf(format!("user-{user}"), want)?;
        bundle.users.push((user.clone(), cert, key));
    }
    Ok(bundle)
}
