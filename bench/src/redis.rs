//! Redis as a reference: one primary and two replicas from the Debian package, on loopback.
//!
//! The setup mirrors a DynamoKV write at W=2: `SET` on the primary followed by `WAIT 1 0`,
//! which returns once one replica has acknowledged the write (primary + 1 = 2 copies). A read
//! is a `GET` on the primary. Every instance logs writes to an append-only file that is
//! fsynced in the background (`appendfsync everysec`), as close as Redis gets to RocksDB's
//! write-ahead log without an fsync per write; RDB snapshots are off so no fork interferes.
//!
//! The client is a small hand-written RESP client rather than the `redis` crate: the bench
//! needs five commands, one request in flight per connection (like `redis-benchmark -c`), and
//! `TCP_NODELAY` under its own control; a library's multiplexing and reconnection layers would
//! add queueing of their own to what is meant to be Redis's floor, and a large dependency tree
//! to the build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::process::{ChildGuard, apt_install, free_ports, which};

/// Deadline for one Redis operation (`WAIT 1 0` would otherwise block forever).
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// `redis-server`, installed with apt-get if missing; `Err` says why Redis is skipped.
pub fn ensure_installed() -> Result<PathBuf> {
    if let Some(path) = which("redis-server") {
        return Ok(path);
    }
    println!("redis-server is missing; installing the Debian package redis-server");
    apt_install(&["redis-server"])?;
    which("redis-server").context("redis-server is still missing after apt-get install")
}

/// The three Redis processes; dropping this kills them and deletes their files.
#[derive(Debug)]
pub struct RedisSet {
    processes: Vec<ChildGuard>,
    pub primary: String,
    _dir: tempfile::TempDir,
}

impl RedisSet {
    /// Starts a primary and two replicas on free ports and waits until both replicas are in
    /// sync.
    pub async fn start(binary: &Path, parent: &Path) -> Result<RedisSet> {
        let dir = tempfile::Builder::new()
            .prefix("dynamokv-bench-redis-")
            .tempdir_in(parent)?;
        let ports = free_ports(3)?;
        let primary = format!("127.0.0.1:{}", ports[0]);
        let mut processes = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let data = dir.path().join(format!("redis-{port}"));
            std::fs::create_dir_all(&data)?;
            let log = data.join("redis.log");
            let mut command = Command::new(binary);
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                ])
                .args(["--daemonize", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&data)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if i > 0 {
                command.args(["--replicaof", "127.0.0.1", &ports[0].to_string()]);
            }
            let role = if i == 0 { "primary" } else { "replica" };
            let mut guard =
                ChildGuard::spawn(&format!("redis {role} :{port}"), &mut command, Some(log))?;
            let address = format!("127.0.0.1:{port}");
            guard
                .wait_ready(Duration::from_secs(20), || {
                    let address = address.clone();
                    async move {
                        Conn::connect(&address).await?.simple(&[b"PING"]).await?;
                        Ok(())
                    }
                })
                .await?;
            processes.push(guard);
        }
        let primary_address = primary.clone();
        processes[0]
            .wait_ready(Duration::from_secs(30), || {
                let primary = primary_address.clone();
                async move {
                    let info = Conn::connect(&primary)
                        .await?
                        .bulk(&[b"INFO", b"replication"])
                        .await?
                        .unwrap_or_default();
                    let online = String::from_utf8_lossy(&info)
                        .matches("state=online")
                        .count();
                    if online < 2 {
                        bail!("{online} of 2 replicas in sync");
                    }
                    Ok(())
                }
            })
            .await?;
        Ok(RedisSet {
            processes,
            primary,
            _dir: dir,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(ChildGuard::pid).collect()
    }
}

/// One connection, one request at a time.
#[derive(Debug)]
struct Conn {
    stream: BufStream<TcpStream>,
    out: Vec<u8>,
}

/// A RESP reply of the kinds the bench's commands return.
#[derive(Debug)]
enum Reply {
    Simple(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

impl Conn {
    async fn connect(address: &str) -> Result<Conn> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to redis at {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufStream::new(stream),
            out: Vec::with_capacity(256),
        })
    }

