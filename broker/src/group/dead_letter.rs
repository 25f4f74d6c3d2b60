//! Writing exhausted messages to their group's dead-letter topic, in batches,
//! with headers that say where each came from and why it failed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use sluice_proto::v1 as pb;
use sluice_storage::{MessageState, OffsetRange, StoredRecord};

use super::config::GroupConfig;
use super::registry::GroupContext;
use crate::error::Error;
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

/// Dead letters appended in one request to one dead-letter partition.
const MAX_BATCH_MESSAGES: usize = 512;
/// ... and at most about this many bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// A message the group gave up on, with what its headers will say.
#[derive(Debug, Clone)]
pub(super) struct Exhausted {
    /// Source partition.
    pub partition: u32,
    /// Source offset.
    pub offset: u64,
    /// Its delivery history.
    pub state: MessageState,
    /// Recovered after a crash mid-way: a copy may already be in the
    /// dead-letter partition at or after this offset; look before appending.
    pub search_from: Option<u64>,
}

/// What became of a batch of exhausted messages.
#[derive(Debug, Default)]
pub(super) struct BatchOutcome {
    /// Appended to the dead-letter topic, durably: ack them at the source.
    pub written: Vec<(u32, u64)>,
    /// Retention removed the source record first: nothing left to dead-letter,
    /// so the group settles them instead of retrying forever.
    pub source_expired: Vec<(u32, u64)>,
    /// Not written (the dead-letter topic refused, or a read failed): retry later.
    pub failed: Vec<(u32, u64)>,
    /// Why some failed.
    pub error: Option<Error>,
}

impl BatchOutcome {
    /// Nothing of `ids` (partition, offset) written, because of `error`: retried later.
    pub(super) fn not_written(ids: Vec<(u32, u64)>, error: Error) -> Self {
        BatchOutcome { failed: ids, error: Some(error), ..Default::default() }
    }
}

fn ids_of(items: &[Exhausted]) -> Vec<(u32, u64)> {
    items.iter().map(|i| (i.partition, i.offset)).collect()
}

/// Dead letters bound for one dead-letter partition in one append.
struct Chunk {
    ids: Vec<(u32, u64)>,
    messages: Vec<pb::Message>,
    bytes: usize,
}

