//! The attacker: where it runs, what it knows of the cluster, and the attacks made of
//! well-formed gRPC calls (forged contexts, token spraying, repair abuse, foreign node
//! certificates). The attacks made of raw connections and frames are in `floods`.
//!
//! An attack runs on threads of its own (its own tokio runtime), so that its tasks never delay
//! the legitimate client's; it runs at the same CPU priority as the nodes and the client, as
//! the machine's other processes do. (At a lower one, an attack's strength would depend on
//! what else the machine runs: a niced attacker beside a compiler got a tenth of the
//! connections it asked for.) What an attack must not do to this machine rather than to the
//! cluster (exhaust this process's files, say) is scaled where it is defined.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use dynamokv_common::versioning::MAX_COUNTER;
use dynamokv_common::{CausalContext, inspect_context};
use dynamokv_proto::v1 as pb;
use dynamokv_proto::v1::admin_client::AdminClient;
use dynamokv_proto::v1::kv_client::KvClient;

use super::cluster::{ATTACKER_PREFIX, CLUSTER, LEGIT_USER, SUPERUSER, SecureCluster};

/// What the attacker knows of the cluster: where the nodes are, the CA (public), its own
/// token, and the certificate directory (for the credentials a scenario hands it, such as a
/// node certificate).
#[derive(Debug, Clone)]
pub struct Target {
    pub addrs: Vec<SocketAddr>,
    pub certs: PathBuf,
    pub attacker_token: String,
    ca_pem: Vec<u8>,
}

impl Target {
    pub fn of(cluster: &SecureCluster) -> Target {
        Target {
            addrs: cluster.addrs(),
            certs: cluster.certs(),
            attacker_token: cluster.attacker_token.clone(),
            ca_pem: cluster.ca_pem(),
        }
    }

    /// TLS trusting the cluster's CA, presenting `<stem>.pem` from the certificate directory,
    /// or no certificate.
    pub fn tls(&self, stem: Option<&str>) -> Arc<rustls::ClientConfig> {
        let read = |name: String| std::fs::read(self.certs.join(name)).unwrap();
        let identity = stem.map(|s| (read(format!("{s}.pem")), read(format!("{s}.key"))));
        Arc::new(
            dynamokv_proto::tls::client_config(
                &self.ca_pem,
                identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )
            .unwrap(),
        )
    }

    /// A TLS channel to node `i` (made in the attacker's runtime, which drives it).
    pub fn channel(&self, i: usize, tls: &Arc<rustls::ClientConfig>) -> Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.addrs[i])).unwrap();
        dynamokv_proto::tls::connect_lazy(
            &endpoint,
            dynamokv_proto::tls::ClientTls::new((**tls).clone()),
        )
    }

    /// The client service of node `i` over TLS without a certificate (tokens go per call).
    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i, &self.tls(None)))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req.set_timeout(Duration::from_secs(10));
    req
}

/// A refusal's `dynamokv-error` code, or else its gRPC code.
pub fn code_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(dynamokv_common::error_code::ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("grpc {:?}", status.code()))
}

/// Whether a refusal says "who are you" or "not you": what a caller without the right gets.
pub fn is_refusal(code: &str) -> bool {
    matches!(
        code,
        "UNAUTHENTICATED" | "PERMISSION_DENIED" | "grpc Unauthenticated" | "grpc PermissionDenied"
    )
}

/// An attack under way on its own threads.
#[derive(Debug)]
pub struct Attack<T> {
    stop: CancellationToken,
    ready: CancellationToken,
    /// Taken by [`Attack::stop`].
    thread: Option<std::thread::JoinHandle<T>>,
}

impl<T> Drop for Attack<T> {
    /// An attack dropped without being stopped (its scenario failed early) stops anyway, rather
    /// than going on against the scenarios after it.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts `attack` on a runtime of its own (two worker threads). It is handed two tokens:
/// the first is cancelled when it must stop (it must return soon after), the second it
/// cancels itself once its pressure is fully on (connections made, streams open).
pub fn launch<F, Fut, T>(attack: F) -> Attack<T>
where
    F: FnOnce(CancellationToken, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let stop = CancellationToken::new();
    let ready = CancellationToken::new();
    let (stop_token, ready_token) = (stop.clone(), ready.clone());
    let thread = std::thread::Builder::new()
        .name("attacker".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("attacker")
                .enable_all()
                .build()
                .unwrap();
            let found = runtime.block_on(attack(stop_token, ready_token));
            // Whatever it left running (connections held, streams open) ends here.
            runtime.shutdown_timeout(Duration::from_secs(5));
            found
        })
        .unwrap();
    Attack {
        stop,
        ready,
        thread: Some(thread),
    }
}

