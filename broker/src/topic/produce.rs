//! Producing to a topic, for every front door (gRPC today, the HTTP gateway
//! next): the broker-wide in-flight byte budget, the batch limits, routing
//! (explicit partition, key hash, or one round-robin partition per request for
//! keyless messages), the appends, and the produce metrics.
//!
//! # Correctness
//! `Producer::produce` answers only when every message is durable under the
//! topic's durability; the answer lists each message's partition and offset
//! in request order. An idempotent batch (producer id + sequence) must name
//! its partition and is answered with its original offsets when retried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use sluice_proto::v1::Message;
use sluice_storage::ProducerSeq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::TopicRegistry;
use crate::error::{Error, Result};
use crate::name::TopicName;

/// How long a produce request waits for room in the in-flight byte budget
/// before it is refused: long enough to ride out a burst, short enough that
/// the producer's own backoff takes over under sustained overload.
const BUDGET_WAIT: Duration = Duration::from_millis(100);

/// Most headers on one message.
pub const MAX_HEADERS: usize = 1024;

/// A batch to produce, as any front door hands it over.
#[derive(Debug, Clone)]
pub struct ProduceBatch {
    /// The topic.
    pub topic: TopicName,
    /// Explicit partition; otherwise by key hash, or round-robin when keyless.
    pub partition: Option<u32>,
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Idempotent producing: producer id and this partition's sequence.
    pub producer: Option<ProducerSeq>,
    /// In a cluster, where another broker leads a target partition: forward
    /// the append there (true), or answer `not_leader` for the client to go
    /// there itself (false: it asked to be redirected, or was forwarded once).
    pub forward: bool,
}

/// Where each message of a batch was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Per message, in request order.
    pub partitions: Vec<u32>,
    /// Per message, in request order.
    pub offsets: Vec<u64>,
    /// The batch was a retry of one already stored (idempotent producers).
    pub duplicate: bool,
}

/// The produce path shared by every front door.
#[derive(Debug, Clone)]
pub struct Producer {
    topics: Arc<TopicRegistry>,
    /// One permit per message byte being appended, shared by every producer.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max_batch_messages: u32,
}

/// The bytes a message counts against `max_message_bytes`.
pub fn message_size(m: &Message) -> usize {
    m.key.as_ref().map_or(0, |k| k.len())
        + m.value.len()
        + m.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}

