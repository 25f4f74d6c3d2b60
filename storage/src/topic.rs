//! Topic metadata as stored: identity, partition count and settings.

use serde::{Deserialize, Serialize};

/// How appends to a topic become durable before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// The WAL is fsynced before the append is acknowledged.
    #[default]
    Always,
    /// Acknowledged once written to the OS; the WAL is fsynced on an interval.
    Interval,
}

/// A topic's settings. All sizes in bytes, all durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TopicSettings {
    /// Delete segments whose newest record is older than this; 0 keeps forever.
    pub retention_ms: u64,
    /// Delete the oldest segments while a partition holds more than this; 0 is unlimited.
    pub retention_bytes: u64,
    /// Roll the active segment past this size.
    pub segment_bytes: u64,
    /// Roll the active segment past this age.
    pub segment_ms: u64,
    /// Largest accepted message.
    pub max_message_bytes: u32,
    /// Durability mode.
    pub durability: Durability,
}

/// A topic as stored in `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TopicMeta {
    /// Internal id; never reused, so a re-created topic never sees old data.
    pub id: u64,
    /// The topic's name.
    pub name: String,
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Settings.
    pub settings: TopicSettings,
    /// Creation time.
    pub created_ms: i64,
}
