//! Running the cases: closed and open loops, rounds, merged histograms.
//!
//! *Closed loop*: each of `concurrency` workers sends a request, waits for the answer, records
//! its latency and sends the next. It measures the latency one client sees (1 worker) and the
//! maximum throughput (many workers), but when the system stalls the workers stop sending, so
//! a closed loop under load under-reports the latency an independent stream of users would
//! see ("coordinated omission").
//!
//! *Open loop*: requests are due at fixed intervals, whether or not earlier ones have been
//! answered, and each latency is measured from the request's *intended* send time. A stall
//! then shows up in every request due during it, as users would feel it. The schedule is kept
//! by an OS thread sleeping to each due time (tokio's timer has millisecond resolution), which
//! hands the request to the async runtime; any lateness of the dispatcher itself counts
//! against the system measured, so the error is on the pessimistic side.
//!
//! *Interleaving*: every case runs in `rounds` slices of `duration / rounds`, one round after
//! the other through the whole list, and the slices' histograms are merged. Noise from the
//! machine (a compiler, a neighbour VM) then lands on all cases alike instead of on whichever
//! ran at the wrong moment, so ratios between cases stay meaningful. Before the first round,
//! each case runs once briefly as a warm-up whose results are discarded (connections, caches).
//!
//! *CPU*: around each slice the runner also reads the CPU time of the case's server processes
//! and of the bench itself ([`CpuProbe::cpu_time`]), for the CPU per operation.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::cases::{Case, Load, Op};
use crate::noise::{self, CpuProbe};

/// Bound on open-loop requests in flight, so an overloaded system cannot exhaust memory; past
/// it the dispatcher waits, and the wait counts in the latencies.
const MAX_OUTSTANDING: usize = 8192;
/// How long to wait for open-loop stragglers at the end of a slice.
const DRAIN: Duration = Duration::from_secs(10);

/// A new latency histogram, in nanoseconds, 3 significant digits, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}

/// What one slice (or several merged) measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Latencies of successful requests, in nanoseconds.
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time spent measuring.
    pub elapsed: Duration,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            hist: histogram(),
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, result: Result<()>, latency: Duration) {
        match result {
            Ok(()) => self
                .hist
                .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)),
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }

    fn merge(&mut self, other: &Measured) -> Result<()> {
        self.hist.add(&other.hist)?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.elapsed += other.elapsed;
        Ok(())
    }

    /// Successful requests per second of measuring.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.hist.len() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs `op` closed-loop with `concurrency` workers for `duration`.
pub async fn closed(op: &Op, concurrency: usize, duration: Duration) -> Result<Measured> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut total = Measured::new();
    match op {
        Op::Blocking(f) => {
            if concurrency != 1 {
                bail!("blocking operations run with one worker only");
            }
            let f = f.clone();
            total = tokio::task::spawn_blocking(move || {
                let mut m = Measured::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    m.record(f(), t.elapsed());
                }
                m
            })
            .await?;
        }
        Op::Async(f) => {
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let f = f.clone();
                workers.spawn(async move {
                    let mut m = Measured::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        m.record(f().await, t.elapsed());
                    }
                    m
                });
            }
            while let Some(m) = workers.join_next().await {
                total.merge(&m?)?;
            }
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Runs `op` open-loop at `rate` requests per second for `duration`.
pub async fn open(op: &Op, rate: f64, duration: Duration) -> Result<Measured> {
    let Op::Async(f) = op else {
        bail!("open-loop cases need an async operation");
    };
    if !(rate.is_finite() && rate > 0.0) {
        bail!("open-loop rate {rate} is not positive");
    }
    let results = Arc::new(Mutex::new(Measured::new()));
    let permits = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let runtime = tokio::runtime::Handle::current();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate).round() as u32;
    let start = Instant::now();
    let dispatcher = {
        let (f, results, permits) = (f.clone(), results.clone(), permits.clone());
        tokio::task::spawn_blocking(move || {
            for i in 0..count {
                let intended = start + interval * i;
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                let permit = runtime
                    .block_on(permits.clone().acquire_owned())
                    .expect("the semaphore is never closed");
                let request = f();
                let results = results.clone();
                runtime.spawn(async move {
                    let result = request.await;
                    let latency = intended.elapsed();
                    drop(permit);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(result, latency);
                });
            }
        })
    };
    dispatcher.await?;
    let _all_answered = tokio::time::timeout(DRAIN, permits.acquire_many(MAX_OUTSTANDING as u32))
        .await
        .context("open-loop requests still unanswered 10 s after the last was sent")??;
    let mut total = results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    total.elapsed = start.elapsed();
    Ok(total)
}