impl<T: Send + 'static> Attack<T> {
    /// Waits until the attack says its pressure is fully on, or `deadline` passes; whether it
    /// did.
    pub async fn ready(&self, deadline: Duration) -> bool {
        tokio::select! {
            () = self.ready.cancelled() => true,
            () = tokio::time::sleep(deadline) => false,
        }
    }

    /// Stops the attack; what it found. Its connections are closed when this returns.
    pub async fn stop(mut self) -> T {
        self.stop.cancel();
        let thread = self.thread.take().expect("stopped once");
        tokio::task::spawn_blocking(move || {
            let end = std::time::Instant::now() + Duration::from_secs(60);
            while !thread.is_finished() {
                assert!(
                    std::time::Instant::now() < end,
                    "the attack did not stop within 60 s of being told to (a harness bug)"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            thread.join().expect("the attack panicked")
        })
        .await
        .unwrap()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Counts outcomes by name.
#[derive(Debug, Default, Clone)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_insert(0) += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{v} {k}")).collect();
        f.write_str(&parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Forged contexts

/// How far a forged context moves an actor's counter.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// To the largest counter a version vector may hold, 2^63 - 1.
    Max,
    /// This many events past the one the context was issued for: events that have not
    /// happened yet.
    Ahead(u64),
}

/// A claim a forged context makes: to have seen the events of the actor that wrote the write
/// `context` (a context the cluster issued for `key`, in reply to a blind put) covers, up to
/// `counter`.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub key: &'a [u8],
    pub context: &'a [u8],
    pub counter: Counter,
}

/// A forged context: its bytes, and the (actor, counter) of each claim it makes.
#[derive(Debug, Clone)]
pub struct Forged {
    pub bytes: Vec<u8>,
    pub claimed: Vec<(u64, u64)>,
}

/// The bytes before a context's protobuf `SignedContext`: `"DKV" 0x03` and the key's 8-byte
/// tag.
const CONTEXT_HEADER: usize = 4 + 8;

/// A context for `key` that says what `issued` (a context the cluster issued for `key`) says,
/// plus each of `claims`: every fragment of `issued` keeps its signer, key id and MAC, and its
/// body (the causal context it signs) gets the claimed counters. This is all a client can do
/// without a node's secret, and it must be refused (before contexts were signed, the same
/// edit behind a recomputed CRC was taken). The only code here that knows the format.
pub fn forge_context(key: &[u8], issued: &[u8], claims: &[Claim<'_>]) -> Forged {
    inspect_context(key, issued).expect("a context the cluster issued for the key");
    let mut raised = Vec::new();
    for claim in claims {
        let (seen, _) = inspect_context(claim.key, claim.context)
            .expect("a context the cluster issued decodes");
        // The write the context was issued for: its actor's latest event in it.
        let (actor, counter) = seen
            .clock
            .iter()
            .map(|(a, c, _)| (a, c))
            .chain(seen.clock.cloud().map(|d| (d.actor, d.counter)))
            .max_by_key(|(_, c)| *c)
            .expect("a put's context names the write");
        let to = match claim.counter {
            Counter::Max => MAX_COUNTER,
            Counter::Ahead(n) => counter.saturating_add(n).min(MAX_COUNTER),
        };
        raised.push((actor, to));
    }
    let mut signed = pb::SignedContext::decode(&issued[CONTEXT_HEADER..])
        .expect("a context the cluster issued decodes");
    for fragment in &mut signed.fragments {
        let body = pb::CausalContext::decode(fragment.body.as_ref())
            .expect("a context the cluster issued decodes");
        let mut ctx = CausalContext::from_proto(&body).expect("a signed body is a context");
        for (actor, to) in &raised {
            ctx.clock.insert(*actor, *to, 0);
        }
        fragment.body = ctx.to_proto().encode_to_vec().into();
    }
    let mut bytes = issued[..CONTEXT_HEADER].to_vec();
    bytes.extend_from_slice(&signed.encode_to_vec());
    Forged {
        bytes,
        claimed: raised.iter().map(|(a, c)| (a.0, *c)).collect(),
    }
}

/// One forged put and how the node took it.
#[derive(Debug, Clone)]
pub struct Forgery {
    pub what: String,
    pub key: String,
    /// The node whose actor the forgery names.
    pub node: usize,
    /// What the forged context claimed: (actor, counter).
    pub claimed: Vec<(u64, u64)>,
    /// `Ok` if accepted, else the refusal's code.
    pub outcome: Result<(), String>,
}

/// What the forged-context attack did.
#[derive(Debug, Default)]
pub struct ForgedFindings {
    pub forgeries: Vec<Forgery>,
    /// Keys the attacker wrote blind (value: the key) and then sent a forged context for: they
    /// must hold exactly that value and no counter near the forged ones.
    pub probes: Vec<String>,
    /// The key another writer wrote after the attacker's last genuine context of it, and the
    /// values it was acknowledged for: each must survive.
    pub victim: Option<(String, Vec<Vec<u8>>)>,
    /// Steps of the attack that failed before any forgery (no context to forge from).
    pub setup_failures: Vec<String>,
}

/// A blind put of `key` (value: the key) by the attacker through node `i`: its context.
async fn blind_put(
    kv: &mut KvClient<Channel>,
    token: &str,
    key: &str,
    value: &[u8],
    context: Vec<u8>,
) -> Result<Vec<u8>, String> {
    kv.put(with_token(
        pb::PutRequest {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value)),
            context: context.into(),
            write_id: Bytes::copy_from_slice(&rand::random::<[u8; 16]>()),
            attempt: 1,
            ..Default::default()
        },
        token,
    ))
    .await
    .map(|r| r.into_inner().context.to_vec())
    .map_err(|s| code_of(&s))
}

/// The forged-context attack (scenario 1), by a user with write on [`ATTACKER_PREFIX`] only:
///
/// - **supersede**: the attacker writes `evil:victim` blind through node-0; another writer
///   (the superuser, standing in for anyone else who may write the key) then writes it three
///   times through node-1, each acknowledged; the attacker puts again with its context plus a
///   claim to have seen node-1's actor a million events ahead of what its own put through
///   node-1 showed: those later acknowledged writes, which it never saw, would be superseded.
/// - **poison**: for each node, a blind put through it, then a put whose context names that
///   node's own actor (the coordinator's) at 2^63 - 1.
///
/// then poisons again on fresh keys every 250 ms until stopped. Every forged put should be
/// refused with INVALID_CONTEXT and change nothing.
pub async fn forged_contexts(target: Target, stop: CancellationToken) -> ForgedFindings {
    let token = target.attacker_token.clone();
    let mut found = ForgedFindings::default();
    let mut kv: Vec<KvClient<Channel>> = (0..target.addrs.len()).map(|i| target.kv(i)).collect();

    // What each node's contexts say: the attacker's own blind put through each.
    let mut issued = Vec::new();
    for (i, kv) in kv.iter_mut().enumerate() {
        let key = format!("{ATTACKER_PREFIX}probe-{i}-0");
        match blind_put(kv, &token, &key, key.as_bytes(), Vec::new()).await {
            Ok(ctx) => issued.push(Some((key, ctx))),
            Err(code) => {
                found
                    .setup_failures
                    .push(format!("blind put of {key} via node-{i}: {code}"));
                issued.push(None);
            }
        }
    }

    // Supersede later acknowledged writes of another writer.
    let victim = format!("{ATTACKER_PREFIX}victim");
    if let (Ok(own), Some((probe, probe_ctx))) = (
        blind_put(&mut kv[0], &token, &victim, b"attacker", Vec::new()).await,
        issued[1].clone(),
    ) {
        let other = superuser_client(&target, 1);
        let mut acked = Vec::new();
        for n in 1..=3 {
            let value = format!("acknowledged-{n}").into_bytes();
            match other.put(&victim, value.clone(), None).await {
                Ok(_) => acked.push(value),
                Err(e) => found
                    .setup_failures
                    .push(format!("the other writer's put of {victim}: {e}")),
            }
        }
        found.victim = Some((victim.clone(), acked));
        let forged = forge_context(
            victim.as_bytes(),
            &own,
            &[Claim {
                key: probe.as_bytes(),
                context: &probe_ctx,
                counter: Counter::Ahead(1_000_000),
            }],
        );
        let outcome = blind_put(&mut kv[0], &token, &victim, b"forged", forged.bytes)
            .await
            .map(drop);
        found.forgeries.push(Forgery {
            what: "supersede node-1's next million events".into(),
            key: victim,
            node: 1,
            claimed: forged.claimed,
            outcome,
        });
    } else {
        found
            .setup_failures
            .push("no genuine context of the victim key or of node-1".into());
    }

    // Poison every node, then again on fresh keys until stopped.
    let mut round = 0;
    loop {
        for (i, kv) in kv.iter_mut().enumerate() {
            let (key, ctx) = if round == 0 {
                match &issued[i] {
                    Some(x) => x.clone(),
                    None => continue,
                }
            } else {
                let key = format!("{ATTACKER_PREFIX}probe-{i}-{round}");
                match blind_put(kv, &token, &key, key.as_bytes(), Vec::new()).await {
                    Ok(ctx) => (key, ctx),
                    // A poisoned node no longer writes: nothing to forge from.
                    Err(_) => continue,
                }
            };
            let forged = forge_context(
                key.as_bytes(),
                &ctx,
                &[Claim {
                    key: key.as_bytes(),
                    context: &ctx,
                    counter: Counter::Max,
                }],
            );
            let outcome = blind_put(kv, &token, &key, b"forged", forged.bytes)
                .await
                .map(drop);
            found.forgeries.push(Forgery {
                what: format!("poison node-{i} (its own actor at 2^63-1)"),
                key: key.clone(),
                node: i,
                claimed: forged.claimed,
                outcome,
            });
            found.probes.push(key);
        }
        round += 1;
        tokio::select! {
            () = stop.cancelled() => return found,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// A client of node `i` alone, as the superuser (server-driven: that node coordinates).
fn superuser_client(target: &Target, i: usize) -> dynamokv_client::Client {
    let path = |n: &str| target.certs.join(n).display().to_string();
    dynamokv_client::Client::builder([target.addrs[i].to_string()])
        .coordination(dynamokv_client::Coordination::Server)
        .ca_cert(path("ca.pem"))
        .client_cert(path(&format!("user-{SUPERUSER}.pem")))
        .client_key(path(&format!("user-{SUPERUSER}.key")))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 5. Token spraying

/// A well-formed token of a user that does not exist.
fn random_token() -> String {
    let user: u64 = rand::random();
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("dkv1.u{user:016x}.{hex}")
}

/// Gets with a fresh random user's token each, from 32 callers per node on two connections
/// each, as fast as the nodes answer, until stopped: what each call was answered.
pub async fn token_spray(target: Target, stop: CancellationToken) -> Tally {
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..target.addrs.len() {
        for _ in 0..2 {
            let kv = target.kv(i);
            for _ in 0..16 {
                let (mut kv, stop) = (kv.clone(), stop.clone());
                callers.spawn(async move {
                    let mut tally = Tally::default();
                    while !stop.is_cancelled() {
                        let req = with_token(
                            pb::GetRequest {
                                key: Some(Bytes::from_static(b"legit:w0-1")),
                                ..Default::default()
                            },
                            &random_token(),
                        );
                        tokio::select! {
                            () = stop.cancelled() => break,
                            got = kv.get(req) => tally.add(match got {
                                Ok(_) => "answered".to_string(),
                                Err(s) => code_of(&s),
                            }),
                        }
                    }
                    tally
                });
            }
        }
    }
    let mut all = Tally::default();
    while let Some(t) = callers.join_next().await {
        for (k, v) in t.unwrap().0 {
            *all.0.entry(k).or_insert(0) += v;
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// 6. Repair abuse

/// Siblings in the "many siblings" state.
pub const REPAIR_SIBLINGS: usize = 5_000;
/// Retired writes in the "endless history" state, each dated 2^64 - 1 ms.
pub const REPAIR_HISTORY: usize = 20_000;
/// Entries in the "wide clock" state.
pub const REPAIR_CLOCK: usize = 20_000;
/// Values in each half of the 40 MiB object (1 MiB each, a sibling each).
const REPAIR_HALF_VALUES: usize = 20;

fn write_id() -> Bytes {
    Bytes::copy_from_slice(&rand::random::<[u8; 16]>())
}

fn sibling(actor: u64, counter: u64, value: Bytes) -> pb::Sibling {
    pb::Sibling {
        actor,
        counter,
        value,
        tombstone: false,
        timestamp_ms: now_ms(),
        write_id: write_id(),
    }
}

fn entry(actor: u64, counter: u64) -> pb::ClockEntry {
    pb::ClockEntry {
        actor,
        counter,
        timestamp_ms: now_ms(),
    }
}

/// `n` concurrent small values under one made-up actor.
fn many_siblings(n: usize) -> pb::VersionedState {
    let a: u64 = rand::random();
    pb::VersionedState {
        clock: Some(pb::VersionVector {
            entries: vec![entry(a, n as u64)],
            cloud: Vec::new(),
        }),
        siblings: (1..=n as u64)
            .map(|c| sibling(a, c, Bytes::from(format!("sibling-{c}"))))
            .collect(),
        retired: Vec::new(),
    }
}

/// Half of a 40 MiB object: [`REPAIR_HALF_VALUES`] values of 1 MiB under one made-up actor
/// (each message stays under the nodes' request size limit; merged, the halves are 40 MiB).
fn big_half() -> pb::VersionedState {
    let a: u64 = rand::random();
    let value = Bytes::from(vec![0x42u8; 1 << 20]);
    pb::VersionedState {
        clock: Some(pb::VersionVector {
            entries: vec![entry(a, REPAIR_HALF_VALUES as u64)],
            cloud: Vec::new(),
        }),
        siblings: (1..=REPAIR_HALF_VALUES as u64)
            .map(|c| sibling(a, c, value.clone()))
            .collect(),
        retired: Vec::new(),
    }
}

/// One value and `n` superseded writes dated the end of time (never forgotten).
fn endless_history(n: usize) -> pb::VersionedState {
    let a: u64 = rand::random();
    pb::VersionedState {
        clock: Some(pb::VersionVector {
            entries: vec![entry(a, 1)],
            cloud: Vec::new(),
        }),
        siblings: vec![sibling(a, 1, Bytes::from_static(b"history"))],
        retired: (0..n)
            .map(|_| pb::RetiredWrite {
                write_id: write_id(),
                retired_at_ms: u64::MAX,
            })
            .collect(),
    }
}

/// One value and a clock of `n` actors.
fn wide_clock(n: usize) -> pb::VersionedState {
    let actors: Vec<u64> = (0..n).map(|_| rand::random()).collect();
    pb::VersionedState {
        clock: Some(pb::VersionVector {
            entries: actors.iter().map(|a| entry(*a, 1)).collect(),
            cloud: Vec::new(),
        }),
        siblings: vec![sibling(actors[0], 1, Bytes::from_static(b"wide"))],
        retired: Vec::new(),
    }
}

/// What the repair abuse sent and how each was answered.
#[derive(Debug, Default)]
pub struct RepairFindings {
    /// Every key a state was sent for.
    pub keys: Vec<String>,
    /// Answers by kind of state: `accepted` or the refusal's code.
    pub answers: BTreeMap<&'static str, Tally>,
    pub rounds: u64,
}

/// `Kv.RepairReplica` with states no replica would hold, to every node, in rounds until
/// stopped: 5,000 siblings, 20,000 history entries dated 2^64-1, a 20,000-entry clock (each
/// round on fresh keys), and a 40 MiB object in two halves (the same two, to one key, every
/// fourth round: the object stays 40 MiB).
pub async fn repair_abuse(target: Target, stop: CancellationToken) -> RepairFindings {
    let token = target.attacker_token.clone();
    let mut kv: Vec<KvClient<Channel>> = (0..target.addrs.len()).map(|i| target.kv(i)).collect();
    let mut found = RepairFindings::default();
    let big_key = format!("{ATTACKER_PREFIX}repair-big");
    let halves = [big_half(), big_half()];
    found.keys.push(big_key.clone());
    let mut round = 0u64;
    while !stop.is_cancelled() {
        let mut sends: Vec<(&'static str, String, pb::VersionedState)> = vec![
            (
                "5,000 siblings",
                format!("{ATTACKER_PREFIX}repair-siblings-{round}"),
                many_siblings(REPAIR_SIBLINGS),
            ),
            (
                "20,000 history entries dated 2^64-1",
                format!("{ATTACKER_PREFIX}repair-history-{round}"),
                endless_history(REPAIR_HISTORY),
            ),
            (
                "20,000-entry clock",
                format!("{ATTACKER_PREFIX}repair-clock-{round}"),
                wide_clock(REPAIR_CLOCK),
            ),
        ];
        if round % 4 == 0 {
            for half in &halves {
                sends.push(("40 MiB object (two halves)", big_key.clone(), half.clone()));
            }
        }
        for (kind, key, state) in sends {
            if !found.keys.contains(&key) {
                found.keys.push(key.clone());
            }
            for kv in &mut kv {
                let req = with_token(
                    pb::RepairReplicaRequest {
                        key: Some(Bytes::copy_from_slice(key.as_bytes())),
                        state: Some(state.clone()),
                        // Today's message: a state, no sources.
                        ..Default::default()
                    },
                    &token,
                );
                let answer = tokio::select! {
                    () = stop.cancelled() => return found,
                    r = kv.repair_replica(req) => match r {
                        Ok(_) => "accepted".to_string(),
                        Err(s) => code_of(&s),
                    },
                };
                found.answers.entry(kind).or_default().add(answer);
            }
        }
        round += 1;
        found.rounds = round;
    }
    found
}

// ---------------------------------------------------------------------------------------------
// 8. Foreign node certificates

/// What the holders of foreign node certificates tried, and how each call was answered.
#[derive(Debug, Default)]
pub struct CertificateFindings {
    /// `(certificate, call)` -> answers: `accepted` or the refusal's code.
    pub answers: BTreeMap<(String, &'static str), Tally>,
    /// Tokens minted for the legitimate user by a foreign certificate, and whether each then
    /// read the user's data.
    pub minted: Vec<(String, Result<(), String>)>,
}

/// With each of `stems` (node certificates in the certificate directory: of a node that never
/// joined, of a removed node), every 200 ms until stopped, through the nodes in turn: a read
/// of the legitimate user's record under the reserved prefix, a user list, and a token minted
/// for the legitimate user (then used to read its data). Each should be refused.
pub async fn foreign_certificates(
    target: Target,
    stems: Vec<String>,
    stop: CancellationToken,
) -> CertificateFindings {
    let mut found = CertificateFindings::default();
    let channels: Vec<Vec<Channel>> = stems
        .iter()
        .map(|s| {
            let tls = target.tls(Some(s));
            (0..target.addrs.len())
                .map(|i| target.channel(i, &tls))
                .collect()
        })
        .collect();
    let reserved = Bytes::from(format!("\0dynamokv/user/{LEGIT_USER}"));
    let mut turn = 0usize;
    while !stop.is_cancelled() {
        for (stem, channels) in stems.iter().zip(&channels) {
            let channel = channels[turn % channels.len()].clone();
            turn += 1;
            let mut kv = KvClient::new(channel.clone());
            let mut admin = AdminClient::new(channel);
            let mut note = |call: &'static str, answer: String| {
                found
                    .answers
                    .entry((stem.clone(), call))
                    .or_default()
                    .add(answer);
            };
            let read = kv
                .get(pb::GetRequest {
                    key: Some(reserved.clone()),
                    ..Default::default()
                })
                .await;
            note(
                "read \\0dynamokv/user/legit",
                read.map_or_else(|s| code_of(&s), |_| "accepted".into()),
            );
            let list = admin.user_list(pb::UserListRequest {}).await;
            note(
                "list users",
                list.map_or_else(|s| code_of(&s), |_| "accepted".into()),
            );
            let minted = admin
                .token_add(pb::TokenAddRequest {
                    user: LEGIT_USER.into(),
                })
                .await;
            match minted {
                Err(s) => note("mint a token for legit", code_of(&s)),
                Ok(r) => {
                    note("mint a token for legit", "accepted".into());
                    let token = r.into_inner().token;
                    let used = target
                        .kv(0)
                        .get(with_token(
                            pb::GetRequest {
                                key: Some(Bytes::from_static(b"legit:w1-1")),
                                ..Default::default()
                            },
                            &token,
                        ))
                        .await
                        .map(drop)
                        .map_err(|s| code_of(&s));
                    found.minted.push((token, used));
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    found
}

/// Issues a certificate of the cluster's CA for node `id` (which never joined) into the
/// certificate directory; its stem.
pub fn issue_node_certificate(cluster: &SecureCluster, id: &str) -> String {
    let ca = dynamokv_server::certificates::read_ca(&cluster.certs()).unwrap();
    let pem = dynamokv_server::certificates::issue_node(&ca, CLUSTER, id, &[], 1).unwrap();
    let stem = format!("foreign-{id}");
    dynamokv_server::certificates::write_pair(&cluster.certs(), &stem, &pem, false).unwrap();
    stem
}
