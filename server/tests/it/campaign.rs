//! The fault campaign (issue 8): real `dynamokv serve` processes (see [`ProcCluster`]) under a
//! put-and-get load from several clients on many fresh keys, while one fault is injected:
//! SIGKILL and restart, SIGSTOP and SIGCONT, a network partition through the pairwise proxies,
//! a wiped data directory. Every request is recorded (start, latency, outcome); each scenario
//! ends by polling every key's N replicas with the per-replica debug read (`Replica.ReadLocal`,
//! never a quorum read, which would repair them) until they agree, with a deadline, and asserts
//! that no acknowledged write was lost.
//!
//! Each scenario adds a row to a table (acknowledged writes, share of requests that succeeded
//! during the fault, p99 latency during the fault, time from the fault's end until replicas
//! agreed), printed at its end and appended to [`table_path`] (`make faults` prints the file).
//!
//! Scenarios 3 to 7 need hinted handoff, anti-entropy and tombstone reaping, configured by a
//! `[background]` section, and their metrics (`dynamokv_hints_queued`,
//! `dynamokv_hints_delivered_total`, `dynamokv_anti_entropy_keys_repaired_total`,
//! `dynamokv_tombstones_reaped_total`). Scenarios 1 and 2 run nodes without that section and
//! make a quorum read with R = 3 of every key (which read-repairs) before the check, as a
//! node that missed writes then has no other way to get them.
//!
//! The scenarios run one at a time (a lock), whatever the test harness's thread count: each
//! starts up to five node processes, and faults are timed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};

use dynamokv_client::Client;
use dynamokv_common::{Ring, VersionedState};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_client::ReplicaClient;

use crate::support::{ProcCluster, node_indexes};

/// The nodes' `replica_timeout_ms` ([`ProcCluster`] sets it).
const REPLICA_DEADLINE: Duration = Duration::from_millis(1000);
/// How long replicas get to agree once a scenario's fault is over and its load has stopped.
const AGREE_DEADLINE: Duration = Duration::from_secs(60);
/// How long hints get to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Replicas of every key.
const N: usize = 3;
/// Writers (clients) of every load.
const CLIENTS: usize = 4;

const HINTS_QUEUED: &str = "dynamokv_hints_queued";
const HINTS_DELIVERED: &str = "dynamokv_hints_delivered_total";
const KEYS_REPAIRED: &str = "dynamokv_anti_entropy_keys_repaired_total";
const TOMBSTONES_REAPED: &str = "dynamokv_tombstones_reaped_total";

/// One scenario at a time, across the test harness's threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `[background]` section every scenario gives every node: hints are offered every
/// 200 ms, Merkle trees compared every 500 ms, tombstones looked for every 500 ms;
/// `extra` adds keys (such as `tombstone_grace_ms`). The latency bound keeps its default.
fn background(extra: &str) -> String {
    format!(
        "[background]\nhandoff_interval_ms = 200\nanti_entropy_interval_ms = 500\n\
         reap_interval_ms = 500\n{extra}"
    )
}

// ---------------------------------------------------------------------------------------------
// The load

/// How a write ended, as its writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// The client said it cannot know whether the write was applied.
    Unknown,
    /// Refused or failed: may still be stored on some replica, but at most once.
    Failed,
}

/// One request as its client saw it.
#[derive(Debug, Clone, Copy)]
struct Request {
    start: Instant,
    took: Duration,
    ok: bool,
}

impl Request {
    /// Started before `window` ended and finished (or was still in flight) after it began.
    fn overlaps(&self, window: &Window) -> bool {
        self.start < window.end && self.start + self.took > window.start
    }
}

/// A put of a fresh key (its value is the key) and, when the load reads, a get of it.
#[derive(Debug, Clone)]
struct Pair {
    key: String,
    outcome: Outcome,
    put: Request,
    /// A get succeeded when it answered and showed the put's value if the put was
    /// acknowledged (nothing or that value if not).
    get: Option<Request>,
}

impl Pair {
    fn requests(&self) -> impl Iterator<Item = &Request> {
        std::iter::once(&self.put).chain(&self.get)
    }
}

/// Makes each writer's key sequence (the argument is the writer's number).
type KeyGen = Arc<dyn Fn(usize) -> Box<dyn FnMut() -> String + Send> + Send + Sync>;

/// `{prefix}-w{writer}-{i}`.
fn fresh_keys(prefix: &'static str) -> KeyGen {
    Arc::new(move |w| {
        let mut i = 0usize;
        Box::new(move || {
            i += 1;
            format!("{prefix}-w{w}-{i}")
        })
    })
}

/// Every other key in partition `p` of `ring`, the others anywhere.
fn half_in_partition(prefix: &'static str, ring: Ring, p: u32) -> KeyGen {
    let ring = Arc::new(ring);
    Arc::new(move |w| {
        let ring = Arc::clone(&ring);
        let (mut i, mut candidate) = (0usize, 0usize);
        Box::new(move || {
            i += 1;
            if i % 2 == 0 {
                return format!("{prefix}-w{w}-{i}");
            }
            loop {
                candidate += 1;
                let key = format!("{prefix}-w{w}-p{p}-{candidate}");
                if ring.partition_of(key.as_bytes()) == p {
                    return key;
                }
            }
        })
    })
}

