//! `dynamokv dev`: a real local cluster in one command, one `dynamokv serve` process per node,
//! each with its own RocksDB directory, so that killing one shows failure handling.
//!
//! The cluster forms the way an operator forms one: the first node starts alone, the others
//! start with it as their seed and ask to join, and once the first node sees all of them the
//! change is planned and committed (`admin plan`, `admin commit`). Nodes restarted on the data
//! of an earlier run start from the membership they stored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Options of `dynamokv dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub nodes: usize,
    pub base_dir: PathBuf,
    pub host: String,
    pub base_port: u16,
    pub partitions: u32,
    /// A shell command to run once the cluster is up, with `DYNAMOKV_SEEDS` set.
    pub exec: Option<String>,
    /// Stop the cluster when `exec` finishes instead of waiting for Ctrl-C.
    pub exit_after_exec: bool,
    /// TLS everywhere, with a development CA and certificates made in `<base_dir>/certs`, and
    /// access control with `admin` (a client certificate) as superuser.
    pub secure: bool,
}

/// The superuser `dev --secure` issues a client certificate for.
pub const DEV_ADMIN: &str = "admin";

/// Where `dev --secure` keeps its certificates, and the files a client uses.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl DevCerts {
    fn node_files(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("node-{id}.pem")),
            self.dir.join(format!("node-{id}.key")),
        )
    }

    /// The environment a client of this cluster reads its credentials from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DYNAMOKV_CA_CERT", self.ca.display().to_string()),
            (
                "DYNAMOKV_CLIENT_CERT",
                self.admin_cert.display().to_string(),
            ),
            ("DYNAMOKV_CLIENT_KEY", self.admin_key.display().to_string()),
        ]
    }
}

/// Makes (or reuses) the development CA and the certificates of `ids` and of the superuser.
fn dev_certs(base_dir: &Path, ids: &[String]) -> Result<DevCerts, String> {
    let base = std::path::absolute(base_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", base_dir.display()))?;
    let dir = base.join("certs");
    crate::certificates::dev_bundle(&dir, CLUSTER_NAME, ids, &[DEV_ADMIN.to_string()])
        .map_err(|e| format!("cannot make the development certificates: {e}"))?;
    Ok(DevCerts {
        ca: dir.join("ca.pem"),
        admin_cert: dir.join(format!("user-{DEV_ADMIN}.pem")),
        admin_key: dir.join(format!("user-{DEV_ADMIN}.key")),
        dir,
    })
}

/// The cluster name `dev` configures (the default).
const CLUSTER_NAME: &str = "dynamokv";

struct DevNode {
    id: String,
    address: String,
    child: Child,
}

fn node_config(
    opts: &DevOptions,
    i: usize,
    members: &[(String, String)],
    dir: &Path,
    certs: Option<&DevCerts>,
) -> String {
    // The first node starts alone; the others join through it.
    let seeds = if i == 0 {
        String::new()
    } else {
        format!("\"{}\"", members[0].1)
    };
    let mut text = format!(
        "# Written by `dynamokv dev`; rewritten at every start.\nnode_id = \"{}\"\nlisten = \"{}\"\nmetrics_listen = \"{}:0\"\nworker_threads = {}\ndata_dir = \"{}\"\n\n[cluster]\nname = \"{CLUSTER_NAME}\"\npartitions = {}\nseeds = [{seeds}]\n",
        members[i].0,
        members[i].1,
        opts.host,
        workers_per_node(opts.nodes),
        dir.display(),
        opts.partitions,
    );
    if let Some(certs) = certs {
        let (cert, key) = certs.node_files(&members[i].0);
        text.push_str(&format!(
            "\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[security]\nsuperusers = [\"{DEV_ADMIN}\"]\n",
            certs.ca.display(),
            cert.display(),
            key.display()
        ));
    }
    text
}

/// The machine's cores shared among the nodes (at least one each): nodes on one machine that
/// each run a worker per core only contend for the cores and wake each other's idle threads.
pub fn workers_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.div_ceil(nodes.max(1)).max(1)
}

