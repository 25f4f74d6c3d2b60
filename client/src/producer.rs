//! `Producer`: batches messages per partition (by count, bytes and linger),
//! sends each batch with an idempotent producer id and sequence, and retries
//! retryable failures with jittered exponential backoff.
//!
//! # Correctness
//! A retry repeats the same producer id and sequence, so the broker stores the
//! batch once and answers the retry with the original offsets — also across a
//! broker restart. One batch per partition is in flight at a time, so
//! sequences reach the broker in order. When retries are exhausted the outcome
//! is unknown; the partition then continues under a fresh producer id so later
//! batches are not refused, and the caller got an error for the ambiguous one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::connect::Channel;
use backon::Retryable;
use sluice_proto::v1 as pb;
use sluice_proto::v1::producer_client::ProducerClient;
use tokio::sync::{mpsc, oneshot};

use crate::admin::Admin;
use crate::error::{Error, Result};
use crate::leaders::{Brokers, LeaderTracker};
use crate::retry::RetryConfig;

/// Producer tuning.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Most messages per request.
    pub max_batch_messages: usize,
    /// Send once a batch holds this many bytes.
    pub max_batch_bytes: usize,
    /// How long a batch waits for more messages before it is sent.
    pub linger: Duration,
    /// Retry policy for retryable failures.
    pub retry: RetryConfig,
    /// Deduplicate retries with a producer id and sequences (default on).
    pub idempotent: bool,
    /// Messages queued per partition before `send` waits (back-pressure).
    pub queue_capacity: usize,
    /// Deadline of one produce request.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_batch_messages: 1000,
            max_batch_bytes: 1 << 20,
            linger: Duration::from_millis(2),
            retry: RetryConfig::default(),
            idempotent: true,
            queue_capacity: 10_000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Where an acknowledged message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
}

/// The acknowledgement of an enqueued message: resolves to where it was
/// stored, or to the error that stopped it. A named type, the same whatever
/// message type was enqueued, so callers can keep many in one collection.
#[derive(Debug)]
#[must_use = "dropping it does not cancel the send, but loses whether the message was stored"]
pub struct PendingDelivery {
    reply: oneshot::Receiver<Result<Delivery>>,
}

impl Future for PendingDelivery {
    type Output = Result<Delivery>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A dropped sender means the batcher task is gone: the producer was shut down.
        Pin::new(&mut self.reply).poll(cx).map(|r| r.map_err(|_| Error::Closed).and_then(|delivery| delivery))
    }
}

struct Pending {
    message: pb::Message,
    reply: oneshot::Sender<Result<Delivery>>,
}

struct TopicQueues {
    partitions: Vec<mpsc::Sender<Pending>>,
    /// Per partition: whether its batcher has a request in flight.
    sending: Arc<[AtomicBool]>,
    /// The partition unkeyed messages go to while it is not sending.
    sticky: AtomicU32,
}

/// How many partitions an unkeyed message looks at for one with no request in flight.
const UNKEYED_SCAN: u32 = 16;

/// The partition for an unkeyed message: `sticky` while it has no request in
/// flight (messages that arrive together make one batch), else the next one
/// after it that has none (within [`UNKEYED_SCAN`]), else simply the next one —
/// so no message waits behind a batch in flight while another partition is
/// idle, and under load the choice is round robin.
fn unkeyed_partition(sticky: u32, sending: &[AtomicBool]) -> u32 {
    let count = sending.len() as u32;
    let start = sticky % count;
    (0..count.min(UNKEYED_SCAN))
        .map(|i| (start + i) % count)
        .find(|&p| !sending[p as usize].load(Ordering::Acquire))
        .unwrap_or((start + 1) % count)
}

/// A batching, retrying, idempotent producer. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    channel: Channel,
    brokers: Brokers,
    config: Arc<ProducerConfig>,
    topics: Arc<Mutex<HashMap<String, Arc<TopicQueues>>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("config", &self.config).finish_non_exhaustive()
    }
}

fn new_producer_id() -> u64 {
    rand::random::<u64>() | 1
}

impl Producer {
    /// A producer on `channel`.
    pub fn new(channel: impl Into<Channel>, config: ProducerConfig) -> Self {
        let channel: Channel = channel.into();
        Producer { brokers: Brokers::new(channel.clone()), channel, config: Arc::new(config), topics: Arc::default() }
    }

