//! Judging a scenario against the targets, and the table of results.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;

use dynamokv_common::VersionedState;
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::replica_client::ReplicaClient;

use super::cluster::{NODES, SecureCluster};
use super::load::{During, Outcome, Pair, Window};

/// The targets.
const MIN_SUCCESS: f64 = 0.999;
const MAX_P99: Duration = Duration::from_millis(50);
const MAX_RSS_MIB: u64 = 512;
/// How long replicas get to hold every acknowledged write once the nodes are back.
const AGREE_DEADLINE: Duration = Duration::from_secs(60);

/// Where the rows are appended for `make attack` to print: `$DYNAMOKV_ATTACK_TABLE`, or
/// `dynamokv-attack.txt` in the system's temporary directory. The first row a test process
/// writes starts the file afresh.
pub fn table_path() -> std::path::PathBuf {
    std::env::var_os("DYNAMOKV_ATTACK_TABLE")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("dynamokv-attack.txt"))
}

/// The legitimate load's pairs, when the attack was under way, and how long it took to
/// build up its pressure before that.
pub struct Run {
    pub pairs: Vec<Pair>,
    pub window: Window,
    pub setup: Duration,
    /// The attack did not say it was ready in time.
    pub setup_unfinished: bool,
}

/// One scenario's line of the table.
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    attack: Duration,
    requests: usize,
    share: f64,
    p99: Option<Duration>,
    rss_mib: Vec<Option<u64>>,
    restarted: usize,
    acknowledged: usize,
    lost: usize,
    check: String,
    notes: String,
}

impl Row {
    fn header() -> String {
        format!(
            "{:<36} {:>6} {:>7} {:>8} {:>8} {:>16} {:>8} {:>6} {:>5}  {:<6}  {}",
            "scenario",
            "attack",
            "reqs",
            "ok",
            "p99",
            "peak RSS MiB",
            "restart",
            "acked",
            "lost",
            "check",
            "attack figures"
        )
    }

    fn line(&self) -> String {
        let rss: Vec<String> = self
            .rss_mib
            .iter()
            .map(|r| r.map_or("-".into(), |m| m.to_string()))
            .collect();
        format!(
            "{:<36} {:>5.1}s {:>7} {:>7.2}% {:>8} {:>16} {:>8} {:>6} {:>5}  {:<6}  {}",
            self.scenario,
            self.attack.as_secs_f64(),
            self.requests,
            100.0 * self.share,
            self.p99
                .map_or("-".to_string(), |d| format!("{} ms", d.as_millis())),
            rss.join("/"),
            format!("{}/{NODES}", self.restarted),
            self.acknowledged,
            self.lost,
            self.check,
            self.notes
        )
    }
}