/// A case's merged result over all rounds.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub measured: Measured,
    /// 1-minute load average before each slice.
    pub load_before: Vec<f64>,
    /// Foreign CPU during each slice, in cores.
    pub foreign_cores: Vec<f64>,
    /// The open-loop rate used, requests per second.
    pub rate: Option<f64>,
    /// CPU time of the case's server processes during its slices; `None` if it has none (the
    /// RocksDB floor runs inside the bench).
    pub node_cpu: Option<Duration>,
    /// CPU time of the bench process during its slices.
    pub client_cpu: Duration,
}

impl CaseResult {
    /// Whether some slice ran while something else used more than [`noise::NOISY_CORES`].
    pub fn noisy(&self) -> bool {
        self.foreign_cores.iter().any(|&c| c > noise::NOISY_CORES)
    }
}

/// How long to run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rounds: usize,
    /// Measured time per case, all rounds together.
    pub per_case: Duration,
    /// Discarded warm-up per case before the first round.
    pub warmup: Duration,
}

/// Runs `cases` (with their operations `ops` and the ids of their server processes `servers`)
/// interleaved in rounds. `health` is called after every slice and aborts the run with its
/// error (a node that died, say).
pub async fn run(
    cases: &[Case],
    ops: &[Op],
    servers: &[Vec<u32>],
    timing: Timing,
    probe: &CpuProbe,
    health: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<CaseResult>> {
    if ops.len() != cases.len() || servers.len() != cases.len() {
        bail!("one operation and one list of server processes per case");
    }
    let slice = timing.per_case / timing.rounds.max(1) as u32;
    if !timing.warmup.is_zero() {
        print!("  warm-up:");
        for (case, op) in cases.iter().zip(ops) {
            let concurrency = match case.load {
                Load::Closed { concurrency } | Load::Open { concurrency, .. } => concurrency,
            };
            closed(op, concurrency, timing.warmup)
                .await
                .with_context(|| format!("warming up {}", case.id()))?;
            health()?;
            progress(".");
        }
        println!();
    }
    let mut results: Vec<CaseResult> = cases
        .iter()
        .zip(servers)
        .map(|(_, pids)| CaseResult {
            measured: Measured::new(),
            load_before: Vec::new(),
            foreign_cores: Vec::new(),
            rate: None,
            node_cpu: (!pids.is_empty()).then_some(Duration::ZERO),
            client_cpu: Duration::ZERO,
        })
        .collect();
    for round in 1..=timing.rounds {
        let round_start = Instant::now();
        print!("  round {round}/{}:", timing.rounds);
        for (i, ((case, op), pids)) in cases.iter().zip(ops).zip(servers).enumerate() {
            if let Load::Open {
                reference,
                fraction,
                concurrency,
            } = &case.load
                && results[i].rate.is_none()
            {
                let max = match cases.iter().position(|c| &c.id() == reference) {
                    Some(r) if !results[r].measured.hist.is_empty() => {
                        results[r].measured.ops_per_sec()
                    }
                    _ => closed(op, *concurrency, slice).await?.ops_per_sec(),
                };
                results[i].rate = Some(max * fraction);
            }
            let load = noise::loadavg().unwrap_or(f64::NAN);
            let before = probe.sample();
            let (node_before, client_before) = (probe.cpu_time(pids), probe.own_cpu_time());
            let measured = match &case.load {
                Load::Closed { concurrency } => closed(op, *concurrency, slice).await,
                Load::Open { .. } => open(op, results[i].rate.unwrap_or_default(), slice).await,
            }
            .with_context(|| format!("running {}", case.id()))?;
            let (node_after, client_after) = (probe.cpu_time(pids), probe.own_cpu_time());
            let after = probe.sample();
            let r = &mut results[i];
            if let Some(node) = &mut r.node_cpu {
                *node += node_after.saturating_sub(node_before);
            }
            r.client_cpu += client_after.saturating_sub(client_before);
            r.measured.merge(&measured)?;
            r.load_before.push(load);
            r.foreign_cores.push(probe.foreign_cores(&before, &after));
            health()?;
            progress(if r.noisy() { "!" } else { "." });
        }
        println!(" {:.0} s", round_start.elapsed().as_secs_f64());
    }
    Ok(results)
}

fn progress(mark: &str) {
    print!("{mark}");
    let _ = std::io::stdout().flush();
}
