//! A TCP proxy in front of a node, for fault tests on loopback: it can hang the node (bytes
//! stop moving both ways while connections stay open, as with a stopped process) and cut a
//! connection just as the node starts answering a chosen request.
//!
//! Cluster members are configured with their proxy's address, so node-to-node traffic goes
//! through the proxies too, and the proxy's port never changes when the node behind it is
//! restarted on another ephemeral port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Carries bytes both ways.
    Pass,
    /// Holds every byte (new connections are accepted and held too) until the mode changes;
    /// held bytes are then delivered, as a resumed process would read them.
    Hang,
    /// Carries bytes until a client-to-node stream has carried `marker`; then, when the node
    /// starts answering a request on that connection (its first HTTP/2 HEADERS frame on a
    /// request stream, which it sends only once it has handled the request), closes both sides
    /// without passing it on, and returns to `Pass`.
    CutResponseAfter(Vec<u8>),
}

#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Where new connections go; `None` (not pointed yet): they are closed at once.
    target: Arc<Mutex<Option<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a fresh loopback port, not yet pointed anywhere useful.
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let target = Arc::new(Mutex::new(None));
        let accept = {
            let (mode, target) = (mode.clone(), Arc::clone(&target));
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((inbound, _)) => {
                            // Not pointed anywhere yet: closed (it once pointed at itself, and
                            // a connection made then looped through it until no descriptor
                            // was left).
                            let Some(to) = *target.lock().unwrap() else {
                                continue;
                            };
                            tokio::spawn(carry(inbound, to, mode.clone()));
                        }
                        // A connection its client gave up on before it was accepted
                        // (ECONNABORTED), or no descriptor free a moment: the listener still
                        // works. Ending here left the proxy refusing every connection after.
                        Err(e) => {
                            eprintln!("proxy {addr}: accept failed ({e}); still listening");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        };
        Proxy {
            addr,
            mode,
            target,
            accept,
        }
    }

    /// Where new connections go.
    pub fn point_at(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The mode now (a `CutResponseAfter` turns into `Pass` once it has cut).
    pub fn mode(&self) -> Mode {
        self.mode.borrow().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn carry(inbound: TcpStream, to: SocketAddr, mode: watch::Sender<Mode>) {
    let mut rx = mode.subscribe();
    // A hung node accepts nothing either.
    while *rx.borrow_and_update() == Mode::Hang {
        if rx.changed().await.is_err() {
            return;
        }
    }
    let Ok(outbound) = TcpStream::connect(to).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    // Set once the client has sent the marker the mode names.
    let (armed_tx, armed_rx) = watch::channel(false);

    let upstream = {
        let mode = mode.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let n = match in_r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Mode::CutResponseAfter(marker) = &*mode.borrow() {
                    tail.extend_from_slice(&buf[..n]);
                    if contains(&tail, marker) {
                        armed_tx.send_replace(true);
                    }
                    let keep = tail.len().saturating_sub(marker.len());
                    tail.drain(..keep);
                }
                if !wait_while_hung(&mode).await || out_w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = FrameScanner::default();
        loop {
            let n = match out_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Connection-level frames (SETTINGS, PING, WINDOW_UPDATE) may come before the node
            // has acted; the answer to a request starts with HEADERS on the request's stream.
            let answer_at = frames.first_answer(&buf[..n]);
            let armed = *armed_rx.borrow();
            if let (true, Some(at)) = (armed, answer_at) {
                // Cut: the node has started answering the marked request.
                let _ = in_w.write_all(&buf[..at]).await;
                mode.send_replace(Mode::Pass);
                return;
            }
            if !wait_while_hung(&mode).await || in_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // When either direction ends, both sockets are dropped: the connection closes.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Waits while the mode is `Hang`; false if the proxy is gone.
async fn wait_while_hung(mode: &watch::Sender<Mode>) -> bool {
    let mut rx = mode.subscribe();
    while *rx.borrow_and_update() == Mode::Hang {
        if rx.changed().await.is_err() {
            return false;
        }
    }
    true
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Follows the HTTP/2 frames a node sends on one connection (9-byte headers: 24-bit length,
/// type, flags, 31-bit stream id) to find where it starts answering a request.
#[derive(Debug, Default)]
struct FrameScanner {
    /// Bytes of the current frame header read so far.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl FrameScanner {
    const HEADERS: u8 = 0x1;

    /// The offset in `chunk` of the first HEADERS frame on a request stream, if one starts in it.
    fn first_answer(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut i = 0;
        let mut found = None;
        while i < chunk.len() {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() - i);
                self.skip -= n;
                i += n;
                continue;
            }
            let start = i;
            let n = (9 - self.header.len()).min(chunk.len() - i);
            self.header.extend_from_slice(&chunk[i..i + n]);
            i += n;
            if self.header.len() == 9 {
                let h = std::mem::take(&mut self.header);
                let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if found.is_none() && h[3] == Self::HEADERS && stream != 0 {
                    // A header split across chunks starts in an earlier one: cut here anyway.
                    found = Some(start.saturating_sub(9 - n));
                }
                self.skip = len;
            }
        }
        found
    }
}

/// A proxy that is not pointed anywhere yet (a node not started) closes what reaches it, and
/// carries bytes once pointed. It used to point at itself: one connection then looped through
/// it until the process ran out of descriptors and the proxy stopped accepting for good.
#[tokio::test]
async fn a_proxy_not_pointed_yet_closes_connections_and_works_once_pointed() {
    let proxy = Proxy::start().await;
    let mut early = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), early.read(&mut buf))
        .await
        .expect("a connection to a proxy not pointed anywhere stays open")
        .unwrap_or(0);
    assert_eq!(n, 0);

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    proxy.point_at(echo.local_addr().unwrap());
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut server, _) = echo.accept().await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}
