//! `PartitionHandle`: append through the actor, read committed records
//! through the partition log's read half, never past the committed watermark.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1::Message;
use sluice_storage::{OffsetRange, PartitionId, PartitionReader, ProducerSeq, SegmentMeta, StoredRecord};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the first message.
    pub base_offset: u64,
    /// Whether it was a retry of an already stored batch.
    pub duplicate: bool,
}

/// A point-in-time view of a partition's index.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    /// First stored offset.
    pub log_start: u64,
    /// Next offset to be assigned (may be ahead of what is committed).
    pub next_offset: u64,
    /// Segments, oldest first.
    pub segments: Vec<SegmentMeta>,
}

pub(super) enum Command {
    Append { messages: Vec<Message>, producer: Option<ProducerSeq>, reply: oneshot::Sender<Result<AppendResult>> },
    Snapshot { reply: oneshot::Sender<PartitionSnapshot> },
    Truncate { reply: oneshot::Sender<Result<u64>> },
}

/// State the actor (or the shard) publishes for readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub id: PartitionId,
    /// Offsets below this are durable and readable (the high watermark).
    pub committed: watch::Sender<u64>,
    pub log_start: AtomicU64,
    /// The topic's append counter.
    pub appended: Arc<watch::Sender<u64>>,
    /// Set when the topic is deleted, so requests caught by it are told so
    /// rather than that the broker is stopping.
    pub deleted: AtomicBool,
}

impl Shared {
    /// A fresh state for partition `id`, readable below `committed`.
    pub(super) fn new(id: PartitionId, log_start: u64, committed: u64, appended: Arc<watch::Sender<u64>>) -> Self {
        Shared {
            id,
            committed: watch::Sender::new(committed),
            log_start: AtomicU64::new(log_start),
            appended,
            deleted: AtomicBool::new(false),
        }
    }

    /// Records below `end` are committed (never lowers the watermark); wakes
    /// the topic's waiting readers.
    pub(super) fn raise_committed(&self, end: u64) {
        if self.committed.send_if_modified(|c| {
            let raised = end > *c;
            *c = (*c).max(end);
            raised
        }) {
            self.appended.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// Where appends go: the partition's actor, or its shard.
#[derive(Clone)]
pub(super) enum Route {
    Actor(mpsc::Sender<Command>),
    Replicated(Arc<super::ReplicatedPartitions>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Actor(_) => "Actor",
            Route::Replicated(_) => "Replicated",
        })
    }
}

/// Cloneable access to one partition.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    pub(super) route: Route,
    pub(super) shared: Arc<Shared>,
    pub(super) reader: PartitionReader,
}

impl PartitionHandle {
    /// Appends `messages` as one batch; resolves once durable.
    ///
    /// # Correctness
    /// Answers only after the batch is committed under the topic's durability;
    /// a retried `producer` sequence resolves to the original offsets.
    /// A full partition queue is `Overloaded` at once (back-pressure).
    pub async fn append(&self, messages: Vec<Message>, producer: Option<ProducerSeq>) -> Result<AppendResult> {
        self.reader.store().disk().check()?;
        let tx = match &self.route {
            Route::Actor(tx) => tx,
            Route::Replicated(shards) => {
                if self.shared.deleted.load(Ordering::Acquire) {
                    return Err(self.stopped());
                }
                return shards.append(self.shared.id, &messages, producer).await;
            }
        };
        let (reply, rx) = oneshot::channel();
        tx.try_send(Command::Append { messages, producer, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded("partition append queue"),
            mpsc::error::TrySendError::Closed(_) => self.stopped(),
        })?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Appends a client's `messages` like [`append`](Self::append); in a
    /// cluster, where another broker leads the partition, the append is
    /// forwarded there when `forward` (the client does not follow redirects).
    pub async fn append_or_forward(
        &self,
        topic: &str,
        messages: Vec<Message>,
        producer: Option<ProducerSeq>,
        forward: bool,
    ) -> Result<AppendResult> {
        match &self.route {
            Route::Replicated(shards) if forward && !self.shared.deleted.load(Ordering::Acquire) => {
                self.reader.store().disk().check()?;
                shards.append_or_forward(topic, self.shared.id, &messages, producer).await
            }
            _ => self.append(messages, producer).await,
        }
    }

    /// Appends the broker's own `messages` (dead letters) to this partition
    /// of `topic`: in a cluster at its leader, wherever that is.
    pub async fn append_at_leader(&self, topic: &str, messages: Vec<Message>) -> Result<AppendResult> {
        match &self.route {
            Route::Replicated(shards) if !self.shared.deleted.load(Ordering::Acquire) => {
                self.reader.store().disk().check()?;
                shards.append_at_leader(topic, self.shared.id, &messages).await
            }
            _ => self.append(messages, None).await,
        }
    }

    /// At the partition's leader, its committed end once the leader's whole
    /// log is applied (see `ReplicatedPartitions::leader_end`); a single
    /// broker's own end. `not_leader` where this broker does not lead it.
    pub async fn leader_end(&self, within: Duration) -> Result<u64> {
        match &self.route {
            Route::Replicated(shards) => shards.leader_end_here(self.shared.id, &self.shared.committed, within).await,
            Route::Actor(_) => Ok(self.latest()),
        }
    }

    /// The partition's end below which every committed record is readable
    /// here, waiting at most `within` for this replica to catch up (see
    /// `ReplicatedPartitions::caught_up_end`); a single broker's own end.
    /// What a search for an unanswered append of this broker must cover.
    pub async fn caught_up_end(&self, topic: &str, within: Duration) -> Result<u64> {
        match &self.route {
            Route::Replicated(shards) => {
                shards.caught_up_end(topic, self.shared.id, &self.shared.committed, within).await
            }
            Route::Actor(_) => Ok(self.latest()),
        }
    }

    /// Why the actor no longer answers: its topic was deleted, or the broker is stopping.
    fn stopped(&self) -> Error {
        if self.shared.deleted.load(Ordering::Acquire) {
            Error::Deleted(format!("partition {} of its topic", self.shared.id.index))
        } else {
            Error::ShuttingDown
        }
    }

    /// Marks the partition as deleted (before its actor is stopped); a
    /// replicated partition also leaves its shard.
    pub(crate) fn mark_deleted(&self) {
        self.shared.deleted.store(true, Ordering::Release);
        if let Route::Replicated(shards) = &self.route {
            shards.unbind(self.shared.id);
        }
    }

    /// The handle of partition `id` in a cluster: appends go to its shard,
    /// which owns its log and raises its watermark.
    pub fn replicated(
        id: PartitionId,
        shards: &Arc<super::ReplicatedPartitions>,
        settings: &Arc<std::sync::RwLock<sluice_storage::TopicConfig>>,
        appended: Arc<watch::Sender<u64>>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared::new(id, 0, 0, appended));
        let log_start = shards.bind(id, &shared, settings)?;
        shared.log_start.store(log_start, Ordering::Release);
        let reader = PartitionReader::new(shards.store().clone(), id);
        Ok(PartitionHandle { route: Route::Replicated(shards.clone()), shared, reader })
    }

