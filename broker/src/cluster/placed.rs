//! Placed shards: the shards of topics whose replication factor is below the
//! number of brokers (`docs/REPLICATION.md`, "Raft groups"). The metadata
//! group makes them, each with its replica set, when the first topic of such
//! a set is created; a broker starts its replica of every placed shard the
//! catalog lists it in (at start, and as the catalog makes more), and each
//! placed shard's leader records its leadership in the catalog, so brokers
//! outside the shard can send its clients there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sluice_replication::meta::{Catalog, CatalogShard, MetaCommand};
use sluice_replication::shard::ShardLog;
use sluice_replication::{ClusterConfig, MetaNode, ShardHost, ShardNode, ShardStart};
use sluice_storage::raft::GroupId;
use sluice_storage::{PartitionId, PartitionLog, Store, WriterHandle};

use crate::partition::{ReplicatedPartitions, Watermarks};

/// What a placed shard's replica is started with.
pub(super) struct PlacedShards {
    config: ClusterConfig,
    store: Arc<Store>,
    writer: WriterHandle,
    node: Arc<MetaNode>,
    watermarks: Arc<Watermarks>,
}

impl PlacedShards {
    /// A starter of this broker's placed-shard replicas.
    pub(super) fn new(
        config: ClusterConfig,
        (store, writer): (Arc<Store>, WriterHandle),
        node: Arc<MetaNode>,
        watermarks: Arc<Watermarks>,
    ) -> Self {
        PlacedShards { config, store, writer, node, watermarks }
    }

    /// The placed shards `catalog` lists this broker in, with the recovered
    /// logs each one owns taken out of `logs`: those it recorded making, and
    /// those of topics placed on it.
    pub(super) fn claim(
        &self,
        catalog: &Catalog,
        logs: &mut HashMap<PartitionId, PartitionLog>,
    ) -> std::io::Result<BTreeMap<u64, Vec<PartitionLog>>> {
        let mut claimed = BTreeMap::new();
        for (number, _) in catalog.shards_of(self.config.node_id) {
            let mut owned: Vec<PartitionLog> = ShardLog::recorded_partitions(&self.store, GroupId(number))?
                .into_iter()
                .filter_map(|id| logs.remove(&id))
                .collect();
            for topic in catalog.topics.values().filter(|t| t.shard == Some(number)) {
                owned.extend((0..topic.partitions).filter_map(|i| logs.remove(&PartitionId::new(topic.id, i))));
            }
            claimed.insert(number, owned);
        }
        Ok(claimed)
    }

    /// Starts this broker's replica of placed shard `number` over `partitions`
    /// and sets its group up with its replicas if it never was (every first
    /// replica does: openraft takes the same first membership from each; a
    /// broker that took a lost one's replica over waits to be added instead).
    pub(super) async fn start(
        &self,
        number: u64,
        placed: &CatalogShard,
        partitions: Vec<PartitionLog>,
    ) -> std::io::Result<Arc<ShardNode>> {
        let replicas = &placed.replicas;
        let start = ShardStart {
            group: GroupId(number),
            store: self.store.clone(),
            writer: self.writer.clone(),
            connections: self.node.connections(),
            service: self.node.service(),
            host: self.watermarks.clone(),
            partitions,
        };
        let shard = ShardNode::start(&self.config, start).await?;
        for (partition, mark) in shard.watermarks() {
            self.watermarks.committed(partition, mark);
        }
        let addresses = self.node.addresses();
        let members: BTreeMap<u64, String> =
            replicas.iter().filter_map(|id| Some((*id, addresses.get(id)?.clone()))).collect();
        let fence = self.node.fence();
        if fence.waiting() && replicas.len() >= 3 && shard.is_empty() {
            // This broker lost its data and learns the catalog again: the shard
            // may predate the loss, and this replica may have voted in it then.
            // With three or more replicas the others can elect without it; it
            // votes once `sluice cluster replace` has replaced its replica.
            fence.fence([shard.group()]).await?;
            tracing::warn!(shard = number, ?replicas, "placed shard on a broker that lost its data: not voting");
        } else if placed.joined.contains(&self.config.node_id) {
            // The group was set up before this broker held it: a first membership
            // of its own (unlike the others') would break log matching.
            if shard.is_empty() {
                tracing::info!(shard = number, ?replicas, "replica taken over from a lost broker: waiting to be added");
            }
        } else if members.len() == replicas.len() {
            shard.initialize(&members).await?;
        } else {
            tracing::warn!(shard = number, ?replicas, "no cluster address for every replica: waiting to be added");
        }
        Ok(Arc::new(shard))
    }

    /// Starts a replica of every placed shard `catalog` lists this broker
    /// in that it does not run yet (made since it started), and copies the
    /// placements to `replicated`: before the registries follow the same
    /// catalog, so a new topic's partitions find their shard.
    pub(super) async fn follow(&self, catalog: &Catalog, replicated: &ReplicatedPartitions) -> std::io::Result<()> {
        for (number, shard) in catalog.shards_of(self.config.node_id) {
            if replicated.holds(number) {
                continue;
            }
            let node = self.start(number, shard, Vec::new()).await?;
            // A shard taken over from a lost broker has topics this broker bound
            // while it held none of their partitions: their logs, which the
            // leader's entries or snapshot fill.
            for topic in catalog.topics.values().filter(|t| t.shard == Some(number)) {
                for index in 0..topic.partitions {
                    let id = PartitionId::new(topic.id, index);
                    if node.with_partition(id, |_| ()).is_none() {
                        node.adopt(PartitionLog::new(&self.store, id, topic.created_ms));
                    }
                }
            }
            tracing::info!(shard = number, replicas = ?shard.replicas, "replica of a placed shard started");
            replicated.add_shard(number, node);
        }
        replicated.follow(catalog);
        Ok(())
    }
}

/// How often a broker checks that the catalog names it as leader of the
/// placed shards it leads.
const RECORD_LEADERS_EVERY: Duration = Duration::from_millis(200);

/// Records this broker's leadership of placed shards in the catalog (one
/// small entry per election): brokers outside a placed shard learn its
/// leader only from there.
pub(super) async fn record_leaders(
    node: Arc<MetaNode>,
    replicated: Arc<ReplicatedPartitions>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECORD_LEADERS_EVERY) => {}
        }
        for (number, shard) in replicated.numbered_shards() {
            if number < sluice_replication::meta::FIRST_PLACED_SHARD {
                continue;
            }
            let Some((lease, _)) = shard.lease() else { continue };
            if replicated.recorded_leader(number) == Some((node.id(), lease.term)) {
                continue;
            }
            let command = MetaCommand::SetShardLeader { shard: number, broker: node.id(), term: lease.term };
            match node.propose(command).await {
                Ok(_) => tracing::debug!(shard = number, term = lease.term, "recorded this broker's shard leadership"),
                Err(e) => tracing::warn!(shard = number, error = %e, "recording a shard leadership failed; will retry"),
            }
        }
    }
}
