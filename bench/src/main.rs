//! `dynamokv-bench`: latency and throughput of a real local DynamoKV cluster, side by side with
//! what this machine allows at best (a bare gRPC hop, the RocksDB engine alone) and with Redis.
//!
//! # Methodology
//!
//! * **A real cluster.** Three `dynamokv serve` processes (RocksDB, write-ahead log without an
//!   fsync per write, N=3 R=2 W=2) on loopback, driven through the Rust client
//!   (`dynamokv-client`), as an application would ([`cluster`]).
//! * **Floors and a peer, in the same run.** The one-hop floor (a bare tonic unary call to
//!   another process), the storage floor (the server's RocksDB engine called directly) and
//!   Redis (a primary and two replicas, SET + WAIT 1 for W=2) run the matching cases, and each
//!   DynamoKV case is reported as a ratio to them ([`floor`], [`redis`], [`report`]).
//! * **Closed and open loops.** One client sending requests one after another gives the
//!   latency floor of a request; 64 in flight give the maximum throughput; an open loop at
//!   half that throughput gives the latency under load without coordinated omission, measuring
//!   each request from its intended send time ([`runner`]).
//! * **Interleaving.** All cases run in several rounds, each a slice of the case's duration,
//!   and the slices' histograms (HdrHistogram) are merged, so machine noise falls on all
//!   cases alike ([`runner`]).
//! * **A noise flag.** The CPU time used by processes other than the bench's own during each
//!   slice is measured from /proc; a case with more than 0.15 of a core of it is flagged
//!   ([`noise`]).
//! * **CPU per operation.** For every case the bench also reads, from `/proc/<pid>/stat`
//!   (utime + stime, clock ticks of `getconf CLK_TCK`, 100 a second), the CPU time that the
//!   system's server processes (for DynamoKV the cluster's three nodes) and the bench process
//!   itself used during the case's slices, and divides it by the requests completed: "node CPU
//!   us/op" and "client CPU us/op". Waiting for a core costs latency but no CPU time, so on a
//!   noisy machine (two cores shared with builds and other benchmarks) this is the steadier
//!   figure for telling whether a change made requests cheaper; latency and ops/s move with
//!   the neighbours. Its resolution is a clock tick (10 ms) per slice, so it wants the default
//!   durations rather than `--quick` to be precise to a few percent. It counts everything the
//!   processes did meanwhile, background work (RocksDB flushes and compactions, timers)
//!   included, so at low request rates (a build that stalls, say) that fixed cost inflates it.
//! * **Durability.** `put-sync1/1` and `put-sync1/64` are the blind puts with
//!   `sync_replicas = 1` per request (`WriteOptions`): one of the W acknowledging replicas
//!   fsyncs its write-ahead log before the write is acknowledged (concurrent synced writes
//!   share one fsync: group commit). They run on the main cluster, whose default is 0, and are
//!   reported next to `put/1` and `put/64` with the ratios.
//! * **Before and after in one run.** With `--baseline-bin PATH` (and optionally
//!   `--baseline-label TEXT`), a second 3-node cluster runs that other `dynamokv` binary (an
//!   older build) and every DynamoKV case of the main cluster (one client: get, put, rmw,
//!   get-siblings; 64 in flight: get, put, mixed) also runs against it, as system
//!   `dynamokv-baseline`, right after its original in every round, so both builds see the same
//!   moments of the machine. The scale and open-loop cases have no twin. The baseline's config
//!   holds only keys every build knows (an older binary rejects unknown keys), so it runs with
//!   its own defaults; N, R, W and the partition count are checked to match ([`cluster`]).
//!
//! # Output
//!
//! The terminal shows one table per kind of load: per case p50, p99, p99.9 and maximum
//! latency, ops/s, "CPU us/op" as `node+client`, the ratios to the floors and Redis, errors,
//! and the noise figures. Then the side-by-side sections, when their cases ran: "this build vs
//! baseline", titled with the `--baseline-label` (per case p50, p99, ops/s and node CPU us/op
//! of both builds and the ratios ours ÷ baseline) and "durability" (the same for sync 1 ÷ sync 0). Last the targets and
//! notes. The same goes to `DIR/bench-<time>.json` and `DIR/latest.json` (`cases[]` with every
//! figure, `node_cpu_us_per_op` and `client_cpu_us_per_op` included; `comparisons[]` with the
//! side-by-side rows and their ratios; `targets[]`; `meta`), and `DIR/latency.png` (percentile
//! spectra, drawn by `bench/plot.py`). `make bench` builds everything and runs it; `make bench
//! BENCH_ARGS=--quick` is a smoke run of under a minute, and e.g. `make bench
//! BENCH_ARGS="--quick --baseline-bin /tmp/dynamokv-old"` compares with an older build.
//! `--only` picks cases by id substring (`--only "dynamokv get/1,put-sync1"`); a picked case
//! brings the case it is reported next to.

