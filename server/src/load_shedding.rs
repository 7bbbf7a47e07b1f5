//! Resource limits (issue 11): one misbehaving client must not exhaust a node.
//!
//! - **Requests in flight.** Client requests (the `Kv` and `Admin` services) past
//!   `limits.max_concurrent_requests` are refused at once with `OVERLOADED` ("retry later"),
//!   not queued: a queue in front of an overloaded node only adds its wait to every request,
//!   while a refusal lets the client try another replica now or back off (DynamoDB's
//!   throttling, Cassandra's `native_transport_max_concurrent_requests`). The node-to-node
//!   service is not counted: its load follows from client requests some node admitted, and
//!   refusing a replica write would only turn into hints; on a TLS cluster only members may
//!   call it.
//! - **Connections** (`connections.rs`). Past `limits.max_connections`, the oldest connection
//!   that has not yet authenticated is closed to make room; when every open connection has,
//!   a new one is still accepted, so that its requests get a clear `OVERLOADED` instead of a
//!   reset, and closed a second later; it does not count. The client's next request
//!   reconnects.
//! - **Request bytes** ([`Budget`], `intake.rs`): the bodies being received, per connection
//!   and per node.
//! - **Request size.** `limits.max_request_bytes` is the largest message the client-facing
//!   services decode (tonic refuses a larger one before reading it all). The config check
//!   keeps it at least `max_object_bytes + max_key_bytes`, so that whatever a client's own
//!   limits let through (a value, a read repair carrying a key's whole state) is decoded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::Request;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::tls::ConnInfo;

/// Takes a place on `gauge` unless `cap` are taken: `Err(taken)` then.
fn take(gauge: &prometheus_client::metrics::gauge::Gauge, cap: usize) -> Result<(), usize> {
    let before = usize::try_from(gauge.inc()).unwrap_or(0);
    if before >= cap {
        gauge.dec();
        return Err(before);
    }
    Ok(())
}

/// A byte budget shared by requests.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    cap: u64,
}

impl Budget {
    pub fn new(cap: usize) -> Budget {
        Budget {
            used: AtomicU64::new(0),
            cap: cap as u64,
        }
    }

    /// Takes `n` bytes unless that would go past the cap.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.cap)
            })
            .is_ok()
    }

    pub fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes taken now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// A state this large or larger is a large read: it is admitted by [`ReadBudget`] and read off
/// the request threads (`LocalReplica::read`).
pub const LARGE_STATE_BYTES: usize = 1 << 20;

/// Copies of a state a replica read holds at once: the state read, and its encoded answer.
pub const REPLICA_READ_COPIES: usize = 2;

/// Copies of a state a coordinated get holds at once: this node's replica, another's answer
/// (R = 2) and the encoded answer to the client.
pub const COORDINATED_READ_COPIES: usize = 3;

/// Reads of large states (issue 19: forty concurrent gets of one 24 MiB key stopped a node
/// serving anyone else for seconds). A read whose state is [`LARGE_STATE_BYTES`] or more
/// takes its size from a budget before it is made, and keeps it until its answer is sent: one
/// per caller (`limits.max_read_bytes_per_caller`, 32 MiB: a caller's large reads go one or
/// two at a time, whatever its concurrency) and one per node
/// (`limits.max_read_bytes_in_flight`, 128 MiB), waiting in turn (first come, first served)
/// until the request's deadline, then refused with OVERLOADED. Small reads never wait here:
/// a storm of large reads does not slow the others.
#[derive(Debug)]
pub struct ReadBudget {
    node_id: String,
    node: Arc<tokio::sync::Semaphore>,
    node_cap_kib: u32,
    caller_cap_kib: u32,
    callers: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    metrics: Arc<Metrics>,
}

/// A large read's place in the budgets, given back when dropped (with its answer).
#[derive(Debug)]
pub struct ReadPermit {
    _caller: Option<tokio::sync::OwnedSemaphorePermit>,
    _node: tokio::sync::OwnedSemaphorePermit,
    guard: InFlight,
}