    async fn queues(&self, topic: &str) -> Result<Arc<TopicQueues>> {
        if let Some(q) = self.topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return Ok(q.clone());
        }
        let admin = Admin::new(self.channel.clone());
        let describe =
            (|| admin.describe_topic(topic)).retry(self.config.retry.backoff()).when(Error::is_retryable).await?;
        let count = describe.topic.map_or(0, |t| t.partitions);
        if count == 0 {
            return Err(Error::Topic(format!("topic `{topic}` has no partitions")));
        }
        let mut map = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let queues = map.entry(topic.to_owned()).or_insert_with(|| {
            let sending: Arc<[AtomicBool]> = (0..count).map(|_| AtomicBool::new(false)).collect();
            let partitions = (0..count)
                .map(|p| {
                    let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
                    let batcher = Batcher {
                        leader: LeaderTracker::new(self.brokers.clone()),
                        config: self.config.clone(),
                        topic: topic.to_owned(),
                        partition: p,
                        sending: sending.clone(),
                        producer_id: new_producer_id(),
                        sequence: 0,
                    };
                    tokio::spawn(batcher.run(rx));
                    tx
                })
                .collect();
            Arc::new(TopicQueues { partitions, sending, sticky: AtomicU32::new(0) })
        });
        Ok(queues.clone())
    }

    /// Queues `message` and returns a future for its acknowledgement, so many
    /// messages can be in flight. Waits only while the partition queue is full.
    /// `message` is a [`Message`](crate::Message) or a raw `proto::Message`.
    /// Without `partition`, a keyed message goes to its key's partition; an
    /// unkeyed one goes where the previous one went unless that partition has a
    /// request in flight, then to the next partition that has none (so it is
    /// sent at once, not behind that request), or under load to the next in turn.
    pub async fn enqueue(
        &self,
        topic: &str,
        partition: Option<u32>,
        message: impl Into<pb::Message>,
    ) -> Result<PendingDelivery> {
        let message = message.into();
        let queues = self.queues(topic).await?;
        let count = queues.partitions.len() as u32;
        let p = match (partition, message.key.as_deref()) {
            (Some(p), _) => p,
            (None, Some(key)) => sluice_proto::partition_for_key(key, count),
            (None, None) => {
                let p = unkeyed_partition(queues.sticky.load(Ordering::Relaxed), &queues.sending);
                // A race with another enqueue only moves the sticky partition once more.
                queues.sticky.store(p, Ordering::Relaxed);
                p
            }
        };
        let tx = queues.partitions.get(p as usize).ok_or_else(|| {
            Error::Topic(format!("topic `{topic}` has partitions 0..{count}; partition {p} does not exist"))
        })?;
        let (reply, rx) = oneshot::channel();
        tx.send(Pending { message, reply }).await.map_err(|_| Error::Closed)?;
        Ok(PendingDelivery { reply: rx })
    }

    /// Sends one message (a [`Message`](crate::Message) or a raw
    /// `proto::Message`) and waits until it is durably stored. One message at
    /// a time is slow; use `enqueue` to keep many in flight.
    pub async fn send(&self, topic: &str, message: impl Into<pb::Message>) -> Result<Delivery> {
        self.enqueue(topic, None, message).await?.await
    }

    /// Sends one message to a given partition (ignoring its key) and waits for the ack.
    pub async fn send_to(&self, topic: &str, partition: u32, message: impl Into<pb::Message>) -> Result<Delivery> {
        self.enqueue(topic, Some(partition), message).await?.await
    }
}

/// Fills `batch` with `first`, what is queued behind it and, with a linger,
/// what arrives before the linger ends, up to the batch limits.
async fn collect(first: Pending, rx: &mut mpsc::Receiver<Pending>, config: &ProducerConfig, batch: &mut Vec<Pending>) {
    let mut bytes = first.message.value.len();
    batch.push(first);
    let deadline = tokio::time::Instant::now() + config.linger;
    while batch.len() < config.max_batch_messages && bytes < config.max_batch_bytes {
        let next = if config.linger.is_zero() {
            // No timer: even a sleep that is already due waits for the timer's next
            // millisecond tick, which would delay every batch by half a millisecond.
            rx.try_recv().ok()
        } else {
            // Biased: what is already queued always joins the batch.
            tokio::select! {
                biased;
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(deadline) => None,
            }
        };
        let Some(m) = next else { break };
        bytes += m.message.value.len();
        batch.push(m);
    }
}

/// How long one batch follows leaders (redirects, a leader that stopped
/// answering) before its last error is returned.
const REDIRECT_PATIENCE: Duration = Duration::from_secs(30);

