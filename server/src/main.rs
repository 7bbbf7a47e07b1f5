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
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// The members as the node sees them (reachable or not) and the partitions it replicates.
    Status {
        /// The node to ask.
        #[arg(long, default_value = "127.0.0.1:7070")]
        node: String,
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
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Admin(AdminCommand::Status { node }) => runtime.block_on(async {
            let status = dynamokv_server::admin::fetch_status(&node).await?;
            print!("{}", dynamokv_server::admin::describe_status(&status));
            Ok(())
        }),
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

async fn serve(config: Config) -> Result<(), String> {
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
    node.serve(shutdown).await.map_err(|e| e.to_string())
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
