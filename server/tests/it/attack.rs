//! The attack campaign (issue 19, "No client can hurt the cluster"): a secure 3-node cluster
//! of real `dynamokv serve` processes (TLS, access control, default settings), a legitimate
//! client running a steady put-and-get load with every request recorded, and one hostile
//! client at a time:
//!
//! 1. forged version contexts (a write-only user poisons a node's counter, supersedes writes
//!    it never saw);
//! 2. oversized message bodies without credentials;
//! 3. thousands of concurrent HTTP/2 streams on one connection;
//! 4. idle connections past `limits.max_connections`;
//! 5. bearer tokens of random users, as fast as the nodes answer;
//! 6. `Kv.RepairReplica` with states no replica would hold;
//! 7. forty concurrent gets of one 24 MiB key;
//! 8. node certificates of a node that never joined and of a removed node;
//! 9. slowloris: connections sending their handshake or headers a byte a second.
//!
//! Each scenario is judged against the issue's targets, with the legitimate requests under
//! way at any moment of the attack: at least 99.9% of them succeed, their p99 is below 50 ms,
//! no node's peak resident memory (`VmHWM`) reaches 512 MiB, every node restarts cleanly
//! (SIGTERM, start again, serve), every acknowledged write is intact on each of its three
//! replicas (read replica by replica with the debug read, `Replica.ReadLocal`), and the
//! scenario's own check (the forged put was refused and changed nothing, ...). A row per
//! scenario is printed and appended to [`judge::table_path`] (`make attack` prints the file)
//! before the targets are asserted, so a failing scenario still shows its figures.
//!
//! Each attack lasts [`attack_length`]: 5 s by default (`make test`), `DYNAMOKV_ATTACK_SECONDS`
//! otherwise (`make attack` runs 30). Scenarios run one at a time (a lock) and should run
//! alone in their process (`--test-threads 1`, as the Makefile does): two of them hold over
//! twelve thousand connections, and the latency target means little beside other tests.

mod cluster;
mod floods;
mod hostile;
mod judge;
mod load;
mod raw;

use std::time::{Duration, Instant};

use dynamokv_common::limits::{DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_SIBLINGS};
use dynamokv_common::versioning::{DEFAULT_MAX_RETIRED_WRITES, DEFAULT_MAX_VECTOR_ENTRIES};
use dynamokv_proto::v1 as pb;

use cluster::{ATTACKER_PREFIX, ATTACKER_USER, LEGIT_USER, NODES, Options, SecureCluster};
use floods::Hold;
use hostile::{Tally, Target};
use judge::{Replicas, Run, judge, live_values, show};
use load::{Load, Window};

/// Pairs the load makes before the attack starts (connections made, rings fetched).
const WARM_UP_PAIRS: usize = 200;
/// Connections the floods hold to each node: past the default `limits.max_connections`
/// (4,096), as the issue's reproduction did.
const FLOOD_PER_NODE: usize = 4_100;

/// One scenario at a time, across the test harness's threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each attack lasts: `DYNAMOKV_ATTACK_SECONDS`, 5 s when unset.
pub fn attack_length() -> Duration {
    std::env::var("DYNAMOKV_ATTACK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// Takes the scenario lock, and raises this process's soft limit of open files to its hard
/// limit (nodes started from here inherit it): the floods hold thousands of connections.
async fn begin() -> tokio::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().await;
    let (soft, hard) = open_files();
    if soft < hard {
        let _ = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={hard}:{hard}"),
            ])
            .status();
    }
    guard
}

/// This process's (soft, hard) limits of open files.
fn open_files() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let mut n = line
        .split_whitespace()
        .skip(3)
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (n.next().unwrap_or(1024), n.next().unwrap_or(1024))
}

