//! A local DynamoKV cluster of real `dynamokv serve` processes, and its preloading.
//!
//! The bench writes one config file per node (static `[cluster] members`, RocksDB engine, the
//! write-ahead log on and no fsync per write: the server's defaults) into a temporary
//! directory, starts one process per node on free loopback ports, and waits until every node
//! answers a cluster-info call. The processes are children of the bench, so their CPU time can
//! be told apart from the rest of the machine's (see [`crate::noise`]), and they are killed
//! when the [`Cluster`] is dropped.
//!
//! [`ClusterSpec`] takes extra TOML lines, top-level and in `[cluster]`, so that variants
//! (a durability setting, say) are one more spec rather than new launcher code.
//!
//! A *baseline* cluster runs another (older) `dynamokv` binary, whose config parser rejects
//! keys it does not know. Its spec is [`ClusterSpec::minimal`]: the config then holds only
//! `node_id`, `listen`, `data_dir` and `[cluster]` `name`, `partitions` and `members`, keys every
//! build knows, and the build's defaults do the rest (N=3 R=2 W=2 for a cluster with members,
//! which [`Cluster::start`] checks through a cluster-info call). The partition count is written
//! for every cluster, this build's default, so a baseline with another default is still
//! compared like for like.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use dynamokv_client::{Client, Coordination};
use futures::StreamExt;

use crate::process::{ChildGuard, free_ports};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub n: u32,
    pub r: u32,
    pub w: u32,
    /// Extra top-level lines of every node's config, e.g. `sync_writes = true`.
    pub node_lines: Vec<String>,
    /// Extra lines in every node's `[cluster]` table.
    pub cluster_lines: Vec<String>,
    /// Q, written to every config (this build's default unless changed).
    pub partitions: u32,
    /// Write only the keys every build knows (see the module docs); then `n`, `r`, `w` must be
    /// the defaults 3, 2, 2 and there may be no extra lines.
    pub minimal: bool,
    /// Serve TLS: a development CA and certificates are made in the cluster's directory, and
    /// clients present the certificate of user `bench`, a superuser.
    pub tls: bool,
}

impl Default for ClusterSpec {
    /// Three nodes, N=3 R=2 W=2.
    fn default() -> Self {
        ClusterSpec {
            nodes: 3,
            n: 3,
            r: 2,
            w: 2,
            node_lines: Vec::new(),
            cluster_lines: Vec::new(),
            partitions: dynamokv_server::config::ClusterConfig::default().partitions,
            minimal: false,
            tls: false,
        }
    }
}

/// A running cluster; dropping it kills the nodes and deletes their data.
#[derive(Debug)]
pub struct Cluster {
    // Field order matters: the processes are killed before their directory is removed.
    nodes: Vec<ChildGuard>,
    seeds: Vec<String>,
    /// CA, client certificate and key, when the cluster serves TLS.
    tls: Option<[String; 3]>,
    _dir: tempfile::TempDir,
}

/// The user whose certificate the bench's clients present to a TLS cluster.
const TLS_USER: &str = "bench";

/// The `dynamokv` binary: `$DYNAMOKV_BIN` (the Makefile sets it), else
/// `$CARGO_TARGET_DIR/release/dynamokv`, else next to this binary.
pub fn find_binary() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("DYNAMOKV_BIN") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("dynamokv"));
    }
    if let Some(dir) = std::env::current_exe()?.parent() {
        candidates.push(dir.join("dynamokv"));
    }
    candidates.into_iter().find(|p| p.is_file()).context(
        "cannot find the dynamokv binary: set DYNAMOKV_BIN or run \
         `cargo build --release -p dynamokv-server --bins` (make bench does both)",
    )
}

impl ClusterSpec {
    /// Three nodes, N=3 R=2 W=2, with the config every build understands (for a baseline
    /// binary).
    pub fn minimal() -> Self {
        ClusterSpec {
            minimal: true,
            ..ClusterSpec::default()
        }
    }

    /// An error if a minimal spec asks for something only a full config can say.
    fn check(&self) -> Result<()> {
        let plain = self.node_lines.is_empty()
            && self.cluster_lines.is_empty()
            && !self.tls
            && (self.n, self.r, self.w) == (3, 2, 2);
        if self.minimal && !plain {
            bail!(
                "a minimal cluster config (for a baseline binary) takes neither extra lines nor \
                 an N, R, W other than 3, 2, 2"
            );
        }
        Ok(())
    }

