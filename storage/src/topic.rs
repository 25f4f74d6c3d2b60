//! Topic metadata as stored: identity, partition count and settings.

use serde::{Deserialize, Serialize};

use crate::TopicId;

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
pub struct TopicConfig {
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

/// Largest message a topic may accept (key + value + headers).
pub const MAX_MESSAGE_BYTES: u32 = 16 << 20;

/// A topic setting that breaks its rule: the field (as named in
/// `TopicConfig`) and the rule, for the caller to report in its own terms
/// (a TOML key, a request field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTopicConfig {
    /// The `TopicConfig` field.
    pub field: &'static str,
    /// What it must be.
    pub rule: &'static str,
}

impl TopicConfig {
    /// The one set of rules topic settings follow, whether they are the
    /// broker's defaults for new topics or come with a CreateTopic or an
    /// UpdateTopic: checked in one place so the two can never disagree.
    pub fn check(&self) -> Result<(), InvalidTopicConfig> {
        let broken = |field, rule| Err(InvalidTopicConfig { field, rule });
        if self.segment_bytes < 4096 {
            return broken("segment_bytes", "must be at least 4096");
        }
        if self.segment_ms < 1000 {
            return broken("segment_ms", "must be at least 1000");
        }
        if !(1..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return broken("max_message_bytes", "must be 1..=16777216 (16 MiB)");
        }
        Ok(())
    }
}

/// A topic as stored in `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TopicMeta {
    /// Internal id; never reused, so a re-created topic never sees old data.
    pub id: TopicId,
    /// The topic's name.
    pub name: String,
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Settings.
    pub settings: TopicConfig,
    /// Creation time.
    pub created_ms: i64,
}
