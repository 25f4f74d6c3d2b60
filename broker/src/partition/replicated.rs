//! Partitions in a cluster: each belongs to a shard (a Raft group, see
//! `docs/REPLICATION.md`), which owns its `PartitionLog`, assigns offsets on
//! every replica alike, and raises its committed watermark as entries commit.
//! There is no partition actor: an append is a proposal to the shard, made
//! where the shard's leader is; elsewhere it is refused with the leader's
//! client endpoint and epoch, for the client to go there.
//!
//! Which shard a partition belongs to: a topic whose replication factor is
//! below the number of brokers is placed on one shard of that many replicas,
//! recorded in the catalog (`Placement`); any other partition belongs to the
//! shards every broker holds, by a function of its ids and their count
//! ([`shard_of`]), which every broker computes alike even before its catalog
//! has created the topic. A broker outside a placed shard's replicas holds
//! none of its partitions and sends their clients to its leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use sluice_proto::v1::Message;
use sluice_replication::meta::{Catalog, ShardLeader};
use sluice_replication::{
    BatchCommand, MetaNode, ShardCommand, ShardHost, ShardNode, ShardProposeError, ShardResponse,
};
use sluice_storage::raft::GroupId;
use sluice_storage::record::encode_body;
use sluice_storage::{now_ms, PartitionId, PartitionLog, ProducerSeq, RecordRef, Store, TopicConfig, TopicId};

use super::forward::Forwarder;
use super::handle::{AppendResult, PartitionSnapshot, Shared};
use crate::error::{Error, Result};

/// Shards per broker of the cluster: enough that leaders spread over every
/// broker, few enough that their heartbeats cost nothing (CLUSTER.md).
pub const SHARDS_PER_BROKER: u64 = 2;

/// The shard (numbered from 1) that holds consumer group `group` (its id) in a
/// cluster of `shards` shards: computed like a partition's, by every broker alike.
pub fn shard_of_group(group: u64, shards: u64) -> u64 {
    1 + group % shards.max(1)
}

/// The shard (numbered from 1) that holds `partition` in a cluster of `shards` shards.
pub fn shard_of(partition: PartitionId, shards: u64) -> u64 {
    1 + (partition.topic.0.wrapping_add(u64::from(partition.index))) % shards.max(1)
}

/// The broker's side of its shards: settings to append with, and the
/// watermarks that applying entries raises. A watermark may arrive before
/// the partition's handle exists (the catalog lags the shard); it is kept
/// and given to the handle when it is made.
pub struct Watermarks {
    state: Mutex<WatermarkState>,
    /// For batches of topics not created here yet: the broker's topic defaults.
    defaults: TopicConfig,
}

#[derive(Default)]
struct WatermarkState {
    marks: HashMap<PartitionId, u64>,
    handles: HashMap<PartitionId, Arc<Shared>>,
    settings: HashMap<TopicId, Arc<RwLock<TopicConfig>>>,
}

impl Watermarks {
    /// Watermarks of no partition yet; `defaults` for topics not created here yet.
    pub fn new(defaults: TopicConfig) -> Self {
        Watermarks { state: Mutex::default(), defaults }
    }

    fn state(&self) -> MutexGuard<'_, WatermarkState> {
        // Every change is a single map operation.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, id: PartitionId, shared: &Arc<Shared>, settings: &Arc<RwLock<TopicConfig>>) {
        let mut state = self.state();
        if let Some(mark) = state.marks.get(&id) {
            shared.raise_committed(*mark);
        }
        state.handles.insert(id, shared.clone());
        state.settings.insert(id.topic, settings.clone());
    }

    fn unregister(&self, id: PartitionId) {
        let mut state = self.state();
        state.handles.remove(&id);
        state.marks.remove(&id);
        state.settings.remove(&id.topic);
    }
}

impl ShardHost for Watermarks {
    fn settings(&self, partition: PartitionId) -> TopicConfig {
        if let Some(s) = self.state().settings.get(&partition.topic) {
            return *s.read().unwrap_or_else(|e| e.into_inner());
        }
        self.defaults
    }

    fn committed(&self, partition: PartitionId, end: u64) {
        let mut state = self.state();
        let mark = state.marks.entry(partition).or_default();
        *mark = (*mark).max(end);
        if let Some(shared) = state.handles.get(&partition) {
            shared.raise_committed(end);
        }
    }

