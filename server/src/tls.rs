//! Transport security of a node (issue 11): TLS on every connection it accepts and makes,
//! mutual TLS between nodes under the cluster's CA, and certificates reloaded from disk while
//! the node runs.
//!
//! **Accepting.** Each accepted connection is sorted by its first byte: a TLS handshake
//! (`0x16`) is completed here, off the accept loop and under a deadline; anything else is a
//! plain-text client on a TLS port, which is still served, so that every request it makes is
//! answered with a clear "this node requires TLS" instead of a reset. Who the peer is (the
//! identity its certificate names, if any) is read once per connection and travels with each
//! request as [`ConnInfo`].
//!
//! **Trust.** The CA file is the only root: node certificates and client certificates must
//! chain to it. A client certificate is optional at the TLS layer (a client may prove itself
//! with a token instead); what each service demands of the peer is decided per request, in
//! `access_control`.
//!
//! **Reloading.** tonic's `ServerTlsConfig` is fixed for the life of a server, so the node
//! uses tokio-rustls (which tonic's TLS is built on) directly: the CA, certificate and key
//! files are read again every `reload_interval_ms`, and when their bytes change a new
//! configuration is built and used for every connection accepted or made from then on.
//! Connections already open keep the keys they were made with. A change that does not load
//! (a half-written file, a key that does not match) is logged and the old configuration kept.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpIncoming};

use dynamokv_proto::tls::{ClientTls, certificates, client_config, private_key, provider, roots};

use crate::certificates::{Identity, identity};
use crate::config::TlsConfig;
use crate::connections::{Admission, Class, ConnState, ConnectionSlot, Connections};
use crate::metrics::Metrics;

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// A node's TLS state: the configurations it accepts and makes connections with.
#[derive(Debug)]
pub struct NodeTls {
    files: TlsConfig,
    cluster: String,
    node_id: String,
    server: RwLock<Arc<rustls::ServerConfig>>,
    /// What this node presents and trusts when it calls other nodes.
    pub client: ClientTls,
    /// The bytes of the CA, certificate and key files the configurations were built from.
    loaded: Mutex<Vec<u8>>,
    /// Where handshake failures and the certificates' expiry are reported.
    metrics: Arc<Metrics>,
}

/// Reads the three files named by `files`, in order.
fn read_files(files: &TlsConfig) -> Result<[Vec<u8>; 3], String> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
    };
    Ok([
        read(&files.ca, "the CA certificate")?,
        read(&files.cert, "the node certificate")?,
        read(&files.key, "the node key")?,
    ])
}

