//! A shard's Raft log over its partitions' logs: each byte written once.
//!
//! An entry that carries a batch is appended to its partition
//! (`PartitionLog::append_encoded`: the batch under the partition's record
//! key, its segment entry and producer state) and indexed by a small slot in
//! the `raft` column family (`group · index → Slot::Batch`), all in one
//! `AtomicWrite`. Every other entry (election blanks, membership, a batch
//! that was a duplicate or out of sequence) is kept whole in its slot. Reading
//! the log back rebuilds a batch entry from its stored batch.
//!
//! # Correctness (openraft's `RaftLogStorage` contract, and the partitions')
//! - **Same offsets on every replica.** Offsets, timestamps and segment rolls
//!   are computed at append from the partition's tail and the proposer's
//!   timestamp; Raft's log matching gives every replica the same entries in
//!   the same order after the same truncations, so they agree. The
//!   idempotent-producer check also runs here, against replicated state, so a
//!   duplicate is a duplicate on every replica.
//! - **Durable before `IOFlushed`.** `append` returns once the entries are in
//!   memory (slots) and their write is queued on the broker's writer; the
//!   callback fires from the writer's commit (shared group commit and fsync).
//!   Appends whose partitions are all under `interval` durability are written
//!   without an fsync, as a single broker does; anything else is fsynced.
//! - **Truncation rewinds partitions.** `truncate_after` waits for every
//!   queued write, then rewinds each partition to the first batch it takes
//!   back and deletes the slots, in one atomic write; readers never saw those
//!   records (the committed watermark only moves on apply).
//! - **Purge removes slots only.** Records stay for consumers until retention
//!   removes them. (A replicated *partition* purge, `ShardCommand::Purge`, is
//!   another thing: it raises the partition's floor, `Inner::floors`, when
//!   it applies, and `trim` removes the whole segments below it once no
//!   entry points at them.)
//! - A batch whose partition was deleted (topic deleted) reads back as
//!   `ShardCommand::Dropped`, which changes nothing where it is appended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};
use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::record::split_batch;
use sluice_storage::{
    now_ms, Append, AtomicWrite, Durability, Error as StorageError, PartitionId, PartitionLog, PartitionReader, Store,
    WriteRequest, WriterHandle,
};
use tokio::sync::watch;

use super::{BatchCommand, ShardCommand, ShardHost, ShardResponse, ShardTypes};
use crate::codec::{io_error, Format, Postcard};

/// What the `raft` family holds for one log index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// A batch stored in its partition at `base_offset`.
    Batch {
        /// The entry's id.
        log_id: LogIdOf<ShardTypes>,
        /// Topic id and partition index.
        partition: (u64, u32),
        /// Where the batch starts.
        base_offset: u64,
        /// Records in it.
        count: u32,
        /// The proposer's timestamp (the stored batch may carry a later one).
        proposed_ms: i64,
    },
    /// Any other entry, whole, with what appending it decided (for a batch
    /// that was a duplicate or refused).
    Kept {
        /// The entry, encoded.
        #[serde(with = "serde_bytes")]
        entry: Vec<u8>,
        /// The answer decided at append, if it was a batch.
        outcome: Option<ShardResponse>,
    },
}

impl Slot {
    fn log_id(&self) -> io::Result<LogIdOf<ShardTypes>> {
        match self {
            Slot::Batch { log_id, .. } => Ok(*log_id),
            Slot::Kept { entry, .. } => Ok(Postcard::decode::<EntryOf<ShardTypes>>(entry, "shard log entry")?.log_id()),
        }
    }

    /// The answer a committed entry gives, and the watermark it raises.
    pub(crate) fn outcome(&self) -> (ShardResponse, Option<(PartitionId, u64)>) {
        match self {
            Slot::Batch { partition, base_offset, count, .. } => (
                ShardResponse::Appended { base_offset: *base_offset, count: *count, duplicate: false },
                Some((partition_id(*partition), base_offset + u64::from(*count))),
            ),
            Slot::Kept { outcome, .. } => (outcome.clone().unwrap_or(ShardResponse::Done), None),
        }
    }
}

