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
