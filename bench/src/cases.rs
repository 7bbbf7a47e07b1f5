//! The cases: what is measured, on which system, under which load, compared with what.
//!
//! A [`Case`] is data: a system, a name, a [`Load`] and a [`Workload`], plus the ids of the
//! cases it is compared with. [`plan`] lists them all; `--only` filters the list; only then
//! are the systems the remaining cases need started, and [`op`] turns each workload into the
//! operation the runner calls. Adding a case is adding an entry to [`plan`] (and, for a new
//! kind of request, a [`Workload`] variant); a case on a differently configured cluster adds a
//! [`ClusterPlan`] whose [`ClusterSpec`] carries the extra config lines.
//!
//! Some cases come in [`Pair`]s reported side by side ([`Section`]): with `--baseline-bin`,
//! each DynamoKV case of the main cluster (one client: get, put, rmw, get-siblings; many in
//! flight: get, put, mixed) has a `dynamokv-baseline` twin on a cluster of the other binary,
//! run right after it in every round; and the puts with `sync_replicas = 1` per request
//! (`put-sync1/...`) are paired with the plain puts, which use the cluster's default of 0.
//!
//! Keys: `k<i>` are preloaded (gets and read-modify-writes pick one uniformly at random),
//! `s<i>` hold [`SIBLINGS`] siblings each, and every blind put writes a fresh `f<n>`, so a
//! key never accumulates siblings by accident.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use dynamokv_client::{Client, WriteOptions};
use serde::Serialize;
use tonic::transport::Channel;

use crate::cluster::ClusterSpec;
use crate::floor::{EchoFloor, RocksFloor, pb::echo_client::EchoClient};
use crate::redis;

/// The hedge delay of the hedged-get case: about the one-client get's p99 on this machine.
pub const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_micros(300);

/// Siblings per key in the sibling case.
pub const SIBLINGS: usize = 3;

/// The system a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Dynamokv,
    /// The same cases on a cluster of another `dynamokv` binary (`--baseline-bin`).
    DynamokvBaseline,
    /// The same cases on a cluster of this build serving TLS, the client authenticating with
    /// a client certificate (issue 11: the cost of TLS).
    DynamokvTls,
    GrpcFloor,
    RocksdbFloor,
    Redis,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Dynamokv => "dynamokv",
            System::DynamokvBaseline => "dynamokv-baseline",
            System::DynamokvTls => "dynamokv-tls",
            System::GrpcFloor => "grpc-floor",
            System::RocksdbFloor => "rocksdb-floor",
            System::Redis => "redis",
        }
    }
}

/// How requests are issued.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// Closed loop: `concurrency` workers, each sending its next request as soon as the
    /// previous one is answered. With 1 worker this is the sequential one-client case; with
    /// many it finds the maximum throughput.
    Closed { concurrency: usize },
    /// Open loop: requests sent on a fixed schedule, at `fraction` of the ops/s that the case
    /// `reference` (an id) reached in this run, whatever the answers do. If that case is not
    /// part of the run, this case's own operation is measured closed-loop with `concurrency`
    /// workers first.
    Open {
        reference: String,
        fraction: f64,
        concurrency: usize,
    },
}

/// How the cases are grouped in the table and plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    OneClient,
    InFlight,
    OpenLoop,
}