/// Counts a large read in the gauges while it lives.
#[derive(Debug)]
struct InFlight {
    metrics: Arc<Metrics>,
    kib: i64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.large_reads_in_flight.dec();
        self.metrics.read_kib_in_flight.dec_by(self.kib);
    }
}

/// Callers remembered before idle ones are forgotten.
const MAX_CALLERS: usize = 4096;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl ReadBudget {
    pub fn new(
        node_id: &str,
        node_bytes: usize,
        caller_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> ReadBudget {
        let node_cap_kib = kib(node_bytes).max(1);
        ReadBudget {
            node_id: node_id.to_string(),
            node: Arc::new(tokio::sync::Semaphore::new(node_cap_kib as usize)),
            node_cap_kib,
            caller_cap_kib: kib(caller_bytes).max(1),
            callers: std::sync::Mutex::new(std::collections::HashMap::new()),
            metrics,
        }
    }

    fn caller(&self, name: &str) -> Arc<tokio::sync::Semaphore> {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if callers.len() >= MAX_CALLERS && !callers.contains_key(name) {
            // Forget callers with nothing in flight (their budget is whole again).
            let cap = self.caller_cap_kib as usize;
            callers.retain(|_, s| s.available_permits() < cap);
        }
        Arc::clone(
            callers.entry(name.to_string()).or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(self.caller_cap_kib as usize))
            }),
        )
    }

    /// Admits a read of a state of about `bytes` for `caller` (`None`: another node, counted
    /// against the node's budget only), waiting at most `wait`. The read is charged `copies`
    /// times the state's size: the copies of it the node holds at once until the answer is
    /// sent ([`REPLICA_READ_COPIES`], [`COORDINATED_READ_COPIES`]). Small reads pass at once
    /// with no permit.
    pub async fn admit(
        &self,
        caller: Option<&str>,
        bytes: usize,
        copies: usize,
        wait: Duration,
    ) -> Result<Option<ReadPermit>, Error> {
        if bytes < LARGE_STATE_BYTES {
            return Ok(None);
        }
        let want = kib(bytes.saturating_mul(copies.max(1)));
        let refused = |what: &str| {
            self.metrics.overloaded("read_bytes");
            Error::Overloaded {
                node: self.node_id.clone(),
                reason: format!(
                    "reads of large values in flight are at {what}'s cap; this {} MiB read waited {wait:?}",
                    bytes >> 20
                ),
            }
        };
        let start = tokio::time::Instant::now();
        let caller_permit = match caller {
            None => None,
            Some(name) => {
                let sem = self.caller(name);
                match tokio::time::timeout(
                    wait,
                    sem.acquire_many_owned(want.min(self.caller_cap_kib)),
                )
                .await
                {
                    Ok(Ok(p)) => Some(p),
                    _ => return Err(refused("this caller")),
                }
            }
        };
        let left = wait.saturating_sub(start.elapsed());
        let node_permit = match tokio::time::timeout(
            left,
            Arc::clone(&self.node).acquire_many_owned(want.min(self.node_cap_kib)),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => return Err(refused("the node")),
        };
        if start.elapsed() > Duration::from_millis(1) {
            self.metrics.large_reads_waited.inc();
        }
        self.metrics.large_reads_in_flight.inc();
        self.metrics.read_kib_in_flight.inc_by(i64::from(want));
        Ok(Some(ReadPermit {
            _caller: caller_permit,
            _node: node_permit,
            guard: InFlight {
                metrics: Arc::clone(&self.metrics),
                kib: i64::from(want),
            },
        }))
    }
}

impl ReadPermit {
    /// KiB this read holds.
    pub fn kib(&self) -> i64 {
        self.guard.kib
    }
}

/// A large read's permit, carried in its answer's extensions until the answer is sent
/// (`intake.rs` moves it into the response body).
#[derive(Debug, Clone)]
pub struct HeldRead(pub Arc<ReadPermit>);