    fn log_started(&self, partition: PartitionId, start: u64) {
        if let Some(shared) = self.state().handles.get(&partition) {
            shared.log_start.fetch_max(start, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// A proto message seen as a storage record by reference: a replicated batch
/// is encoded once, straight from the request.
struct MessageRef<'a>(&'a Message);

impl RecordRef for MessageRef<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.0.key.as_deref()
    }
    fn value(&self) -> &[u8] {
        &self.0.value
    }
    fn header_count(&self) -> usize {
        self.0.headers.len()
    }
    fn header(&self, i: usize) -> (&str, &[u8]) {
        let h = &self.0.headers[i];
        (&h.key, &h.value)
    }
}

/// This broker's shards, and how appends reach them.
pub struct ReplicatedPartitions {
    store: Arc<Store>,
    /// The shards this broker holds a replica of, by number: every shard of
    /// the whole cluster, and the placed shards it is a replica of (started
    /// as the catalog makes them).
    shards: RwLock<BTreeMap<u64, Arc<ShardNode>>>,
    /// How many shards every broker holds (numbered 1 to this).
    shard_count: u64,
    placement: RwLock<Placement>,
    watermarks: Arc<Watermarks>,
    meta: Arc<MetaNode>,
    forwarder: Forwarder,
    /// Bumped whenever this broker starts a replica of another shard.
    added: tokio::sync::watch::Sender<u64>,
}

/// Where the catalog placed topics and groups of a replication factor below
/// the number of brokers, and who leads those shards; copied from the
/// catalog as it changes (`follow`), so an append looks it up without the catalog.
#[derive(Default)]
struct Placement {
    topics: HashMap<TopicId, u64>,
    groups: HashMap<u64, u64>,
    replicas: HashMap<u64, Vec<u64>>,
    leaders: HashMap<u64, ShardLeader>,
}

impl std::fmt::Debug for ReplicatedPartitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedPartitions").field("shard_count", &self.shard_count).finish_non_exhaustive()
    }
}

impl ReplicatedPartitions {
    /// The shard side of a broker: `shards` (by number: those every broker
    /// holds, and the placed ones this broker holds) over `store`, reporting
    /// to `watermarks`; `meta` names leaders' endpoints. `shard_count` is how
    /// many shards every broker holds.
    pub fn new(
        store: Arc<Store>,
        (shards, shard_count): (BTreeMap<u64, Arc<ShardNode>>, u64),
        watermarks: Arc<Watermarks>,
        meta: Arc<MetaNode>,
    ) -> Self {
        let replicated = ReplicatedPartitions {
            store,
            shards: RwLock::new(shards),
            shard_count,
            placement: RwLock::default(),
            watermarks,
            forwarder: Forwarder::new(meta.clone()),
            meta,
            added: tokio::sync::watch::Sender::new(0),
        };
        replicated.follow(&replicated.meta.catalog());
        replicated
    }

