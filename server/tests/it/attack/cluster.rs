//! The cluster every attack scenario runs against: three `dynamokv serve` processes on
//! loopback with TLS (certificates from `certificates::dev_bundle`), access control, and the
//! node settings' defaults; its users; and what the judge needs of it afterwards (each
//! process's peak memory, a clean restart of every node, per-replica debug reads).
//!
//! Unlike [`crate::support::ProcCluster`] there are no proxies in front of the nodes:
//! clients, attackers and nodes talk to each other directly, so nothing in this test process
//! sits on the path the attacks load (a 24 MiB read crossing a proxy would measure the
//! proxy). Each node listens on a port the kernel chose (bind port 0, read it, release it);
//! a restarted node binds the same port again (tokio sets `SO_REUSEADDR`), so its peers and
//! clients find it where they left it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use dynamokv_proto::tls::{ClientTls, client_config};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::admin_client::AdminClient;
use dynamokv_proto::v1::replica_client::ReplicaClient;
use dynamokv_server::certificates;

/// The cluster's name, in every certificate.
pub const CLUSTER: &str = "dynamokv";
/// Nodes serving; with N = 3 each replicates every key.
pub const NODES: usize = 3;
/// The legitimate user's keys (it may read and write them).
pub const LEGIT_PREFIX: &str = "legit:";
/// The attacker's keys: it may write them, and nothing else.
pub const ATTACKER_PREFIX: &str = "evil:";
/// The superuser (`security.superusers`), by certificate.
pub const SUPERUSER: &str = "admin";
pub const LEGIT_USER: &str = "legit";
pub const ATTACKER_USER: &str = "attacker";

/// How long a node gets to print its "listening" line.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a node gets to exit after SIGTERM (it drains for twice the replica timeout, 4 s
/// by default, then flushes).
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a restarted node gets to serve a write it coordinates.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);

/// What a scenario needs of the cluster beyond the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Configure a fourth member, `node-3`, that never runs, and remove it (`admin remove`,
    /// plan, commit) before anything else: the ring then has three members and a removed one,
    /// whose certificate the cluster's CA did sign.
    pub removed_member: bool,
}

/// One `dynamokv serve` process and what it needs to start again.
#[derive(Debug)]
struct Node {
    id: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Where the running process serves `/metrics`.
    metrics: Option<SocketAddr>,
}

/// A secure cluster of `dynamokv serve` processes (see the module doc). Dropping it kills the
/// processes and deletes their data and certificates.
#[derive(Debug)]
pub struct SecureCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// The legitimate user's token (it also has a certificate, `user-legit.pem`).
    pub legit_token: String,
    /// The attacker's token.
    pub attacker_token: String,
    /// The removed member's id, with [`Options::removed_member`].
    pub removed: Option<String>,
}

/// A free loopback port, chosen by the kernel.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The last lines of a node's log (colours removed), for failures.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape sequence: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let lines: Vec<&str> = plain.lines().collect();
    lines[lines.len().saturating_sub(4)..].join("\n    ")
}

/// Starts `dynamokv serve --config config` and waits for its "listening" line; the process
/// and where it serves its metrics, or why it did not start (with the end of its log).
fn spawn(config: &Path, log: &Path) -> Result<(Child, Option<SocketAddr>), String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynamokv"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot run dynamokv: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START_DEADLINE).unwrap_or_default();
    if line.contains("listening on ") {
        // "... listening on ADDR (pid P, data in DIR), metrics at http://ADDR/metrics"
        let metrics = line
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        return Ok((child, metrics));
    }
    let _ = child.kill();
    let status = child.wait();
    Err(format!(
        "it did not start ({status:?}); its log ends:\n    {}",
        log_tail(log)
    ))
}

/// Sends `sig` to process `pid`.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Adds `problem` to what went wrong in `outcome`.
fn also(outcome: &mut Result<(), String>, problem: String) {
    *outcome = Err(match outcome {
        Ok(()) => problem,
        Err(before) => format!("{before}; {problem}"),
    });
}

