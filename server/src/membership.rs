//! Cluster membership (paper 4.8) as the rest of the node sees it: the current
//! [`ClusterView`], published through a watch channel.
//!
//! Here the view comes from the static member list of the configuration. Gossip will publish
//! new views into the same channel, so the coordinator and services do not change when it does.

use std::sync::Arc;

use tokio::sync::watch;

use dynamokv_common::{Member, Ring};

use crate::config::{Config, ConfigError, Quorums};

/// One consistent picture of the cluster.
#[derive(Debug)]
pub struct ClusterView {
    pub cluster_name: String,
    pub self_id: String,
    pub ring: Ring,
    pub quorums: Quorums,
}

/// The current view, and what later views will be published through.
#[derive(Debug, Clone)]
pub struct Membership {
    rx: watch::Receiver<Arc<ClusterView>>,
}

impl Membership {
    /// A membership that never changes: the configured members, or this node alone (at its
    /// advertised address) when none are configured.
    pub fn fixed(config: &Config, advertised: &str) -> Result<Membership, ConfigError> {
        let members: Vec<Member> = if config.cluster.members.is_empty() {
            vec![Member::new(config.node_id.clone(), advertised)]
        } else {
            config
                .cluster
                .members
                .iter()
                .map(|m| {
                    Member::new(m.id.clone(), m.address.clone())
                        .with_zone(m.zone.clone())
                        .with_weight(m.weight)
                })
                .collect()
        };
        let ring = Ring::new(config.cluster.partitions, members)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let view = ClusterView {
            cluster_name: config.cluster.name.clone(),
            self_id: config.node_id.clone(),
            ring,
            quorums: config.quorums()?,
        };
        let (tx, rx) = watch::channel(Arc::new(view));
        // A fixed membership has no publisher; keep the channel open for the process lifetime.
        std::mem::forget(tx);
        Ok(Membership { rx })
    }

    /// The view in force now.
    pub fn current(&self) -> Arc<ClusterView> {
        Arc::clone(&self.rx.borrow())
    }
}