/// Connections per node a flood holds: [`FLOOD_PER_NODE`], fewer if this process may not open
/// that many files (leaving 2,000 for everything else); and the reason, if fewer.
fn flood_size() -> (usize, Option<String>) {
    let (soft, _) = open_files();
    let room = usize::try_from(soft.saturating_sub(2_000) / NODES as u64).unwrap_or(usize::MAX);
    if room >= FLOOD_PER_NODE {
        (FLOOD_PER_NODE, None)
    } else {
        (
            room,
            Some(format!(
                "scaled to {room} a node: this process may open {soft} files"
            )),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Running a scenario (judging it is `judge`'s)

/// How long an attack may take to build up its pressure (make its connections, open its
/// streams) before the measured window starts anyway.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the legitimate load, warms it up, runs `attack` on its own threads for
/// [`attack_length`], stops both; what the load saw and what the attack found.
async fn under_attack<F, Fut, T>(cluster: &SecureCluster, attack: F) -> (Run, T)
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    under_attack_once_ready(cluster, move |stop, ready| {
        ready.cancel();
        attack(stop)
    })
    .await
}

/// As [`under_attack`], for an attack that builds up its pressure first (connections held,
/// streams open) and says when it is fully on: the attack's length, and the window the
/// legitimate requests are judged in, start then. The build-up is mostly this machine's
/// CPU making connections at both ends (the attacker's end would be elsewhere); what the
/// attack holds is what the cluster must withstand.
async fn under_attack_once_ready<F, Fut, T>(cluster: &SecureCluster, attack: F) -> (Run, T)
where
    F: FnOnce(tokio_util::sync::CancellationToken, tokio_util::sync::CancellationToken) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let load = Load::start(cluster);
    load.run_for(WARM_UP_PAIRS).await;
    let launched = Instant::now();
    let attack = hostile::launch(attack);
    let ready = attack.ready(SETUP_DEADLINE).await;
    let start = Instant::now();
    tokio::time::sleep(attack_length()).await; // the attack's length
    let found = attack.stop().await;
    let window = Window {
        start,
        end: Instant::now(),
    };
    let pairs = load.finish().await;
    let run = Run {
        pairs,
        window,
        setup: start - launched,
        setup_unfinished: !ready,
    };
    (run, found)
}

// ---------------------------------------------------------------------------------------------
// The scenarios

/// 0. No attack: the legitimate load alone, judged as the attacks are. If this misses a
///    target, the machine is too busy for the others to mean anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_0_no_attack() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let (run, ()) = under_attack(&cluster, |stop| async move { stop.cancelled().await }).await;
    judge(cluster, "0 none (baseline)", run, String::new(), Vec::new()).await;
}

/// 1. Forged contexts: a user with write on its own prefix only sends puts whose contexts it
///    edited (see [`hostile::forged_contexts`]). Each must be refused with INVALID_CONTEXT and
///    change nothing: the poisoned keys hold what the attacker wrote honestly, with no counter
///    near 2^63, and the victim key still holds every write acknowledged to the other writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_forged_contexts() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let actors = cluster.actors().await;
    let target = Target::of(&cluster);
    let (run, found) =
        under_attack(&cluster, move |stop| hostile::forged_contexts(target, stop)).await;

    let mut own: Vec<String> = found
        .setup_failures
        .iter()
        .map(|f| format!("the attack could not be set up: {f}"))
        .collect();
    let mut outcomes = Tally::default();
    for f in &found.forgeries {
        match &f.outcome {
            Err(code) if code == "INVALID_CONTEXT" => outcomes.add("refused INVALID_CONTEXT"),
            Err(code) => {
                outcomes.add(format!("failed {code}"));
                own.push(format!(
                    "forged put ({}) of {} failed with {code}, not INVALID_CONTEXT",
                    f.what, f.key
                ));
            }
            Ok(()) => {
                outcomes.add("accepted");
                own.push(format!("forged put ({}) of {} was accepted", f.what, f.key));
            }
        }
    }
    if found.forgeries.is_empty() {
        own.push("no forged put was made".into());
    }
    // Each forgery named the actor of the node it aimed at (as `Replica.Ping` tells it): the
    // attack is what it says it is.
    for f in &found.forgeries {
        if let Ok(actor) = &actors[f.node]
            && !f.claimed.iter().any(|(a, _)| a == actor)
        {
            own.push(format!(
                "the forgery \"{}\" claimed {:x?}, not node-{}'s actor {actor:x}",
                f.what, f.claimed, f.node
            ));
        }
    }
    // The victim key still holds every write acknowledged to the other writer.
    let replicas = Replicas::of(&cluster);
    if let Some((key, acked)) = &found.victim {
        for i in 0..NODES {
            match replicas.state(i, key.as_bytes()).await {
                Ok(Some(state)) => match live_values(&state) {
                    Ok(v) => {
                        let missing = acked.iter().filter(|a| !v.contains(a)).count();
                        if missing > 0 {
                            own.push(format!(
                                "node-{i} lost {missing} of the {} writes of {key} acknowledged \
                                 to another writer after the attacker's last genuine context: \
                                 it holds {}",
                                acked.len(),
                                show(&v)
                            ));
                        }
                    }
                    Err(e) => own.push(format!("node-{i} holds an {e} for {key}")),
                },
                Ok(None) => own.push(format!("node-{i} holds nothing for {key}")),
                Err(e) => own.push(format!("node-{i}: {key} {e}")),
            }
        }
    }
    // The poisoned keys hold what the attacker wrote honestly (the key), nothing forged.
    let mut changed = Vec::new();
    for key in &found.probes {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let why = forged_traces(&replicas, key).await;
            if why.is_empty() || Instant::now() >= end {
                changed.extend(why);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !changed.is_empty() {
        own.push(format!(
            "{} replica copies of the {} keys the forged puts aimed at were changed, such as: {}",
            changed.len(),
            found.probes.len(),
            changed[..changed.len().min(3)].join("; ")
        ));
    }
    let notes = format!("{} forged puts: {outcomes}", found.forgeries.len());
    judge(cluster, "1 forged contexts", run, notes, own).await;
}

/// Counters at or above this in a key the attacker wrote are the forgery's (no node makes
/// 2^40 writes in a test).
const FORGED_COUNTER: u64 = 1 << 40;

/// What each replica's copy of probe `key` shows of a forgery: a value other than the
/// attacker's honest one (the key), or a counter near the forged ones.
async fn forged_traces(replicas: &Replicas, key: &str) -> Vec<String> {
    let mut why = Vec::new();
    for i in 0..NODES {
        match replicas.state(i, key.as_bytes()).await {
            Err(e) => why.push(format!("node-{i}: {key} {e}")),
            Ok(None) => why.push(format!("node-{i} holds nothing for {key}")),
            Ok(Some(state)) => {
                let clock = state.clock.clone().unwrap_or_default();
                let top = clock
                    .entries
                    .iter()
                    .map(|e| e.counter)
                    .chain(clock.cloud.iter().map(|d| d.counter))
                    .chain(state.siblings.iter().map(|s| s.counter))
                    .max()
                    .unwrap_or(0);
                if top >= FORGED_COUNTER {
                    why.push(format!("node-{i}'s {key} names counter {top}"));
                }
                match live_values(&state) {
                    Ok(v) if v == [key.as_bytes()] => {}
                    Ok(v) => why.push(format!("node-{i}'s {key} holds {}", show(&v))),
                    Err(e) => why.push(format!("node-{i}'s {key} is an {e}")),
                }
            }
        }
    }
    why
}

/// 2. Oversized bodies without credentials: plain text to the TLS port and TLS without a
///    client certificate, several streams each declaring a 256 MiB message to
///    `Replica/MergeLocal` and sending it slowly. The node must not hold what strangers send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_oversized_unauthenticated_bodies() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let target = Target::of(&cluster);
    let (run, found) = under_attack(&cluster, move |stop| {
        floods::oversized_bodies(target, 0, stop)
    })
    .await;
    let notes = format!(
        "to node-0: {} MiB of body on {} streams, {} connections; the node answered {}",
        found.bytes_sent.load(std::sync::atomic::Ordering::Relaxed) >> 20,
        found.streams.load(std::sync::atomic::Ordering::Relaxed),
        found.connections.load(std::sync::atomic::Ordering::Relaxed),
        {
            let answers = found.answers.lock().unwrap();
            if answers.total() == 0 {
                "none".to_string()
            } else {
                answers.to_string()
            }
        }
    );
    judge(
        cluster,
        "2 oversized unauthenticated bodies",
        run,
        notes,
        Vec::new(),
    )
    .await;
}

/// 3. Stream floods: two connections to node-1 (no credentials; the attacker's token), each
///    opening streams that never end, up to 25,000 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_stream_flood() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let target = Target::of(&cluster);
    let (run, found) = under_attack_once_ready(&cluster, move |stop, ready| {
        floods::stream_flood(target, 1, stop, ready)
    })
    .await;
    let notes: Vec<String> = found
        .iter()
        .map(|(name, f)| {
            let advertised = f.advertised.load(std::sync::atomic::Ordering::Relaxed);
            format!(
                "{name}: {} open or queued by the attacker's HTTP/2 client at most ({} opened, {} ended by the node, limit {})",
                f.open.peak(),
                f.opened.load(std::sync::atomic::Ordering::Relaxed),
                f.ended.load(std::sync::atomic::Ordering::Relaxed),
                if advertised >= u32::MAX as u64 {
                    "none".to_string()
                } else {
                    advertised.to_string()
                }
            )
        })
        .collect();
    judge(cluster, "3 stream flood", run, notes.join("; "), Vec::new()).await;
}