    fn shards(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<ShardNode>>> {
        // Every change is a single map operation.
        self.shards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn placement(&self) -> std::sync::RwLockReadGuard<'_, Placement> {
        self.placement.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the placements and placed shards' leaders from `catalog`.
    pub fn follow(&self, catalog: &Catalog) {
        let placement = Placement {
            topics: catalog.topics.values().filter_map(|t| Some((t.id, t.shard?))).collect(),
            groups: catalog.groups.values().filter_map(|g| Some((g.id, g.shard?))).collect(),
            replicas: catalog.shards.iter().map(|(id, s)| (*id, s.replicas.clone())).collect(),
            leaders: catalog.shard_leaders.iter().map(|(id, l)| (*id, *l)).collect(),
        };
        *self.placement.write().unwrap_or_else(|e| e.into_inner()) = placement;
    }

    /// Takes this broker's new replica of placed shard `number`.
    pub fn add_shard(&self, number: u64, node: Arc<ShardNode>) {
        self.shards.write().unwrap_or_else(|e| e.into_inner()).insert(number, node);
        self.added.send_modify(|n| *n += 1);
    }

    /// Changes whenever this broker starts a replica of another shard (one
    /// the catalog made, or moved to it from a lost broker).
    pub fn shards_added(&self) -> tokio::sync::watch::Receiver<u64> {
        self.added.subscribe()
    }

    /// Whether this broker holds a replica of shard `number`.
    pub fn holds(&self, number: u64) -> bool {
        self.shards().contains_key(&number)
    }

    fn shard(&self, id: PartitionId) -> Result<Arc<ShardNode>> {
        self.shard_numbered(self.shard_number(id), || format!("partition {}", id.index))
    }

    /// This broker's replica of shard `number`; `not_leader` (naming its
    /// leader, or a replica, as the catalog last recorded) when it holds none:
    /// `of` names what was asked for.
    fn shard_numbered(&self, number: u64, of: impl FnOnce() -> String) -> Result<Arc<ShardNode>> {
        if let Some(shard) = self.shards().get(&number) {
            return Ok(shard.clone());
        }
        let placement = self.placement();
        let Some(replicas) = placement.replicas.get(&number) else {
            return Err(Error::ClusterUnavailable(format!(
                "this broker runs no shard {number} yet (its catalog has not reached the change that made it): retry; \
                 if it persists, check that every broker has the same --peers"
            )));
        };
        let (leader, term) = match placement.leaders.get(&number) {
            Some(l) => (Some(l.broker), l.term),
            None => (replicas.first().copied(), 0),
        };
        Err(self.not_leader(of(), leader, term))
    }

    /// The shard that holds consumer group `group` (its id).
    pub fn group_shard(&self, group: u64) -> Result<Arc<ShardNode>> {
        self.shard_numbered(self.group_shard_number(group), || format!("group {group}"))
    }

    /// `not_leader` where this broker holds no replica of partition `id`
    /// (its topic's replication factor leaves it out): reads go to a replica.
    pub fn held_here(&self, id: PartitionId) -> Result<()> {
        self.shard(id).map(|_| ())
    }

    /// The answer for a request about partition `id` that broker `leader`
    /// leads in `term`.
    fn not_leader_of(&self, id: PartitionId, leader: Option<u64>, term: u64) -> Error {
        self.not_leader(format!("partition {}", id.index), leader, term)
    }

    /// The answer for a request about `of` ("partition 3", "group `g`") that
    /// broker `leader` leads in `term`: its client endpoint, if known.
    pub fn not_leader(&self, of: String, leader: Option<u64>, term: u64) -> Error {
        Error::NotLeader { of, leader: leader.and_then(|l| self.meta.broker_endpoint(l)), epoch: term }
    }

    /// Binds partition `id` to its shard: the shard takes a new log if it
    /// holds none yet, and the handle's watermark follows the shard's.
    /// Returns the partition's first stored offset.
    pub(super) fn bind(
        &self,
        id: PartitionId,
        shared: &Arc<Shared>,
        settings: &Arc<RwLock<TopicConfig>>,
    ) -> Result<u64> {
        self.watermarks.register(id, shared, settings);
        let Ok(shard) = self.shard(id) else {
            // Not a replica here: its clients are sent to one.
            return Ok(0);
        };
        if shard.with_partition(id, |_| ()).is_none() {
            shard.adopt(PartitionLog::new(&self.store, id, now_ms()));
        }
        Ok(shard.visible_start(id).unwrap_or(0))
    }

    /// Purges partition `id` below its committed end on every replica (a
    /// dead-letter purge, `ShardNode::purge`); returns how many records went.
    /// Refused while a broker runs a build that could not apply the entry.
    pub(super) async fn purge(&self, id: PartitionId) -> Result<u64> {
        self.meta.require_level(sluice_replication::meta::PURGE_LEVEL, "purging a replicated partition")?;
        let purged = match self.shard(id) {
            Ok(shard) => shard.purge(id).await,
            // A placed partition this broker holds no replica of: asked of its replicas.
            Err(Error::NotLeader { .. }) => self.purge_placed(id).await,
            Err(e) => return Err(e),
        };
        match purged {
            Ok(purged) => Ok(purged),
            Err(ShardProposeError::NotLeader { leader, term }) => Err(self.not_leader_of(id, leader, term)),
            Err(ShardProposeError::Unavailable(why)) => Err(Error::ClusterUnavailable(why)),
        }
    }

    /// Purges placed partition `id` at its replicas (this broker holds none):
    /// the leader the catalog recorded is asked first.
    async fn purge_placed(&self, id: PartitionId) -> std::result::Result<u64, ShardProposeError> {
        let number = self.shard_number(id);
        let (mut replicas, leader) = {
            let placement = self.placement();
            (
                placement.replicas.get(&number).cloned().unwrap_or_default(),
                placement.leaders.get(&number).map(|l| l.broker),
            )
        };
        replicas.sort_by_key(|r| Some(*r) != leader);
        let addresses = self.meta.addresses();
        let replicas: Vec<(u64, String)> =
            replicas.into_iter().filter_map(|r| addresses.get(&r).map(|a| (r, a.clone()))).collect();
        sluice_replication::shard::purge_placed(&self.meta.connections(), GroupId(number), &replicas, id).await
    }

    /// The metadata group (leaders' endpoints, the catalog).
    pub fn meta(&self) -> &MetaNode {
        &self.meta
    }

    /// The broker's store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Forgets partition `id` (its topic is deleted).
    pub(super) fn unbind(&self, id: PartitionId) {
        self.watermarks.unregister(id);
        if let Ok(shard) = self.shard(id) {
            shard.forget(id);
        }
    }

    /// Appends `messages` to partition `id` through its shard's leader.
    pub(super) async fn append(
        &self,
        id: PartitionId,
        messages: &[Message],
        producer: Option<ProducerSeq>,
    ) -> Result<AppendResult> {
        let shard = self.shard(id)?;
        let records: Vec<MessageRef<'_>> = messages.iter().map(MessageRef).collect();
        let command = ShardCommand::Batch(BatchCommand {
            topic: id.topic.0,
            partition: id.index,
            timestamp_ms: now_ms(),
            producer: producer.map(|p| (p.producer_id, p.sequence)),
            count: messages.len() as u32,
            body: encode_body(&records),
        });
        match shard.propose(command).await {
            Ok(ShardResponse::Appended { base_offset, duplicate, .. }) => Ok(AppendResult { base_offset, duplicate }),
            Ok(ShardResponse::OutOfOrder { producer_id, got, expected }) => {
                Err(sluice_storage::Error::OutOfOrderSequence { producer_id, got, expected }.into())
            }
            Ok(ShardResponse::Refused(why)) => Err(Error::InvalidArgument { field: "messages", reason: why }),
            Ok(ShardResponse::Done) => Err(Error::ClusterUnavailable("the shard answered a batch with nothing".into())),
            Err(ShardProposeError::NotLeader { leader, term }) => Err(self.not_leader_of(id, leader, term)),
            Err(ShardProposeError::Unavailable(why)) => Err(Error::ClusterUnavailable(why)),
        }
    }

    /// Appends the broker's own `messages` (no producer id) to partition
    /// `id` of `topic`, wherever its leader is: through the shard here, or
    /// over the leader's client API.
    pub(super) async fn append_at_leader(
        &self,
        topic: &str,
        id: PartitionId,
        messages: &[Message],
    ) -> Result<AppendResult> {
        match self.append(id, messages, None).await {
            Err(Error::NotLeader { leader: Some(endpoint), .. }) => {
                let appended = self.forwarder.append(&endpoint, topic, id.index, messages, None).await?;
                tracing::info!(
                    topic,
                    partition = id.index,
                    leader = %endpoint,
                    messages = messages.len(),
                    "appended at the partition's leader elsewhere"
                );
                Ok(appended)
            }
            other => other,
        }
    }

    /// At the leader of partition `id`'s shard: the partition's committed
    /// end once every entry of this broker's log is applied (waiting at most
    /// `within`), so it covers every record the shard has committed, also
    /// one a previous leader appended whose answer was lost. `None` where
    /// this broker does not lead the shard.
    pub(super) async fn leader_end(
        &self,
        id: PartitionId,
        committed: &tokio::sync::watch::Sender<u64>,
        within: std::time::Duration,
    ) -> Result<Option<u64>> {
        let shard = self.shard(id)?;
        let Some((_, end)) = shard.lease() else { return Ok(None) };
        shard.stored_reached(end, within).await;
        if shard.stored_index() < end {
            return Err(Error::ClusterUnavailable(format!(
                "partition {}: this leader's log up to entry {end} is not committed yet",
                id.index
            )));
        }
        Ok(Some(*committed.borrow()))
    }

    /// `leader_end`, answered by a leader only: elsewhere `not_leader`.
    pub(super) async fn leader_end_here(
        &self,
        id: PartitionId,
        committed: &tokio::sync::watch::Sender<u64>,
        within: std::time::Duration,
    ) -> Result<u64> {
        match self.leader_end(id, committed, within).await? {
            Some(end) => Ok(end),
            None => {
                let (leader, term) = self.shard(id)?.leader();
                Err(self.not_leader_of(id, leader, term))
            }
        }
    }

    /// The end of partition `id` below which every record its shard has
    /// committed is readable here, waiting at most `within` for this replica:
    /// the leader's end (`leader_end`, here or asked over the leader's client
    /// API), once this replica's watermark has reached it. A search for what
    /// an earlier, unanswered append wrote covers this much, or it may miss
    /// the append and write it again.
    pub(super) async fn caught_up_end(
        &self,
        topic: &str,
        id: PartitionId,
        committed: &tokio::sync::watch::Sender<u64>,
        within: std::time::Duration,
    ) -> Result<u64> {
        if let Some(end) = self.leader_end(id, committed, within).await? {
            return Ok(end);
        }
        let (leader, term) = self.shard(id)?.leader();
        let Some(endpoint) = leader.and_then(|l| self.meta.broker_endpoint(l)) else {
            return Err(self.not_leader_of(id, leader, term));
        };
        let end = self.forwarder.leader_end(&endpoint, topic, id.index).await?;
        let mut watermark = committed.subscribe();
        let reached = matches!(tokio::time::timeout(within, watermark.wait_for(|c| *c >= end)).await, Ok(Ok(_)));
        if reached {
            Ok(end)
        } else {
            Err(Error::ClusterUnavailable(format!(
                "partition {} of `{topic}` on this broker has not caught up yet (its leader has committed up to offset {end})",
                id.index
            )))
        }
    }

    /// Appends a client's `messages` to partition `id` of `topic`: through
    /// the shard here if this broker leads it, else forwarded to the leader
    /// over its client API (at most two hops, when the first names another leader; see `forward.rs`).
    pub(super) async fn append_or_forward(
        &self,
        topic: &str,
        id: PartitionId,
        messages: &[Message],
        producer: Option<ProducerSeq>,
    ) -> Result<AppendResult> {
        match self.append(id, messages, producer).await {
            Err(Error::NotLeader { leader: Some(endpoint), .. }) => {
                metrics::counter!(crate::metrics::PRODUCE_FORWARDED).increment(1);
                match self.forwarder.append(&endpoint, topic, id.index, messages, producer).await {
                    // The hint was stale (a leader moved, or a placed shard's leader not yet
                    // recorded): the broker it named knows better; one more hop, no more.
                    Err(Error::NotLeader { leader: Some(next), .. }) if next != endpoint => {
                        self.forwarder.append(&next, topic, id.index, messages, producer).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// The partition's index and offsets, as its shard holds them.
    pub(super) fn snapshot(&self, id: PartitionId) -> Result<PartitionSnapshot> {
        let shard = self.shard(id)?;
        let start = shard.visible_start(id).unwrap_or(0);
        shard
            .with_partition(id, |log| PartitionSnapshot {
                log_start: start,
                next_offset: log.next_offset(),
                segments: log.segments().to_vec(),
            })
            .ok_or_else(|| Error::Deleted(format!("partition {} of its topic", id.index)))
    }

    /// Applies retention to every partition of every shard this broker
    /// holds (each replica decides for itself, from the topic's settings and
    /// its own segments), then gives the space back in the background.
    pub async fn apply_retention(&self) {
        let shards: Vec<(u64, Arc<ShardNode>)> = self.shards().iter().map(|(n, s)| (*n, s.clone())).collect();
        for (number, shard) in shards {
            let trims = match shard.trim(now_ms()).await {
                Ok(trims) => trims,
                Err(e) => {
                    tracing::error!(shard = number, error = %e, "retention write failed");
                    continue;
                }
            };
            for (id, trim) in trims {
                super::retention::log_removed(id, &trim.removed);
                if let Some(reclaim) = trim.reclaim {
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || super::retention::reclaim(&store, &reclaim)).await;
                }
            }
        }
    }

    /// This broker's peers of every shard it holds, in shard order.
    pub fn shard_nodes(&self) -> Vec<Arc<ShardNode>> {
        self.shards().values().cloned().collect()
    }

    /// This broker's peers of every shard it holds, with their numbers.
    pub fn numbered_shards(&self) -> Vec<(u64, Arc<ShardNode>)> {
        self.shards().iter().map(|(n, s)| (*n, s.clone())).collect()
    }

    /// Every held shard's number and Raft state, as this broker sees it.
    pub fn reports(&self) -> Vec<(u64, sluice_replication::GroupReport)> {
        self.shards().iter().map(|(number, node)| (*number, node.report())).collect()
    }

    /// The number of the shard that holds consumer group `group` (its id).
    pub fn group_shard_number(&self, group: u64) -> u64 {
        self.placement().groups.get(&group).copied().unwrap_or_else(|| shard_of_group(group, self.shard_count))
    }

    /// The number of the shard that holds `id`.
    pub fn shard_number(&self, id: PartitionId) -> u64 {
        self.placement().topics.get(&id.topic).copied().unwrap_or_else(|| shard_of(id, self.shard_count))
    }

    /// The leader of placed shard `number` as the catalog last recorded it
    /// (broker, term), for a shard this broker holds no replica of.
    pub fn recorded_leader(&self, number: u64) -> Option<(u64, u64)> {
        self.placement().leaders.get(&number).map(|l| (l.broker, l.term))
    }
}