fn partition_id((topic, index): (u64, u32)) -> PartitionId {
    PartitionId::new(sluice_storage::TopicId(topic), index)
}

/// The partitions of a shard and the index of its log, shared by the log,
/// its readers and the state machine.
pub(crate) struct Inner {
    pub(crate) partitions: HashMap<PartitionId, PartitionLog>,
    /// Partitions of deleted topics: a late batch for one is not stored.
    deleted: HashSet<PartitionId>,
    pub(crate) slots: BTreeMap<u64, Slot>,
    /// Batch entries whose write has not committed yet, whole: until then
    /// their records cannot be read back from the partition, and openraft
    /// may already be sending them to peers.
    in_flight: HashMap<u64, EntryOf<ShardTypes>>,
    last_purged: Option<LogIdOf<ShardTypes>>,
    vote: Option<VoteOf<ShardTypes>>,
    committed: Option<LogIdOf<ShardTypes>>,
    /// Per partition, the offset below which a purge entry removed its
    /// records (`HardState::PurgeFloors`): never read again, and trimmed.
    floors: HashMap<PartitionId, u64>,
}

/// A partition's purge floor as stored and snapshotted: (topic, index, floor).
pub(crate) type Floor = (u64, u32, u64);

/// The key prefix of a shard's record of a partition log it made.
const PARTITION_RECORD: &[u8] = b"partition/";

/// One shard's Raft log; cheap to clone (clones share it).
#[derive(Clone)]
pub struct ShardLog {
    group: GroupId,
    store: Arc<Store>,
    writer: WriterHandle,
    host: Arc<dyn ShardHost>,
    inner: Arc<Mutex<Inner>>,
    /// The highest index whose append has been written (the state machine
    /// never applies an entry before its records are readable here).
    written: Arc<watch::Sender<u64>>,
    /// Held from preparing a change of the partitions' tails (append,
    /// rewind, retention, a copy) until its write is queued: the writes of
    /// one partition must reach the writer in the order they were prepared.
    order: Arc<tokio::sync::Mutex<()>>,
}

impl ShardLog {
    /// Opens `group`'s log as stored, over `partitions` (the shard's
    /// partitions as recovered from the store; more arrive by `adopt`).
    pub fn open(
        store: Arc<Store>,
        writer: WriterHandle,
        group: GroupId,
        host: Arc<dyn ShardHost>,
        partitions: Vec<PartitionLog>,
    ) -> io::Result<Self> {
        let hard = |slot| store.raft_hard_state(group, slot).map_err(io_error);
        let vote = hard(HardState::Vote)?.map(|b| Postcard::decode(&b, "vote")).transpose()?;
        let committed = hard(HardState::Committed)?.map(|b| Postcard::decode(&b, "committed log id")).transpose()?;
        let last_purged = hard(HardState::Purged)?.map(|b| Postcard::decode(&b, "purged log id")).transpose()?;
        let floors: Vec<Floor> = hard(HardState::PurgeFloors)?
            .map(|b| Postcard::decode(&b, "purge floors"))
            .transpose()?
            .unwrap_or_default();
        let mut slots = BTreeMap::new();
        for (index, bytes) in store.raft_entries(group, 0..u64::MAX).map_err(io_error)? {
            slots.insert(index, Postcard::decode::<Slot>(&bytes, "shard log slot")?);
        }
        let last = slots.keys().next_back().copied().unwrap_or(0);
        let partitions = partitions.into_iter().map(|p| (p.id(), p)).collect();
        let inner = Inner {
            partitions,
            deleted: HashSet::new(),
            slots,
            in_flight: HashMap::new(),
            last_purged,
            vote,
            committed,
            floors: floors.into_iter().map(|(topic, index, floor)| (partition_id((topic, index)), floor)).collect(),
        };
        Ok(ShardLog {
            group,
            store,
            writer,
            host,
            inner: Arc::new(Mutex::new(inner)),
            written: Arc::new(watch::Sender::new(last)),
            order: Arc::default(),
        })
    }

    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every change under the lock is made whole before it is released.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every entry up to `index` has been written locally.
    pub(crate) async fn written(&self, index: u64) {
        let mut rx = self.written.subscribe();
        // The sender lives as long as this log: `wait_for` ends only by the condition.
        let _ = rx.wait_for(|w| *w >= index).await;
    }

