//! What an operator does with a group's dead letters, for every front door:
//! peek at them, redrive them (copies without the broker's `sluice-dlq-*`
//! headers, back to their source partition or to another topic, rate-limited,
//! optionally only those whose reason matches), and purge them.
//!
//! # Correctness
//! Redrive copies and never removes: a redriven dead letter stays until purged,
//! so a redrive cut short can be repeated (it copies again). Purge removes every
//! record of the dead-letter topic (shared by the groups that name it).

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_storage::{OffsetRange, StoredRecord};

use super::actor::GroupHandle;
use super::dead_letter::headers;
use crate::error::{Error, Result};
use crate::name::TopicName;
use crate::topic::{Topic, TopicRegistry};

/// Headers the broker adds to a dead letter (and redrive removes).
const DLQ_HEADER_PREFIX: &str = "sluice-dlq-";

/// A dead letter and the dead-letter partition it is in.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Partition of the dead-letter topic.
    pub partition: u32,
    /// The stored record, with its `sluice-dlq-*` headers.
    pub record: StoredRecord,
}

/// What to redrive, and where.
#[derive(Debug, Clone, Default)]
pub struct Redrive {
    /// Target topic; `None` is the group's own topic (to the source partitions).
    pub target: Option<TopicName>,
    /// At most this many.
    pub max_messages: usize,
    /// At most this many per second (0: no limit).
    pub rate_per_second: u32,
    /// Only dead letters whose reason contains this (empty: all).
    pub reason_contains: String,
}

async fn dead_letter_topic(topics: &TopicRegistry, group: &GroupHandle) -> Result<Arc<Topic>> {
    let name = group.settings().dead_letter_topic;
    if name.is_empty() {
        return Err(Error::FailedPrecondition(format!("group `{}` has no dead-letter topic", group.name)));
    }
    topics.get_or_await(&name).await
}

/// Up to `max` dead letters of `group`, oldest first per dead-letter partition.
pub async fn peek(topics: &TopicRegistry, group: &GroupHandle, max: usize) -> Result<Vec<DeadLetter>> {
    let dlq = dead_letter_topic(topics, group).await?;
    let mut out = Vec::new();
    for (p, h) in dlq.partitions.iter().enumerate() {
        let mut offset = h.earliest();
        let end = h.latest();
        while offset < end && out.len() < max {
            let batch = h.read(OffsetRange::new(offset, end), max - out.len(), 16 << 20).await?;
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            out.extend(batch.into_iter().map(|record| DeadLetter { partition: p as u32, record }));
        }
    }
    Ok(out)
}

/// Copies dead letters per `r`; returns how many were copied.
pub async fn redrive(topics: &TopicRegistry, group: &GroupHandle, r: Redrive) -> Result<u64> {
    let source = group.settings().topic;
    let target_name = r.target.as_ref().map_or(source.clone(), |t| t.to_string());
    let target = topics.get_or_await(&target_name).await?;
    let letters = peek(topics, group, r.max_messages.min(1_000_000)).await?;
    let interval = (r.rate_per_second > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(r.rate_per_second)));
    let mut redriven = 0u64;
    for letter in letters {
        let rec = letter.record;
        let header = |k: &str| {
            rec.headers.iter().find(|(key, _)| key == k).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if !r.reason_contains.is_empty() && !header(headers::REASON).unwrap_or_default().contains(&r.reason_contains) {
            continue;
        }
        let partition = match (header(headers::PARTITION).and_then(|p| p.parse::<u32>().ok()), target_name == source) {
            (Some(p), true) if (p as usize) < target.partitions.len() => p,
            _ => match &rec.key {
                Some(k) => sluice_proto::partition_for_key(k, target.partitions.len() as u32),
                None => target.next_round_robin(),
            },
        };
        let kept = rec
            .headers
            .into_iter()
            .filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX))
            .map(|(key, value)| pb::Header { key, value })
            .collect();
        let message = pb::Message { key: rec.key, value: rec.value, headers: kept };
        target.partition(partition)?.append(vec![message], None).await?;
        redriven += 1;
        if let Some(i) = interval {
            tokio::time::sleep(i).await;
        }
    }
    tracing::info!(group = %group.name, target = %target_name, redriven, "dead letters redriven");
    Ok(redriven)
}

/// Removes every dead letter of `group`'s dead-letter topic; returns how many.
pub async fn purge(topics: &TopicRegistry, group: &GroupHandle) -> Result<u64> {
    let dlq = dead_letter_topic(topics, group).await?;
    let mut purged = 0;
    for h in &dlq.partitions {
        purged += h.truncate().await?;
    }
    tracing::info!(group = %group.name, purged, "dead letters purged");
    Ok(purged)
}