/// What the nodes may open, for the connection floods' notes.
fn node_file_limits(cluster: &SecureCluster) -> String {
    let limits: Vec<String> = (0..NODES)
        .map(|i| {
            cluster
                .open_files_limit(i)
                .map_or("?".to_string(), |l| l.to_string())
        })
        .collect();
    format!("nodes' open-file limits {}", limits.join("/"))
}

/// Requests each node refused at its connection cap (`dynamokv_overloaded_total`), for the
/// connection floods' notes: who was turned away, the legitimate client's new connections
/// among them.
async fn refused_at_cap(cluster: &SecureCluster) -> String {
    let mut counts = Vec::new();
    for i in 0..NODES {
        let n = cluster
            .metric(i, "dynamokv_overloaded_total", "cap=\"connections\"")
            .await;
        counts.push(n.map_or("-".into(), |n| format!("{:.0}", n + 0.0)));
    }
    format!(
        "requests refused at the connection cap {}",
        counts.join("/")
    )
}

/// 4. Idle-connection floods: 4,100 connections to each node, idle, made again whenever
///    closed: seven in eight plain text that sent the HTTP/2 preface, one in eight TLS
///    without a certificate. (Not half and half: each TLS handshake costs a millisecond of
///    CPU at both ends, and on this 2-core machine the attacker's end is the cluster's too;
///    thousands of them would measure the handshakes, and keep the flood from filling the
///    nodes within a short run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_idle_connection_flood() {
    let _serial = begin().await;
    let (per_node, scaled) = flood_size();
    let cluster = SecureCluster::start(Options::default()).await;
    let limits = node_file_limits(&cluster);
    let target = Target::of(&cluster);
    let (run, found) = under_attack_once_ready(&cluster, move |stop, ready| {
        let mut kinds = vec![Hold::IdlePlain; 7];
        kinds.push(Hold::IdleTls);
        floods::hold_connections(target, per_node, kinds, stop, ready)
    })
    .await;
    let notes = format!(
        "{per_node} a node, {} held at most ({} made, {} closed by the nodes, {} failed); {}; {limits}{}",
        found.held.peak(),
        found.established.load(std::sync::atomic::Ordering::Relaxed),
        found
            .closed_by_node
            .load(std::sync::atomic::Ordering::Relaxed),
        found
            .failed_to_connect
            .load(std::sync::atomic::Ordering::Relaxed),
        refused_at_cap(&cluster).await,
        scaled.map(|s| format!("; {s}")).unwrap_or_default()
    );
    judge(cluster, "4 idle-connection flood", run, notes, Vec::new()).await;
}

