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
