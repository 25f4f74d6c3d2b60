//! The group actor: the only owner of a group's `GroupState`. It leases
//! messages to pulls, applies acks and nacks, expires leases on a timer,
//! schedules redeliveries, dead-letters exhausted messages and, for ordered
//! groups, assigns partitions to members.
//!
//! # Correctness
//! Replies to Pull, Ack and Nack are sent from the writer's completion, after
//! the state change they depend on is durable (attempt counts and cursors for
//! a pull; the ack for an ack). The actor never waits for a write itself —
//! not for its own timer's lease expiries either — so many requests share one
//! fsync and a burst of expiries does not stall anyone; the writer commits in
//! order, so what the actor decides later never reaches disk before what it
//! decided earlier.
//!
//! Exhausted messages are dead-lettered in batches by a task of their own
//! (`DeadLetterQueue`), one batch at a time per group; the actor acks them at
//! the source when the task reports their dead-letter append durable.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_storage::{now_ms, AtomicWrite, OffsetRange, StoredRecord};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::config::{GroupConfig, GroupMode};
use super::dead_letter;
use super::persistence::Persistence;
use super::registry::GroupContext;
use super::state::{AckError, FailOutcome, Failure, GroupState, PartitionStats};
use crate::error::{Error, Result};
use crate::topic::Topic;

/// Messages one partition may have outstanding (delivered, not committed) in a group.
pub const MAX_OUTSTANDING_PER_PARTITION: u64 = 20_000;

/// A parsed ack id: `partition:offset:attempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckId {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery attempt the id was issued for.
    pub attempt: u32,
}

impl AckId {
    /// Parses an ack id as issued by `Pull`.
    pub fn parse(s: &str) -> Option<AckId> {
        let mut it = s.split(':');
        let id = AckId {
            partition: it.next()?.parse().ok()?,
            offset: it.next()?.parse().ok()?,
            attempt: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(id)
    }
}

impl std::fmt::Display for AckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.partition, self.offset, self.attempt)
    }
}

/// A message leased to a consumer.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Ack id.
    pub ack_id: AckId,
    /// The record.
    pub record: StoredRecord,
    /// Lease end, ms since the Unix epoch.
    pub deadline_ms: i64,
}

/// A point-in-time view of a group.
#[derive(Debug, Clone, Default)]
pub struct GroupSnapshot {
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
    /// Ordered groups: the owner of each partition.
    pub owners: Vec<Option<String>>,
    /// Known members.
    pub members: Vec<String>,
}

/// Per-id outcome of an ack, nack or extension.
pub type AckResults = Vec<(AckId, Option<AckError>)>;

pub(super) enum Command {
    Pull {
        consumer: String,
        max: usize,
        reply: oneshot::Sender<Result<Vec<Delivered>>>,
    },
    Ack {
        ids: Vec<AckId>,
        reply: oneshot::Sender<Result<AckResults>>,
    },
    Nack {
        ids: Vec<AckId>,
        delay_ms: Option<u32>,
        reason: String,
        consumer: String,
        reply: oneshot::Sender<Result<AckResults>>,
    },
    Extend {
        ids: Vec<AckId>,
        deadline_ms: u32,
        reply: oneshot::Sender<Result<AckResults>>,
    },
    Seek {
        targets: Vec<(u32, u64)>,
        reply: oneshot::Sender<Result<()>>,
    },
    Snapshot {
        reply: oneshot::Sender<GroupSnapshot>,
    },
    Leave {
        consumer: String,
    },
    /// A dead-lettering task's outcome, with the generation of the actor that started it.
    DeadLettered(u64, dead_letter::BatchOutcome),
}

/// Most exhausted messages handed to one dead-lettering task.
const DEAD_LETTER_BATCH: usize = 4096;

/// The longest a dead-lettering task may run (waiting for its marks, the
/// search, the appends); past it the batch counts as failed and is retried,
/// and the next task (see `DeadLetterQueue::new`) may start.
const DEAD_LETTER_TASK_LIMIT: Duration = Duration::from_secs(12);

