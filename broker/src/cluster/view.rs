//! What a broker knows of its cluster, for `Cluster.Metadata`, `sluice
//! cluster status` and clients looking for leaders: the brokers of the
//! catalog, the metadata group's and every shard's state, and which broker
//! leads each partition, in plain numbers.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_replication::{GroupReport, MetaNode, ReplaceError, ReplaceProgress, ReplaceStage, Replacement};
use sluice_storage::raft::GroupId;
use sluice_storage::PartitionId;

use crate::partition::ReplicatedPartitions;

/// A read-only handle on the cluster side of this broker. Absent on a single broker.
#[derive(Clone)]
pub struct ClusterView {
    node: Arc<MetaNode>,
    replicated: Arc<ReplicatedPartitions>,
}

/// The cluster as this broker sees it now.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// This broker's id.
    pub broker_id: u64,
    /// Registered brokers: id and client endpoint, by id.
    pub brokers: Vec<(u64, String)>,
    /// Brokers whose data volume is below its free-space reserve.
    pub disk_full: std::collections::BTreeSet<u64>,
    /// The metadata group.
    pub metadata: GroupReport,
    /// Every shard, by number.
    pub shards: Vec<(u64, GroupReport)>,
    /// The partitions of the topics asked for.
    pub partitions: Vec<PartitionLeader>,
    /// The consumer groups asked for.
    pub groups: Vec<GroupLeader>,
}

/// Where one consumer group is served (its shard's leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLeader {
    /// Group name.
    pub group: String,
    /// Its shard.
    pub shard: u64,
    /// The leading broker, if known, with its client endpoint (if registered).
    pub leader: Option<(u64, Option<String>)>,
    /// The shard's term.
    pub epoch: u64,
}

/// Where one partition is led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Its shard.
    pub shard: u64,
    /// The leading broker, if known, with its client endpoint (if registered).
    pub leader: Option<(u64, Option<String>)>,
    /// The shard's term.
    pub epoch: u64,
}

impl ClusterView {
    pub(super) fn new(node: Arc<MetaNode>, replicated: Arc<ReplicatedPartitions>) -> Self {
        ClusterView { node, replicated }
    }

    /// Replaces broker `replacement.old` by `replacement.new` in every Raft
    /// group (`sluice_replication::membership`), reporting each step.
    pub async fn replace_broker(
        &self,
        replacement: Replacement,
        mut progress: impl FnMut(ReplaceProgress),
    ) -> Result<(), ReplaceError> {
        // A placed shard of three or more replicas holding the old broker has a
        // majority without it: its replica is replaced like any other, under the
        // same id (an empty disk) or moved to a new id (its replica set changes in
        // the catalog first). A shard of one or two replicas cannot change its
        // membership without the lost one.
        let (old, new) = (replacement.old, replacement.new);
        let (mut placed, mut moved) = (BTreeSet::new(), Vec::new());
        for (group, shard) in self.node.catalog().shards.iter() {
            let holds_old = shard.replicas.contains(&old);
            // Moved by an earlier run of this replacement, interrupted.
            let taken_over = old != new && shard.joined.contains(&new);
            if !holds_old && !taken_over {
                continue;
            }
            if shard.replicas.len() >= 3 || taken_over {
                placed.insert(*group);
                if holds_old && old != new {
                    moved.push(GroupId(*group));
                }
                continue;
            }
            progress(ReplaceProgress {
                group: *group,
                stage: ReplaceStage::NotReplaced { replicas: shard.replicas.clone() },
            });
        }
        let placed_shard = |n: &u64| *n >= sluice_replication::meta::FIRST_PLACED_SHARD;
        let mut shards = Vec::new();
        for (number, shard) in self.replicated.numbered_shards() {
            if !placed_shard(&number) || placed.remove(&number) {
                shards.push(shard);
            }
        }
        // Those this broker holds no replica of are walked through their recorded leaders.
        let elsewhere: Vec<GroupId> = placed.into_iter().map(GroupId).collect();
        self.node.replace_broker((&shards, &elsewhere), &moved, replacement, &mut progress).await
    }

    /// The report, read from this broker's catalog and Raft state (no
    /// network), with the leaders of `topics`' partitions and of `groups`
    /// (unknown names are left out).
    pub fn report(&self, topics: &[String], groups: &[String]) -> ClusterReport {
        let catalog = self.node.catalog();
        let shards = self.replicated.reports();
        // A shard's leader (with its endpoint, if registered) and term.
        let leader_of = |shard: u64| {
            let report = shards.iter().find(|(n, _)| *n == shard).map(|(_, r)| r);
            // A placed shard this broker holds no replica of: as its leader recorded it.
            let (leader, term) = match (report, catalog.shard_leaders.get(&shard)) {
                (Some(r), _) => (r.leader, r.term),
                (None, Some(l)) => (Some(l.broker), l.term),
                (None, None) => (None, 0),
            };
            (leader.map(|id| (id, catalog.brokers.get(&id).cloned())), term)
        };
        let mut partitions = Vec::new();
        for name in topics {
            let Some(topic) = catalog.topics.get(name) else { continue };
            for index in 0..topic.partitions {
                let shard = self.replicated.shard_number(PartitionId::new(topic.id, index));
                let (leader, epoch) = leader_of(shard);
                partitions.push(PartitionLeader { topic: name.clone(), partition: index, shard, leader, epoch });
            }
        }
        let mut group_leaders = Vec::new();
        for name in groups {
            let Some(group) = catalog.groups.get(name) else { continue };
            let shard = self.replicated.group_shard_number(group.id);
            let (leader, epoch) = leader_of(shard);
            group_leaders.push(GroupLeader { group: name.clone(), shard, leader, epoch });
        }
        ClusterReport {
            groups: group_leaders,
            broker_id: self.node.id(),
            brokers: catalog.brokers.into_iter().collect(),
            disk_full: catalog.disk_full,
            metadata: self.node.report(),
            shards,
            partitions,
        }
    }
}
