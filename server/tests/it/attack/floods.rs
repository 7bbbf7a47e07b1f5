//! The attacks made of raw connections and HTTP/2 frames: oversized bodies without
//! credentials, stream floods, idle connections, slowloris, and large-value read storms.
//!
//! Each keeps its pressure up for as long as it runs: a connection or stream the node ends is
//! opened again (after a short pause, so that a node which refuses everything at once is not
//! also flooded with reconnections it never asked for).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use dynamokv_common::limits::MAX_MESSAGE_BYTES;
use dynamokv_proto::v1 as pb;

use super::hostile::{Tally, Target};
use super::raw::{self, Transport};

/// Pause before a connection or stream the node ended is opened again.
const AGAIN: Duration = Duration::from_millis(100);

/// A gauge that remembers its peak.
#[derive(Debug, Default)]
pub struct Peak {
    now: AtomicI64,
    peak: AtomicI64,
}

impl Peak {
    fn up(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn down(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Sleeps `d` unless stopped first; whether it slept.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Oversized bodies without credentials

/// Streams per connection.
const BODY_STREAMS: usize = 3;
/// Bytes of body sent on each stream before it slows to a byte a second.
const BODY_PER_STREAM: u64 = 160 << 20;

/// What the oversized-body attack did.
#[derive(Debug, Default)]
pub struct BodyFindings {
    pub bytes_sent: AtomicU64,
    pub streams: AtomicU64,
    /// How the node answered streams (before their body was complete, as none is).
    pub answers: std::sync::Mutex<Tally>,
    pub connections: AtomicU64,
}

/// Without credentials, over plain text and over TLS without a certificate, one connection
/// each to node `node` with [`BODY_STREAMS`] streams to `Replica/MergeLocal`, each declaring
/// a message of `MAX_MESSAGE_BYTES` (256 MiB) and sending [`BODY_PER_STREAM`] of it as fast as
/// the node takes it, then a byte a second, never finishing.
pub async fn oversized_bodies(
    target: Target,
    node: usize,
    stop: CancellationToken,
) -> Arc<BodyFindings> {
    let found = Arc::new(BodyFindings::default());
    let mut connections = tokio::task::JoinSet::new();
    for transport in [Transport::Plain, Transport::Tls(target.tls(None))] {
        let (addr, stop, found) = (target.addrs[node], stop.clone(), Arc::clone(&found));
        connections.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(conn) = raw::connect(addr, &transport).await else {
                    pause(&stop, AGAIN).await;
                    continue;
                };
                let Ok(send) = raw::h2(conn, 1 << 20).await else {
                    pause(&stop, AGAIN).await;
                    continue;
                };
                found.connections.fetch_add(1, Ordering::Relaxed);
                let mut streams = tokio::task::JoinSet::new();
                for _ in 0..BODY_STREAMS {
                    let (send, stop, found) = (send.clone(), stop.clone(), Arc::clone(&found));
                    streams.spawn(async move {
                        while !stop.is_cancelled() {
                            if oversized_stream(&send, addr, &stop, &found).await.is_err() {
                                // The connection is gone: let it be made again.
                                return;
                            }
                            pause(&stop, AGAIN).await;
                        }
                    });
                }
                while streams.join_next().await.is_some() {}
                pause(&stop, AGAIN).await;
            }
        });
    }
    while connections.join_next().await.is_some() {}
    found
}