struct Batcher {
    /// Where this partition's batches go: in a cluster, its leader.
    leader: LeaderTracker,
    config: Arc<ProducerConfig>,
    topic: String,
    partition: u32,
    /// Every partition's in-flight flag (this one's is `sending[partition]`).
    sending: Arc<[AtomicBool]>,
    producer_id: u64,
    sequence: u64,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.config.max_batch_messages);
        while let Some(first) = rx.recv().await {
            collect(first, &mut rx, &self.config, &mut batch).await;
            self.sending[self.partition as usize].store(true, Ordering::Release);
            self.send(&mut batch).await;
            self.sending[self.partition as usize].store(false, Ordering::Release);
        }
    }

    async fn send(&mut self, batch: &mut Vec<Pending>) {
        let (messages, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|p| (p.message, p.reply)).unzip();
        let request = pb::ProduceRequest {
            topic: self.topic.clone(),
            partition: Some(self.partition),
            messages,
            producer_id: if self.config.idempotent { self.producer_id } else { 0 },
            sequence: self.sequence,
            request_id: 0,
        };
        let timeout = self.config.request_timeout;
        // A redirect to a leader is followed at once and does not use up retries. A
        // leader that stops answering sends the batch back to the seed broker, which
        // names the new leader once one is elected.
        let deadline = tokio::time::Instant::now() + REDIRECT_PATIENCE;
        let mut pause = self.config.retry.initial;
        let result = loop {
            let channel = self.leader.channel();
            let at_seed = self.leader.at_seed();
            let attempt = || {
                let mut client = ProducerClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(timeout);
                // This client follows `not_leader` itself: brokers need not forward.
                req.metadata_mut().insert("sluice-redirect", tonic::metadata::MetadataValue::from_static("1"));
                async move { client.produce(req).await.map(tonic::Response::into_inner).map_err(Error::from) }
            };
            let result = attempt
                .retry(self.config.retry.backoff())
                .when(|e| at_seed && e.is_retryable() && e.leader_hint().is_none())
                .await;
            let Err(e) = &result else { break result };
            if tokio::time::Instant::now() >= deadline || !e.is_retryable() {
                break result;
            }
            let went = match e.leader_hint() {
                Some(hint) => self.leader.follow(&hint),
                None if !at_seed => {
                    self.leader.reset();
                    false
                }
                None => break result,
            };
            if !went {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(self.config.retry.max);
            }
        };
        match result {
            Ok(resp) => {
                self.sequence += 1;
                for (reply, offset) in replies.into_iter().zip(resp.offsets) {
                    let _ = reply.send(Ok(Delivery { partition: self.partition, offset }));
                }
            }
            Err(e) => {
                let status = match &e {
                    Error::Status(s) => s.clone(),
                    other => tonic::Status::unknown(other.to_string()),
                };
                if e.is_retryable() || e.code() == Some(tonic::Code::FailedPrecondition) {
                    // Unknown whether the broker stored it: continue as a new producer.
                    self.producer_id = new_producer_id();
                    self.sequence = 0;
                }
                for reply in replies {
                    let _ = reply.send(Err(Error::Status(status.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(sending: &[bool]) -> Vec<AtomicBool> {
        sending.iter().map(|&s| AtomicBool::new(s)).collect()
    }

    #[test]
    fn unkeyed_messages_stay_on_a_partition_until_it_sends() {
        assert_eq!(unkeyed_partition(2, &flags(&[false, false, false, false])), 2);
        assert_eq!(unkeyed_partition(6, &flags(&[false, false, false, false])), 2, "taken modulo the count");
    }

    #[test]
    fn unkeyed_messages_skip_partitions_with_a_request_in_flight() {
        assert_eq!(unkeyed_partition(1, &flags(&[false, true, true, false])), 3);
        assert_eq!(unkeyed_partition(3, &flags(&[false, true, true, true])), 0, "wraps around");
    }

    #[test]
    fn with_every_partition_sending_unkeyed_messages_go_round_robin() {
        let all = flags(&[true; 4]);
        let mut p = 0;
        let seen: Vec<u32> = (0..5)
            .map(|_| {
                p = unkeyed_partition(p, &all);
                p
            })
            .collect();
        assert_eq!(seen, vec![1, 2, 3, 0, 1]);
    }

    fn pending(value: &str) -> Pending {
        let message = pb::Message { key: None, value: value.as_bytes().to_vec().into(), headers: vec![] };
        Pending { message, reply: oneshot::channel().0 }
    }

    #[test]
    fn without_linger_a_batch_takes_what_is_queued_and_touches_no_timer() {
        // A runtime without a timer: any sleep, even one already due, would panic here
        // (and on a runtime with one, it waits for the timer's next millisecond tick).
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(8);
            for v in ["b", "c"] {
                tx.send(pending(v)).await.expect("the receiver is open");
            }
            let config = ProducerConfig { linger: Duration::ZERO, ..ProducerConfig::default() };
            let mut batch = Vec::new();
            collect(pending("a"), &mut rx, &config, &mut batch).await;
            assert_eq!(batch.len(), 3, "what was queued joins the batch");
        });
    }

    #[tokio::test]
    async fn with_a_linger_a_batch_waits_for_it() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(pending("b")).await.expect("the receiver is open");
        let config = ProducerConfig { linger: Duration::from_millis(30), ..ProducerConfig::default() };
        let started = tokio::time::Instant::now();
        let mut batch = Vec::new();
        collect(pending("a"), &mut rx, &config, &mut batch).await;
        assert_eq!(batch.len(), 2);
        assert!(started.elapsed() >= Duration::from_millis(30), "the linger is waited out");
        drop(tx);
    }

    #[test]
    fn the_scan_is_bounded() {
        let mut sending = vec![true; 40];
        sending[30] = false;
        assert_eq!(unkeyed_partition(0, &flags(&sending)), 1, "beyond the scan: the next in turn");
        assert_eq!(unkeyed_partition(20, &flags(&sending)), 30);
    }
}
