//! Test support: in-process clusters on ephemeral ports, and `dynamokv` processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use dynamokv_common::VersionedState;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_client::ReplicaClient;
use dynamokv_server::config::{Config, Engine, MemberConfig};
use dynamokv_server::{NodeHandle, start_on};

use crate::proxy::{Mode, Proxy};

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
    /// Where each node listens.
    pub addrs: Vec<SocketAddr>,
    /// Where each node is reached: its proxy when the cluster has proxies, else `addrs`.
    pub member_addrs: Vec<SocketAddr>,
    pub proxies: Vec<Proxy>,
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
        Self::build(n, false, tweak).await
    }

    /// As [`start_with`](Self::start_with), with a [`Proxy`] in front of every node: members,
    /// clients from [`client_of`](Self::client_of) and node-to-node calls all go through it.
    pub async fn start_proxied(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        Self::build(n, true, tweak).await
    }

    async fn build(n: usize, proxied: bool, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut proxies = Vec::new();
        if proxied {
            for a in &addrs {
                let p = Proxy::start().await;
                p.point_at(*a);
                proxies.push(p);
            }
        }
        let member_addrs: Vec<SocketAddr> = if proxied {
            proxies.iter().map(|p| p.addr).collect()
        } else {
            addrs.clone()
        };
        let members: Vec<MemberConfig> = member_addrs
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
            member_addrs,
            proxies,
            configs,
            nodes,
            _dirs: dirs,
        }
    }

    /// The address clients use for node `i` (through its proxy, if any).
    pub fn seed(&self, i: usize) -> String {
        self.member_addrs[i].to_string()
    }

    /// The proxy in front of node `i` (proxied clusters only).
    pub fn proxy(&self, i: usize) -> &Proxy {
        &self.proxies[i]
    }

    /// The ids of `key`'s top-N replicas, in preference order, as the shared ring computes them.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<usize> {
        let members = self.configs[0]
            .cluster
            .members
            .iter()
            .map(|m| dynamokv_common::Member::new(m.id.clone(), m.address.clone()))
            .collect();
        let ring = dynamokv_common::Ring::new(self.configs[0].cluster.partitions, members).unwrap();
        let n = self.configs[0].quorums().unwrap().n as usize;
        ring.preference_list(key, n)
            .nodes
            .iter()
            .map(|m| m.id.trim_start_matches("node-").parse().unwrap())
            .collect()
    }

    /// A key whose top-N replicas leave out node `outside` (needs more than N nodes).
    pub fn key_not_replicated_on(&self, outside: usize, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}-{i}"))
            .find(|k| !self.replicas_of(k.as_bytes()).contains(&outside))
            .expect("some key is not replicated on the node")
    }

    /// A client that talks to node `i` only, which coordinates its requests (server-driven
    /// coordination: these tests are about what a node's coordinator does).
    pub fn client_of(&self, i: usize) -> dynamokv_client::Client {
        dynamokv_client::Client::builder([self.seed(i)])
            .coordination(dynamokv_client::Coordination::Server)
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
        let listener = if self.proxies.is_empty() {
            TcpListener::bind(self.addrs[i]).await.unwrap()
        } else {
            // Behind a proxy the node may come back on any port.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            self.addrs[i] = l.local_addr().unwrap();
            self.proxies[i].point_at(self.addrs[i]);
            l
        };
        self.nodes[i] = Some(start_on(self.configs[i].clone(), listener).await.unwrap());
    }

    /// Node `i`'s own copy of `key`, read without coordination (directly, not via its proxy).
    pub async fn local_state(&self, i: usize, key: &[u8]) -> Option<VersionedState> {
        read_local(self.addrs[i], key).await
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

/// A cluster of `n` in-process nodes serving TLS (certificates from `dynamokv_server::
/// certificates::dev_bundle` in the returned directory: `ca.pem`, `node-node-<i>.pem`,
/// `user-admin.pem`, a superuser), tweaked by `tweak`.
pub async fn secure_cluster(n: usize, tweak: impl Fn(&mut Config)) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
    dynamokv_server::certificates::dev_bundle(dir.path(), "dynamokv", &ids, &["admin".to_string()])
        .unwrap();
    let d = dir.path().to_path_buf();
    let cluster = Cluster::start_with(n, move |c| {
        c.tls = Some(dynamokv_server::config::TlsConfig {
            ca: d.join("ca.pem"),
            cert: d.join(format!("node-{}.pem", c.node_id)),
            key: d.join(format!("node-{}.key", c.node_id)),
            reload_interval_ms: 100,
        });
        c.security.superusers = vec!["admin".into()];
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await;
    (cluster, dir)
}

/// A `dynamokv serve` process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where it serves `/metrics`, when started with `metrics_listen`.
    pub metrics: Option<SocketAddr>,
}

impl Process {
    /// Starts `dynamokv serve` on an ephemeral port with its data in `dir`.
    pub fn spawn(dir: &Path, extra: &[&str]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamokv"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "solo",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra);
        Self::spawn_command(cmd)
    }

    /// Starts `dynamokv serve` with exactly `args`.
    pub fn serve(args: &[&str]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamokv"));
        cmd.arg("serve").args(args);
        Self::spawn_command(cmd)
    }

    /// Starts `dynamokv serve --config path`, its log (stderr) appended to `log`, whose end a
    /// failure to start quotes.
    pub fn spawn_with_config(path: &Path, log: &Path) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dynamokv"));
        cmd.arg("serve").arg("--config").arg(path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stderr(file);
        Self::start_reading(cmd, Some(log))
    }

    fn spawn_command(mut cmd: Command) -> Process {
        cmd.stderr(Stdio::null());
        Self::start_reading(cmd, None)
    }

    fn start_reading(mut cmd: Command, log: Option<&Path>) -> Process {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn dynamokv");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "dynamokv node ID listening on ADDR (pid P, data in DIR)[, metrics at http://ADDR/metrics]"
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let status = child.wait();
                let tail = log
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .map(|text| {
                        let lines: Vec<&str> = text.lines().collect();
                        lines[lines.len().saturating_sub(10)..].join("\n")
                    })
                    .unwrap_or_default();
                panic!("dynamokv did not start ({status:?}); first line {line:?}; log:\n{tail}")
            })
            .parse()
            .unwrap();
        let metrics = line
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(|a| a.parse().unwrap());
        Process {
            child,
            addr,
            metrics,
        }
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

/// A cluster of `dynamokv serve` processes (RocksDB) on loopback, wired through [`Proxy`]s so
/// that a node can be SIGKILLed and restarted on a new ephemeral port, and cut off from its
/// peers while clients still reach it:
///
/// - node `i`'s front proxy (`proxies[i]`) is its advertised address, the one clients use;
/// - for every other node `j`, the link proxy `link[i][j]` is how node `i` reaches node `j`:
///   node `i`'s config lists member `j` at that address (and itself at its front address).
///
/// Node ids are `node-{i}` everywhere, so every node computes the same ring (the ring depends
/// on ids and weights, not addresses). Every node serves `/metrics` on an ephemeral port.
///
/// The methods that start or stop processes block while they do; use the cluster from a
/// multi-thread runtime.
pub struct ProcCluster {
    /// Node `i`'s front proxy.
    pub proxies: Vec<Proxy>,
    /// `links[i][j]`: the proxy node `i` reaches node `j` through (`None` when `i == j`).
    links: Vec<Vec<Option<Proxy>>>,
    pub procs: Vec<Option<Process>>,
    /// Each node's data and config, removed when the cluster is dropped.
    dirs: Vec<tempfile::TempDir>,
    configs: Vec<std::path::PathBuf>,
    ring: dynamokv_common::Ring,
}

impl ProcCluster {
    /// Partitions of every `ProcCluster`'s ring.
    pub const PARTITIONS: u32 = 64;

    /// `n` nodes; `extra_toml` is appended to the top level of every node's config file, and
    /// `sections` (whole TOML sections, such as `[background]` and its keys) after the
    /// `[cluster]` section.
    pub async fn start_with_sections(n: usize, extra_toml: &str, sections: &str) -> ProcCluster {
        let mut proxies = Vec::new();
        for _ in 0..n {
            proxies.push(Proxy::start().await);
        }
        let mut links = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for j in 0..n {
                row.push(if i == j {
                    None
                } else {
                    Some(Proxy::start().await)
                });
            }
            links.push(row);
        }
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for (i, front) in proxies.iter().enumerate() {
            let members: String = (0..n)
                .map(|j| {
                    let address = links[i][j].as_ref().map_or(front.addr, |l| l.addr);
                    format!("  {{ id = \"node-{j}\", address = \"{address}\" }},\n")
                })
                .collect();
            let mut dir = tempfile::tempdir().unwrap();
            if std::env::var_os("DYNAMOKV_KEEP_TEST_NODES").is_some() {
                // For a post-mortem of a failed run: data, config and node.log stay.
                dir.disable_cleanup(true);
                eprintln!("node-{i} keeps its files in {}", dir.path().display());
            }
            let path = dir.path().join("node.toml");
            let text = format!(
                "node_id = \"node-{i}\"\nlisten = \"127.0.0.1:0\"\nadvertise = \"{}\"\n\
                 metrics_listen = \"127.0.0.1:0\"\n\
                 data_dir = \"{}\"\nreplica_timeout_ms = 1000\n{extra_toml}\n\
                 [cluster]\npartitions = {}\nmembers = [\n{members}]\n{sections}\n",
                front.addr,
                dir.path().join("data").display(),
                Self::PARTITIONS,
            );
            std::fs::write(&path, text).unwrap();
            dirs.push(dir);
            configs.push(path);
        }
        let members = (0..n)
            .map(|i| dynamokv_common::Member::new(format!("node-{i}"), proxies[i].addr.to_string()))
            .collect();
        let ring = dynamokv_common::Ring::new(Self::PARTITIONS, members).unwrap();
        let mut cluster = ProcCluster {
            proxies,
            links,
            procs: (0..n).map(|_| None).collect(),
            dirs,
            configs,
            ring,
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster
    }

    pub fn node_count(&self) -> usize {
        self.procs.len()
    }

    /// Starts node `i`'s process and points its front proxy and every link to it at it.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node-{i} is running");
        let path = &self.configs[i];
        let log = self.dirs[i].path().join("node.log");
        let p = tokio::task::block_in_place(|| Process::spawn_with_config(path, &log));
        self.proxies[i].point_at(p.addr);
        for row in &self.links {
            if let Some(link) = &row[i] {
                link.point_at(p.addr);
            }
        }
        self.procs[i] = Some(p);
    }

    /// SIGKILLs node `i` and waits for it to die.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.signal("KILL");
            tokio::task::block_in_place(|| p.wait(Duration::from_secs(10)));
        }
    }

    /// Kills node `i`, deletes its data directory and starts it again, empty.
    pub fn wipe(&mut self, i: usize) {
        self.kill(i);
        let data = self.dirs[i].path().join("data");
        std::fs::remove_dir_all(&data).unwrap();
        assert!(!data.exists());
        self.start_node(i);
    }

    /// Sends `sig` (`STOP`, `CONT`, ...) to node `i`'s process.
    pub fn signal(&self, i: usize, sig: &str) {
        self.procs[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node-{i} is not running"))
            .signal(sig);
    }

    /// Cuts node `i` off from its peers: every link from and to it holds its bytes, as a
    /// network that drops packets would. Clients still reach it through its front proxy.
    pub fn cut(&self, i: usize) {
        self.set_links_of(i, Mode::Hang);
    }

    /// Ends [`cut`](Self::cut): held bytes are delivered and links carry bytes again.
    pub fn heal(&self, i: usize) {
        self.set_links_of(i, Mode::Pass);
    }

    fn set_links_of(&self, i: usize, mode: Mode) {
        for j in 0..self.node_count() {
            for link in [&self.links[i][j], &self.links[j][i]].into_iter().flatten() {
                link.set(mode.clone());
            }
        }
    }

    /// The address clients use for node `i`: its front proxy.
    pub fn seed(&self, i: usize) -> String {
        self.proxies[i].addr.to_string()
    }

    pub fn seeds(&self) -> Vec<String> {
        (0..self.node_count()).map(|i| self.seed(i)).collect()
    }

    /// The ring every node computes.
    pub fn ring(&self) -> &dynamokv_common::Ring {
        &self.ring
    }

    /// The indexes of `key`'s top-N replicas (N = 3), in preference order.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<usize> {
        node_indexes(&self.ring.preference_list(key, 3).nodes)
    }

    /// Node `i`'s whole `/metrics` page.
    pub async fn scrape(&self, i: usize) -> String {
        let addr = self.procs[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node-{i} is not running"))
            .metrics
            .expect("the node serves metrics");
        http_get(addr, "/metrics").await.1
    }

    /// The value of `series` (name and labels) on node `i`; 0 if absent.
    pub async fn metric(&self, i: usize, series: &str) -> f64 {
        sample(&self.scrape(i).await, series)
    }

    /// As [`metric`](Self::metric), `None` if node `i` does not export the series.
    pub async fn metric_if_exported(&self, i: usize, series: &str) -> Option<f64> {
        let scrape = self.scrape(i).await;
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }
}

