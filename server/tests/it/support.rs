//! Test support: in-process clusters on ephemeral ports, and `dynamokv` processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;

use dynamokv_common::VersionedState;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_client::ReplicaClient;
use dynamokv_server::config::{Config, Engine, MemberConfig};
use dynamokv_server::{NodeHandle, start_on};

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster of in-process nodes. Node `i` is `node-i`.
pub struct Cluster {
    pub addrs: Vec<SocketAddr>,
    pub configs: Vec<Config>,
    pub nodes: Vec<Option<NodeHandle>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` nodes with N=min(3,n), R=W=2 defaults, on RocksDB in temporary directories
    /// (so a stopped node restarts with its data).
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let members: Vec<MemberConfig> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| MemberConfig {
                id: format!("node-{i}"),
                address: a.to_string(),
                zone: String::new(),
                weight: 1,
            })
            .collect();
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut c = Config {
                node_id: format!("node-{i}"),
                listen: *addr,
                data_dir: dir.path().to_path_buf(),
                engine: Engine::Rocksdb,
                replica_timeout_ms: 1_000,
                ..Config::default()
            };
            c.cluster.members = members.clone();
            c.cluster.partitions = 64;
            tweak(&mut c);
            configs.push(c);
            dirs.push(dir);
        }
        let mut nodes = Vec::new();
        for (c, l) in configs.iter().zip(listeners) {
            nodes.push(Some(start_on(c.clone(), l).await.unwrap()));
        }
        Cluster {
            addrs,
            configs,
            nodes,
            _dirs: dirs,
        }
    }

    pub fn seed(&self, i: usize) -> String {
        self.addrs[i].to_string()
    }

    /// A client that talks to node `i` only.
    pub fn client_of(&self, i: usize) -> dynamokv_client::Client {
        dynamokv_client::Client::builder([self.seed(i)])
            .max_retries(0)
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop().await.unwrap();
        }
    }

    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node-{i} is running");
        let listener = TcpListener::bind(self.addrs[i]).await.unwrap();
        self.nodes[i] = Some(start_on(self.configs[i].clone(), listener).await.unwrap());
    }

    /// Node `i`'s own copy of `key`, read without coordination.
    pub async fn local_state(&self, i: usize, key: &[u8]) -> Option<VersionedState> {
        let mut client = ReplicaClient::connect(format!("http://{}", self.addrs[i]))
            .await
            .unwrap();
        let reply = client
            .read_local(pb::ReadLocalRequest {
                key: Some(Bytes::copy_from_slice(key)),
            })
            .await
            .unwrap()
            .into_inner();
        reply.state.map(|s| VersionedState::from_proto(&s).unwrap())
    }

    pub async fn local_values(&self, i: usize, key: &[u8]) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self
            .local_state(i, key)
            .await
            .map(|s| s.live_values().into_iter().map(|b| b.to_vec()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// A `dynamokv serve` process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `dynamokv serve` on an ephemeral port with its data in `dir`.
    pub fn spawn(dir: &Path, extra: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynamokv"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--node-id",
                "solo",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dynamokv");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Process { child, addr }
    }

    pub fn seed(&self) -> String {
        self.addr.to_string()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, with a deadline.
    pub fn wait(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
