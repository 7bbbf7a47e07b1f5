//! Admission control of background work (paper 6.5): "background tasks ... run only when the
//! foreground latency allows it".
//!
//! Every client request this node coordinates or forwards records its latency in
//! [`Foreground`]: per one-second window, how many requests there were and how many took
//! longer than the bound (`[background] latency_bound_ms`). The 99th percentile is above the
//! bound exactly when more than 1% of the requests were, so two counters a window answer the
//! question without a histogram. Background workers (hint delivery, anti-entropy, tombstone
//! reaping, and later partition transfer) call [`Admission::admit`] before each batch of work:
//! while the last second's p99 is above the bound it waits, counting the pause in
//! `dynamokv_background_paused_total{worker}`, and it returns `false` once the node shuts down.
//!
//! Time comes from `tokio::time`, so a simulated clock drives it in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The named background workers, as they appear in metrics.
pub const WORKERS: [&str; 4] = [
    "hinted_handoff",
    "anti_entropy",
    "tombstone_reaper",
    "transfer",
];

/// How long a paused worker waits before looking at the latency again.
const PAUSE_STEP: Duration = Duration::from_millis(100);

/// One second's count of foreground requests.
#[derive(Debug, Default)]
struct Window {
    /// Which second since `Foreground::epoch` this window counts.
    second: AtomicU64,
    total: AtomicU64,
    slow: AtomicU64,
}

/// Foreground request latency over the last second or two, against a bound.
#[derive(Debug)]
pub struct Foreground {
    epoch: Instant,
    bound_us: AtomicU64,
    windows: [Window; 2],
}

impl Default for Foreground {
    fn default() -> Self {
        Foreground {
            epoch: Instant::now(),
            bound_us: AtomicU64::new(50_000),
            windows: Default::default(),
        }
    }
}

impl Foreground {
    /// Sets the latency bound background work yields to.
    pub fn set_bound(&self, bound: Duration) {
        self.bound_us
            .store(bound.as_micros() as u64, Ordering::Relaxed);
    }

    fn second(&self) -> u64 {
        // Offset by one so that second 0 never looks like an unused window.
        self.epoch.elapsed().as_secs() + 1
    }

    /// Records one foreground request's latency.
    pub fn record(&self, took: Duration) {
        let now = self.second();
        let w = &self.windows[(now % 2) as usize];
        let seen = w.second.load(Ordering::Relaxed);
        if seen != now
            && w.second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A new second: the window starts over (a request counted by a racing thread
            // into the old second may be lost; this is an estimate).
            w.total.store(0, Ordering::Relaxed);
            w.slow.store(0, Ordering::Relaxed);
        }
        w.total.fetch_add(1, Ordering::Relaxed);
        if took.as_micros() as u64 > self.bound_us.load(Ordering::Relaxed) {
            w.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether more than 1% of the requests of this second and the last took longer than the
    /// bound: their p99 is above it.
    pub fn overloaded(&self) -> bool {
        let now = self.second();
        let (mut total, mut slow) = (0, 0);
        for w in &self.windows {
            let s = w.second.load(Ordering::Relaxed);
            if s == now || s + 1 == now {
                total += w.total.load(Ordering::Relaxed);
                slow += w.slow.load(Ordering::Relaxed);
            }
        }
        slow * 100 > total
    }
}

/// The gate background workers pass before each batch of work.
#[derive(Debug, Clone)]
pub struct Admission {
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Admission {
    pub fn new(metrics: Arc<Metrics>, bound: Duration, stop: CancellationToken) -> Admission {
        metrics.foreground.set_bound(bound);
        Admission { metrics, stop }
    }

    /// Waits while foreground latency is above the bound. `false`: the node is shutting down,
    /// and the worker should stop.
    pub async fn admit(&self, worker: &'static str) -> bool {
        let mut paused = false;
        while self.metrics.foreground.overloaded() {
            if !paused {
                paused = true;
                self.metrics.background_paused(worker);
                tracing::debug!(worker, "foreground latency above the bound: pausing");
            }
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(PAUSE_STEP) => {}
            }
        }
        !self.stop.is_cancelled()
    }

    /// Sleeps for `wait`, or until the node shuts down (then `false`).
    pub async fn sleep(&self, wait: Duration) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// Whether the node is shutting down.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn background_work_waits_while_more_than_one_percent_of_requests_are_slow() {
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let gate = Admission::new(
            Arc::clone(&metrics),
            Duration::from_millis(10),
            stop.clone(),
        );
        let fg = &metrics.foreground;
        assert!(!fg.overloaded(), "no requests: nothing to yield to");
        for _ in 0..99 {
            fg.record(Duration::from_millis(1));
        }
        fg.record(Duration::from_millis(20));
        assert!(
            !fg.overloaded(),
            "1 slow in 100 is the p99 itself, not above it"
        );
        fg.record(Duration::from_millis(20));
        assert!(fg.overloaded());
        // The slow second is forgotten within two, even without new requests.
        let paused = Instant::now();
        assert!(
            gate.admit("anti_entropy").await,
            "the window passes and work resumes"
        );
        assert!(paused.elapsed() <= Duration::from_millis(2100));
        assert!(!fg.overloaded());
        assert_eq!(metrics.background_pauses(), 1);
        // Shutdown ends a pause.
        fg.record(Duration::from_millis(20));
        stop.cancel();
        assert!(!gate.admit("hinted_handoff").await);
    }
}