    /// The partitions whose logs `group` made on this broker (a record written
    /// with each log's first write): which recovered logs are a placed
    /// shard's, also for a topic this broker's catalog has not applied yet.
    pub fn recorded_partitions(store: &Store, group: GroupId) -> io::Result<Vec<PartitionId>> {
        let mut found = Vec::new();
        for (key, _) in store.raft_records(group).map_err(io_error)? {
            let Some(rest) = key.strip_prefix(PARTITION_RECORD) else { continue };
            let parsed = std::str::from_utf8(rest).ok().and_then(|r| {
                let (topic, index) = r.split_once('/')?;
                Some(PartitionId::new(sluice_storage::TopicId(topic.parse().ok()?), index.parse().ok()?))
            });
            match parsed {
                Some(id) => found.push(id),
                None => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad shard partition record")),
            }
        }
        Ok(found)
    }

    /// `partition`'s log in `inner`, made (with its ownership record in
    /// `write`) if the shard holds none yet.
    fn log_of<'a>(
        &self,
        inner: &'a mut Inner,
        partition: PartitionId,
        created_ms: i64,
        write: &mut AtomicWrite,
    ) -> &'a mut PartitionLog {
        inner.partitions.entry(partition).or_insert_with(|| {
            let key = format!("{}/{}", partition.topic.0, partition.index);
            keys::put_record(write, self.group, &[PARTITION_RECORD, key.as_bytes()].concat(), Vec::new());
            PartitionLog::new(&self.store, partition, created_ms)
        })
    }

    /// Takes `partition`'s log into the shard (a topic created after start).
    /// A partition already held (created by an early batch) is kept as is.
    pub fn adopt(&self, log: PartitionLog) {
        let mut inner = self.inner();
        inner.deleted.remove(&log.id());
        inner.partitions.entry(log.id()).or_insert(log);
    }

    /// Drops `partition` (its topic was deleted); later batches for it are not stored.
    pub fn forget(&self, partition: PartitionId) {
        let mut inner = self.inner();
        inner.partitions.remove(&partition);
        inner.floors.remove(&partition);
        inner.deleted.insert(partition);
    }

    /// The first offset of `partition` readers may see here: its first
    /// stored record, or its purge floor if that is further on.
    pub fn visible_start(&self, partition: PartitionId) -> Option<u64> {
        let inner = self.inner();
        let stored = inner.partitions.get(&partition)?.log_start();
        Some(stored.max(inner.floors.get(&partition).copied().unwrap_or(0)))
    }

    /// `partition`'s purge floor here (0: never purged).
    pub(crate) fn floor_of(&self, partition: PartitionId) -> u64 {
        self.inner().floors.get(&partition).copied().unwrap_or(0)
    }

    /// Every purge floor, to store or to put in a snapshot.
    pub(crate) fn floors(&self) -> Vec<Floor> {
        let mut floors: Vec<Floor> =
            self.inner().floors.iter().map(|(id, floor)| (id.topic.0, id.index, *floor)).collect();
        floors.sort_unstable();
        floors
    }

    /// Raises the purge floors of `raised` (never lowers one); returns
    /// whether any moved, for the caller to store `floors()` in the write
    /// that records why (an applied entry, an installed snapshot).
    pub(crate) fn raise_floors(&self, raised: &[Floor]) -> bool {
        let mut inner = self.inner();
        let mut moved = false;
        for (topic, index, floor) in raised {
            let id = partition_id((*topic, *index));
            if inner.deleted.contains(&id) {
                continue;
            }
            let current = inner.floors.entry(id).or_insert(0);
            if *floor > *current {
                *current = *floor;
                moved = true;
            }
        }
        moved
    }

    /// Runs `f` over `partition`'s log, if the shard holds it.
    pub fn with_partition<T>(&self, partition: PartitionId, f: impl FnOnce(&PartitionLog) -> T) -> Option<T> {
        self.inner().partitions.get(&partition).map(f)
    }

    /// Appends `batch` to its partition within `write`; the slot says where.
    fn append_batch(
        &self,
        inner: &mut Inner,
        log_id: LogIdOf<ShardTypes>,
        batch: &BatchCommand,
        entry: &EntryOf<ShardTypes>,
        write: &mut AtomicWrite,
    ) -> io::Result<(Slot, bool)> {
        let id = batch.partition_id();
        let kept = |outcome| -> io::Result<Slot> { Ok(Slot::Kept { entry: Postcard::encode(entry)?, outcome }) };
        if inner.deleted.contains(&id) {
            return Ok((kept(Some(ShardResponse::Done))?, false));
        }
        if let Err(e) = sluice_storage::record::count_body(&batch.body).map_err(|e| e.to_string()).and_then(|n| {
            if n == batch.count {
                Ok(())
            } else {
                Err(format!("{n} records, {} announced", batch.count))
            }
        }) {
            return Ok((kept(Some(ShardResponse::Refused(format!("malformed batch: {e}"))))?, false));
        }
        let settings = self.host.settings(id);
        let log = self.log_of(inner, id, batch.timestamp_ms, write);
        let appended =
            log.append_encoded(&batch.body, batch.count, batch.producer_seq(), batch.timestamp_ms, &settings);
        let sync = settings.durability == Durability::Always;
        let slot = match appended {
            Ok(Append::Write { base_offset, write: w }) => {
                write.extend(w);
                let partition = (batch.topic, batch.partition);
                Slot::Batch { log_id, partition, base_offset, count: batch.count, proposed_ms: batch.timestamp_ms }
            }
            Ok(Append::Duplicate { base_offset, count }) => {
                kept(Some(ShardResponse::Appended { base_offset, count, duplicate: true }))?
            }
            Err(StorageError::OutOfOrderSequence { producer_id, got, expected }) => {
                kept(Some(ShardResponse::OutOfOrder { producer_id, got, expected }))?
            }
            Err(e) => return Err(io_error(e)),
        };
        Ok((slot, sync))
    }

    /// The entry at `index` as it was appended.
    fn entry_of(&self, index: u64, slot: &Slot) -> io::Result<EntryOf<ShardTypes>> {
        match slot {
            Slot::Kept { entry, .. } => Postcard::decode(entry, "shard log entry"),
            Slot::Batch { log_id, partition, base_offset, proposed_ms, .. } => {
                let id = partition_id(*partition);
                let raw = self.store_reader(id).raw_batch(*base_offset).map_err(io_error)?;
                let command = match raw {
                    Some(raw) => {
                        let (header, body) = split_batch(&raw).map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("shard log entry {index}: stored batch of {id:?} at {base_offset}: {e}"),
                            )
                        })?;
                        ShardCommand::Batch(BatchCommand {
                            topic: partition.0,
                            partition: partition.1,
                            timestamp_ms: *proposed_ms,
                            producer: (header.producer_id != 0).then_some((header.producer_id, header.sequence)),
                            count: header.count,
                            body: body.to_vec(),
                        })
                    }
                    // Its topic was deleted (records and all) since it was appended.
                    None => ShardCommand::Dropped { topic: partition.0, partition: partition.1 },
                };
                Ok(EntryOf::<ShardTypes>::new_normal(*log_id, command))
            }
        }
    }

    fn store_reader(&self, id: PartitionId) -> PartitionReader {
        PartitionReader::new(self.store.clone(), id)
    }

    /// Commits `write` through the broker's writer with an fsync, and waits.
    pub(crate) async fn write_durably(&self, write: AtomicWrite) -> io::Result<()> {
        self.writer.write(write).await.map_err(io_error)
    }

    /// The consumer groups whose changes the log holds now.
    pub(crate) fn group_ids(&self) -> io::Result<Vec<u64>> {
        let inner = self.inner();
        let mut out = Vec::new();
        for slot in inner.slots.values() {
            if let Slot::Kept { entry, .. } = slot {
                let entry: EntryOf<ShardTypes> = Postcard::decode(entry, "shard log entry")?;
                if let EntryPayload::Normal(ShardCommand::Group(change)) = entry.payload {
                    out.push(change.group);
                }
            }
        }
        Ok(out)
    }

    /// The end of `partition` here (0 for a partition this shard does not
    /// hold yet); `None` for a partition of a topic deleted here.
    pub(crate) fn next_offset_of(&self, partition: PartitionId) -> Option<u64> {
        let inner = self.inner();
        if inner.deleted.contains(&partition) {
            return None;
        }
        Some(inner.partitions.get(&partition).map_or(0, |log| log.next_offset()))
    }

    /// The id of the entry this replica holds at `index`, if any.
    pub(crate) fn log_id_at(&self, index: u64) -> io::Result<Option<LogIdOf<ShardTypes>>> {
        self.inner().slots.get(&index).map(Slot::log_id).transpose()
    }

    /// Appends `batches` (raw, from a peer, starting at the partition's
    /// end) to `partition` at their own offsets, durably.
    pub(crate) async fn copy_batches(&self, partition: PartitionId, batches: &[Vec<u8>]) -> io::Result<()> {
        let _order = self.order.lock().await;
        let write = {
            let settings = self.host.settings(partition);
            let mut inner = self.inner();
            if inner.deleted.contains(&partition) {
                // Its topic was deleted here since the snapshot was taken.
                return Ok(());
            }
            let mut write = AtomicWrite::new();
            let log = self.log_of(&mut inner, partition, now_ms(), &mut write);
            for raw in batches {
                write.extend(log.append_copy(raw, &settings).map_err(io_error)?);
            }
            write
        };
        self.write_durably(write).await
    }

    /// Rewinds each partition of `ends` to its end there (records appended
    /// since go), and clears the install marker, in one durable write: undoes
    /// the copies of a snapshot install a crash interrupted. A partition whose
    /// start has since moved past its old end is left as it is.
    pub(crate) async fn undo_copies(&self, ends: &[(PartitionId, u64)]) -> io::Result<()> {
        let _order = self.order.lock().await;
        let mut write = AtomicWrite::new();
        {
            let mut inner = self.inner();
            for (id, end) in ends {
                let Some(log) = inner.partitions.get_mut(id) else { continue };
                let next = log.next_offset();
                if next <= *end || log.log_start() > *end {
                    continue;
                }
                if let Some(w) = log.rewind(*end, now_ms()).map_err(io_error)? {
                    tracing::warn!(
                        shard = self.group.0,
                        topic_id = id.topic.0,
                        partition = id.index,
                        from = end,
                        to = next,
                        "records copied by an interrupted snapshot install removed (the install starts over)"
                    );
                    write.extend(w);
                }
            }
        }
        keys::delete_hard_state(&mut write, self.group, HardState::Installing);
        self.write_durably(write).await
    }

    /// Starts `partition` over at `start` (its peers hold nothing below), durably.
    pub(crate) async fn restart_partition(&self, partition: PartitionId, start: u64) -> io::Result<()> {
        let _order = self.order.lock().await;
        let write = {
            let mut inner = self.inner();
            let mut write = AtomicWrite::new();
            let log = self.log_of(&mut inner, partition, now_ms(), &mut write);
            write.extend(log.restart_at(start, now_ms()).map_err(io_error)?);
            write
        };
        self.write_durably(write).await?;
        self.host.log_started(partition, start);
        Ok(())
    }

    /// Applies retention to every partition of the shard, durably: whole
    /// segments expired, over the size limit or below a purge floor go, but
    /// only those below the first record a log entry still points at (an entry's batch must stay
    /// readable until the entry is purged, so a peer can be sent it).
    /// Returns what was removed, for the space to be reclaimed, and whether
    /// log entries held back a segment retention would remove.
    pub async fn trim(&self, now_ms: i64) -> io::Result<(Vec<(PartitionId, sluice_storage::Trim)>, bool)> {
        let _order = self.order.lock().await;
        let mut write = AtomicWrite::new();
        let mut trims = Vec::new();
        let mut held_back = false;
        {
            let mut inner = self.inner();
            let mut floors: HashMap<PartitionId, u64> = HashMap::new();
            for slot in inner.slots.values() {
                if let Slot::Batch { partition, base_offset, .. } = slot {
                    let floor = floors.entry(partition_id(*partition)).or_insert(*base_offset);
                    *floor = (*floor).min(*base_offset);
                }
            }
            let Inner { partitions, floors: purge_floors, .. } = &mut *inner;
            for (id, log) in partitions.iter_mut() {
                let limit = floors.get(id).copied().unwrap_or(u64::MAX);
                let purged = purge_floors.get(id).copied().unwrap_or(0);
                let settings = self.host.settings(*id);
                if let Some(mut trim) = log.trim_below(now_ms, &settings, limit, purged) {
                    write.extend(std::mem::take(&mut trim.write));
                    trims.push((*id, trim));
                }
                // A purged segment (a whole one, below the active) that log entries still hold.
                let purge_held = log.segments().len() > 1 && log.segments()[0].end_offset <= purged;
                held_back |= limit != u64::MAX && (log.retention_due(now_ms, &settings) || purge_held);
            }
        }
        if trims.is_empty() {
            return Ok((trims, held_back));
        }
        self.write_durably(write).await?;
        for (id, trim) in &trims {
            self.host.log_started(*id, trim.log_start);
        }
        Ok((trims, held_back))
    }

    fn put_hard(&self, write: &mut AtomicWrite, slot: HardState, value: &impl Serialize) -> io::Result<()> {
        keys::put_hard_state(write, self.group, slot, Postcard::encode(value)?);
        Ok(())
    }
}