/// The server and client configurations of node `node_id` of `cluster` from the PEM bytes of
/// its CA, certificate and key; refused if the certificate is not this node's.
fn build(
    [ca, cert, key]: &[Vec<u8>; 3],
    cluster: &str,
    node_id: &str,
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), String> {
    let chain = certificates(cert, "the node certificate")?;
    let want = Identity::Node {
        cluster: cluster.to_string(),
        node_id: node_id.to_string(),
    };
    match identity(&chain[0]) {
        Some(got) if got == want => {}
        got => {
            return Err(format!(
                "the node certificate names {} but this is node {node_id:?} of cluster {cluster:?}: issue it with `dynamokv cert node {node_id} --cluster {cluster}`",
                match got {
                    Some(Identity::Node { cluster, node_id }) => {
                        format!("node {node_id:?} of cluster {cluster:?}")
                    }
                    Some(Identity::User { cluster, name }) => {
                        format!("user {name:?} of cluster {cluster:?}")
                    }
                    None => "no dynamokv identity (no dynamokv:// URI name)".to_string(),
                }
            ));
        }
    }
    let roots = Arc::new(roots(ca, "the CA certificate")?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("cannot check client certificates against the CA: {e}"))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(key, "the node key")?)
        .map_err(|e| format!("the node certificate and key do not go together: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let client = client_config(ca, Some((cert, key)))?;
    Ok((server, client))
}

impl NodeTls {
    /// Loads the files named in `files`; the certificate must be node `node_id`'s of
    /// `cluster`.
    pub fn load(
        files: &TlsConfig,
        cluster: &str,
        node_id: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<NodeTls>, String> {
        let bytes = read_files(files)?;
        let (server, client) = build(&bytes, cluster, node_id)?;
        let tls = NodeTls {
            files: files.clone(),
            cluster: cluster.to_string(),
            node_id: node_id.to_string(),
            server: RwLock::new(Arc::new(server)),
            client: ClientTls::new(client),
            loaded: Mutex::new(bytes.concat()),
            metrics,
        };
        tls.report_expiry(&bytes);
        Ok(Arc::new(tls))
    }

    /// Sets the expiry metrics from the PEM bytes of the CA, certificate and key: the node's
    /// own certificate (the first of its chain) and the first of its CAs to expire.
    fn report_expiry(&self, [ca, cert, _]: &[Vec<u8>; 3]) {
        let not_after = |pem: &[u8]| -> Vec<i64> {
            certificates(pem, "")
                .unwrap_or_default()
                .iter()
                .filter_map(|c| x509_parser::parse_x509_certificate(c).ok())
                .map(|(_, c)| c.validity().not_after.timestamp())
                .collect()
        };
        if let Some(&at) = not_after(cert).first() {
            self.metrics.tls_certificate_expires("node", at);
        }
        if let Some(&at) = not_after(ca).iter().min() {
            self.metrics.tls_certificate_expires("ca", at);
        }
    }

    /// Reads the files again and, if their bytes changed and they load, uses them from now on.
    /// `Ok(true)`: reloaded; `Ok(false)`: unchanged; `Err`: changed but not loadable (the old
    /// configuration stays).
    pub fn reload(&self) -> Result<bool, String> {
        let bytes = read_files(&self.files)?;
        let concat = bytes.concat();
        if *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) == concat {
            return Ok(false);
        }
        let (server, client) = build(&bytes, &self.cluster, &self.node_id)?;
        *self.server.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(server);
        self.client.replace(client);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = concat;
        self.report_expiry(&bytes);
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`, reloading them when they change.
    pub fn watch(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_error = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let Some(tls) = tls.upgrade() else { return };
                match tls.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %tls.files.cert.display(), "TLS certificates reloaded: new connections use them");
                        last_error = None;
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        // Said once per distinct problem, not every interval.
                        if last_error.as_ref() != Some(&e) {
                            tracing::error!(error = %e, "TLS files changed but do not load: still using the previous certificates");
                            last_error = Some(e);
                        }
                    }
                }
            }
        });
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(
            &self.server.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// How a connection reached the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// Plain text on a node that serves plain text.
    Plain,
    /// Plain text on a node that serves TLS: every request is refused.
    PlainOnTlsPort,
    /// TLS; `peer` is the identity the client certificate names, if it presented one the
    /// CA signed with a `dynamokv://` name.
    Tls {
        presented_certificate: bool,
        peer: Option<Identity>,
    },
}

/// What each request learns of its connection (a request extension).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub security: Security,
    /// Set on a connection accepted over the connection cap: (connections open, the cap).
    /// Its requests are refused and it closes shortly (see `load_shedding`).
    pub over_cap: Option<(usize, usize)>,
    /// Its place in the connection table (none when over the cap).
    pub state: Option<Arc<ConnState>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, plain or TLS.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    /// Its place under the connection cap (none when over it).
    _slot: Option<ConnectionSlot>,
    /// When a connection over the cap stops reading, which ends it.
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a connection over the cap stays open: long enough to answer what it sent with
/// OVERLOADED.
pub const OVER_CAP_LINGER: Duration = Duration::from_secs(1);

impl Conn {
    fn new(io: Io, remote: Option<SocketAddr>, security: Security, slot: Slot) -> Conn {
        let (slot, over_cap) = slot;
        Conn {
            io,
            info: ConnInfo {
                remote,
                security,
                over_cap,
                state: slot.as_ref().map(|s| Arc::clone(&s.state)),
            },
            close_at: over_cap.map(|_| Box::pin(tokio::time::sleep(OVER_CAP_LINGER))),
            _slot: slot,
        }
    }
}

/// A new connection's place under the cap, or the (open, cap) it is over.
type Slot = (Option<ConnectionSlot>, Option<(usize, usize)>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("info", &self.info).finish()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(close) = &mut self.close_at
            && close.as_mut().poll(cx).is_ready()
        {
            // End of stream: the server closes the connection.
            return Poll::Ready(Ok(()));
        }
        if let Some(state) = &self.info.state
            && state.closing(cx)
        {
            // Closed by the connection table (timed out, idle, or evicted): end of stream.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before
            && let Some(state) = &self.info.state
        {
            state.read_something();
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How long an accepted connection has to send its first byte and finish its TLS handshake
/// (at most: the connection table closes it sooner if it has not proven itself by
/// `limits.unauthenticated_timeout_ms`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections accepted from `tcp`: plain as they come when `tls` is `None`, else sorted
/// and handshaken (see the module doc), several handshakes at once; each takes its place in
/// `connections`. Everything, the listener included, is owned by the stream: when the server
/// drops it, the port is free at once.
pub fn accept(
    tcp: TcpIncoming,
    tls: Option<Arc<NodeTls>>,
    connections: Arc<Connections>,
) -> Accept {
    Accept {
        tcp,
        tls,
        connections,
        handshakes: FuturesUnordered::new(),
    }
}

type Handshake = Pin<Box<dyn std::future::Future<Output = Option<Conn>> + Send>>;

/// The stream [`accept`] returns.
pub struct Accept {
    tcp: TcpIncoming,
    tls: Option<Arc<NodeTls>>,
    connections: Arc<Connections>,
    handshakes: FuturesUnordered<Handshake>,
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl Stream for Accept {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut listening = true;
        loop {
            match self.tcp.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let remote = stream.peer_addr().ok();
                    let slot = match self.connections.admit(remote.map(|a| a.ip())) {
                        Admission::Admitted(slot) => (Some(slot), None),
                        Admission::Full(open, cap) => (None, Some((open, cap))),
                    };
                    let Some(tls) = &self.tls else {
                        return Poll::Ready(Some(Ok(Conn::new(
                            Io::Plain(stream),
                            remote,
                            Security::Plain,
                            slot,
                        ))));
                    };
                    let acceptor = tls.acceptor();
                    let metrics = Arc::clone(&tls.metrics);
                    let cluster = tls.cluster.clone();
                    let state = slot.0.as_ref().map(|s| Arc::clone(&s.state));
                    self.handshakes.push(Box::pin(async move {
                        let handshake = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            secure(stream, remote, acceptor, slot, &cluster),
                        );
                        // Closed by the connection table meanwhile (evicted to make room, or
                        // past the unauthenticated timeout): the handshake ends there.
                        let closed = async {
                            match &state {
                                Some(s) => s.closed().await,
                                None => std::future::pending().await,
                            }
                        };
                        let outcome = tokio::select! {
                            outcome = handshake => outcome,
                            () = closed => return None,
                        };
                        match outcome
                        {
                            Ok(Ok(conn)) => Some(conn),
                            Ok(Err(e)) => {
                                if let Refusal::Handshake(reason, _) = &e {
                                    metrics.tls_handshake_failed(reason);
                                }
                                tracing::info!(peer = ?remote, error = %e, "refused a TLS connection");
                                None
                            }
                            Err(_) => {
                                metrics.tls_handshake_failed("timeout");
                                tracing::info!(peer = ?remote, "a connection did not finish its TLS handshake in time");
                                None
                            }
                        }
                    }));
                }
                // Out of file descriptors and the like: the server logs it and asks again.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    listening = false;
                    break;
                }
                Poll::Pending => break,
            }
        }
        loop {
            match self.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(None)) => continue,
                Poll::Ready(None) if !listening => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Why [`secure`] gave up on a connection.
#[derive(Debug)]
enum Refusal {
    /// It went away (or failed) before sending a byte: a port probe, most often. Not counted.
    Gone(String),
    /// The TLS handshake failed: the metric's reason, and what happened.
    Handshake(&'static str, String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Gone(why) | Refusal::Handshake(_, why) => f.write_str(why),
        }
    }
}

/// The `tls_handshake_failures_total` reason for a certificate this node refused.
fn certificate_fault(e: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer | C::BadSignature => "unknown_ca",
        C::Expired | C::NotValidYet | C::ExpiredContext { .. } | C::NotValidYetContext { .. } => {
            "expired"
        }
        _ => "bad_certificate",
    }
}

/// Completes the TLS handshake of `stream`, or takes it as a plain-text client on a TLS port.
async fn secure(
    stream: TcpStream,
    remote: Option<SocketAddr>,
    acceptor: tokio_rustls::TlsAcceptor,
    slot: Slot,
    cluster: &str,
) -> Result<Conn, Refusal> {
    let mut first = [0u8; 1];
    let n = stream
        .peek(&mut first)
        .await
        .map_err(|e| Refusal::Gone(format!("reading the first byte: {e}")))?;
    if n == 0 {
        return Err(Refusal::Gone("closed before sending anything".into()));
    }
    if first[0] != TLS_HANDSHAKE {
        return Ok(Conn::new(
            Io::Plain(stream),
            remote,
            Security::PlainOnTlsPort,
            slot,
        ));
    }
    let tls = acceptor.accept(stream).await.map_err(|e| {
        match dynamokv_proto::tls::tls_error(&e) {
            // From this node's side: what the client presented that it refused.
            Some(rustls::Error::InvalidCertificate(c)) => Refusal::Handshake(
                certificate_fault(c),
                format!("its client certificate is not acceptable ({c:?}): not signed by this cluster's CA, expired, or not for client use"),
            ),
            Some(other) => Refusal::Handshake("other", format!("{other}")),
            None => Refusal::Handshake("other", e.to_string()),
        }
    })?;
    let certs = tls.get_ref().1.peer_certificates();
    let presented_certificate = certs.is_some_and(|c| !c.is_empty());
    let peer = certs.and_then(|c| c.first()).and_then(|c| identity(c));
    // A certificate of this cluster's CA naming one of its nodes or users proves who is on
    // the other end at once (`connections.rs`).
    if let Some(state) = slot.0.as_ref().map(|s| &s.state) {
        match &peer {
            Some(Identity::Node { cluster: c, .. }) if c == cluster => state.prove(Class::Node),
            Some(Identity::User { cluster: c, .. }) if c == cluster => state.prove(Class::Client),
            _ => {}
        }
    }
    Ok(Conn::new(
        Io::Tls(Box::new(tls)),
        remote,
        Security::Tls {
            presented_certificate,
            peer,
        },
        slot,
    ))
}
