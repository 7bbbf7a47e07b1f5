//! The floors: what no DynamoKV operation can beat on this machine.
//!
//! * The one-hop floor: a bare tonic unary call to another process, carrying a payload of the
//!   values' size both ways. The server is this binary re-executed with the hidden
//!   `floor-server` subcommand, on the same tonic stack and runtime kind as a node, and with
//!   `TCP_NODELAY` on both ends as the DynamoKV client and nodes use. A get is at least one
//!   such hop (client to coordinator) plus a hop to the other replicas in parallel, so its
//!   p50 is read as a multiple of this one.
//! * The storage floor: RocksDB puts and gets through the server's own engine
//!   ([`RocksStorage`], same options, write-ahead log on, no fsync per write), on one thread.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use dynamokv_server::storage::{RocksStorage, Storage, storage_key};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::process::{ChildGuard, free_ports};

/// The generated echo service.
#[allow(clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("dynamokv.bench.v1");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};

#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(
        &self,
        request: Request<pb::EchoMessage>,
    ) -> Result<Response<pb::EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// The hidden `floor-server` subcommand: serves the echo service on `port` until its standard
/// input closes (so it never outlives the bench, even one killed with SIGKILL).
pub async fn serve(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A plain thread watches stdin (tokio's stdin needs a feature the workspace leaves off).
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let stdin_closed = async {
        let _ = closed_rx.await;
    };
    // `serve_with_shutdown(addr)`, not `serve_with_incoming*`: only the former applies
    // `tcp_nodelay` to accepted connections.
    Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServer::new(EchoService))
        .serve_with_shutdown(addr, stdin_closed)
        .await
        .with_context(|| format!("echo server on {addr}"))
}

/// The echo server process and a client connected to it.
#[derive(Debug)]
pub struct EchoFloor {
    server: ChildGuard,
    pub client: EchoClient<Channel>,
}

impl EchoFloor {
    /// Starts `floor-server` (this binary again) on a free port and waits until it answers.
    pub async fn start() -> Result<EchoFloor> {
        let port = free_ports(1)?[0];
        let exe = std::env::current_exe().context("cannot find the bench binary")?;
        let mut command = Command::new(exe);
        command
            .args(["floor-server", "--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut server = ChildGuard::spawn("the echo floor server", &mut command, None)?;
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let client = EchoClient::new(channel);
        server
            .wait_ready(Duration::from_secs(20), || {
                let mut client = client.clone();
                async move {
                    client.echo(pb::EchoMessage::default()).await?;
                    Ok(())
                }
            })
            .await?;
        Ok(EchoFloor { server, client })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// One echo call carrying `payload`.
    pub async fn call(client: &EchoClient<Channel>, payload: Bytes) -> Result<()> {
        let reply = client
            .clone()
            .echo(pb::EchoMessage { payload })
            .await?
            .into_inner();
        std::hint::black_box(reply);
        Ok(())
    }
}

/// The server's RocksDB engine in a temporary directory, with `keys` preloaded.
#[derive(Debug)]
pub struct RocksFloor {
    store: RocksStorage,
    _dir: tempfile::TempDir,
}

impl RocksFloor {
    pub fn open(parent: &Path, keys: usize, value: &[u8]) -> Result<RocksFloor> {
        let dir = tempfile::Builder::new()
            .prefix("dynamokv-bench-rocksdb-")
            .tempdir_in(parent)?;
        let store = RocksStorage::open(dir.path(), false)?;
        for i in 0..keys {
            store.put_raw(&storage_key(crate::cases::key(i).as_bytes()), value)?;
        }
        Ok(RocksFloor { store, _dir: dir })
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        Ok(self.store.put_raw(&storage_key(key.as_bytes()), value)?)
    }

    pub fn get(&self, key: &str) -> Result<()> {
        let value = self
            .store
            .get_raw(&storage_key(key.as_bytes()))?
            .with_context(|| format!("rocksdb floor: {key} missing"))?;
        std::hint::black_box(value);
        Ok(())
    }
}