/// Checks a produce batch against the limits.
pub fn check_batch(messages: &[Message], max_batch: u32, max_message_bytes: u32) -> Result<()> {
    if messages.is_empty() {
        return Err(Error::invalid("messages", "the batch is empty; send at least one message"));
    }
    if messages.len() > max_batch as usize {
        return Err(Error::invalid(
            "messages",
            format!("{} messages in one request; the limit is {max_batch}, split the batch", messages.len()),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let size = message_size(m);
        if size > max_message_bytes as usize {
            return Err(Error::invalid(
                "messages",
                format!("message {i} is {size} bytes; the topic's max-message-bytes is {max_message_bytes}"),
            ));
        }
        if m.headers.len() > MAX_HEADERS {
            return Err(Error::invalid(
                "messages",
                format!("message {i} has {} headers; at most {MAX_HEADERS}", m.headers.len()),
            ));
        }
        crate::delivery_time::validate(i, &m.headers)?;
    }
    Ok(())
}

impl Producer {
    /// A produce path over `topics` with a budget of `budget_bytes` in flight.
    pub fn new(topics: Arc<TopicRegistry>, budget_bytes: usize, max_batch_messages: u32) -> Self {
        Producer { topics, budget: Arc::new(Semaphore::new(budget_bytes)), budget_bytes, max_batch_messages }
    }

    /// Holds `bytes` of the in-flight budget (all of it for a request larger
    /// than the budget), or refuses when none frees up within `BUDGET_WAIT`.
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let limit = self.budget_bytes;
        let permits = u32::try_from(bytes.clamp(1, limit)).unwrap_or(u32::MAX);
        // The common case, room at once, sets no timer.
        if let Ok(permit) = self.budget.clone().try_acquire_many_owned(permits) {
            return Ok(permit);
        }
        match tokio::time::timeout(BUDGET_WAIT, self.budget.clone().acquire_many_owned(permits)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                metrics::counter!(crate::metrics::PRODUCE_THROTTLED).increment(1);
                Err(Error::ProduceBudgetExhausted { limit })
            }
        }
    }

    /// Admits, routes, appends and answers a batch; counts it in the metrics.
    pub async fn produce(&self, batch: ProduceBatch) -> Result<Produced> {
        let started = Instant::now();
        let bytes: usize = batch.messages.iter().map(message_size).sum();
        let (topic, n) = (batch.topic.to_string(), batch.messages.len());
        let _held = self.reserve(bytes).await?;
        let produced = self.append(batch).await?;
        if !produced.duplicate {
            metrics::counter!(crate::metrics::PRODUCE_MESSAGES, "topic" => topic.clone()).increment(n as u64);
            metrics::counter!(crate::metrics::PRODUCE_BYTES, "topic" => topic).increment(bytes as u64);
        }
        metrics::histogram!(crate::metrics::PRODUCE_LATENCY).record(started.elapsed().as_secs_f64());
        Ok(produced)
    }

    async fn append(&self, batch: ProduceBatch) -> Result<Produced> {
        let topic = self.topics.get_or_await(&batch.topic).await?;
        check_batch(&batch.messages, self.max_batch_messages, topic.settings().max_message_bytes)?;
        let n = batch.messages.len();
        if batch.producer.is_some() && batch.partition.is_none() {
            return Err(Error::invalid("partition", "idempotent produce (producer_id set) must name the partition"));
        }
        let (name, forward) = (batch.topic.as_str(), batch.forward);
        if let Some(p) = batch.partition {
            let r = topic.partition(p)?.append_or_forward(name, batch.messages, batch.producer, forward).await?;
            return Ok(Produced {
                partitions: vec![p; n],
                offsets: (r.base_offset..r.base_offset + n as u64).collect(),
                duplicate: r.duplicate,
            });
        }
        // Route each message: by key hash, or all keyless ones to one round-robin partition.
        let count = topic.partitions.len() as u32;
        let keyless = topic.next_round_robin();
        let targets: Vec<u32> = batch
            .messages
            .iter()
            .map(|m| m.key.as_deref().map_or(keyless, |k| sluice_proto::partition_for_key(k, count)))
            .collect();
        if targets.iter().all(|&t| t == targets[0]) {
            let r = topic.partition(targets[0])?.append_or_forward(name, batch.messages, None, forward).await?;
            return Ok(Produced {
                partitions: targets,
                offsets: (r.base_offset..r.base_offset + n as u64).collect(),
                duplicate: false,
            });
        }
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<Message>)> = BTreeMap::new();
        for (i, (m, t)) in batch.messages.into_iter().zip(&targets).enumerate() {
            let g = by_partition.entry(*t).or_default();
            g.0.push(i);
            g.1.push(m);
        }
        let appends: FuturesUnordered<_> = by_partition
            .into_iter()
            .map(|(p, (indexes, msgs))| {
                let handle = topic.partition(p).cloned();
                async move { Ok::<_, Error>((indexes, handle?.append_or_forward(name, msgs, None, forward).await?)) }
            })
            .collect();
        let results: Vec<_> = appends.collect().await;
        let mut offsets = vec![0; n];
        for r in results {
            let (indexes, appended) = r?;
            for (k, i) in indexes.into_iter().enumerate() {
                offsets[i] = appended.base_offset + k as u64;
            }
        }
        Ok(Produced { partitions: targets, offsets, duplicate: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked() {
        let m = |n: usize| Message { key: None, value: vec![0; n].into(), headers: vec![] };
        assert!(check_batch(&[], 10, 100).is_err());
        assert!(check_batch(&[m(101)], 10, 100).is_err());
        assert!(check_batch(&vec![m(1); 11], 10, 100).is_err());
        assert!(check_batch(&[m(100)], 10, 100).is_ok());
    }
}