/// One stream of [`oversized_bodies`], until the node answers it or the attack stops. `Err`
/// when the connection cannot take a new stream.
async fn oversized_stream(
    send: &h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    stop: &CancellationToken,
    found: &BodyFindings,
) -> Result<(), h2::Error> {
    let mut send = send.clone().ready().await?;
    let request = raw::grpc_request(addr, "/dynamokv.v1.Replica/MergeLocal", None);
    let (response, mut stream) = send.send_request(request, false)?;
    found.streams.fetch_add(1, Ordering::Relaxed);
    let mut answer = tokio::spawn(raw::answer(response));
    let declared = u32::try_from(MAX_MESSAGE_BYTES).unwrap();
    let mut sent = 0u64;
    let mut first = true;
    loop {
        let chunk = if first {
            raw::grpc_prefix(declared)
        } else if sent < BODY_PER_STREAM {
            Bytes::from_static(&raw::ZEROS)
        } else {
            Bytes::from_static(&raw::ZEROS[..1])
        };
        let slow = !first && sent >= BODY_PER_STREAM;
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            a = &mut answer => {
                let what = match a {
                    Ok(Ok(a)) => format!("answered {}", a.code.unwrap_or_else(|| format!("grpc-status {:?}", a.grpc_status))),
                    Ok(Err(e)) => format!("reset ({})", e.reason().map_or("-".into(), |r| format!("{r:?}"))),
                    Err(_) => "lost".into(),
                };
                found.answers.lock().unwrap().add(what);
                return Ok(());
            }
            r = async {
                if slow {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                raw::send_all(&mut stream, chunk.clone(), false).await
            } => {
                if r.is_err() {
                    // The node reset the stream; its answer (if any) is counted above.
                    let a = answer.await;
                    found.answers.lock().unwrap().add(match a {
                        Ok(Ok(a)) => format!("answered {}", a.code.unwrap_or_else(|| format!("grpc-status {:?}", a.grpc_status))),
                        _ => "reset".to_string(),
                    });
                    return Ok(());
                }
                if !first {
                    sent += chunk.len() as u64;
                }
                found.bytes_sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                first = false;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Stream floods

/// Streams each flooding connection tries to hold open.
pub const FLOOD_STREAMS: usize = 25_000;

/// What one flooding connection did.
#[derive(Debug, Default)]
pub struct StreamFindings {
    pub opened: AtomicU64,
    /// Streams the node ended (answered or reset) while the attacker kept them open.
    pub ended: AtomicU64,
    pub open: Peak,
    /// The node's SETTINGS_MAX_CONCURRENT_STREAMS as the client saw it (`usize::MAX`: none).
    pub advertised: AtomicU64,
    pub connections: AtomicU64,
}

/// Two connections to node `node` (TLS without a certificate; TLS with the attacker's token
/// on every request), each opening streams to `Kv/Get` (headers only: the request never
/// ends) until [`FLOOD_STREAMS`] are open, and opening more as the node ends any.
pub async fn stream_flood(
    target: Target,
    node: usize,
    stop: CancellationToken,
    ready: CancellationToken,
) -> Vec<(&'static str, Arc<StreamFindings>)> {
    let mut out = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Ready once both connections have their streams open (or cannot open more).
    let full = Arc::new(Semaphore::new(0));
    {
        let (full, ready) = (Arc::clone(&full), ready.clone());
        tokio::spawn(async move {
            if full.acquire_many(2).await.is_ok() {
                ready.cancel();
            }
        });
    }
    for (name, token) in [
        ("no credentials", None),
        ("attacker's token", Some(target.attacker_token.clone())),
    ] {
        let found = Arc::new(StreamFindings::default());
        out.push((name, Arc::clone(&found)));
        let (addr, tls, stop, full) = (
            target.addrs[node],
            target.tls(None),
            stop.clone(),
            Arc::clone(&full),
        );
        tasks.spawn(async move {
            let mut full = Some(full);
            while !stop.is_cancelled() {
                flood_connection(addr, &tls, token.as_deref(), &stop, &found, &mut full).await;
                pause(&stop, AGAIN).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    out
}

/// One flooding connection, until the node ends it or the attack stops. The first time it
/// has [`FLOOD_STREAMS`] open, or waits for the node to allow more, it adds a permit to
/// `full` (and forgets it).
async fn flood_connection(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    token: Option<&str>,
    stop: &CancellationToken,
    found: &Arc<StreamFindings>,
    full: &mut Option<Arc<Semaphore>>,
) {
    let Ok(conn) = raw::connect(addr, &Transport::Tls(Arc::clone(tls))).await else {
        return;
    };
    let Ok(send) = raw::h2(conn, 1 << 16).await else {
        return;
    };
    found.connections.fetch_add(1, Ordering::Relaxed);
    let request = raw::grpc_request(addr, "/dynamokv.v1.Kv/Get", token);
    // Held so the streams stay open; dropped (and so reset) when the connection is given up.
    let mut held = Vec::new();
    let open = Arc::new(AtomicI64::new(0));
    loop {
        if open.load(Ordering::Relaxed) >= FLOOD_STREAMS as i64 {
            if let Some(full) = full.take() {
                full.add_permits(1);
            }
            if !pause(stop, Duration::from_millis(20)).await {
                return;
            }
            continue;
        }
        let ready = tokio::select! {
            () = stop.cancelled() => return,
            r = send.clone().ready() => r,
            // The node lets no more streams open for now: that is as full as it gets.
            () = tokio::time::sleep(Duration::from_secs(1)), if full.is_some() => {
                if let Some(full) = full.take() {
                    full.add_permits(1);
                }
                continue;
            }
        };
        let Ok(mut ready) = ready else { return };
        found
            .advertised
            .store(ready.current_max_send_streams() as u64, Ordering::Relaxed);
        let Ok((response, stream)) = ready.send_request(request.clone(), false) else {
            return;
        };
        found.opened.fetch_add(1, Ordering::Relaxed);
        found.open.up();
        open.fetch_add(1, Ordering::Relaxed);
        held.push(stream);
        let (found, open) = (Arc::clone(found), Arc::clone(&open));
        tokio::spawn(async move {
            let _ = response.await;
            found.ended.fetch_add(1, Ordering::Relaxed);
            found.open.down();
            open.fetch_sub(1, Ordering::Relaxed);
        });
        if held.len() % 256 == 0 {
            // Let the connection's task write what was queued.
            tokio::task::yield_now().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4 and 9. Connections held open: idle, or sending a byte a second

/// How a held connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Plain text: the HTTP/2 preface and SETTINGS, then nothing.
    IdlePlain,
    /// TLS without a certificate, handshake done, then nothing.
    IdleTls,
    /// Plain text: the preface, SETTINGS and an endless HEADERS frame, a byte a second.
    DribblePlain,
    /// A TLS ClientHello, a byte a second (the handshake never ends).
    DribbleHandshake,
    /// TLS without a certificate, then the preface, SETTINGS and endless HEADERS, a byte a
    /// second.
    DribbleTls,
}

/// What the held connections did.
#[derive(Debug, Default)]
pub struct HoldFindings {
    pub held: Peak,
    pub established: AtomicU64,
    /// Connections the node closed (each was made again).
    pub closed_by_node: AtomicU64,
    pub failed_to_connect: AtomicU64,
    pub bytes_dribbled: AtomicU64,
}

impl Hold {
    /// Whether setting it up takes a TLS handshake (a millisecond of CPU at each end).
    fn handshakes(self) -> bool {
        matches!(self, Hold::IdleTls | Hold::DribbleTls)
    }
}

/// `per_node` connections to every node, of the `kinds` in turn (a kind listed twice is
/// twice as common), each held as its kind says until stopped and made again whenever the
/// node closes it. At most 512 are being set up at once (the nodes' accept queues are 1,024
/// long); those that need no TLS handshake are made first, so that the cheap ones are not
/// queued behind the handshakes.
pub async fn hold_connections(
    target: Target,
    per_node: usize,
    kinds: Vec<Hold>,
    stop: CancellationToken,
    ready: CancellationToken,
) -> Arc<HoldFindings> {
    let found = Arc::new(HoldFindings::default());
    // Ready once every slot has held its connection once.
    let all = per_node * target.addrs.len();
    let made = Arc::new(AtomicU64::new(0));
    let setting_up = Arc::new(Semaphore::new(512));
    let tls = target.tls(None);
    let mut slots = tokio::task::JoinSet::new();
    let hellos: Vec<Arc<Vec<u8>>> = target
        .addrs
        .iter()
        .map(|a| Arc::new(raw::client_hello(&tls, *a)))
        .collect();
    let mut order: Vec<(usize, Hold)> =
        (0..per_node).map(|n| (n, kinds[n % kinds.len()])).collect();
    order.sort_by_key(|(n, kind)| (kind.handshakes(), *n));
    // Node by node in turn, so that every node fills at the same pace.
    for (_, kind) in order {
        for (&addr, hello) in target.addrs.iter().zip(&hellos) {
            let (stop, found, setting_up, tls, hello, ready, made) = (
                stop.clone(),
                Arc::clone(&found),
                Arc::clone(&setting_up),
                Arc::clone(&tls),
                Arc::clone(hello),
                ready.clone(),
                Arc::clone(&made),
            );
            slots.spawn(async move {
                let mut first = true;
                while !stop.is_cancelled() {
                    let permit = tokio::select! {
                        () = stop.cancelled() => return,
                        p = setting_up.acquire() => p.unwrap(),
                    };
                    let connecting = async {
                        match kind {
                            Hold::IdlePlain | Hold::DribblePlain | Hold::DribbleHandshake => {
                                raw::tcp(addr).await.map(|t| Box::new(t) as raw::Conn)
                            }
                            Hold::IdleTls | Hold::DribbleTls => {
                                raw::connect(addr, &Transport::Tls(Arc::clone(&tls))).await
                            }
                        }
                    };
                    let conn = tokio::select! {
                        () = stop.cancelled() => return,
                        c = connecting => c,
                    };
                    drop(permit);
                    let Ok(mut conn) = conn else {
                        found.failed_to_connect.fetch_add(1, Ordering::Relaxed);
                        pause(&stop, AGAIN).await;
                        continue;
                    };
                    found.established.fetch_add(1, Ordering::Relaxed);
                    found.held.up();
                    if std::mem::take(&mut first)
                        && made.fetch_add(1, Ordering::Relaxed) + 1 == all as u64
                    {
                        ready.cancel();
                    }
                    let closed = hold(&mut conn, kind, &hello, &stop, &found).await;
                    found.held.down();
                    if closed {
                        found.closed_by_node.fetch_add(1, Ordering::Relaxed);
                    }
                    pause(&stop, AGAIN).await;
                }
            });
        }
    }
    while slots.join_next().await.is_some() {}
    found
}

/// Holds `conn` as `kind` says until the node closes it (`true`) or the attack stops.
async fn hold(
    conn: &mut raw::Conn,
    kind: Hold,
    hello: &[u8],
    stop: &CancellationToken,
    found: &HoldFindings,
) -> bool {
    let every = Duration::from_secs(1);
    match kind {
        Hold::IdlePlain | Hold::IdleTls => {
            if kind == Hold::IdlePlain && conn.write_all(&raw::idle_http2_opening()).await.is_err()
            {
                return true;
            }
            // Whatever the node sends is read and dropped; the end of it is the node closing.
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    () = stop.cancelled() => return false,
                    r = conn.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return true,
                        Ok(_) => {}
                    },
                }
            }
        }
        Hold::DribblePlain | Hold::DribbleTls | Hold::DribbleHandshake => {
            let bytes = if kind == Hold::DribbleHandshake {
                hello.to_vec()
            } else {
                raw::endless_http2_opening()
            };
            // A write to a connection the node closed fails (at the latest on the next byte).
            match raw::dribble(conn, &bytes, every, stop, &found.bytes_dribbled).await {
                Err(_) => true,
                // Out of bytes (a ClientHello is a few hundred): wait for the node to close.
                Ok(()) if !stop.is_cancelled() => {
                    let mut buf = [0u8; 4096];
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return false,
                            r = conn.read(&mut buf) => match r {
                                Ok(0) | Err(_) => return true,
                                Ok(_) => {}
                            },
                        }
                    }
                }
                Ok(()) => false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Large-value read storms

/// Gets in flight at once.
pub const STORM_GETS: usize = 40;

/// What the read storm did.
#[derive(Debug, Default)]
pub struct StormFindings {
    pub answers: std::sync::Mutex<Tally>,
    pub bytes: AtomicU64,
    pub slowest_ms: AtomicU64,
}

/// [`STORM_GETS`] gets of `key` in flight at once at node `node` (which coordinates them),
/// by the attacker (granted read on its prefix), over four connections, each answer read and
/// dropped as it comes, again and again until stopped. A get that is refused is made again
/// after [`AGAIN`]: forty gets in flight is a read storm; forty refused at once and made again
/// at once would be a request flood, another scenario's business (5).
pub async fn read_storm(
    target: Target,
    node: usize,
    key: String,
    stop: CancellationToken,
) -> Arc<StormFindings> {
    let found = Arc::new(StormFindings::default());
    let message = raw::grpc_message(
        &pb::GetRequest {
            key: Some(Bytes::from(key.into_bytes())),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let addr = target.addrs[node];
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (tls, token, stop, found, message) = (
            target.tls(None),
            target.attacker_token.clone(),
            stop.clone(),
            Arc::clone(&found),
            message.clone(),
        );
        readers.spawn(async move {
            while !stop.is_cancelled() {
                let Ok(conn) = raw::connect(addr, &Transport::Tls(Arc::clone(&tls))).await else {
                    pause(&stop, AGAIN).await;
                    continue;
                };
                let Ok(send) = raw::h2(conn, 16 << 20).await else {
                    pause(&stop, AGAIN).await;
                    continue;
                };
                let mut gets = tokio::task::JoinSet::new();
                for _ in 0..STORM_GETS / 4 {
                    let (send, token, stop, found, message) = (
                        send.clone(),
                        token.clone(),
                        stop.clone(),
                        Arc::clone(&found),
                        message.clone(),
                    );
                    gets.spawn(async move {
                        while !stop.is_cancelled() {
                            let request =
                                raw::grpc_request(addr, "/dynamokv.v1.Kv/Get", Some(&token));
                            let t = Instant::now();
                            let answer = tokio::select! {
                                () = stop.cancelled() => return,
                                a = raw::call(&send, request, message.clone()) => a,
                            };
                            match answer {
                                Ok(a) => {
                                    found.bytes.fetch_add(a.body_bytes, Ordering::Relaxed);
                                    found.slowest_ms.fetch_max(
                                        t.elapsed().as_millis() as u64,
                                        Ordering::Relaxed,
                                    );
                                    let ok = a.ok();
                                    found.answers.lock().unwrap().add(if ok {
                                        "answered".to_string()
                                    } else {
                                        a.code.unwrap_or_else(|| {
                                            format!("grpc-status {:?}", a.grpc_status)
                                        })
                                    });
                                    if !ok {
                                        pause(&stop, AGAIN).await;
                                    }
                                }
                                Err(_) => return,
                            }
                        }
                    });
                }
                while gets.join_next().await.is_some() {}
                pause(&stop, AGAIN).await;
            }
        });
    }
    while readers.join_next().await.is_some() {}
    found
}