/// `node-{i}` ids to indexes.
pub fn node_indexes(members: &[&dynamokv_common::Member]) -> Vec<usize> {
    members
        .iter()
        .map(|m| m.id.trim_start_matches("node-").parse().unwrap())
        .collect()
}

/// A node's own copy of `key`, read without coordination.
pub async fn read_local(addr: SocketAddr, key: &[u8]) -> Option<VersionedState> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    read_local_over(channel, key).await
}

/// A node's own copy of `key`, read over `channel`.
async fn read_local_over(channel: tonic::transport::Channel, key: &[u8]) -> Option<VersionedState> {
    let mut client = ReplicaClient::new(channel).max_decoding_message_size(usize::MAX);
    let reply = client
        .read_local(pb::ReadLocalRequest {
            key: Some(Bytes::copy_from_slice(key)),
            include_hints: false,
        })
        .await
        .unwrap()
        .into_inner();
    reply.state.map(|s| VersionedState::from_proto(&s).unwrap())
}

/// A node's own copy of `key`, read over TLS with the identity `tls` presents (a node's).
pub async fn read_local_tls(
    addr: SocketAddr,
    key: &[u8],
    tls: dynamokv_proto::tls::ClientTls,
) -> Option<VersionedState> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    read_local_over(dynamokv_proto::tls::connect_lazy(&endpoint, tls), key).await
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    http_get_with(addr, path, &[]).await
}

/// A plain HTTP/1.1 GET with extra `headers`; returns the status line and the body.
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the metrics endpoint answers")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample named exactly `series` (name and labels) in a scrape, 0 if absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Scrapes node `i`'s `/metrics` (the cluster must be started with `metrics_listen`).
pub async fn scrape(cluster: &Cluster, i: usize) -> String {
    let addr = cluster.nodes[i]
        .as_ref()
        .and_then(|n| n.metrics_addr)
        .expect("the node serves metrics");
    http_get(addr, "/metrics").await.1
}
