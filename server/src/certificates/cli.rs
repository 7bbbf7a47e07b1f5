//! `dynamokv cert ...`: the commands that make and show development certificates.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::{
    CA_DAYS, CertError, LEAF_DAYS, Pem, check_name, identity_of, issue_node, issue_user, new_ca,
    now, read_ca, read_text, write_pair,
};

/// `dynamokv cert ...`: development certificates for a TLS cluster.
#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster's certificate authority: ca.pem (every node and client trusts it) and
    /// ca.key (it signs node and user certificates: keep it secret).
    Ca {
        /// Where the files go (created if missing).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster's name.
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        /// Validity in days.
        #[arg(long, default_value_t = CA_DAYS)]
        days: u32,
        /// Replace existing files (certificates the old CA issued are no longer trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate, node-<NODE_ID>.pem and .key, signed by the CA in --dir: a
    /// server certificate for localhost, 127.0.0.1, ::1 and every --host, and a client
    /// certificate for calls to other nodes.
    Node {
        /// The node's id, as in its configuration.
        node_id: String,
        /// The directory that holds ca.pem and ca.key; the files go there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster's name.
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        /// Another name clients reach the node by: an IP address or a DNS name (repeatable).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate for a user, user-<NAME>.pem and .key, signed by the CA in
    /// --dir.
    User {
        /// The user's name.
        name: String,
        /// The directory that holds ca.pem and ca.key; the files go there too.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The cluster's name.
        #[arg(long, default_value = "dynamokv")]
        cluster: String,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print a certificate file: subject, identity, names, issuer, validity, whether it is a CA.
    Show {
        /// A .pem file (every certificate in it is shown).
        file: PathBuf,
    },
}

/// Runs one `dynamokv cert` command, printing the files it wrote. An error has written nothing.
pub fn run(cmd: CertCommand) -> Result<(), String> {
    run_inner(cmd).map_err(|e| e.to_string())
}

fn run_inner(cmd: CertCommand) -> Result<(), CertError> {
    match cmd {
        CertCommand::Ca {
            dir,
            cluster,
            days,
            force,
        } => {
            let pem = new_ca(&cluster, days)?;
            let (cert, key) = write_pair(&dir, "ca", &pem, force)?;
            println!(
                "wrote {} (the CA certificate of cluster {cluster}: nodes and clients trust it)",
                cert.display()
            );
            println!(
                "wrote {} (the CA's private key, mode 0600: keep it secret)",
                key.display()
            );
            println!(
                "next: dynamokv cert node <NODE_ID> --dir {} --cluster {cluster} [--host HOST]...",
                dir.display()
            );
        }
        CertCommand::Node {
            node_id,
            dir,
            cluster,
            hosts,
            days,
            force,
        } => {
            check_name("cluster name", &cluster)?;
            check_name("node id", &node_id)?;
            let ca = read_ca(&dir)?;
            check_ca_cluster(&ca, &cluster, &dir)?;
            let pem = issue_node(&ca, &cluster, &node_id, &hosts, days)?;
            let (cert, key) = write_pair(&dir, &format!("node-{node_id}"), &pem, force)?;
            println!(
                "wrote {} (node {node_id}'s certificate, dynamokv://{cluster}/node/{node_id})",
                cert.display()
            );
            println!("wrote {} (its private key, mode 0600)", key.display());
        }
        CertCommand::User {
            name,
            dir,
            cluster,
            days,
            force,
        } => {
            check_name("cluster name", &cluster)?;
            check_name("user name", &name)?;
            let ca = read_ca(&dir)?;
            check_ca_cluster(&ca, &cluster, &dir)?;
            let pem = issue_user(&ca, &cluster, &name, days)?;
            let (cert, key) = write_pair(&dir, &format!("user-{name}"), &pem, force)?;
            println!(
                "wrote {} (user {name}'s client certificate, dynamokv://{cluster}/user/{name})",
                cert.display()
            );
            println!("wrote {} (its private key, mode 0600)", key.display());
        }
        CertCommand::Show { file } => print!("{}", describe_file(&file)?),
    }
    Ok(())
}

/// A CA made by `dynamokv cert ca` names its cluster (CN `DynamoKV <cluster> CA`, O
/// `DynamoKV`); issuing a leaf for another cluster under it is almost surely a forgotten
/// `--cluster`. Any other CA (an operator's own) is taken as it is.
fn check_ca_cluster(ca: &Pem, cluster: &str, dir: &Path) -> Result<(), CertError> {
    let Ok(der) = super::first_cert_der(&ca.cert, "ca.pem") else {
        return Ok(());
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Ok(());
    };
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok());
    let org = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok());
    let ca_cluster = cn
        .and_then(|cn| cn.strip_prefix("DynamoKV "))
        .and_then(|cn| cn.strip_suffix(" CA"));
    match (org, ca_cluster) {
        (Some("DynamoKV"), Some(ca_cluster)) if ca_cluster != cluster => {
            Err(CertError::ClusterMismatch {
                dir: dir.to_path_buf(),
                ca_cluster: ca_cluster.to_string(),
                cluster: cluster.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// What `cert show` prints for a file.
fn describe_file(path: &Path) -> Result<String, CertError> {
    let text = read_text(path)?;
    let mut ders = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let block = block.map_err(|e| CertError::Unreadable {
            what: path.display().to_string(),
            detail: format!("malformed PEM ({e})"),
        })?;
        if block.label == "CERTIFICATE" {
            ders.push(block.contents);
        }
    }
    if ders.is_empty() {
        return Err(CertError::Unreadable {
            what: path.display().to_string(),
            detail: "it holds no certificate (`cert show` takes a .pem file, not a .key)".into(),
        });
    }
    let mut out = String::new();
    for (i, der) in ders.iter().enumerate() {
        if ders.len() > 1 {
            let _ = writeln!(out, "certificate {} of {}:", i + 1, ders.len());
        }
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Unreadable {
                what: path.display().to_string(),
                detail: format!("certificate {} does not parse ({e})", i + 1),
            })?;
        describe(&cert, &mut out);
        if i + 1 < ders.len() {
            out.push('\n');
        }
    }
    Ok(out)
}

fn describe(cert: &X509Certificate<'_>, out: &mut String) {
    let _ = writeln!(out, "subject:  {}", cert.subject());
    let identity = match identity_of(cert) {
        Some(id) => format!("{id} ({})", id.uri()),
        None => "none (no single well-formed dynamokv:// URI among the SANs)".into(),
    };
    let _ = writeln!(out, "identity: {identity}");
    let sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .map(describe_name)
            .collect::<Vec<_>>()
            .join(", "),
        Ok(None) => "none".into(),
        Err(e) => format!("malformed ({e})"),
    };
    let _ = writeln!(out, "SANs:     {sans}");
    let _ = writeln!(out, "issuer:   {}", cert.issuer());
    let validity = cert.validity();
    let now = now().unix_timestamp();
    let state = if validity.not_before.timestamp() > now {
        "NOT YET VALID"
    } else if validity.not_after.timestamp() <= now {
        "EXPIRED"
    } else {
        "valid now"
    };
    let _ = writeln!(
        out,
        "validity: {} to {} ({state})",
        validity.not_before, validity.not_after
    );
    let ca = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => match bc.value.path_len_constraint {
            Some(n) => format!("yes (path length {n})"),
            None => "yes".into(),
        },
        _ => "no".into(),
    };
    let _ = writeln!(out, "CA:       {ca}");
    if let Ok(Some(ku)) = cert.key_usage() {
        let _ = writeln!(out, "usage:    {}", ku.value);
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        let mut uses: Vec<String> = [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.any, "any"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_string())
        .collect();
        uses.extend(e.other.iter().map(|oid| oid.to_id_string()));
        let _ = writeln!(out, "extended: {}", uses.join(", "));
    }
    let _ = writeln!(out, "serial:   {}", cert.raw_serial_as_string());
}

pub(super) fn describe_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(s) => format!("DNS:{s}"),
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::RFC822Name(s) => format!("email:{s}"),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())
            ),
            16 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())
            ),
            _ => format!("IP:(malformed, {} bytes)", bytes.len()),
        },
        other => format!("{other:?}"),
    }
}
