//! Where a group actor's state changes go: this broker's store (a single
//! broker), or the group's shard log (a cluster: the actor runs on the
//! shard's leader, and every replica applies the changes).
//!
//! # Correctness
//! Both keep the actor's order: the writer commits in submission order, and
//! shard proposals are handed to Raft in the order they are made, under the
//! lease the actor started with, so what the actor decided later never lands
//! before what it decided earlier. A shard proposal that fails means the
//! lease is gone (another broker leads, or no quorum answers): the actor's
//! memory may then be ahead of the replicated state, so it stops (`lost`)
//! and the group starts again from what is stored, wherever it leads next.

use std::sync::Arc;

use sluice_replication::{GroupChange, ShardCommand, ShardLease, ShardNode, ShardProposeError};
use sluice_storage::group::encode_changes;
use sluice_storage::{AtomicWrite, WriteRequest, WriterHandle};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::partition::ReplicatedPartitions;

/// The group's shard, under the lease this broker holds on it.
pub(super) struct ShardWrites {
    /// The shard.
    pub node: Arc<ShardNode>,
    /// The term the actor's state was loaded in.
    pub lease: ShardLease,
    /// The group's id.
    pub group: u64,
    /// The group's name (for errors).
    pub name: String,
    /// Cancelled when a proposal fails: the actor must stop.
    pub lost: CancellationToken,
    /// Names leaders' endpoints.
    pub replicated: Arc<ReplicatedPartitions>,
    /// Runs the tasks that wait for commits.
    pub tracker: TaskTracker,
}

/// Where the actor's state changes go.
pub(super) enum Persistence {
    /// This broker's writer.
    Local(WriterHandle),
    /// The group's shard.
    Shard(ShardWrites),
}

/// What a client is told when the group's change did not commit.
fn shard_error(replicated: &ReplicatedPartitions, group: &str, e: ShardProposeError) -> Error {
    match e {
        ShardProposeError::NotLeader { leader, term } => {
            replicated.not_leader(format!("group `{group}`"), leader, term)
        }
        ShardProposeError::Unavailable(why) => Error::ClusterUnavailable(why),
    }
}

impl ShardWrites {
    /// Hands `write` to the shard; `then` gets the outcome once it is committed.
    async fn propose(&self, write: AtomicWrite, then: impl FnOnce(Result<()>) + Send + 'static) {
        let changes = match encode_changes(&write) {
            Ok(c) => c,
            Err(why) => {
                // A bug (the actor only builds group-state changes): refuse, keep serving.
                tracing::error!(group = %self.name, %why, "a group change the shard log cannot carry");
                then(Err(Error::ClusterUnavailable(format!("group change not replicable: {why}"))));
                return;
            }
        };
        let command = ShardCommand::Group(GroupChange { group: self.group, changes });
        match self.node.submit(&self.lease, command).await {
            Ok(pending) => {
                let lost = self.lost.clone();
                let (replicated, name) = (self.replicated.clone(), self.name.clone());
                self.tracker.spawn(async move {
                    let outcome = pending.await.map(|_| ()).map_err(|e| {
                        lost.cancel();
                        shard_error(&replicated, &name, e)
                    });
                    then(outcome);
                });
            }
            Err(e) => {
                self.lost.cancel();
                then(Err(shard_error(&self.replicated, &self.name, e)))
            }
        }
    }
}

impl Persistence {
    /// Commits `write` (durably on this broker, or replicated in a cluster)
    /// after everything handed over before it; `then` gets the outcome.
    async fn commit(&self, write: AtomicWrite, then: impl FnOnce(Result<()>) + Send + 'static) {
        match self {
            Persistence::Local(writer) => {
                let on_commit = Box::new(move |r: sluice_storage::Result<()>| then(r.map_err(Error::from)));
                if let Err(e) = writer.submit(WriteRequest { write, sync: true, on_commit }).await {
                    tracing::error!(error = %e, "writer stopped while committing group state");
                }
            }
            Persistence::Shard(shard) => shard.propose(write, then).await,
        }
    }

    /// Answers `reply` with `value` once `write` is durable (replicated, in a
    /// cluster); at once if there is nothing to write.
    pub(super) async fn reply_after_commit<T: Send + 'static>(
        &self,
        write: AtomicWrite,
        reply: oneshot::Sender<Result<T>>,
        value: T,
    ) {
        if write.is_empty() {
            let _ = reply.send(Ok(value));
            return;
        }
        self.commit(write, move |r| {
            let _ = reply.send(r.map(|()| value));
        })
        .await
    }

    /// Commits `write` without waiting: what the actor decides next is
    /// committed after it. A failure poisons the store (a single broker) or
    /// ends the actor's lease (a cluster: the group restarts from what is
    /// replicated).
    pub(super) async fn persist(&self, write: AtomicWrite) {
        if write.is_empty() {
            return;
        }
        self.commit(write, |r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "persisting group state failed");
            }
        })
        .await
    }

    /// Resolves when the actor must stop because its lease is gone (never, on a single broker).
    pub(super) async fn lost(&self) {
        match self {
            Persistence::Local(_) => std::future::pending().await,
            Persistence::Shard(shard) => shard.lost.cancelled().await,
        }
    }
}