    /// The partition's segment index and offsets.
    pub async fn snapshot(&self) -> Result<PartitionSnapshot> {
        let tx = match &self.route {
            Route::Actor(tx) => tx,
            Route::Replicated(shards) => return shards.snapshot(self.shared.id),
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Snapshot { reply }).await.map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Removes every stored record (dead-letter purge); in a cluster, every
    /// committed one, on every replica. Returns how many were removed.
    pub async fn truncate(&self) -> Result<u64> {
        let tx = match &self.route {
            Route::Actor(tx) => tx,
            Route::Replicated(shards) => return shards.purge(self.shared.id).await,
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Truncate { reply }).await.map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// `not_leader` (naming a replica) where this broker holds no replica of
    /// the partition: its topic's replication factor leaves this broker out.
    pub fn held_here(&self) -> Result<()> {
        match &self.route {
            Route::Replicated(shards) => shards.held_here(self.shared.id),
            Route::Actor(_) => Ok(()),
        }
    }

    /// Timestamp of the record at `offset`, if stored.
    pub async fn timestamp_at(&self, offset: u64) -> Result<Option<i64>> {
        self.held_here()?;
        if offset >= self.latest() || offset < self.earliest() {
            return Ok(None);
        }
        let records = self.reader.read(OffsetRange::new(offset, offset + 1), 1, 1).await?;
        Ok(records.first().map(|r| r.timestamp_ms))
    }

    /// First stored offset.
    pub fn earliest(&self) -> u64 {
        self.shared.log_start.load(Ordering::Acquire)
    }

    /// Next offset to become readable (the committed high watermark).
    pub fn latest(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    /// Reads committed records from `offset`, waiting up to `max_wait` for
    /// new ones when there are none, returning early when `stop` fires.
    pub async fn fetch(
        &self,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        max_wait: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Vec<StoredRecord>> {
        self.held_here()?;
        let (earliest, latest) = (self.earliest(), self.latest());
        if offset < earliest || offset > latest {
            return Err(Error::OffsetOutOfRange { offset, earliest, latest });
        }
        let mut committed = self.shared.committed.subscribe();
        if offset == latest && !max_wait.is_zero() {
            let wait = committed.wait_for(|c| *c > offset);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = tokio::time::timeout(max_wait, wait) => {}
            }
        }
        let until = *committed.borrow();
        if offset >= until {
            return Ok(Vec::new());
        }
        let from = offset.max(self.earliest());
        Ok(self.reader.read(OffsetRange::new(from, until), max_messages, max_bytes).await?)
    }

    /// Committed records in `range` (capped at the committed watermark), at
    /// most `max_messages` and about `max_bytes`; no waiting. What retention
    /// removed is simply absent.
    pub async fn read(&self, range: OffsetRange, max_messages: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        self.held_here()?;
        let range = OffsetRange::new(range.start.max(self.earliest()), range.end.min(self.latest()));
        if range.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.reader.read(range, max_messages, max_bytes).await?)
    }

    /// The first offset whose timestamp is at least `timestamp_ms`, or `latest` if none.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64> {
        let snapshot = self.snapshot().await?;
        let latest = self.latest();
        let start = snapshot
            .segments
            .iter()
            .find(|s| !s.is_empty() && s.last_timestamp_ms >= timestamp_ms)
            .map(|s| s.base_offset);
        let Some(start) = start else { return Ok(latest) };
        let from = start.max(self.earliest());
        let found = self.reader.offset_for_timestamp(OffsetRange::new(from, latest), timestamp_ms).await?;
        Ok(found.unwrap_or(latest))
    }
}