/// Node-to-node reads of a key (`Replica.ReadLocal` and the exchange stream's reads) all
/// nodes answered so far: what a quorum read by a coordinator costs its peers. The
/// legitimate load's client-driven gets are counted apart (`read_replica`).
async fn peer_reads(cluster: &SecureCluster) -> f64 {
    let mut total = 0.0;
    for i in 0..NODES {
        total += cluster
            .metric(
                i,
                "dynamokv_request_duration_seconds_count",
                "op=\"read\",role=\"replica\"",
            )
            .await
            .unwrap_or(0.0);
    }
    total
}

/// Node-to-node reads per sprayed token above which the spray is judged to cost a read of
/// the cluster per unknown user (the issue's defect: a quorum read each).
const READS_PER_SPRAYED_TOKEN: f64 = 0.1;

/// 5. Token spraying: gets carrying well-formed tokens of random users, 96 in flight over six
///    connections, as fast as the nodes answer. Besides the targets, an unknown user must not
///    cost the cluster a read each: at most one node-to-node read per ten sprayed tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_token_spraying() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let before: Vec<Option<u64>> = (0..NODES).map(|i| cluster.rss_mib(i)).collect();
    let reads_before = peer_reads(&cluster).await;
    let target = Target::of(&cluster);
    let (run, found) = under_attack(&cluster, move |stop| hostile::token_spray(target, stop)).await;
    let secs = (run.window.end - run.window.start).as_secs_f64();
    let growth: Vec<String> = (0..NODES)
        .map(|i| match (before[i], cluster.rss_mib(i)) {
            (Some(b), Some(a)) => format!("{:+}", a as i64 - b as i64),
            _ => "-".into(),
        })
        .collect();
    let mut own = Vec::new();
    let answered = found.get("answered");
    if answered > 0 {
        own.push(format!(
            "{answered} gets with random users' tokens were answered"
        ));
    }
    let reads = peer_reads(&cluster).await - reads_before;
    let per_token = reads / found.total().max(1) as f64;
    if per_token > READS_PER_SPRAYED_TOKEN {
        own.push(format!(
            "each sprayed token cost the cluster {per_token:.2} node-to-node reads ({reads:.0} \
             for {} tokens; at most {READS_PER_SPRAYED_TOKEN})",
            found.total()
        ));
    }
    let notes = format!(
        "{} tokens ({:.0}/s): {found}; {per_token:.2} peer reads a token; resident memory since before the load {} MiB",
        found.total(),
        found.total() as f64 / secs,
        growth.join("/")
    );
    judge(cluster, "5 token spraying", run, notes, own).await;
}

