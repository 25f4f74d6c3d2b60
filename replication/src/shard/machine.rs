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
//! - Snapshots (`snapshot.rs`) are built from the applied point and
//!   installed in one write with the applied id; see that module.
//!
//! - A purge entry (`ShardCommand::Purge`) raises its partition's floor in
//!   the same write as the applied id (`HardState::PurgeFloors`), and the
//!   partition's visible start with it (`purge.rs`).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use sluice_storage::group::{clear_state, decode_changes};
use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::{AtomicWrite, PartitionId, Store, WriteRequest, WriterHandle};
use tokio::sync::watch;

use super::log::{ShardLog, Slot};
use super::snapshot::{
    decode_image, encode_image, group_images, meta_of, Copier, Image, PartitionMark, StoredSnapshot,
};
use super::{ShardCommand, ShardHost, ShardTypes};
use crate::codec::{io_error, Format, Postcard};

/// The last-applied entry and the membership it left.
type Applied = (Option<LogIdOf<ShardTypes>>, StoredMembershipOf<ShardTypes>);

/// A shard's state machine; cheap to clone.
#[derive(Clone)]
pub struct ShardMachine {
    group: GroupId,
    store: Arc<Store>,
    writer: WriterHandle,
    log: ShardLog,
    host: Arc<dyn ShardHost>,
    applied: Arc<Mutex<Applied>>,
    /// The last applied entry whose apply write (group changes, applied id) is in the store.
    stored: Arc<watch::Sender<Option<LogIdOf<ShardTypes>>>>,
    /// Consumer groups whose state goes through this shard (a snapshot carries theirs).
    groups: Arc<Mutex<BTreeSet<u64>>>,
    /// The last snapshot built or installed.
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Copies records from peers when a snapshot is installed.
    copier: Copier,
}

impl ShardMachine {
    /// Opens the applied state as stored, over the shard's `log`.
    pub(crate) fn open(
        store: Arc<Store>,
        writer: WriterHandle,
        group: GroupId,
        log: ShardLog,
        host: Arc<dyn ShardHost>,
        copier: Copier,
    ) -> io::Result<Self> {
        let applied = match store.raft_hard_state(group, HardState::Applied).map_err(io_error)? {
            Some(b) => Postcard::decode(&b, "shard applied state")?,
            None => (None, StoredMembershipOf::<ShardTypes>::default()),
        };
        let current: Option<StoredSnapshot> = store
            .raft_hard_state(group, HardState::Snapshot)
            .map_err(io_error)?
            .map(|b| Postcard::decode(&b, "shard snapshot"))
            .transpose()?;
        let mut groups = BTreeSet::new();
        if let Some(snapshot) = &current {
            let (image, _) = decode_image(&snapshot.data)?;
            groups.extend(image.groups.iter().map(|g| g.group));
        }
        groups.extend(log.group_ids()?);
        let stored = Arc::new(watch::Sender::new(applied.0));
        Ok(ShardMachine {
            group,
            store,
            writer,
            log,
            host,
            applied: Arc::new(Mutex::new(applied)),
            stored,
            groups: Arc::new(Mutex::new(groups)),
            current: Arc::new(Mutex::new(current)),
            copier,
        })
    }