/// Writers putting then getting fresh keys until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicBool>,
    /// Writers that have started a pair since reads were turned off.
    reads_off_seen: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<Vec<Pair>>>,
}

impl Load {
    /// [`CLIENTS`] writers, each with its own client of every node in `seeds`, half of them
    /// coordinating their requests themselves and half through a node. With an
    /// `attempt_timeout`, a silent node is given up after it (else after the whole request
    /// timeout, 5 s).
    fn start(seeds: Vec<String>, attempt_timeout: Option<Duration>, keys: KeyGen) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicBool::new(true));
        let reads_off_seen = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..CLIENTS {
            // Half the writers coordinate in the client (the default), half let a node do it:
            // every scenario holds its promise under both (paper 6.4).
            let coordination = if w % 2 == 0 {
                dynamokv_client::Coordination::Client
            } else {
                dynamokv_client::Coordination::Server
            };
            let mut builder = Client::builder(seeds.clone())
                .coordination(coordination)
                .request_timeout(Duration::from_secs(5));
            if let Some(t) = attempt_timeout {
                builder = builder.attempt_timeout(t);
            }
            let client = builder.build().unwrap();
            let mut next_key = keys(w);
            let (stop, reads, reads_off_seen, done) = (
                Arc::clone(&stop),
                Arc::clone(&reads),
                Arc::clone(&reads_off_seen),
                Arc::clone(&done),
            );
            writers.push(tokio::spawn(async move {
                let mut log = Vec::new();
                let mut saw_reads_off = false;
                while !stop.load(Ordering::Relaxed) {
                    let reading = reads.load(Ordering::SeqCst);
                    if !reading && !saw_reads_off {
                        saw_reads_off = true;
                        reads_off_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    let key = next_key();
                    let t = Instant::now();
                    let outcome = match client.put(&key, key.clone().into_bytes(), None).await {
                        Ok(_) => Outcome::Acknowledged,
                        Err(e) if e.code() == "OUTCOME_UNKNOWN" => Outcome::Unknown,
                        Err(_) => Outcome::Failed,
                    };
                    let put = Request {
                        start: t,
                        took: t.elapsed(),
                        ok: outcome == Outcome::Acknowledged,
                    };
                    let get = if reading {
                        let t = Instant::now();
                        let ok = match client.get(&key).await {
                            Ok(got) if outcome == Outcome::Acknowledged => {
                                got.values == [key.as_bytes()]
                            }
                            Ok(got) => got.values.is_empty() || got.values == [key.as_bytes()],
                            Err(_) => false,
                        };
                        Some(Request {
                            start: t,
                            took: t.elapsed(),
                            ok,
                        })
                    } else {
                        None
                    };
                    log.push(Pair {
                        key,
                        outcome,
                        put,
                        get,
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                }
                log
            }));
        }
        Load {
            stop,
            reads,
            reads_off_seen,
            done,
            writers,
        }
    }

    /// Waits until `more` pairs have finished from now on.
    async fn run_for(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let end = Instant::now() + Duration::from_secs(90);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < end,
                "the load stalled: {} of {target} pairs done",
                self.done.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the gets (a get repairs the replicas it reads), and waits until every writer has
    /// finished the pair it was in: from then on no read is under way.
    async fn stop_reads(&self) {
        self.reads.store(false, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(30);
        while self.reads_off_seen.load(Ordering::SeqCst) < self.writers.len() {
            assert!(Instant::now() < end, "writers did not stop reading");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the writers; their pairs.
    async fn finish(self) -> Vec<Pair> {
        self.stop.store(true, Ordering::Relaxed);
        let mut pairs = Vec::new();
        for w in self.writers {
            pairs.extend(w.await.unwrap());
        }
        pairs
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table

/// When a fault was in force.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn open() -> Window {
        let now = Instant::now();
        Window {
            start: now,
            end: now,
        }
    }

    fn close(&mut self) {
        self.end = Instant::now();
    }
}

/// The requests under way at any moment of the fault (those caught in flight when it began
/// included): how many, how many succeeded, their latencies.
#[derive(Debug)]
struct DuringFault {
    requests: usize,
    succeeded: usize,
    p99: Option<Duration>,
    max: Option<Duration>,
}

impl DuringFault {
    /// Puts and gets of `pairs`.
    fn of<'a>(pairs: impl IntoIterator<Item = &'a Pair>, window: &Window) -> DuringFault {
        Self::of_requests(pairs.into_iter().flat_map(Pair::requests), window)
    }

    fn of_requests<'a>(
        requests: impl IntoIterator<Item = &'a Request>,
        window: &Window,
    ) -> DuringFault {
        let during: Vec<&Request> = requests
            .into_iter()
            .filter(|r| r.overlaps(window))
            .collect();
        let mut latencies: Vec<Duration> = during.iter().map(|r| r.took).collect();
        latencies.sort();
        DuringFault {
            requests: during.len(),
            succeeded: during.iter().filter(|r| r.ok).count(),
            p99: latencies
                .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
                .copied(),
            max: latencies.last().copied(),
        }
    }

    /// Succeeded requests, as a share of all (1 when there were none).
    fn share(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.succeeded as f64 / self.requests as f64
        }
    }
}

/// One scenario's line of the table.
#[derive(Debug, Clone)]
struct Row {
    scenario: &'static str,
    nodes: usize,
    acknowledged: usize,
    puts: usize,
    fault: Duration,
    during: usize,
    share: f64,
    p99: Option<Duration>,
    agreed_after: Duration,
}

impl Row {
    fn new(
        scenario: &'static str,
        nodes: usize,
        pairs: &[Pair],
        window: &Window,
        agreed_after: Duration,
    ) -> Row {
        let during = DuringFault::of(pairs, window);
        Row {
            scenario,
            nodes,
            acknowledged: acknowledged(pairs),
            puts: pairs.len(),
            fault: window.end - window.start,
            during: during.requests,
            share: during.share(),
            p99: during.p99,
            agreed_after,
        }
    }

    fn header() -> String {
        format!(
            "{:<44} {:>5} {:>13} {:>7} {:>8} {:>10} {:>8} {:>10} {:>12}",
            "scenario",
            "nodes",
            "acked writes",
            "puts",
            "fault",
            "reqs fault",
            "ok fault",
            "p99 fault",
            "agreed after"
        )
    }

    fn line(&self) -> String {
        format!(
            "{:<44} {:>5} {:>13} {:>7} {:>7.1}s {:>10} {:>7.2}% {:>10} {:>11.1}s",
            self.scenario,
            self.nodes,
            self.acknowledged,
            self.puts,
            self.fault.as_secs_f64(),
            self.during,
            100.0 * self.share,
            self.p99
                .map_or("-".to_string(), |d| format!("{} ms", d.as_millis())),
            self.agreed_after.as_secs_f64()
        )
    }
}

/// The rows of the scenarios this process ran, in order.
static TABLE: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Where the rows are appended for `make faults` to print: `$DYNAMOKV_CAMPAIGN_TABLE`, or
/// `dynamokv-campaign.txt` in the system's temporary directory. The first row a test process
/// writes starts the file afresh.
pub fn table_path() -> std::path::PathBuf {
    std::env::var_os("DYNAMOKV_CAMPAIGN_TABLE")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("dynamokv-campaign.txt"))
}

/// Adds `row` to the table, prints the table so far and appends the row to the file.
fn report(row: Row) {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let first = table.is_empty();
    table.push(row.clone());
    let mut text = format!("\nfault campaign\n{}\n", Row::header());
    for r in table.iter() {
        let _ = writeln!(text, "{}", r.line());
    }
    println!("{text}");
    let path = table_path();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!first)
        .truncate(first)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    if first {
        writeln!(file, "{}", Row::header()).unwrap();
    }
    writeln!(file, "{}", row.line()).unwrap();
}