/// 6. Repair abuse: `Kv.RepairReplica`, which a user with write permission may call, with
///    states no replica should hold. Whether refused or taken, afterwards no replica may hold,
///    for any key the attacker sent, more than the node's limits allow: siblings
///    (`limits.max_siblings`), bytes of values (`limits.max_object_bytes`), clock entries
///    (`max_vector_entries`), remembered superseded writes (their per-key cap), or a date more
///    than a day ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_6_repair_abuse() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let target = Target::of(&cluster);
    let (run, found) =
        under_attack(&cluster, move |stop| hostile::repair_abuse(target, stop)).await;
    let mut beyond = Vec::new();
    let replicas = Replicas::of(&cluster);
    for key in &found.keys {
        for i in 0..NODES {
            match replicas.state(i, key.as_bytes()).await {
                Ok(None) => {}
                Ok(Some(state)) => {
                    if let Some(why) = beyond_limits(&state) {
                        beyond.push(format!("node-{i}'s {key} holds {why}"));
                    }
                }
                Err(e) => beyond.push(format!("node-{i}: {key} {e}")),
            }
        }
    }
    let mut own = Vec::new();
    if !beyond.is_empty() {
        own.push(format!(
            "{} replica copies of the {} keys repaired by the attacker are beyond the limits, \
             such as: {}",
            beyond.len(),
            found.keys.len(),
            beyond[..beyond.len().min(4)].join("; ")
        ));
    }
    let answers: Vec<String> = found
        .answers
        .iter()
        .map(|(kind, t)| format!("{kind}: {t}"))
        .collect();
    let notes = format!("{} rounds; {}", found.rounds, answers.join("; "));
    judge(cluster, "6 repair abuse", run, notes, own).await;
}

