//! Results: the terminal table, the targets, the JSON file and the latency plot.
//!
//! Ratios compare a DynamoKV case with the case it is matched with ([`crate::cases::Versus`]):
//! for one-client and open-loop cases the p50 latencies (ours ÷ theirs: 2.0 means twice as
//! slow), for cases with many requests in flight the throughputs (ours ÷ theirs: 0.5 means
//! half the ops/s).
//!
//! CPU per operation: the CPU time (user + system) of the case's server processes ("node":
//! the cluster's three nodes; Redis' three processes; the echo server) and of the bench itself
//! ("client": the client library, the runner, and the RocksDB floor, which runs in-process)
//! during the case's slices, divided by the requests completed. Read from /proc at clock-tick
//! resolution (10 ms), so it needs a few hundred milliseconds per case to mean much.
//!
//! Side-by-side sections ([`Comparison`]) follow the table: this build against the baseline
//! binary, and `sync_replicas = 1` against 0, each row with both cases' p50, p99, ops/s and
//! node CPU per operation, and the ratios ours ÷ theirs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::cases::{Group, Load, Plan, Section, System};
use crate::noise::{self, NOISY_CORES};
use crate::runner::CaseResult;

/// Percentiles stored per case for the plot (the maximum is added as 100).
const PERCENTILES: [f64; 10] = [
    50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999,
];

#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub cases: Vec<CaseReport>,
    /// Side-by-side sections (baseline, durability); only those with a pair in the run.
    pub comparisons: Vec<Comparison>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub git_commit: Option<String>,
    pub date_utc: String,
    pub unix_time: u64,
    pub cpu_model: String,
    pub cores: usize,
    /// The options of the run, defaults applied.
    pub options: serde_json::Value,
    /// Foreign CPU (cores) above which a case is flagged noisy.
    pub noisy_threshold_cores: f64,
    /// The unit of the /proc CPU counters the CPU per operation is read from.
    pub cpu_clock_ticks_per_sec: u64,
    /// Anything skipped or worth knowing when reading the numbers.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Percentile {
    pub p: f64,
    pub us: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Ratios {
    pub hop: Option<f64>,
    pub store: Option<f64>,
    pub redis: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub id: String,
    pub name: String,
    pub system: System,
    pub group: Group,
    /// `closed` or `open`.
    pub loop_kind: &'static str,
    /// Closed loop: workers; open loop: the workers of the reference case.
    pub concurrency: usize,
    /// Open loop: the offered load, requests per second.
    pub rate_per_sec: Option<f64>,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub ops_per_sec: f64,
    pub count: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// 1-minute load average before each slice.
    pub load_before: Vec<f64>,
    /// CPU used by other processes during each slice, in cores.
    pub foreign_cpu_cores: Vec<f64>,
    pub foreign_cpu_max: f64,
    pub noisy: bool,
    pub percentiles: Vec<Percentile>,
    /// `p50` (latency ratio) or `ops_per_sec` (throughput ratio).
    pub ratio_metric: &'static str,
    pub ratios: Ratios,
    /// The per-request `sync_replicas` of the case's writes, if it sets one.
    pub sync_replicas: Option<u32>,
    /// CPU seconds the case's server processes used during its slices (none for the RocksDB
    /// floor, which runs inside the bench).
    pub node_cpu_secs: Option<f64>,
    /// CPU seconds the bench process used during the case's slices.
    pub client_cpu_secs: f64,
    /// `node_cpu_secs` per successful request, in microseconds.
    pub node_cpu_us_per_op: Option<f64>,
    /// `client_cpu_secs` per successful request, in microseconds.
    pub client_cpu_us_per_op: Option<f64>,
}

/// One side of a compared pair.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub id: String,
    pub p50_us: f64,
    pub p99_us: f64,
    pub ops_per_sec: f64,
    pub node_cpu_us_per_op: Option<f64>,
    pub client_cpu_us_per_op: Option<f64>,
    pub count: u64,
    pub errors: u64,
    pub noisy: bool,
}

