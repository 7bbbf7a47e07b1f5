//! TLS on the connections clients and nodes open (issue 11): rustls with the ring provider, and
//! a tonic connector that makes each new connection with whatever configuration is current, so
//! a node that reloads its certificates uses them for its next connection without a restart.
//!
//! tonic's own `ClientTlsConfig` is fixed for the life of a channel; this connector does the
//! same handshake (tokio-rustls, ALPN `h2`) but reads the configuration per connection.
//! Failures keep rustls' error in their source chain, which [`describe_failure`] turns into a
//! sentence saying which side refused and why.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The crypto provider everywhere: ring (aws-lc-rs would need cmake and minutes of build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from PEM text (one or more `CERTIFICATE` blocks), or why not.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} holds no certificate (no BEGIN CERTIFICATE block)"
        ));
    }
    Ok(certs)
}

/// A private key from PEM text (PKCS#8, SEC1 or PKCS#1), or why not.
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what} is not a PEM private key: {e}"))
}

/// A root store holding the certificates of `ca_pem` (a bundle of several CAs is allowed, as
/// while a cluster moves from one CA to the next).
pub fn roots(ca_pem: &[u8], what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_pem, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} holds a certificate that cannot be a CA: {e}"))?;
    }
    Ok(roots)
}

/// A client configuration trusting the CAs of `ca_pem`, presenting `identity` (certificate
/// chain and key, PEM) when given. It speaks HTTP/2 only (ALPN `h2`), as gRPC does.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots(ca_pem, "the CA certificate")?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(cert, "the client certificate")?,
                private_key(key, "the client key")?,
            )
            .map_err(|e| format!("the client certificate and key do not go together: {e}"))?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A TLS client configuration that can be replaced while connections are made with it: each
/// new connection takes the current one.
///
/// A reloading one ([`ClientTls::reloading`]) also asks its source for a fresh configuration
/// when a connection is made and the last ask is at least `every` ago, so a long-running client
/// whose certificate files are rotated on disk presents the new ones on its next connection,
/// and costs nothing while its connections stay up (TLS checks certificates at the handshake
/// only).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<RwLock<Arc<rustls::ClientConfig>>>,
    reload: Option<Arc<Reload>>,
}

/// Where a reloading [`ClientTls`] gets its configurations: `fresh` answers a new one when its
/// source changed and loads (it reports its own failures and answers `None`).
struct Reload {
    fresh: Box<dyn Fn() -> Option<rustls::ClientConfig> + Send + Sync>,
    every: Duration,
    asked: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("reloading_every", &self.reload.as_ref().map(|r| r.every))
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn new(config: rustls::ClientConfig) -> ClientTls {
        ClientTls {
            config: Arc::new(RwLock::new(Arc::new(config))),
            reload: None,
        }
    }

    /// Starts with `config` and, for a connection made at least `every` after the last ask,
    /// first asks `fresh` for a newer configuration (`None`: keep the current one).
    pub fn reloading(
        config: rustls::ClientConfig,
        every: Duration,
        fresh: impl Fn() -> Option<rustls::ClientConfig> + Send + Sync + 'static,
    ) -> ClientTls {
        ClientTls {
            reload: Some(Arc::new(Reload {
                fresh: Box::new(fresh),
                every,
                asked: Mutex::new(Some(Instant::now())),
            })),
            ..ClientTls::new(config)
        }
    }

