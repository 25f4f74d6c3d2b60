//! A shard's state machine. Appending already stored every batch (see
//! `log.rs`); applying a committed entry makes it visible: it raises the
//! partition's committed watermark through [`ShardHost::committed`] and
//! answers the proposer with the offsets every replica assigned.
//!
//! # Correctness
//! - Nothing uncommitted is ever readable: the watermark moves only here,
//!   and openraft applies only committed entries, in log order.
//! - An entry is applied only once its own append has been written on this
//!   broker (a follower may learn an entry is committed before its local
//!   write lands), so a reader never finds a hole below the watermark.
//! - The last applied id is written after the entries it covers (through the
//!   same ordered writer, without waiting for an fsync): after a crash,
//!   openraft applies again from there, and applying twice only raises a
//!   watermark to where it already was.
//!
//! - A consumer group's state changes (`ShardCommand::Group`) are written
//!   when their entry applies, in the same write as the applied id, on every
//!   replica; [`ShardMachine::stored`] tells when that write is in, so a
//!   broker that takes the shard over reads the groups' state only once
//!   everything committed before its term is there.
//!
//! Snapshots are not built yet (step 5 of `docs/REPLICATION.md`): shard
//! logs are never purged, so no follower needs one.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use sluice_storage::group::decode_changes;
use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::{AtomicWrite, PartitionId, Store, WriteRequest, WriterHandle};
use tokio::sync::watch;

use super::log::{ShardLog, Slot};
use super::{ShardCommand, ShardHost, ShardTypes};
use crate::codec::{io_error, Format, Postcard};

/// The last-applied entry and the membership it left.
type Applied = (Option<LogIdOf<ShardTypes>>, StoredMembershipOf<ShardTypes>);

/// A shard's state machine; cheap to clone.
#[derive(Clone)]
pub struct ShardMachine {
    group: GroupId,
    writer: WriterHandle,
    log: ShardLog,
    host: Arc<dyn ShardHost>,
    applied: Arc<Mutex<Applied>>,
    /// The last applied entry whose apply write (group changes, applied id) is in the store.
    stored: Arc<watch::Sender<Option<LogIdOf<ShardTypes>>>>,
}

impl ShardMachine {
    /// Opens the applied state as stored, over the shard's `log`.
    pub fn open(
        store: &Store,
        writer: WriterHandle,
        group: GroupId,
        log: ShardLog,
        host: Arc<dyn ShardHost>,
    ) -> io::Result<Self> {
        let applied = match store.raft_hard_state(group, HardState::Applied).map_err(io_error)? {
            Some(b) => Postcard::decode(&b, "shard applied state")?,
            None => (None, StoredMembershipOf::<ShardTypes>::default()),
        };
        let stored = Arc::new(watch::Sender::new(applied.0));
        Ok(ShardMachine { group, writer, log, host, applied: Arc::new(Mutex::new(applied)), stored })
    }

    /// The last applied entry whose writes are in the store (readable now).
    pub(crate) fn stored(&self) -> watch::Receiver<Option<LogIdOf<ShardTypes>>> {
        self.stored.subscribe()
    }

    fn applied(&self) -> MutexGuard<'_, Applied> {
        // Replaced whole under the lock.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each partition's committed watermark as of the last applied entry:
    /// where readers stop until openraft applies the rest. A partition's
    /// batches above the applied index are not committed as far as this
    /// broker knows, so its watermark is the first of them.
    pub fn watermarks(&self) -> Vec<(PartitionId, u64)> {
        let applied = self.applied().0.map_or(0, |id| id.index);
        let inner = self.log.inner();
        let mut marks: HashMap<PartitionId, u64> =
            inner.partitions.iter().map(|(id, log)| (*id, log.next_offset())).collect();
        for slot in inner.slots.range(applied.saturating_add(1)..).map(|(_, s)| s) {
            if let Slot::Batch { partition, base_offset, .. } = slot {
                let id = PartitionId::new(sluice_storage::TopicId(partition.0), partition.1);
                if let Some(mark) = marks.get_mut(&id) {
                    *mark = (*mark).min(*base_offset);
                }
            }
        }
        marks.into_iter().collect()
    }
}

/// Never used while snapshots are off (see the module docs).
pub struct NoSnapshots;

impl RaftSnapshotBuilder<ShardTypes> for NoSnapshots {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardTypes, Vec<u8>>, io::Error> {
        Err(io::Error::other("shard snapshots are not built yet (docs/REPLICATION.md, step 5)"))
    }
}

impl RaftStateMachine<ShardTypes> for ShardMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(&mut self) -> Result<Applied, io::Error> {
        Ok(self.applied().clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<ShardTypes>, io::Error>> + Unpin + OptionalSend,
    {
        let mut replies = Vec::new();
        let mut write = AtomicWrite::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            if let EntryPayload::Normal(ShardCommand::Group(change)) = &entry.payload {
                match decode_changes(&change.changes) {
                    Some(changes) => write.extend(changes),
                    // Every replica decodes the same bytes alike: skipping keeps them equal.
                    None => tracing::error!(
                        shard = self.group.0,
                        index = log_id.index,
                        group = change.group,
                        "undecodable consumer-group changes in the shard log; skipped"
                    ),
                }
            }
            self.log.written(log_id.index).await;
            let outcome = self.log.inner().slots.get(&log_id.index).map(Slot::outcome);
            let Some((response, raised)) = outcome else {
                return Err(io::Error::other(format!("shard log entry {} is missing at apply", log_id.index)));
            };
            if let Some((partition, end)) = raised {
                self.host.committed(partition, end);
            }
            {
                let mut applied = self.applied();
                if let Some(membership) = entry.get_membership() {
                    applied.1 = StoredMembershipOf::<ShardTypes>::new(Some(log_id), membership);
                }
                applied.0 = Some(log_id);
            }
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        let applied = self.applied().0;
        keys::put_hard_state(&mut write, self.group, HardState::Applied, Postcard::encode(&*self.applied())?);
        let stored = self.stored.clone();
        let on_commit = Box::new(move |r: sluice_storage::Result<()>| {
            if r.is_ok() {
                stored.send_replace(applied);
            }
        });
        let request = WriteRequest { write, sync: false, on_commit };
        self.writer.submit(request).await.map_err(io_error)?;
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<ShardTypes>,
        _snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        Err(io::Error::other("shard snapshots are not installed yet (docs/REPLICATION.md, step 5)"))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<ShardTypes, Vec<u8>>>, io::Error> {
        Ok(None)
    }
}