/// The request a case sends. `cluster` indexes [`Plan::clusters`].
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Get of a preloaded key.
    Get {
        cluster: usize,
    },
    /// Blind put (empty context) to a fresh key.
    Put {
        cluster: usize,
    },
    /// [`Get`](Self::Get) and [`Put`](Self::Put) with server-driven coordination: the request
    /// goes to one node (the seeds in turn), which coordinates it.
    GetServerDriven {
        cluster: usize,
    },
    /// [`Get`](Self::Get) with hedged reads: R replicas asked, one more after [`HEDGE_AFTER`].
    GetHedged {
        cluster: usize,
    },
    PutServerDriven {
        cluster: usize,
    },
    /// Blind put to a fresh key with `sync_replicas` of the W acknowledging replicas fsyncing
    /// their write-ahead log first (a per-request option).
    PutSync {
        cluster: usize,
        sync_replicas: u32,
    },
    /// Get of a preloaded key, then put with the get's context: the application pattern.
    ReadModifyWrite {
        cluster: usize,
    },
    /// Get of a key holding [`SIBLINGS`] siblings.
    GetSiblings {
        cluster: usize,
    },
    /// Gets with probability `read_share`, otherwise blind puts.
    Mixed {
        cluster: usize,
        read_share: f64,
    },
    /// A bare gRPC echo of a value-sized payload.
    Echo,
    RocksGet,
    RocksPut,
    RedisGet,
    /// SET then WAIT 1 0.
    RedisSetWait,
    RedisMixed {
        read_share: f64,
    },
}

impl Workload {
    pub fn cluster(&self) -> Option<usize> {
        match *self {
            Workload::Get { cluster }
            | Workload::Put { cluster }
            | Workload::GetServerDriven { cluster }
            | Workload::GetHedged { cluster }
            | Workload::PutServerDriven { cluster }
            | Workload::PutSync { cluster, .. }
            | Workload::ReadModifyWrite { cluster }
            | Workload::GetSiblings { cluster }
            | Workload::Mixed { cluster, .. } => Some(cluster),
            _ => None,
        }
    }

    /// The same workload against cluster `to` (unchanged if it uses no cluster).
    pub fn on_cluster(&self, to: usize) -> Workload {
        let mut w = self.clone();
        match &mut w {
            Workload::Get { cluster }
            | Workload::Put { cluster }
            | Workload::GetServerDriven { cluster }
            | Workload::GetHedged { cluster }
            | Workload::PutServerDriven { cluster }
            | Workload::PutSync { cluster, .. }
            | Workload::ReadModifyWrite { cluster }
            | Workload::GetSiblings { cluster }
            | Workload::Mixed { cluster, .. } => *cluster = to,
            _ => {}
        }
        w
    }

    /// The per-request `sync_replicas` of its writes, if it sets one.
    pub fn sync_replicas(&self) -> Option<u32> {
        match *self {
            Workload::PutSync { sync_replicas, .. } => Some(sync_replicas),
            _ => None,
        }
    }
}

/// The cases a DynamoKV case is compared with (ids), for the ratio columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versus {
    /// The gRPC one-hop floor.
    pub hop: Option<String>,
    /// The RocksDB floor.
    pub store: Option<String>,
    pub redis: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub system: System,
    pub name: String,
    pub load: Load,
    pub workload: Workload,
    pub versus: Versus,
}

impl Case {
    /// `system name`, unique in a run, e.g. `dynamokv get/1`.
    pub fn id(&self) -> String {
        format!("{} {}", self.system.as_str(), self.name)
    }

    pub fn group(&self) -> Group {
        match self.load {
            Load::Closed { concurrency: 1 } => Group::OneClient,
            Load::Closed { .. } => Group::InFlight,
            Load::Open { .. } => Group::OpenLoop,
        }
    }
}

/// Which side-by-side section a [`Pair`] is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// This build against the `--baseline-bin` build.
    Baseline,
    /// `sync_replicas = 1` against the default 0.
    Durability,
    /// A TLS cluster (client certificate, access control on) against the plain-text one.
    Tls,
}

/// Two cases reported side by side, with the ratios `ours / theirs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub section: Section,
    pub ours: String,
    pub theirs: String,
}

/// The other `dynamokv` binary the cases are also run against.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub binary: PathBuf,
    /// Names it in the report.
    pub label: String,
}

