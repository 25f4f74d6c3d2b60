//! What a broker knows of its cluster, for `Cluster.Metadata`, `sluice
//! cluster status` and (later) clients looking for leaders: the brokers of the
//! catalog and the metadata group's state, in plain numbers.

use std::sync::Arc;

use sluice_replication::{GroupReport, MetaNode};

/// A read-only handle on the cluster side of this broker. Absent on a single broker.
#[derive(Clone)]
pub struct ClusterView {
    node: Arc<MetaNode>,
}

/// The cluster as this broker sees it now.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// This broker's id.
    pub broker_id: u64,
    /// Registered brokers: id and client endpoint, by id.
    pub brokers: Vec<(u64, String)>,
    /// The metadata group.
    pub metadata: GroupReport,
}

impl ClusterView {
    pub(super) fn new(node: Arc<MetaNode>) -> Self {
        ClusterView { node }
    }

    /// The report, read from this broker's catalog and Raft state (no network).
    pub fn report(&self) -> ClusterReport {
        ClusterReport {
            broker_id: self.node.id(),
            brokers: self.node.catalog().brokers.into_iter().collect(),
            metadata: self.node.report(),
        }
    }
}
