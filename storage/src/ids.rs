//! Typed ids of what the store holds, so a topic id, a partition index and an
//! offset (all integers on disk) cannot be passed in each other's place.

use serde::{Deserialize, Serialize};

/// A topic's permanent number. Allocated once (by the store today, by the
/// metadata Raft group in a cluster) and never reused, so records of a
/// deleted topic can never be read as those of a new topic with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopicId(pub u64);

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The address of one partition log: its topic and its index in the topic.
/// Every key of a partition's batches, segments and producer states starts
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// The topic.
    pub topic: TopicId,
    /// The partition's index in its topic, `0..partitions`.
    pub index: u32,
}

impl PartitionId {
    /// Partition `index` of `topic`.
    pub fn new(topic: TopicId, index: u32) -> Self {
        PartitionId { topic, index }
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic id {} partition {}", self.topic, self.index)
    }
}
