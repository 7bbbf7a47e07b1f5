//! The `dynamokv` command: parses configuration, installs signal handlers, calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use dynamokv_server::config::{Config, Engine};

/// mimalloc instead of glibc's allocator: requests allocate and free many small buffers from
/// several threads, where glibc spent about a tenth of a node's CPU (see ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "dynamokv",
    version,
    about = "A Dynamo (SOSP 2007) key-value store node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    credentials: CredentialArgs,
}

/// How `ring`, `debug-read` and `admin` commands reach a cluster that serves TLS.
#[derive(clap::Args, Debug)]
struct CredentialArgs {
    /// The cluster's CA certificate (PEM): connect over TLS, trusting nodes it signed.
    #[arg(long, global = true, env = "DYNAMOKV_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// A client certificate (PEM) to present, e.g. `user-admin.pem` from `dynamokv cert user`.
    #[arg(
        long,
        global = true,
        env = "DYNAMOKV_CLIENT_CERT",
        requires = "client_key",
        value_name = "PEM"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "DYNAMOKV_CLIENT_KEY",
        requires = "client_cert",
        value_name = "PEM"
    )]
    client_key: Option<PathBuf>,
    /// A token from `dynamokv admin user add`, instead of a client certificate.
    #[arg(long, global = true, env = "DYNAMOKV_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl CredentialArgs {
    fn load(&self) -> Result<dynamokv_server::admin::Credentials, String> {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let tls = match &self.ca_cert {
            None => {
                if self.client_cert.is_some() {
                    return Err("--client-cert needs --ca-cert (the CA that signed the nodes' certificates)".into());
                }
                None
            }
            Some(ca) => {
                let ca = read(ca)?;
                let identity = match (&self.client_cert, &self.client_key) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                };
                let config = dynamokv_proto::tls::client_config(
                    &ca,
                    identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
                )?;
                Some(dynamokv_proto::tls::ClientTls::new(config))
            }
        };
        Ok(dynamokv_server::admin::Credentials {
            tls,
            token: self.token.clone(),
        })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run a local cluster: one `dynamokv serve` process per node, on loopback.
    Dev(DevArgs),
    /// Print the ring: each node's partitions and, with --key, a key's preference list.
    Ring {
        /// Any node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        /// A key whose partition and preference list to print.
        #[arg(long)]
        key: Option<String>,
    },
    /// Read one replica's local copy of a key, without coordination (for debugging).
    DebugRead {
        /// The node whose copy to read.
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        #[arg(long)]
        key: String,
    },
    /// Operator commands, answered by one node from its own view of the cluster.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Development certificates: a cluster CA, node and user certificates (TLS).
    #[command(subcommand)]
    Cert(dynamokv_server::certificates::CertCommand),
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// The members as the node sees them (status, reachability, partitions owned), its
    /// backlogs of hints, anti-entropy and transfers.
    Status {
        /// The node to ask (any member).
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
    },
    /// The node's membership view: ring version, owners, every member record.
    Ring {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
    },
    /// Makes the node at --node, started alone and empty, ask the cluster of SEED to admit it
    /// (then plan and commit on any member).
    Join {
        /// The node that joins.
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        /// Any member of the cluster to join.
        seed: String,
    },
    /// Stages the decommission of a live node (NODE_ID, or the node at --node): at the next
    /// commit it hands its partitions off and stops owning any.
    Leave {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        node_id: Option<String>,
    },
    /// Stages the removal of a node that is gone for good: at the next commit its partitions
    /// get new owners, rebuilt from the surviving replicas.
    Remove {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        node_id: String,
    },
    /// Shows the staged change: which partitions move from which node to which, with counts.
    Plan {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        /// List every moving partition (by default the first 20).
        #[arg(long)]
        all: bool,
    },
    /// Applies the staged change as the next ring version.
    Commit {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        /// The ring version `plan` showed: the commit is refused if the ring moved since.
        #[arg(long)]
        ring_version: Option<u64>,
    },
    /// Makes the node sign version contexts with a new key from now on (nodes also do so by
    /// themselves every cluster.context_key_rotation_ms); contexts signed with its previous
    /// key stay valid for cluster.context_key_grace_ms. Rotate every node after a node's data
    /// directory may have been read by someone else.
    RotateContextKey {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
    },
    /// Users of a cluster that serves TLS: add (printing a token), list, remove.
    #[command(subcommand)]
    User(UserCommand),
    /// Gives USER the PERMISSIONS (read, write, admin; comma-separated) on keys starting
    /// with --prefix (every key if left out).
    Grant {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        user: String,
        #[arg(value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Takes PERMISSIONS (comma-separated) on keys starting with --prefix away from USER.
    Revoke {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        user: String,
        #[arg(value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Adds a user and prints its token (shown once: the cluster keeps only its hash). With
    /// --no-token the user authenticates with a client certificate naming it only.
    Add {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        name: String,
        #[arg(long)]
        no_token: bool,
    },
    /// Lists the users, how many tokens each has, and their grants.
    List {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
    },
    /// Removes a user: its tokens stop working and its certificate carries no permission.
    Remove {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        name: String,
    },
    /// A user's tokens: add another, or revoke one (rotation: add, move, revoke the old).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Issues the user another token (shown once), keeping those it has.
    Add {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        name: String,
    },
    /// Revokes one token of the user, by the id `user add`, `token add` and `user list` show.
    Revoke {
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
        name: String,
        id: String,
    },
}

#[derive(clap::Args, Debug)]
struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where node data, configs and logs go.
    #[arg(long, default_value = "dynamokv-data")]
    base_dir: PathBuf,
    /// First node's port; node i listens on base-port + i - 1. 0 picks free ports.
    #[arg(long, default_value_t = 7070)]
    base_port: u16,
    /// Number of partitions (Q).
    #[arg(long, default_value_t = dynamokv_common::ring::DEFAULT_PARTITIONS)]
    partitions: u32,
    /// Shell command run once the cluster is up, with DYNAMOKV_SEEDS set.
    #[arg(long)]
    exec: Option<String>,
    /// Stop the cluster once --exec finishes.
    #[arg(long, requires = "exec")]
    exit_after_exec: bool,
    /// TLS everywhere: makes a development CA and certificates in <base-dir>/certs (kept for
    /// the next run), requires clients to authenticate, and prints how a client connects.
    /// --exec gets DYNAMOKV_CA_CERT, DYNAMOKV_CLIENT_CERT and DYNAMOKV_CLIENT_KEY as well.
    #[arg(long)]
    secure: bool,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML file with every setting; flags override it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one) [default: 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where data is kept [default: ./dynamokv-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This node's id, unique in the cluster [default: node-1].
    #[arg(long)]
    node_id: Option<String>,
    /// Storage engine [default: rocksdb].
    #[arg(long, value_enum)]
    engine: Option<Engine>,
    /// Serve `/metrics` and `/health` over HTTP on this address (overrides `metrics_listen`).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Serve plain text (no `[tls]`), or `/metrics` without a token, on an address other
    /// machines may reach (sets `insecure`): anyone who can connect may do anything.
    #[arg(long)]
    insecure: bool,
    /// Ask the cluster of this node (host:port) to admit this one; added to `cluster.seeds`.
    /// Ignored once the node has stored a membership view (it restarts as the member it was).
    #[arg(long, value_name = "SEED_ADDR")]
    join: Vec<String>,
}

fn load(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &args.node_id {
        config.node_id = v.clone();
    }
    if let Some(v) = args.engine {
        config.engine = v;
    }
    if let Some(v) = args.metrics_listen {
        config.metrics_listen = Some(v);
    }
    if args.insecure {
        config.insecure = true;
    }
    for seed in &args.join {
        if !config.cluster.seeds.contains(seed) {
            config.cluster.seeds.push(seed.clone());
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Allocations this large or larger are mapped from the system and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc's threshold for mapping large allocations (RocksDB's, in C++: read buffers of
/// whole blocks, one a value of megabytes). Left alone, glibc raises the threshold to the size
/// of each mapped block freed, up to 32 MiB, after which blocks of megabytes come from its
/// heaps and stay resident once freed (issue 19: a storm of reads of one 24 MiB value held
/// nodes at 450 to 640 MiB; with the threshold fixed at 1 MiB, 260 to 470 MiB).
/// `MALLOC_MMAP_THRESHOLD_` set in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn map_large_allocations() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: `mallopt` sets an integer parameter of glibc's allocator under its own lock; it
    // takes no pointers. It runs first thing in `main`, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn map_large_allocations() {}

fn main() -> ExitCode {
    map_large_allocations();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Dev(_)) {
        // Values, hints and user records are the owner's alone: RocksDB (and `dev`, for its
        // configs and logs) create files with the process umask, which would leave them
        // readable by every local user (0644 in 0755 directories).
        rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // A node's runtime has as many workers as its configuration asks (all cores by default).
    let mut workers = None;
    let mut serve_config = None;
    if let Command::Serve(args) = &cli.command {
        match load(args) {
            Ok(config) => {
                workers = config.worker_threads;
                serve_config = Some(config);
            }
            Err(e) => {
                eprintln!("dynamokv: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynamokv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Dev(_) | Command::Cert(_)
    ) {
        match cli.credentials.load() {
            Ok(c) => dynamokv_server::admin::set_credentials(c),
            Err(e) => {
                eprintln!("dynamokv: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let result = match cli.command {
        Command::Serve(_) => match serve_config {
            Some(config) => runtime.block_on(serve(config)),
            None => Err("no configuration".into()),
        },
        Command::Dev(args) => runtime.block_on(dynamokv_server::dev::run(
            dynamokv_server::dev::DevOptions {
                nodes: args.nodes,
                base_dir: args.base_dir,
                host: "127.0.0.1".into(),
                base_port: args.base_port,
                partitions: args.partitions,
                exec: args.exec,
                exit_after_exec: args.exit_after_exec,
                secure: args.secure,
            },
        )),
        Command::Ring { node, key } => runtime.block_on(async {
            let (view, ring) = dynamokv_server::admin::fetch_ring(&node).await?;
            print!(
                "{}",
                dynamokv_server::admin::describe_ring(
                    &view,
                    &ring,
                    key.as_deref().map(str::as_bytes)
                )
            );
            Ok(())
        }),
        Command::Admin(cmd) => runtime.block_on(admin(cmd)),
        Command::Cert(cmd) => match dynamokv_server::certificates::run(cmd) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("dynamokv: {e}");
                return ExitCode::from(2);
            }
        },
        Command::DebugRead { node, key } => runtime.block_on(async {
            let (actor, state) = dynamokv_server::admin::debug_read(&node, key.as_bytes()).await?;
            print!(
                "{}",
                dynamokv_server::admin::describe_state(&actor, state.as_ref())
            );
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dynamokv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises this process's limit of open files to its hard limit: every connection is one, and
/// the usual soft default (1024) would run out long before `limits.max_connections`. Warns
/// when even the hard limit leaves no room for the connection cap and storage's files.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let was = limit.current;
    // No hard limit (None) still means the kernel's nr_open, usually 2^20.
    let target = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|c| c < target) {
        limit.current = Some(target);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    // Connections, RocksDB's files, peers: the cap plus room for the rest.
    let needed = max_connections as u64 + 1024;
    if now.is_some_and(|n| n < needed) {
        tracing::warn!(
            open_files = now,
            needed,
            "the open-files limit is below limits.max_connections + 1024: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower max_connections"
        );
    } else if now != was {
        tracing::debug!(from = was, to = now, "raised the open-files limit");
    }
}

async fn serve(config: Config) -> Result<(), String> {
    raise_open_files_limit(config.limits.max_connections);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received, shutting down");
        token.cancel();
    });
    let node =
        dynamokv_server::server::Prepared::new(&config, listener).map_err(|e| e.to_string())?;
    // One line on stdout, printed once storage is open, that people and scripts (tests,
    // `dynamokv dev`) read to learn the address.
    let metrics = node
        .metrics_addr
        .map(|a| format!(", metrics at http://{a}/metrics"))
        .unwrap_or_default();
    println!(
        "dynamokv node {} listening on {} (pid {}, data in {}){metrics}",
        config.node_id,
        node.addr,
        std::process::id(),
        match config.engine {
            Engine::Rocksdb => config.data_dir.display().to_string(),
            Engine::Memory => "memory".to_string(),
        }
    );
    if config.tls.is_none() && !node.addr.ip().is_loopback() {
        tracing::warn!(
            "serving PLAIN TEXT on {}, an address other machines may reach: anyone who can \
             connect can read and write every key and call the node-to-node service. Configure \
             [tls] (see `dynamokv cert`), listen on a loopback address, or keep the node on a \
             network only its cluster and trusted clients reach",
            node.addr
        );
    }
    node.serve(shutdown).await.map_err(|e| e.to_string())
}

async fn admin(cmd: AdminCommand) -> Result<(), String> {
    use dynamokv_server::admin as a;
    match cmd {
        AdminCommand::Status { node } => {
            print!("{}", a::describe_status(&a::fetch_status(&node).await?));
        }
        AdminCommand::Ring { node } => {
            print!(
                "{}",
                a::describe_membership(&a::fetch_membership(&node).await?)
            );
        }
        AdminCommand::Join { node, seed } => {
            let joined = a::join(&node, &seed).await?;
            println!(
                "{node} asked to join cluster {:?} ({} member(s) known to {seed}); it owns nothing until a commit: run `dynamokv admin plan` then `dynamokv admin commit` on any member",
                joined.cluster_name, joined.members
            );
        }
        AdminCommand::Leave { node, node_id } => {
            let id = node_id.unwrap_or_default();
            a::leave(&node, &id).await?;
            println!(
                "leave of {} staged; `dynamokv admin plan` shows what moves, `dynamokv admin commit` applies it",
                if id.is_empty() {
                    node.as_str()
                } else {
                    id.as_str()
                }
            );
        }
        AdminCommand::Remove { node, node_id } => {
            a::remove(&node, &node_id).await?;
            println!(
                "removal of {node_id} staged; `dynamokv admin plan` shows what moves, `dynamokv admin commit` applies it"
            );
        }
        AdminCommand::RotateContextKey { node } => {
            let r = a::rotate_context_key(&node).await?;
            println!(
                "{node} signs version contexts with key {:016x} from now on ({} key(s) held; contexts signed with the previous one stay valid for cluster.context_key_grace_ms)",
                r.key_id, r.keys
            );
        }
        AdminCommand::Plan { node, all } => {
            let list = if all { usize::MAX } else { 20 };
            print!("{}", a::describe_plan(&a::plan(&node).await?, list, &node));
        }
        AdminCommand::Commit { node, ring_version } => {
            let version = a::commit(&node, ring_version.unwrap_or(0)).await?;
            println!(
                "committed ring version {version}; partitions now move to their new replicas (`dynamokv admin status` shows the progress)"
            );
        }
        AdminCommand::User(UserCommand::Add {
            node,
            name,
            no_token,
        }) => match a::user_add(&node, &name, !no_token).await? {
            Some((token, id)) => {
                println!(
                    "user {name} added; its token (id {id}; shown this once, keep it secret):"
                );
                println!("{token}");
            }
            None => println!(
                "user {name} added; it authenticates with a client certificate naming it (`dynamokv cert user {name}`)"
            ),
        },
        AdminCommand::User(UserCommand::List { node }) => {
            print!("{}", a::describe_users(&a::user_list(&node).await?));
        }
        AdminCommand::User(UserCommand::Remove { node, name }) => {
            a::user_remove(&node, &name).await?;
            println!("user {name} removed");
        }
        AdminCommand::User(UserCommand::Token(TokenCommand::Add { node, name })) => {
            let (token, id) = a::token_add(&node, &name).await?;
            println!(
                "a new token for {name} (id {id}; shown this once, keep it secret; its other tokens still work):"
            );
            println!("{token}");
        }
        AdminCommand::User(UserCommand::Token(TokenCommand::Revoke { node, name, id })) => {
            let u = a::token_revoke(&node, &name, &id).await?;
            println!("token {id} of {name} revoked (within the nodes' security.cache_ms)");
            print!("{}", a::describe_users(&[u]));
        }
        AdminCommand::Grant {
            node,
            user,
            permissions,
            prefix,
        } => {
            let u = a::grant(&node, &user, &prefix, &permissions, true).await?;
            print!("{}", a::describe_users(&[u]));
        }
        AdminCommand::Revoke {
            node,
            user,
            permissions,
            prefix,
        } => {
            let u = a::grant(&node, &user, &prefix, &permissions, false).await?;
            print!("{}", a::describe_users(&[u]));
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