/// Polls `f` until it answers `Ok`, or `deadline` passes: the last error then.
async fn retry<T, F, Fut>(deadline: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl SecureCluster {
    /// Starts the cluster and creates its users: `legit` (a token and a certificate; read and
    /// write on [`LEGIT_PREFIX`]) and `attacker` (a token; write on [`ATTACKER_PREFIX`]).
    pub async fn start(options: Options) -> SecureCluster {
        let dir = tempfile::tempdir().unwrap();
        let members = NODES + usize::from(options.removed_member);
        let ids: Vec<String> = (0..members).map(|i| format!("node-{i}")).collect();
        let users = [SUPERUSER, LEGIT_USER, ATTACKER_USER].map(String::from);
        let certs = dir.path().join("certs");
        certificates::dev_bundle(&certs, CLUSTER, &ids, &users).unwrap();
        // node-3, when configured, never listens: its port is only a name in the member list.
        let ports: Vec<u16> = (0..members).map(|_| free_port()).collect();
        let member_list: String = ids
            .iter()
            .zip(&ports)
            .map(|(id, port)| format!("  {{ id = \"{id}\", address = \"127.0.0.1:{port}\" }},\n"))
            .collect();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate().take(NODES) {
            let config = dir.path().join(format!("{id}.toml"));
            // Default settings but for what a test cluster must say: who it is, where it
            // listens (and serves its metrics), the static member list, its certificates, its
            // superuser.
            let text = format!(
                "node_id = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\
                 metrics_listen = \"127.0.0.1:0\"\n\n\
                 [cluster]\nname = \"{CLUSTER}\"\nmembers = [\n{member_list}]\n\n\
                 [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
                 [security]\nsuperusers = [\"{SUPERUSER}\"]\n",
                port = ports[i],
                data = dir.path().join(id).display(),
                ca = certs.join("ca.pem").display(),
                cert = certs.join(format!("node-{id}.pem")).display(),
                key = certs.join(format!("node-{id}.key")).display(),
            );
            std::fs::write(&config, text).unwrap();
            nodes.push(Node {
                id: id.clone(),
                port: ports[i],
                log: dir.path().join(format!("{id}.log")),
                config,
                child: None,
                metrics: None,
            });
        }
        let mut cluster = SecureCluster {
            dir,
            nodes,
            legit_token: String::new(),
            attacker_token: String::new(),
            removed: None,
        };
        for i in 0..NODES {
            let node = &mut cluster.nodes[i];
            let (child, metrics) = tokio::task::block_in_place(|| spawn(&node.config, &node.log))
                .unwrap_or_else(|e| panic!("{} did not start: {e}", node.id));
            node.child = Some(child);
            node.metrics = metrics;
        }
        if options.removed_member {
            cluster.remove(&ids[NODES]).await;
            cluster.removed = Some(ids[NODES].clone());
        }
        cluster.legit_token = cluster
            .add_user(LEGIT_USER, LEGIT_PREFIX, &["read", "write"])
            .await;
        cluster.attacker_token = cluster
            .add_user(ATTACKER_USER, ATTACKER_PREFIX, &["write"])
            .await;
        cluster
    }

    /// Where node `i` listens.
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.nodes[i].port))
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        (0..NODES).map(|i| self.addr(i)).collect()
    }

    pub fn seeds(&self) -> Vec<String> {
        self.addrs().iter().map(ToString::to_string).collect()
    }

    /// The directory of the certificates (`ca.pem`, `ca.key`, `node-node-<i>.pem`,
    /// `user-<name>.pem`, and their keys).
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// A file of the certificate directory, as a string (what client options take).
    pub fn cert_path(&self, name: &str) -> String {
        self.certs().join(name).display().to_string()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs().join("ca.pem")).unwrap()
    }

    /// A TLS client configuration trusting the cluster's CA and presenting the certificate
    /// `<stem>.pem` of the certificate directory (`node-node-0`, `user-admin`), or none.
    pub fn tls(&self, stem: Option<&str>) -> Arc<rustls::ClientConfig> {
        let read = |name: String| std::fs::read(self.certs().join(name)).unwrap();
        let identity = stem.map(|s| (read(format!("{s}.pem")), read(format!("{s}.key"))));
        Arc::new(
            client_config(
                &self.ca_pem(),
                identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )
            .unwrap(),
        )
    }

    /// A lazily connecting channel to node `i` over TLS with `tls`.
    pub fn channel(&self, i: usize, tls: &Arc<rustls::ClientConfig>) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr(i))).unwrap();
        dynamokv_proto::tls::connect_lazy(&endpoint, ClientTls::new((**tls).clone()))
    }

    /// The operator service of node `i`, as the superuser.
    pub fn admin(&self, i: usize) -> AdminClient<Channel> {
        AdminClient::new(self.channel(i, &self.tls(Some(&format!("user-{SUPERUSER}")))))
    }

    /// The node-to-node service of node `i`, as node-0 (a member): the debug read.
    pub fn replica(&self, i: usize) -> ReplicaClient<Channel> {
        ReplicaClient::new(self.channel(i, &self.tls(Some("node-node-0"))))
            .max_decoding_message_size(usize::MAX)
    }

    /// A client of node `i` alone, as the superuser, which that node coordinates for.
    pub fn superuser_client(&self, i: usize) -> dynamokv_client::Client {
        dynamokv_client::Client::builder([self.addr(i).to_string()])
            .coordination(dynamokv_client::Coordination::Server)
            .ca_cert(self.cert_path("ca.pem"))
            .client_cert(self.cert_path(&format!("user-{SUPERUSER}.pem")))
            .client_key(self.cert_path(&format!("user-{SUPERUSER}.key")))
            .build()
            .unwrap()
    }

    /// Creates user `name` with a token, granted `permissions` on `prefix`; its token.
    async fn add_user(&self, name: &str, prefix: &str, permissions: &[&str]) -> String {
        let token = retry(Duration::from_secs(30), || async {
            let reply = self
                .admin(0)
                .user_add(pb::UserAddRequest {
                    name: name.into(),
                    token: true,
                })
                .await
                .map_err(|s| s.to_string())?;
            Ok(reply.into_inner().token)
        })
        .await
        .unwrap_or_else(|e| panic!("cannot add user {name}: {e}"));
        self.grant(name, prefix, permissions).await;
        token
    }

    /// Grants `permissions` on `prefix` to `user`.
    pub async fn grant(&self, user: &str, prefix: &str, permissions: &[&str]) {
        retry(Duration::from_secs(30), || async {
            self.admin(1)
                .grant(pb::GrantRequest {
                    user: user.into(),
                    prefix: prefix.into(),
                    permissions: permissions.iter().map(ToString::to_string).collect(),
                })
                .await
                .map(drop)
                .map_err(|s| s.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("cannot grant {permissions:?} on {prefix:?} to {user}: {e}"));
    }

    /// The ids of `user`'s tokens, as the superuser lists them.
    pub async fn token_ids(&self, user: &str) -> Result<Vec<String>, String> {
        let users = self
            .admin(2)
            .user_list(pb::UserListRequest {})
            .await
            .map_err(|s| s.to_string())?
            .into_inner()
            .users;
        Ok(users
            .into_iter()
            .find(|u| u.name == user)
            .map(|u| u.token_ids)
            .unwrap_or_default())
    }

    /// Stages the removal of member `id` (which never ran), commits it, and waits until every
    /// node routes by the new ring with nothing left to hand over.
    async fn remove(&self, id: &str) {
        retry(Duration::from_secs(30), || async {
            self.admin(0)
                .remove(pb::RemoveRequest { node_id: id.into() })
                .await
                .map(drop)
                .map_err(|s| s.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("cannot stage the removal of {id}: {e}"));
        let version = retry(Duration::from_secs(30), || async {
            let plan = self
                .admin(0)
                .plan(pb::PlanRequest {})
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            if !plan.blocked.is_empty() {
                return Err(format!("plan blocked: {}", plan.blocked));
            }
            let commit = self
                .admin(0)
                .commit(pb::CommitRequest {
                    ring_version: plan.ring_version,
                })
                .await
                .map_err(|s| s.to_string())?;
            Ok(commit.into_inner().ring_version)
        })
        .await
        .unwrap_or_else(|e| panic!("cannot commit the removal of {id}: {e}"));
        for i in 0..NODES {
            retry(Duration::from_secs(60), || async {
                let s = self
                    .admin(i)
                    .status(pb::StatusRequest {})
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner();
                let removed = s.members.iter().any(|m| m.id == id && m.status == "removed");
                if s.ring_version >= version
                    && removed
                    && !s.handover
                    && s.transfers_pending == 0
                    && s.partitions_to_drop == 0
                {
                    Ok(())
                } else {
                    Err(format!(
                        "node-{i}: ring v{} (want v{version}), {id} removed: {removed}, handover {}, {} transfers pending, {} partitions to drop",
                        s.ring_version, s.handover, s.transfers_pending, s.partitions_to_drop
                    ))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("the removal of {id} did not settle: {e}"));
        }
    }

    /// Each node's actor now (`Replica.Ping`, as a node).
    pub async fn actors(&self) -> Vec<Result<u64, String>> {
        let mut actors = Vec::new();
        for i in 0..NODES {
            actors.push(
                self.replica(i)
                    .ping(pb::PingRequest {})
                    .await
                    .map(|r| r.into_inner().actor)
                    .map_err(|s| s.to_string()),
            );
        }
        actors
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmHWM`, `VmRSS`).
    fn status_kib(&self, i: usize, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid(i)?)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Node `i`'s resident memory now (`VmRSS`), in MiB.
    pub fn rss_mib(&self, i: usize) -> Option<u64> {
        self.status_kib(i, "VmRSS").map(|k| k.div_ceil(1024))
    }

    /// The sum of node `i`'s samples of metric `name` (all label sets) whose labels contain
    /// `labels`; `None` if the node is not running.
    pub async fn metric(&self, i: usize, name: &str, labels: &str) -> Option<f64> {
        let addr = self.nodes[i].metrics.filter(|_| self.running(i))?;
        let (_, page) = crate::support::http_get(addr, "/metrics").await;
        Some(
            page.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|s| s.contains(labels))
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Node `i`'s peak resident memory since it started (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self, i: usize) -> Option<u64> {
        self.status_kib(i, "VmHWM").map(|k| k.div_ceil(1024))
    }

    /// Node `i`'s soft limit of open files.
    pub fn open_files_limit(&self, i: usize) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/limits", self.pid(i)?)).ok()?;
        text.lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()
    }

    /// Restarts every node: SIGTERM to all, each must exit cleanly within [`STOP_DEADLINE`],
    /// start again on its port and coordinate a write and a read within [`SERVE_DEADLINE`].
    /// For each node, `Ok` or what went wrong.
    pub async fn restart_all(&mut self) -> Vec<Result<(), String>> {
        let mut outcome: Vec<Result<(), String>> = vec![Ok(()); NODES];
        for node in &self.nodes {
            if let Some(child) = &node.child {
                signal(child.id(), "TERM");
            }
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(mut child) = node.child.take() else {
                outcome[i] = Err("was not running".into());
                continue;
            };
            let end = Instant::now() + STOP_DEADLINE;
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= end {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => {
                    outcome[i] = Err(format!(
                        "exited with {s} after SIGTERM; its log ends:\n    {}",
                        log_tail(&node.log)
                    ));
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    outcome[i] = Err(format!(
                        "did not exit within {STOP_DEADLINE:?} of SIGTERM (killed)"
                    ));
                }
            }
        }
        for (node, outcome) in self.nodes.iter_mut().zip(outcome.iter_mut()) {
            // The port is free once the old process has exited; should its sockets still be
            // going away, the bind is tried again for a few seconds (any other failure to
            // start is final).
            let end = Instant::now() + Duration::from_secs(5);
            let started = loop {
                match tokio::task::block_in_place(|| spawn(&node.config, &node.log)) {
                    Err(e) if e.contains("cannot listen") && Instant::now() < end => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other,
                }
            };
            match started {
                Ok((child, metrics)) => {
                    node.child = Some(child);
                    node.metrics = metrics;
                }
                Err(e) => also(outcome, format!("did not start again: {e}")),
            }
        }
        for (i, outcome) in outcome.iter_mut().enumerate() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            let client = self.superuser_client(i);
            let key = format!("restart-check:{i}");
            let served = retry(SERVE_DEADLINE, || async {
                client
                    .put(&key, b"up".to_vec(), None)
                    .await
                    .map_err(|e| format!("put: {e}"))?;
                let got = client.get(&key).await.map_err(|e| format!("get: {e}"))?;
                if got.values.iter().any(|v| v == b"up") {
                    Ok(())
                } else {
                    Err(format!("get showed {:?}", got.values))
                }
            })
            .await;
            if let Err(e) = served {
                also(
                    outcome,
                    format!(
                        "restarted but does not serve ({e}); its log ends:\n    {}",
                        log_tail(&self.nodes[i].log)
                    ),
                );
            }
        }
        outcome
    }

    /// Whether node `i` is running.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }
}

impl Drop for SecureCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