/// A DynamoKV cluster some cases run on.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// Names the cluster in messages and its directory.
    pub label: String,
    /// The `dynamokv` binary to run; `None`: this build's.
    pub binary: Option<PathBuf>,
    pub spec: ClusterSpec,
    /// Preloaded keys `k<i>`.
    pub keys: usize,
    /// Keys `s<i>` with [`SIBLINGS`] siblings, written only if a sibling case runs.
    pub sibling_keys: usize,
}

/// Every cluster and case of a run, in run order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub clusters: Vec<ClusterPlan>,
    pub cases: Vec<Case>,
    pub pairs: Vec<Pair>,
    pub baseline: Option<Baseline>,
}

/// The settings the plan depends on.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub keys: usize,
    pub concurrency: usize,
    pub read_share: f64,
    /// Stored-key counts of the scale cases.
    pub scale: Vec<usize>,
    pub baseline: Option<Baseline>,
}

fn case(system: System, name: &str, load: Load, workload: Workload, versus: Versus) -> Case {
    Case {
        system,
        name: name.to_string(),
        load,
        workload,
        versus,
    }
}

fn versus(hop: &str, store: Option<&str>, redis: Option<&str>) -> Versus {
    Versus {
        hop: Some(hop.to_string()),
        store: store.map(str::to_string),
        redis: redis.map(str::to_string),
    }
}