/// Ours ÷ theirs, per figure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairRatios {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub ops_per_sec: Option<f64>,
    pub node_cpu_per_op: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComparisonRow {
    /// The case name both sides share (for durability, ours').
    pub name: String,
    pub ours: Side,
    pub theirs: Side,
    pub ratios: PairRatios,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub section: Section,
    pub title: String,
    pub ours_label: String,
    pub theirs_label: String,
    /// The baseline section: the other binary.
    pub theirs_binary: Option<PathBuf>,
    pub rows: Vec<ComparisonRow>,
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub unit: &'static str,
    pub pass: Option<bool>,
    pub detail: String,
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

/// Builds the report from the plan's cases and their results (in the same order).
pub fn build(
    plan: &Plan,
    results: &[CaseResult],
    options: serde_json::Value,
    notes: Vec<String>,
) -> Report {
    let cases = &plan.cases;
    let mut reports: Vec<CaseReport> = cases
        .iter()
        .zip(results)
        .map(|(case, r)| {
            let h = &r.measured.hist;
            let mut percentiles: Vec<Percentile> = PERCENTILES
                .iter()
                .map(|&p| Percentile {
                    p,
                    us: us(h.value_at_quantile(p / 100.0)),
                })
                .collect();
            percentiles.push(Percentile {
                p: 100.0,
                us: us(h.max()),
            });
            let (loop_kind, concurrency) = match case.load {
                Load::Closed { concurrency } => ("closed", concurrency),
                Load::Open { concurrency, .. } => ("open", concurrency),
            };
            CaseReport {
                id: case.id(),
                name: case.name.clone(),
                system: case.system,
                group: case.group(),
                loop_kind,
                concurrency,
                rate_per_sec: r.rate,
                p50_us: us(h.value_at_quantile(0.5)),
                p99_us: us(h.value_at_quantile(0.99)),
                p999_us: us(h.value_at_quantile(0.999)),
                max_us: us(h.max()),
                mean_us: h.mean() / 1000.0,
                ops_per_sec: r.measured.ops_per_sec(),
                count: h.len(),
                errors: r.measured.errors,
                first_error: r.measured.first_error.clone(),
                seconds: r.measured.elapsed.as_secs_f64(),
                load_before: r.load_before.clone(),
                foreign_cpu_cores: r.foreign_cores.clone(),
                foreign_cpu_max: r.foreign_cores.iter().copied().fold(0.0, f64::max),
                noisy: r.noisy(),
                percentiles,
                ratio_metric: if case.group() == Group::InFlight {
                    "ops_per_sec"
                } else {
                    "p50"
                },
                ratios: Ratios::default(),
                sync_replicas: case.workload.sync_replicas(),
                node_cpu_secs: r.node_cpu.map(|d| d.as_secs_f64()),
                client_cpu_secs: r.client_cpu.as_secs_f64(),
                node_cpu_us_per_op: r.node_cpu.and_then(|d| per_op(d, h.len())),
                client_cpu_us_per_op: per_op(r.client_cpu, h.len()),
            }
        })
        .collect();
    // Ratios need every case's numbers, so they come second.
    for (i, case) in cases.iter().enumerate() {
        let ratio = |other: &Option<String>| -> Option<f64> {
            let theirs = reports.iter().find(|r| Some(&r.id) == other.as_ref())?;
            let ours = &reports[i];
            let (a, b) = if ours.ratio_metric == "p50" {
                (ours.p50_us, theirs.p50_us)
            } else {
                (ours.ops_per_sec, theirs.ops_per_sec)
            };
            (ours.count > 0 && theirs.count > 0 && b > 0.0).then(|| a / b)
        };
        let ratios = Ratios {
            hop: ratio(&case.versus.hop),
            store: ratio(&case.versus.store),
            redis: ratio(&case.versus.redis),
        };
        reports[i].ratios = ratios;
    }
    let targets = targets(&reports);
    let comparisons = comparisons(plan, &reports);
    Report {
        meta: meta(options, notes),
        cases: reports,
        comparisons,
        targets,
    }
}

/// CPU time per operation, in microseconds.
fn per_op(cpu: std::time::Duration, ops: u64) -> Option<f64> {
    (ops > 0).then(|| cpu.as_secs_f64() * 1e6 / ops as f64)
}

fn side(r: &CaseReport) -> Side {
    Side {
        id: r.id.clone(),
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        ops_per_sec: r.ops_per_sec,
        node_cpu_us_per_op: r.node_cpu_us_per_op,
        client_cpu_us_per_op: r.client_cpu_us_per_op,
        count: r.count,
        errors: r.errors,
        noisy: r.noisy,
    }
}

/// The side-by-side sections of the plan's pairs that both ran.
fn comparisons(plan: &Plan, reports: &[CaseReport]) -> Vec<Comparison> {
    let find = |id: &str| reports.iter().find(|r| r.id == id);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let sections = [
        (
            Section::Baseline,
            plan.baseline.as_ref().map_or_else(
                || "this build vs baseline".to_string(),
                |b| {
                    format!(
                        "this build vs {} ({}), ratios ours / {}",
                        b.label,
                        b.binary.display(),
                        b.label
                    )
                },
            ),
            "this build".to_string(),
            plan.baseline
                .as_ref()
                .map_or("baseline".to_string(), |b| b.label.clone()),
        ),
        (
            Section::Durability,
            "durability: sync_replicas = 1 per request vs the default 0, ratios sync 1 / sync 0"
                .to_string(),
            "sync 1".to_string(),
            "sync 0".to_string(),
        ),
        (
            Section::Tls,
            "the cost of TLS: a TLS cluster (client certificate, access control) vs plain text, ratios TLS / plain"
                .to_string(),
            "TLS".to_string(),
            "plain".to_string(),
        ),
    ];
    let mut out = Vec::new();
    for (section, title, ours_label, theirs_label) in sections {
        let rows: Vec<ComparisonRow> = plan
            .pairs
            .iter()
            .filter(|p| p.section == section)
            .filter_map(|p| {
                let (ours, theirs) = (find(&p.ours)?, find(&p.theirs)?);
                let ok = ours.count > 0 && theirs.count > 0;
                let both = |f: fn(&CaseReport) -> Option<f64>| {
                    ok.then(|| ratio(f(ours), f(theirs))).flatten()
                };
                Some(ComparisonRow {
                    name: ours.name.clone(),
                    ours: side(ours),
                    theirs: side(theirs),
                    ratios: PairRatios {
                        p50: both(|r| Some(r.p50_us)),
                        p99: both(|r| Some(r.p99_us)),
                        ops_per_sec: both(|r| Some(r.ops_per_sec)),
                        node_cpu_per_op: both(|r| r.node_cpu_us_per_op),
                    },
                })
            })
            .collect();
        if !rows.is_empty() {
            out.push(Comparison {
                section,
                title,
                ours_label,
                theirs_label,
                theirs_binary: match section {
                    Section::Baseline => plan.baseline.as_ref().map(|b| b.binary.clone()),
                    Section::Durability | Section::Tls => None,
                },
                rows,
            });
        }
    }
    out
}

/// The targets, evaluated on this run.
fn targets(reports: &[CaseReport]) -> Vec<Target> {
    let find = |id: &str| reports.iter().find(|r| r.id == id && r.count > 0);
    let hop = find("grpc-floor echo/1");
    let mut out = Vec::new();
    // Issue 10's targets for client-driven coordination: a get is one parallel hop, a put two.
    for (op, limit) in [("get", 1.5), ("put", 2.5)] {
        let ours = find(&format!("dynamokv {op}/1"));
        let value = ours.zip(hop).map(|(o, h)| o.p50_us / h.p50_us);
        out.push(Target {
            name: format!("{op} p50 <= {limit} x bare hop p50"),
            value,
            limit,
            unit: "x",
            pass: value.map(|v| v <= limit),
            detail: match ours.zip(hop) {
                Some((o, h)) => format!("{:.1} us vs {:.1} us", o.p50_us, h.p50_us),
                None => format!("needs dynamokv {op}/1 and grpc-floor echo/1 in the run"),
            },
        });
    }
    // The paper's Table 2: client-driven coordination has the lower tail.
    for op in ["get", "put"] {
        let client = find(&format!("dynamokv {op}/1"));
        let server = find(&format!("dynamokv {op}-server-driven/1"));
        let value = client.zip(server).map(|(c, s)| c.p999_us / s.p999_us);
        out.push(Target {
            name: format!("{op} p99.9 client-driven < server-driven"),
            value,
            limit: 1.0,
            unit: "x",
            pass: value.map(|v| v < 1.0),
            detail: match client.zip(server) {
                Some((c, s)) => format!("{:.1} us vs {:.1} us", c.p999_us, s.p999_us),
                None => format!("needs dynamokv {op}/1 and dynamokv {op}-server-driven/1"),
            },
        });
    }
    let worst = reports
        .iter()
        .filter(|r| {
            r.system == System::Dynamokv
                && r.group == Group::OneClient
                && r.sync_replicas.is_none()
                && r.count > 0
        })
        .max_by(|a, b| a.p99_us.total_cmp(&b.p99_us));
    out.push(Target {
        name: "no one-client get or put percentile up to p99 above 5 ms".into(),
        value: worst.map(|w| w.p99_us / 1000.0),
        limit: 5.0,
        unit: "ms",
        pass: worst.map(|w| w.p99_us <= 5000.0),
        detail: worst.map_or("no one-client dynamokv case ran".into(), |w| {
            format!("worst p99: {}", w.id)
        }),
    });
    out
}

fn meta(options: serde_json::Value, notes: Vec<String>) -> Meta {
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Meta {
        git_commit: Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
        date_utc: format_utc(unix_time, false),
        unix_time,
        cpu_model: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        options,
        noisy_threshold_cores: NOISY_CORES,
        cpu_clock_ticks_per_sec: noise::clock_ticks_per_sec(),
        notes,
    }
}

/// `2024-05-01T12:00:00Z`, or `20240501-120000` with `compact`.
fn format_utc(unix: u64, compact: bool) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if compact {
        format!("{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

fn fmt_us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// A CPU time per operation in microseconds, compactly.
fn fmt_cpu(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

/// The last `width` characters of a label, so that columns line up.
fn clip(label: &str, width: usize) -> String {
    let chars: Vec<char> = label.chars().collect();
    chars[chars.len().saturating_sub(width)..].iter().collect()
}

/// A side-by-side section, as printed on the terminal.
fn render_comparison(c: &Comparison) -> String {
    let (a, b) = (clip(&c.ours_label, 10), clip(&c.theirs_label, 10));
    let mut out = format!("\n-- {} --\n", c.title);
    out.push_str(&format!(
        "{:<16} {:^28} {:^28} {:^28} {:^28}\n",
        "", "p50 us", "p99 us", "ops/s", "node CPU us/op"
    ));
    let block = format!("{a:>10} {b:>10} {:>6}", "x");
    out.push_str(&format!("{:<16} {block} {block} {block} {block}\n", "case"));
    for row in &c.rows {
        let (o, t, x) = (&row.ours, &row.theirs, &row.ratios);
        let noisy = if o.noisy || t.noisy { "  NOISY" } else { "" };
        out.push_str(&format!(
            "{:<16} {:>10} {:>10} {:>6} {:>10} {:>10} {:>6} {:>10.0} {:>10.0} {:>6} {:>10} {:>10} {:>6}{noisy}\n",
            row.name,
            fmt_us(o.p50_us),
            fmt_us(t.p50_us),
            fmt_ratio(x.p50),
            fmt_us(o.p99_us),
            fmt_us(t.p99_us),
            fmt_ratio(x.p99),
            o.ops_per_sec,
            t.ops_per_sec,
            fmt_ratio(x.ops_per_sec),
            fmt_cpu(o.node_cpu_us_per_op),
            fmt_cpu(t.node_cpu_us_per_op),
            fmt_ratio(x.node_cpu_per_op),
        ));
    }
    out
}

fn group_title(group: Group, report: &Report) -> String {
    let c = report
        .cases
        .iter()
        .find(|r| r.group == group)
        .map_or(0, |r| r.concurrency);
    match group {
        Group::OneClient => "one client, sequential (ratios: p50 ours / theirs)".into(),
        Group::InFlight => {
            format!("closed loop, {c} in flight (ratios: ops/s ours / theirs)")
        }
        Group::OpenLoop => format!(
            "open loop at half of DynamoKV's {c}-in-flight max, latency from intended send (ratios: p50 ours / theirs)"
        ),
    }
}

/// The table, the targets and the notes, as printed on the terminal.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "\nLatencies in microseconds. CPU us/op: CPU time per request of the system's server \
         processes + of the bench client (steadier than latency on a busy machine). Last \
         column: the most CPU (in cores) that other processes used during a slice of the case \
         (NOISY above {NOISY_CORES}), and the highest 1-minute load average before a slice.\n"
    );
    let header = format!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>6} {:>7} {:>7} {:>6}  {}\n",
        "case",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "ops/s",
        "CPU us/op",
        "x hop",
        "x store",
        "x redis",
        "errors",
        "foreign cores, load"
    );
    for group in [Group::OneClient, Group::InFlight, Group::OpenLoop] {
        let rows: Vec<&CaseReport> = report.cases.iter().filter(|r| r.group == group).collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n-- {} --\n", group_title(group, report)));
        out.push_str(&header);
        for r in rows {
            let load = r.load_before.iter().copied().fold(f64::NAN, f64::max);
            let noise = format!(
                "{}{:.2}, {load:.1}",
                if r.noisy { "NOISY " } else { "" },
                r.foreign_cpu_max
            );
            let name = match r.rate_per_sec {
                Some(rate) => format!("{} @{rate:.0}/s", r.id),
                None => r.id.clone(),
            };
            let cpu = format!(
                "{}+{}",
                fmt_cpu(r.node_cpu_us_per_op),
                fmt_cpu(r.client_cpu_us_per_op)
            );
            out.push_str(&format!(
                "{:<32} {:>9} {:>9} {:>9} {:>9} {:>9.0} {:>11} {:>6} {:>7} {:>7} {:>6}  {}\n",
                name,
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.p999_us),
                fmt_us(r.max_us),
                r.ops_per_sec,
                cpu,
                fmt_ratio(r.ratios.hop),
                fmt_ratio(r.ratios.store),
                fmt_ratio(r.ratios.redis),
                r.errors,
                noise
            ));
        }
    }
    for comparison in &report.comparisons {
        out.push_str(&render_comparison(comparison));
    }
    let errors: Vec<&CaseReport> = report.cases.iter().filter(|r| r.errors > 0).collect();
    if !errors.is_empty() {
        out.push_str("\nErrors:\n");
        for r in errors {
            out.push_str(&format!(
                "  {}: {} errors, first: {}\n",
                r.id,
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    out.push_str("\nTargets (from this run):\n");
    for t in &report.targets {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        let value = t.value.map_or("-".into(), |v| format!("{v:.2} {}", t.unit));
        out.push_str(&format!(
            "  {verdict}  {}: {value} ({})\n",
            t.name, t.detail
        ));
    }
    let noisy: Vec<&str> = report
        .cases
        .iter()
        .filter(|r| r.noisy)
        .map(|r| r.id.as_str())
        .collect();
    if !noisy.is_empty() {
        out.push_str(&format!(
            "\nNoisy: other processes used more than {NOISY_CORES} of a core during {} case(s) ({}); re-run on a quiet machine for trustworthy numbers.\n",
            noisy.len(),
            noisy.join(", ")
        ));
    }
    for note in &report.meta.notes {
        out.push_str(&format!("Note: {note}\n"));
    }
    out
}

/// Writes `bench-<timestamp>.json` and `latest.json` under `dir`; returns the latter's path.
pub fn write_json(report: &Report, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report)?;
    let stamped = dir.join(format!(
        "bench-{}.json",
        format_utc(report.meta.unix_time, true)
    ));
    let latest = dir.join("latest.json");
    for path in [&stamped, &latest] {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("wrote {} and {}", stamped.display(), latest.display());
    Ok(latest)
}

/// Draws the latency plot with `plot.py` (installing matplotlib with pip if needed); on
/// failure returns why the plot was skipped.
pub fn plot(json: &Path, png: &Path) -> Result<(), String> {
    let script = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plot.py"),
        PathBuf::from("bench/plot.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or("bench/plot.py not found")?;
    let python = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let has_matplotlib = Command::new("python3")
        .args(["-c", "import matplotlib"])
        .stderr(std::process::Stdio::null())
        .status();
    match has_matplotlib {
        Err(e) => return Err(format!("cannot run python3: {e}")),
        Ok(s) if s.success() => {}
        Ok(_) => {
            println!("matplotlib is missing; installing it with pip");
            let pip = ["-m", "pip", "install", "--quiet", "matplotlib"];
            let installed =
                python(&pip) || python(&[&pip[..], &["--break-system-packages"]].concat());
            if !installed {
                return Err("matplotlib is missing and pip could not install it".into());
            }
        }
    }
    let (json, png) = (json.to_string_lossy(), png.to_string_lossy());
    if python(&[&script.to_string_lossy(), &json, &png]) {
        Ok(())
    } else {
        Err(format!("{} failed", script.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_827_696, false), "2000-02-29T12:34:56Z");
        assert_eq!(format_utc(1_767_225_599, true), "20251231-235959");
    }
}
