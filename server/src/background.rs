//! A node's background workers (paper 4.6, 4.7, 4.8, 4.9, 6.5): membership gossip, hint
//! delivery, anti-entropy, key-range transfer and tombstone reaping, all but gossip admitted by
//! [`Admission`] control, started with the node and stopped before its storage closes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::anti_entropy::AntiEntropy;
use crate::config::Config;
use crate::hinted_handoff::HintedHandoff;
use crate::key_range_transfer::KeyRangeTransfer;
use crate::membership::{Membership, PeerTransport};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::replica::LocalReplica;
use crate::tombstones::TombstoneReaper;

/// What every background worker works with.
#[derive(Debug, Clone)]
pub struct Shared {
    pub local: Arc<LocalReplica>,
    pub peers: Arc<Peers>,
    pub membership: Membership,
    pub metrics: Arc<Metrics>,
    pub admission: Admission,
    /// Deadline of one call to a peer.
    pub timeout: Duration,
}

/// The background workers of a node (paper 4.6, 4.7, 6.5), started with it and stopped before
/// its storage closes.
#[derive(Debug)]
pub struct Background {
    pub handoff: Arc<HintedHandoff>,
    pub anti_entropy: Arc<AntiEntropy>,
    reaper: Arc<TombstoneReaper>,
    pub transfer: Arc<KeyRangeTransfer>,
    gossip: (Membership, PeerTransport, Duration, Arc<Metrics>),
    anti_entropy_on: bool,
    /// Cancelled when the node starts shutting down.
    pub stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Background {
    pub fn new(
        local: Arc<LocalReplica>,
        peers: Arc<Peers>,
        membership: Membership,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> Background {
        let b = &config.background;
        let stop = CancellationToken::new();
        let admission = Admission::new(
            Arc::clone(&metrics),
            Duration::from_millis(b.latency_bound_ms),
            stop.clone(),
        );
        let shared = Shared {
            local,
            peers,
            membership,
            metrics,
            admission,
            timeout: config.replica_timeout(),
        };
        let ms = Duration::from_millis;
        let anti_entropy = Arc::new(AntiEntropy::new(
            shared.clone(),
            ms(b.anti_entropy_interval_ms),
        ));
        let transfer = Arc::new(KeyRangeTransfer::new(
            shared.clone(),
            Arc::clone(&anti_entropy),
            ms(config.cluster.transfer_interval_ms),
        ));
        let gossip = (
            shared.membership.clone(),
            PeerTransport {
                peers: Arc::clone(&shared.peers),
                timeout: shared.timeout,
            },
            ms(config.cluster.gossip_interval_ms),
            Arc::clone(&shared.metrics),
        );
        Background {
            handoff: Arc::new(HintedHandoff::new(
                shared.clone(),
                ms(b.handoff_interval_ms),
            )),
            anti_entropy,
            transfer,
            gossip,
            reaper: Arc::new(TombstoneReaper::new(
                shared,
                ms(b.tombstone_grace_ms),
                ms(b.reap_interval_ms),
            )),
            anti_entropy_on: b.anti_entropy_interval_ms > 0,
            stop,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Starts the workers.
    pub fn start(&self) {
        let (membership, transport, interval, metrics) = self.gossip.clone();
        self.tasks
            .spawn(membership.run_gossip(transport, interval, self.stop.clone(), metrics));
        self.tasks.spawn(Arc::clone(&self.transfer).run());
        self.tasks.spawn(Arc::clone(&self.handoff).run());
        if self.anti_entropy_on {
            self.tasks.spawn(Arc::clone(&self.anti_entropy).run());
        }
        self.tasks.spawn(Arc::clone(&self.reaper).run());
        self.tasks.close();
    }

    /// Stops the workers and waits for them, at most `deadline`.
    pub async fn wait(&self, deadline: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background workers did not stop in time");
        }
    }
}