/// Every case, ordered so that each kind of load runs at about the same time for every
/// system, and closed loops run before the open loops that take their rate from them.
pub fn plan(o: &PlanOptions) -> Plan {
    use System::*;
    let c = o.concurrency;
    let one = Load::Closed { concurrency: 1 };
    let many = Load::Closed { concurrency: c };
    let open = |reference: String| Load::Open {
        reference,
        fraction: 0.5,
        concurrency: c,
    };
    let (hop1, hopc) = ("grpc-floor echo/1", format!("grpc-floor echo/{c}"));
    let main = 0;
    let mut clusters = vec![ClusterPlan {
        label: "main".into(),
        binary: None,
        spec: ClusterSpec::default(),
        keys: o.keys,
        sibling_keys: o.keys.clamp(1, 1000),
    }];
    let rs = o.read_share;

    let mut cases = vec![
        case(
            GrpcFloor,
            "echo/1",
            one.clone(),
            Workload::Echo,
            Versus::default(),
        ),
        case(
            RocksdbFloor,
            "get/1",
            one.clone(),
            Workload::RocksGet,
            Versus::default(),
        ),
        case(
            RocksdbFloor,
            "put/1",
            one.clone(),
            Workload::RocksPut,
            Versus::default(),
        ),
        case(
            Redis,
            "get/1",
            one.clone(),
            Workload::RedisGet,
            Versus::default(),
        ),
        case(
            Redis,
            "set+wait/1",
            one.clone(),
            Workload::RedisSetWait,
            Versus::default(),
        ),
        case(
            Dynamokv,
            "get/1",
            one.clone(),
            Workload::Get { cluster: main },
            versus(hop1, Some("rocksdb-floor get/1"), Some("redis get/1")),
        ),
        case(
            Dynamokv,
            "put/1",
            one.clone(),
            Workload::Put { cluster: main },
            versus(hop1, Some("rocksdb-floor put/1"), Some("redis set+wait/1")),
        ),
        // The paper's Table 2 (section 6.4): the same get and put, coordinated by a node.
        case(
            Dynamokv,
            "get-server-driven/1",
            one.clone(),
            Workload::GetServerDriven { cluster: main },
            versus(hop1, Some("rocksdb-floor get/1"), Some("redis get/1")),
        ),
        case(
            Dynamokv,
            "get-hedged/1",
            one.clone(),
            Workload::GetHedged { cluster: main },
            versus(hop1, Some("rocksdb-floor get/1"), Some("redis get/1")),
        ),
        case(
            Dynamokv,
            "put-server-driven/1",
            one.clone(),
            Workload::PutServerDriven { cluster: main },
            versus(hop1, Some("rocksdb-floor put/1"), Some("redis set+wait/1")),
        ),
        case(
            Dynamokv,
            "put-sync1/1",
            one.clone(),
            Workload::PutSync {
                cluster: main,
                sync_replicas: 1,
            },
            versus(hop1, Some("rocksdb-floor put/1"), Some("redis set+wait/1")),
        ),
        case(
            Dynamokv,
            "rmw/1",
            one.clone(),
            Workload::ReadModifyWrite { cluster: main },
            versus(hop1, None, None),
        ),
        case(
            Dynamokv,
            "get-siblings/1",
            one.clone(),
            Workload::GetSiblings { cluster: main },
            versus(hop1, Some("rocksdb-floor get/1"), Some("redis get/1")),
        ),
    ];
    for &stored in &o.scale {
        let cluster = if stored == o.keys {
            main
        } else {
            clusters.push(ClusterPlan {
                label: format!("scale-{stored}"),
                binary: None,
                spec: ClusterSpec::default(),
                keys: stored,
                sibling_keys: 0,
            });
            clusters.len() - 1
        };
        cases.push(case(
            Dynamokv,
            &format!("get/1@{stored}"),
            one.clone(),
            Workload::Get { cluster },
            versus(hop1, Some("rocksdb-floor get/1"), Some("redis get/1")),
        ));
        cases.push(case(
            Dynamokv,
            &format!("put/1@{stored}"),
            one.clone(),
            Workload::Put { cluster },
            versus(hop1, Some("rocksdb-floor put/1"), Some("redis set+wait/1")),
        ));
    }
    cases.extend([
        case(
            GrpcFloor,
            &format!("echo/{c}"),
            many.clone(),
            Workload::Echo,
            Versus::default(),
        ),
        case(
            Redis,
            &format!("get/{c}"),
            many.clone(),
            Workload::RedisGet,
            Versus::default(),
        ),
        case(
            Redis,
            &format!("set+wait/{c}"),
            many.clone(),
            Workload::RedisSetWait,
            Versus::default(),
        ),
        case(
            Redis,
            &format!("mixed/{c}"),
            many.clone(),
            Workload::RedisMixed { read_share: rs },
            Versus::default(),
        ),
        case(
            Dynamokv,
            &format!("get/{c}"),
            many.clone(),
            Workload::Get { cluster: main },
            versus(&hopc, None, Some(&format!("redis get/{c}"))),
        ),
        case(
            Dynamokv,
            &format!("put/{c}"),
            many.clone(),
            Workload::Put { cluster: main },
            versus(&hopc, None, Some(&format!("redis set+wait/{c}"))),
        ),
        case(
            Dynamokv,
            &format!("put-sync1/{c}"),
            many.clone(),
            Workload::PutSync {
                cluster: main,
                sync_replicas: 1,
            },
            versus(&hopc, None, Some(&format!("redis set+wait/{c}"))),
        ),
        case(
            Dynamokv,
            &format!("mixed/{c}"),
            many.clone(),
            Workload::Mixed {
                cluster: main,
                read_share: rs,
            },
            versus(&hopc, None, Some(&format!("redis mixed/{c}"))),
        ),
        // Open loops at half of DynamoKV's maximum; Redis gets the same offered load.
        case(
            Dynamokv,
            "get/open",
            open(format!("dynamokv get/{c}")),
            Workload::Get { cluster: main },
            versus(hop1, None, Some("redis get/open")),
        ),
        case(
            Dynamokv,
            "put/open",
            open(format!("dynamokv put/{c}")),
            Workload::Put { cluster: main },
            versus(hop1, None, Some("redis set+wait/open")),
        ),
        case(
            Redis,
            "get/open",
            open(format!("dynamokv get/{c}")),
            Workload::RedisGet,
            Versus::default(),
        ),
        case(
            Redis,
            "set+wait/open",
            open(format!("dynamokv put/{c}")),
            Workload::RedisSetWait,
            Versus::default(),
        ),
    ]);
    let mut pairs: Vec<Pair> = ["1".to_string(), c.to_string()]
        .iter()
        .map(|n| Pair {
            section: Section::Durability,
            ours: format!("dynamokv put-sync1/{n}"),
            theirs: format!("dynamokv put/{n}"),
        })
        .collect();
    // The cost of TLS: the same gets and puts, one client and many in flight, on a cluster
    // serving TLS with access control on; each twin runs right after its original.
    clusters.push(ClusterPlan {
        label: "tls".into(),
        binary: None,
        spec: ClusterSpec {
            tls: true,
            ..ClusterSpec::default()
        },
        keys: o.keys,
        sibling_keys: 0,
    });
    let tls_cluster = clusters.len() - 1;
    let tls_twinned: Vec<String> = ["get/1".to_string(), "put/1".to_string()]
        .into_iter()
        .chain(["get", "put"].map(|op| format!("{op}/{c}")))
        .collect();
    let mut with_tls = Vec::with_capacity(cases.len() + tls_twinned.len());
    for original in cases {
        let twin = (original.system == Dynamokv
            && original.workload.cluster() == Some(main)
            && tls_twinned.contains(&original.name))
        .then(|| Case {
            system: DynamokvTls,
            workload: original.workload.on_cluster(tls_cluster),
            ..original.clone()
        });
        with_tls.push(original);
        if let Some(twin) = twin {
            pairs.push(Pair {
                section: Section::Tls,
                ours: twin.id(),
                theirs: with_tls[with_tls.len() - 1].id(),
            });
            with_tls.push(twin);
        }
    }
    cases = with_tls;
    if let Some(baseline) = &o.baseline {
        clusters.push(ClusterPlan {
            label: "baseline".into(),
            binary: Some(baseline.binary.clone()),
            spec: ClusterSpec::minimal(),
            keys: o.keys,
            sibling_keys: o.keys.clamp(1, 1000),
        });
        let twin_cluster = clusters.len() - 1;
        let twinned: Vec<String> = ["get/1", "put/1", "rmw/1", "get-siblings/1"]
            .into_iter()
            .map(str::to_string)
            .chain(["get", "put", "mixed"].map(|op| format!("{op}/{c}")))
            .collect();
        // Each twin runs right after its original, so both see the same moment of the machine.
        let mut with_twins = Vec::with_capacity(cases.len() + twinned.len());
        for original in cases {
            let twin = (original.system == Dynamokv
                && original.workload.cluster() == Some(main)
                && twinned.contains(&original.name))
            .then(|| Case {
                system: DynamokvBaseline,
                workload: original.workload.on_cluster(twin_cluster),
                ..original.clone()
            });
            with_twins.push(original);
            if let Some(twin) = twin {
                pairs.push(Pair {
                    section: Section::Baseline,
                    ours: with_twins[with_twins.len() - 1].id(),
                    theirs: twin.id(),
                });
                with_twins.push(twin);
            }
        }
        cases = with_twins;
    }
    Plan {
        clusters,
        cases,
        pairs,
        baseline: o.baseline.clone(),
    }
}