    fn groups(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> MutexGuard<'_, Option<StoredSnapshot>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first stored offset and the committed watermark of `partition`
    /// here (zeros if this shard does not hold it).
    pub(crate) fn offsets_of(&self, partition: PartitionId) -> (u64, u64) {
        let start = self.log.with_partition(partition, |log| log.log_start()).unwrap_or(0);
        let end = self.watermarks().into_iter().find(|(id, _)| *id == partition).map_or(0, |(_, end)| end);
        (start, end)
    }

    /// What a purge of `partition` at this leader removes: from its visible
    /// start up to its committed watermark (zeros if this shard does not hold it).
    pub(crate) fn purge_bounds(&self, partition: PartitionId) -> (u64, u64) {
        let start = self.log.visible_start(partition).unwrap_or(0);
        let end = self.watermarks().into_iter().find(|(id, _)| *id == partition).map_or(0, |(_, end)| end);
        (start, end)
    }

    /// The store the shard's records are in.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The shard's state at the applied entry, as a snapshot: taken between
    /// applies (on the state machine's task), once that entry's apply write
    /// is in the store.
    async fn image(&self) -> io::Result<StoredSnapshot> {
        let applied = self.applied().clone();
        let mut stored = self.stored.subscribe();
        // The sender lives as long as this machine: `wait_for` ends only by the condition.
        let _ = stored.wait_for(|s| *s >= applied.0).await;
        let ends: HashMap<PartitionId, u64> = self.watermarks().into_iter().collect();
        let partitions = {
            let inner = self.log.inner();
            inner
                .partitions
                .iter()
                .map(|(id, log)| PartitionMark {
                    topic: id.topic.0,
                    partition: id.index,
                    end: ends.get(id).copied().unwrap_or_else(|| log.next_offset()),
                })
                .collect()
        };
        let groups = self.groups().clone();
        let store = self.store.clone();
        let groups =
            tokio::task::spawn_blocking(move || group_images(&store, &groups)).await.map_err(io::Error::other)??;
        let image = Image { source: self.copier.node, partitions, groups };
        Ok(StoredSnapshot { meta: meta_of(&applied), data: encode_image(&image, &self.log.floors())? })
    }

    /// Copies the committed records of `mark` this replica lacks from a peer.
    async fn copy_partition(&self, source: u64, mark: &PartitionMark) -> io::Result<()> {
        let id = mark.id();
        loop {
            let Some(next) = self.log.next_offset_of(id) else {
                return Ok(()); // its topic was deleted here since the snapshot was taken
            };
            if next >= mark.end {
                return Ok(());
            }
            let floor = self.log.floor_of(id);
            if next < floor {
                // Purged everywhere: nothing below the floor is copied.
                self.log.restart_partition(id, floor.min(mark.end)).await?;
                continue;
            }
            let copied = self.copier.read(source, id, next, mark.end).await?;
            if copied.batches.is_empty() {
                // Retention removed them everywhere: continue where the peers' records begin.
                tracing::info!(
                    shard = self.group.0,
                    topic_id = id.topic.0,
                    partition = id.index,
                    from = next,
                    to = copied.start,
                    "records this replica lacks were removed by retention; it starts where its peers' records begin"
                );
                self.log.restart_partition(id, copied.start.min(mark.end)).await?;
                continue;
            }
            let batches: Vec<Vec<u8>> = copied.batches.into_iter().map(|b| b.into_vec()).collect();
            self.log.copy_batches(id, &batches).await?;
        }
    }

    /// Installs `snapshot` (see `snapshot.rs`, `# Correctness`).
    async fn install(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let (image, floors) = decode_image(&snapshot.data)?;
        let Some(last) = snapshot.meta.last_log_id else {
            return Err(io::Error::other("a shard snapshot without a last entry"));
        };
        let holds_last = self.log.log_id_at(last.index)? == Some(last);
        if !holds_last {
            // What this replica appended above its applied entry may be a deposed leader's.
            let applied = self.applied().0;
            let mut log = self.log.clone();
            openraft::storage::RaftLogStorage::truncate_after(&mut log, applied).await?;
        }
        let started = Instant::now();
        // Where each partition to copy into ends now, durably first: copied
        // records are not in this replica's log, so if a crash stops the
        // install before its last write they must go (`undo_interrupted_install`),
        // or entries appended later would land after them, at the wrong offsets.
        let ends: Vec<(u64, u32, u64)> = image
            .partitions
            .iter()
            .filter_map(|mark| {
                let next = self.log.next_offset_of(mark.id())?;
                (next < mark.end).then_some((mark.topic, mark.partition, next))
            })
            .collect();
        if !ends.is_empty() {
            let mut marker = AtomicWrite::new();
            keys::put_hard_state(&mut marker, self.group, HardState::Installing, Postcard::encode(&ends)?);
            self.log.write_durably(marker).await?;
        }
        // Raised before copying (nothing below a floor is copied) and stored
        // with the install; a crash before then applies the purges again.
        self.log.raise_floors(&floors);
        for (topic, index, floor) in &floors {
            self.host.log_started(PartitionId::new(sluice_storage::TopicId(*topic), *index), *floor);
        }
        for mark in &image.partitions {
            self.copy_partition(image.source, mark).await?;
        }
        let mut write = AtomicWrite::new();
        keys::delete_hard_state(&mut write, self.group, HardState::Installing);
        keys::put_hard_state(&mut write, self.group, HardState::PurgeFloors, Postcard::encode(&self.log.floors())?);
        let theirs: BTreeSet<u64> = image.groups.iter().map(|g| g.group).collect();
        for group in self.groups().difference(&theirs) {
            write.extend(clear_state(*group));
        }
        for g in &image.groups {
            let Some(changes) = decode_changes(&g.state) else {
                return Err(io::Error::other(format!(
                    "shard snapshot: undecodable state of consumer group {}",
                    g.group
                )));
            };
            write.extend(changes);
        }
        let applied = (Some(last), snapshot.meta.last_membership.clone());
        keys::put_hard_state(&mut write, self.group, HardState::Applied, Postcard::encode(&applied)?);
        keys::put_hard_state(&mut write, self.group, HardState::Snapshot, Postcard::encode(&snapshot)?);
        self.log.write_durably(write).await?;
        *self.applied() = applied;
        *self.groups() = theirs;
        *self.current() = Some(snapshot);
        self.stored.send_replace(Some(last));
        for mark in &image.partitions {
            self.host.committed(mark.id(), mark.end);
        }
        tracing::info!(
            shard = self.group.0,
            index = last.index,
            source = image.source,
            partitions = image.partitions.len(),
            groups = image.groups.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "shard snapshot installed"
        );
        Ok(())
    }

    /// Undoes the copies of a snapshot install that a crash interrupted
    /// (see `install`): each partition it was copying into goes back to where
    /// it ended before. Runs at start, before Raft does; openraft then sends
    /// the snapshot again, or the entries, as to any replica behind.
    pub(crate) async fn undo_interrupted_install(&self) -> io::Result<()> {
        let Some(bytes) = self.store.raft_hard_state(self.group, HardState::Installing).map_err(io_error)? else {
            return Ok(());
        };
        let ends: Vec<(u64, u32, u64)> = Postcard::decode(&bytes, "interrupted install marker")?;
        let ends: Vec<(PartitionId, u64)> = ends
            .into_iter()
            .map(|(topic, index, end)| (PartitionId::new(sluice_storage::TopicId(topic), index), end))
            .collect();
        tracing::warn!(shard = self.group.0, partitions = ends.len(), "undoing a snapshot install a crash interrupted");
        self.log.undo_copies(&ends).await
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

/// Builds a snapshot from the image taken when the builder was made.
pub struct ShardSnapshotBuilder {
    image: Result<StoredSnapshot, io::Error>,
    machine: ShardMachine,
}

impl RaftSnapshotBuilder<ShardTypes> for ShardSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardTypes, Vec<u8>>, io::Error> {
        let snapshot = std::mem::replace(&mut self.image, Err(io::Error::other("snapshot already built")))?;
        let mut write = AtomicWrite::new();
        keys::put_hard_state(&mut write, self.machine.group, HardState::Snapshot, Postcard::encode(&snapshot)?);
        self.machine.log.write_durably(write).await?;
        tracing::debug!(
            shard = self.machine.group.0,
            index = snapshot.last_index(),
            bytes = snapshot.data.len(),
            "shard snapshot built"
        );
        let built = SnapshotOf::<ShardTypes, Vec<u8>> { meta: snapshot.meta.clone(), snapshot: snapshot.data.clone() };
        *self.machine.current() = Some(snapshot);
        Ok(built)
    }
}

impl RaftStateMachine<ShardTypes> for ShardMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<Applied, io::Error> {
        Ok(self.applied().clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<ShardTypes>, io::Error>> + Unpin + OptionalSend,
    {
        let mut replies = Vec::new();
        let mut write = AtomicWrite::new();
        let mut floors_raised = false;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            if let EntryPayload::Normal(ShardCommand::Purge { topic, partition, below }) = &entry.payload {
                if self.log.raise_floors(&[(*topic, *partition, *below)]) {
                    floors_raised = true;
                    self.host.log_started(PartitionId::new(sluice_storage::TopicId(*topic), *partition), *below);
                }
            }
            if let EntryPayload::Normal(ShardCommand::Group(change)) = &entry.payload {
                self.groups().insert(change.group);
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
        if floors_raised {
            keys::put_hard_state(&mut write, self.group, HardState::PurgeFloors, Postcard::encode(&self.log.floors())?);
        }
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
        ShardSnapshotBuilder { image: self.image().await, machine: self.clone() }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<ShardTypes>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let result = self.install(StoredSnapshot { meta: meta.clone(), data: snapshot }).await;
        if let Err(e) = &result {
            tracing::error!(shard = self.group.0, error = %e, "installing a shard snapshot failed; this broker's replica of the shard stops (restart the broker)");
        }
        result
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<ShardTypes, Vec<u8>>>, io::Error> {
        Ok(self.current().clone().map(|s| SnapshotOf::<ShardTypes, Vec<u8>> { meta: s.meta, snapshot: s.data }))
    }
}
