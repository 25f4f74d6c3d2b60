//! A consumer group in a cluster (step 4 of `docs/REPLICATION.md`): its
//! state is replicated through its shard's Raft log, and its actor runs only
//! on the broker that leads the shard.
//!
//! Every broker runs this task for every group. While the broker does not
//! lead the group's shard it answers Pull, Ack, Nack, Extend and Seek with
//! `not_leader` (the leader's endpoint and epoch, for the client to go
//! there) and figures from the state its replica has stored. Once it leads,
//! and every entry its log held when it became leader is applied and stored
//! here ([`ShardNode::lease`]), it loads the group's state from its store and
//! runs the actor, whose changes go through the shard log
//! ([`Persistence::Shard`]). When the lease ends the actor stops and the task
//! goes back to answering with the new leader.
//!
//! # Correctness
//! - An ack, nack or pull is answered only once its change is committed on a
//!   majority of the shard's replicas: a new leader's stored state has it.
//! - Leases are not replicated: a new leader counts every lease of the old
//!   one as expired (the messages are due at once), exactly as a restarted
//!   single broker does. Scheduled redeliveries keep their times.
//! - A group that has never run anywhere (no stored cursors) is started by
//!   the first leader: it computes where each partition starts (the
//!   catalog's `start`, over its replica's committed records) and commits
//!   that before serving.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_replication::{GroupChange, ShardCommand, ShardLease, ShardNode};
use sluice_storage::group::encode_changes;
use sluice_storage::{now_ms, AtomicWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::actor::{Command, DeadLetterQueue, GroupActor, GroupSnapshot};
use super::config::GroupConfig;
use super::persistence::{Persistence, ShardWrites};
use super::registry::{GroupContext, StartAt};
use super::state::GroupState;
use crate::error::{Error, Result};
use crate::partition::ReplicatedPartitions;
use crate::topic::Topic;

/// How often a follower looks at its shard's leadership even without a change.
const LEADERSHIP_POLL: Duration = Duration::from_secs(1);

/// Everything the group's task needs.
pub(super) struct ReplicatedGroup {
    pub name: String,
    pub settings: Arc<RwLock<GroupConfig>>,
    pub topic: Arc<Topic>,
    pub ctx: GroupContext,
    pub ready: Arc<watch::Sender<u64>>,
    pub replicated: Arc<ReplicatedPartitions>,
    /// The group's own queue, for its dead-lettering tasks' reports.
    pub queue: mpsc::WeakSender<Command>,
    /// One dead-lettering task at a time across the group's actors here.
    pub dead_lettering: Arc<tokio::sync::Mutex<()>>,
    /// Where a group that has never run starts reading (`None`: as the catalog says).
    pub start: Option<StartAt>,
}

impl ReplicatedGroup {
    fn id(&self) -> u64 {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).id
    }

    fn shard(&self) -> Result<Arc<ShardNode>> {
        self.replicated.group_shard(self.id())
    }

    /// Serves the group until `stop`: answers as a follower, runs the actor while leading.
    pub(super) async fn serve(self, mut rx: mpsc::Receiver<Command>, stop: CancellationToken) {
        let shard = loop {
            match self.shard() {
                Ok(shard) => break shard,
                Err(e @ Error::NotLeader { .. }) => {
                    tracing::debug!(group = %self.name, error = %e, "group placed on other brokers: redirecting its clients");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        held = self.redirect(&mut rx) => if !held { return },
                    }
                    tracing::info!(group = %self.name, "this broker took a replica of the group's shard over");
                }
                Err(e) => {
                    tracing::error!(group = %self.name, error = %e, "group has no shard here; not served");
                    return;
                }
            }
        };
        // Counts this broker's actors of the group: a lease can end and the group
        // be taken over again within one term, so the term cannot tell them apart.
        let mut generation = 0;
        loop {
            let lease = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                lease = self.follow(&shard, &mut rx) => match lease {
                    Some(lease) => lease,
                    None => return,
                },
            };
            let term = stop.child_token();
            generation += 1;
            let actor = match self.take_over(&shard, &lease, &term, generation).await {
                Ok(actor) => actor,
                Err(e) => {
                    tracing::warn!(group = %self.name, error = %e, "could not take the group over; following again");
                    term.cancel();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tracing::info!(group = %self.name, term = lease.term, "serving the group here (this broker leads its shard)");
            let watcher = tokio::spawn(watch_lease(shard.clone(), lease.clone(), term.clone()));
            actor.run(&mut rx, term.clone()).await;
            term.cancel();
            let _ = watcher.await;
            if stop.is_cancelled() {
                return;
            }
            tracing::info!(group = %self.name, term = lease.term, "no longer serving the group here");
        }
    }

    /// Answers every request with the leader to go to until this broker
    /// leads the shard and has stored every entry that was in its log when
    /// it became leader; `None` when the queue closed.
    async fn follow(&self, shard: &ShardNode, rx: &mut mpsc::Receiver<Command>) -> Option<ShardLease> {
        let mut taking_over: Option<(ShardLease, u64)> = None;
        let mut leadership = shard.leadership();
        loop {
            let now = shard.lease();
            taking_over = match (taking_over, now) {
                // The same lease: keep the log end it started from.
                (Some(t), Some((lease, _))) if t.0 == lease => Some(t),
                (_, now) => now,
            };
            if let Some((lease, end)) = &taking_over {
                if shard.stored_index() >= *end {
                    return Some(lease.clone());
                }
            }
            let end = taking_over.as_ref().map(|(_, end)| *end);
            tokio::select! {
                cmd = rx.recv() => self.answer_elsewhere(shard, cmd?, taking_over.is_some()),
                _ = leadership.changed(LEADERSHIP_POLL) => {}
                _ = shard.stored_reached(end.unwrap_or(0), LEADERSHIP_POLL), if end.is_some() => {}
            }
        }
    }

    /// Answers every request of a group whose shard this broker holds no
    /// replica of (its topic is placed on other brokers) with where its
    /// shard's leader is, as the catalog last recorded it; until this broker
    /// holds a replica (it took a lost broker's over: `true`) or the queue
    /// closes (`false`).
    async fn redirect(&self, rx: &mut mpsc::Receiver<Command>) -> bool {
        // Subscribed before the check: a shard added after the caller found
        // none, and before this subscription, is not missed.
        let mut added = self.replicated.shards_added();
        loop {
            if self.shard().is_ok() {
                return true;
            }
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return false };
                    let elsewhere = || match self.shard() {
                        Err(e) => e,
                        Ok(_) => Error::ClusterUnavailable(format!("group `{}` is moving to this broker; retry", self.name)),
                    };
                    self.answer_with(cmd, elsewhere);
                }
                changed = added.changed() => if changed.is_err() { return false },
            }
        }
    }

    /// Answers `cmd` while the group is not served here: with the leader to
    /// go to, or (`taking_over`: this broker leads, and is applying what it
    /// committed before) with a retry.
    fn answer_elsewhere(&self, shard: &ShardNode, cmd: Command, taking_over: bool) {
        let not_leader = || {
            if taking_over {
                return Error::ClusterUnavailable(format!(
                    "this broker is taking group `{}` over (applying what was committed before); retry",
                    self.name
                ));
            }
            let (leader, term) = shard.leader();
            self.replicated.not_leader(format!("group `{}`", self.name), leader, term)
        };
        self.answer_with(cmd, not_leader);
    }

    /// Answers `cmd` with `error()` (a snapshot from what is stored here).
    fn answer_with(&self, cmd: Command, not_leader: impl Fn() -> Error) {
        match cmd {
            Command::Pull { reply, .. } => drop(reply.send(Err(not_leader()))),
            Command::Ack { reply, .. } | Command::Nack { reply, .. } | Command::Extend { reply, .. } => {
                drop(reply.send(Err(not_leader())))
            }
            Command::Seek { reply, .. } => drop(reply.send(Err(not_leader()))),
            Command::Snapshot { reply } => drop(reply.send(self.stored_snapshot())),
            Command::Leave { .. } | Command::DeadLettered(..) => {}
        }
    }

    /// The group's figures from what this replica has stored (leases are
    /// only known where the group runs).
    fn stored_snapshot(&self) -> GroupSnapshot {
        match self.load() {
            Ok(state) => GroupSnapshot {
                partitions: (0..state.partitions()).map(|p| state.stats(p)).collect(),
                owners: vec![None; state.partitions() as usize],
                members: Vec::new(),
            },
            Err(e) => {
                tracing::warn!(group = %self.name, error = %e, "reading the group's stored state");
                GroupSnapshot::default()
            }
        }
    }

    fn load(&self) -> Result<GroupState> {
        let stored = self.replicated.store().group_state(self.id())?;
        Ok(GroupState::recover(self.id(), self.topic.partitions.len() as u32, stored, now_ms()))
    }

    /// Loads the group's state (starting it if it never ran) and makes the
    /// actor that serves it under `lease` until `term` ends.
    async fn take_over(
        &self,
        shard: &Arc<ShardNode>,
        lease: &ShardLease,
        term: &CancellationToken,
        generation: u64,
    ) -> Result<GroupActor> {
        let id = self.id();
        let stored = self.replicated.store().group_state(id)?;
        let now = now_ms();
        let mut state = if stored.cursors.is_empty() {
            let state = self.first_start().await?;
            let mut write = AtomicWrite::new();
            let mut state = state;
            state.flush_cursors(&mut write);
            let changes = encode_changes(&write).map_err(Error::ClusterUnavailable)?;
            let pending = shard
                .submit(lease, ShardCommand::Group(GroupChange { group: id, changes }))
                .await
                .map_err(|e| Error::ClusterUnavailable(e.to_string()))?;
            pending.await.map_err(|e| Error::ClusterUnavailable(e.to_string()))?;
            tracing::info!(group = %self.name, "group started by its first leader");
            state
        } else {
            GroupState::recover(id, self.topic.partitions.len() as u32, stored, now)
        };
        let recovered_dead_letters = state.take_recovered_dead_letters();
        let persistence = Persistence::Shard(ShardWrites {
            node: shard.clone(),
            lease: lease.clone(),
            group: id,
            name: self.name.clone(),
            lost: term.clone(),
            replicated: self.replicated.clone(),
            tracker: self.ctx.tracker.clone(),
        });
        self.ready.send_modify(|g| *g += 1);
        Ok(GroupActor {
            state,
            settings: self.settings.clone(),
            topic: self.topic.clone(),
            ctx: self.ctx.clone(),
            ready: self.ready.clone(),
            members: BTreeMap::new(),
            owners: vec![None; self.topic.partitions.len()],
            rotation: 0,
            dead_letters: DeadLetterQueue::new(
                self.queue.clone(),
                recovered_dead_letters,
                generation,
                self.dead_lettering.clone(),
            ),
            persistence,
            read_ahead: Default::default(),
        })
    }

    /// Where each partition starts for a group that never ran, over this
    /// replica's committed records.
    async fn first_start(&self) -> Result<GroupState> {
        let start = self
            .start
            .or_else(|| super::cluster::catalog_start(self.replicated.meta(), &self.name))
            .unwrap_or(StartAt::Earliest);
        let mut starts = Vec::with_capacity(self.topic.partitions.len());
        for p in &self.topic.partitions {
            starts.push(match start {
                StartAt::Earliest => p.earliest(),
                StartAt::Latest => p.latest(),
                StartAt::Timestamp(ts) => p.offset_for_timestamp(ts).await?,
            });
        }
        Ok(GroupState::new(self.id(), &starts))
    }
}

/// Ends `term` once `lease` is no longer this broker's lease on `shard`.
async fn watch_lease(shard: Arc<ShardNode>, lease: ShardLease, term: CancellationToken) {
    let mut leadership = shard.leadership();
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = leadership.changed(LEADERSHIP_POLL) => {}
        }
        if shard.lease().map(|(current, _)| current).as_ref() != Some(&lease) {
            term.cancel();
            return;
        }
    }
}