/// The nodes' ports: consecutive from `base_port`, or with `base_port == 0` free ports the OS
/// picks (probed by binding and releasing them, so every address is known before the first node
/// starts).
fn ports(opts: &DevOptions) -> Result<Vec<u16>, String> {
    if opts.base_port == 0 {
        let probes: Vec<std::net::TcpListener> = (0..opts.nodes)
            .map(|_| std::net::TcpListener::bind((opts.host.as_str(), 0)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot find free ports on {}: {e}", opts.host))?;
        return probes
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
            .collect();
    }
    (0..opts.nodes)
        .map(|i| {
            u16::try_from(opts.base_port as usize + i).map_err(|_| {
                format!(
                    "--base-port {} leaves no room for {} nodes",
                    opts.base_port, opts.nodes
                )
            })
        })
        .collect()
}

/// Starts the cluster, runs `exec` if given, and stops every node on Ctrl-C or SIGTERM.
pub async fn run(opts: DevOptions) -> Result<(), String> {
    if opts.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the dynamokv binary: {e}"))?;
    // Node data, configs, logs and keys: the owner's only (each node's own data directory is
    // made so too, by its storage).
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.base_dir)
            .and_then(|()| {
                std::fs::set_permissions(&opts.base_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot create {}: {e}", opts.base_dir.display()))?;
    }
    let ports = ports(&opts)?;
    let members: Vec<(String, String)> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| (format!("node-{}", i + 1), format!("{}:{port}", opts.host)))
        .collect();
    let certs = if opts.secure {
        let ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        let certs = dev_certs(&opts.base_dir, &ids)?;
        // This process's own operator calls (forming the cluster) go as the superuser.
        let ca = std::fs::read(&certs.ca).map_err(|e| e.to_string())?;
        let cert = std::fs::read(&certs.admin_cert).map_err(|e| e.to_string())?;
        let key = std::fs::read(&certs.admin_key).map_err(|e| e.to_string())?;
        let config = dynamokv_proto::tls::client_config(&ca, Some((&cert, &key)))?;
        crate::admin::set_credentials(crate::admin::Credentials {
            tls: Some(dynamokv_proto::tls::ClientTls::new(config)),
            token: None,
        });
        Some(certs)
    } else {
        None
    };

    let mut nodes: Vec<DevNode> = Vec::new();
    for i in 0..opts.nodes {
        let dir = opts.base_dir.join(&members[i].0);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let config_path = opts.base_dir.join(format!("{}.toml", members[i].0));
        std::fs::write(
            &config_path,
            node_config(&opts, i, &members, &dir, certs.as_ref()),
        )
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log_path = opts.base_dir.join(format!("{}.log", members[i].0));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", members[i].0))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let metrics_url = match first {
            Ok(Ok(Some(line))) if line.contains("listening on") => line
                .split_once("metrics at ")
                .map(|(_, url)| url.trim().to_string())
                .unwrap_or_default(),
            _ => {
                stop_all(&mut nodes).await;
                return Err(format!(
                    "{} did not start; see {} (is {} already in use? try --base-port)",
                    members[i].0,
                    log_path.display(),
                    members[i].1
                ));
            }
        };
        println!(
            "{:<8} {:<21} pid {:<8} data {:<28} metrics {metrics_url}",
            members[i].0,
            members[i].1,
            child.id().unwrap_or(0),
            dir.display()
        );
        nodes.push(DevNode {
            id: members[i].0.clone(),
            address: members[i].1.clone(),
            child,
        });
    }

    if let Err(e) = form_cluster(&nodes).await {
        stop_all(&mut nodes).await;
        return Err(e);
    }
    let seeds: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    println!(
        "cluster up: {} node(s), seeds {} (logs and data under {})",
        nodes.len(),
        seeds.join(","),
        opts.base_dir.display()
    );
    if let Some(c) = &certs {
        println!(
            "TLS on every connection, certificates in {dir}; clients connect with the CA certificate and the superuser's client certificate:\n  \
             python:  dynamokv.Client([{py_seeds}], ca_cert=\"{ca}\", client_cert=\"{cert}\", client_key=\"{key}\")\n  \
             node:    new Client([{py_seeds}], {{ caCert: '{ca}', clientCert: '{cert}', clientKey: '{key}' }})\n  \
             shell:   export DYNAMOKV_SEEDS={seeds} DYNAMOKV_CA_CERT={ca} DYNAMOKV_CLIENT_CERT={cert} DYNAMOKV_CLIENT_KEY={key}\n           \
             then e.g. `dynamokv admin user add alice` prints a token, `dynamokv admin grant alice read,write --prefix cart:`",
            dir = c.dir.display(),
            ca = c.ca.display(),
            cert = c.admin_cert.display(),
            key = c.admin_key.display(),
            seeds = seeds.join(","),
            py_seeds = seeds
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }

    let mut exec_failed = None;
    if let Some(cmd) = &opts.exec {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .env("DYNAMOKV_SEEDS", seeds.join(","));
        for (k, v) in certs.iter().flat_map(DevCerts::env) {
            command.env(k, v);
        }
        let status = command
            .status()
            .await
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if !status.success() {
            exec_failed = Some(format!("{cmd:?} failed: {status}"));
        }
        if opts.exit_after_exec {
            stop_all(&mut nodes).await;
            return exec_failed.map_or(Ok(()), Err);
        }
        if let Some(e) = &exec_failed {
            eprintln!("{e}");
        }
    }

    println!("press Ctrl-C to stop the cluster (kill a node's pid to see failure handling)");
    wait_for_signal(&mut nodes).await;
    stop_all(&mut nodes).await;
    Ok(())
}

/// Waits until the first node knows every other node, commits them into the ring if they are
/// not in it yet, and waits until every node routes by that ring with its handover done.
async fn form_cluster(nodes: &[DevNode]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = &nodes[0].address;
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    // Every node has announced itself to the first.
    loop {
        if let Ok(ring) = crate::admin::fetch_membership(first).await
            && ids.iter().all(|id| ring.member(id).is_some())
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not every node reached {} within 60 s; see the logs",
                nodes[0].id
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = crate::admin::plan(first).await?;
    if plan.blocked.is_empty() {
        let text = crate::admin::describe_plan(&plan, 0, first);
        for line in text.lines().filter(|l| !l.starts_with("commit with")) {
            println!("{line}");
        }
        let version = crate::admin::commit(first, plan.ring_version).await?;
        println!("committed ring version {version}");
    }
    // Every node routes by the first node's ring, with the handover complete.
    loop {
        let want = crate::admin::fetch_membership(first).await?;
        let mut ready = want.ring_version().owners.len() == nodes.len();
        for n in nodes {
            match crate::admin::fetch_status(&n.address).await {
                Ok(s) if s.ring_version == want.ring_version().version && !s.handover => {}
                _ => ready = false,
            }
        }
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the nodes did not agree on one ring within 60 s; see the logs".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_signal(nodes: &mut [DevNode]) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = ticker.tick() => {
                for (i, n) in nodes.iter_mut().enumerate() {
                    if !reported[i] {
                        if let Ok(Some(status)) = n.child.try_wait() {
                            println!("{} exited ({status}); the others keep serving", n.id);
                            reported[i] = true;
                        }
                    }
                }
            }
        }
    }
}

/// SIGTERM to every node, then SIGKILL to any still running after 10 s.
async fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for n in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), n.child.wait()).await {
            Ok(Ok(status)) => println!("{} stopped ({status})", n.id),
            _ => {
                let _ = n.child.kill().await;
                println!("{} killed after 10 s", n.id);
            }
        }
    }
}