impl RaftLogReader<ShardTypes> for ShardLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<ShardTypes>>, io::Error> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        // Under the lock: entries still in flight whole, the rest as slots to read back after.
        let found: Vec<(u64, Result<EntryOf<ShardTypes>, Slot>)> = {
            let inner = self.inner();
            inner
                .slots
                .range(bounds)
                .map(|(index, slot)| (*index, inner.in_flight.get(index).cloned().ok_or_else(|| slot.clone())))
                .collect()
        };
        found
            .into_iter()
            .map(|(index, found)| match found {
                Ok(entry) => Ok(entry),
                Err(slot) => self.entry_of(index, &slot),
            })
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<ShardTypes>>, io::Error> {
        Ok(self.inner().vote)
    }
}

impl RaftLogStorage<ShardTypes> for ShardLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<openraft::LogState<ShardTypes>, io::Error> {
        let inner = self.inner();
        let last = match inner.slots.values().next_back() {
            Some(slot) => Some(slot.log_id()?),
            None => inner.last_purged,
        };
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<ShardTypes>) -> Result<(), io::Error> {
        let mut write = AtomicWrite::new();
        self.put_hard(&mut write, HardState::Vote, vote)?;
        self.write_durably(write).await?;
        self.inner().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<ShardTypes>>) -> Result<(), io::Error> {
        let mut write = AtomicWrite::new();
        self.put_hard(&mut write, HardState::Committed, &committed)?;
        // Queued behind every earlier write; not waited for (openraft treats it as a hint).
        let request = WriteRequest { write, sync: false, on_commit: Box::new(|_| {}) };
        self.writer.submit(request).await.map_err(io_error)?;
        self.inner().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<ShardTypes>>, io::Error> {
        Ok(self.inner().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<ShardTypes>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<ShardTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _order = self.order.lock().await;
        let mut write = AtomicWrite::new();
        let mut sync = false;
        let mut last = 0;
        let mut in_flight = Vec::new();
        {
            let mut inner = self.inner();
            for entry in entries {
                let log_id = entry.log_id();
                let (slot, must_sync) = match &entry.payload {
                    EntryPayload::Normal(ShardCommand::Batch(batch)) => {
                        self.append_batch(&mut inner, log_id, batch, &entry, &mut write)?
                    }
                    _ => (Slot::Kept { entry: Postcard::encode(&entry)?, outcome: None }, true),
                };
                sync |= must_sync;
                keys::put_entry(&mut write, self.group, log_id.index, Postcard::encode(&slot)?);
                if matches!(slot, Slot::Batch { .. }) {
                    inner.in_flight.insert(log_id.index, entry);
                    in_flight.push(log_id.index);
                }
                inner.slots.insert(log_id.index, slot);
                last = log_id.index;
            }
        }
        let written = self.written.clone();
        let inner = self.inner.clone();
        let on_commit = Box::new(move |result: sluice_storage::Result<()>| {
            {
                let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
                for index in in_flight {
                    inner.in_flight.remove(&index);
                }
            }
            if result.is_ok() {
                written.send_modify(|w| *w = (*w).max(last));
            }
            callback.io_completed(result.map_err(io_error));
        });
        self.writer.submit(WriteRequest { write, sync, on_commit }).await.map_err(io_error)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<ShardTypes>>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |id| id.index + 1);
        let _order = self.order.lock().await;
        // Rewinding reads the partitions' stored tails: every queued append must be in.
        self.write_durably(AtomicWrite::new()).await?;
        let mut write = AtomicWrite::new();
        {
            let mut inner = self.inner();
            let removed = inner.slots.split_off(&from);
            let mut rewind_to: HashMap<PartitionId, u64> = HashMap::new();
            for slot in removed.values() {
                if let Slot::Batch { partition, base_offset, .. } = slot {
                    let to = rewind_to.entry(partition_id(*partition)).or_insert(*base_offset);
                    *to = (*to).min(*base_offset);
                }
            }
            for (id, to) in rewind_to {
                if let Some(log) = inner.partitions.get_mut(&id) {
                    let end = log.next_offset();
                    if let Some(w) = log.rewind(to, now_ms()).map_err(io_error)? {
                        tracing::warn!(
                            shard = self.group.0,
                            topic_id = id.topic.0,
                            partition = id.index,
                            from = to,
                            to = end,
                            "uncommitted records rewound (a newer leader's log replaces them)"
                        );
                        write.extend(w);
                    }
                }
            }
            keys::delete_entries_from(&mut write, self.group, from);
        }
        self.written.send_modify(|w| *w = (*w).min(from.saturating_sub(1)));
        self.write_durably(write).await
    }

    async fn purge(&mut self, log_id: LogIdOf<ShardTypes>) -> Result<(), io::Error> {
        let through = log_id.index;
        let mut write = AtomicWrite::new();
        self.put_hard(&mut write, HardState::Purged, &log_id)?;
        keys::delete_entries_through(&mut write, self.group, through);
        {
            let mut inner = self.inner();
            inner.slots = inner.slots.split_off(&through.saturating_add(1));
            inner.last_purged = Some(log_id);
        }
        self.write_durably(write).await
    }
}