/// Exhausted messages waiting to be dead-lettered, and whether a batch is
/// being written now.
pub(super) struct DeadLetterQueue {
    /// (partition, offset, recovered after a crash mid-way).
    waiting: Vec<(u32, u64, bool)>,
    in_flight: bool,
    /// The actor's own queue, for the task's report (weak: it must not keep the actor alive).
    actor: mpsc::WeakSender<Command>,
    /// Which actor of the group this is on this broker (in a cluster,
    /// counted per take-over: two can run in one shard term), so a report
    /// from an earlier one's task is told apart.
    generation: u64,
    /// Held by the running dead-lettering task of any actor of this group
    /// on this broker: see `new`.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl DeadLetterQueue {
    /// A queue holding what recovery found half dead-lettered.
    ///
    /// # Correctness
    /// In a cluster the group's actor is restarted whenever its lease ends
    /// (a failed proposal ends it, also in the same term), and the previous
    /// actor's task may still be appending the very messages this one
    /// recovered: its append not yet readable, a search now would miss it and
    /// write each again (the kill loop saw one batch written five times).
    /// `one_at_a_time`, shared by every actor of the group on this broker,
    /// makes a task wait until the previous one has ended (within
    /// [`DEAD_LETTER_TASK_LIMIT`]) before it searches.
    pub(super) fn new(
        actor: mpsc::WeakSender<Command>,
        recovered: Vec<(u32, u64)>,
        generation: u64,
        one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        let waiting = recovered.into_iter().map(|(p, off)| (p, off, true)).collect();
        DeadLetterQueue { waiting, in_flight: false, actor, generation, one_at_a_time }
    }
}

/// Cloneable access to a running group.
#[derive(Debug)]
pub struct GroupHandle {
    /// Group name.
    pub name: String,
    /// The topic it reads.
    pub topic: Arc<Topic>,
    /// Settings, shared with the actor.
    pub settings: Arc<RwLock<GroupConfig>>,
    pub(super) tx: mpsc::Sender<Command>,
    /// Bumped when redeliveries become due or the group moves, so long-polls wake.
    pub ready: Arc<watch::Sender<u64>>,
    pub(super) stop: CancellationToken,
    pub(super) join: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the group is deleted, so requests caught by it are told so.
    pub(super) deleted: std::sync::atomic::AtomicBool,
}

impl GroupHandle {
    /// Current settings.
    pub fn settings(&self) -> GroupConfig {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded("group request queue"),
            mpsc::error::TrySendError::Closed(_) => self.stopped(),
        })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Why the actor no longer answers: the group was deleted, or the broker is stopping.
    fn stopped(&self) -> Error {
        if self.deleted.load(std::sync::atomic::Ordering::Acquire) {
            Error::Deleted(format!("group `{}`", self.name))
        } else {
            Error::ShuttingDown
        }
    }

    /// Leases up to `max` ready messages (no waiting).
    pub async fn pull(&self, consumer: &str, max: usize) -> Result<Vec<Delivered>> {
        self.call(|reply| Command::Pull { consumer: consumer.to_owned(), max, reply }).await?
    }

    /// Acks; resolves once durable.
    pub async fn ack(&self, ids: Vec<AckId>) -> Result<AckResults> {
        self.call(|reply| Command::Ack { ids, reply }).await?
    }

    /// Nacks; resolves once the schedule is durable.
    pub async fn nack(
        &self,
        ids: Vec<AckId>,
        delay_ms: Option<u32>,
        reason: String,
        consumer: String,
    ) -> Result<AckResults> {
        self.call(|reply| Command::Nack { ids, delay_ms, reason, consumer, reply }).await?
    }

    /// Sets new lease ends; 0 releases the messages.
    pub async fn extend(&self, ids: Vec<AckId>, deadline_ms: u32) -> Result<AckResults> {
        self.call(|reply| Command::Extend { ids, deadline_ms, reply }).await?
    }

    /// Moves partitions to offsets.
    pub async fn seek(&self, targets: Vec<(u32, u64)>) -> Result<()> {
        self.call(|reply| Command::Seek { targets, reply }).await?
    }

    /// The group's figures.
    pub async fn snapshot(&self) -> Result<GroupSnapshot> {
        self.call(|reply| Command::Snapshot { reply }).await
    }

    /// A streaming member went away (ordered groups rebalance at once).
    pub fn leave(&self, consumer: &str) {
        let _ = self.tx.try_send(Command::Leave { consumer: consumer.to_owned() });
    }
}