/// The cap on client requests in flight; the count is the `requests_in_flight` gauge.
#[derive(Debug)]
pub struct LoadShedding {
    node: String,
    max_requests: usize,
    metrics: Arc<Metrics>,
}

/// A request's place under the cap, given back when the request ends (answered or dropped).
#[derive(Debug)]
pub struct Admitted<'a> {
    shedding: &'a LoadShedding,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.shedding.metrics.requests_in_flight.dec();
    }
}

impl LoadShedding {
    pub fn new(node: &str, max_requests: usize, metrics: Arc<Metrics>) -> LoadShedding {
        LoadShedding {
            node: node.to_string(),
            max_requests,
            metrics,
        }
    }

    /// Admits `req`, or refuses it with `Overloaded`: it came on a connection over the cap, or
    /// the node has `max_concurrent_requests` in flight.
    pub fn admit<T>(&self, req: &Request<T>) -> Result<Admitted<'_>, Error> {
        if let Some((open, cap)) = req.extensions().get::<ConnInfo>().and_then(|i| i.over_cap) {
            self.metrics.overloaded("connections");
            return Err(Error::Overloaded {
                node: self.node.clone(),
                reason: format!("{open} connections open, the cap is {cap}; this one closes"),
            });
        }
        if let Err(before) = take(&self.metrics.requests_in_flight, self.max_requests) {
            self.metrics.overloaded("requests");
            return Err(Error::Overloaded {
                node: self.node.clone(),
                reason: format!(
                    "{before} requests in flight, the cap is {}",
                    self.max_requests
                ),
            });
        }
        Ok(Admitted { shedding: self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_reads_wait_for_the_callers_budget_small_ones_never_do() {
        let metrics = Arc::new(Metrics::new());
        let budget = ReadBudget::new("n1", 100 << 20, 32 << 20, Arc::clone(&metrics));
        let wait = Duration::from_millis(50);
        let big = 24 << 20;
        let first = budget.admit(Some("alice"), big, 1, wait).await.unwrap();
        assert!(first.is_some());
        // Alice's second large read waits for her first; then is refused at its deadline.
        let e = budget.admit(Some("alice"), big, 1, wait).await.unwrap_err();
        assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
        // Bob's is served; small reads pass with no permit at all.
        assert!(
            budget
                .admit(Some("bob"), big, 1, wait)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            budget
                .admit(Some("alice"), 4096, 1, wait)
                .await
                .unwrap()
                .is_none()
        );
        drop(first);
        assert!(
            budget
                .admit(Some("alice"), big, 1, wait)
                .await
                .unwrap()
                .is_some()
        );
        // The node's budget bounds every caller together (nodes' reads included).
        let node = ReadBudget::new("n1", 40 << 20, 32 << 20, Arc::new(Metrics::new()));
        let _a = node.admit(Some("a"), big, 1, wait).await.unwrap();
        assert!(node.admit(None, big, 1, wait).await.is_err());
        // A read is charged for every copy it holds; one larger than the cap still goes, but
        // only by itself.
        drop(_a);
        let two = node.admit(None, big, 2, wait).await.unwrap().unwrap();
        assert_eq!(two.kib(), 48 * 1024);
        assert!(node.admit(None, 2 << 20, 1, wait).await.is_err());
    }

    #[test]
    fn requests_past_the_cap_are_refused_and_slots_come_back() {
        let metrics = Arc::new(Metrics::new());
        let shed = LoadShedding::new("n1", 2, Arc::clone(&metrics));
        let req = Request::new(());
        let a = shed.admit(&req).unwrap();
        let _b = shed.admit(&req).unwrap();
        let e = shed.admit(&req).unwrap_err();
        assert!(matches!(e, Error::Overloaded { .. }), "{e:?}");
        assert!(
            e.to_string().contains("2 requests in flight, the cap is 2"),
            "{e}"
        );
        drop(a);
        assert!(shed.admit(&req).is_ok());
    }
}