    /// The config file of member `i` of `members` (id, address), data under `data_dir`.
    fn config(&self, i: usize, members: &[(String, String)], data_dir: &Path) -> String {
        let mut toml = format!(
            "# Written by dynamokv-bench.\nnode_id = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\n",
            members[i].0,
            members[i].1,
            data_dir.display()
        );
        if !self.minimal {
            toml.push_str("engine = \"rocksdb\"\n");
        }
        for line in &self.node_lines {
            toml.push_str(line);
            toml.push('\n');
        }
        toml.push_str(&format!(
            "\n[cluster]\nname = \"bench\"\npartitions = {}\n",
            self.partitions
        ));
        if !self.minimal {
            toml.push_str(&format!("n = {}\nr = {}\nw = {}\n", self.n, self.r, self.w));
        }
        for line in &self.cluster_lines {
            toml.push_str(line);
            toml.push('\n');
        }
        toml.push_str("members = [\n");
        for (id, address) in members {
            toml.push_str(&format!(
                "  {{ id = \"{id}\", address = \"{address}\" }},\n"
            ));
        }
        toml.push_str("]\n");
        toml
    }
}

impl Cluster {
    /// Starts the nodes of `spec` with data under a new directory in `parent`, and waits until
    /// each one answers. `label` names the cluster in messages.
    pub async fn start(
        binary: &Path,
        parent: &Path,
        spec: &ClusterSpec,
        label: &str,
    ) -> Result<Cluster> {
        spec.check()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("dynamokv-bench-{label}-"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        let members: Vec<(String, String)> = free_ports(spec.nodes)?
            .into_iter()
            .enumerate()
            .map(|(i, port)| (format!("node-{}", i + 1), format!("127.0.0.1:{port}")))
            .collect();
        let tls = if spec.tls {
            let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
            let bundle = dynamokv_server::certificates::dev_bundle(
                &dir.path().join("certs"),
                "bench",
                &ids,
                &[TLS_USER.to_string()],
            )?;
            Some(bundle)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for (i, (id, _)) in members.iter().enumerate() {
            let config_path = dir.path().join(format!("{id}.toml"));
            let data_dir = dir.path().join(id);
            let mut config = spec.config(i, &members, &data_dir);
            if let Some(b) = &tls {
                let (_, cert, key) = &b.nodes[i];
                config.push_str(&format!(
                    "\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[security]\nsuperusers = [\"{TLS_USER}\"]\n",
                    b.ca.display(),
                    cert.display(),
                    key.display()
                ));
            }
            std::fs::write(&config_path, config)
                .with_context(|| format!("cannot write {}", config_path.display()))?;
            let log_path = dir.path().join(format!("{id}.log"));
            let log = File::create(&log_path)
                .with_context(|| format!("cannot create {}", log_path.display()))?;
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .env("RUST_LOG", "warn")
                // The machine's cores divided among the nodes, as `dynamokv dev` does; through
                // tokio's own variable so that older builds (the baseline) get the same.
                .env(
                    "TOKIO_WORKER_THREADS",
                    dynamokv_server::dev::workers_per_node(members.len()).to_string(),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            nodes.push(ChildGuard::spawn(
                &format!("{label} {id}"),
                &mut command,
                Some(log_path),
            )?);
        }
        let tls = tls.map(|b| {
            let (_, cert, key) = &b.users[0];
            [
                b.ca.display().to_string(),
                cert.display().to_string(),
                key.display().to_string(),
            ]
        });
        for (node, (_, address)) in nodes.iter_mut().zip(&members) {
            let probe = with_tls(Client::builder([address.as_str()]), tls.as_ref())
                .connect_timeout(Duration::from_millis(500))
                .request_timeout(Duration::from_secs(1))
                .max_retries(0)
                .build()?;
            node.wait_ready(Duration::from_secs(30), || {
                let probe = probe.clone();
                async move {
                    probe.cluster_info().await?;
                    Ok(())
                }
            })
            .await?;
            // What the node runs with is what the spec asked for (a minimal config relies on
            // the binary's defaults).
            let info = probe.cluster_info().await?;
            let got = (info.partitions, info.n, info.r, info.w, info.members.len());
            let want = (spec.partitions, spec.n, spec.r, spec.w, spec.nodes);
            if got != want {
                bail!(
                    "cluster {label}: a node reports (partitions, N, R, W, members) = {got:?}, \
                     not {want:?}"
                );
            }
        }
        Ok(Cluster {
            nodes,
            seeds: members.into_iter().map(|(_, address)| address).collect(),
            tls,
            _dir: dir,
        })
    }

    /// Client options for this cluster: every node a seed, and its TLS credentials if any.
    fn builder(&self) -> dynamokv_client::ClientBuilder {
        with_tls(Client::builder(self.seeds.clone()), self.tls.as_ref())
    }

    /// A client of this cluster with default options (client-driven coordination), every
    /// node a seed.
    pub fn client(&self) -> Result<Client> {
        Ok(self.builder().build()?)
    }

    /// A client-driven client with hedged reads: a get asks R replicas, and one more only when
    /// they have not answered within `after`.
    pub fn hedged_client(&self, after: std::time::Duration) -> Result<Client> {
        Ok(self.builder().hedge_after(Some(after)).build()?)
    }

    /// A server-driven client: every request to one node (the seeds in turn), which
    /// coordinates it.
    pub fn server_driven_client(&self) -> Result<Client> {
        Ok(self.builder().coordination(Coordination::Server).build()?)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(ChildGuard::pid).collect()
    }

    /// An error if a node has died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.nodes.iter_mut().try_for_each(ChildGuard::check_alive)
    }
}

/// `builder` presenting the CA, client certificate and key of `tls`, if given.
fn with_tls(
    builder: dynamokv_client::ClientBuilder,
    tls: Option<&[String; 3]>,
) -> dynamokv_client::ClientBuilder {
    match tls {
        None => builder,
        Some([ca, cert, key]) => builder
            .ca_cert(ca.clone())
            .client_cert(cert.clone())
            .client_key(key.clone()),
    }
}

/// Writes `count` keys named by `key` (index to key), each `copies` times with an empty context,
/// with `in_flight` requests at once, printing progress for large loads. With `copies > 1` every
/// key ends up holding that many siblings.
pub async fn preload(
    client: &Client,
    label: &str,
    count: usize,
    copies: usize,
    in_flight: usize,
    key: impl Fn(usize) -> String,
    value: &[u8],
) -> Result<()> {
    let total = count * copies;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut done = 0usize;
    let writes = (0..copies).flat_map(|_| 0..count).map(|i| {
        let client = client.clone();
        let key = key(i);
        let value = value.to_vec();
        async move { client.put(&key, value, None).await }
    });
    let mut results = futures::stream::iter(writes).buffer_unordered(in_flight.max(1));
    while let Some(result) = results.next().await {
        result.with_context(|| format!("preloading {label}"))?;
        done += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            println!(
                "  {label}: {done}/{total} writes ({:.0}%, {rate:.0}/s, about {:.0} s left)",
                100.0 * done as f64 / total as f64,
                (total - done) as f64 / rate
            );
        }
    }
    if total >= 10_000 || started.elapsed() > Duration::from_secs(5) {
        println!(
            "  {label}: {total} writes in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<(String, String)> {
        (1..=3)
            .map(|i| (format!("node-{i}"), format!("127.0.0.1:{}", 7000 + i)))
            .collect()
    }

    /// The keys of a config, `table.key` below a table header.
    fn keys(toml: &str) -> Vec<String> {
        let mut table = String::new();
        let mut out = Vec::new();
        for line in toml.lines().map(str::trim) {
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = format!("{t}.");
            } else if let Some((key, _)) = line.split_once(" = ")
                && !line.starts_with('{')
                && !line.starts_with('#')
            {
                out.push(format!("{table}{key}"));
            }
        }
        out
    }

    /// Parses a config the way the node does.
    fn toml_parse(toml: &str) -> dynamokv_server::Config {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(file.path(), toml).expect("writable");
        dynamokv_server::Config::from_file(file.path()).expect("a valid config")
    }

    #[test]
    fn minimal_config_has_only_the_keys_every_build_knows() {
        let toml = ClusterSpec::minimal().config(1, &members(), Path::new("/tmp/d"));
        assert_eq!(
            keys(&toml),
            [
                "node_id",
                "listen",
                "data_dir",
                "cluster.name",
                "cluster.partitions",
                "cluster.members"
            ]
        );
        assert!(toml.contains("node_id = \"node-2\"") && toml.contains("127.0.0.1:7003"));
        // It parses as this build's config, with the expected defaults.
        let config = toml_parse(&toml);
        assert_eq!(config.cluster.members.len(), 3);
        assert_eq!(config.cluster.sync_replicas, 0);
    }

    #[test]
    fn full_config_carries_extra_lines() {
        let spec = ClusterSpec {
            cluster_lines: vec!["sync_replicas = 1".into()],
            ..ClusterSpec::default()
        };
        let toml = spec.config(0, &members(), Path::new("/tmp/d"));
        let config = toml_parse(&toml);
        assert_eq!(config.cluster.sync_replicas, 1);
        assert_eq!(config.cluster.w, Some(2));
        assert!(spec.check().is_ok());
        let bad = ClusterSpec {
            minimal: true,
            ..spec
        };
        assert!(bad.check().is_err());
    }
}
