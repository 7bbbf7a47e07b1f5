//! The legitimate client: a steady load of puts of fresh keys (the value is the key), each
//! read back, through `dynamokv_client::Client` with its default options (client-driven
//! coordination), every request recorded (when it started, how long it took, how it ended).
//!
//! The load is paced, not as fast as the cluster answers: a saturated machine would measure
//! its own queueing, and the point is how an attack changes what an ordinary client sees.
//! Most workers keep one client for the whole run, as an application server does; one makes
//! a new client (new connections, a TLS handshake with each node) for every pair, as clients
//! arriving during an attack do: attacks on connections hurt only those.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dynamokv_client::Client;

use super::cluster::{LEGIT_PREFIX, LEGIT_USER, SecureCluster};

/// Workers that keep their client.
const STEADY_WORKERS: usize = 4;
/// Each starts a pair this often: 125 pairs (250 requests) a second each.
const STEADY_PERIOD: Duration = Duration::from_millis(8);
/// The worker that makes a new client for each pair starts one this often.
const ARRIVING_PERIOD: Duration = Duration::from_millis(40);

/// How a put ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acknowledged,
    /// The client cannot know whether the write was applied.
    Unknown,
    Failed,
}

/// One request as the client saw it.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub start: Instant,
    pub took: Duration,
    /// The error code of a failed request (`WRONG_VALUE`: a get that answered without the
    /// acknowledged value); `None` if it succeeded.
    pub error: Option<&'static str>,
}

impl Request {
    /// Under way at some moment of `window`.
    fn overlaps(&self, window: &Window) -> bool {
        self.start < window.end && self.start + self.took > window.start
    }
}

/// A put of a fresh key and the get that followed it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub key: String,
    pub outcome: Outcome,
    pub put: Request,
    pub get: Request,
}

/// When the attack was under way.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

/// The legitimate requests under way at some moment of the attack.
#[derive(Debug, Default)]
pub struct During {
    pub requests: usize,
    pub succeeded: usize,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
    /// Failed requests by error code.
    pub errors: BTreeMap<&'static str, usize>,
}

impl During {
    pub fn of(pairs: &[Pair], window: &Window) -> During {
        let during: Vec<&Request> = pairs
            .iter()
            .flat_map(|p| [&p.put, &p.get])
            .filter(|r| r.overlaps(window))
            .collect();
        let mut latencies: Vec<Duration> = during.iter().map(|r| r.took).collect();
        latencies.sort();
        let mut errors = BTreeMap::new();
        for e in during.iter().filter_map(|r| r.error) {
            *errors.entry(e).or_insert(0) += 1;
        }
        During {
            requests: during.len(),
            succeeded: during.iter().filter(|r| r.error.is_none()).count(),
            p99: latencies
                .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
                .copied(),
            max: latencies.last().copied(),
            errors,
        }
    }

    /// Succeeded requests as a share of all (0 when there were none: no load is no success).
    pub fn share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.requests as f64
        }
    }
}

/// What a legitimate client needs to connect.
#[derive(Debug, Clone)]
struct Credentials {
    seeds: Vec<String>,
    ca: String,
    token: String,
    cert: String,
    key: String,
}

impl Credentials {
    /// A client with the default options, authenticated by the user's token, or by its
    /// certificate.
    fn client(&self, by_certificate: bool) -> Client {
        let b = Client::builder(self.seeds.clone()).ca_cert(self.ca.clone());
        let b = if by_certificate {
            b.client_cert(self.cert.clone())
                .client_key(self.key.clone())
        } else {
            b.token(self.token.clone())
        };
        b.build().unwrap()
    }
}

/// The running load.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<Pair>>>,
}

impl Load {
    /// Starts the workers against `cluster`.
    pub fn start(cluster: &SecureCluster) -> Load {
        let credentials = Credentials {
            seeds: cluster.seeds(),
            ca: cluster.cert_path("ca.pem"),
            token: cluster.legit_token.clone(),
            cert: cluster.cert_path(&format!("user-{LEGIT_USER}.pem")),
            key: cluster.cert_path(&format!("user-{LEGIT_USER}.key")),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..=STEADY_WORKERS {
            let arriving = w == STEADY_WORKERS;
            let (credentials, stop, done) =
                (credentials.clone(), Arc::clone(&stop), Arc::clone(&done));
            workers.push(tokio::spawn(async move {
                // One steady worker authenticates by certificate, the others by token.
                let kept = (!arriving).then(|| credentials.client(w == 0));
                let period = if arriving {
                    ARRIVING_PERIOD
                } else {
                    STEADY_PERIOD
                };
                let mut log = Vec::new();
                let mut next = Instant::now();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("{LEGIT_PREFIX}w{w}-{i}");
                    let fresh;
                    let client = match &kept {
                        Some(c) => c,
                        None => {
                            fresh = credentials.client(false);
                            &fresh
                        }
                    };
                    log.push(pair(client, key).await);
                    done.fetch_add(1, Ordering::Relaxed);
                    // Paced: the next pair starts a period after this one did, or at once if
                    // this one took longer (no burst to catch up).
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        tokio::time::sleep_until(next.into()).await;
                    } else {
                        next = now;
                    }
                }
                log
            }));
        }
        Load {
            stop,
            done,
            workers,
        }
    }

    /// Waits until `pairs` more pairs have finished (whatever their outcome).
    pub async fn run_for(&self, pairs: usize) {
        let target = self.done.load(Ordering::Relaxed) + pairs;
        let end = Instant::now() + Duration::from_secs(60);
        while self.done.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < end,
                "the legitimate load stalled: {} of {target} pairs done",
                self.done.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the workers; every pair they made.
    pub async fn finish(self) -> Vec<Pair> {
        self.stop.store(true, Ordering::Relaxed);
        let mut pairs = Vec::new();
        for w in self.workers {
            pairs.extend(w.await.unwrap());
        }
        pairs
    }
}

/// Puts `key` (its value is the key) and reads it back.
async fn pair(client: &Client, key: String) -> Pair {
    let t = Instant::now();
    let put = client.put(&key, key.clone().into_bytes(), None).await;
    let took = t.elapsed();
    let (outcome, error) = match &put {
        Ok(_) => (Outcome::Acknowledged, None),
        Err(e) if e.code() == "OUTCOME_UNKNOWN" => (Outcome::Unknown, Some(e.code())),
        Err(e) => (Outcome::Failed, Some(e.code())),
    };
    let put = Request {
        start: t,
        took,
        error,
    };
    let t = Instant::now();
    let error = match client.get(&key).await {
        Ok(got) if outcome == Outcome::Acknowledged && got.values != [key.as_bytes()] => {
            Some("WRONG_VALUE")
        }
        Ok(got) if !got.values.is_empty() && got.values != [key.as_bytes()] => Some("WRONG_VALUE"),
        Ok(_) => None,
        Err(e) => Some(e.code()),
    };
    let get = Request {
        start: t,
        took: t.elapsed(),
        error,
    };
    Pair {
        key,
        outcome,
        put,
        get,
    }
}