impl Plan {
    /// Keeps the cases whose id contains one of `patterns` (all if there are none), and the
    /// partner each kept case is reported next to (its baseline twin; the sync-0 put of a
    /// sync-1 put).
    pub fn retain_matching(&mut self, patterns: &[String]) {
        let patterns: Vec<&str> = patterns
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .collect();
        if patterns.is_empty() {
            return;
        }
        let mut keep: Vec<String> = self
            .cases
            .iter()
            .map(Case::id)
            .filter(|id| patterns.iter().any(|p| id.contains(p)))
            .collect();
        let partners: Vec<String> = self
            .pairs
            .iter()
            .filter(|pair| keep.contains(&pair.ours))
            .map(|pair| pair.theirs.clone())
            .collect();
        keep.extend(partners);
        self.cases.retain(|c| keep.contains(&c.id()));
    }

    pub fn drop_system(&mut self, system: System) {
        self.cases.retain(|c| c.system != system);
    }

    pub fn uses(&self, system: System) -> bool {
        self.cases.iter().any(|c| c.system == system)
    }

    pub fn uses_cluster(&self, cluster: usize) -> bool {
        self.cases
            .iter()
            .any(|c| c.workload.cluster() == Some(cluster))
    }

    pub fn uses_siblings(&self, cluster: usize) -> bool {
        self.cases
            .iter()
            .any(|c| c.workload == Workload::GetSiblings { cluster })
    }
}