    /// Appends a command to the output buffer (RESP array of bulk strings).
    fn push(&mut self, args: &[&[u8]]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            self.out
                .extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.out.extend_from_slice(arg);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    /// Sends everything pushed so far in one write.
    async fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        Ok(())
    }

    async fn read(&mut self) -> Result<Reply> {
        let mut line = Vec::with_capacity(64);
        if self.stream.read_until(b'\n', &mut line).await? == 0 {
            bail!("redis closed the connection");
        }
        let text = String::from_utf8_lossy(line.strip_suffix(b"\r\n").unwrap_or(&line));
        let (kind, rest) = text.split_at_checked(1).context("empty redis reply")?;
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => bail!("redis error: {rest}"),
            ":" => Ok(Reply::Integer(rest.parse()?)),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut body = vec![0; usize::try_from(len)? + 2];
                self.stream.read_exact(&mut body).await?;
                body.truncate(body.len() - 2);
                Ok(Reply::Bulk(Some(body)))
            }
            other => bail!("unexpected redis reply type {other:?}"),
        }
    }

    /// One command expecting a simple-string reply.
    async fn simple(&mut self, args: &[&[u8]]) -> Result<String> {
        self.push(args);
        self.flush().await?;
        match self.read().await? {
            Reply::Simple(s) => Ok(s),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// One command expecting a bulk reply.
    async fn bulk(&mut self, args: &[&[u8]]) -> Result<Option<Vec<u8>>> {
        self.push(args);
        self.flush().await?;
        match self.read().await? {
            Reply::Bulk(b) => Ok(b),
            other => bail!("unexpected reply {other:?}"),
        }
    }
}

/// Connections to the primary, checked out one per operation, so closed-loop workers and
/// open-loop requests alike each have a connection of their own.
#[derive(Debug)]
pub struct Pool {
    address: String,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// A pool for `address` with `warm` connections opened ahead of time.
    pub async fn new(address: &str, warm: usize) -> Result<Pool> {
        let mut idle = Vec::with_capacity(warm);
        for _ in 0..warm {
            idle.push(Conn::connect(address).await?);
        }
        Ok(Pool {
            address: address.to_string(),
            idle: Mutex::new(idle),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a pooled connection under [`OP_TIMEOUT`]; a connection that failed is
    /// dropped rather than returned.
    async fn with_conn<T>(&self, f: impl AsyncFnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let conn = self.idle().pop();
        let mut conn = match conn {
            Some(c) => c,
            None => Conn::connect(&self.address).await?,
        };
        let result = tokio::time::timeout(OP_TIMEOUT, f(&mut conn))
            .await
            .context("redis operation timed out")??;
        self.idle().push(conn);
        Ok(result)
    }

    /// `GET key`; an error if the key is missing.
    pub async fn get(&self, key: &str) -> Result<()> {
        let value = self
            .with_conn(async |c| c.bulk(&[b"GET", key.as_bytes()]).await)
            .await?;
        value.with_context(|| format!("redis: {key} missing"))?;
        Ok(())
    }

    /// `SET key value`, then `WAIT 1 0` (one replica has it), pipelined in one write: Redis
    /// runs a connection's commands in order, so WAIT covers the SET.
    pub async fn set_wait(&self, key: &str, value: &[u8]) -> Result<()> {
        self.with_conn(async |c| {
            c.push(&[b"SET", key.as_bytes(), value]);
            c.push(&[b"WAIT", b"1", b"0"]);
            c.flush().await?;
            match c.read().await? {
                Reply::Simple(s) if s == "OK" => {}
                other => bail!("SET answered {other:?}"),
            }
            match c.read().await? {
                Reply::Integer(n) if n >= 1 => Ok(()),
                other => bail!("WAIT answered {other:?}"),
            }
        })
        .await
    }

    /// `SET key value` without waiting for replicas, for preloading.
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.with_conn(async |c| {
            c.simple(&[b"SET", key.as_bytes(), value]).await?;
            Ok(())
        })
        .await
    }
}