pub(super) struct GroupActor {
    pub state: GroupState,
    pub settings: Arc<RwLock<GroupConfig>>,
    pub topic: Arc<Topic>,
    pub ctx: GroupContext,
    pub ready: Arc<watch::Sender<u64>>,
    pub members: BTreeMap<String, i64>,
    pub owners: Vec<Option<String>>,
    pub rotation: u32,
    pub dead_letters: DeadLetterQueue,
    pub persistence: Persistence,
    /// Records read past what pulls took, for the next pulls.
    pub read_ahead: super::read_ahead::ReadAhead,
}

/// What a pull leased, what it must commit, and the read error that cut it short.
struct Pulled {
    deliveries: Vec<Delivered>,
    write: AtomicWrite,
    failure: Option<Error>,
}

impl GroupActor {
    fn settings(&self) -> GroupConfig {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn bump_ready(&self) {
        self.ready.send_modify(|g| *g += 1);
    }

    /// Serves `rx` until `stop`, the queue closes, or (in a cluster) the
    /// lease on the group's shard is lost; the queue stays with the caller.
    pub(super) async fn run(mut self, rx: &mut mpsc::Receiver<Command>, stop: CancellationToken) {
        loop {
            let now = now_ms();
            let wait = self
                .state
                .next_wakeup(now)
                .map_or(Duration::from_secs(3600), |w| Duration::from_millis((w - now).max(1) as u64));
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.persistence.lost() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {
                    let now = now_ms();
                    self.tick(now).await;
                    self.pump_dead_letters(now).await;
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        let now = now_ms();
        self.tick(now).await;
        self.handle_command(cmd, now).await;
        self.pump_dead_letters(now).await;
    }

    async fn handle_command(&mut self, cmd: Command, now: i64) {
        match cmd {
            Command::Pull { consumer, max, reply } => match self.pull(&consumer, max, now).await {
                Ok(Pulled { deliveries, write, failure: Some(e) }) if deliveries.is_empty() => {
                    self.persistence.persist(write).await;
                    let _ = reply.send(Err(e));
                }
                Ok(Pulled { deliveries, write, .. }) => {
                    self.persistence.reply_after_commit(write, reply, deliveries).await
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Ack { ids, reply } => {
                let mut out = AtomicWrite::new();
                let results = ids
                    .into_iter()
                    .map(|id| (id, self.state.ack(id.partition, id.offset, id.attempt, &mut out).err()))
                    .collect();
                self.state.flush_cursors(&mut out);
                self.persistence.reply_after_commit(out, reply, results).await;
            }
            Command::Nack { ids, delay_ms, reason, consumer, reply } => {
                if !consumer.is_empty() {
                    self.touch(&consumer, now);
                }
                let mut out = AtomicWrite::new();
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let r = self.fail(id, now, delay_ms.map(i64::from), &reason, &consumer, &mut out);
                    results.push((id, r.err()));
                }
                self.state.flush_cursors(&mut out);
                self.bump_ready();
                self.persistence.reply_after_commit(out, reply, results).await;
            }
            Command::Extend { ids, deadline_ms, reply } => {
                let mut out = AtomicWrite::new();
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let r = if deadline_ms == 0 {
                        self.fail(id, now, Some(0), "released by consumer", "", &mut out)
                            .map(|o| o != FailOutcome::Ignored)
                    } else {
                        self.state.extend(id.partition, id.offset, id.attempt, now + i64::from(deadline_ms))
                    };
                    results
                        .push((id, r.and_then(|leased| if leased { Ok(()) } else { Err(AckError::NotLeased) }).err()));
                }
                self.state.flush_cursors(&mut out);
                if deadline_ms == 0 {
                    self.bump_ready();
                }
                self.persistence.reply_after_commit(out, reply, results).await;
            }
            Command::Seek { targets, reply } => {
                let mut out = AtomicWrite::new();
                for (p, off) in targets {
                    self.state.seek(p, off, &mut out);
                }
                self.state.flush_cursors(&mut out);
                self.bump_ready();
                self.persistence.reply_after_commit(out, reply, ()).await;
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(GroupSnapshot {
                    partitions: (0..self.state.partitions()).map(|p| self.state.stats(p)).collect(),
                    owners: self.owners.clone(),
                    members: self.members.keys().cloned().collect(),
                });
            }
            Command::Leave { consumer } => {
                if self.members.remove(&consumer).is_some() {
                    self.rebalance(now, Some(&consumer));
                }
            }
            Command::DeadLettered(generation, outcome) if generation == self.dead_letters.generation => {
                self.dead_lettered(outcome, now).await
            }
            // Started by an earlier lease on the group: what it wrote is found
            // again from the stored marks (never written twice).
            Command::DeadLettered(..) => {}
        }
    }

    /// Starts a dead-lettering task for what is waiting, unless one runs.
    async fn pump_dead_letters(&mut self, now: i64) {
        if self.dead_letters.in_flight || self.dead_letters.waiting.is_empty() {
            return;
        }
        let take = self.dead_letters.waiting.len().min(DEAD_LETTER_BATCH);
        let settings = self.settings();
        let dlq = self.ctx.topics.get(&settings.dead_letter_topic).ok();
        let mut marks = AtomicWrite::new();
        let mut items = Vec::with_capacity(take);
        for (partition, offset, recovered) in self.dead_letters.waiting.drain(..take) {
            let Some(state) = self.state.message(partition, offset).cloned() else { continue };
            // Set by an earlier attempt whose outcome is unknown (a crash, a lost
            // answer): a copy may already be in the dead-letter topic from there on.
            let search_from = state.dead_letter_from;
            if !recovered {
                let end = dlq.as_ref().map_or(0, |d| {
                    let target = partition % d.partitions.len().max(1) as u32;
                    d.partition(target).map_or(0, |h| h.latest())
                });
                self.state.mark_dead_lettering(partition, offset, end, &mut marks);
            }
            items.push(dead_letter::Exhausted { partition, offset, state, search_from });
        }
        // The marks must be committed before any append starts: in a cluster
        // the dead-letter partition is in another Raft group than the group's
        // state, so submission order alone does not order them. A mark that
        // did not commit (the lease ended) would leave a copy no later attempt
        // knows to look for.
        let (marked, marks_committed) = oneshot::channel();
        self.persistence.reply_after_commit(marks, marked, ()).await;
        self.dead_letters.in_flight = true;
        let (ctx, topic, actor) = (self.ctx.clone(), self.topic.clone(), self.dead_letters.actor.clone());
        let generation = self.dead_letters.generation;
        let one_at_a_time = self.dead_letters.one_at_a_time.clone();
        self.ctx.tracker.spawn(async move {
            let _turn = one_at_a_time.lock_owned().await;
            let ids: Vec<(u32, u64)> = items.iter().map(|i| (i.partition, i.offset)).collect();
            let task = async {
                match marks_committed.await {
                    Ok(Ok(())) => dead_letter::write_batch(&ctx, &topic, items, &settings, now).await,
                    Ok(Err(e)) => dead_letter::BatchOutcome::not_written(ids.clone(), e),
                    Err(_) => dead_letter::BatchOutcome::not_written(ids.clone(), Error::ShuttingDown),
                }
            };
            let outcome = tokio::time::timeout(DEAD_LETTER_TASK_LIMIT, task).await.unwrap_or_else(|_| {
                let why = format!("dead-lettering took longer than {DEAD_LETTER_TASK_LIMIT:?}");
                dead_letter::BatchOutcome::not_written(ids, Error::ClusterUnavailable(why))
            });
            if let Some(actor) = actor.upgrade() {
                // The group may be gone (deleted, shutting down): then so is the need to ack.
                let _ = actor.send(Command::DeadLettered(generation, outcome)).await;
            }
        });
    }

    /// A dead-lettering task finished: ack what it wrote at the source, retry
    /// what it could not write after the group's longest backoff.
    async fn dead_lettered(&mut self, outcome: dead_letter::BatchOutcome, now: i64) {
        // Fault injection: die with the dead letters durable and the source not yet acked.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sluice-dead-letter-written", !outcome.written.is_empty(), |_| std::process::abort());
        self.dead_letters.in_flight = false;
        let settings = self.settings();
        let mut out = AtomicWrite::new();
        for &(p, off) in &outcome.written {
            self.state.dead_lettered(p, off, &mut out);
        }
        metrics::counter!(crate::metrics::GROUP_DEAD_LETTERED_TOTAL, "group" => settings.name.clone())
            .increment(outcome.written.len() as u64);
        for &(p, off) in &outcome.source_expired {
            self.settle_expired(p, off, &mut out);
        }
        if let Some(e) = &outcome.error {
            tracing::error!(
                error = %e,
                group = %settings.name,
                messages = outcome.failed.len(),
                "dead-lettering failed; will retry after the backoff"
            );
        }
        for &(p, off) in &outcome.failed {
            self.state.schedule(p, off, now + i64::from(settings.backoff.max_ms), &mut out);
        }
        self.state.flush_cursors(&mut out);
        self.persistence.persist(out).await;
    }

    /// Expires leases (scheduling or dead-lettering them), drops silent members,
    /// and wakes long-polls when redeliveries are due.
    async fn tick(&mut self, now: i64) {
        let expired = self.state.expired(now);
        if !expired.is_empty() {
            let mut out = AtomicWrite::new();
            for (p, offset, attempt) in expired {
                let id = AckId { partition: p, offset, attempt };
                let _ = self.fail(id, now, None, "ack deadline expired", "", &mut out);
            }
            self.state.flush_cursors(&mut out);
            self.persistence.persist(out).await;
        }
        let session = i64::from(self.settings().ack_deadline_ms).saturating_mul(2).max(1000);
        let before = self.members.len();
        self.members.retain(|_, seen| now - *seen <= session);
        if self.members.len() != before {
            self.rebalance(now, None);
        }
        if self.state.has_due(now) {
            self.bump_ready();
        }
    }

    fn touch(&mut self, consumer: &str, now: i64) {
        if self.members.insert(consumer.to_owned(), now).is_none() && self.settings().mode == GroupMode::Ordered {
            self.rebalance(now, None);
        }
    }

    /// Ordered groups: partition `p` goes to the `p mod n`-th member by name.
    /// The new owner gets a partition only once its outstanding leases are acked
    /// or expire (`is_busy`), so two members never work on one partition at
    /// once; only the leases of a member that said it `left` are released at once.
    fn rebalance(&mut self, now: i64, left: Option<&str>) {
        if self.settings().mode != GroupMode::Ordered {
            return;
        }
        let members: Vec<&String> = self.members.keys().collect();
        for p in 0..self.state.partitions() {
            let owner = (!members.is_empty()).then(|| members[p as usize % members.len()].clone());
            if self.owners[p as usize] != owner {
                if left.is_some() && self.owners[p as usize].as_deref() == left {
                    self.state.release_partition(p, now);
                }
                self.owners[p as usize] = owner;
            }
        }
        tracing::info!(group = %self.settings().name, members = members.len(), "ordered group rebalanced");
        self.bump_ready();
    }

    /// A delivery failed: schedule its redelivery after its delay (default: the
    /// group's backoff), or queue it for dead-lettering when its attempts are exhausted.
    /// `Ignored` when the delivery held no lease (already acked or rescheduled).
    fn fail(
        &mut self,
        id: AckId,
        now: i64,
        delay_ms: Option<i64>,
        reason: &str,
        consumer: &str,
        out: &mut AtomicWrite,
    ) -> std::result::Result<FailOutcome, AckError> {
        let settings = self.settings();
        let attempts = self.state.message(id.partition, id.offset).map_or(1, |m| m.attempts);
        let delay = delay_ms.unwrap_or_else(|| settings.backoff_ms(attempts, rand::random::<f64>()));
        let failure = Failure {
            partition: id.partition,
            offset: id.offset,
            attempt: id.attempt,
            now,
            delay_ms: delay,
            reason,
            consumer,
            max_attempts: settings.max_delivery_attempts,
        };
        let outcome = self.state.fail(failure, out)?;
        match &outcome {
            FailOutcome::DeadLetter => self.dead_letters.waiting.push((id.partition, id.offset, false)),
            FailOutcome::Scheduled(_) => {
                metrics::counter!(crate::metrics::GROUP_REDELIVERIES, "group" => settings.name.clone()).increment(1)
            }
            FailOutcome::Ignored => {}
        }
        Ok(outcome)
    }

    /// Settles a message retention removed before the group was done with it: it is gone.
    fn settle_expired(&mut self, p: u32, off: u64, out: &mut AtomicWrite) {
        let attempt = self.state.message(p, off).map_or(0, |m| m.attempts);
        let _ = self.state.ack(p, off, attempt, out);
    }

    fn partition_allowed(&self, consumer: &str, p: u32) -> bool {
        match self.owners.get(p as usize) {
            Some(Some(owner)) => owner == consumer,
            _ => false,
        }
    }

    /// Leases up to `max` messages: due redeliveries first, then fresh ones
    /// round-robin across partitions.
    /// A read error stops the pull: redeliveries taken but not leased go back
    /// to the due set, and what was leased before the error is delivered.
    async fn pull(&mut self, consumer: &str, max: usize, now: i64) -> Result<Pulled> {
        let settings = self.settings();
        let ordered = settings.mode == GroupMode::Ordered;
        if ordered && consumer.is_empty() {
            return Err(Error::invalid("consumer_id", "ordered groups need a consumer_id to assign partitions"));
        }
        self.touch(consumer, now);
        let deadline = now + i64::from(settings.ack_deadline_ms);
        let partitions = self.state.partitions();
        let mut out = AtomicWrite::new();
        let mut again: Vec<(u32, u64)> = Vec::new();
        if ordered {
            for p in 0..partitions {
                if self.partition_allowed(consumer, p) && again.len() < max {
                    let first_offset = self.state.take_due_in_order(p, now, max - again.len());
                    again.extend(first_offset.into_iter().map(|o| (p, o)));
                }
            }
        } else {
            again = self.state.take_due(now, max, |_| true);
        }
        let mut deliveries = Vec::with_capacity(max.min(1024));
        let mut failure = None;
        // Settled by the filters or held for later: not delivered, but the pull read past them.
        let mut filtered = 0u64;
        for (i, &(p, off)) in again.iter().enumerate() {
            let records = match self.read(p, off, off + 1).await {
                Ok(records) => records,
                Err(e) => {
                    for &(p, off) in &again[i..] {
                        self.state.return_due(p, off);
                    }
                    failure = Some(e);
                    break;
                }
            };
            match records.into_iter().next() {
                // Delivered before the group's filters changed: settled now.
                Some(record) if !self.passes(&settings, p, &record) => {
                    let attempt = self.state.lease_again(p, off, now, deadline, consumer, &mut out);
                    let _ = self.state.ack(p, off, attempt, &mut out);
                    metrics::counter!(crate::metrics::GROUP_FILTERED, "group" => settings.name.clone()).increment(1);
                }
                Some(record) => {
                    let attempt = self.state.lease_again(p, off, now, deadline, consumer, &mut out);
                    deliveries.push(Delivered {
                        ack_id: AckId { partition: p, offset: off, attempt },
                        record,
                        deadline_ms: deadline,
                    });
                }
                // Below the partition's start: retention removed it. Otherwise this
                // broker's replica has not caught up yet (a cluster): later.
                None if self.topic.partition(p).map(|h| off < h.earliest()).unwrap_or(false) => {
                    self.settle_expired(p, off, &mut out);
                    tracing::warn!(partition = p, offset = off, "message expired by retention before redelivery");
                }
                None => self.state.return_due(p, off),
            }
        }
        self.rotation = self.rotation.wrapping_add(1);
        for i in 0..partitions {
            if deliveries.len() >= max || failure.is_some() {
                break;
            }
            let p = (self.rotation.wrapping_add(i)) % partitions;
            if ordered && (!self.partition_allowed(consumer, p) || self.state.is_busy(p, now)) {
                continue;
            }
            let handle = self.topic.partition(p)?;
            let (mut next, outstanding) = self.state.fresh_position(p);
            if next < handle.earliest() {
                self.state.seek(p, handle.earliest(), &mut out);
                next = handle.earliest();
            }
            let room = MAX_OUTSTANDING_PER_PARTITION.saturating_sub(outstanding);
            let n = (handle.latest().saturating_sub(next)).min(room).min((max - deliveries.len()) as u64);
            if n == 0 {
                continue;
            }
            let records = match self.read_fresh(p, next, n, handle.latest()).await {
                Ok(records) => records,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            for record in records {
                if record.offset != self.state.fresh_position(p).0 {
                    break;
                }
                let due = crate::delivery_time::deliver_at(
                    record.headers.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
                    record.timestamp_ms,
                );
                let passes = self.passes(&settings, p, &record);
                if let Some(due) = due.filter(|due| *due > now && passes) {
                    // Delayed: held until due; in an ordered group, so is the rest of the partition.
                    self.state.defer_fresh(p, record.offset, due, &mut out);
                    filtered += 1;
                    if ordered {
                        break;
                    }
                    continue;
                }
                let attempt = self.state.lease_fresh(p, record.offset, now, deadline, consumer);
                if !passes {
                    let _ = self.state.ack(p, record.offset, attempt, &mut out);
                    filtered += 1;
                    metrics::counter!(crate::metrics::GROUP_FILTERED, "group" => settings.name.clone()).increment(1);
                    continue;
                }
                deliveries.push(Delivered {
                    ack_id: AckId { partition: p, offset: record.offset, attempt },
                    record,
                    deadline_ms: deadline,
                });
            }
        }
        self.state.flush_cursors(&mut out);
        metrics::counter!(crate::metrics::GROUP_DELIVERED_TOTAL).increment(deliveries.len() as u64);
        if filtered > 0 {
            // Passing them made room: a waiting pull looks again at once.
            if deliveries.len() < max {
                self.bump_ready();
            }
        }
        Ok(Pulled { deliveries, write: out, failure })
    }

    /// Whether `record` of partition `p` passes the group's filters.
    fn passes(&self, settings: &GroupConfig, p: u32, record: &StoredRecord) -> bool {
        settings.filters.is_empty()
            || super::filter::passes(&settings.filters, &crate::event::read_event(record, &settings.topic, p))
    }

    /// `n` records of partition `p` from `from` (fewer if the read stops
    /// early), reading ahead up to `latest` for the next pulls.
    async fn read_fresh(&mut self, p: u32, from: u64, n: u64, latest: u64) -> Result<Vec<StoredRecord>> {
        if let Some(kept) = self.read_ahead.take(p, from, n as usize) {
            return Ok(kept);
        }
        let until = latest.min(from + n.max(super::read_ahead::MAX_RECORDS));
        let range = OffsetRange::new(from, until);
        let handle = self.topic.partition(p)?;
        let mut read = handle.read(range, range.len() as usize, super::read_ahead::MAX_BYTES).await?;
        // Large records stopped the read short of what the pull asks for: the rest, unbounded as before.
        if let Some(last) = read.last().map(|r| r.offset).filter(|last| last + 1 < from + n) {
            read.extend(self.read(p, last + 1, from + n).await?);
        }
        Ok(self.read_ahead.keep(p, read, n as usize))
    }

    async fn read(&self, p: u32, from: u64, until: u64) -> Result<Vec<StoredRecord>> {
        let range = OffsetRange::new(from, until);
        self.topic.partition(p)?.read(range, range.len() as usize, usize::MAX).await
    }
}