/// What about `state` is beyond the default limits, if anything.
fn beyond_limits(state: &pb::VersionedState) -> Option<String> {
    let day_ahead = hostile::now_ms() + 86_400_000;
    let live: Vec<&pb::Sibling> = state.siblings.iter().filter(|s| !s.tombstone).collect();
    let bytes: usize = live.iter().map(|s| s.value.len()).sum();
    let clock = state.clock.clone().unwrap_or_default();
    let mut why = Vec::new();
    if live.len() > DEFAULT_MAX_SIBLINGS {
        why.push(format!("{} siblings", live.len()));
    }
    if bytes > DEFAULT_MAX_OBJECT_BYTES {
        why.push(format!("{} MiB of values", bytes >> 20));
    }
    if clock.entries.len() > DEFAULT_MAX_VECTOR_ENTRIES {
        why.push(format!("a clock of {} entries", clock.entries.len()));
    }
    if state.retired.len() > DEFAULT_MAX_RETIRED_WRITES {
        why.push(format!("{} superseded writes", state.retired.len()));
    }
    let future = state
        .retired
        .iter()
        .map(|r| r.retired_at_ms)
        .chain(clock.entries.iter().map(|e| e.timestamp_ms))
        .chain(state.siblings.iter().map(|s| s.timestamp_ms))
        .filter(|t| *t > day_ahead)
        .count();
    if future > 0 {
        why.push(format!("{future} dates more than a day ahead"));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// 7. Large-value read storms: one key of 24 MiB, made with ordinary puts within the default
///    limits (24 blind puts of 1 MiB values: 24 siblings, under `max_siblings` 100 and
///    `max_object_bytes` 32 MiB, so no setting changes), read forty at a time through node-2
///    by a user allowed to read it (the attacker, granted read on its prefix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_7_large_value_read_storm() {
    const VALUES: usize = 24;
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options::default()).await;
    let key = format!("{ATTACKER_PREFIX}big");
    let writer = dynamokv_client::Client::builder(cluster.seeds())
        .ca_cert(cluster.cert_path("ca.pem"))
        .token(cluster.attacker_token.clone())
        .build()
        .unwrap();
    for n in 0..VALUES {
        writer
            .put(&key, vec![n as u8; 1 << 20], None)
            .await
            .unwrap_or_else(|e| panic!("cannot build the 24 MiB key (value {n}): {e}"));
    }
    cluster
        .grant(ATTACKER_USER, ATTACKER_PREFIX, &["read", "write"])
        .await;
    // Once every node sees the grant (within `security.cache_ms`) the attacker reads it all.
    let reader = dynamokv_client::Client::builder([cluster.addr(2).to_string()])
        .coordination(dynamokv_client::Coordination::Server)
        .ca_cert(cluster.cert_path("ca.pem"))
        .token(cluster.attacker_token.clone())
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match reader.get(&key).await {
            Ok(got) if got.values.len() == VALUES => break,
            other => assert!(
                Instant::now() < end,
                "the 24 MiB key is not readable by the attacker: {:?}",
                other.map(|g| g.values.len())
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((writer, reader));
    let target = Target::of(&cluster);
    let (run, found) = under_attack(&cluster, move |stop| {
        floods::read_storm(target, 2, key, stop)
    })
    .await;
    let notes = format!(
        "to node-2: {} ({} MiB read), slowest get {} ms",
        found.answers.lock().unwrap(),
        found.bytes.load(std::sync::atomic::Ordering::Relaxed) >> 20,
        found.slowest_ms.load(std::sync::atomic::Ordering::Relaxed)
    );
    judge(cluster, "7 large-value read storm", run, notes, Vec::new()).await;
}

/// 8. A removed node's certificate: certificates from the cluster's CA for a node that never
///    joined (`node-9`) and for a member that was removed (`node-3`) read the reserved user
///    records, list users, and mint a token for the legitimate user. Each must be refused, and
///    the user's tokens must be what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_8_foreign_node_certificates() {
    let _serial = begin().await;
    let cluster = SecureCluster::start(Options {
        removed_member: true,
    })
    .await;
    let removed = cluster.removed.clone().unwrap();
    let stems = vec![
        hostile::issue_node_certificate(&cluster, "node-9"),
        format!("node-{removed}"),
    ];
    let tokens_before = cluster.token_ids(LEGIT_USER).await.unwrap();
    let target = Target::of(&cluster);
    let (run, found) = under_attack(&cluster, move |stop| {
        hostile::foreign_certificates(target, stems, stop)
    })
    .await;
    let mut own = Vec::new();
    let mut figures = Vec::new();
    for ((stem, call), tally) in &found.answers {
        figures.push(format!("{stem} {call}: {tally}"));
        let accepted: u64 = tally
            .0
            .iter()
            .filter(|(k, _)| !hostile::is_refusal(k))
            .map(|(_, v)| v)
            .sum();
        if accepted > 0 {
            own.push(format!(
                "the certificate {stem} was not refused {accepted} times to {call}: {tally}"
            ));
        }
    }
    for (token, used) in &found.minted {
        if used.is_ok() {
            let shown = &token[..token.len().min(24)];
            own.push(format!(
                "a token it minted ({shown}...) read the legitimate user's data"
            ));
        }
    }
    match cluster.token_ids(LEGIT_USER).await {
        Ok(after) if after == tokens_before => {}
        Ok(after) => own.push(format!(
            "the legitimate user's tokens changed from {tokens_before:?} to {after:?}"
        )),
        Err(e) => own.push(format!("cannot list the legitimate user's tokens: {e}")),
    }
    judge(
        cluster,
        "8 foreign node certificates",
        run,
        figures.join("; "),
        own,
    )
    .await;
}

/// 9. Slowloris: 4,100 connections to each node sending a byte a second and never finishing:
///    half the HTTP/2 preface and a HEADERS frame in plain text, three in eight a TLS
///    ClientHello, one in eight the preface and HEADERS over TLS without a certificate (few
///    handshakes, as in scenario 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_9_slowloris() {
    let _serial = begin().await;
    let (per_node, scaled) = flood_size();
    let cluster = SecureCluster::start(Options::default()).await;
    let limits = node_file_limits(&cluster);
    let target = Target::of(&cluster);
    let (run, found) = under_attack_once_ready(&cluster, move |stop, ready| {
        floods::hold_connections(
            target,
            per_node,
            [
                [Hold::DribblePlain; 4].as_slice(),
                &[Hold::DribbleHandshake; 3],
                &[Hold::DribbleTls],
            ]
            .concat(),
            stop,
            ready,
        )
    })
    .await;
    let notes = format!(
        "{per_node} a node, {} held at most ({} made, {} closed by the nodes, {} failed), {} bytes dribbled; {}; {limits}{}",
        found.held.peak(),
        found.established.load(std::sync::atomic::Ordering::Relaxed),
        found
            .closed_by_node
            .load(std::sync::atomic::Ordering::Relaxed),
        found
            .failed_to_connect
            .load(std::sync::atomic::Ordering::Relaxed),
        found
            .bytes_dribbled
            .load(std::sync::atomic::Ordering::Relaxed),
        refused_at_cap(&cluster).await,
        scaled.map(|s| format!("; {s}")).unwrap_or_default()
    );
    judge(cluster, "9 slowloris", run, notes, Vec::new()).await;
}

#[test]
fn beyond_limits_names_what_is_over() {
    let ok = pb::VersionedState {
        clock: Some(pb::VersionVector {
            entries: vec![pb::ClockEntry {
                actor: 1,
                counter: 1,
                timestamp_ms: hostile::now_ms(),
            }],
            cloud: Vec::new(),
        }),
        siblings: Vec::new(),
        retired: Vec::new(),
    };
    assert_eq!(beyond_limits(&ok), None);
    let mut dated = ok.clone();
    dated.retired = vec![pb::RetiredWrite {
        write_id: bytes::Bytes::from_static(&[0; 16]),
        retired_at_ms: u64::MAX,
    }];
    assert!(beyond_limits(&dated).unwrap().contains("1 dates"));
}

#[test]
fn flood_size_leaves_room_for_everything_else() {
    let (n, why) = flood_size();
    assert!(n <= FLOOD_PER_NODE);
    assert_eq!(why.is_some(), n < FLOOD_PER_NODE);
}