/// The rows of the scenarios this process ran, in order.
static TABLE: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Adds `row` to the table, prints the table so far and appends the row to the file.
fn report(row: &Row) {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let first = table.is_empty();
    table.push(row.clone());
    let mut text = format!("\nattack campaign\n{}\n", Row::header());
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

/// The debug read of every running node, as node-0 (a member), over one connection each.
pub struct Replicas(Vec<Option<ReplicaClient<Channel>>>);

impl Replicas {
    pub fn of(cluster: &SecureCluster) -> Replicas {
        Replicas(
            (0..NODES)
                .map(|i| cluster.running(i).then(|| cluster.replica(i)))
                .collect(),
        )
    }

    /// Node `i`'s own state of `key`.
    pub async fn state(&self, i: usize, key: &[u8]) -> Result<Option<pb::VersionedState>, String> {
        let Some(client) = &self.0[i] else {
            return Err("is not running".into());
        };
        let mut req = tonic::Request::new(pb::ReadLocalRequest {
            key: Some(Bytes::copy_from_slice(key)),
            include_hints: false,
        });
        req.set_timeout(Duration::from_secs(10));
        client
            .clone()
            .read_local(req)
            .await
            .map(|r| r.into_inner().state)
            .map_err(|s| format!("cannot be read ({})", s.message()))
    }
}

/// The live values of a state read from a replica, sorted; or why it is not a valid state.
pub fn live_values(state: &pb::VersionedState) -> Result<Vec<Vec<u8>>, String> {
    let state = VersionedState::from_proto(state).map_err(|e| format!("invalid state ({e})"))?;
    let mut values: Vec<Vec<u8>> = state
        .live_values()
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    values.sort();
    Ok(values)
}

pub fn show(values: &[Vec<u8>]) -> String {
    let shown: Vec<String> = values
        .iter()
        .take(4)
        .map(|v| {
            if v.len() > 40 {
                format!("<{} bytes>", v.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(v))
            }
        })
        .collect();
    let more = values.len().saturating_sub(4);
    if more > 0 {
        format!("[{}, and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Why `key` (acknowledged, its value the key) is not intact on every node, if it is not.
async fn not_intact(replicas: &Replicas, key: &str) -> Option<String> {
    let mut why = Vec::new();
    for i in 0..NODES {
        match replicas.state(i, key.as_bytes()).await {
            Err(e) => why.push(format!("node-{i} {e}")),
            Ok(None) => why.push(format!("node-{i} holds nothing")),
            Ok(Some(state)) => match live_values(&state) {
                Err(e) => why.push(format!("node-{i} holds an {e}")),
                Ok(v) if v == [key.as_bytes()] => {}
                Ok(v) => why.push(format!("node-{i} holds {}", show(&v))),
            },
        }
    }
    (!why.is_empty()).then(|| format!("{key}: {}", why.join(", ")))
}

/// The acknowledged writes of `pairs` not intact on every replica once [`AGREE_DEADLINE`]
/// has passed (at once if a node is down: nothing would bring them back), each with why.
async fn lost_writes(cluster: &SecureCluster, pairs: &[Pair]) -> Vec<String> {
    let mut pending: Vec<&str> = pairs
        .iter()
        .filter(|p| p.outcome == Outcome::Acknowledged)
        .map(|p| p.key.as_str())
        .collect();
    let all_running = (0..NODES).all(|i| cluster.running(i));
    let end = Instant::now() + AGREE_DEADLINE;
    loop {
        let replicas = Replicas::of(cluster);
        let replicas = &replicas;
        let mut failures: Vec<(&str, String)> = futures::stream::iter(pending.iter().copied())
            .map(|key| async move { not_intact(replicas, key).await.map(|why| (key, why)) })
            .buffer_unordered(32)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        if failures.is_empty() || !all_running || Instant::now() >= end {
            failures.sort();
            return failures.into_iter().map(|(_, why)| why).collect();
        }
        pending = failures.into_iter().map(|(k, _)| k).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The end of every scenario: measures what the targets name, restarts every node,
/// checks every acknowledged write on every replica, reports the row, then asserts the
/// targets and `own` (the scenario's own check: what failed, empty if nothing did).
pub async fn judge(
    mut cluster: SecureCluster,
    scenario: &str,
    run: Run,
    notes: String,
    own: Vec<String>,
) {
    let during = During::of(&run.pairs, &run.window);
    let rss_mib: Vec<Option<u64>> = (0..NODES).map(|i| cluster.peak_rss_mib(i)).collect();
    let restarts = cluster.restart_all().await;
    let acknowledged = run
        .pairs
        .iter()
        .filter(|p| p.outcome == Outcome::Acknowledged)
        .count();
    let lost = lost_writes(&cluster, &run.pairs).await;
    let notes = if run.setup_unfinished {
        format!("not fully built up in time; {notes}")
    } else if run.setup > Duration::from_millis(100) {
        format!("built up in {:.1} s; {notes}", run.setup.as_secs_f64())
    } else {
        notes
    };
    let row = Row {
        scenario: scenario.to_string(),
        attack: run.window.end - run.window.start,
        requests: during.requests,
        share: during.share(),
        p99: during.p99,
        rss_mib: rss_mib.clone(),
        restarted: restarts.iter().filter(|r| r.is_ok()).count(),
        acknowledged,
        lost: lost.len(),
        check: if own.is_empty() { "ok" } else { "FAILED" }.into(),
        notes: notes.clone(),
    };
    report(&row);
    println!("scenario {scenario}: during the attack {during:?}");

    let mut failed = Vec::new();
    if during.requests == 0 {
        failed.push("no legitimate request was under way during the attack".to_string());
    }
    if during.share() < MIN_SUCCESS {
        failed.push(format!(
            "{:.3}% of the {} legitimate requests under way during the attack succeeded \
             (target 99.9%); failures by code: {:?}",
            100.0 * during.share(),
            during.requests,
            during.errors
        ));
    }
    match during.p99 {
        Some(p99) if p99 >= MAX_P99 => failed.push(format!(
            "the legitimate requests' p99 during the attack was {} ms (target under 50 ms; \
             slowest {} ms)",
            p99.as_millis(),
            during.max.unwrap_or_default().as_millis()
        )),
        _ => {}
    }
    for (i, rss) in rss_mib.iter().enumerate() {
        match rss {
            Some(m) if *m >= MAX_RSS_MIB => failed.push(format!(
                "node-{i} peaked at {m} MiB resident (target under {MAX_RSS_MIB} MiB)"
            )),
            None => failed.push(format!("node-{i} was not running to be measured")),
            _ => {}
        }
    }
    for (i, r) in restarts.iter().enumerate() {
        if let Err(e) = r {
            failed.push(format!("node-{i} did not restart cleanly: {e}"));
        }
    }
    if acknowledged == 0 {
        failed.push("no legitimate write was acknowledged at all".to_string());
    }
    if !lost.is_empty() {
        failed.push(format!(
            "{} of {acknowledged} acknowledged writes are not intact on every replica, such \
             as\n    {}",
            lost.len(),
            lost[..lost.len().min(5)].join("\n    ")
        ));
    }
    failed.extend(own);
    assert!(
        failed.is_empty(),
        "scenario {scenario} missed its targets:\n  - {}",
        failed.join("\n  - ")
    );
}