fn acknowledged(pairs: &[Pair]) -> usize {
    pairs
        .iter()
        .filter(|p| p.outcome == Outcome::Acknowledged)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Replica agreement, read replica by replica

/// What every replica of a key must hold at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one live value, the key itself (an acknowledged write).
    Value,
    /// The same live values on every replica, each the key and none twice (a write whose
    /// outcome the client did not learn, or that failed: stored everywhere or nowhere).
    Agree,
    /// Nothing at all: no value, no tombstone (a deleted key, once tombstones are reaped).
    Gone,
}

/// What the pairs' writers expect of every key.
fn expectations(pairs: &[Pair]) -> Vec<(String, Expect)> {
    pairs
        .iter()
        .map(|p| {
            let e = if p.outcome == Outcome::Acknowledged {
                Expect::Value
            } else {
                Expect::Agree
            };
            (p.key.clone(), e)
        })
        .collect()
}

/// One replica's copy of a key: `None` if it holds nothing, else its live values (empty for a
/// tombstone), sorted.
type Held = Option<Vec<Vec<u8>>>;

/// Connections to every running node's own address (no proxy in between).
async fn replica_channels(cluster: &ProcCluster) -> Vec<Option<Channel>> {
    let mut channels = Vec::new();
    for proc in &cluster.procs {
        channels.push(match proc {
            Some(p) => Endpoint::from_shared(format!("http://{}", p.addr))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
                .ok(),
            None => None,
        });
    }
    channels
}

/// A replica's own copy of `key` (`Replica.ReadLocal`: no coordination, no hints, no repair).
async fn read_local(channel: &Channel, key: &[u8]) -> Result<Held, tonic::Status> {
    let mut client = ReplicaClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    // The request grows fields (hint-inclusive reads); the defaults read this node's own data.
    let request = pb::ReadLocalRequest {
        key: Some(Bytes::copy_from_slice(key)),
        include_hints: false,
    };
    let mut req = tonic::Request::new(request);
    req.set_timeout(Duration::from_secs(5));
    let reply = client.read_local(req).await?.into_inner();
    Ok(reply.state.map(|s| {
        let mut values: Vec<Vec<u8>> = VersionedState::from_proto(&s)
            .unwrap()
            .live_values()
            .into_iter()
            .map(|b| b.to_vec())
            .collect();
        values.sort();
        values
    }))
}

