//! What a hostile client sends, below the gRPC client: TCP, TLS with or without a client
//! certificate, and HTTP/2 frames by hand (the `h2` crate), so that an attack controls what a
//! well-behaved client never does: a message's declared length, how fast its body comes,
//! how many streams are open, bytes one at a time.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection an attack speaks through: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Conn = Box<dyn Io>;

/// How a connection reaches a node.
#[derive(Clone)]
pub enum Transport {
    /// Plain text to the TLS port (the node still serves it, to refuse each request).
    Plain,
    /// TLS, presenting the client certificate `tls` holds, if any.
    Tls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "Plain",
            Transport::Tls(_) => "Tls",
        })
    }
}

/// A TCP connection to `addr`, given up after 5 s.
pub async fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A connection to `addr` over `transport`, its TLS handshake (if any) done within 10 s.
pub async fn connect(addr: SocketAddr, transport: &Transport) -> io::Result<Conn> {
    let tcp = tcp(addr).await?;
    match transport {
        Transport::Plain => Ok(Box::new(tcp)),
        Transport::Tls(config) => {
            let name = dynamokv_proto::tls::server_name(&addr.ip().to_string())
                .map_err(io::Error::other)?;
            let tls = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_rustls::TlsConnector::from(Arc::clone(config)).connect(name, tcp),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            Ok(Box::new(tls))
        }
    }
}

/// The bytes of a TLS ClientHello for a node at `addr`, as `config` would send it: what a
/// slowloris sends one byte at a time, never finishing the handshake.
pub fn client_hello(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Vec<u8> {
    let name = dynamokv_proto::tls::server_name(&addr.ip().to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// The HTTP/2 connection preface a client opens with.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame header: 24-bit length, type, flags, stream id.
fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

/// The preface and an empty SETTINGS frame: an HTTP/2 connection that is open and idle.
pub fn idle_http2_opening() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend_from_slice(&frame_header(0, 0x4, 0, 0));
    b
}

/// The preface, SETTINGS, then a HEADERS frame on stream 1 declaring a 16 KiB header block
/// (no END_HEADERS) whose bytes follow: sent a byte a second, it never ends.
pub fn endless_http2_opening() -> Vec<u8> {
    let mut b = idle_http2_opening();
    let block = 16 * 1024 - 1;
    b.extend_from_slice(&frame_header(block, 0x1, 0, 1));
    // HPACK literal header fields without indexing, new names: any bytes of the right form
    // keep a decoder waiting for the rest.
    let end = b.len() + block;
    while b.len() < end {
        b.extend_from_slice(&[0x00, 0x01, b'x', 0x01, b'y']);
    }
    b.truncate(end);
    b
}

/// Writes `bytes` one at a time, one every `every`, until they run out, the connection fails
/// or `stop` fires. `sent` counts them.
pub async fn dribble(
    conn: &mut Conn,
    bytes: &[u8],
    every: Duration,
    stop: &tokio_util::sync::CancellationToken,
    sent: &std::sync::atomic::AtomicU64,
) -> io::Result<()> {
    for b in bytes {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        conn.write_all(&[*b]).await?;
        conn.flush().await?;
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// An HTTP/2 client connection over `io`. `window` is what we let the node send before we
/// read (per stream and per connection). The connection is driven by a task of its own,
/// which ends when the connection does.
pub async fn h2(io: Conn, window: u32) -> Result<SendRequest<Bytes>, h2::Error> {
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window)
        .max_concurrent_reset_streams(1 << 16)
        .handshake::<_, Bytes>(io)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// The headers of a gRPC call of `path` (`/package.Service/Method`) to `addr`, with a bearer
/// token if given.
pub fn grpc_request(addr: SocketAddr, path: &str, token: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method("POST")
        .uri(format!("https://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(()).unwrap()
}

/// The 5-byte prefix of a gRPC message: not compressed, `len` bytes follow.
pub fn grpc_prefix(len: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(0);
    b.put_u32(len);
    b.freeze()
}

/// A whole gRPC message: prefix and body.
pub fn grpc_message(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    b.freeze()
}

/// Sends `data` on `stream` as the node's flow control allows (never more than it granted:
/// nothing is buffered here beyond what is in flight).
pub async fn send_all(
    stream: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end_of_stream: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return stream.send_data(data, end_of_stream);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end_of_stream && data.is_empty())?;
    }
    Ok(())
}

/// How a call made by hand ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `grpc-status` (0 is OK); `None` if the node never sent one (a reset, an HTTP error).
    pub grpc_status: Option<i32>,
    /// The `dynamokv-error` code, if any.
    pub code: Option<String>,
    /// Response body bytes read (and dropped).
    pub body_bytes: u64,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.grpc_status == Some(0)
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn error_code(headers: &http::HeaderMap) -> Option<String> {
    Some(
        headers
            .get(dynamokv_common::error_code::ERROR_CODE_METADATA)?
            .to_str()
            .ok()?
            .to_string(),
    )
}

/// Waits for the answer to a call, reading its body as it comes and dropping it (so a large
/// answer costs this side nothing but the reading).
pub async fn answer(response: h2::client::ResponseFuture) -> Result<Answer, h2::Error> {
    let response = response.await?;
    let (head, mut body) = response.into_parts();
    if let Some(status) = grpc_status(&head.headers) {
        // Trailers-only: an error before any message.
        return Ok(Answer {
            grpc_status: Some(status),
            code: error_code(&head.headers),
            body_bytes: 0,
        });
    }
    let mut body_bytes = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body_bytes += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok(Answer {
        grpc_status: grpc_status(&trailers),
        code: error_code(&trailers),
        body_bytes,
    })
}

/// Makes one unary call over `send` and reads its answer (see [`answer`]).
pub async fn call(
    send: &SendRequest<Bytes>,
    request: http::Request<()>,
    message: Bytes,
) -> Result<Answer, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, false)?;
    send_all(&mut stream, message, true).await?;
    answer(response).await
}

/// A zero-filled megabyte, the body of oversized messages.
pub static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
