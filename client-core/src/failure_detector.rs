//! The client's own, local view of which nodes answer (paper 4.8.3: "a purely local notion of
//! failure detection is entirely sufficient").
//!
//! A node that does not answer an attempt within the attempt timeout, or whose connection
//! fails, is marked down: later requests go to the other nodes first and never wait on it. A
//! background probe (a cheap `Membership` call, with its own short timeout) retries it with
//! exponential backoff, from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], and marks it up again once
//! it answers. A hung node (a stopped process, whose connections stay open) is detected like a
//! dead one, by its silence.
//!
//! The detector knows nothing of the network: the client reports outcomes and asks for an
//! order of nodes to try, and supplies the probe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// First wait before probing a node marked down.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between probes of a node that stays down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    /// Marked down at the given time; a probe is running.
    Down {
        since: Instant,
    },
}

/// The health of each node a client has talked to, by address. A node never heard of is up.
#[derive(Debug, Default)]
pub(crate) struct FailureDetector {
    nodes: Mutex<HashMap<String, Health>>,
}

impl FailureDetector {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the node at `address` is considered up.
    pub(crate) fn is_up(&self, address: &str) -> bool {
        self.lock().get(address).is_none_or(|h| *h == Health::Up)
    }

    /// `candidates` in the order to try them: those up first, then those down (a request
    /// still tries them when nothing else is left), each group in the given order.
    pub(crate) fn order(&self, candidates: &[String]) -> Vec<String> {
        let nodes = self.lock();
        let mut order = candidates.to_vec();
        // A stable sort keeps the given order within each group.
        order.sort_by_key(|a| nodes.get(a).is_some_and(|h| *h != Health::Up));
        order
    }

    /// Records that the node answered. Returns whether it was down.
    pub(crate) fn record_answer(&self, address: &str) -> bool {
        let mut nodes = self.lock();
        match nodes.get_mut(address) {
            Some(h @ Health::Down { .. }) => {
                *h = Health::Up;
                true
            }
            _ => false,
        }
    }

    /// Records that the node did not answer. Returns true if this marked it down (it was up),
    /// in which case the caller starts a probe.
    pub(crate) fn record_silence(&self, address: &str) -> bool {
        let mut nodes = self.lock();
        let h = nodes.entry(address.to_string()).or_insert(Health::Up);
        if *h != Health::Up {
            return false;
        }
        *h = Health::Down {
            since: Instant::now(),
        };
        true
    }

    /// How long the node has been down, if it is.
    #[cfg(test)]
    pub(crate) fn down_for(&self, address: &str) -> Option<Duration> {
        match self.lock().get(address) {
            Some(Health::Down { since }) => Some(since.elapsed()),
            _ => None,
        }
    }
}

/// The wait before the probe after `previous` (doubling, within the bounds).
pub(crate) fn next_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => MIN_BACKOFF,
        Some(d) => (d * 2).clamp(MIN_BACKOFF, MAX_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_marked_down_go_last_until_they_answer() {
        let fd = FailureDetector::default();
        let all: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let order = |fd: &FailureDetector, v: &[&str]| {
            fd.order(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(fd.order(&all), all);
        assert!(fd.record_silence("b"));
        assert!(!fd.record_silence("b"), "already down: no second probe");
        assert!(!fd.is_up("b"));
        assert!(fd.is_up("never-heard-of"));
        assert!(fd.down_for("b").is_some());
        assert_eq!(order(&fd, &["b", "c", "a"]), ["c", "a", "b"]);
        assert_eq!(order(&fd, &["a", "b", "c"]), ["a", "c", "b"]);
        assert!(fd.record_silence("a"));
        assert_eq!(order(&fd, &["a", "b", "c"]), ["c", "a", "b"]);
        assert!(fd.record_answer("b"));
        assert!(!fd.record_answer("b"));
        assert_eq!(order(&fd, &["b", "c", "a"]), ["b", "c", "a"]);
    }

    #[test]
    fn probes_back_off_exponentially_within_bounds() {
        let mut d = next_backoff(None);
        assert_eq!(d, MIN_BACKOFF);
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_backoff(Some(d));
            seen.push(d);
        }
        assert_eq!(seen[1], MIN_BACKOFF * 2);
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }
}
