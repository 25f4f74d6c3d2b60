//! Shard groups: the Raft groups that carry record batches (and, from step 4
//! of `docs/REPLICATION.md`, consumer-group state). A shard holds many
//! partitions; its log is not a second copy of their records: an entry that
//! carries a batch is stored once, as the batch under its partition's key,
//! plus a small index slot in the `raft` column family (`log.rs`).
//!
//! - [`ShardCommand`] / [`ShardResponse`]: what a broker proposes and what it
//!   is answered, in Sluice's own terms;
//! - `log` ([`ShardLog`]): openraft's log storage over the partition logs;
//! - `machine` ([`ShardMachine`]): applies committed entries, which is what
//!   raises a partition's committed watermark;
//! - `node` ([`ShardNode`]): one broker's peer in one shard.

mod log;
mod machine;
mod node;
pub(crate) mod purge;
pub(crate) mod snapshot;

use std::fmt;

use serde::{Deserialize, Serialize};
use sluice_storage::{PartitionId, ProducerSeq, TopicConfig, TopicId};

pub use log::ShardLog;
pub use machine::ShardMachine;
pub use node::{LeadershipWatch, PendingWrite, ShardLease, ShardNode, ShardProposeError, ShardStart};
pub use purge::purge_placed;
pub use sluice_storage::Trim;

openraft::declare_raft_types!(
    /// A shard group's types: record batches in, their offsets out; broker ids as node ids.
    pub(crate) ShardTypes:
        D = ShardCommand,
        R = ShardResponse,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// A change proposed to a shard by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// Append one batch to one partition of the shard.
    Batch(BatchCommand),
    /// A consumer group's state changes, decided by its actor on the shard's
    /// leader; every replica writes them when the entry is applied.
    Group(GroupChange),
    /// A batch whose partition was deleted before the entry was read back to
    /// be sent to a peer: it takes its log index and changes nothing.
    Dropped {
        /// The partition the batch was for.
        topic: u64,
        /// Its index within the topic.
        partition: u32,
    },
    /// Purge one partition below `below` (a committed offset): no replica
    /// serves those records again, and retention removes them (`purge.rs`).
    /// Proposed only once every broker is at catalog feature level 5 (an
    /// older build could not decode it). Last, as postcard tags variants by
    /// position.
    Purge {
        /// The topic id.
        topic: u64,
        /// The partition's index within the topic.
        partition: u32,
        /// The new first readable offset.
        below: u64,
    },
}

/// Changes to one consumer group's state (cursors, message states, redelivery
/// times), in storage's portable form (`sluice_storage::group::encode_changes`).
/// Applied on every replica, so the broker that leads the shard next starts
/// the group from the same state.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    /// The consumer group's id.
    pub group: u64,
    /// The encoded changes.
    #[serde(with = "serde_bytes")]
    pub changes: Vec<u8>,
}

impl fmt::Debug for GroupChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupChange").field("group", &self.group).field("bytes", &self.changes.len()).finish()
    }
}

/// One record batch on its way into a partition, before offsets are assigned.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCommand {
    /// The topic id.
    pub topic: u64,
    /// The partition index within the topic.
    pub partition: u32,
    /// The proposer's clock at proposal: every replica appends with this
    /// time, so timestamps and segment boundaries agree.
    pub timestamp_ms: i64,
    /// The idempotent producer and its sequence, if any: checked at append on
    /// every replica, against producer state that is itself replicated.
    pub producer: Option<(u64, u64)>,
    /// Number of records in `body`.
    pub count: u32,
    /// The records, encoded (`sluice_storage::record::encode_body`).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl BatchCommand {
    /// The partition this batch goes to.
    pub fn partition_id(&self) -> PartitionId {
        PartitionId::new(TopicId(self.topic), self.partition)
    }

    /// The producer identity, in storage's terms.
    pub fn producer_seq(&self) -> Option<ProducerSeq> {
        self.producer.map(|(producer_id, sequence)| ProducerSeq { producer_id, sequence })
    }
}

impl fmt::Debug for BatchCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchCommand")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("producer", &self.producer)
            .field("count", &self.count)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl fmt::Display for ShardCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardCommand::Batch(b) => {
                write!(f, "{} records to topic {} partition {}", b.count, b.topic, b.partition)
            }
            ShardCommand::Group(g) => {
                write!(f, "state changes of consumer group {} ({} bytes)", g.group, g.changes.len())
            }
            ShardCommand::Dropped { topic, partition } => {
                write!(f, "dropped batch of deleted topic {topic} partition {partition}")
            }
            ShardCommand::Purge { topic, partition, below } => {
                write!(f, "purge of topic {topic} partition {partition} below offset {below}")
            }
        }
    }
}

/// What a committed entry did, as every replica computes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// The batch holds offsets `base_offset..base_offset + count`.
    Appended {
        /// First offset of the batch.
        base_offset: u64,
        /// Records in the batch.
        count: u32,
        /// A retried idempotent batch: these are the original's offsets.
        duplicate: bool,
    },
    /// An idempotent producer's batch out of sequence: stored nowhere.
    OutOfOrder {
        /// The producer.
        producer_id: u64,
        /// The sequence it sent.
        got: u64,
        /// The sequence expected next.
        expected: u64,
    },
    /// The batch was refused at append (a malformed body); stored nowhere.
    Refused(String),
    /// An entry that answers nothing (election blank, membership, dropped batch).
    Done,
}

/// What a shard needs from the broker that hosts it.
pub trait ShardHost: Send + Sync + 'static {
    /// The settings to append to `partition` with (segment size and age; the
    /// durability decides whether an append waits for an fsync). A partition
    /// the broker does not know yet (its catalog lags the shard) gets defaults.
    fn settings(&self, partition: PartitionId) -> TopicConfig;

    /// Records of `partition` below `end` are committed: readers may see them.
    /// Called in log order as entries apply, on leaders and followers alike.
    fn committed(&self, partition: PartitionId, end: u64);

    /// `partition` now stores nothing below `start` (retention removed
    /// segments, or a snapshot install started it over further on).
    fn log_started(&self, partition: PartitionId, start: u64);
}