/// A preloaded key.
pub fn key(i: usize) -> String {
    format!("k{i:08}")
}

/// A key holding siblings.
pub fn sibling_key(i: usize) -> String {
    format!("s{i:06}")
}

/// A key never written before in this run.
fn fresh_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("f{:010}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn random_below(n: usize) -> usize {
    rand::random_range(0..n.max(1))
}

/// One request of a case, as the runner calls it.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

#[derive(Clone)]
pub enum Op {
    /// An async request; the runner runs many at once.
    Async(Arc<dyn Fn() -> OpFuture + Send + Sync>),
    /// A blocking call (the RocksDB floor), run on a thread of its own, one at a time.
    Blocking(Arc<dyn Fn() -> Result<()> + Send + Sync>),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Async(_) => "Op::Async",
            Op::Blocking(_) => "Op::Blocking",
        })
    }
}

fn async_op<F, Fut>(f: F) -> Op
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    Op::Async(Arc::new(move || Box::pin(f())))
}

/// A started cluster as the cases see it.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    /// Client-driven coordination (the default; server-driven on a baseline cluster).
    pub client: Client,
    /// Server-driven coordination: for the cases that compare the two (paper 6.4, Table 2).
    pub server_driven: Client,
    /// Client-driven with hedged reads after [`HEDGE_AFTER`].
    pub hedged: Client,
    pub keys: usize,
    pub sibling_keys: usize,
}

/// What the operations talk to; `None` for systems not started in this run.
#[derive(Debug, Default)]
pub struct Env {
    /// Indexed like [`Plan::clusters`].
    pub clusters: Vec<Option<ClusterHandle>>,
    pub echo: Option<EchoClient<Channel>>,
    pub rocks: Option<Arc<RocksFloor>>,
    pub redis: Option<Arc<redis::Pool>>,
    /// Keys preloaded in Redis and the RocksDB floor.
    pub keys: usize,
    pub value: Bytes,
}

impl Env {
    fn cluster(&self, i: usize) -> Result<ClusterHandle> {
        self.clusters
            .get(i)
            .cloned()
            .flatten()
            .with_context(|| format!("cluster {i} was not started"))
    }
}

async fn dkv_get(client: Client, key: String) -> Result<()> {
    let got = client.get(&key).await?;
    if got.values.is_empty() {
        bail!("{key} has no value");
    }
    Ok(())
}

async fn dkv_put(client: Client, value: Bytes) -> Result<()> {
    client.put(fresh_key(), value.to_vec(), None).await?;
    Ok(())
}

async fn dkv_put_sync(client: Client, value: Bytes, sync_replicas: u32) -> Result<()> {
    let options = WriteOptions {
        sync_replicas: Some(sync_replicas),
        ..WriteOptions::default()
    };
    client
        .put_with_options(fresh_key(), value.to_vec(), None, options)
        .await?;
    Ok(())
}