    /// Replaces the configuration for connections made from now on.
    pub fn replace(&self, config: rustls::ClientConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The configuration for a connection made now (reloaded first when it is time to ask).
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        if let Some(reload) = &self.reload {
            let due = {
                let mut asked = reload.asked.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let due = asked.is_none_or(|at| now.duration_since(at) >= reload.every);
                if due {
                    *asked = Some(now);
                }
                due
            };
            if due && let Some(config) = (reload.fresh)() {
                self.replace(config);
            }
        }
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The name a node's certificate must carry to be accepted at `host` (an IP address or a DNS
/// name; IPv6 in brackets as in URIs).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))
}

/// A channel to the node at `endpoint` whose connections are made over TLS with the
/// configuration `tls` holds when each is made. TCP_NODELAY is set, as the plain channels do.
pub fn connect_lazy(endpoint: &Endpoint, tls: ClientTls) -> Channel {
    let connector = tower::service_fn(move |uri: Uri| {
        let config = tls.current();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name =
                server_name(&host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let addr = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((addr, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, io::Error>(TokioIo::new(Primed::await_verdict(stream).await?))
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}

/// How long a new connection waits for the node's first bytes (see [`Primed`]).
const VERDICT_WAIT: Duration = Duration::from_secs(1);

/// A TLS connection whose first bytes from the server were read before it was handed to
/// HTTP/2, and are given back first.
///
/// In TLS 1.3 the client's handshake ends before the server has checked the client's
/// certificate; a server that refuses it says so with an alert on the client's first read.
/// Handed straight to HTTP/2, that alert races the first request, which then fails as a bare
/// "connection closed". So the connector reads first: an HTTP/2 server sends its SETTINGS as
/// soon as the connection is up (RFC 9113 3.4), and a refusal arrives instead of them, as a
/// connection error carrying the TLS alert (and, being a connect error, one that certainly
/// sent nothing). A server that says nothing within [`VERDICT_WAIT`] is let through as is.
#[derive(Debug)]
struct Primed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Primed<S> {
    async fn await_verdict(mut inner: S) -> io::Result<Primed<S>> {
        let mut head = vec![0u8; 4096];
        let n = match tokio::time::timeout(VERDICT_WAIT, inner.read(&mut head)).await {
            Ok(read) => read?,
            Err(_) => 0,
        };
        head.truncate(n);
        Ok(Primed { head, at: 0, inner })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The TLS error in `err`'s source chain, if any.
pub fn tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        source = e.source();
    }
    None
}

/// What a TLS failure means for the side that saw it, in words: which side refused and why.
/// `peer` names the other end ("the node at 10.0.0.1:7070").
pub fn describe(err: &rustls::Error, peer: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match err {
        E::AlertReceived(alert) => {
            let why = match alert {
                A::CertificateRequired => {
                    "it requires a client certificate (give client_cert and client_key, or use a token over TLS only if the cluster accepts tokens)"
                }
                A::UnknownCA | A::BadCertificate | A::DecryptError => {
                    "it does not trust our client certificate (not signed by the cluster's CA)"
                }
                A::CertificateExpired => "our client certificate has expired",
                A::CertificateRevoked => "our client certificate is revoked",
                A::UnsupportedCertificate => "our client certificate is not fit for client use",
                A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => {
                    "we share no TLS version or cipher suite"
                }
                A::NoApplicationProtocol => "it does not speak HTTP/2 over TLS",
                _ => "see the alert",
            };
            format!("{peer} refused the TLS handshake ({alert:?}): {why}")
        }
        E::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer | C::BadSignature => {
                    "it is not signed by the CA we were given (ca_cert)".to_string()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "it does not name the address we connected to".to_string()
                }
                C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                    "it is not a server certificate".to_string()
                }
                other => format!("{other:?}"),
            };
            format!("we refused the certificate of {peer}: {why}")
        }
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            format!("{peer} does not speak TLS (is it serving plain text? then leave out ca_cert)")
        }
        E::NoCertificatesPresented => format!("{peer} presented no certificate"),
        E::NoApplicationProtocol => format!("{peer} does not speak HTTP/2 over TLS"),
        other => format!("TLS with {peer} failed: {other}"),
    }
}

/// The reason a call failed, when it failed in the TLS layer: which side refused and why.
pub fn describe_failure(status: &tonic::Status, peer: &str) -> Option<String> {
    let source = std::error::Error::source(status)?;
    tls_error(source).map(|e| describe(e, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_that_is_not_a_certificate_is_refused_with_what_it_was() {
        let err = certificates(b"hello", "the CA certificate").unwrap_err();
        assert!(err.contains("the CA certificate"), "{err}");
        let err = private_key(
            b"-----BEGIN NOTHING-----\n-----END NOTHING-----\n",
            "the key",
        )
        .unwrap_err();
        assert!(err.contains("the key"), "{err}");
        assert!(client_config(b"", None).is_err());
    }

    fn config_named(alpn: &[u8]) -> rustls::ClientConfig {
        let mut c = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    }

    #[test]
    fn a_reloading_configuration_asks_its_source_only_when_due_and_keeps_what_it_had_on_none() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let asked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        let rarely =
            ClientTls::reloading(config_named(b"old"), Duration::from_secs(3600), move || {
                count.fetch_add(1, Ordering::SeqCst);
                Some(config_named(b"new"))
            });
        for _ in 0..3 {
            assert_eq!(rarely.current().alpn_protocols, vec![b"old".to_vec()]);
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            0,
            "not due within the interval"
        );

        let answers = Arc::new(Mutex::new(vec![None, Some(config_named(b"new")), None]));
        let source = Arc::clone(&answers);
        let always = ClientTls::reloading(config_named(b"old"), Duration::ZERO, move || {
            source.lock().unwrap().remove(0)
        });
        let names: Vec<Vec<u8>> = (0..3)
            .map(|_| always.current().alpn_protocols[0].clone())
            .collect();
        assert_eq!(names, [b"old".to_vec(), b"new".to_vec(), b"new".to_vec()]);
        assert!(
            answers.lock().unwrap().is_empty(),
            "asked at every connection"
        );
    }

    #[test]
    fn tls_errors_are_found_through_io_errors_and_described_by_side() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, inner);
        let found = tls_error(&io).expect("found");
        let text = describe(found, "the node at 127.0.0.1:1");
        assert!(
            text.starts_with("we refused the certificate of the node at 127.0.0.1:1"),
            "{text}"
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let text = describe(&alert, "n");
        assert!(text.starts_with("n refused the TLS handshake"), "{text}");
        assert!(text.contains("client certificate"), "{text}");
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(describe(&plain, "n").contains("plain text"));
        assert!(tls_error(&io::Error::other("no tls here")).is_none());
    }

    #[test]
    fn server_names_take_addresses_and_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("node-1.example"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("not a name").is_err());
    }
}
