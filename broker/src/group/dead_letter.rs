//! Writing an exhausted message to its group's dead-letter topic, with
//! headers that say where it came from and why it failed.

use bytes::Bytes;
use sluice_proto::v1 as pb;
use sluice_storage::MessageState;

use super::config::GroupSettings;
use super::registry::GroupContext;
use crate::error::Result;
use crate::topic::Topic;

/// Header names added to dead letters.
pub mod headers {
    /// Source topic.
    pub const TOPIC: &str = "sluice-dlq-source-topic";
    /// Source partition.
    pub const PARTITION: &str = "sluice-dlq-source-partition";
    /// Source offset.
    pub const OFFSET: &str = "sluice-dlq-source-offset";
    /// Group that gave up.
    pub const GROUP: &str = "sluice-dlq-group";
    /// Deliveries made.
    pub const ATTEMPTS: &str = "sluice-dlq-attempts";
    /// First delivery, ms since the Unix epoch.
    pub const FIRST_DELIVERY: &str = "sluice-dlq-first-delivery-ms";
    /// Last delivery, ms since the Unix epoch.
    pub const LAST_DELIVERY: &str = "sluice-dlq-last-delivery-ms";
    /// Last failure reason.
    pub const REASON: &str = "sluice-dlq-reason";
    /// Consumer that last had it.
    pub const CONSUMER: &str = "sluice-dlq-consumer";
    /// When it was dead-lettered.
    pub const DEAD_LETTERED_AT: &str = "sluice-dlq-at-ms";
}

fn header(key: &str, value: impl ToString) -> pb::Header {
    pb::Header { key: key.to_owned(), value: Bytes::from(value.to_string()) }
}

/// What became of a message the group gave up on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Appended to the dead-letter topic, durably.
    Written,
    /// Retention removed the source record first: there is nothing left to
    /// dead-letter, so the group settles it instead of retrying forever.
    SourceExpired,
}

/// Appends the record at `p`/`offset` of `topic` to the group's dead-letter
/// topic (partition `p mod n`), durably.
pub(super) async fn write(
    ctx: &GroupContext,
    topic: &Topic,
    p: u32,
    offset: u64,
    settings: &GroupSettings,
    state: Option<&MessageState>,
    now: i64,
) -> Result<Outcome> {
    let dlq = ctx.topics.get(&settings.dead_letter_topic)?;
    let (store, topic_id) = (ctx.store.clone(), topic.id);
    let mut records = tokio::task::spawn_blocking(move || store.read(topic_id, p, offset, offset + 1, 1, usize::MAX))
        .await
        .map_err(|e| sluice_storage::Error::Task(e.to_string()))??;
    let Some(record) = records.pop() else {
        tracing::warn!(
            group = %settings.name,
            topic = %topic.name,
            partition = p,
            offset,
            "message exhausted its attempts after retention removed it; nothing to dead-letter"
        );
        return Ok(Outcome::SourceExpired);
    };
    let state = state.cloned().unwrap_or_default();
    let mut hs: Vec<pb::Header> = record.headers.into_iter().map(|(key, value)| pb::Header { key, value }).collect();
    hs.extend([
        header(headers::TOPIC, &topic.name),
        header(headers::PARTITION, p),
        header(headers::OFFSET, offset),
        header(headers::GROUP, &settings.name),
        header(headers::ATTEMPTS, state.attempts),
        header(headers::FIRST_DELIVERY, state.first_delivery_ms),
        header(headers::LAST_DELIVERY, state.last_delivery_ms),
        header(headers::REASON, &state.reason),
        header(headers::CONSUMER, &state.consumer),
        header(headers::DEAD_LETTERED_AT, now),
    ]);
    let message = pb::Message { key: record.key, value: record.value, headers: hs };
    let target = p % dlq.partitions.len().max(1) as u32;
    dlq.partition(target)?.append(vec![message], None).await?;
    tracing::info!(
        group = %settings.name,
        topic = %topic.name,
        partition = p,
        offset,
        dead_letter_topic = %dlq.name,
        attempts = state.attempts,
        reason = %state.reason,
        "message dead-lettered"
    );
    Ok(Outcome::Written)
}
