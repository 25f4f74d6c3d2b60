//! The partition actor: the only owner of a partition's `PartitionLog`.
//!
//! It assigns offsets in arrival order and hands each batch to the writer
//! without waiting for the commit (pipelining); the writer's completion raises
//! the committed watermark and answers the producer, in order. It also runs
//! retention for its partition on a timer.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_proto::v1::Message;
use sluice_storage::{
    now_ms, Append, Durability, PartitionLog, RecordRef, Store, TopicConfig, WriteRequest, WriterHandle,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::{AppendResult, Command, PartitionHandle, PartitionSnapshot, Route, Shared};
use crate::error::{Error, Result};

/// What every partition actor of a broker shares.
#[derive(Debug, Clone)]
pub struct PartitionContext {
    /// The RocksDB store.
    pub store: Arc<Store>,
    /// The group-commit writer.
    pub writer: WriterHandle,
    /// Appends queued per partition.
    pub queue_depth: usize,
    /// Retention check period.
    pub retention_check: Duration,
    /// Tracks actors so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// In a cluster: the shards that own partitions instead of actors.
    pub replicated: Option<Arc<super::ReplicatedPartitions>>,
}

/// A proto message seen as a storage record, so it is encoded without a copy.
#[repr(transparent)]
struct MessageRecord(Message);

impl RecordRef for MessageRecord {
    fn key(&self) -> Option<&[u8]> {
        self.0.key.as_deref()
    }
    fn value(&self) -> &[u8] {
        &self.0.value
    }
    fn header_count(&self) -> usize {
        self.0.headers.len()
    }
    fn header(&self, i: usize) -> (&str, &[u8]) {
        let h = &self.0.headers[i];
        (&h.key, &h.value)
    }
}

struct PartitionActor {
    log: PartitionLog,
    settings: Arc<RwLock<TopicConfig>>,
    shared: Arc<Shared>,
    ctx: PartitionContext,
}

/// Starts the actor of a recovered or new partition. It stops when `stop`
/// fires, after answering what was already queued.
pub fn spawn_partition(
    log: PartitionLog,
    settings: Arc<RwLock<TopicConfig>>,
    appended: Arc<watch::Sender<u64>>,
    ctx: &PartitionContext,
    stop: CancellationToken,
) -> (PartitionHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ctx.queue_depth);
    let shared = Arc::new(Shared::new(log.id(), log.log_start(), log.next_offset(), appended));
    let handle = PartitionHandle { route: Route::Actor(tx), shared: shared.clone(), reader: log.reader() };
    let actor = PartitionActor { log, settings, shared, ctx: ctx.clone() };
    let join = ctx.tracker.spawn(actor.run(rx, stop));
    (handle, join)
}

impl PartitionActor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.ctx.retention_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = tick.tick() => self.trim().await,
            }
        }
        rx.close();
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd).await;
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Append { messages, producer, reply } => self.append(messages, producer, reply).await,
            Command::Truncate { reply } => {
                let purged = self.log.next_offset() - self.log.log_start();
                let r = match self.log.clear(now_ms()) {
                    Some(trim) => self.ctx.writer.write(trim.write).await.map(|()| {
                        self.shared.log_start.store(trim.log_start, Ordering::Release);
                        purged
                    }),
                    None => Ok(0),
                };
                let _ = reply.send(r.map_err(Error::from));
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(PartitionSnapshot {
                    log_start: self.log.log_start(),
                    next_offset: self.log.next_offset(),
                    segments: self.log.segments().to_vec(),
                });
            }
        }
    }

    fn settings(&self) -> TopicConfig {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn append(
        &mut self,
        messages: Vec<Message>,
        producer: Option<sluice_storage::ProducerSeq>,
        reply: oneshot::Sender<Result<AppendResult>>,
    ) {
        let settings = self.settings();
        let records: Vec<MessageRecord> = messages.into_iter().map(MessageRecord).collect();
        let count = records.len() as u64;
        let segments = self.log.segments().len();
        let appended = self.log.append(&records, producer, now_ms(), &settings);
        if self.log.segments().len() > segments {
            tracing::info!(
                topic_id = self.shared.id.topic.0,
                partition = self.shared.id.index,
                base_offset = self.log.next_offset() - count,
                "segment rolled"
            );
        }
        match appended {
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
            Ok(Append::Duplicate { base_offset, count }) => {
                let end = base_offset + u64::from(count);
                let result = AppendResult { base_offset, duplicate: true };
                let mut committed = self.shared.committed.subscribe();
                if *committed.borrow() >= end {
                    let _ = reply.send(Ok(result));
                } else {
                    // The original is still being written: answer once it is durable.
                    self.ctx.tracker.spawn(async move {
                        let r =
                            committed.wait_for(|c| *c >= end).await.map(|_| result).map_err(|_| Error::ShuttingDown);
                        let _ = reply.send(r);
                    });
                }
            }
            Ok(Append::Write { base_offset, write }) => {
                let shared = self.shared.clone();
                let end = base_offset + count;
                let request = WriteRequest {
                    write,
                    sync: settings.durability == Durability::Always,
                    on_commit: Box::new(move |r| {
                        let r = r.map(|()| {
                            shared.committed.send_replace(end);
                            shared.appended.send_modify(|g| *g = g.wrapping_add(1));
                            AppendResult { base_offset, duplicate: false }
                        });
                        let _ = reply.send(r.map_err(Error::from));
                    }),
                };
                if let Err(e) = self.ctx.writer.submit(request).await {
                    tracing::error!(error = %e, "writer stopped while appending");
                }
            }
        }
    }

    async fn trim(&mut self) {
        let settings = self.settings();
        let Some(trim) = self.log.trim(now_ms(), &settings) else { return };
        if let Err(e) = self.ctx.writer.write(trim.write).await {
            tracing::error!(error = %e, topic_id = self.shared.id.topic.0, partition = self.shared.id.index, "retention write failed");
            return;
        }
        self.shared.log_start.store(trim.log_start, Ordering::Release);
        super::retention::log_removed(self.shared.id, &trim.removed);
        if let Some(reclaim) = trim.reclaim {
            let store = self.ctx.store.clone();
            // Space comes back in the background.
            self.ctx.tracker.spawn_blocking(move || super::retention::reclaim(&store, &reclaim));
        }
    }
}