mod cases;
mod cluster;
mod floor;
mod noise;
mod process;
mod redis;
mod report;
mod runner;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::cases::{Baseline, ClusterHandle, Env, Plan, PlanOptions, System};
use crate::cluster::{Cluster, preload};
use crate::floor::{EchoFloor, RocksFloor};
use crate::noise::CpuProbe;
use crate::redis::RedisSet;
use crate::runner::Timing;

#[derive(Parser, Debug)]
#[command(
    name = "dynamokv-bench",
    about = "Benchmark a local 3-node DynamoKV cluster against a bare gRPC hop, RocksDB and Redis",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Hidden>,
    /// Value size in bytes (also the echo payload of the gRPC floor).
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Keys preloaded into the main cluster, Redis and the RocksDB floor [default: 10000; 2000
    /// with --quick].
    #[arg(long)]
    keys: Option<usize>,
    /// Share of gets in the mixed cases.
    #[arg(long, default_value_t = 0.9)]
    read_share: f64,
    /// Requests in flight in the closed-loop throughput cases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per case, all rounds together [default: 6; 1 with --quick].
    #[arg(long)]
    duration: Option<f64>,
    /// Rounds the cases are interleaved in [default: 3; 2 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Discarded warm-up seconds per case before the first round [default: 0.5; 0.2 with
    /// --quick].
    #[arg(long)]
    warmup: Option<f64>,
    /// Stored-key counts of the scale cases (one-client get and put on a cluster holding that
    /// many keys), comma-separated; '' skips them [default: 10000,1000000; none with --quick].
    #[arg(long)]
    scale: Option<String>,
    /// Skip the scale cases.
    #[arg(long)]
    no_scale: bool,
    /// Short smoke run: shorter durations, fewer keys, no scale cases.
    #[arg(long)]
    quick: bool,
    /// Where the JSON results and the plot go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Leave Redis out.
    #[arg(long)]
    no_redis: bool,
    /// Run only the cases whose id ("system name", e.g. "dynamokv get/1") contains one of these
    /// comma-separated strings, and the cases they are reported next to (a case's baseline
    /// twin; the plain put of a put-sync1 case).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also run every DynamoKV case of the main cluster (one client: get, put, rmw,
    /// get-siblings; many in flight: get, put, mixed) against a second 3-node cluster of this
    /// `dynamokv` binary (an older build, say), as system `dynamokv-baseline`, interleaved with
    /// the rest, and report both side by side.
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// What the report calls the --baseline-bin build.
    #[arg(long, value_name = "TEXT", default_value = "baseline")]
    baseline_label: String,
    /// Directory under which the clusters', Redis' and RocksDB's temporary data go [default:
    /// the system temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not draw the plot.
    #[arg(long)]
    no_plot: bool,
}

#[derive(Subcommand, Debug)]
enum Hidden {
    /// The one-hop floor's echo server (started by the bench itself).
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        port: u16,
    },
}