/// The operation of `workload` against the systems in `env`.
pub fn op(workload: &Workload, env: &Env) -> Result<Op> {
    let value = env.value.clone();
    let keys = env.keys;
    Ok(match *workload {
        Workload::Get { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_get(h.client.clone(), key(random_below(h.keys))))
        }
        Workload::Put { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_put(h.client.clone(), value.clone()))
        }
        Workload::GetServerDriven { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_get(h.server_driven.clone(), key(random_below(h.keys))))
        }
        Workload::GetHedged { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_get(h.hedged.clone(), key(random_below(h.keys))))
        }
        Workload::PutServerDriven { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_put(h.server_driven.clone(), value.clone()))
        }
        Workload::PutSync {
            cluster,
            sync_replicas,
        } => {
            let h = env.cluster(cluster)?;
            async_op(move || dkv_put_sync(h.client.clone(), value.clone(), sync_replicas))
        }
        Workload::ReadModifyWrite { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || {
                let (client, value) = (h.client.clone(), value.clone());
                let key = key(random_below(h.keys));
                async move {
                    let got = client.get(&key).await?;
                    client.put(&key, value.to_vec(), Some(&got.context)).await?;
                    Ok(())
                }
            })
        }
        Workload::GetSiblings { cluster } => {
            let h = env.cluster(cluster)?;
            async_op(move || {
                let client = h.client.clone();
                let key = sibling_key(random_below(h.sibling_keys));
                async move {
                    let got = client.get(&key).await?;
                    if got.values.len() < SIBLINGS {
                        bail!("{key} has {} values, not {SIBLINGS}", got.values.len());
                    }
                    Ok(())
                }
            })
        }
        Workload::Mixed {
            cluster,
            read_share,
        } => {
            let h = env.cluster(cluster)?;
            async_op(move || {
                let client = h.client.clone();
                let read = rand::random::<f64>() < read_share;
                let (key, value) = (key(random_below(h.keys)), value.clone());
                async move {
                    if read {
                        dkv_get(client, key).await
                    } else {
                        dkv_put(client, value).await
                    }
                }
            })
        }
        Workload::Echo => {
            let client = env.echo.clone().context("the echo floor was not started")?;
            async_op(move || {
                let (client, value) = (client.clone(), value.clone());
                async move { EchoFloor::call(&client, value).await }
            })
        }
        Workload::RocksGet => {
            let store = env
                .rocks
                .clone()
                .context("the rocksdb floor was not opened")?;
            Op::Blocking(Arc::new(move || store.get(&key(random_below(keys)))))
        }
        Workload::RocksPut => {
            let store = env
                .rocks
                .clone()
                .context("the rocksdb floor was not opened")?;
            Op::Blocking(Arc::new(move || store.put(&fresh_key(), &value)))
        }
        Workload::RedisGet => {
            let pool = env.redis.clone().context("redis was not started")?;
            async_op(move || {
                let pool = pool.clone();
                async move { pool.get(&key(random_below(keys))).await }
            })
        }
        Workload::RedisSetWait => {
            let pool = env.redis.clone().context("redis was not started")?;
            async_op(move || {
                let (pool, value) = (pool.clone(), value.clone());
                async move { pool.set_wait(&fresh_key(), &value).await }
            })
        }
        Workload::RedisMixed { read_share } => {
            let pool = env.redis.clone().context("redis was not started")?;
            async_op(move || {
                let (pool, value) = (pool.clone(), value.clone());
                let read = rand::random::<f64>() < read_share;
                async move {
                    if read {
                        pool.get(&key(random_below(keys))).await
                    } else {
                        pool.set_wait(&fresh_key(), &value).await
                    }
                }
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_reference_names_a_case() {
        let plan = plan(&PlanOptions {
            keys: 100,
            concurrency: 8,
            read_share: 0.9,
            scale: vec![100, 1000],
            baseline: Some(Baseline {
                binary: "/old/dynamokv".into(),
                label: "old".into(),
            }),
        });
        let ids: Vec<String> = plan.cases.iter().map(Case::id).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "duplicate case ids: {ids:?}");
        for case in &plan.cases {
            let v = &case.versus;
            for reference in [&v.hop, &v.store, &v.redis].into_iter().flatten() {
                assert!(
                    ids.contains(reference),
                    "{}: no case {reference}",
                    case.id()
                );
            }
            if let Load::Open { reference, .. } = &case.load {
                let at = ids.iter().position(|id| id == reference);
                let me = ids.iter().position(|id| *id == case.id());
                assert!(at < me, "{} runs before its reference", case.id());
            }
        }
        for pair in &plan.pairs {
            assert!(
                ids.contains(&pair.ours) && ids.contains(&pair.theirs),
                "{pair:?}"
            );
        }
        // Scale 100 reuses the main cluster; 1000 gets its own; then the TLS cluster and the
        // baseline's.
        assert_eq!(plan.clusters.len(), 4);
        assert!(plan.uses_siblings(0) && !plan.uses_siblings(1) && plan.uses_siblings(3));
        assert!(plan.clusters[2].spec.tls && !plan.uses_siblings(2));
        // Four TLS twins (gets and puts, one client and many), each right after its original.
        let tls: Vec<usize> = (0..ids.len())
            .filter(|&i| plan.cases[i].system == System::DynamokvTls)
            .collect();
        assert_eq!(tls.len(), 4);
        for i in tls {
            assert_eq!(plan.cases[i - 1].name, plan.cases[i].name);
            assert_eq!(plan.cases[i].workload.cluster(), Some(2));
        }
        assert_eq!(
            plan.pairs
                .iter()
                .filter(|p| p.section == Section::Tls)
                .count(),
            4
        );
        let baseline = &plan.clusters[3];
        assert!(baseline.spec.minimal && baseline.binary.is_some());
        // Seven twins, each right after its original, all on the baseline cluster.
        let twins: Vec<usize> = (0..ids.len())
            .filter(|&i| plan.cases[i].system == System::DynamokvBaseline)
            .collect();
        assert_eq!(twins.len(), 7);
        for i in twins {
            let (original, twin) = (&plan.cases[i - 1], &plan.cases[i]);
            assert_eq!(
                (original.system, &original.name),
                (System::Dynamokv, &twin.name)
            );
            assert_eq!(twin.workload.cluster(), Some(3));
            assert_eq!(original.workload.cluster(), Some(0));
        }
        assert!(!ids.iter().any(|id| id.starts_with("dynamokv-baseline")
            && (id.contains("@") || id.contains("open") || id.contains("sync"))));
        assert_eq!(
            plan.pairs
                .iter()
                .filter(|p| p.section == Section::Durability)
                .count(),
            2
        );
    }

    #[test]
    fn only_keeps_partners() {
        let mut plan = plan(&PlanOptions {
            keys: 100,
            concurrency: 64,
            read_share: 0.9,
            scale: vec![],
            baseline: Some(Baseline {
                binary: "/old/dynamokv".into(),
                label: "baseline".into(),
            }),
        });
        plan.retain_matching(&["dynamokv get/1".into(), "put-sync1/64".into()]);
        let ids: Vec<String> = plan.cases.iter().map(Case::id).collect();
        assert_eq!(
            ids,
            [
                "dynamokv get/1",
                "dynamokv-baseline get/1",
                "dynamokv put/64",
                "dynamokv put-sync1/64"
            ]
        );
        assert!(plan.uses_cluster(0) && plan.uses_cluster(2) && !plan.uses_cluster(1));
    }

    #[test]
    fn only_keeps_matching_cases() {
        let mut plan = plan(&PlanOptions {
            keys: 100,
            concurrency: 64,
            read_share: 0.9,
            scale: vec![],
            baseline: None,
        });
        plan.retain_matching(&["dynamokv get/1".into(), " echo/64".into()]);
        let ids: Vec<String> = plan.cases.iter().map(Case::id).collect();
        assert_eq!(ids, ["dynamokv get/1", "grpc-floor echo/64"]);
        assert!(!plan.uses(System::Redis));
    }
}
