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

/// The health of each of a client's nodes, by index.
#[derive(Debug)]
pub(crate) struct FailureDetector {
    nodes: Mutex<Vec<Health>>,
}

impl FailureDetector {
    pub(crate) fn new(nodes: usize) -> FailureDetector {
        FailureDetector {
            nodes: Mutex::new(vec![Health::Up; nodes]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Health>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether node `i` is considered up.
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.lock().get(i) == Some(&Health::Up)
    }

    /// The nodes to try, starting the round robin at `start`: those up first, then those down
    /// (a request still tries them when nothing else is left).
    pub(crate) fn order(&self, start: usize) -> Vec<usize> {
        let nodes = self.lock();
        let n = nodes.len();
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        // A stable sort keeps the round robin within each group.
        order.sort_by_key(|&i| nodes[i] != Health::Up);
        order
    }

    /// Records that node `i` answered. Returns whether it was down.
    pub(crate) fn record_answer(&self, i: usize) -> bool {
        let mut nodes = self.lock();
        let was_down = matches!(nodes.get(i), Some(Health::Down { .. }));
        if let Some(h) = nodes.get_mut(i) {
            *h = Health::Up;
        }
        was_down
    }

    /// Records that node `i` did not answer. Returns true if this marked it down (it was up),
    /// in which case the caller starts a probe.
    pub(crate) fn record_silence(&self, i: usize) -> bool {
        let mut nodes = self.lock();
        match nodes.get_mut(i) {
            Some(h @ Health::Up) => {
                *h = Health::Down {
                    since: Instant::now(),
                };
                true
            }
            _ => false,
        }
    }

    /// How long node `i` has been down, if it is.
    #[cfg(test)]
    pub(crate) fn down_for(&self, i: usize) -> Option<Duration> {
        match self.lock().get(i) {
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
        let fd = FailureDetector::new(3);
        assert_eq!(fd.order(1), vec![1, 2, 0]);
        assert!(fd.record_silence(1));
        assert!(!fd.record_silence(1), "already down: no second probe");
        assert!(!fd.is_up(1));
        assert!(fd.down_for(1).is_some());
        assert_eq!(fd.order(1), vec![2, 0, 1]);
        assert_eq!(fd.order(0), vec![0, 2, 1]);
        assert!(fd.record_silence(0));
        assert_eq!(fd.order(0), vec![2, 0, 1]);
        assert!(fd.record_answer(1));
        assert!(!fd.record_answer(1));
        assert_eq!(fd.order(1), vec![1, 2, 0]);
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