fn describe(held: &Result<Held, String>) -> String {
    match held {
        Err(e) => format!("unreadable ({e})"),
        Ok(None) => "nothing".to_string(),
        Ok(Some(v)) if v.is_empty() => "a tombstone".to_string(),
        Ok(Some(v)) => format!(
            "{:?}",
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<_>>()
        ),
    }
}

/// Whether `held` (replica, copy) meets `expect` for `key`; if not, why.
fn judge(key: &str, expect: Expect, held: &[(usize, Result<Held, String>)]) -> Result<(), String> {
    let all = || {
        held.iter()
            .map(|(i, h)| format!("node-{i} holds {}", describe(h)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fail = |why: &str| Err(format!("{key} ({expect:?}): {why}: {}", all()));
    let mut live: Vec<&[Vec<u8>]> = Vec::new();
    for (i, h) in held {
        match h {
            Err(_) => return fail(&format!("node-{i} unreadable")),
            Ok(copy) => {
                let values = copy.as_deref().unwrap_or_default();
                if values.iter().any(|v| v != key.as_bytes()) {
                    return fail(&format!("node-{i} holds a value that is not the key's"));
                }
                if values.len() > 1 {
                    return fail(&format!("node-{i} holds the value twice"));
                }
                match expect {
                    Expect::Value if values.len() != 1 => {
                        return fail(&format!("node-{i} lacks the acknowledged write"));
                    }
                    Expect::Gone if copy.is_some() => {
                        return fail(&format!("node-{i} still holds the key"));
                    }
                    _ => {}
                }
                live.push(values);
            }
        }
    }
    if live.windows(2).any(|w| w[0] != w[1]) {
        return fail("replicas differ");
    }
    Ok(())
}

/// Reads `key` on each of `replicas`.
async fn read_replicas(
    channels: &[Option<Channel>],
    replicas: &[usize],
    key: &str,
) -> Vec<(usize, Result<Held, String>)> {
    let mut held = Vec::new();
    for &r in replicas {
        let copy = match &channels[r] {
            None => Err("not running".to_string()),
            Some(c) => read_local(c, key.as_bytes())
                .await
                .map_err(|s| s.message().to_string()),
        };
        held.push((r, copy));
    }
    held
}

/// Polls every key's N replicas (the top N of its preference list) with `ReadLocal` until each
/// key meets its expectation on all of them, then confirms with one more pass over every key.
/// Panics after `deadline`, naming keys, nodes and what they hold.
async fn replicas_agree(cluster: &ProcCluster, keys: &[(String, Expect)], deadline: Duration) {
    let replicas: Vec<Vec<usize>> = keys
        .iter()
        .map(|(k, _)| cluster.replicas_of(k.as_bytes()))
        .collect();
    let end = Instant::now() + deadline;
    let all: Vec<usize> = (0..keys.len()).collect();
    let mut pending = all.clone();
    loop {
        let channels = replica_channels(cluster).await;
        let full = pending.len() == keys.len();
        let mut failures: Vec<(usize, String)> = futures::stream::iter(pending.iter().copied())
            .map(|k| {
                let (channels, replicas) = (&channels, &replicas);
                async move {
                    let (key, expect) = &keys[k];
                    let held = read_replicas(channels, &replicas[k], key).await;
                    judge(key, *expect, &held).err().map(|why| (k, why))
                }
            })
            .buffer_unordered(32)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        if failures.is_empty() {
            if full {
                return;
            }
            // Every key that differed agrees now: check them all once more.
            pending = all.clone();
            continue;
        }
        failures.sort();
        if Instant::now() >= end {
            let shown: Vec<&str> = failures.iter().take(8).map(|(_, w)| w.as_str()).collect();
            panic!(
                "replicas did not agree within {deadline:?}: {} of {} keys differ, such as\n  {}",
                failures.len(),
                keys.len(),
                shown.join("\n  ")
            );
        }
        pending = failures.into_iter().map(|(k, _)| k).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Every running node's `series`, `None` where the node does not export it.
async fn metric_everywhere(cluster: &ProcCluster, series: &str) -> Vec<(usize, Option<f64>)> {
    let mut values = Vec::new();
    for i in 0..cluster.node_count() {
        if cluster.procs[i].is_some() {
            values.push((i, cluster.metric_if_exported(i, series).await));
        }
    }
    values
}

/// Every running node's `dynamokv_hints_queued`, once some node holds hints or `deadline`
/// has passed.
async fn hints_held(cluster: &ProcCluster, deadline: Duration) -> Vec<(usize, Option<f64>)> {
    let end = Instant::now() + deadline;
    loop {
        let queued = metric_everywhere(cluster, HINTS_QUEUED).await;
        if queued.iter().any(|(_, q)| q.unwrap_or(0.0) > 0.0) || Instant::now() >= end {
            return queued;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that some node held hints in a reading of [`hints_held`]; the counts.
fn some_node_held_hints(queued: &[(usize, Option<f64>)]) -> Vec<(usize, f64)> {
    assert!(
        queued.iter().any(|(_, q)| q.unwrap_or(0.0) > 0.0),
        "no node holds hints ({HINTS_QUEUED} per node: {queued:?}): writes did not go to \
         fallback nodes"
    );
    queued.iter().map(|(i, q)| (*i, q.unwrap_or(0.0))).collect()
}

/// Waits until some running node holds hints; returns the nodes' counts then.
async fn some_node_holds_hints(cluster: &ProcCluster, deadline: Duration) -> Vec<(usize, f64)> {
    some_node_held_hints(&hints_held(cluster, deadline).await)
}

/// Waits until every node exports `dynamokv_hints_queued` = 0.
async fn hints_drain(cluster: &ProcCluster, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let queued = metric_everywhere(cluster, HINTS_QUEUED).await;
        if queued.iter().all(|(_, q)| *q == Some(0.0)) {
            return;
        }
        assert!(
            Instant::now() < end,
            "hints did not drain within {deadline:?} ({HINTS_QUEUED} per node: {queued:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Shared steps

/// The end of every scenario: every acknowledged write on each of its N replicas exactly once,
/// and every other key's replicas agreeing, polled replica by replica (no client reads).
async fn no_acknowledged_write_lost(cluster: &ProcCluster, pairs: &[Pair]) {
    assert!(
        acknowledged(pairs) > 0,
        "no write was acknowledged: the load never worked"
    );
    replicas_agree(cluster, &expectations(pairs), AGREE_DEADLINE).await;
}

/// A key range to take down: partition 0, and its N replicas.
fn a_key_range(cluster: &ProcCluster) -> (u32, Vec<usize>) {
    let p = 0;
    let replicas = node_indexes(&cluster.ring().preference_list_of_partition(p, N).nodes);
    (p, replicas)
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// 1. One node of three SIGKILLed mid-load and restarted a few seconds later: no acknowledged
///    write lost, none stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_1_sigkill_and_restart() {
    let _serial = SERIAL.lock().await;
    let mut cluster = ProcCluster::start_with_sections(3, "", &background("")).await;
    let load = Load::start(cluster.seeds(), None, fresh_keys("s1"));
    load.run_for(300).await;

    let mut window = Window::open();
    cluster.kill(1);
    tokio::time::sleep(Duration::from_secs(4)).await; // the fault's length
    cluster.start_node(1);
    window.close();
    load.run_for(300).await;
    let pairs = load.finish().await;

    let acked = acknowledged(&pairs);
    assert!(
        acked > pairs.len() / 2,
        "only {acked} of {} puts acknowledged",
        pairs.len()
    );
    no_acknowledged_write_lost(&cluster, &pairs).await;
    report(Row::new(
        "1 SIGKILL 1 of 3, restart after 4 s",
        3,
        &pairs,
        &window,
        window.end.elapsed(),
    ));
}

/// 2. One node of three hung with SIGSTOP for ten seconds (its connections stay open), then
///    resumed, under load: requests keep succeeding during the hang, none waits much more than
///    the replica deadline (the clients' attempt timeout is set to it), and no acknowledged
///    write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_2_sigstop_hang_and_resume() {
    const HANG: Duration = Duration::from_secs(10);
    let _serial = SERIAL.lock().await;
    let cluster = ProcCluster::start_with_sections(3, "", &background("")).await;
    let load = Load::start(cluster.seeds(), Some(REPLICA_DEADLINE), fresh_keys("s2"));
    load.run_for(400).await;

    let mut window = Window::open();
    cluster.signal(1, "STOP");
    tokio::time::sleep(HANG).await; // the fault's length
    cluster.signal(1, "CONT");
    window.close();
    load.run_for(400).await;
    let pairs = load.finish().await;

    // During the hang (requests under way at any moment of it, the ones caught in flight when
    // it began included): every request succeeded, none waited much past the replica deadline.
    let during = DuringFault::of(&pairs, &window);
    println!("scenario 2, during the hang: {during:?}");
    assert!(
        during.requests > 200,
        "only {} requests during the hang",
        during.requests
    );
    assert_eq!(
        during.succeeded, during.requests,
        "requests failed during the hang"
    );
    let max = during.max.unwrap();
    assert!(
        max < REPLICA_DEADLINE + Duration::from_millis(1500),
        "a request took {max:?} during the hang"
    );

    no_acknowledged_write_lost(&cluster, &pairs).await;
    report(Row::new(
        "2 SIGSTOP 1 of 3 for 10 s, SIGCONT",
        3,
        &pairs,
        &window,
        window.end.elapsed(),
    ));
}

/// 3. Five nodes; two of a key range's three replicas SIGKILLed at once under load: writes of
///    that range with W = 2 still succeed through fallback nodes (sloppy quorum), which hold
///    hints; once the owners return the hints drain and the owners hold every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_3_two_of_three_replicas_down_writes_go_to_fallbacks() {
    let _serial = SERIAL.lock().await;
    let mut cluster = ProcCluster::start_with_sections(5, "", &background("")).await;
    let (p, replicas) = a_key_range(&cluster);
    let down = [replicas[0], replicas[1]];
    let ring = cluster.ring().clone();
    let in_range = |key: &str| ring.partition_of(key.as_bytes()) == p;
    let load = Load::start(
        cluster.seeds(),
        None,
        half_in_partition("s3", cluster.ring().clone(), p),
    );
    load.run_for(200).await;

    let mut window = Window::open();
    for i in down {
        cluster.kill(i);
    }
    tokio::time::sleep(Duration::from_secs(6)).await; // the fault's length
    let hints = hints_held(&cluster, Duration::from_secs(10)).await;
    for i in down {
        cluster.start_node(i);
    }
    window.close();
    load.run_for(200).await;
    let pairs = load.finish().await;

    // The range's writes succeeded with two of its three replicas down.
    let range_puts = DuringFault::of_requests(
        pairs.iter().filter(|x| in_range(&x.key)).map(|x| &x.put),
        &window,
    );
    println!(
        "scenario 3: partition {p} (replicas {replicas:?}, {down:?} down); its puts during the \
         fault: {range_puts:?}; hints queued then: {hints:?}"
    );
    assert!(
        range_puts.requests >= 100,
        "only {} puts of the range during the fault",
        range_puts.requests
    );
    assert!(
        range_puts.share() >= 0.99,
        "{} of {} puts of partition {p} succeeded with two of its replicas down",
        range_puts.succeeded,
        range_puts.requests
    );
    some_node_held_hints(&hints);

    hints_drain(&cluster, DRAIN_DEADLINE).await;
    no_acknowledged_write_lost(&cluster, &pairs).await;
    report(Row::new(
        "3 SIGKILL 2 of a range's 3 (5 nodes)",
        5,
        &pairs,
        &window,
        window.end.elapsed(),
    ));
}

/// 4. Five nodes; one cut off from its peers by a partition (its links hold every byte; clients
///    still reach it) for 8 s under load, then healed: writes continue, hints drain after the
///    heal, replicas converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_4_partitioned_node_heals_and_converges() {
    let _serial = SERIAL.lock().await;
    let cluster = ProcCluster::start_with_sections(5, "", &background("")).await;
    let cut = 2;
    let load = Load::start(cluster.seeds(), None, fresh_keys("s4"));
    load.run_for(200).await;

    let mut window = Window::open();
    cluster.cut(cut);
    tokio::time::sleep(Duration::from_secs(8)).await; // the fault's length
    let hints = hints_held(&cluster, Duration::from_secs(10)).await;
    cluster.heal(cut);
    window.close();
    load.run_for(200).await;
    let pairs = load.finish().await;

    let during = DuringFault::of(&pairs, &window);
    println!(
        "scenario 4: node-{cut} cut off; during the cut {:.1}% of {} requests succeeded \
         (those coordinated by the cut node may fail); hints queued then: {hints:?}",
        100.0 * during.share(),
        during.requests
    );
    assert!(
        during.share() > 0.5,
        "only {} of {} requests succeeded during the partition",
        during.succeeded,
        during.requests
    );
    let acked_during = DuringFault::of_requests(pairs.iter().map(|x| &x.put), &window).succeeded;
    assert!(
        acked_during >= 20,
        "writes did not continue: {acked_during} acknowledged during the partition"
    );
    some_node_held_hints(&hints);

    hints_drain(&cluster, DRAIN_DEADLINE).await;
    no_acknowledged_write_lost(&cluster, &pairs).await;
    report(Row::new(
        "4 partition 1 of 5 for 8 s, heal",
        5,
        &pairs,
        &window,
        window.end.elapsed(),
    ));
}

/// 5. Three nodes; one node's data directory wiped (killed, directory deleted, restarted empty)
///    while writes go on: anti-entropy alone, with no client read after the wipe, restores
///    every key it should hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_5_wiped_node_is_restored_by_anti_entropy() {
    let _serial = SERIAL.lock().await;
    let mut cluster = ProcCluster::start_with_sections(3, "", &background("")).await;
    let wiped = 1;
    let load = Load::start(cluster.seeds(), None, fresh_keys("s5"));
    load.run_for(1500).await;
    // From here on only puts: a get repairs the replicas it reads.
    load.stop_reads().await;

    let mut window = Window::open();
    cluster.kill(wiped);
    tokio::time::sleep(Duration::from_secs(2)).await; // the fault's length (the node is down)
    cluster.wipe(wiped);
    window.close();
    load.run_for(200).await;
    let pairs = load.finish().await;

    // With three nodes and N = 3 the wiped node replicates every key.
    no_acknowledged_write_lost(&cluster, &pairs).await;
    let agreed_after = window.end.elapsed();
    let repaired = metric_everywhere(&cluster, KEYS_REPAIRED).await;
    println!("scenario 5: {KEYS_REPAIRED} per node: {repaired:?}");
    assert!(
        repaired.iter().any(|(_, v)| v.unwrap_or(0.0) > 0.0),
        "no node counts keys repaired by anti-entropy: {repaired:?}"
    );
    report(Row::new(
        "5 wipe 1 of 3 (down 2 s), anti-entropy",
        3,
        &pairs,
        &window,
        agreed_after,
    ));
}

/// 6. Five nodes; a key range's owner down, so writes leave hints for it on fallbacks; the node
///    holding the most hints is SIGKILLed before it could deliver them (the owner is still
///    down) and restarted: it still holds them, and once the owner returns it delivers them
///    all, and the owner holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_6_hints_survive_a_restart_of_their_holder() {
    let _serial = SERIAL.lock().await;
    let mut cluster = ProcCluster::start_with_sections(5, "", &background("")).await;
    let (p, replicas) = a_key_range(&cluster);
    let owner = replicas[0];
    let load = Load::start(
        cluster.seeds(),
        None,
        half_in_partition("s6", cluster.ring().clone(), p),
    );
    load.run_for(200).await;

    let mut window = Window::open();
    cluster.kill(owner);
    // Writes for 3 s with the owner down (part of the fault, not a wait for anything).
    tokio::time::sleep(Duration::from_secs(3)).await;
    some_node_holds_hints(&cluster, Duration::from_secs(10)).await;
    let pairs = load.finish().await;
    // Once the load has stopped, the counts settle (every hint written before its write was
    // acknowledged, or soon after).
    let end = Instant::now() + Duration::from_secs(10);
    let mut queued = some_node_holds_hints(&cluster, Duration::from_secs(10)).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = some_node_holds_hints(&cluster, Duration::from_secs(10)).await;
        if again == queued {
            break;
        }
        assert!(Instant::now() < end, "hint counts do not settle: {again:?}");
        queued = again;
    }
    let (holder, held) = queued
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_ne!(holder, owner);
    println!(
        "scenario 6: partition {p} (replicas {replicas:?}), node-{owner} down; hints queued: \
         {queued:?}; restarting node-{holder}"
    );

    cluster.kill(holder);
    cluster.start_node(holder);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = cluster.metric(holder, HINTS_QUEUED).await;
        if now >= held {
            break;
        }
        assert!(
            Instant::now() < end,
            "node-{holder} held {held} hints before its restart, {now} after"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.start_node(owner);
    window.close();
    hints_drain(&cluster, DRAIN_DEADLINE).await;
    let delivered = cluster.metric(holder, HINTS_DELIVERED).await;
    assert!(
        delivered >= held,
        "node-{holder} delivered {delivered} hints after its restart, of the {held} it held"
    );
    no_acknowledged_write_lost(&cluster, &pairs).await;
    report(Row::new(
        "6 hint holder SIGKILLed, owner down (5)",
        5,
        &pairs,
        &window,
        window.end.elapsed(),
    ));
}

/// 7. Three nodes; keys deleted (acknowledged with W = 2) while one of their replicas is
///    partitioned away; after the heal, anti-entropy brings it the tombstones and tombstone
///    reaping removes them: a deleted key never shows a live value again on a replica that had
///    seen it deleted, is eventually absent from every replica, and the other keys are intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scenario_7_delete_during_partition_is_reaped_everywhere() {
    const DELETED: usize = 60;
    let _serial = SERIAL.lock().await;
    let cluster =
        ProcCluster::start_with_sections(3, "", &background("tombstone_grace_ms = 2000\n")).await;
    let cut = 2;
    let uncut: Vec<String> = (0..3)
        .filter(|i| *i != cut)
        .map(|i| cluster.seed(i))
        .collect();

    // Keys to delete, on every replica before the cut.
    let writer = Client::builder(cluster.seeds())
        .coordination(dynamokv_client::Coordination::Server)
        .build()
        .unwrap();
    let doomed: Vec<String> = (0..DELETED).map(|i| format!("s7-del-{i}")).collect();
    for key in &doomed {
        writer
            .put(key, key.clone().into_bytes(), None)
            .await
            .unwrap();
    }
    let on_all: Vec<(String, Expect)> = doomed.iter().map(|k| (k.clone(), Expect::Value)).collect();
    replicas_agree(&cluster, &on_all, Duration::from_secs(10)).await;

    let load = Load::start(cluster.seeds(), None, fresh_keys("s7"));
    load.run_for(200).await;
    let mut window = Window::open();
    cluster.cut(cut);
    // Deletes through the nodes on the majority side, each of what a get saw.
    let deleter = Client::builder(uncut)
        .coordination(dynamokv_client::Coordination::Server)
        .build()
        .unwrap();
    for key in &doomed {
        let got = deleter.get(key).await.unwrap();
        assert_eq!(got.values, vec![key.clone().into_bytes()]);
        deleter.delete(key, &got.context).await.unwrap();
    }
    // The two reachable replicas hold the tombstones; the cut one still the values.
    let channels = replica_channels(&cluster).await;
    for key in &doomed {
        for (i, held) in read_replicas(&channels, &[0, 1, 2], key).await {
            let held = held.unwrap();
            if i == cut {
                assert_eq!(
                    held,
                    Some(vec![key.clone().into_bytes()]),
                    "node-{i}, {key}"
                );
            } else {
                assert_eq!(held, Some(vec![]), "node-{i} lacks the tombstone of {key}");
            }
        }
    }
    // The fault's length: the partition lasts 6 s from its start.
    tokio::time::sleep_until((window.start + Duration::from_secs(6)).into()).await;
    cluster.heal(cut);
    window.close();
    load.run_for(200).await;
    let pairs = load.finish().await;

    // Until every replica is rid of every deleted key: once a replica has shown a key deleted
    // (tombstone or nothing), it must never show a live value of it again.
    let mut seen_deleted: Vec<[bool; 3]> = vec![std::array::from_fn(|i| i != cut); DELETED];
    let end = Instant::now() + AGREE_DEADLINE;
    loop {
        let channels = replica_channels(&cluster).await;
        let mut remaining = Vec::new();
        for (k, key) in doomed.iter().enumerate() {
            for (i, held) in read_replicas(&channels, &[0, 1, 2], key).await {
                match held {
                    Ok(Some(live)) if !live.is_empty() => {
                        assert!(
                            !seen_deleted[k][i],
                            "deleted {key} came back on node-{i}: it holds {}",
                            describe(&Ok(Some(live)))
                        );
                        remaining.push(format!("{key}: node-{i} still holds its value"));
                    }
                    Ok(Some(_)) => {
                        seen_deleted[k][i] = true;
                        remaining.push(format!("{key}: node-{i} holds a tombstone"));
                    }
                    Ok(None) => seen_deleted[k][i] = true,
                    Err(e) => remaining.push(format!("{key}: node-{i} unreadable: {e}")),
                }
            }
        }
        if remaining.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "deleted keys not reaped everywhere within {AGREE_DEADLINE:?}: {} left, such as\n  {}",
            remaining.len(),
            remaining[..remaining.len().min(8)].join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The deleted keys are gone everywhere, every other key intact and agreed on.
    let mut expected = expectations(&pairs);
    expected.extend(doomed.iter().map(|k| (k.clone(), Expect::Gone)));
    replicas_agree(&cluster, &expected, AGREE_DEADLINE).await;
    let agreed_after = window.end.elapsed();
    let reaped = metric_everywhere(&cluster, TOMBSTONES_REAPED).await;
    println!("scenario 7: {TOMBSTONES_REAPED} per node: {reaped:?}");
    assert!(
        reaped.iter().any(|(_, v)| v.unwrap_or(0.0) > 0.0),
        "no node counts reaped tombstones: {reaped:?}"
    );
    report(Row::new(
        "7 delete during a 6 s partition (3), reap",
        3,
        &pairs,
        &window,
        agreed_after,
    ));
}

#[test]
fn a_request_overlaps_the_fault_it_was_under_way_in() {
    let t = Instant::now();
    let window = Window {
        start: t + Duration::from_secs(1),
        end: t + Duration::from_secs(2),
    };
    let at = |start_ms: u64, took_ms: u64| Request {
        start: t + Duration::from_millis(start_ms),
        took: Duration::from_millis(took_ms),
        ok: true,
    };
    assert!(at(500, 600).overlaps(&window));
    assert!(at(1500, 10).overlaps(&window));
    assert!(at(1900, 500).overlaps(&window));
    assert!(!at(100, 200).overlaps(&window));
    assert!(!at(2100, 10).overlaps(&window));
}

#[test]
fn judging_a_key_names_what_each_replica_holds() {
    let v = |s: &str| Ok(Some(vec![s.as_bytes().to_vec()]));
    let k = "k";
    assert!(judge(k, Expect::Value, &[(0, v(k)), (1, v(k))]).is_ok());
    let err = judge(k, Expect::Value, &[(0, v(k)), (1, Ok(None))]).unwrap_err();
    assert!(
        err.contains("node-1 lacks") && err.contains("node-1 holds nothing"),
        "{err}"
    );
    assert!(judge(k, Expect::Agree, &[(0, Ok(None)), (1, Ok(Some(vec![])))]).is_ok());
    assert!(judge(k, Expect::Agree, &[(0, v(k)), (1, Ok(None))]).is_err());
    let twice = Ok(Some(vec![b"k".to_vec(), b"k".to_vec()]));
    assert!(judge(k, Expect::Agree, &[(0, twice)]).is_err());
    assert!(judge(k, Expect::Gone, &[(0, Ok(None)), (1, Ok(None))]).is_ok());
    assert!(judge(k, Expect::Gone, &[(0, Ok(Some(vec![])))]).is_err());
    assert!(judge(k, Expect::Agree, &[(0, v("other"))]).is_err());
}