/// The options with defaults applied, as recorded in the JSON.
#[derive(Debug, Clone, Serialize)]
struct Options {
    value_size: usize,
    keys: usize,
    read_share: f64,
    concurrency: usize,
    duration_secs: f64,
    rounds: usize,
    warmup_secs: f64,
    scale: Vec<usize>,
    quick: bool,
    out: PathBuf,
    redis: bool,
    only: Vec<String>,
    data_dir: PathBuf,
    baseline_bin: Option<PathBuf>,
    baseline_label: String,
}

/// A key count: digits, optionally with a k or M suffix (`1M` = 1000000).
fn parse_count(s: &str) -> Result<usize> {
    let s = s.trim().replace('_', "");
    let (digits, factor) = match s.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match s.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (s.as_str(), 1),
        },
    };
    Ok(digits
        .parse::<usize>()
        .with_context(|| format!("{s:?} is not a key count"))?
        * factor)
}

impl Args {
    fn options(&self) -> Result<Options> {
        let quick = self.quick;
        let scale = match (
            &self.scale,
            self.no_scale || (quick && self.scale.is_none()),
        ) {
            (_, true) => Vec::new(),
            (Some(list), false) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(parse_count)
                .collect::<Result<_>>()?,
            (None, false) => vec![10_000, 1_000_000],
        };
        let o = Options {
            value_size: self.value_size,
            keys: self.keys.unwrap_or(if quick { 2_000 } else { 10_000 }),
            read_share: self.read_share,
            concurrency: self.concurrency,
            duration_secs: self.duration.unwrap_or(if quick { 1.0 } else { 6.0 }),
            rounds: self.rounds.unwrap_or(if quick { 2 } else { 3 }),
            warmup_secs: self.warmup.unwrap_or(if quick { 0.2 } else { 0.5 }),
            scale,
            quick,
            out: self.out.clone(),
            redis: !self.no_redis,
            only: self.only.clone(),
            data_dir: self.data_dir.clone().unwrap_or_else(std::env::temp_dir),
            baseline_bin: self.baseline_bin.clone(),
            baseline_label: self.baseline_label.trim().to_string(),
        };
        if o.keys == 0 || o.value_size == 0 || o.concurrency == 0 || o.rounds == 0 {
            bail!("--keys, --value-size, --concurrency and --rounds must be positive");
        }
        if !(0.0..=1.0).contains(&o.read_share) {
            bail!("--read-share must be between 0 and 1");
        }
        if !(o.duration_secs > 0.0 && o.warmup_secs >= 0.0) {
            bail!("--duration must be positive and --warmup not negative");
        }
        if let Some(bin) = &o.baseline_bin
            && !bin.is_file()
        {
            bail!("--baseline-bin {}: no such file", bin.display());
        }
        if o.baseline_label.is_empty() {
            bail!("--baseline-label must not be empty");
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dynamokv-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(Hidden::FloorServer { port }) = args.command {
            return floor::serve(port).await;
        }
        // Dropping `run` on a signal drops every process guard, which kills the processes.
        tokio::select! {
            result = run(&args) => result,
            signal = shutdown_signal() => {
                eprintln!("\ndynamokv-bench: {signal}; stopping the processes it started");
                Err(anyhow::anyhow!("interrupted by {signal}"))
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dynamokv-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

/// Everything the run started; dropping it stops it all.
#[derive(Debug, Default)]
struct Started {
    clusters: Vec<Option<Cluster>>,
    echo: Option<EchoFloor>,
    redis: Option<RedisSet>,
}

impl Started {
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .clusters
            .iter()
            .flatten()
            .flat_map(Cluster::pids)
            .collect();
        pids.extend(self.echo.iter().map(EchoFloor::pid));
        pids.extend(self.redis.iter().flat_map(RedisSet::pids));
        pids
    }

    /// The server processes of `case`'s system, whose CPU time is its node CPU.
    fn server_pids(&self, case: &cases::Case) -> Vec<u32> {
        match (case.system, case.workload.cluster()) {
            (_, Some(i)) => self
                .clusters
                .get(i)
                .and_then(Option::as_ref)
                .map(Cluster::pids)
                .unwrap_or_default(),
            (System::Redis, None) => self.redis.iter().flat_map(RedisSet::pids).collect(),
            (System::GrpcFloor, None) => self.echo.iter().map(EchoFloor::pid).collect(),
            // The RocksDB floor runs inside the bench: its CPU is the client's.
            _ => Vec::new(),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        self.clusters
            .iter_mut()
            .flatten()
            .try_for_each(Cluster::check_alive)
    }
}

async fn run(args: &Args) -> Result<()> {
    let o = args.options()?;
    let mut plan = cases::plan(&PlanOptions {
        keys: o.keys,
        concurrency: o.concurrency,
        read_share: o.read_share,
        scale: o.scale.clone(),
        baseline: o.baseline_bin.as_ref().map(|binary| Baseline {
            binary: binary.clone(),
            label: o.baseline_label.clone(),
        }),
    });
    plan.retain_matching(&o.only);
    let mut notes = Vec::new();
    if !o.redis {
        plan.drop_system(System::Redis);
    }
    if plan.cases.is_empty() {
        bail!("no case matches --only {}", o.only.join(","));
    }
    let value = Bytes::from(
        (0..o.value_size)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>(),
    );
    let mut env = Env {
        keys: o.keys,
        value: value.clone(),
        ..Env::default()
    };
    let mut started = Started::default();

    println!("== setup");
    if plan.uses(System::Redis) {
        match redis::ensure_installed() {
            Ok(binary) => {
                let set = RedisSet::start(&binary, &o.data_dir).await?;
                let pool = redis::Pool::new(&set.primary, o.concurrency).await?;
                for i in 0..o.keys {
                    pool.set(&cases::key(i), &value).await?;
                }
                println!(
                    "redis: primary {} and 2 replicas, {} keys",
                    set.primary, o.keys
                );
                env.redis = Some(Arc::new(pool));
                started.redis = Some(set);
            }
            Err(e) => {
                let note = format!("Redis skipped: {e:#}");
                println!("{note}");
                notes.push(note);
                plan.drop_system(System::Redis);
            }
        }
    }
    if plan.uses(System::GrpcFloor) {
        let echo = EchoFloor::start().await?;
        env.echo = Some(echo.client.clone());
        started.echo = Some(echo);
        println!("grpc floor: echo server up");
    }
    if plan.uses(System::RocksdbFloor) {
        let (dir, keys, value) = (o.data_dir.clone(), o.keys, value.clone());
        let rocks =
            tokio::task::spawn_blocking(move || RocksFloor::open(&dir, keys, &value)).await??;
        env.rocks = Some(Arc::new(rocks));
        println!("rocksdb floor: {} keys", o.keys);
    }
    start_clusters(&plan, &o, &value, &mut env, &mut started).await?;

    let ops = plan
        .cases
        .iter()
        .map(|c| cases::op(&c.workload, &env))
        .collect::<Result<Vec<_>>>()?;
    let probe = CpuProbe::new(started.pids());
    let servers: Vec<Vec<u32>> = plan.cases.iter().map(|c| started.server_pids(c)).collect();
    let timing = Timing {
        rounds: o.rounds,
        per_case: Duration::from_secs_f64(o.duration_secs),
        warmup: Duration::from_secs_f64(o.warmup_secs),
    };
    println!(
        "== {} cases, {} round(s) of {:.2} s each per case",
        plan.cases.len(),
        o.rounds,
        o.duration_secs / o.rounds as f64
    );
    let results = runner::run(&plan.cases, &ops, &servers, timing, &probe, &mut || {
        started.check_alive()
    })
    .await?;
    drop(started);

    let options = serde_json::to_value(&o)?;
    let report = report::build(&plan, &results, options, notes);
    print!("{}", report::render(&report));
    let latest = report::write_json(&report, &o.out)?;
    if !args.no_plot {
        let png = o.out.join("latency.png");
        match report::plot(&latest, &png) {
            Ok(()) => println!("wrote {}", png.display()),
            Err(why) => println!("plot skipped: {why}"),
        }
    }
    Ok(())
}

/// Starts and preloads every cluster some case uses.
async fn start_clusters(
    plan: &Plan,
    o: &Options,
    value: &[u8],
    env: &mut Env,
    started: &mut Started,
) -> Result<()> {
    let this_build = cluster::find_binary()?;
    for (i, cp) in plan.clusters.iter().enumerate() {
        if !plan.uses_cluster(i) {
            env.clusters.push(None);
            started.clusters.push(None);
            continue;
        }
        let binary = cp.binary.clone().unwrap_or_else(|| this_build.clone());
        let cluster = Cluster::start(&binary, &o.data_dir, &cp.spec, &cp.label)
            .await
            .with_context(|| format!("starting cluster {} ({})", cp.label, binary.display()))?;
        // A baseline binary may predate client-driven coordination (the ReadReplica rpc): its
        // cluster is driven by its nodes, as clients of that build did.
        let client = if cp.binary.is_some() {
            cluster.server_driven_client()?
        } else {
            cluster.client()?
        };
        let server_driven = cluster.server_driven_client()?;
        let hedged = cluster.hedged_client(cases::HEDGE_AFTER)?;
        println!(
            "cluster {}: {} nodes up ({}); preloading {} keys",
            cp.label,
            cp.spec.nodes,
            binary.display(),
            cp.keys
        );
        started.clusters.push(Some(cluster));
        let in_flight = o.concurrency.max(128);
        preload(&client, &cp.label, cp.keys, 1, in_flight, cases::key, value).await?;
        let sibling_keys = if plan.uses_siblings(i) {
            println!(
                "cluster {}: {} keys with {} siblings each",
                cp.label,
                cp.sibling_keys,
                cases::SIBLINGS
            );
            let label = format!("{} siblings", cp.label);
            preload(
                &client,
                &label,
                cp.sibling_keys,
                cases::SIBLINGS,
                in_flight,
                cases::sibling_key,
                value,
            )
            .await?;
            let got = client.get(cases::sibling_key(0)).await?;
            if got.values.len() != cases::SIBLINGS {
                bail!(
                    "a key written {} times with an empty context holds {} values, not {}",
                    cases::SIBLINGS,
                    got.values.len(),
                    cases::SIBLINGS
                );
            }
            cp.sibling_keys
        } else {
            0
        };
        env.clusters.push(Some(ClusterHandle {
            client,
            server_driven,
            hedged,
            keys: cp.keys,
            sibling_keys,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_counts() {
        assert_eq!(parse_count("10000").ok(), Some(10_000));
        assert_eq!(parse_count(" 1_000_000").ok(), Some(1_000_000));
        assert_eq!(parse_count("10k").ok(), Some(10_000));
        assert_eq!(parse_count("2M").ok(), Some(2_000_000));
        assert!(parse_count("lots").is_err());
    }

    #[test]
    fn quick_and_scale_options() {
        let o = Args::parse_from(["b", "--quick"]).options().expect("valid");
        assert!(o.scale.is_empty() && o.duration_secs < 6.0);
        let o = Args::parse_from(["b", "--scale", ""])
            .options()
            .expect("valid");
        assert!(o.scale.is_empty());
        let o = Args::parse_from(["b"]).options().expect("valid");
        assert_eq!(o.scale, [10_000, 1_000_000]);
        let o = Args::parse_from(["b", "--quick", "--scale", "5k"]).options();
        assert_eq!(o.expect("valid").scale, [5_000]);
        assert!(
            Args::parse_from(["b", "--read-share", "2"])
                .options()
                .is_err()
        );
    }
}