/// Appends `items` of `topic` to the group's dead-letter topic, batched per
/// dead-letter partition (`source partition mod n`), each batch durably.
///
/// # Correctness
/// An item is `written` only after its batch's append is durable. The caller
/// has durably marked every item (`GroupState::mark_dead_lettering`) before
/// the append; a crash between the append and the source ack leaves the
/// marker, and after restart the item comes back with `search_from`: a copy
/// found in the dead-letter partition (same group, source topic, partition and
/// offset in its headers) counts as written. So each message is dead-lettered
/// once, however the broker stops.
pub(super) async fn write_batch(
    ctx: &GroupContext,
    topic: &Topic,
    items: Vec<Exhausted>,
    settings: &GroupConfig,
    now: i64,
) -> BatchOutcome {
    let dlq = match ctx.topics.get(&settings.dead_letter_topic) {
        Ok(dlq) => dlq,
        Err(e) => return BatchOutcome::not_written(ids_of(&items), e),
    };
    let targets = dlq.partitions.len().max(1) as u32;
    let already = match find_written(&dlq, topic, &items, targets, settings).await {
        Ok(found) => found,
        Err(e) => return BatchOutcome::not_written(ids_of(&items), e),
    };
    let mut outcome = BatchOutcome::default();
    let mut batches: BTreeMap<u32, Vec<Chunk>> = BTreeMap::new();
    for item in items {
        if already.contains(&(item.partition, item.offset)) {
            outcome.written.push((item.partition, item.offset));
            continue;
        }
        let (p, offset) = (item.partition, item.offset);
        let read = match topic.partition(p) {
            Ok(handle) => handle.read(OffsetRange::new(offset, offset + 1), 1, usize::MAX).await,
            Err(e) => Err(e),
        };
        let record = match read {
            Ok(mut records) => records.pop(),
            Err(e) => {
                outcome.failed.push((p, offset));
                outcome.error = Some(e);
                continue;
            }
        };
        let Some(record) = record.filter(|r| r.offset == offset) else {
            // In a cluster this broker's replica of the partition may not have
            // caught up yet: only a record below its start is gone.
            let removed = topic.partition(p).map(|h| offset < h.earliest()).unwrap_or(false);
            if !removed {
                outcome.failed.push((p, offset));
                outcome.error = Some(Error::ClusterUnavailable(format!(
                    "partition {p} offset {offset} is not readable on this broker yet (its replica is catching up)"
                )));
                continue;
            }
            tracing::warn!(
                group = %settings.name,
                topic = %topic.name,
                partition = p,
                offset,
                "message exhausted its attempts after retention removed it; nothing to dead-letter"
            );
            outcome.source_expired.push((p, offset));
            continue;
        };
        let message = dead_letter_message(record, topic, p, offset, settings, &item.state, now);
        let size = message.value.len() + message.key.as_ref().map_or(0, |k| k.len());
        let per_target = batches.entry(p % targets).or_default();
        match per_target.last_mut() {
            Some(c) if c.messages.len() < MAX_BATCH_MESSAGES && c.bytes + size <= MAX_BATCH_BYTES => {
                c.ids.push((p, offset));
                c.messages.push(message);
                c.bytes += size;
            }
            _ => per_target.push(Chunk { ids: vec![(p, offset)], messages: vec![message], bytes: size }),
        }
    }
    for (target, chunks) in batches {
        for Chunk { ids, messages, .. } in chunks {
            let count = ids.len();
            let appended = match dlq.partition(target) {
                Ok(handle) => handle.append_at_leader(&dlq.name, messages).await,
                Err(e) => Err(e),
            };
            match appended {
                Ok(_) => {
                    tracing::info!(
                        group = %settings.name,
                        topic = %topic.name,
                        dead_letter_topic = %dlq.name,
                        dead_letter_partition = target,
                        messages = count,
                        "messages dead-lettered"
                    );
                    outcome.written.extend(ids);
                }
                Err(e) => {
                    outcome.failed.extend(ids);
                    outcome.error = Some(e);
                }
            }
        }
    }
    outcome
}

/// How long a search waits for this broker's replica of a dead-letter
/// partition to catch up with its leader; past it the batch is retried later.
const SEARCH_CATCH_UP: Duration = Duration::from_secs(5);

/// The recovered items whose dead letter is already in the dead-letter topic:
/// scans each dead-letter partition from the earliest `search_from` of its
/// items to its end, reading the source headers.
async fn find_written(
    dlq: &Topic,
    topic: &Topic,
    items: &[Exhausted],
    targets: u32,
    settings: &GroupConfig,
) -> Result<HashSet<(u32, u64)>, Error> {
    let mut from: BTreeMap<u32, u64> = BTreeMap::new();
    for item in items {
        if let Some(f) = item.search_from {
            let slot = from.entry(item.partition % targets).or_insert(f);
            *slot = (*slot).min(f);
        }
    }
    let mut found = HashSet::new();
    for (target, start) in from {
        let partition = dlq.partition(target)?;
        // An earlier append whose answer was lost may be committed at the
        // leader and not yet here: read as far as the leader has committed.
        let end = partition.caught_up_end(&dlq.name, SEARCH_CATCH_UP).await?;
        let mut next = start.max(partition.earliest());
        while next < end {
            let records = partition.read(OffsetRange::new(next, end), 1024, 8 << 20).await?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in &records {
                let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
                if header(headers::GROUP) != Some(settings.name.as_bytes())
                    || header(headers::TOPIC) != Some(topic.name.as_bytes())
                {
                    continue;
                }
                let number = |name: &str| header(name).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                if let (Some(p), Some(off)) = (number(headers::PARTITION), number(headers::OFFSET)) {
                    found.insert((p as u32, off));
                }
            }
        }
    }
    Ok(found)
}

fn dead_letter_message(
    record: StoredRecord,
    topic: &Topic,
    p: u32,
    offset: u64,
    settings: &GroupConfig,
    state: &MessageState,
    now: i64,
) -> pb::Message {
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
    pb::Message { key: record.key, value: record.value, headers: hs }
}
